//! `laxc check --format json`: the report as one JSON document, with the spec's warnings.

use super::Report;
use crate::diagnostic::Diagnostic;
use crate::source::Source;

/// The report and a `warnings` array, each warning as [`crate::diagnostic::to_json`] writes it.
pub fn to_json(report: &Report, warnings: &[Diagnostic], source: &Source) -> serde_json::Value {
    let mut v = serde_json::to_value(report).expect("the report serializes");
    let warnings: Vec<serde_json::Value> = warnings
        .iter()
        .map(|w| crate::diagnostic::to_json(w, source))
        .collect();
    v["warnings"] = warnings.into();
    v
}

/// [`to_json`], pretty-printed, ending in a newline.
pub fn render_json(report: &Report, warnings: &[Diagnostic], source: &Source) -> String {
    let mut s =
        serde_json::to_string_pretty(&to_json(report, warnings, source)).expect("serializes");
    s.push('\n');
    s
}
