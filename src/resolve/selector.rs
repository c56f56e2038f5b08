//! Site selectors: `attn.q`, `mlp.*`, `attn.{q,k,v}`, `blocks[0..4].mlp.down`, `*`.

use super::eval::Scope;
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::family::ModelConfig;
use crate::ir::SiteRef;
use crate::source::Span;
use crate::syntax::ast::{BlockRange, Segment, Selector};

/// Expands a selector to the sites it names, in block-then-site order.
/// A selector that names a site the family does not have, or that matches nothing, is an error.
pub fn expand(
    sel: &Selector,
    model: &ModelConfig,
    scope: &Scope,
) -> Result<Vec<SiteRef>, Diagnostic> {
    let blocks = match &sel.blocks {
        None => (0..model.layers).collect::<Vec<_>>(),
        Some(range) => block_indices(range, model.layers, scope)?,
    };
    let locals = local_sites(sel, model)?;
    let sites: Vec<SiteRef> = blocks
        .iter()
        .flat_map(|&block| locals.iter().map(move |&local| SiteRef { block, local }))
        .collect();
    if sites.is_empty() {
        return Err(
            Diagnostic::error("E0302", "this selector matches no site", sel.span)
                .with_label("matches nothing")
                .with_hint(format!(
                    "the model has blocks 0..{} (end exclusive); an empty range selects nothing",
                    model.layers
                )),
        );
    }
    Ok(sites)
}

fn block_indices(
    range: &BlockRange,
    layers: usize,
    scope: &Scope,
) -> Result<Vec<usize>, Diagnostic> {
    let in_range = |v: i64, span: Span, bound: i64| -> Result<usize, Diagnostic> {
        if v < 0 || v > bound {
            Err(
                Diagnostic::error("E0303", format!("block index {v} is out of range"), span)
                    .with_label(format!("the model has {layers} blocks"))
                    .with_hint(format!(
                        "blocks are numbered 0 to {}",
                        layers.saturating_sub(1)
                    )),
            )
        } else {
            Ok(v as usize)
        }
    };
    let last = layers as i64 - 1;
    Ok(match range {
        BlockRange::All(_) => (0..layers).collect(),
        BlockRange::One(e) => vec![in_range(
            scope.eval_int(e, "a block index")?,
            e.span(),
            last,
        )?],
        BlockRange::Set(items, _) => {
            let mut out = Vec::new();
            for e in items {
                let b = in_range(scope.eval_int(e, "a block index")?, e.span(), last)?;
                if !out.contains(&b) {
                    out.push(b);
                }
            }
            out.sort_unstable();
            out
        }
        BlockRange::Range {
            start,
            end,
            inclusive,
            ..
        } => {
            let s = match start {
                Some(e) => in_range(scope.eval_int(e, "a block index")?, e.span(), last)?,
                None => 0,
            };
            let e = match end {
                Some(e) => {
                    let bound = if *inclusive { last } else { layers as i64 };
                    let v = in_range(scope.eval_int(e, "a block index")?, e.span(), bound)?;
                    if *inclusive {
                        v + 1
                    } else {
                        v
                    }
                }
                None => layers,
            };
            (s..e).collect()
        }
    })
}

/// Matches the dotted segments against the family's `group.name` sites. Fewer segments than a
/// site path match every site under them (`attn` is `attn.*`).
fn local_sites(sel: &Selector, model: &ModelConfig) -> Result<Vec<usize>, Diagnostic> {
    let names: Vec<(&str, &str)> = model.family.site_names().collect();
    if sel.segments.len() > 2 {
        let extra = sel.segments[2].span();
        return Err(Diagnostic::error(
            "E0301",
            "a site path has at most two parts, `group.name`",
            extra.join(sel.segments.last().unwrap().span()),
        )
        .with_label("unexpected part")
        .with_hint(format!("sites are like `{}.{}`", names[0].0, names[0].1)));
    }
    // Check every name written against the names that exist at its level.
    let groups: Vec<&str> = dedup(names.iter().map(|(g, _)| *g));
    let check = |id: &crate::syntax::ast::Ident, known: &[&str], level: &str| {
        if known.contains(&id.name.as_str()) {
            return Ok(());
        }
        let fixed = model.family.fixed_parts();
        let mut d = Diagnostic::error(
            "E0301",
            format!(
                "unknown {level} `{}` in a {} model",
                id.name,
                model.family.name()
            ),
            id.span,
        )
        .with_label(format!("no such {level}"));
        d = if fixed.contains(&id.name.as_str()) {
            d.with_hint(format!(
                "`{}` is not a factorizable linear site; laxc factorizes the linear layers inside \
                 blocks: {}",
                id.name,
                known.join(", ")
            ))
        } else {
            d.with_hint(
                did_you_mean(&id.name, known.iter().copied())
                    .unwrap_or_else(|| format!("the {level}s here are: {}", known.join(", "))),
            )
        };
        Err(d)
    };
    let first = &sel.segments[0];
    let group_ok: Vec<&str> = match first {
        Segment::Any(_) => groups.clone(),
        Segment::Name(id) => {
            check(id, &groups, "site group")?;
            vec![id.name.as_str()]
        }
        Segment::Set(ids, _) => {
            for id in ids {
                check(id, &groups, "site group")?;
            }
            ids.iter().map(|i| i.name.as_str()).collect()
        }
    };
    let mut out = Vec::new();
    match sel.segments.get(1) {
        None | Some(Segment::Any(_)) => {
            for (i, (g, _)) in names.iter().enumerate() {
                if group_ok.contains(g) {
                    out.push(i);
                }
            }
        }
        Some(seg) => {
            let ids: Vec<&crate::syntax::ast::Ident> = match seg {
                Segment::Name(id) => vec![id],
                Segment::Set(ids, _) => ids.iter().collect(),
                Segment::Any(_) => unreachable!(),
            };
            for id in ids {
                let in_groups: Vec<&str> = names
                    .iter()
                    .filter(|(g, _)| group_ok.contains(g))
                    .map(|(_, n)| *n)
                    .collect();
                check(id, &in_groups, "site")?;
                for (i, (g, n)) in names.iter().enumerate() {
                    if group_ok.contains(g) && *n == id.name && !out.contains(&i) {
                        out.push(i);
                    }
                }
            }
            out.sort_unstable();
        }
    }
    Ok(out)
}

fn dedup<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for s in it {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}
