//! `laxc check`: the report of one spec, or a comparison of several.

use crate::common::{self, Format, OutFile, IO_ERROR, SPEC_ERROR};
use laxc::source::Source;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct CheckArgs {
    /// .lax specs (several: a comparison table), `-` for standard input (default: the embedded
    /// specs/tiny-llama-svd-lax.lax).
    specs: Vec<PathBuf>,
    /// Try another value without editing the file: a `let` constant, a model size or a train
    /// key, e.g. `--set r=32 --set layers=8 --set batch=16` (repeatable; applies to every spec).
    #[arg(long = "set", value_name = "NAME=VALUE")]
    set: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    out: OutFile,
}

/// One spec and what compiling it gave: the compiled spec, or its diagnostics (already printed).
struct Checked {
    source: Source,
    result: Result<laxc::Compiled, Vec<laxc::diagnostic::Diagnostic>>,
}

pub fn run(a: CheckArgs) -> ExitCode {
    if let Err(c) = a.out.refuse_existing() {
        return c;
    }
    let paths: Vec<Option<PathBuf>> = match a.specs.is_empty() {
        true => vec![None],
        false => a.specs.iter().cloned().map(Some).collect(),
    };
    let mut checked = Vec::with_capacity(paths.len());
    for p in &paths {
        let source = match common::read_source(p.as_deref()) {
            Ok(s) => s,
            Err(c) => return c,
        };
        let source = match laxc::overrides::apply(&source, &a.set) {
            Ok(s) => s,
            Err(r) => {
                common::print_diagnostics(&r.source, &[r.diagnostic]);
                return ExitCode::from(IO_ERROR);
            }
        };
        let result = laxc::compile(&source);
        match &result {
            Ok(c) => common::print_diagnostics(&source, &c.warnings),
            Err(d) => {
                common::refuse_spec(&source, d);
            }
        }
        checked.push(Checked { source, result });
    }
    let text = match (checked.len(), a.format) {
        (1, Format::Text) => match &checked[0].result {
            Ok(c) => laxc::report::render_table(&c.report(), c.warnings.len()),
            Err(_) => String::new(),
        },
        (1, Format::Json) => common::to_json_text(&json(&checked[0])),
        (_, Format::Text) => comparison(&checked),
        (_, Format::Json) => common::to_json_text(&serde_json::json!({
            "schema_version": laxc::report::SCHEMA_VERSION,
            "specs": checked.iter().map(json).collect::<Vec<_>>(),
        })),
    };
    let failed = checked.iter().any(|c| c.result.is_err());
    // The report of the specs that compiled is printed even when another did not.
    if !text.is_empty() {
        let written = a.out.emit(&text);
        if written != ExitCode::SUCCESS {
            return written;
        }
    }
    match failed {
        true => ExitCode::from(SPEC_ERROR),
        false => ExitCode::SUCCESS,
    }
}

/// One spec as JSON: its report with its warnings, or its diagnostics.
fn json(c: &Checked) -> serde_json::Value {
    match &c.result {
        Ok(compiled) => laxc::report::to_json(&compiled.report(), &compiled.warnings, &c.source),
        Err(d) => common::diagnostics_json(&c.source, d),
    }
}

fn comparison(checked: &[Checked]) -> String {
    let reports: Vec<(&str, laxc::report::Report)> = checked
        .iter()
        .filter_map(|c| Some((c.source.name.as_str(), c.result.as_ref().ok()?.report())))
        .collect();
    if reports.is_empty() {
        return String::new();
    }
    let rows: Vec<(&str, &laxc::report::Report)> = reports.iter().map(|(n, r)| (*n, r)).collect();
    laxc::report::render_comparison(&rows)
}
