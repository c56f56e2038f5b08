//! Resolution: AST → [`Spec`]. Evaluates constants, reads the model's sizes, expands selectors
//! to sites (later rules win), and reads every factorization, pathway and training key.
//! All errors are collected; each points at the text that caused it.

mod args;
pub mod eval;
mod factorize;
mod lax;
mod selector;

use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::family::{Family, ModelConfig, Sizes};
use crate::ir::{Factorization, SiteRef};
use crate::source::{Source, Span};
use crate::spec::*;
use crate::syntax::ast::{self, Item};
use eval::{Evaluated, Num, Scope};
use std::collections::BTreeMap;

/// What resolution gives: the spec whenever the model itself resolved (even if some rules had
/// errors, so that later checks can still report on the rules that were fine), and every
/// diagnostic found.
pub struct Resolved {
    pub spec: Option<Spec>,
    pub diagnostics: Vec<Diagnostic>,
}

/// Resolves a parsed file, collecting every error.
pub fn resolve(file: &ast::File, source: &Source) -> Resolved {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut scope = Scope::default();

    // Pass 1, in file order: constants and the model, so names are defined before use.
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
                if let Some(cfg) = read_model(m, &mut scope, &mut errors) {
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
        return Resolved {
            spec: None,
            diagnostics: errors,
        };
    };

    // Pass 2: factorize rules, in order; a later rule overrides an earlier one on a site.
    let mut sites: Vec<SiteAssignment> = model
        .site_refs()
        .map(|_| SiteAssignment {
            fact: Factorization::Dense,
            rule: None,
            span: model_span,
            rank_span: model_span,
            modes_span: model_span,
        })
        .collect();
    let mut rules: Vec<RuleMatch> = Vec::new();
    let mut rule_sites: Vec<Vec<usize>> = Vec::new();
    let errors_before_factorize = errors.len();
    for item in &file.items {
        let Item::Factorize(f) = item else { continue };
        let rule = rules.len();
        rules.push(rule_match(source, f.span));
        rule_sites.push(Vec::new());
        let template = match scope.eval_value(&f.kind) {
            Ok(v) => factorize::read(&v, &mut errors),
            Err(d) => {
                errors.push(d);
                None
            }
        };
        let matched = expand_all(&f.selectors, &model, &scope, &mut errors);
        let Some(t) = template else { continue };
        let modes_span = match &t.template {
            factorize::Template::Tt { modes_span, .. } => *modes_span,
            _ => t.rank_span,
        };
        for s in matched {
            let (inp, out) = model.site_dims(s.local);
            // The short name (`attn.q`), so a warning about a rule is given once, not per block.
            let (group, local) = model.family.site_name(s.local);
            let name = format!("{group}.{local}");
            let fact =
                factorize::instantiate(&t.template, inp, out, t.rank_span, &name, &mut warnings);
            let idx = model.site_index(s);
            sites[idx] = SiteAssignment {
                fact,
                rule: Some(rule),
                span: f.span,
                rank_span: t.rank_span,
                modes_span,
            };
            rule_sites[rule].push(idx);
        }
    }

    // A factorize rule that failed leaves its sites dense; pathway errors about dense ends would
    // only echo that first error, so they are not reported.
    let factorize_failed = errors.len() > errors_before_factorize;

    // Pass 3: LaX rules, after every factorization is known.
    let mut inter: Vec<InterPathway> = Vec::new();
    let mut intra: Vec<IntraPathway> = Vec::new();
    for item in &file.items {
        let Item::Lax(l) = item else { continue };
        let rule = rules.len();
        rules.push(rule_match(source, l.span));
        rule_sites.push(Vec::new());
        match l.kind.name.as_str() {
            "inter" => {
                let opts = lax::read_options(&l.entries, l.span, &scope, &mut errors);
                let targets = expand_all(&l.selectors, &model, &scope, &mut errors);
                let source_site =
                    l.from
                        .as_ref()
                        .and_then(|sel| match selector::expand(sel, &model, &scope) {
                            Ok(v) if v.len() == 1 => Some((v[0], sel.span)),
                            Ok(v) => {
                                errors.push(
                                    Diagnostic::error(
                                        "E0507",
                                        format!(
                                            "`from` must name exactly one site; this names {}",
                                            v.len()
                                        ),
                                        sel.span,
                                    )
                                    .with_label("more than one site")
                                    .with_hint("write a single site, e.g. `from blocks[2].attn.q`"),
                                );
                                None
                            }
                            Err(d) => {
                                errors.push(d);
                                None
                            }
                        });
                let Some(opts) = opts else { continue };
                if l.from.is_some() && source_site.is_none() {
                    continue;
                }
                let before = errors.len();
                let mut made = 0;
                let mut dense_ends = 0;
                for t in targets {
                    let src = match source_site {
                        Some((s, _)) => s,
                        // The first block only emits; by default a site receives from the same
                        // site one block earlier.
                        None if t.block == 0 => continue,
                        None => SiteRef {
                            block: t.block - 1,
                            local: t.local,
                        },
                    };
                    let src_dense = sites[model.site_index(src)].fact == Factorization::Dense;
                    let dst_dense = sites[model.site_index(t)].fact == Factorization::Dense;
                    if src_dense || dst_dense {
                        if let (Some((_, sspan)), false) = (source_site, factorize_failed) {
                            let (which, site) = if dst_dense {
                                ("target", t)
                            } else {
                                ("source", src)
                            };
                            errors.push(
                                Diagnostic::error(
                                    "E0506",
                                    format!(
                                        "both ends of a LaX pathway must be factorized; the {which} \
                                         {} is dense",
                                        site_name(&model, site)
                                    ),
                                    if dst_dense { l.selectors[0].span } else { sspan },
                                )
                                .with_label(format!("{which} is dense"))
                                .with_hint("factorize it first with a `factorize ... as svd(...)` rule"),
                            );
                        }
                        // Where a dense layer interrupts a chain, the next factorized layer
                        // starts a new chain: no pathway, no error.
                        dense_ends += 1;
                        continue;
                    }
                    inter.retain(|p| p.target != t);
                    inter.push(InterPathway {
                        source: src,
                        target: t,
                        gate: opts.gate.clone(),
                        norm: opts.norm,
                        rule,
                        span: l.span,
                        gate_span: opts.gate_span,
                    });
                    rule_sites[rule].push(model.site_index(t));
                    made += 1;
                }
                if made == 0 && errors.len() == before && !factorize_failed {
                    let hint = if dense_ends > 0 {
                        "the sites it names (or their sources one block earlier) are dense; \
                         factorize them first"
                    } else {
                        "the first block only emits its latent; select blocks from 1 on, or \
                         name an earlier source with `from`"
                    };
                    errors.push(
                        Diagnostic::error("E0508", "this LaX rule creates no pathway", l.span)
                            .with_label("no pathway")
                            .with_hint(hint),
                    );
                }
            }
            "intra" => {
                if let Some(f) = &l.from {
                    errors.push(
                        Diagnostic::error(
                            "E0509",
                            "intra-layer LaX runs inside one TT layer; it has no `from`",
                            f.span,
                        )
                        .with_label("not allowed here"),
                    );
                }
                if let Some(e) = l.entries.first() {
                    errors.push(
                        Diagnostic::error(
                            "E0509",
                            "intra-layer LaX is a plain add: it has no gate and no norm",
                            e.span,
                        )
                        .with_label("not allowed here")
                        .with_hint("remove the `{ ... }`"),
                    );
                }
                for s in expand_all(&l.selectors, &model, &scope, &mut errors) {
                    let idx = model.site_index(s);
                    let fact = &sites[idx].fact;
                    if !matches!(fact, Factorization::Tt { .. }) {
                        if factorize_failed {
                            break;
                        }
                        errors.push(
                            Diagnostic::error(
                                "E0505",
                                format!(
                                    "intra-layer LaX needs a tensor-train layer; {} is {}",
                                    site_name(&model, s),
                                    fact.kind_name()
                                ),
                                l.selectors[0].span,
                            )
                            .with_label("not a TT layer")
                            .with_hint("factorize it `as tt(modes = [...], ranks = [...])`, or use `lax inter`"),
                        );
                        break;
                    }
                    if !intra.iter().any(|p| p.site == s) {
                        intra.push(IntraPathway {
                            site: s,
                            rule,
                            span: l.span,
                        });
                    }
                    rule_sites[rule].push(idx);
                }
            }
            other => errors.push(
                Diagnostic::error("E0501", format!("unknown LaX kind `{other}`"), l.kind.span)
                    .with_label("expected `inter` or `intra`")
                    .with_hint(
                        did_you_mean(other, ["inter", "intra"])
                            .unwrap_or_else(|| "write `lax inter ...` or `lax intra ...`".into()),
                    ),
            ),
        }
    }
    inter.sort_by_key(|p| (p.target, p.source));
    intra.sort_by_key(|p| p.site);

    // Rule statistics: how many sites each rule matched, and on how many it is the last word.
    for (i, r) in rules.iter_mut().enumerate() {
        r.sites = rule_sites[i].len();
        r.effective = rule_sites[i]
            .iter()
            .filter(|&&idx| {
                sites[idx].rule == Some(i)
                    || inter
                        .iter()
                        .any(|p| p.rule == i && model.site_index(p.target) == idx)
                    || intra
                        .iter()
                        .any(|p| p.rule == i && model.site_index(p.site) == idx)
            })
            .count();
    }

    // Pass 4: the train section.
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
        check_between_train_keys(&spec, &mut errors);
        train = Some(spec);
    }

    errors.extend(warnings);
    Resolved {
        spec: Some(Spec {
            model,
            model_span,
            sites,
            inter,
            intra,
            rules,
            train,
        }),
        diagnostics: errors,
    }
}

