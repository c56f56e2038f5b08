//! The IR as Graphviz DOT. By default a readable picture: one representative block (the second,
//! the first that receives inter-block pathways) marked "× N" when the later blocks are built
//! alike, each linear site as one node, each pathway as one red dashed edge labelled with its
//! gate and norm (a loop on the site for a pathway from the same site of the previous block),
//! dropout left out, and one node for the blocks not drawn on each side. `full` draws every IR
//! node (factors, latents, gates, norms, adds, dropout) as the lowering sees them.

use crate::ir::{EdgeKind, Ir, Op, Scope};
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use std::collections::BTreeSet;
use std::fmt::Write;
use std::ops::Range;

/// What to draw.
#[derive(Debug, Clone)]
pub struct DotOptions {
    /// The blocks drawn; the others are one node each side.
    pub blocks: Range<usize>,
    /// Every IR node, instead of one node per linear site and one edge per pathway.
    pub full: bool,
}

impl DotOptions {
    /// The second block (the first when there is one), one node per site.
    pub fn readable(ir: &Ir) -> Self {
        let b = usize::from(ir.model.layers > 1);
        DotOptions {
            blocks: b..b + 1,
            full: false,
        }
    }

    /// Every block, every node.
    pub fn everything(ir: &Ir) -> Self {
        DotOptions {
            blocks: 0..ir.model.layers,
            full: true,
        }
    }
}

/// A node of the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Shown {
    Node(usize),
    /// A whole linear site (index into `Ir::sites`).
    Site(usize),
    /// The blocks before (false) or after (true) the drawn ones.
    Skipped(bool),
}

impl Shown {
    fn id(self) -> String {
        match self {
            Shown::Node(i) => format!("n{i}"),
            Shown::Site(s) => format!("site{s}"),
            Shown::Skipped(after) => format!("skipped_{}", if after { "after" } else { "before" }),
        }
    }
}

pub fn render_dot(ir: &Ir, o: &DotOptions) -> String {
    let mut out = String::new();
    header(&mut out, ir, o);
    let alike = later_blocks_alike(ir, o);
    for block in o.blocks.clone() {
        let _ = writeln!(out, "  subgraph cluster_block{block} {{");
        let _ = writeln!(
            out,
            "    label=\"{}\"; style=rounded; color=\"#bbbbbb\";",
            block_label(ir, o, block, alike)
        );
        for s in shown_nodes(ir, o, Some(block)) {
            let _ = writeln!(out, "    {}", node_line(ir, s));
        }
        if !o.full {
            siblings_side_by_side(&mut out, ir, o, block);
        }
        let _ = writeln!(out, "  }}");
    }
    for s in shown_nodes(ir, o, None) {
        let _ = writeln!(out, "  {}", node_line(ir, s));
    }

    skipped_nodes(&mut out, ir, o, alike);
    edges(&mut out, ir, o);
    let _ = writeln!(out, "}}");
    out
}

fn header(out: &mut String, ir: &Ir, o: &DotOptions) {
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&ir.model.name));
    let _ = writeln!(out, "  rankdir=TB; nodesep=0.25; ranksep=0.3;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#f4f4f4\", fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(
        out,
        "  edge [fontname=\"Helvetica\", fontsize=8, color=\"#666666\"];"
    );
    let what = match o.full {
        true => "every IR node",
        false => "one node per linear site",
    };
    let _ = writeln!(
        out,
        "  label=\"{} ({}): LaX pathways in red; {what}\"; labelloc=t;",
        escape(&ir.model.name),
        ir.model.family.name()
    );
}

/// The block a node belongs to (a pathway's nodes belong to the block it arrives in).
fn block_of(ir: &Ir, i: NodeIndex) -> Option<usize> {
    match ir.graph[i].scope {
        Scope::Block { block } => Some(block),
        Scope::Site { site } => Some(site.block),
        Scope::Pathway { pathway } => Some(ir.pathways[pathway].target.block),
        Scope::Stem => None,
    }
}

/// What node `i` is drawn as; None for a pathway's own nodes when pathways are edges.
fn shown(ir: &Ir, o: &DotOptions, i: NodeIndex) -> Option<Shown> {
    let node = &ir.graph[i];
    if let Some(b) = block_of(ir, i) {
        if !o.blocks.contains(&b) {
            return Some(Shown::Skipped(b >= o.blocks.end));
        }
    }
    match (o.full, node.scope) {
        (true, _) => Some(Shown::Node(i.index())),
        // Dropout changes no shape and has no parameters: drawn as the node it reads.
        (false, _) if matches!(node.op, Op::Dropout { .. }) => shown(ir, o, *ir.inputs(i).first()?),
        (false, Scope::Site { site }) => Some(Shown::Site(ir.model.site_index(site))),
        (false, Scope::Pathway { .. }) => None,
        (false, _) => Some(Shown::Node(i.index())),
    }
}

