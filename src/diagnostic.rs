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

/// One diagnostic code: what it means in one line, and its page for `laxc explain`
/// (docs/codes/CODE.md: the rule, why, and a wrong and a right example).
#[derive(Debug, Clone, Copy)]
pub struct Code {
    pub code: &'static str,
    pub meaning: &'static str,
    pub page: &'static str,
}

/// A registry entry; the page is compiled in from docs/codes/.
macro_rules! code {
    ($code:literal, $meaning:literal) => {
        Code {
            code: $code,
            meaning: $meaning,
            page: include_str!(concat!("../docs/codes/", $code, ".md")),
        }
    };
}

/// Every diagnostic code laxc uses and the one thing it means. Codes are stable: a code never
/// changes meaning; a new kind of finding gets a new number. docs/language.md's table is made
/// from this one (a test keeps them equal), a test checks that `src/` uses no other code, and
/// one that every page's examples do what they say.
pub const CODES: &[Code] = &[
    code!(
        "E0001",
        "the text does not parse (syntax, or brackets nested too deep)"
    ),
    code!("E0101", "a number is out of range or an integer overflows"),
    code!("E0102", "unknown name"),
    code!("E0103", "not a whole number where one is needed"),
    code!("E0104", "division by zero"),
    code!("E0105", "a constant that is not a number"),
    code!("E0106", "a constant defined twice"),
    code!("E0201", "no model"),
    code!("E0202", "more than one model"),
    code!("E0203", "unknown model family"),
    code!("E0204", "unknown model key"),
    code!("E0205", "a model key is missing"),
    code!("E0206", "a model key is set twice"),
    code!("E0207", "a model size has a value it cannot take"),
    code!("E0208", "model sizes that do not fit together"),
    code!("E0301", "a selector names no site of this family"),
    code!("E0302", "a selector matches no site"),
    code!("E0303", "a block index is out of range"),
    code!("E0401", "unknown factorization"),
    code!("E0402", "an argument the factorization does not take"),
    code!("E0403", "a required argument is missing"),
    code!("E0404", "an argument of the wrong kind"),
    code!("E0405", "an argument out of its range"),
    code!("E0406", "the wrong number of TT modes or ranks"),
    code!("E0407", "an argument given twice"),
    code!("E0408", "unknown activation"),
    code!("E0501", "unknown LaX kind"),
    code!("E0502", "unknown LaX option"),
    code!("E0503", "unknown gate"),
    code!("E0504", "unknown norm"),
    code!(
        "E0505",
        "intra-layer LaX on a layer that is not a tensor train"
    ),
    code!("E0506", "a pathway end that is dense"),
    code!("E0507", "`from` names several sites"),
    code!("E0508", "a LaX rule that creates no pathway"),
    code!("E0509", "intra-layer LaX with options"),
    code!("E0510", "a gate shape with other than two factors"),
    code!("E0511", "a LaX option set twice"),
    code!("E0601", "unknown train key"),
    code!(
        "E0602",
        "a train value of the wrong kind, or not among the choices"
    ),
    code!("E0603", "a train key set twice"),
    code!("E0604", "more than one train section"),
    code!("E0605", "a train value out of its range"),
    code!("E0606", "train keys that contradict each other"),
    code!("E0607", "a command-line override that is not `key=value`"),
    code!("E0608", "the arguments of a data source or schedule"),
    code!("E0701", "TT input modes do not multiply to the input width"),
    code!(
        "E0702",
        "TT output modes do not multiply to the output width"
    ),
    code!("E0703", "a rank larger than it can usefully be"),
    code!("E0704", "intra-layer LaX shapes that do not match"),
    code!(
        "E0705",
        "an identity or linear gate between latents of different widths"
    ),
    code!("E0706", "a tensor gate fold that does not fit the latent"),
    code!("E0707", "a dense gate width that does not fit the latent"),
    code!("E0708", "a pathway that runs backwards"),
    code!(
        "E0900",
        "an internal inconsistency in the IR (a bug in laxc)"
    ),
    code!("W0401", "lint: a rank fraction that rounds to 0"),
    code!(
        "W0701",
        "lint: a factorized layer larger than its dense form"
    ),
    code!("W0702", "lint: a lopsided tensor fold"),
    code!(
        "W0703",
        "lint: LoRA without a `base`: training starts its frozen weights random"
    ),
];

/// The table of codes in docs/language.md.
pub fn codes_table() -> String {
    let mut out = String::from("| code | meaning |\n|---|---|\n");
    for c in CODES {
        out.push_str(&format!("| {} | {} |\n", c.code, c.meaning));
    }
    out
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
    /// The site a finding is about, when findings about several sites may merge into one.
    #[serde(skip)]
    pub subject: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>, span: Span) -> Self {
        debug_assert!(
            CODES.iter().any(|c| c.code == code),
            "{code} is not in the registry"
        );
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: String::new(),
            secondary: Vec::new(),
            hint: None,
            subject: None,
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

    /// Marks the finding as about `site`, so identical findings about other sites merge.
    pub fn about(mut self, site: impl Into<String>) -> Self {
        self.subject = Some(site.into());
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

/// One diagnostic as JSON for tools: code, severity, message, where it starts and ends (1-based
/// line and column), its label and hint.
pub fn to_json(d: &Diagnostic, source: &Source) -> serde_json::Value {
    let (line, column) = source.line_col(d.span.start);
    let (end_line, end_column) = source.line_col(d.span.end);
    let severity = if d.is_error() { "error" } else { "warning" };
    serde_json::json!({
        "code": d.code, "severity": severity, "message": d.message, "file": source.name,
        "line": line, "column": column, "end_line": end_line, "end_column": end_column,
        "label": d.label, "hint": d.hint,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_table_of_codes_is_the_registry() {
        let docs = include_str!("../docs/language.md");
        assert!(
            docs.contains(&codes_table()),
            "docs/language.md's table of codes differs from the registry; it should read:\n{}",
            codes_table()
        );
    }

    /// Every `"E…"`/`"W…"` literal in src/ is a registered code.
    #[test]
    fn the_sources_use_only_registered_codes() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text.match_indices('"') {
                let lit = &text[i + 1..];
                let code: String = lit.chars().take(5).collect();
                let shaped = code.len() == 5
                    && matches!(code.as_bytes()[0], b'E' | b'W')
                    && code[1..].bytes().all(|b| b.is_ascii_digit())
                    && lit[5..].starts_with('"');
                if shaped {
                    assert!(
                        CODES.iter().any(|c| c.code == code),
                        "{}: {code} is not in diagnostic::CODES",
                        f.display()
                    );
                }
            }
        }
    }
}
