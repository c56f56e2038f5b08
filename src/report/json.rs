//! `laxc check --format json`: the report as one JSON document, with the spec's warnings.

use super::Report;
use crate::diagnostic::Diagnostic;
use crate::source::Source;

/// The report (schema_version 1) and a `warnings` array, each warning with its code, message,
/// line, column and hint; pretty-printed, ending in a newline.
pub fn render_json(report: &Report, warnings: &[Diagnostic], source: &Source) -> String {
    let mut v = serde_json::to_value(report).expect("the report serializes");
    let warnings: Vec<serde_json::Value> = warnings
        .iter()
        .map(|w| {
            let (line, column) = source.line_col(w.span.start);
            serde_json::json!({
                "code": w.code, "message": w.message, "line": line, "column": column,
                "hint": w.hint,
            })
        })
        .collect();
    v["warnings"] = warnings.into();
    let mut s = serde_json::to_string_pretty(&v).expect("the report serializes");
    s.push('\n');
    s
}
