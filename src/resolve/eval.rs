//! Constants and integer arithmetic: evaluating the values a spec writes.

use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::source::Span;
use crate::syntax::ast::{BinOp, Expr, Value};
use std::collections::BTreeMap;

/// A number as the spec wrote it: integers stay exact, decimals stay decimals.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    Int(i64),
    Dec(f64),
}

impl Num {
    pub fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Dec(d) => d,
        }
    }
}

/// Names in scope: the model's sizes and every `let` so far, with where each was defined.
#[derive(Debug, Default, Clone)]
pub struct Scope {
    names: BTreeMap<String, (Num, Span)>,
}

impl Scope {
    pub fn define(&mut self, name: &str, value: Num, span: Span) -> Option<Span> {
        self.names
            .insert(name.to_string(), (value, span))
            .map(|(_, s)| s)
    }

    pub fn get(&self, name: &str) -> Option<Num> {
        self.names.get(name).map(|(v, _)| *v)
    }

    pub fn span_of(&self, name: &str) -> Option<Span> {
        self.names.get(name).map(|(_, s)| *s)
    }

    pub fn eval(&self, expr: &Expr) -> Result<Num, Diagnostic> {
        match expr {
            Expr::Int(v, _) => Ok(Num::Int(*v)),
            Expr::Decimal(v, span) => {
                if v.is_finite() {
                    Ok(Num::Dec(*v))
                } else {
                    Err(Diagnostic::error("E0101", "number out of range", *span)
                        .with_label("does not fit in 64 bits"))
                }
            }
            Expr::Name(id) => self.get(&id.name).ok_or_else(|| {
                Diagnostic::error("E0102", format!("unknown name `{}`", id.name), id.span)
                    .with_label("not defined")
                    .with_hint(
                        did_you_mean(&id.name, self.names.keys().map(String::as_str))
                            .unwrap_or_else(|| {
                                "define it first with `let NAME = ...`, or use a model size \
                                 such as `hidden`"
                                    .into()
                            }),
                    )
            }),
            Expr::Neg(inner, span) => match self.eval(inner)? {
                Num::Int(v) => v.checked_neg().map(Num::Int).ok_or_else(|| overflow(*span)),
                Num::Dec(v) => Ok(Num::Dec(-v)),
            },
            Expr::Binary(lhs, op, rhs, span) => {
                let a = self.eval(lhs)?;
                let b = self.eval(rhs)?;
                binary(a, *op, b, *span, rhs.span())
            }
        }
    }

    /// Evaluates an expression that must be a whole number.
    pub fn eval_int(&self, expr: &Expr, what: &str) -> Result<i64, Diagnostic> {
        match self.eval(expr)? {
            Num::Int(v) => Ok(v),
            Num::Dec(d) => Err(Diagnostic::error(
                "E0103",
                // `{:?}` keeps the decimal point: "found 1.0", never a puzzling "found 1".
                format!("{what} must be a whole number, found {d:?}"),
                expr.span(),
            )
            .with_label("not a whole number")),
        }
    }
}

fn overflow(span: Span) -> Diagnostic {
    Diagnostic::error("E0101", "integer overflow", span)
        .with_label("result does not fit in 64 bits")
}

fn binary(a: Num, op: BinOp, b: Num, span: Span, rhs_span: Span) -> Result<Num, Diagnostic> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => {
            if matches!(op, BinOp::Div | BinOp::Rem) && y == 0 {
                return Err(Diagnostic::error("E0104", "division by zero", rhs_span)
                    .with_label("this is zero"));
            }
            // Integer division floors (not truncates), as the language reference says.
            let r = match op {
                BinOp::Add => x.checked_add(y),
                BinOp::Sub => x.checked_sub(y),
                BinOp::Mul => x.checked_mul(y),
                BinOp::Div => floor_div(x, y),
                BinOp::Rem => floor_div(x, y)
                    .and_then(|q| q.checked_mul(y))
                    .and_then(|m| x.checked_sub(m)),
            };
            r.map(Num::Int).ok_or_else(|| overflow(span))
        }
        (a, b) => {
            let (x, y) = (a.as_f64(), b.as_f64());
            if matches!(op, BinOp::Div | BinOp::Rem) && y == 0.0 {
                return Err(Diagnostic::error("E0104", "division by zero", rhs_span)
                    .with_label("this is zero"));
            }
            let r = match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                BinOp::Rem => x % y,
            };
            Ok(Num::Dec(r))
        }
    }
}

