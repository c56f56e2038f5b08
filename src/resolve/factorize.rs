//! `factorize SITES as KIND(...)`: reading a factorization, then fitting it to each site.

use super::args::{int_list, number, positive_int, type_error, Args};
use super::eval::{Evaluated, Num, Scope};
use super::{expand_all, Rules};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::family::ModelConfig;
use crate::ir::{Activation, Factorization};
use crate::source::Span;
use crate::spec::SiteAssignment;
use crate::syntax::ast::{self, Item};

pub const KINDS: [&str; 5] = ["dense", "svd", "cola", "tt", "lora"];

/// A rank as written: a whole number, or a fraction of `min(in, out)`.
#[derive(Debug, Clone, Copy)]
pub enum RankSpec {
    Int(usize),
    Fraction(f64),
}

/// A factorization before it meets a site (fractions not yet turned into ranks).
#[derive(Debug, Clone)]
pub enum Template {
    Dense,
    Svd(RankSpec),
    Cola(RankSpec, Activation),
    Tt {
        modes: [usize; 4],
        ranks: Option<[usize; 3]>,
        middle: Option<RankSpec>,
        modes_span: Span,
    },
    Lora {
        rank: RankSpec,
        alpha: Option<f64>,
        dropout: f64,
        base: Option<String>,
    },
}

pub struct ReadTemplate {
    pub template: Template,
    pub rank_span: Span,
}

/// Reads `dense`, `svd(rank = r)`, `cola(rank = r, act = silu)`,
/// `tt(modes = [..], ranks = [..])` or `tt(modes = [..], rank = R)`,
/// `lora(rank = r, alpha = a, dropout = p, base = "file.safetensors")`.
pub fn read(v: &Evaluated, errors: &mut Vec<Diagnostic>) -> Option<ReadTemplate> {
    let Some((name, name_span, positional, named, span)) = super::args::call_parts(v) else {
        errors.push(
            type_error("a factorization", "one of dense, svd, cola, tt, lora", v)
                .with_hint("e.g. `factorize attn.* as svd(rank = 64)`"),
        );
        return None;
    };
    let unknown = || {
        Diagnostic::error(
            "E0401",
            format!("unknown factorization `{name}`"),
            name_span,
        )
        .with_label("not a factorization")
        .with_hint(
            did_you_mean(name, KINDS)
                .unwrap_or_else(|| format!("the factorizations are: {}", KINDS.join(", "))),
        )
    };
    let accepted: &[&str] = match name {
        "dense" => &[],
        "svd" => &["rank"],
        "cola" => &["rank", "act"],
        "tt" => &["modes", "ranks", "rank"],
        "lora" => &["rank", "alpha", "dropout", "base"],
        _ => {
            errors.push(unknown());
            return None;
        }
    };
    let before = errors.len();
    let args = Args::new(name, span, positional, named, accepted, errors);
    let template = match name {
        "dense" => Some((Template::Dense, span)),
        "svd" => rank_arg(&args, errors).map(|(r, s)| (Template::Svd(r), s)),
        "cola" => read_cola(&args, errors),
        "tt" => read_tt(&args, span, errors),
        "lora" => read_lora(&args, errors),
        _ => unreachable!("the kinds were matched above"),
    };
    if errors.len() > before {
        return None;
    }
    template.map(|(template, rank_span)| ReadTemplate {
        template,
        rank_span,
    })
}

/// The `rank` argument, with where it is written.
fn rank_arg(args: &Args, errors: &mut Vec<Diagnostic>) -> Option<(RankSpec, Span)> {
    let v = args.require("rank", errors)?;
    rank_spec(v)
        .map(|r| (r, v.span()))
        .map_err(|d| errors.push(d))
        .ok()
}

/// `cola(rank = r, act = silu)`: SiLU unless `act` names another activation.
fn read_cola(args: &Args, errors: &mut Vec<Diagnostic>) -> Option<(Template, Span)> {
    let rank = rank_arg(args, errors);
    let act = match args.get("act") {
        None => Some(Activation::Silu),
        Some(Evaluated::Word(w, s)) => {
            let act = Activation::from_name(w);
            if act.is_none() {
                let hint = did_you_mean(w, Activation::NAMES)
                    .unwrap_or_else(|| format!("choose one of {}", Activation::NAMES.join(", ")));
                errors.push(
                    Diagnostic::error("E0408", format!("unknown activation `{w}`"), *s)
                        .with_label("not an activation")
                        .with_hint(hint),
                );
            }
            act
        }
        Some(other) => {
            errors.push(type_error("`act`", "an activation name like `silu`", other));
            None
        }
    };
    let ((r, s), a) = (rank?, act?);
    Some((Template::Cola(r, a), s))
}