/// The drawn nodes of one block (or, for None, outside the blocks), in IR order.
fn shown_nodes(ir: &Ir, o: &DotOptions, block: Option<usize>) -> Vec<Shown> {
    let mut seen = BTreeSet::new();
    let mut nodes = Vec::new();
    for i in ir.graph.node_indices() {
        if block_of(ir, i) != block {
            continue;
        }
        if let Some(s @ (Shown::Node(_) | Shown::Site(_))) = shown(ir, o, i) {
            let own = match s {
                Shown::Node(n) => n == i.index(),
                _ => true,
            };
            if own && seen.insert(s) {
                nodes.push(s);
            }
        }
    }
    nodes
}

/// A block's frame label; the last drawn block says how many undrawn ones are built like it.
/// `alike`: [`later_blocks_alike`].
fn block_label(ir: &Ir, o: &DotOptions, block: usize, alike: bool) -> String {
    match block + 1 == o.blocks.end && alike {
        true => format!(
            "blocks[{block}], × {} (every later block alike)",
            ir.model.layers - block
        ),
        false => format!("blocks[{block}]"),
    }
}

/// Whether there are blocks after the drawn ones, every one built like the last drawn block.
fn later_blocks_alike(ir: &Ir, o: &DotOptions) -> bool {
    let layers = ir.model.layers;
    if o.blocks.is_empty() || o.blocks.end >= layers {
        return false;
    }
    let drawn = signature(ir, o.blocks.end - 1);
    (o.blocks.end..layers).all(|b| signature(ir, b) == drawn)
}

/// What a block is made of, without its index: equal for blocks built alike.
fn signature(ir: &Ir, block: usize) -> Vec<String> {
    ir.graph
        .node_indices()
        .filter(|&i| block_of(ir, i) == Some(block))
        .map(|i| ir.graph[i].op.label())
        .collect()
}

/// One node for the blocks before the drawn ones, one for those after.
fn skipped_nodes(out: &mut String, ir: &Ir, o: &DotOptions, alike: bool) {
    let layers = ir.model.layers;
    for (after, range) in [(false, 0..o.blocks.start), (true, o.blocks.end..layers)] {
        if range.is_empty() {
            continue;
        }
        let how = match after && alike {
            true => format!("each like blocks[{}]", o.blocks.end - 1),
            false => "not drawn".to_string(),
        };
        let _ = writeln!(
            out,
            "  {} [label=\"⋮ blocks[{}..{}]: {} block{}, {how}\\n(laxc graph --blocks {}..{} draws them)\", shape=note, fillcolor=\"#ffffff\"];",
            Shown::Skipped(after).id(),
            range.start,
            range.end,
            range.len(),
            if range.len() == 1 { "" } else { "s" },
            range.start,
            range.end
        );
    }
}

fn edges(out: &mut String, ir: &Ir, o: &DotOptions) {
    let mut drawn = BTreeSet::new();
    for e in ir.graph.edge_references() {
        let (Some(from), Some(to)) = (shown(ir, o, e.source()), shown(ir, o, e.target())) else {
            continue;
        };
        let lax = e.weight().kind == EdgeKind::Lax;
        // A pathway into or out of undrawn blocks is told by the block labels instead.
        if lax && matches!((from, to), (Shown::Skipped(_), _) | (_, Shown::Skipped(_))) {
            continue;
        }
        if from == to || !drawn.insert((from, to)) {
            continue;
        }
        let shape = e.weight().shape.iter().map(|d| d.to_string());
        let label = format!("N×{}", shape.collect::<Vec<_>>().join("×"));
        let style = match e.weight().kind {
            EdgeKind::Data => String::new(),
            EdgeKind::Lax => LAX_STYLE.to_string(),
        };
        let _ = writeln!(
            out,
            "  {} -> {} [label=\"{label}\"{style}];",
            from.id(),
            to.id()
        );
    }
    if o.full {
        return;
    }
    // One edge per pathway, from the site it leaves to the site it joins; a pathway from the
    // same site of an undrawn previous block is a loop on the site.
    for p in &ir.pathways {
        let to = shown(
            ir,
            o,
            ir.site(p.target).lax_add.expect("a pathway joins an add"),
        );
        let from = shown(
            ir,
            o,
            ir.site(p.source).latent.expect("a pathway leaves a latent"),
        );
        let (Some(to @ Shown::Site(_)), Some(from)) = (to, from) else {
            continue;
        };
        let same_site_before = p.source.local == p.target.local
            && p.source.block + 1 == p.target.block
            && from == Shown::Skipped(false);
        let (from, origin) = match same_site_before {
            true => (to, "from the previous block\\n".to_string()),
            false => (from, String::new()),
        };
        if !drawn.insert((from, to)) {
            continue;
        }
        let origin = match from {
            Shown::Skipped(_) => format!("from {}\\n", escape(&ir.site(p.source).name)),
            _ => origin,
        };
        let label = format!(
            "{origin}{} · {}",
            escape(&ir.graph[p.gate_node].op.label()),
            escape(&ir.graph[p.norm_node].op.label())
        );
        let _ = writeln!(
            out,
            "  {} -> {} [label=\"{label}\"{LAX_STYLE}];",
            from.id(),
            to.id()
        );
    }
}

