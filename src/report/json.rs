//! `laxc check --format json`: the report as one JSON document, with the spec's warnings.

use super::Report;
use crate::diagnostic::Diagnostic;
use crate::source::Source;

/// The report (schema_version 1) and a `warnings` array, each warning as
/// [`crate::diagnostic::to_json`] writes it; pretty-printed, ending in a newline.
pub fn render_json(report: &Report, warnings: &[Diagnostic], source: &Source) -> String {
    let mut v = serde_json::to_value(report).expect("the report serializes");
    let warnings: Vec<serde_json::Value> = warnings
        .iter()
        .map(|w| crate::diagnostic::to_json(w, source))
        .collect();
    v["warnings"] = warnings.into();
    let mut s = serde_json::to_string_pretty(&v).expect("the report serializes");
    s.push('\n');
    s
}