/// The most blocks a model may have; the largest published transformers have a few hundred.
const MAX_LAYERS: usize = 1024;

fn rule_match(source: &Source, span: Span) -> RuleMatch {
    let text = source.text.get(span.start..span.end).unwrap_or("");
    let first_line = text.lines().next().unwrap_or("").trim();
    RuleMatch {
        line: source.line_col(span.start).0,
        text: first_line.to_string(),
        sites: 0,
        effective: 0,
    }
}

fn expand_all(
    selectors: &[ast::Selector],
    model: &ModelConfig,
    scope: &Scope,
    errors: &mut Vec<Diagnostic>,
) -> Vec<SiteRef> {
    let mut out: Vec<SiteRef> = Vec::new();
    for sel in selectors {
        match selector::expand(sel, model, scope) {
            Ok(v) => {
                for s in v {
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
            Err(d) => errors.push(d),
        }
    }
    out.sort();
    out
}

/// The checks between train keys (`min_lr` above `lr`, `warmup` longer than `steps`, ...),
/// pointed at the key that breaks them.
fn check_between_train_keys(spec: &TrainSpec, errors: &mut Vec<Diagnostic>) {
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

/// Reads `model NAME: FAMILY { key = value, ... }` and defines its keys as names.
fn read_model(
    m: &ast::ModelDecl,
    scope: &mut Scope,
    errors: &mut Vec<Diagnostic>,
) -> Option<ModelConfig> {
    let Some(family) = Family::from_name(&m.family.name) else {
        errors.push(
            Diagnostic::error(
                "E0203",
                format!("unknown model family `{}`", m.family.name),
                m.family.span,
            )
            .with_label("not a family")
            .with_hint(
                did_you_mean(&m.family.name, Family::names()).unwrap_or_else(|| {
                    let names: Vec<&str> = Family::names().collect();
                    format!("the families are: {}", names.join(", "))
                }),
            ),
        );
        return None;
    };
    let specs = family.keys();
    let before = errors.len();
    let mut values: BTreeMap<&'static str, (i64, Span)> = BTreeMap::new();
    for e in &m.entries {
        let Some(spec) = specs.iter().find(|k| k.name == e.key.name) else {
            errors.push(
                Diagnostic::error(
                    "E0204",
                    format!("unknown key `{}` for a {} model", e.key.name, family.name()),
                    e.key.span,
                )
                .with_label("not a size of this family")
                .with_hint(
                    did_you_mean(&e.key.name, specs.iter().map(|k| k.name)).unwrap_or_else(|| {
                        format!(
                            "a {} model takes: {}",
                            family.name(),
                            specs.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                        )
                    }),
                ),
            );
            continue;
        };
        if let Some((_, prev)) = values.get(spec.name) {
            errors.push(
                Diagnostic::error("E0206", format!("`{}` is set twice", spec.name), e.key.span)
                    .with_label("second time")
                    .with_secondary(*prev, "first time"),
            );
            continue;
        }
        let v = if spec.flag {
            match scope.eval_value(&e.value) {
                Ok(Evaluated::Word(w, _)) if w == "true" => Some(1),
                Ok(Evaluated::Word(w, _)) if w == "false" => Some(0),
                Ok(other) => {
                    errors.push(
                        Diagnostic::error(
                            "E0207",
                            format!(
                                "`{}` is `true` or `false`, found {}",
                                spec.name,
                                other.describe()
                            ),
                            other.span(),
                        )
                        .with_label("expected true or false"),
                    );
                    None
                }
                Err(d) => {
                    errors.push(d);
                    None
                }
            }
        } else {
            match scope.eval_value(&e.value) {
                Ok(Evaluated::Num(Num::Int(i), _)) if i > 0 && i <= args::MAX_SIZE => Some(i),
                Ok(other) => {
                    errors.push(
                        Diagnostic::error(
                            "E0207",
                            format!(
                                "`{}` must be a whole number from 1 to 2^24, found {}",
                                spec.name,
                                other.describe()
                            ),
                            other.span(),
                        )
                        .with_label("expected a positive whole number"),
                    );
                    None
                }
                Err(d) => {
                    errors.push(d);
                    None
                }
            }
        };
        if let Some(v) = v {
            values.insert(spec.name, (v, e.key.span));
            // A size may use the sizes written before it: `mlp = 4 * hidden`.
            scope.define(spec.name, Num::Int(v), e.key.span);
        }
    }
    for spec in specs {
        if values.contains_key(spec.name) {
            continue;
        }
        match spec.default {
            Some(d) => {
                values.insert(spec.name, (d, m.span));
            }
            None => {
                if !m.entries.iter().any(|e| e.key.name == spec.name) {
                    errors.push(
                        Diagnostic::error(
                            "E0205",
                            format!("the {} model needs `{}`", family.name(), spec.name),
                            m.name.span.join(m.family.span),
                        )
                        .with_label(format!("`{}` missing", spec.name))
                        .with_hint(format!("add `{} = ...` to the model's sizes", spec.name)),
                    );
                }
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    for (k, (v, span)) in &values {
        scope.define(k, Num::Int(*v), *span);
    }
    let get = |k: &str| values.get(k).map_or(0, |(v, _)| *v as usize);
    let span_of = |k: &str| values.get(k).map_or(m.span, |(_, s)| *s);
    if get("layers") > MAX_LAYERS {
        errors.push(
            Diagnostic::error(
                "E0207",
                format!(
                    "`layers` = {} is more than laxc supports ({MAX_LAYERS})",
                    get("layers")
                ),
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
        values: values.iter().map(|(k, (v, _))| (*k, *v as usize)).collect(),
    };
    let cfg = match (family.def().config)(&sizes) {
        Ok(cfg) => cfg,
        Err(e) => {
            errors.push(
                Diagnostic::error("E0208", e.message, span_of(e.key))
                    .with_label(e.label)
                    .with_hint(e.hint),
            );
            return None;
        }
    };
    Some(cfg)
}
