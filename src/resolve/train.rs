//! The `train { ... }` section: each entry checked against the typed schema of train keys
//! (`crate::options`), then the checks between keys.

use super::eval::Scope;
use crate::diagnostic::Diagnostic;
use crate::spec::TrainSpec;
use crate::syntax::ast::{self, Item};
use std::collections::BTreeMap;

/// Pass 4: the train section (at most one).
pub fn resolve_section(
    file: &ast::File,
    scope: &Scope,
    errors: &mut Vec<Diagnostic>,
) -> Option<TrainSpec> {
    let mut train: Option<TrainSpec> = None;
    for item in &file.items {
        let Item::Train(t) = item else { continue };
        if let Some(first) = &train {
            errors.push(
                Diagnostic::error("E0604", "a spec has one `train` section", t.span)
                    .with_label("second train section")
                    .with_secondary(first.span, "first one here")
                    .with_hint("merge the two sections"),
            );
            continue;
        }
        let mut spec = TrainSpec {
            entries: BTreeMap::new(),
            span: t.span,
        };
        for e in &t.entries {
            if let Some((_, prev)) = spec.entries.get(&e.key.name) {
                errors.push(
                    Diagnostic::error(
                        "E0603",
                        format!("`{}` is set twice", e.key.name),
                        e.key.span,
                    )
                    .with_label("second time")
                    .with_secondary(*prev, "first time"),
                );
                continue;
            }
            let checked = scope
                .eval_value(&e.value)
                .and_then(|v| crate::options::check_entry(&e.key.name, e.key.span, &v));
            match checked {
                Ok(v) => {
                    spec.entries.insert(e.key.name.clone(), (v, e.key.span));
                }
                Err(d) => errors.push(d),
            }
        }
        check_between_keys(&spec, errors);
        train = Some(spec);
    }
    train
}

/// The checks between train keys (`min_lr` above `lr`, `warmup` longer than `steps`, ...),
/// pointed at the key that breaks them.
fn check_between_keys(spec: &TrainSpec, errors: &mut Vec<Diagnostic>) {
    let entries: Vec<(String, crate::spec::TrainValue)> = spec
        .entries
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    let Err(e) = crate::options::TrainOptions::resolve(&entries, &[]) else {
        return;
    };
    // `warmup` may have come from `schedule(warmup = ...)`.
    let span = [e.key.as_str(), "schedule"]
        .iter()
        .find_map(|k| spec.entries.get(*k))
        .map_or(spec.span, |(_, span)| *span);
    errors.push(
        Diagnostic::error("E0606", e.message, span)
            .with_label("conflicts with another train key")
            .with_hint("change one of the two in the spec"),
    );
}
