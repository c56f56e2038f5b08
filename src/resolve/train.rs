//! The `train { ... }` section: a fixed schema of keys, each with the kind of value it takes.
//! The same schema checks `laxc train --set key=value` overrides.

use super::eval::{Evaluated, Num};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::spec::TrainValue;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    /// A whole number `>= 0`.
    Count,
    /// Any number `>= 0`.
    Number,
    Str,
    /// One of the named choices, each optionally called with arguments.
    Choice(&'static [&'static str]),
}

/// Every key the `train` section accepts, with what it takes and what it means.
pub const SCHEMA: &[(&str, KeyKind, &str)] = &[
    (
        "data",
        KeyKind::Choice(&["text", "tokens", "mnist", "cifar10"]),
        "training data",
    ),
    ("steps", KeyKind::Count, "optimizer steps"),
    (
        "epochs",
        KeyKind::Count,
        "passes over the data (instead of steps)",
    ),
    (
        "batch",
        KeyKind::Count,
        "sequences or images per micro-batch",
    ),
    ("accum", KeyKind::Count, "micro-batches per optimizer step"),
    ("lr", KeyKind::Number, "peak learning rate"),
    (
        "min_lr",
        KeyKind::Number,
        "final learning rate of the schedule",
    ),
    (
        "schedule",
        KeyKind::Choice(&["constant", "cosine", "linear"]),
        "learning-rate schedule",
    ),
    ("warmup", KeyKind::Count, "warm-up steps"),
    ("weight_decay", KeyKind::Number, "AdamW weight decay"),
    ("beta1", KeyKind::Number, "AdamW beta1"),
    ("beta2", KeyKind::Number, "AdamW beta2"),
    ("eps", KeyKind::Number, "AdamW epsilon"),
    (
        "clip",
        KeyKind::Number,
        "global gradient-norm clipping (0: off)",
    ),
    ("dropout", KeyKind::Number, "dropout probability"),
    ("seed", KeyKind::Count, "random seed"),
    ("eval_every", KeyKind::Count, "steps between validations"),
    ("eval_batches", KeyKind::Count, "batches per validation"),
    ("log_every", KeyKind::Count, "steps between metric records"),
    (
        "checkpoint_every",
        KeyKind::Count,
        "steps between checkpoints",
    ),
    ("device", KeyKind::Str, "cpu or cuda[:N]"),
];

pub fn keys() -> impl Iterator<Item = &'static str> {
    SCHEMA.iter().map(|(k, _, _)| *k)
}

/// Checks one `key = value` against the schema.
pub fn check_entry(
    key: &str,
    key_span: crate::source::Span,
    v: &Evaluated,
) -> Result<TrainValue, Diagnostic> {
    let Some((_, kind, _)) = SCHEMA.iter().find(|(k, _, _)| *k == key) else {
        return Err(
            Diagnostic::error("E0601", format!("unknown train key `{key}`"), key_span)
                .with_label("not a train setting")
                .with_hint(did_you_mean(key, keys()).unwrap_or_else(|| {
                    format!("the keys are: {}", keys().collect::<Vec<_>>().join(", "))
                })),
        );
    };
    convert(key, *kind, v)
}

fn wrong(key: &str, expected: &str, v: &Evaluated) -> Diagnostic {
    Diagnostic::error(
        "E0602",
        format!("`{key}` must be {expected}, found {}", v.describe()),
        v.span(),
    )
    .with_label(format!("expected {expected}"))
}

fn convert(key: &str, kind: KeyKind, v: &Evaluated) -> Result<TrainValue, Diagnostic> {
    match (kind, v) {
        (KeyKind::Count, Evaluated::Num(Num::Int(i), _)) if *i >= 0 => Ok(TrainValue::Int(*i)),
        (KeyKind::Count, _) => Err(wrong(key, "a whole number >= 0", v)),
        (KeyKind::Number, Evaluated::Num(n, _)) if n.as_f64() >= 0.0 && n.as_f64().is_finite() => {
            Ok(TrainValue::Float(n.as_f64()))
        }
        (KeyKind::Number, _) => Err(wrong(key, "a number >= 0", v)),
        (KeyKind::Str, Evaluated::Str(s, _)) => Ok(TrainValue::Str(s.clone())),
        (KeyKind::Str, Evaluated::Word(w, _)) => Ok(TrainValue::Str(w.clone())),
        (KeyKind::Str, _) => Err(wrong(key, "a string", v)),
        (KeyKind::Choice(names), Evaluated::Word(w, s)) => {
            choice_name(key, names, w, *s)?;
            Ok(TrainValue::Choice {
                name: w.clone(),
                args: BTreeMap::new(),
                positional: Vec::new(),
            })
        }
        (
            KeyKind::Choice(names),
            Evaluated::Call {
                name,
                name_span,
                positional,
                named,
                ..
            },
        ) => {
            choice_name(key, names, name, *name_span)?;
            let mut args = BTreeMap::new();
            for (k, _, a) in named {
                args.insert(k.clone(), plain(a)?);
            }
            let positional = positional.iter().map(plain).collect::<Result<_, _>>()?;
            Ok(TrainValue::Choice {
                name: name.clone(),
                args,
                positional,
            })
        }
        (KeyKind::Choice(names), _) => Err(wrong(key, &format!("one of {}", names.join(", ")), v)),
    }
}

fn choice_name(
    key: &str,
    names: &[&str],
    w: &str,
    span: crate::source::Span,
) -> Result<(), Diagnostic> {
    if names.contains(&w) {
        return Ok(());
    }
    Err(
        Diagnostic::error("E0602", format!("unknown {key} `{w}`"), span)
            .with_label(format!("not a {key} choice"))
            .with_hint(
                did_you_mean(w, names.iter().copied())
                    .unwrap_or_else(|| format!("choose one of {}", names.join(", "))),
            ),
    )
}

fn plain(v: &Evaluated) -> Result<TrainValue, Diagnostic> {
    Ok(match v {
        Evaluated::Num(Num::Int(i), _) => TrainValue::Int(*i),
        Evaluated::Num(Num::Dec(d), _) => TrainValue::Float(*d),
        Evaluated::Str(s, _) | Evaluated::Word(s, _) => TrainValue::Str(s.clone()),
        other => {
            return Err(Diagnostic::error(
                "E0602",
                format!(
                    "an argument here must be a number or a string, found {}",
                    other.describe()
                ),
                other.span(),
            )
            .with_label("unexpected value"))
        }
    })
}
