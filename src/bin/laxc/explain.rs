//! `laxc explain CODE`: what a diagnostic code means, with a wrong and a right example. The
//! pages are docs/codes/CODE.md, compiled into the binary from the same registry as the docs.

use crate::common::IO_ERROR;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ExplainArgs {
    /// A diagnostic code, e.g. E0703 (case does not matter); without one, the list of codes.
    code: Option<String>,
}

pub fn run(a: ExplainArgs) -> ExitCode {
    let Some(code) = a.code else {
        for c in laxc::diagnostic::CODES {
            println!("{}  {}", c.code, c.meaning);
        }
        return ExitCode::SUCCESS;
    };
    let wanted = code.trim().to_ascii_uppercase();
    match laxc::diagnostic::CODES.iter().find(|c| c.code == wanted) {
        Some(c) => {
            print!("{}", c.page);
            ExitCode::SUCCESS
        }
        None => {
            let hint = laxc::diagnostic::did_you_mean(
                &wanted,
                laxc::diagnostic::CODES.iter().map(|c| c.code),
            )
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
            eprintln!(
                "error: `{code}` is not a laxc diagnostic code{hint}; `laxc explain` lists them"
            );
            ExitCode::from(IO_ERROR)
        }
    }
}
