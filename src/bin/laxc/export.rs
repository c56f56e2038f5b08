//! `laxc export RUN`: a trained LLaMA as a PEFT LoRA adapter or a HuggingFace model directory.

use clap::ValueEnum;
use laxc::export::{export_run, ExportKind};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// A run folder (its latest checkpoint is exported).
    run: PathBuf,
    /// `peft`: the LoRA adapter (adapter_config.json, adapter_model.safetensors); `hf`: a
    /// LlamaForCausalLM directory with LoRA and SVD sites merged into dense weights.
    #[arg(long, value_enum)]
    format: To,
    /// The folder to write (new or empty).
    #[arg(short, long = "out", visible_alias = "output")]
    out: PathBuf,
    /// Write into a folder that has files, replacing those of the same names.
    #[arg(long)]
    force: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum To {
    Peft,
    Hf,
}

pub fn run(a: ExportArgs) -> ExitCode {
    let kind = match a.format {
        To::Peft => ExportKind::Peft,
        To::Hf => ExportKind::Hf,
    };
    match export_run(&a.run, kind, &a.out, a.force) {
        Ok(()) => {
            eprintln!("wrote {}", a.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(crate::common::IO_ERROR)
        }
    }
}
