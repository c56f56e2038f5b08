//! The report for people: aligned tables, identical sites in consecutive blocks merged into one
//! row, totals, and a footer stating the conventions.

use super::{Report, CONVENTIONS};
use comfy_table::{presets, CellAlignment, ContentArrangement, Table, TableComponent};
use std::fmt::Write;

pub fn render_table(r: &Report, warnings: usize) -> String {
    let mut out = String::new();
    model_line(&mut out, r);
    sites_table(&mut out, r);
    pathways_table(&mut out, r);
    totals_table(&mut out, r);
    rules_and_conventions(&mut out, r, warnings);
    out
}

/// What the model is: family, sizes, how many sites are factorized.
fn model_line(out: &mut String, r: &Report) {
    let m = &r.model;
    let _ = writeln!(
        out,
        "model {} ({}): {} blocks, hidden {}, {} heads{}, {} tokens per sample{}",
        m.name,
        m.family.name(),
        m.layers,
        m.hidden,
        m.heads,
        if m.kv_heads < m.heads {
            format!(" ({} key-value)", m.kv_heads)
        } else {
            String::new()
        },
        m.tokens_per_sample,
        if m.fine_tuning {
            ", LoRA fine-tuning"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{} of {} linear sites factorized\n",
        m.factorized_sites, m.linear_sites
    );
}

/// A row per site, identical sites in consecutive blocks merged.
fn sites_table(out: &mut String, r: &Report) {
    let mut t = new_table(&[
        "site",
        "kind",
        "in → out",
        "rank",
        "params",
        "of all",
        "fwd FLOPs/token",
    ]);
    for g in group_sites(r) {
        let s = &r.sites[g.first];
        let count = g.last_block - s.block + 1;
        let label = block_label(s.block, g.last_block, &s.name);
        let params = if count > 1 {
            format!("{} ×{count}", thousands(s.params))
        } else {
            thousands(s.params)
        };
        t.add_row(vec![
            label,
            s.kind.clone(),
            format!("{} → {}", s.inp, s.out),
            s.rank.clone(),
            params,
            share(count as u128 * s.params, r.params.total),
            thousands(s.flops_forward_per_token),
        ]);
    }
    right_align(&mut t, &[4, 5, 6]);
    let _ = writeln!(out, "{t}\n");
}

/// A row per group of LaX pathways.
fn pathways_table(out: &mut String, r: &Report) {
    if r.pathways.is_empty() {
        let _ = writeln!(out, "no LaX pathways\n");
    } else {
        let mut t = new_table(&["LaX pathway", "kind", "gate", "norm", "width", "params"]);
        for g in group_pathways(r) {
            let p = &r.pathways[g.first];
            let count = g.count;
            let label = if count > 1 {
                format!("{} ({count} pathways)", g.label)
            } else {
                format!("{} → {}", p.source, p.target)
            };
            let params = if count > 1 {
                format!("{} ×{count}", thousands(p.params))
            } else {
                thousands(p.params)
            };
            t.add_row(vec![
                label,
                p.kind.to_string(),
                p.gate.clone(),
                p.norm.clone(),
                if p.src_width == p.dst_width {
                    p.src_width.to_string()
                } else {
                    format!("{} → {}", p.src_width, p.dst_width)
                },
                params,
            ]);
        }
        right_align(&mut t, &[5]);
        let _ = writeln!(out, "{t}\n");
    }
}

/// Data parallelism: the gradients all-reduced per step, and per replica for 2, 4 and 8.
fn data_parallel_rows(d: &crate::report::DataParallel) -> Vec<(String, String)> {
    let mib = |b: u128| b as f64 / (1u64 << 20) as f64;
    let mut rows = vec![(
        "all-reduced per step, data-parallel".into(),
        format!("{:.1} MiB (fp32 gradients)", mib(d.gradient_bytes_per_step)),
    )];
    for c in &d.replicas {
        let memory = match (c.batch_per_replica, c.train_bytes_fp32_per_replica) {
            (Some(rows), Some(bytes)) => {
                let s = if rows == 1 { "" } else { "s" };
                format!(
                    ", {:.2} GiB at {rows} sample{s}",
                    bytes as f64 / (1u64 << 30) as f64
                )
            }
            _ => String::new(),
        };
        rows.push((
            format!("  each of {} replicas", c.replicas),
            format!(
                "sends {:.1} MiB a step (ring){memory}",
                mib(c.ring_bytes_sent_per_replica)
            ),
        ));
    }
    rows
}

/// Parameters, memory and FLOPs.
fn totals_table(out: &mut String, r: &Report) {
    let p = &r.params;
    let mut t = new_table(&["totals", ""]);
    let mut rows: Vec<(String, String)> = vec![
        (
            "params total".into(),
            format!("{} ({})", thousands(p.total), millions(p.total)),
        ),
        (
            "  trainable".into(),
            format!(
                "{} ({:.2}% of all)",
                thousands(p.trainable),
                100.0 * p.trainable_share
            ),
        ),
        ("  frozen".into(), thousands(p.frozen)),
        ("  embeddings".into(), thousands(p.embeddings)),
        ("  linear sites".into(), thousands(p.linear_sites)),
        ("  norms".into(), thousands(p.norms)),
        ("  LaX gates and norms".into(), thousands(p.lax)),
        ("  head".into(), thousands(p.head)),
        (
            "dense model of the same sizes".into(),
            format!(
                "{} ({}); this spec is {:.1}% of it",
                thousands(p.dense_reference),
                millions(p.dense_reference),
                100.0 * p.ratio_to_dense
            ),
        ),
        (
            "train memory bf16 (8 B/param)".into(),
            format!("{:.2} GiB", r.memory.train_gib_bf16),
        ),
        (
            "train memory fp32 (16 B/param)".into(),
            format!("{:.2} GiB", r.memory.train_gib_fp32),
        ),
        (
            "activations fp32 per sample".into(),
            format!(
                "{:.1} MiB (estimate; times the batch)",
                r.memory.activation_bytes_per_sample_fp32 as f64 / (1u64 << 20) as f64
            ),
        ),
    ];
    if let Some(bytes) = r.memory.activation_bytes_per_batch_fp32 {
        rows.push((
            "activations fp32 at the spec's batch".into(),
            format!("{:.1} MiB (estimate)", bytes as f64 / (1u64 << 20) as f64),
        ));
    }
    rows.extend(data_parallel_rows(&r.data_parallel));
    rows.extend([
        (
            "forward FLOPs per token".into(),
            format!("{} (GEMM)", thousands(r.flops.forward_per_token)),
        ),
        (
            "forward GEMM FLOPs per sample".into(),
            format!(
                "{} (attention {}, LaX gates {})",
                si(r.flops.forward_per_sample),
                si(r.flops.attention_per_sample),
                si(r.flops.lax_gemm_per_sample),
            ),
        ),
        (
            "forward other FLOPs per sample".into(),
            format!(
                "{} (LaX adds and norms {})",
                si(r.flops.other_forward_per_sample),
                si(r.flops.lax_other_per_sample)
            ),
        ),
        (
            "training FLOPs per sample".into(),
            si(r.flops.train_per_sample),
        ),
    ]);
    for (k, v) in rows {
        t.add_row(vec![k, v]);
    }
    if let (Some(s), Some(step)) = (r.flops.samples_per_step, r.flops.train_per_step) {
        t.add_row(vec![
            format!("training FLOPs per step ({s} samples)"),
            si(step),
        ]);
    }
    let _ = writeln!(out, "{t}\n");
}

/// What each rule matched, the warning count and the conventions behind every number.
fn rules_and_conventions(out: &mut String, r: &Report, warnings: usize) {
    let _ = writeln!(out, "rules:");
    for rule in &r.rules {
        let _ = writeln!(
            out,
            "  line {:>3}: {:<60} {} sites{}",
            rule.line,
            rule.text,
            rule.sites,
            if rule.effective < rule.sites {
                format!(", {} after later rules", rule.effective)
            } else {
                String::new()
            }
        );
    }
    if warnings > 0 {
        let _ = writeln!(out, "\n{warnings} warning(s), shown above");
    }
    let _ = writeln!(out, "\nconventions:");
    for c in CONVENTIONS {
        let _ = writeln!(out, "  - {c}");
    }
}

fn new_table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_HORIZONTAL_ONLY)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for c in [
        TableComponent::HorizontalLines,
        TableComponent::MiddleIntersections,
        TableComponent::LeftBorderIntersections,
        TableComponent::RightBorderIntersections,
    ] {
        t.remove_style(c);
    }
    t
}

