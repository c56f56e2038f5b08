//! The model: constants and `model NAME: FAMILY { sizes }`, read in file order so that every
//! name is defined before it is used.

use super::args;
use super::eval::{Evaluated, Num, Scope};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::family::{Family, KeyDefault, KeyKind, KeySpec, ModelConfig, Sizes};
use crate::source::Span;
use crate::syntax::ast::{self, Item};
use std::collections::BTreeMap;

/// Pass 1: constants and the model, in file order. Returns the model and where it is written,
/// or None when there is no model that resolved (the errors say why).
pub fn read(
    file: &ast::File,
    scope: &mut Scope,
    errors: &mut Vec<Diagnostic>,
) -> Option<(ModelConfig, Span)> {
    let mut model: Option<(ModelConfig, Span)> = None;
    for item in &file.items {
        match item {
            Item::Let(l) => match scope.eval(match &l.value {
                ast::Value::Expr(e) => e,
                other => {
                    errors.push(
                        Diagnostic::error(
                            "E0105",
                            "a constant must be a number or an arithmetic expression",
                            other.span(),
                        )
                        .with_label("not a number"),
                    );
                    continue;
                }
            }) {
                Ok(v) => {
                    if let Some(prev) = scope.define(&l.name.name, v, l.name.span) {
                        errors.push(
                            Diagnostic::error(
                                "E0106",
                                format!("`{}` is defined twice", l.name.name),
                                l.name.span,
                            )
                            .with_label("second definition")
                            .with_secondary(prev, "first defined here")
                            .with_hint("each name is defined once; choose another name"),
                        );
                    }
                }
                Err(d) => errors.push(d),
            },
            Item::Model(m) => {
                if let Some((_, first)) = &model {
                    errors.push(
                        Diagnostic::error("E0202", "a spec describes one model", m.span)
                            .with_label("second model")
                            .with_secondary(*first, "first model here")
                            .with_hint("put each model in its own .lax file"),
                    );
                    continue;
                }
                if let Some(cfg) = read_model(m, scope, errors) {
                    model = Some((cfg, m.span));
                }
            }
            _ => {}
        }
    }
    let Some((model, model_span)) = model else {
        if !file.items.iter().any(|i| matches!(i, Item::Model(_))) {
            errors.push(
                Diagnostic::error("E0201", "this spec declares no model", Span::new(0, 0))
                    .with_label("expected a `model` declaration")
                    .with_hint(
                        "start with e.g. `model tiny: llama { vocab = 256, hidden = 256, \
                         ffn = 768, heads = 4, layers = 4, seq = 128 }`",
                    ),
            );
        }
        return None;
    };
    Some((model, model_span))
}

/// The most blocks a model may have; the largest published transformers have a few hundred.
const MAX_LAYERS: usize = 1024;

/// Reads `model NAME: FAMILY { key = value, ... }` and defines its keys as names.
fn read_model(
    m: &ast::ModelDecl,
    scope: &mut Scope,
    errors: &mut Vec<Diagnostic>,
) -> Option<ModelConfig> {
    let family = read_family(m, errors)?;
    let before = errors.len();
    let mut values = Values::new();
    for e in &m.entries {
        if let Some((spec, v)) = read_size(family, e, &values, scope, errors) {
            values.insert(spec.name, (v, e.key.span));
            // A size may use the sizes written before it: `mlp = 4 * hidden`.
            scope.define(spec.name, v, e.key.span);
        }
    }
    fill_defaults(family, m, &mut values, errors);
    if errors.len() > before {
        return None;
    }
    for (k, (v, span)) in &values {
        scope.define(k, *v, *span);
    }
    sizes_fit(family, m, &values, errors)
}

/// The keys read so far, with where each was written.
type Values = BTreeMap<&'static str, (Num, Span)>;

fn read_family(m: &ast::ModelDecl, errors: &mut Vec<Diagnostic>) -> Option<Family> {
    let family = Family::from_name(&m.family.name);
    if family.is_none() {
        let hint = did_you_mean(&m.family.name, Family::names()).unwrap_or_else(|| {
            let names: Vec<&str> = Family::names().collect();
            format!("the families are: {}", names.join(", "))
        });
        errors.push(
            Diagnostic::error(
                "E0203",
                format!("unknown model family `{}`", m.family.name),
                m.family.span,
            )
            .with_label("not a family")
            .with_hint(hint),
        );
    }
    family
}

