//! `lax inter|intra SITES [from SITE] { gate = ..., norm = ... }`: reading the pathway options.

use super::args::{int_list, positive_int, type_error, Args};
use super::eval::{Evaluated, Scope};
use super::{expand_all, selector, Rules};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::family::ModelConfig;
use crate::ir::NormKind;
use crate::ir::{Factorization, SiteRef};
use crate::source::Span;
use crate::spec::GateSpec;
use crate::spec::{site_name, InterPathway, IntraPathway, SiteAssignment};
use crate::syntax::ast::Entry;
use crate::syntax::ast::{self, Item};

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

/// What the LaX rules read: the model, every site's form (by site index) and the names.
#[derive(Clone, Copy)]
pub struct Known<'a> {
    pub model: &'a ModelConfig,
    pub sites: &'a [SiteAssignment],
    /// A factorize rule that failed leaves its sites dense; errors about dense pathway ends
    /// would only echo it, so then none are reported.
    pub factorize_failed: bool,
    pub scope: &'a Scope,
}

/// Pass 3: the `lax` rules, once every site's form is known.
pub fn resolve_rules(
    file: &ast::File,
    known: Known,
    rules: &mut Rules,
    errors: &mut Vec<Diagnostic>,
) -> (Vec<InterPathway>, Vec<IntraPathway>) {
    let mut inter: Vec<InterPathway> = Vec::new();
    let mut intra: Vec<IntraPathway> = Vec::new();
    for item in &file.items {
        let Item::Lax(l) = item else { continue };
        let rule = rules.add(l.span);
        match l.kind.name.as_str() {
            "inter" => inter_rule(l, rule, known, rules, &mut inter, errors),
            "intra" => intra_rule(l, rule, known, rules, &mut intra, errors),
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
    (inter, intra)
}

/// One `lax inter` rule: a pathway into every selected site from the same site one block
/// earlier (or from the one site `from` names), where both ends are factorized.
fn inter_rule(
    l: &ast::LaxRule,
    rule: usize,
    known: Known,
    rules: &mut Rules,
    inter: &mut Vec<InterPathway>,
    errors: &mut Vec<Diagnostic>,
) {
    let Known {
        model,
        sites,
        factorize_failed,
        scope,
    } = known;
    let opts = read_options(&l.entries, l.span, scope, errors);
    let targets = expand_all(&l.selectors, model, scope, errors);
    let source_site = l
        .from
        .as_ref()
        .and_then(|sel| from_site(sel, model, scope, errors));
    let Some(opts) = opts else { return };
    if l.from.is_some() && source_site.is_none() {
        return;
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
                let (which, site, span) = if dst_dense {
                    ("target", t, l.selectors[0].span)
                } else {
                    ("source", src, sspan)
                };
                errors.push(dense_end(model, which, site, span));
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
        rules.matched(rule, model.site_index(t));
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

/// The one site `from` names, or None with the error why not.
fn from_site(
    sel: &ast::Selector,
    model: &ModelConfig,
    scope: &Scope,
    errors: &mut Vec<Diagnostic>,
) -> Option<(SiteRef, Span)> {
    match selector::expand(sel, model, scope) {
        Ok(v) if v.len() == 1 => Some((v[0], sel.span)),
        Ok(v) => {
            errors.push(
                Diagnostic::error(
                    "E0507",
                    format!("`from` must name exactly one site; this names {}", v.len()),
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
    }
}

/// A pathway with an explicit `from` whose source or target is dense.
fn dense_end(model: &ModelConfig, which: &str, site: SiteRef, span: Span) -> Diagnostic {
    Diagnostic::error(
        "E0506",
        format!(
            "both ends of a LaX pathway must be factorized; the {which} {} is dense",
            site_name(model, site)
        ),
        span,
    )
    .with_label(format!("{which} is dense"))
    .with_hint("factorize it first with a `factorize ... as svd(...)` rule")
}

/// One `lax intra` rule: t1 added to t3 inside each selected TT layer.
fn intra_rule(
    l: &ast::LaxRule,
    rule: usize,
    known: Known,
    rules: &mut Rules,
    intra: &mut Vec<IntraPathway>,
    errors: &mut Vec<Diagnostic>,
) {
    let Known {
        model,
        sites,
        factorize_failed,
        scope,
    } = known;
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
    for s in expand_all(&l.selectors, model, scope, errors) {
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
                        site_name(model, s),
                        fact.kind_name()
                    ),
                    l.selectors[0].span,
                )
                .with_label("not a TT layer")
                .with_hint(
                    "factorize it `as tt(modes = [...], ranks = [...])`, or use `lax inter`",
                ),
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
        rules.matched(rule, idx);
    }
}