fn right_align(t: &mut Table, cols: &[usize]) {
    for &c in cols {
        if let Some(col) = t.column_mut(c) {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
}

struct SiteGroup {
    first: usize,
    last_block: usize,
}

/// Merges a site's rows over consecutive blocks where nothing differs.
fn group_sites(r: &Report) -> Vec<SiteGroup> {
    let mut groups: Vec<SiteGroup> = Vec::new();
    let mut open: std::collections::HashMap<String, usize> = Default::default();
    for (i, s) in r.sites.iter().enumerate() {
        if let Some(&g) = open.get(&s.name) {
            let f = &r.sites[groups[g].first];
            if groups[g].last_block + 1 == s.block
                && f.kind == s.kind
                && f.rank == s.rank
                && f.params == s.params
                && f.flops_forward_per_token == s.flops_forward_per_token
            {
                groups[g].last_block = s.block;
                continue;
            }
        }
        open.insert(s.name.clone(), groups.len());
        groups.push(SiteGroup {
            first: i,
            last_block: s.block,
        });
    }
    groups
}

struct PathGroup {
    first: usize,
    count: usize,
    label: String,
}

/// Merges `blocks[i].x → blocks[i+1].x` pathways that differ only in the block.
fn group_pathways(r: &Report) -> Vec<PathGroup> {
    let key = |i: usize| {
        let p = &r.pathways[i];
        let strip = |s: &str| {
            s.split_once('.')
                .map_or(s.to_string(), |(_, t)| t.to_string())
        };
        (
            p.kind,
            strip(&p.source),
            strip(&p.target),
            block_of(&p.target).saturating_sub(block_of(&p.source)),
            p.gate.clone(),
            p.norm.clone(),
            p.params,
            p.src_width,
            p.dst_width,
        )
    };
    let mut groups: Vec<(PathGroup, usize, usize)> = Vec::new();
    for i in 0..r.pathways.len() {
        let b = block_of(&r.pathways[i].target);
        if let Some((g, lo, hi)) = groups
            .iter_mut()
            .find(|(g, _, hi)| key(g.first) == key(i) && *hi + 1 == b)
        {
            g.count += 1;
            *hi = b;
            let _ = lo;
            continue;
        }
        groups.push((
            PathGroup {
                first: i,
                count: 1,
                label: String::new(),
            },
            b,
            b,
        ));
    }
    groups
        .into_iter()
        .map(|(mut g, lo, hi)| {
            let p = &r.pathways[g.first];
            let (_, name) = p.target.split_once('.').unwrap_or(("", &p.target));
            let gap = block_of(&p.target) - block_of(&p.source);
            g.label = if p.kind == "intra" {
                format!(
                    "{}: t1 → t3",
                    block_label(lo, hi, name.trim_end_matches(".t3"))
                )
            } else {
                format!(
                    "{} → {}",
                    block_label(lo - gap, hi - gap, name),
                    block_label(lo, hi, name)
                )
            };
            g
        })
        .collect()
}

fn block_of(site: &str) -> usize {
    site.strip_prefix("blocks[")
        .and_then(|s| s.split(']').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn block_label(first: usize, last: usize, name: &str) -> String {
    if first == last {
        format!("blocks[{first}].{name}")
    } else {
        format!("blocks[{first}..={last}].{name}")
    }
}

/// A row's parameters as a share of the model's: "12.3%", "<0.1%" for a sliver.
fn share(part: u128, total: u128) -> String {
    let pct = 100.0 * part as f64 / total.max(1) as f64;
    match pct {
        p if p > 0.0 && p < 0.05 => "<0.1%".to_string(),
        p => format!("{p:.1}%"),
    }
}

/// 44174056 → "44,174,056".
pub fn thousands(v: u128) -> String {
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn millions(v: u128) -> String {
    format!("{:.2}M", v as f64 / 1e6)
}

/// 1.23e12 → "1.23 T".
fn si(v: u128) -> String {
    let x = v as f64;
    for (scale, unit) in [(1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if x >= scale {
            return format!("{:.3} {unit}", x / scale);
        }
    }
    format!("{v}")
}

/// `laxc check A.lax B.lax ...`: one row per spec, the figures a choice between them turns on.
pub fn render_comparison(rows: &[(&str, &Report)]) -> String {
    let mut t = new_table(&[
        "spec",
        "params",
        "trainable",
        "of dense",
        "train FLOPs/sample",
        "train memory bf16",
        "activations/sample",
    ]);
    for (name, r) in rows {
        t.add_row(vec![
            name.to_string(),
            thousands(r.params.total),
            format!(
                "{} ({:.1}%)",
                thousands(r.params.trainable),
                100.0 * r.params.trainable_share
            ),
            format!("{:.1}%", 100.0 * r.params.ratio_to_dense),
            si(r.flops.train_per_sample),
            format!("{:.3} GiB", r.memory.train_gib_bf16),
            format!(
                "{:.1} MiB",
                r.memory.activation_bytes_per_sample_fp32 as f64 / (1u64 << 20) as f64
            ),
        ]);
    }
    right_align(&mut t, &[1, 2, 3, 4, 5, 6]);
    format!("{t}\n")
}
