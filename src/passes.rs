//! Passes on the checked IR, between the checks and the lowering: rewrites that change how the
//! model runs, never what it computes or what the report counts (the same parameters, FLOPs and
//! memory; `tests/passes.rs` runs specs with and without them and compares their outputs).
//! `laxc graph --optimized` draws their result; `laxc check` reports the IR as written.
//!
//! - [`fuse_lax_norms`]: a pathway's add and the norm after it become one `LaxAddNorm` node,
//!   run as one kernel each way.

use crate::ir::{Ir, Node, NormKind, Op};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

/// The IR the lowering runs: `ir` after every pass.
pub fn optimize(ir: &Ir) -> Ir {
    fuse_lax_norms(ir)
}

/// Where a LaX pathway arrives with a norm, `Norm(z + g(h))` is written as an add node feeding a
/// norm node; this makes them one `LaxAddNorm` node that reads `z` and `g(h)` in that order.
/// The fused node takes the norm's place, name and parameters (so initial values, checkpoints
/// and `run_part` names are unchanged); the add goes, and every other node keeps its order.
/// A pathway without a norm keeps its add: there is nothing to fuse it with.
pub fn fuse_lax_norms(ir: &Ir) -> Ir {
    let g = &ir.graph;
    // add → the norm it alone feeds, for each pathway with a norm.
    let fused: Vec<(NodeIndex, NodeIndex)> = ir
        .pathways
        .iter()
        .filter_map(|p| {
            let add = ir.site(p.target).lax_add?;
            let Op::Norm { kind, .. } = g[p.norm_node].op else {
                return None;
            };
            let only_reader = g
                .neighbors_directed(add, petgraph::Direction::Outgoing)
                .count()
                == 1;
            (kind != NormKind::None && only_reader).then_some((add, p.norm_node))
        })
        .collect();
    let removed = |i: NodeIndex| fused.iter().any(|&(add, _)| add == i);
    let norm_of = |add: NodeIndex| fused.iter().find(|&&(a, _)| a == add).map(|&(_, n)| n);

    let mut out = DiGraph::with_capacity(g.node_count() - fused.len(), g.edge_count());
    let mut index: Vec<Option<NodeIndex>> = vec![None; g.node_count()];
    let mut spans = Vec::with_capacity(g.node_count());
    for i in g.node_indices() {
        if removed(i) {
            continue;
        }
        let mut node: Node = g[i].clone();
        if fused.iter().any(|&(_, norm)| norm == i) {
            let Op::Norm { kind, width, eps } = node.op else {
                unreachable!("a fused norm is a norm")
            };
            node.op = Op::LaxAddNorm { kind, width, eps };
        }
        index[i.index()] = Some(out.add_node(node));
        spans.push(ir.spans.nodes[i.index()]);
    }
    // Edges in their old order, so that every node reads its inputs in the order it did; the
    // add's inputs (z, then the gate's output) now go to its norm, and the add → norm edge goes.
    for e in g.edge_references() {
        let to = match norm_of(e.target()) {
            Some(norm) => norm,
            None if removed(e.source()) => continue,
            None => e.target(),
        };
        let new = |i: NodeIndex| index[i.index()].expect("kept");
        out.add_edge(new(e.source()), new(to), e.weight().clone());
    }

    let moved = |i: NodeIndex| match norm_of(i) {
        Some(norm) => index[norm.index()],
        None => index[i.index()],
    };
    let mut optimized = ir.clone();
    optimized.graph = out;
    optimized.spans.nodes = spans;
    for s in &mut optimized.sites {
        s.latent = s.latent.and_then(moved);
        s.lax_add = s.lax_add.and_then(moved);
    }
    for p in &mut optimized.pathways {
        p.gate_node = moved(p.gate_node).expect("gates are kept");
        p.norm_node = moved(p.norm_node).expect("norms are kept");
    }
    optimized
}