/// Sites of a block that read the same node (q, k and v; gate and up) on one row.
fn siblings_side_by_side(out: &mut String, ir: &Ir, o: &DotOptions, block: usize) {
    let mut by_input: std::collections::BTreeMap<usize, BTreeSet<Shown>> = Default::default();
    for e in ir.graph.edge_references() {
        if e.weight().kind != EdgeKind::Data {
            continue;
        }
        let to = shown(ir, o, e.target());
        if block_of(ir, e.target()) != Some(block) {
            continue;
        }
        if let (Some(site @ Shown::Site(_)), Some(Shown::Node(_))) = (to, shown(ir, o, e.source()))
        {
            by_input.entry(e.source().index()).or_default().insert(site);
        }
    }
    for sites in by_input.values().filter(|s| s.len() > 1) {
        let ids: Vec<String> = sites.iter().map(|s| s.id()).collect();
        let _ = writeln!(out, "    {{ rank=same; {}; }}", ids.join("; "));
    }
}

const LAX_STYLE: &str =
    ", color=\"#d62728\", fontcolor=\"#d62728\", style=\"bold,dashed\", constraint=false";

fn node_line(ir: &Ir, s: Shown) -> String {
    match s {
        Shown::Node(i) => ir_node_line(ir, NodeIndex::new(i)),
        Shown::Site(site) => site_line(ir, site),
        Shown::Skipped(_) => unreachable!("skipped blocks are drawn by skipped_nodes"),
    }
}

/// A linear site as one node: its factorization, factor shapes and parameters.
fn site_line(ir: &Ir, site: usize) -> String {
    let info = &ir.sites[site];
    let nodes = ir
        .graph
        .node_indices()
        .filter(|&i| matches!(ir.graph[i].scope, Scope::Site { site: s } if s == info.site));
    let (mut params, mut frozen, mut factors) = (0u128, 0u128, Vec::new());
    for i in nodes {
        let node = &ir.graph[i];
        let p = node.op.params();
        params += p;
        if node.frozen {
            frozen += p;
        }
        if p > 0 {
            factors.push(node.op.label());
        }
    }
    let rank = crate::report::rank_text(&info.fact);
    let kind = match rank.is_empty() {
        true => info.fact.kind_name().to_string(),
        false => format!("{} {rank}", info.fact.kind_name()),
    };
    let frozen = match frozen {
        0 => String::new(),
        f => format!(", {f} frozen"),
    };
    let fill = match info.fact {
        crate::ir::Factorization::Dense => "#f4f4f4",
        _ => "#d6e6f5",
    };
    format!(
        "site{site} [label=\"{}\\n{} ({}→{})\\n{}\\n{params} params{frozen}\", fillcolor=\"{fill}\"];",
        escape(&info.name),
        escape(&kind),
        info.inp,
        info.out,
        escape(&factors.join(", "))
    )
}

fn ir_node_line(ir: &Ir, i: NodeIndex) -> String {
    let node = &ir.graph[i];
    let params = node.op.params();
    let mut label = format!("{}\\n{}", escape(&node.name), escape(&node.op.label()));
    if params > 0 {
        let _ = write!(
            label,
            "\\n{} params{}",
            params,
            if node.frozen { ", frozen" } else { "" }
        );
    }
    let fill = match (&node.op, node.scope) {
        (_, Scope::Pathway { .. }) => "#fbd5d5",
        (Op::Linear { .. } | Op::TtCore { .. }, _) => "#d6e6f5",
        (Op::Latent { .. }, _) => "#fff2c6",
        (Op::Attention { .. }, _) => "#dff0d8",
        _ => "#f4f4f4",
    };
    let shape = match node.op {
        Op::Latent { .. } | Op::LaxAdd { .. } | Op::Add { .. } | Op::Mul { .. } => "ellipse",
        Op::LaxAddNorm { .. } | Op::SwiGlu { .. } => "octagon",
        _ => "box",
    };
    format!(
        "n{} [label=\"{label}\", fillcolor=\"{fill}\", shape={shape}];",
        i.index()
    )
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