/// One `key = value` of the model: a key of the family, set once, with a value it can take.
fn read_size(
    family: Family,
    e: &ast::Entry,
    values: &Values,
    scope: &Scope,
    errors: &mut Vec<Diagnostic>,
) -> Option<(&'static KeySpec, Num)> {
    let specs = family.keys();
    let Some(spec) = specs.iter().find(|k| k.name == e.key.name) else {
        let names = || specs.iter().map(|k| k.name);
        let hint = did_you_mean(&e.key.name, names()).unwrap_or_else(|| {
            let all: Vec<&str> = names().collect();
            format!("a {} model takes: {}", family.name(), all.join(", "))
        });
        errors.push(
            Diagnostic::error(
                "E0204",
                format!("unknown key `{}` for a {} model", e.key.name, family.name()),
                e.key.span,
            )
            .with_label("not a size of this family")
            .with_hint(hint),
        );
        return None;
    };
    if let Some((_, prev)) = values.get(spec.name) {
        errors.push(
            Diagnostic::error("E0206", format!("`{}` is set twice", spec.name), e.key.span)
                .with_label("second time")
                .with_secondary(*prev, "first time"),
        );
        return None;
    }
    let evaluated = scope
        .eval_value(&e.value)
        .map_err(|d| errors.push(d))
        .ok()?;
    let value = match (&evaluated, spec.kind) {
        (Evaluated::Word(w, _), KeyKind::Flag) if w == "true" => Some(Num::Int(1)),
        (Evaluated::Word(w, _), KeyKind::Flag) if w == "false" => Some(Num::Int(0)),
        (Evaluated::Num(Num::Int(i), _), KeyKind::Size) if *i > 0 && *i <= args::MAX_SIZE => {
            Some(Num::Int(*i))
        }
        (Evaluated::Num(n, _), KeyKind::Real) if n.as_f64() > 0.0 && n.as_f64().is_finite() => {
            Some(Num::Dec(n.as_f64()))
        }
        _ => None,
    };
    if value.is_none() {
        let (expected, label) = match spec.kind {
            KeyKind::Flag => ("`true` or `false`", "expected true or false"),
            KeyKind::Size => (
                "a whole number from 1 to 2^24",
                "expected a positive whole number",
            ),
            KeyKind::Real => ("a positive number", "expected a positive number"),
        };
        errors.push(
            Diagnostic::error(
                "E0207",
                format!(
                    "`{}` must be {expected}, found {}",
                    spec.name,
                    evaluated.describe()
                ),
                evaluated.span(),
            )
            .with_label(label),
        );
    }
    Some((spec, value?))
}

/// Optional keys take their defaults; a missing required key is an error.
fn fill_defaults(
    family: Family,
    m: &ast::ModelDecl,
    values: &mut Values,
    errors: &mut Vec<Diagnostic>,
) {
    for spec in family.keys() {
        if values.contains_key(spec.name) {
            continue;
        }
        let default = match spec.default {
            KeyDefault::Int(d) => Some(Num::Int(d)),
            KeyDefault::Real(d) => Some(Num::Dec(d)),
            // A missing `other` was reported already.
            KeyDefault::SameAs(other) => match values.get(other) {
                Some((v, _)) => Some(*v),
                None => continue,
            },
            KeyDefault::Required => None,
        };
        match default {
            Some(d) => {
                values.insert(spec.name, (d, m.span));
            }
            // A key written with a bad value was reported already.
            None if m.entries.iter().any(|e| e.key.name == spec.name) => {}
            None => errors.push(
                Diagnostic::error(
                    "E0205",
                    format!("the {} model needs `{}`", family.name(), spec.name),
                    m.name.span.join(m.family.span),
                )
                .with_label(format!("`{}` missing", spec.name))
                .with_hint(format!("add `{} = ...` to the model's sizes", spec.name)),
            ),
        }
    }
}

/// The checks every family shares (the depth limit, heads dividing hidden), then the family's
/// own, which make the config.
fn sizes_fit(
    family: Family,
    m: &ast::ModelDecl,
    values: &Values,
    errors: &mut Vec<Diagnostic>,
) -> Option<ModelConfig> {
    let get = |k: &str| values.get(k).map_or(0, |(v, _)| v.as_f64() as usize);
    let span_of = |k: &str| values.get(k).map_or(m.span, |(_, s)| *s);
    let layers = get("layers");
    if layers > MAX_LAYERS {
        errors.push(
            Diagnostic::error(
                "E0207",
                format!("`layers` = {layers} is more than laxc supports ({MAX_LAYERS})"),
                span_of("layers"),
            )
            .with_label("too many blocks"),
        );
        return None;
    }
    let (hidden, heads) = (get("hidden"), get("heads"));
    if hidden % heads != 0 {
        errors.push(
            Diagnostic::error(
                "E0208",
                format!("`heads` = {heads} does not divide `hidden` = {hidden}"),
                span_of("heads"),
            )
            .with_label("must divide hidden")
            .with_hint("each attention head gets hidden / heads channels"),
        );
        return None;
    }
    let sizes = Sizes {
        name: &m.name.name,
        family,
        values: values
            .iter()
            .filter_map(|(k, (v, _))| match v {
                Num::Int(i) => Some((*k, *i as usize)),
                Num::Dec(_) => None,
            })
            .collect(),
        reals: values.iter().map(|(k, (v, _))| (*k, v.as_f64())).collect(),
    };
    (family.def().config)(&sizes)
        .map_err(|e| {
            errors.push(
                Diagnostic::error("E0208", e.message, span_of(e.key))
                    .with_label(e.label)
                    .with_hint(e.hint),
            )
        })
        .ok()
}
