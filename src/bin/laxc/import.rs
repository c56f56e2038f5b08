//! `laxc import PATH`: the spec of a pretrained LLaMA checkpoint (a GGUF file or a HuggingFace
//! directory), its sizes read from the file's metadata or config.json, checked before it is
//! written.

use crate::common::OutFile;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// A GGUF file or a HuggingFace model directory (config.json + model.safetensors).
    path: PathBuf,
    #[command(flatten)]
    out: OutFile,
}

pub fn run(a: ImportArgs) -> ExitCode {
    let pretrained = match laxc::import::read_pretrained(&a.path) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The spec names the base relative to where it is written, as specs name their files.
    let base = relative_to_output(&a.path, a.out.out.as_deref());
    let text = laxc::import::spec_text(&pretrained, &base);
    let source = laxc::source::Source::new("imported.lax", &text);
    if let Err(d) = laxc::compile(&source) {
        crate::common::print_diagnostics(&source, &d);
        eprintln!("error: laxc cannot describe this model; the spec above is what it read");
        return ExitCode::FAILURE;
    }
    let written = a.out.emit(&text);
    if let (Some(p), true) = (&a.out.out, written == ExitCode::SUCCESS) {
        eprintln!(
            "wrote {0}: `laxc check {0}`, or `laxc generate {0} --base {1} --prompt \"...\"`",
            p.display(),
            a.path.display()
        );
    }
    written
}

/// `path` as seen from the folder of `out` (or the current folder when printing).
fn relative_to_output(path: &std::path::Path, out: Option<&std::path::Path>) -> String {
    let absolute = |p: &std::path::Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let target = absolute(path);
    let from = out
        .and_then(|o| absolute(o).parent().map(PathBuf::from))
        .unwrap_or_else(|| absolute(std::path::Path::new(".")));
    match target.strip_prefix(&from) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => target.display().to_string(),
    }
}