/// `lora(rank = r, alpha = a, dropout = p, base = "file.safetensors")`.
fn read_lora(args: &Args, errors: &mut Vec<Diagnostic>) -> Option<(Template, Span)> {
    let rank = rank_arg(args, errors);
    let alpha = args
        .get("alpha")
        .and_then(|v| ok(number("`alpha`", v), errors));
    let dropout = match args.get("dropout") {
        None => Some(0.0),
        Some(v) => ok(number("`dropout`", v), errors).and_then(|p| {
            if (0.0..1.0).contains(&p) {
                return Some(p);
            }
            errors.push(
                Diagnostic::error(
                    "E0405",
                    format!("`dropout` must be in [0, 1), found {p}"),
                    v.span(),
                )
                .with_label("out of range"),
            );
            None
        }),
    };
    let base = match args.get("base") {
        None => None,
        Some(Evaluated::Str(s, _)) => Some(s.clone()),
        Some(other) => {
            let expected = "a path string to a .safetensors file";
            errors.push(type_error("`base`", expected, other));
            None
        }
    };
    let ((r, s), p) = (rank?, dropout?);
    let template = Template::Lora {
        rank: r,
        alpha,
        dropout: p,
        base,
    };
    Some((template, s))
}

fn ok<T>(r: Result<T, Diagnostic>, errors: &mut Vec<Diagnostic>) -> Option<T> {
    r.map_err(|d| errors.push(d)).ok()
}

fn rank_spec(v: &Evaluated) -> Result<RankSpec, Diagnostic> {
    match v {
        Evaluated::Num(Num::Dec(f), span) => {
            if *f > 0.0 && *f <= 1.0 {
                Ok(RankSpec::Fraction(*f))
            } else {
                Err(Diagnostic::error(
                    "E0405",
                    format!("a rank fraction must be in (0, 1], found {f}"),
                    *span,
                )
                .with_label("not a fraction of min(in, out)")
                .with_hint("write a whole number for an absolute rank, e.g. `rank = 64`"))
            }
        }
        other => positive_int("a rank", other).map(RankSpec::Int),
    }
}

fn read_tt(args: &Args, span: Span, errors: &mut Vec<Diagnostic>) -> Option<(Template, Span)> {
    let modes_v = args.require("modes", errors)?;
    let modes = ok(int_list("`modes`", modes_v), errors)?;
    if modes.len() != 4 {
        errors.push(
            Diagnostic::error(
                "E0406",
                format!("a TT layer has 4 cores, so 4 modes; found {}", modes.len()),
                modes_v.span(),
            )
            .with_label(format!("{} modes", modes.len()))
            .with_hint("write `modes = [m0, m1, m2, m3]` with m0·m1 = in and m2·m3 = out"),
        );
        return None;
    }
    let modes = [modes[0], modes[1], modes[2], modes[3]];
    match (args.get("ranks"), args.get("rank")) {
        (Some(_), Some(r)) => {
            errors.push(
                Diagnostic::error("E0407", "give `ranks` or `rank`, not both", r.span())
                    .with_label("remove one")
                    .with_hint(
                        "`ranks = [r1, R, r3]` sets all three; `rank = R` derives r1 and r3",
                    ),
            );
            None
        }
        (Some(rv), None) => {
            let ranks = ok(int_list("`ranks`", rv), errors)?;
            if ranks.len() != 3 {
                errors.push(
                    Diagnostic::error(
                        "E0406",
                        format!(
                            "a 4-core TT layer has 3 inner ranks (r1, R, r3); found {}",
                            ranks.len()
                        ),
                        rv.span(),
                    )
                    .with_label(format!("{} ranks", ranks.len()))
                    .with_hint("the boundary ranks are 1 and are not written"),
                );
                return None;
            }
            Some((
                Template::Tt {
                    modes,
                    ranks: Some([ranks[0], ranks[1], ranks[2]]),
                    middle: None,
                    modes_span: modes_v.span(),
                },
                rv.span(),
            ))
        }
        (None, Some(rv)) => {
            let r = ok(rank_spec(rv), errors)?;
            Some((
                Template::Tt {
                    modes,
                    ranks: None,
                    middle: Some(r),
                    modes_span: modes_v.span(),
                },
                rv.span(),
            ))
        }
        (None, None) => {
            errors.push(
                Diagnostic::error(
                    "E0403",
                    "`tt` needs `ranks = [r1, R, r3]` or `rank = R`",
                    span,
                )
                .with_label("ranks missing"),
            );
            None
        }
    }
}

