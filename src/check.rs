//! Checks over the IR: every dimension lines up, ranks are in range, pathways run forward.
//! All findings are collected; lints are warnings. Identical findings from one rule applied to
//! many blocks are reported once.

use crate::diagnostic::Diagnostic;
use crate::ir::Factorization;
use crate::ir::{Gate, Ir, Op};
use petgraph::algo::{has_path_connecting, is_cyclic_directed};
use std::collections::HashSet;

/// Returns errors and warnings, deduplicated, in the order found.
pub fn check(ir: &Ir) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    sites(ir, &mut out);
    pathways(ir, &mut out);
    acyclic(ir, &mut out);
    if !out.iter().any(Diagnostic::is_error) {
        shapes(ir, &mut out);
    }
    let mut seen = HashSet::new();
    out.retain(|d| seen.insert((d.code, d.span, d.message.clone())));
    merge_sites(out)
}

/// One finding per mistake: the same finding (code, place, label) about several sites, as a
/// rule over attn.* gives, becomes one diagnostic that lists the other sites.
fn merge_sites(found: Vec<Diagnostic>) -> Vec<Diagnostic> {
    let mut merged: Vec<(Diagnostic, Vec<String>)> = Vec::new();
    for d in found {
        let same = merged.iter_mut().find(|(m, _)| {
            m.subject.is_some()
                && d.subject.is_some()
                && (m.code, m.span, &m.label) == (d.code, d.span, &d.label)
        });
        match (same, d.subject.clone()) {
            (Some((_, others)), Some(site)) => others.push(site),
            _ => merged.push((d, Vec::new())),
        }
    }
    merged
        .into_iter()
        .map(|(mut d, others)| {
            if !others.is_empty() {
                d.message = format!("{}; the same for {}", d.message, and_list(&others));
            }
            d
        })
        .collect()
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Findings about one layer's own shapes (TT modes, ranks, intra-layer LaX).
pub fn is_site_finding(d: &Diagnostic) -> bool {
    matches!(d.code, "E0701" | "E0702" | "E0703" | "E0704")
}

/// `attn.q`: the site without its block, so one rule's findings merge across blocks.
fn short(ir: &Ir, local: usize) -> String {
    let (g, n) = ir.model.family.site_name(local);
    format!("{g}.{n}")
}

/// What every site check needs to know of the site.
struct SiteCheck<'a> {
    name: String,
    inp: usize,
    outw: usize,
    bias: u128,
    dense_params: u128,
    spans: &'a crate::ir::SiteSpans,
}

fn sites(ir: &Ir, out: &mut Vec<Diagnostic>) {
    for (s, spans) in ir.sites.iter().zip(&ir.spans.sites) {
        let (inp, outw) = (s.inp, s.out);
        let bias = if ir.model.linear_bias() {
            outw as u128
        } else {
            0
        };
        let c = SiteCheck {
            name: short(ir, s.site.local),
            inp,
            outw,
            bias,
            dense_params: inp as u128 * outw as u128 + bias,
            spans,
        };
        match &s.fact {
            Factorization::Dense => {}
            Factorization::Svd { rank } | Factorization::Cola { rank, .. } => {
                low_rank_site(&c, *rank, true, out)
            }
            Factorization::Lora { rank, base, .. } => {
                low_rank_site(&c, *rank, false, out);
                if base.is_none() {
                    out.push(lora_without_base(spans.rule));
                }
            }
            Factorization::Tt { modes, ranks } => tt_site(&c, *modes, *ranks, s.intra, out),
        }
    }
}

/// A rank at most min(in, out); `compare` also warns when the factors outgrow the dense layer
/// (not for LoRA, which adds to a dense layer by design).
fn low_rank_site(c: &SiteCheck, rank: usize, compare: bool, out: &mut Vec<Diagnostic>) {
    let (name, spans) = (&c.name, c.spans);
    let (inp, outw, bias, dense_params) = (c.inp, c.outw, c.bias, c.dense_params);
    let max = inp.min(outw);
    if rank > max {
        out.push(
            Diagnostic::error(
                "E0703",
                format!(
                    "rank {rank} is larger than min(in, out) = {max} for {name} ({inp} → {outw})"
                ),
                spans.rank,
            )
            .with_label(format!("at most {max}"))
            .with_hint("a rank above min(in, out) adds parameters without adding expressiveness")
            .about(name),
        );
    } else if compare {
        let params = rank as u128 * (inp + outw) as u128 + bias;
        if params > dense_params {
            out.push(more_than_dense(name, params, dense_params, spans.rank));
        }
    }
}