/// A value after evaluation.
#[derive(Debug, Clone, PartialEq)]
pub enum Evaluated {
    Num(Num, Span),
    Str(String, Span),
    /// A bare name that is not a constant, e.g. `identity` or `silu`.
    Word(String, Span),
    List(Vec<Evaluated>, Span),
    Call {
        name: String,
        name_span: Span,
        positional: Vec<Evaluated>,
        named: Vec<(String, Span, Evaluated)>,
        span: Span,
    },
}

impl Evaluated {
    pub fn span(&self) -> Span {
        match self {
            Evaluated::Num(_, s)
            | Evaluated::Str(_, s)
            | Evaluated::Word(_, s)
            | Evaluated::List(_, s)
            | Evaluated::Call { span: s, .. } => *s,
        }
    }

    /// What kind of value this is, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Evaluated::Num(Num::Int(i), _) => format!("the number {i}"),
            Evaluated::Num(Num::Dec(d), _) => format!("the number {d:?}"),
            Evaluated::Str(s, _) => format!("the string \"{s}\""),
            Evaluated::Word(w, _) => format!("`{w}`"),
            Evaluated::List(..) => "a list".into(),
            Evaluated::Call { name, .. } => format!("`{name}(...)`"),
        }
    }
}

impl Scope {
    /// Evaluates a value. A bare name that is a constant becomes its number; any other bare
    /// name stays a word (a choice such as `identity`), for the caller to interpret.
    pub fn eval_value(&self, value: &Value) -> Result<Evaluated, Diagnostic> {
        Ok(match value {
            Value::Expr(Expr::Name(id)) if self.get(&id.name).is_none() => {
                Evaluated::Word(id.name.clone(), id.span)
            }
            Value::Expr(e) => Evaluated::Num(self.eval(e)?, e.span()),
            Value::Str(s, span) => Evaluated::Str(s.clone(), *span),
            Value::List(items, span) => Evaluated::List(
                items
                    .iter()
                    .map(|v| self.eval_value(v))
                    .collect::<Result<_, _>>()?,
                *span,
            ),
            Value::Call(call) => {
                let mut positional = Vec::new();
                let mut named = Vec::new();
                for arg in &call.args {
                    match arg {
                        crate::syntax::ast::Arg::Named(e) => {
                            named.push((e.key.name.clone(), e.key.span, self.eval_value(&e.value)?))
                        }
                        crate::syntax::ast::Arg::Positional(v) => {
                            positional.push(self.eval_value(v)?)
                        }
                    }
                }
                Evaluated::Call {
                    name: call.name.name.clone(),
                    name_span: call.name.span,
                    positional,
                    named,
                    span: call.span,
                }
            }
        })
    }
}

/// Integer division rounding towards negative infinity; `None` on overflow.
fn floor_div(x: i64, y: i64) -> Option<i64> {
    let q = x.checked_div(y)?;
    if x % y != 0 && ((x < 0) != (y < 0)) {
        q.checked_sub(1)
    } else {
        Some(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::ast::Expr;

    fn eval(text: &str) -> Result<Num, Diagnostic> {
        let src = format!("let x = {text}");
        let file = crate::syntax::parse(&src).expect("parses");
        let crate::syntax::ast::Item::Let(l) = &file.items[0] else {
            panic!()
        };
        let crate::syntax::ast::Value::Expr(e) = &l.value else {
            panic!()
        };
        let e: &Expr = e;
        Scope::default().eval(e)
    }

    #[test]
    fn integer_division_floors() {
        assert_eq!(eval("7 / 2").unwrap(), Num::Int(3));
        assert_eq!(eval("-7 / 2").unwrap(), Num::Int(-4));
        assert_eq!(eval("7 / -2").unwrap(), Num::Int(-4));
        assert_eq!(eval("-7 % 2").unwrap(), Num::Int(1));
        assert_eq!(eval("2 + 3 * 4 - (1 + 1)").unwrap(), Num::Int(12));
    }

    #[test]
    fn decimals_stay_decimal() {
        assert_eq!(eval("1 / 4.0").unwrap(), Num::Dec(0.25));
        assert_eq!(eval("2e-2").unwrap(), Num::Dec(0.02));
    }

    #[test]
    fn errors_point_at_the_cause() {
        let d = eval("4 / (2 - 2)").unwrap_err();
        assert_eq!(d.code, "E0104");
        assert_eq!(d.span, crate::source::Span::new(13, 18)); // `2 - 2`
        assert_eq!(eval("9223372036854775807 + 1").unwrap_err().code, "E0101");
        assert_eq!(eval("hiden * 2").unwrap_err().code, "E0102");
    }
}
