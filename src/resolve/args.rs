//! Reading the arguments of a call such as `svd(rank = 64)` or `tensor(shape = [16, 16])`:
//! known names only, each once, with the right kind of value.

use super::eval::{Evaluated, Num};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::source::Span;

/// The arguments of one call, checked against the names it accepts.
pub struct Args<'a> {
    pub call: &'a str,
    pub span: Span,
    named: Vec<(&'a str, Span, &'a Evaluated)>,
    /// Names the call does not take, with where they are written.
    unknown: Vec<(&'a str, Span)>,
}

impl<'a> Args<'a> {
    /// Positional arguments are taken in the order of `accepted`.
    pub fn new(
        call: &'a str,
        span: Span,
        positional: &'a [Evaluated],
        named: &'a [(String, Span, Evaluated)],
        accepted: &[&'a str],
        errors: &mut Vec<Diagnostic>,
    ) -> Self {
        let mut out: Vec<(&str, Span, &Evaluated)> = Vec::new();
        let mut unknown = Vec::new();
        for (i, v) in positional.iter().enumerate() {
            match accepted.get(i) {
                Some(name) => out.push((name, v.span(), v)),
                None => errors.push(
                    Diagnostic::error(
                        "E0402",
                        format!("`{call}` takes at most {} arguments", accepted.len()),
                        v.span(),
                    )
                    .with_label("extra argument")
                    .with_hint(format!("`{call}` accepts: {}", accepted.join(", "))),
                ),
            }
        }
        for (name, span, v) in named {
            match accepted.iter().find(|a| **a == name.as_str()) {
                Some(a) => {
                    if let Some((_, prev, _)) = out.iter().find(|(n, _, _)| n == a) {
                        errors.push(
                            Diagnostic::error(
                                "E0407",
                                format!("argument `{name}` is given twice"),
                                *span,
                            )
                            .with_label("second time")
                            .with_secondary(*prev, "first time"),
                        );
                    } else {
                        out.push((a, *span, v));
                    }
                }
                None => errors.push({
                    unknown.push((name.as_str(), *span));
                    Diagnostic::error("E0402", format!("`{call}` has no argument `{name}`"), *span)
                        .with_label("unknown argument")
                        .with_hint(did_you_mean(name, accepted.iter().copied()).unwrap_or_else(
                            || format!("`{call}` accepts: {}", accepted.join(", ")),
                        ))
                }),
            }
        }
        Args {
            call,
            span,
            named: out,
            unknown,
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a Evaluated> {
        self.named
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, v)| *v)
    }

    pub fn require(&self, name: &str, errors: &mut Vec<Diagnostic>) -> Option<&'a Evaluated> {
        let v = self.get(name);
        if v.is_none() && !self.misspelt(name, errors) {
            errors.push(
                Diagnostic::error(
                    "E0403",
                    format!("`{}` needs the argument `{name}`", self.call),
                    self.span,
                )
                .with_label(format!("`{name}` missing"))
                .with_hint(format!("write `{}({name} = ...)`", self.call)),
            );
        }
        v
    }

    /// A missing `name` that an unknown argument misspells (`svd(r = 64)`) is one mistake: the
    /// unknown argument's error says which name was meant, and no second error is added.
    fn misspelt(&self, name: &str, errors: &mut [Diagnostic]) -> bool {
        let meant = |u: &str| {
            name.starts_with(u) || u.starts_with(name) || did_you_mean(u, [name]).is_some()
        };
        let Some((u, span)) = self.unknown.iter().find(|(u, _)| meant(u)) else {
            return false;
        };
        let Some(d) = errors
            .iter_mut()
            .find(|d| d.code == "E0402" && d.span == *span)
        else {
            return false;
        };
        d.hint = Some(format!(
            "did you mean `{name}`? `{}` needs `{name}`, and has no `{u}`",
            self.call
        ));
        true
    }
}

pub fn type_error(what: &str, expected: &str, v: &Evaluated) -> Diagnostic {
    Diagnostic::error(
        "E0404",
        format!("{what} must be {expected}, found {}", v.describe()),
        v.span(),
    )
    .with_label(format!("expected {expected}"))
}

/// The largest size any dimension may have (2^24); keeps every count exact in 128 bits.
pub const MAX_SIZE: i64 = 1 << 24;

/// A whole number `> 0` and at most [`MAX_SIZE`].
pub fn positive_int(what: &str, v: &Evaluated) -> Result<usize, Diagnostic> {
    match v {
        Evaluated::Num(Num::Int(i), span) => {
            if *i > MAX_SIZE {
                Err(Diagnostic::error(
                    "E0405",
                    format!("{what} is too large: {i} (the limit is {MAX_SIZE})"),
                    *span,
                )
                .with_label("too large"))
            } else if *i > 0 {
                Ok(*i as usize)
            } else {
                Err(Diagnostic::error(
                    "E0405",
                    format!("{what} must be positive, found {i}"),
                    *span,
                )
                .with_label("not positive"))
            }
        }
        other => Err(type_error(what, "a positive whole number", other)),
    }
}

pub fn number(what: &str, v: &Evaluated) -> Result<f64, Diagnostic> {
    match v {
        Evaluated::Num(n, _) => Ok(n.as_f64()),
        other => Err(type_error(what, "a number", other)),
    }
}

/// A list of positive whole numbers.
pub fn int_list(what: &str, v: &Evaluated) -> Result<Vec<usize>, Diagnostic> {
    match v {
        Evaluated::List(items, _) => items
            .iter()
            .map(|i| positive_int(&format!("each entry of {what}"), i))
            .collect(),
        other => Err(type_error(
            what,
            "a list of whole numbers like `[16, 16]`",
            other,
        )),
    }
}

/// A choice written bare (`svd`, `tensor`) or called (`svd(rank = 64)`): its name, the name's
/// span, its arguments and the whole span. None for any other kind of value.
pub type CallParts<'a> = (
    &'a str,
    Span,
    &'a [Evaluated],
    &'a [(String, Span, Evaluated)],
    Span,
);

pub fn call_parts(v: &Evaluated) -> Option<CallParts<'_>> {
    match v {
        Evaluated::Word(w, s) => Some((w, *s, &[], &[], *s)),
        Evaluated::Call {
            name,
            name_span,
            positional,
            named,
            span,
        } => Some((name, *name_span, positional, named, *span)),
        _ => None,
    }
}
