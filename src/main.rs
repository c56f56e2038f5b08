//! The `laxc` command line: read a spec, compile it, print what was asked for.

use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use laxc::diagnostic::{render, Diagnostic};
use laxc::source::Source;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "laxc",
    version,
    about = "Declarative architecture compiler for low-rank training with Latent Crossing (LaX)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a spec and report shapes, parameters, FLOPs and memory.
    Check {
        /// The .lax spec (default: the embedded specs/tiny-llama-svd-lax.lax).
        spec: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print the spec's IR as a Graphviz DOT graph (render with `dot -Tsvg`).
    Graph {
        /// The .lax spec (default: the embedded specs/tiny-llama-svd-lax.lax).
        spec: Option<PathBuf>,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Exit codes: 0 clean (warnings allowed), 1 errors in the spec, 2 usage or I/O error.
const SPEC_ERROR: u8 = 1;
const IO_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { spec, format } => run_check(spec, format),
        Command::Graph {
            spec,
            output,
            force,
        } => run_graph(spec, output, force),
    }
}

fn read_source(path: Option<PathBuf>) -> Result<Source, ExitCode> {
    match path {
        None => Ok(Source::new(laxc::DEFAULT_SPEC_NAME, laxc::DEFAULT_SPEC)),
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(text) => Ok(Source::new(p.display().to_string(), text)),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", p.display());
                Err(ExitCode::from(IO_ERROR))
            }
        },
    }
}

fn print_diagnostics(source: &Source, d: &[Diagnostic]) {
    use std::io::IsTerminal;
    // Colour only for a person at a terminal; pipes and files get plain text.
    let choice = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut stderr = StandardStream::stderr(choice);
    if let Err(e) = render(source, d, &mut stderr) {
        eprintln!("error: cannot print diagnostics: {e}");
    }
}

/// Compiles, printing diagnostics; returns the compiled spec or the exit code.
fn compile(source: &Source) -> Result<laxc::Compiled, ExitCode> {
    match laxc::compile(source) {
        Ok(c) => {
            print_diagnostics(source, &c.warnings);
            Ok(c)
        }
        Err(d) => {
            print_diagnostics(source, &d);
            let errors = d.iter().filter(|d| d.is_error()).count();
            eprintln!(
                "error: {} has {errors} error{}",
                source.name,
                if errors == 1 { "" } else { "s" }
            );
            Err(ExitCode::from(SPEC_ERROR))
        }
    }
}

fn run_check(path: Option<PathBuf>, format: Format) -> ExitCode {
    let source = match read_source(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let compiled = match compile(&source) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let report = compiled.report();
    let text = match format {
        Format::Table => laxc::report::render_table(&report, compiled.warnings.len()),
        Format::Json => {
            let mut v = serde_json::to_value(&report).expect("the report serializes");
            v["warnings"] = serde_json::to_value(
                compiled
                    .warnings
                    .iter()
                    .map(|w| {
                        let (line, column) = source.line_col(w.span.start);
                        serde_json::json!({
                            "code": w.code, "message": w.message, "line": line, "column": column,
                            "hint": w.hint,
                        })
                    })
                    .collect::<Vec<_>>(),
            )
            .expect("warnings serialize");
            let mut s = serde_json::to_string_pretty(&v).expect("the report serializes");
            s.push('\n');
            s
        }
    };
    print!("{text}");
    ExitCode::SUCCESS
}

fn run_graph(path: Option<PathBuf>, output: Option<PathBuf>, force: bool) -> ExitCode {
    let source = match read_source(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let compiled = match compile(&source) {
        Ok(c) => c,
        Err(c) => return c,
    };
    let dot = laxc::dot::render_dot(&compiled.ir);
    match output {
        None => {
            print!("{dot}");
            ExitCode::SUCCESS
        }
        Some(p) => {
            if p.exists() && !force {
                eprintln!(
                    "error: {} exists; pass --force to overwrite it",
                    p.display()
                );
                return ExitCode::from(IO_ERROR);
            }
            match write_atomically(&p, dot.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", p.display());
                    ExitCode::from(IO_ERROR)
                }
            }
        }
    }
}

/// Writes to a temporary file beside the target, then renames: a reader never sees half a file.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp = match dir {
        Some(d) => d.join(format!(".{}.tmp", std::process::id())),
        None => PathBuf::from(format!(".{}.tmp", std::process::id())),
    };
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