/// A TT layer: its modes multiply to the widths, its ranks are useful, intra-layer shapes match.
fn tt_site(
    c: &SiteCheck,
    modes: [usize; 4],
    ranks: [usize; 3],
    intra: bool,
    out: &mut Vec<Diagnostic>,
) {
    let (name, spans) = (&c.name, c.spans);
    let (inp, outw, bias, dense_params) = (c.inp, c.outw, c.bias, c.dense_params);
    let [m0, m1, m2, m3] = modes.map(|m| m as u128);
    let [r1, rr, r3] = ranks.map(|r| r as u128);
    let mut ok = true;
    if m0 * m1 != inp as u128 {
        ok = false;
        out.push(
            Diagnostic::error(
                "E0701",
                format!(
                    "TT input modes {m0}·{m1} = {} do not match the input width {inp} of {name}",
                    m0 * m1
                ),
                spans.modes,
            )
            .with_label(format!("must multiply to {inp}"))
            .with_hint(format!(
                "choose m0·m1 = {inp} and m2·m3 = {outw}, e.g. {}",
                example_modes(inp, outw, intra)
            ))
            .about(name),
        );
    }
    if m2 * m3 != outw as u128 {
        ok = false;
        out.push(
            Diagnostic::error(
                "E0702",
                format!(
                    "TT output modes {m2}·{m3} = {} do not match the output width {outw} of {name}",
                    m2 * m3
                ),
                spans.modes,
            )
            .with_label(format!("must multiply to {outw}"))
            .with_hint(format!(
                "choose m0·m1 = {inp} and m2·m3 = {outw}, e.g. {}",
                example_modes(inp, outw, intra)
            ))
            .about(name),
        );
    }
    let bounds = [
        ("r1", r1, m0.min(m1 * m2 * m3)),
        ("R", rr, (m0 * m1).min(m2 * m3)),
        ("r3", r3, m3.min(m0 * m1 * m2)),
    ];
    for (which, r, max) in bounds {
        if r > max {
            ok = false;
            out.push(
                    Diagnostic::error(
                        "E0703",
                        format!("TT rank {which} = {r} is larger than its largest useful value {max} for {name}"),
                        spans.rank,
                    )
                    .with_label(format!("{which} at most {max}"))
                    .with_hint("TT ranks are bounded by the products of the modes on either side of them")
                    .about(name),
                );
        }
    }
    if intra && (m1 != m2 || r1 != r3) {
        out.push(
                Diagnostic::error(
                    "E0704",
                    format!(
                        "intra-layer LaX on {name} adds t1 ({m1}×{r1}) to t3 ({m2}×{r3}): it needs m1 = m2 and r1 = r3"
                    ),
                    spans.intra.unwrap_or(spans.modes.join(spans.rank)),
                )
                .with_label("adds t1 to t3, whose shapes differ")
                .with_secondary(spans.modes.join(spans.rank), "the modes and ranks that set them")
                .with_hint("use symmetric modes and ranks, e.g. modes [a, b, b, c] with ranks [r, R, r]")
                .about(name),
            );
    }
    let params = m0 * r1 + r1 * m1 * rr + rr * m2 * r3 + r3 * m3 + bias;
    if ok && params > dense_params {
        out.push(more_than_dense(name, params, dense_params, spans.rank));
    }
}

/// One warning per rule (the message names no site, so the findings of one rule merge).
fn lora_without_base(rule: crate::source::Span) -> Diagnostic {
    Diagnostic::warning(
        "W0703",
        "LoRA without a `base`: training would start its frozen weights random",
        rule,
    )
    .with_label("no `base` here")
    .with_hint(
        "name the dense model's weights: lora(..., base = \"model.safetensors\"), e.g. a laxc \
         checkpoint of the spec with these sites dense",
    )
}

fn more_than_dense(name: &str, params: u128, dense: u128, span: crate::source::Span) -> Diagnostic {
    Diagnostic::warning(
        "W0701",
        format!("{name} has more parameters factorized ({params}) than dense ({dense})"),
        span,
    )
    .with_label("larger than the dense layer")
    .with_hint("lower the rank, or keep this layer dense")
    .about(name)
}

/// Modes that fit the widths; with intra-layer LaX also m1 = m2 (when the widths allow it).
fn example_modes(inp: usize, out: usize, intra: bool) -> String {
    let [a, b] = crate::ir::fold(inp);
    let [c, d] = crate::ir::fold(out);
    if intra {
        if let Some([a, b, c, d]) = symmetric_modes(inp, out) {
            return format!("modes = [{a}, {b}, {c}, {d}] (m1 = m2, as `lax intra` needs)");
        }
    }
    format!("modes = [{a}, {b}, {c}, {d}]")
}

/// `[in/m, m, m, out/m]` for the m dividing both widths closest to a balanced fold of `in`.
fn symmetric_modes(inp: usize, out: usize) -> Option<[usize; 4]> {
    let target = (inp as f64).sqrt();
    (2..=inp.min(out))
        .filter(|m| inp.is_multiple_of(*m) && out.is_multiple_of(*m) && *m < inp && *m < out)
        .min_by(|x, y| {
            let d = |m: usize| (m as f64 - target).abs();
            d(*x).total_cmp(&d(*y))
        })
        .map(|m| [inp / m, m, m, out / m])
}

