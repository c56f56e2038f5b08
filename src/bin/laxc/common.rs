//! What every command shares: reading a spec, compiling it with its diagnostics printed, the
//! output format, and where a result goes (standard output or a file given with `-o`).

use clap::ValueEnum;
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use laxc::diagnostic::{render, Diagnostic};
use laxc::source::Source;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes: 0 clean (warnings allowed), 1 errors in the spec, 2 usage or I/O error.
pub const SPEC_ERROR: u8 = 1;
pub const IO_ERROR: u8 = 2;

/// How many diagnostics a command prints at most.
pub const SHOWN_DIAGNOSTICS: usize = 20;

/// How a command prints its result. `json` is for tools: the result, or the spec's errors, as
/// one JSON document on standard output.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Default)]
pub enum Format {
    /// For people (`table` is accepted too, its name before 0.2).
    #[default]
    #[value(alias = "table")]
    Text,
    Json,
}

/// `-o/--out FILE` and `--force`, for commands whose result is one file.
#[derive(clap::Args, Clone)]
pub struct OutFile {
    /// Write the result to this file instead of standard output.
    #[arg(
        short = 'o',
        long = "out",
        visible_alias = "output",
        value_name = "FILE"
    )]
    pub out: Option<PathBuf>,
    /// Overwrite the file given with --out if it exists.
    #[arg(long)]
    pub force: bool,
}

impl OutFile {
    /// Prints `text`, or writes it to the --out file (atomically; an existing file only with
    /// --force).
    pub fn emit(&self, text: &str) -> ExitCode {
        let Some(p) = &self.out else {
            print!("{text}");
            return ExitCode::SUCCESS;
        };
        if let Err(c) = self.refuse_existing() {
            return c;
        }
        match laxc::files::write_atomically(p, text.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: cannot write {}: {e}", p.display());
                ExitCode::from(IO_ERROR)
            }
        }
    }

    /// An existing --out file without --force is refused before any work is done.
    pub fn refuse_existing(&self) -> Result<(), ExitCode> {
        match &self.out {
            Some(p) if p.exists() && !self.force => {
                eprintln!(
                    "error: {} exists; pass --force to overwrite it",
                    p.display()
                );
                Err(ExitCode::from(IO_ERROR))
            }
            _ => Ok(()),
        }
    }
}

/// The spec at `path`: the embedded default when None, standard input for `-`.
pub fn read_source(path: Option<&Path>) -> Result<Source, ExitCode> {
    match path {
        None => Ok(Source::new(laxc::DEFAULT_SPEC_NAME, laxc::DEFAULT_SPEC)),
        Some(p) if p.as_os_str() == "-" => {
            let mut text = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => Ok(Source::new("<stdin>", text)),
                Err(e) => {
                    eprintln!("error: cannot read the spec from standard input: {e}");
                    Err(ExitCode::from(IO_ERROR))
                }
            }
        }
        Some(p) => match std::fs::read_to_string(p) {
            Ok(text) => Ok(Source::new(p.display().to_string(), text)),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", p.display());
                Err(ExitCode::from(IO_ERROR))
            }
        },
    }
}

pub fn print_diagnostics(source: &Source, d: &[Diagnostic]) {
    use std::io::IsTerminal;
    // Colour only for a person at a terminal; pipes and files get plain text.
    let choice = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut stderr = StandardStream::stderr(choice);
    // A file of many broken lines would otherwise scroll its first, most useful errors away.
    let shown = &d[..d.len().min(SHOWN_DIAGNOSTICS)];
    if let Err(e) = render(source, shown, &mut stderr) {
        eprintln!("error: cannot print diagnostics: {e}");
    }
    if d.len() > shown.len() {
        eprintln!(
            "note: {} more diagnostics not shown (the first {SHOWN_DIAGNOSTICS} are above)",
            d.len() - shown.len()
        );
    }
}

/// Compiles, printing diagnostics (and, for `--format json`, a spec's errors as JSON on
/// standard output); returns the compiled spec or the exit code.
pub fn compile(source: &Source, format: Format) -> Result<laxc::Compiled, ExitCode> {
    match laxc::compile(source) {
        Ok(c) => {
            print_diagnostics(source, &c.warnings);
            Ok(c)
        }
        Err(d) => {
            if format == Format::Json {
                print!("{}", to_json_text(&diagnostics_json(source, &d)));
            }
            Err(refuse_spec(source, &d))
        }
    }
}

/// Prints a spec's diagnostics and how many errors it has; the exit code of a bad spec.
pub fn refuse_spec(source: &Source, d: &[Diagnostic]) -> ExitCode {
    print_diagnostics(source, d);
    let errors = d.iter().filter(|d| d.is_error()).count();
    eprintln!(
        "error: {} has {errors} error{}",
        source.name,
        if errors == 1 { "" } else { "s" }
    );
    ExitCode::from(SPEC_ERROR)
}

/// Reads and compiles a spec (the embedded default when `path` is None).
pub fn read_and_compile(
    path: Option<&Path>,
    format: Format,
) -> Result<(Source, laxc::Compiled), ExitCode> {
    let source = read_source(path)?;
    let compiled = compile(&source, format)?;
    Ok((source, compiled))
}

/// A spec that does not compile, as JSON: every diagnostic (none left out), errors first.
pub fn diagnostics_json(source: &Source, d: &[Diagnostic]) -> serde_json::Value {
    let of = |errors: bool| -> Vec<serde_json::Value> {
        d.iter()
            .filter(|x| x.is_error() == errors)
            .map(|x| laxc::diagnostic::to_json(x, source))
            .collect()
    };
    serde_json::json!({
        "schema_version": laxc::report::SCHEMA_VERSION,
        "file": source.name,
        "errors": of(true),
        "warnings": of(false),
    })
}

/// One line of a command's text summary: the name in an 18-column field, then the value.
#[cfg(feature = "train")]
pub fn field(name: &str, value: &str) -> String {
    format!("{name:<18}{value}\n")
}

/// Pretty JSON ending in a newline.
pub fn to_json_text(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serializes");
    s.push('\n');
    s
}