/// Turns a rank as written into a rank for a site of the given widths. A fraction that rounds
/// to zero becomes 1, with a warning.
pub fn fit_rank(
    r: RankSpec,
    inp: usize,
    out: usize,
    span: Span,
    site: &str,
    warnings: &mut Vec<Diagnostic>,
) -> usize {
    match r {
        RankSpec::Int(i) => i,
        RankSpec::Fraction(f) => {
            let m = inp.min(out);
            let r = (f * m as f64).round() as usize;
            if r == 0 {
                warnings.push(
                    Diagnostic::warning(
                        "W0401",
                        format!("rank fraction {f} of min({inp}, {out}) rounds to 0 on {site}"),
                        span,
                    )
                    .with_label("rounds to 0; rank 1 is used")
                    .with_hint(format!("use a fraction of at least {:.4}", 0.5 / m as f64)),
                );
                1
            } else {
                r
            }
        }
    }
}

/// The factorization of one site of widths `(inp, out)`.
pub fn instantiate(
    t: &Template,
    inp: usize,
    out: usize,
    span: Span,
    site: &str,
    warnings: &mut Vec<Diagnostic>,
) -> Factorization {
    let mut fit = |r: RankSpec| fit_rank(r, inp, out, span, site, warnings);
    match t {
        Template::Dense => Factorization::Dense,
        Template::Svd(r) => Factorization::Svd { rank: fit(*r) },
        Template::Cola(r, act) => Factorization::Cola {
            rank: fit(*r),
            act: *act,
        },
        Template::Tt {
            modes,
            ranks,
            middle,
            ..
        } => {
            let ranks = match (ranks, middle) {
                (Some(r), _) => *r,
                (None, Some(m)) => {
                    // Derived ranks: the boundary ranks take their largest useful value, the
                    // mode they close (min(m0, m1·m2·m3) and min(m3, m0·m1·m2)); this is how
                    // the paper's ViT configurations are built (e.g. [32, 336, 32]).
                    let [m0, m1, m2, m3] = *modes;
                    [m0.min(m1 * m2 * m3), fit(*m), m3.min(m0 * m1 * m2)]
                }
                (None, None) => unreachable!("read_tt requires ranks or rank"),
            };
            Factorization::Tt {
                modes: *modes,
                ranks,
            }
        }
        Template::Lora {
            rank,
            alpha,
            dropout,
            base,
        } => {
            let rank = fit(*rank);
            Factorization::Lora {
                rank,
                // LoRA's habit: alpha defaults to the rank, a scale of 1.
                alpha: alpha.unwrap_or(rank as f64),
                dropout: *dropout,
                base: base.clone(),
            }
        }
    }
}

/// Pass 2: the `factorize` rules in order; a later rule overrides an earlier one on a site.
/// Returns every site's form (dense where no rule matched), by `ModelConfig::site_index`.
pub fn resolve_rules(
    file: &ast::File,
    model: &ModelConfig,
    model_span: Span,
    scope: &Scope,
    rules: &mut Rules,
    errors: &mut Vec<Diagnostic>,
    warnings: &mut Vec<Diagnostic>,
) -> Vec<SiteAssignment> {
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
    for item in &file.items {
        let Item::Factorize(f) = item else { continue };
        let rule = rules.add(f.span);
        let template = match scope.eval_value(&f.kind) {
            Ok(v) => read(&v, errors),
            Err(d) => {
                errors.push(d);
                None
            }
        };
        let matched = expand_all(&f.selectors, model, scope, errors);
        let Some(t) = template else { continue };
        let modes_span = match &t.template {
            Template::Tt { modes_span, .. } => *modes_span,
            _ => t.rank_span,
        };
        for s in matched {
            let (inp, out) = model.site_dims(s.local);
            // The short name (`attn.q`), so a warning about a rule is given once, not per block.
            let (group, local) = model.family.site_name(s.local);
            let name = format!("{group}.{local}");
            let fact = instantiate(&t.template, inp, out, t.rank_span, &name, warnings);
            let idx = model.site_index(s);
            sites[idx] = SiteAssignment {
                fact,
                rule: Some(rule),
                span: f.span,
                rank_span: t.rank_span,
                modes_span,
            };
            rules.matched(rule, idx);
        }
    }
    sites
}
