//! `laxc new FAMILY`: a commented starter spec, to be edited into one's own model.

use crate::common::OutFile;
use clap::ValueEnum;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct NewArgs {
    /// The model family.
    family: Starter,
    #[command(flatten)]
    out: OutFile,
}

/// One starter per family, in src/starters/ (each checked clean and trained by the tests).
#[derive(Clone, Copy, ValueEnum)]
enum Starter {
    /// A decoder-only language model (RMSNorm, RoPE, SwiGLU), trained on bytes of text.
    Llama,
    /// GPT-2 (LayerNorm, learned positions, GELU MLP), on bytes of text (BPE: see its comments).
    Gpt2,
    /// A vision transformer classifying images (MNIST IDX files).
    Vit,
}

pub fn run(a: NewArgs) -> ExitCode {
    let text = match a.family {
        Starter::Llama => laxc::starters::LLAMA,
        Starter::Gpt2 => laxc::starters::GPT2,
        Starter::Vit => laxc::starters::VIT,
    };
    let written = a.out.emit(text);
    if let (Some(p), true) = (&a.out.out, written == ExitCode::SUCCESS) {
        eprintln!(
            "wrote {0}: edit it, then `laxc check {0}` and `laxc train {0}`",
            p.display()
        );
    }
    written
}
