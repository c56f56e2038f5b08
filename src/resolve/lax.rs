//! `lax inter|intra SITES [from SITE] { gate = ..., norm = ... }`: reading the pathway options.

use super::args::{int_list, positive_int, type_error, Args};
use super::eval::{Evaluated, Scope};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::ir::NormKind;
use crate::source::Span;
use crate::spec::GateSpec;
use crate::syntax::ast::Entry;

pub const KEYS: [&str; 2] = ["gate", "norm"];

#[derive(Debug, Clone)]
pub struct LaxOptions {
    pub gate: GateSpec,
    pub gate_span: Span,
    pub norm: NormKind,
}

/// Reads the `{ gate = ..., norm = ... }` of an inter-layer rule. Defaults: identity gate and
/// layernorm, as the authors' code builds every pathway.
pub fn read_options(
    entries: &[Entry],
    rule_span: Span,
    scope: &Scope,
    errors: &mut Vec<Diagnostic>,
) -> Option<LaxOptions> {
    let before = errors.len();
    let mut gate = GateSpec::Identity;
    let mut gate_span = rule_span;
    let mut norm = NormKind::Layernorm;
    let mut seen: Vec<(&str, Span)> = Vec::new();
    for e in entries {
        let key = e.key.name.as_str();
        if let Some((_, prev)) = seen.iter().find(|(k, _)| *k == key) {
            errors.push(
                Diagnostic::error("E0511", format!("`{key}` is set twice"), e.key.span)
                    .with_label("second time")
                    .with_secondary(*prev, "first time"),
            );
            continue;
        }
        seen.push((key, e.key.span));
        let v = match scope.eval_value(&e.value) {
            Ok(v) => v,
            Err(d) => {
                errors.push(d);
                continue;
            }
        };
        match key {
            "gate" => {
                gate_span = v.span();
                if let Some(g) = read_gate(&v, errors) {
                    gate = g;
                }
            }
            "norm" => match &v {
                Evaluated::Word(w, s) => match NormKind::from_name(w) {
                    Some(n) => norm = n,
                    None => errors.push(
                        Diagnostic::error("E0504", format!("unknown norm `{w}`"), *s)
                            .with_label("not a norm")
                            .with_hint(did_you_mean(w, NormKind::NAMES).unwrap_or_else(|| {
                                format!("choose one of {}", NormKind::NAMES.join(", "))
                            })),
                    ),
                },
                other => errors.push(type_error(
                    "`norm`",
                    "one of layernorm, rmsnorm, none",
                    other,
                )),
            },
            _ => errors.push(
                Diagnostic::error("E0502", format!("unknown LaX option `{key}`"), e.key.span)
                    .with_label("not an option")
                    .with_hint(
                        did_you_mean(key, KEYS)
                            .unwrap_or_else(|| "a LaX pathway takes `gate` and `norm`".into()),
                    ),
            ),
        }
    }
    (errors.len() == before).then_some(LaxOptions {
        gate,
        gate_span,
        norm,
    })
}

fn read_gate(v: &Evaluated, errors: &mut Vec<Diagnostic>) -> Option<GateSpec> {
    let Some((name, name_span, positional, named, span)) = super::args::call_parts(v) else {
        errors.push(type_error(
            "`gate`",
            "one of identity, linear, tensor, dense",
            v,
        ));
        return None;
    };
    let before = errors.len();
    let gate = match name {
        "identity" | "linear" => {
            Args::new(name, span, positional, named, &[], errors);
            if name == "identity" {
                GateSpec::Identity
            } else {
                GateSpec::Linear
            }
        }
        "tensor" => {
            let args = Args::new(
                name,
                span,
                positional,
                named,
                &["shape", "input", "output"],
                errors,
            );
            let fold = |key: &str, errors: &mut Vec<Diagnostic>| -> Option<[usize; 2]> {
                let v = args.get(key)?;
                match int_list(&format!("`{key}`"), v) {
                    Ok(l) if l.len() == 2 => Some([l[0], l[1]]),
                    Ok(l) => {
                        errors.push(
                            Diagnostic::error(
                                "E0510",
                                format!(
                                    "a tensor gate folds the latent into 2 factors; found {}",
                                    l.len()
                                ),
                                v.span(),
                            )
                            .with_label("expected `[s0, s1]`"),
                        );
                        None
                    }
                    Err(d) => {
                        errors.push(d);
                        None
                    }
                }
            };
            let shape = fold("shape", errors);
            let input = fold("input", errors);
            let output = fold("output", errors);
            if shape.is_some() && (input.is_some() || output.is_some()) {
                errors.push(
                    Diagnostic::error(
                        "E0402",
                        "give `shape` (both ends) or `input`/`output`, not both",
                        span,
                    )
                    .with_label("conflicting shapes"),
                );
            }
            GateSpec::Tensor {
                input: input.or(shape),
                output: output.or(shape),
            }
        }
        "dense" => {
            let args = Args::new(name, span, positional, named, &["input", "output"], errors);
            let width = |key: &str, errors: &mut Vec<Diagnostic>| {
                args.get(key).and_then(|v| {
                    positive_int(&format!("`{key}`"), v)
                        .map_err(|d| errors.push(d))
                        .ok()
                })
            };
            GateSpec::Dense {
                input: width("input", errors),
                output: width("output", errors),
            }
        }
        _ => {
            errors.push(
                Diagnostic::error("E0503", format!("unknown gate `{name}`"), name_span)
                    .with_label("not a gate")
                    .with_hint(did_you_mean(name, GateSpec::NAMES).unwrap_or_else(|| {
                        format!("choose one of {}", GateSpec::NAMES.join(", "))
                    })),
            );
            return None;
        }
    };
    (errors.len() == before).then_some(gate)
}
