//! Diagnostics: every error and warning laxc reports, with the span it points at and a hint.
//!
//! Each stage collects diagnostics rather than stopping at the first; rendering goes through
//! codespan-reporting so every message shows file, line, column and the underlined text.

use crate::source::{Source, Span};
use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor::WriteColor};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a spec.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A stable code, e.g. `E0301`, so users and tests can refer to a kind of mistake.
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    /// What the underline says.
    pub label: String,
    /// Other places that explain the finding.
    pub secondary: Vec<(Span, String)>,
    /// A suggestion of what to do.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>, span: Span) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: String::new(),
            secondary: Vec::new(),
            hint: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>, span: Span) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message, span)
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Self {
        self.secondary.push((span, label.into()));
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Writes diagnostics the way a compiler does: `error[E0301]: ...` then `--> file:line:col`,
/// the source line with the offending text underlined, and the hint.
pub fn render(
    source: &Source,
    diagnostics: &[Diagnostic],
    out: &mut dyn WriteColor,
) -> std::io::Result<()> {
    let file = SimpleFile::new(source.name.as_str(), source.text.as_str());
    let config = term::Config::default();
    for d in diagnostics {
        let mut labels = vec![Label::primary((), clamp(d.span, source)).with_message(&d.label)];
        for (span, msg) in &d.secondary {
            labels.push(Label::secondary((), clamp(*span, source)).with_message(msg));
        }
        let base = match d.severity {
            Severity::Error => CsDiagnostic::error(),
            Severity::Warning => CsDiagnostic::warning(),
        };
        let mut cs = base
            .with_code(d.code)
            .with_message(&d.message)
            .with_labels(labels);
        if let Some(h) = &d.hint {
            cs = cs.with_notes(vec![format!("hint: {h}")]);
        }
        term::emit(out, &config, &file, &cs).map_err(std::io::Error::other)?;
    }
    Ok(())
}

/// Renders to a plain string with no colours (tests and snapshots).
pub fn render_to_string(source: &Source, diagnostics: &[Diagnostic]) -> String {
    let mut buf = codespan_reporting::term::termcolor::NoColor::new(Vec::new());
    render(source, diagnostics, &mut buf).expect("writing to memory cannot fail");
    String::from_utf8_lossy(&buf.into_inner()).into_owned()
}

/// Keeps a span inside the text and on character boundaries, so rendering never panics.
fn clamp(span: Span, source: &Source) -> std::ops::Range<usize> {
    let text = &source.text;
    let mut start = span.start.min(text.len());
    let mut end = span.end.min(text.len()).max(start);
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    while !text.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// "did you mean" for a misspelt name among the known ones.
pub fn did_you_mean<'a>(name: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(name, k), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("did you mean `{k}`?"))
}