fn pathways(ir: &Ir, out: &mut Vec<Diagnostic>) {
    for (p, spans) in ir.pathways.iter().zip(&ir.spans.pathways) {
        let (src, dst) = (p.src_width, p.dst_width);
        let src_name = short(ir, p.source.local);
        let dst_name = short(ir, p.target.local);
        match &p.gate {
            Gate::Identity | Gate::Linear => {
                if src != dst {
                    out.push(
                        Diagnostic::error(
                            "E0705",
                            format!(
                                "a {} gate needs equal latent widths, but {src_name} ({src}) → {dst_name} ({dst}) differ",
                                p.gate.kind_name()
                            ),
                            spans.gate,
                        )
                        .with_label(format!("{src} ≠ {dst}"))
                        .with_hint("use `gate = tensor` or `gate = dense`, which align different widths"),
                    );
                }
            }
            Gate::Tensor { input, output } => {
                for (written, fold, width, end) in [
                    (&p.written_input, input, src, "source"),
                    (&p.written_output, output, dst, "target"),
                ] {
                    let product = fold[0] as u128 * fold[1] as u128;
                    if written.is_some() && product != width as u128 {
                        out.push(
                            Diagnostic::error(
                                "E0706",
                                format!(
                                    "the tensor gate folds the {end} latent as {}×{} = {product}, but its width is {width}",
                                    fold[0], fold[1]
                                ),
                                spans.gate,
                            )
                            .with_label(format!("must multiply to {width}"))
                            .with_hint(format!(
                                "omit the shape to use {}×{}, the divisor pair closest to √{width}",
                                crate::ir::fold(width)[0],
                                crate::ir::fold(width)[1]
                            )),
                        );
                    }
                }
                let lopsided = |f: &[usize; 2]| f[1] > 4 * f[0] && f[1] > 8;
                if p.written_input.is_none() && (lopsided(input) || lopsided(output)) {
                    let f = if lopsided(input) { input } else { output };
                    let w = f[0] * f[1];
                    let params = (input[0] * output[0] + input[1] * output[1]) as u128;
                    out.push(
                        Diagnostic::warning(
                            "W0702",
                            format!(
                                "the tensor gate on {dst_name} folds its width {w} lopsidedly as {}×{} ({params} parameters)",
                                f[0], f[1]
                            ),
                            spans.gate,
                        )
                        .with_label("lopsided fold")
                        .with_hint(format!(
                            "{w} has no divisor pair near √{w}; a width with a balanced pair, or `gate = dense`, may serve better"
                        )),
                    );
                }
            }
            Gate::Dense => {
                for (written, width, end) in [
                    (&p.written_input, src, "input"),
                    (&p.written_output, dst, "output"),
                ] {
                    if let Some(w) = written {
                        if w[0] != width {
                            out.push(
                                Diagnostic::error(
                                    "E0707",
                                    format!(
                                        "the dense gate's {end} width {} does not fit the latent width {width}",
                                        w[0]
                                    ),
                                    spans.gate,
                                )
                                .with_label(format!("should be {width}"))
                                .with_hint("omit the widths: a dense gate takes them from its ends"),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Pathways run forward only: a latent may only cross to a layer computed after it.
fn acyclic(ir: &Ir, out: &mut Vec<Diagnostic>) {
    if !is_cyclic_directed(&ir.graph) {
        return;
    }
    for (p, spans) in ir.pathways.iter().zip(&ir.spans.pathways) {
        // The pathway closes a cycle if its target already feeds its source. (A search per
        // pathway, not Tarjan's recursive SCC, so deep models cannot exhaust the stack.)
        let source_latent = ir.site(p.source).latent;
        let target_add = ir.site(p.target).lax_add;
        let closes_cycle = match (source_latent, target_add) {
            (Some(src), Some(add)) => has_path_connecting(&ir.graph, add, src, None),
            _ => false,
        };
        if closes_cycle {
            out.push(
                Diagnostic::error(
                    "E0708",
                    format!(
                        "this pathway runs backwards: {} is computed after {}, which depends on it",
                        ir.site(p.source).name,
                        ir.site(p.target).name
                    ),
                    spans.rule,
                )
                .with_label("makes a cycle")
                .with_hint("a pathway's source must come before its target; pick an earlier block for `from`"),
            );
        }
    }
}

/// The structural check: every edge's shape matches what the node it enters expects. A spec
/// that passed the checks above cannot fail this; if it does, laxc has a bug.
fn shapes(ir: &Ir, out: &mut Vec<Diagnostic>) {
    for target_index in ir.graph.node_indices() {
        let target = &ir.graph[target_index];
        for (port, source) in ir.inputs(target_index).into_iter().enumerate() {
            let Some(expected) = target.op.input_width(port) else {
                continue;
            };
            let edge = ir
                .graph
                .find_edge(source, target_index)
                .expect("an input is joined by an edge");
            let got = ir.graph[edge].width();
            // Learned positions take the joined tokens of several inputs.
            if matches!(target.op, Op::PosEmbed { .. }) || got == expected {
                continue;
            }
            out.push(
                Diagnostic::error(
                    "E0900",
                    format!(
                        "internal error: {} receives width {got} from {} but expects {expected}",
                        target.name, ir.graph[source].name
                    ),
                    ir.spans.nodes[target_index.index()].unwrap_or_default(),
                )
                .with_label("shapes do not line up")
                .with_hint("this is a bug in laxc; please report it with this spec"),
            );
        }
    }
}
