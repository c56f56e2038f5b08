//! Passes on the checked IR, between the checks and the lowering: rewrites that change how the
//! model runs, never what it computes or what the report counts (the same parameters, FLOPs and
//! memory; `tests/passes.rs` runs specs with and without them and compares their outputs).
//! `laxc graph --optimized` draws their result; `laxc check` reports the IR as written.
//!
//! - [`fuse_lax_norms`]: a pathway's add and the norm after it become one `LaxAddNorm` node.
//! - [`fuse_swiglu`]: SwiGLU's SiLU and product become one `SwiGlu` node.
//!
//! Each fused op runs as one node each way (`lower::fused`), one kernel on Flex. In f32 (and
//! f64) the fused ops compute what the ops they replace compute, up to the order of sums; in a
//! half-precision pass (`dtype = bf16`) the lowering keeps the LaX add in that precision, as
//! written (`lower::ops`).

use crate::ir::{Activation, Edge, Ir, NormKind, Op};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;

/// The IR the lowering runs: `ir` after every pass.
pub fn optimize(ir: &Ir) -> Ir {
    fuse_swiglu(&fuse_lax_norms(ir))
}

/// Where a LaX pathway arrives with a norm, `Norm(z + g(h))` is written as an add node feeding a
/// norm node; this makes them one `LaxAddNorm` node that reads `z` and `g(h)` in that order,
/// in the norm's place, with its name and parameters (so initial values, checkpoints and
/// `run_part` names are unchanged). A pathway without a norm keeps its add.
pub fn fuse_lax_norms(ir: &Ir) -> Ir {
    let g = &ir.graph;
    let merges = ir
        .pathways
        .iter()
        .filter_map(|p| {
            let add = ir.site(p.target).lax_add?;
            let Op::Norm { kind, width, eps } = g[p.norm_node].op else {
                return None;
            };
            let fused = Op::LaxAddNorm { kind, width, eps };
            (kind != NormKind::None && only_reader(ir, add) == Some(p.norm_node)).then_some(Merge {
                into: p.norm_node,
                removed: add,
                op: fused,
            })
        })
        .collect();
    merge(ir, merges)
}

/// SwiGLU, `silu(gate) ⊙ up`, is written as a SiLU node feeding a product node; this makes them
/// one `SwiGlu` node that reads `gate` and `up`, in the product's place and with its name.
pub fn fuse_swiglu(ir: &Ir) -> Ir {
    let g = &ir.graph;
    let merges = g
        .node_indices()
        .filter_map(|product| {
            let Op::Mul { width } = g[product].op else {
                return None;
            };
            let silu = *ir.inputs(product).first()?;
            let is_silu = matches!(
                g[silu].op,
                Op::Activation {
                    act: Activation::Silu,
                    ..
                }
            );
            (is_silu && only_reader(ir, silu) == Some(product)).then_some(Merge {
                into: product,
                removed: silu,
                op: Op::SwiGlu { width },
            })
        })
        .collect();
    merge(ir, merges)
}

/// The node that alone reads `node`'s value, if one does.
fn only_reader(ir: &Ir, node: NodeIndex) -> Option<NodeIndex> {
    let mut readers = ir.graph.neighbors_directed(node, Direction::Outgoing);
    let first = readers.next()?;
    readers.next().is_none().then_some(first)
}

/// A node (`removed`, without parameters) merged into the one node that reads it (`into`),
/// which becomes `op`.
struct Merge {
    into: NodeIndex,
    removed: NodeIndex,
    op: Op,
}

/// `ir` with each merge made: a node that reads a removed node reads the removed node's inputs
/// in its place, in their order, and keeps the order of its other inputs; every other node and
/// every index into the graph stays as it was, in order. Merges must not chain (no removed node
/// reads another).
fn merge(ir: &Ir, merges: Vec<Merge>) -> Ir {
    if merges.is_empty() {
        return ir.clone();
    }
    let g = &ir.graph;
    // Per node of `ir`: the node it is merged into (removed nodes), the op it becomes.
    let mut merged_into = vec![None; g.node_count()];
    let mut becomes = vec![None; g.node_count()];
    for m in merges {
        debug_assert_eq!(only_reader(ir, m.removed), Some(m.into), "one reader");
        debug_assert_eq!(g[m.removed].op.params(), 0, "no parameters to move");
        merged_into[m.removed.index()] = Some(m.into);
        becomes[m.into.index()] = Some(m.op);
    }
    let removed = |i: NodeIndex| merged_into[i.index()].is_some();
    debug_assert!(
        g.node_indices()
            .filter(|&i| removed(i))
            .all(|i| becomes[i.index()].is_none() && !ir.inputs(i).into_iter().any(removed)),
        "merges do not chain"
    );

    let mut out = DiGraph::with_capacity(g.node_count(), g.edge_count());
    let mut index: Vec<Option<NodeIndex>> = vec![None; g.node_count()];
    let mut spans = Vec::with_capacity(g.node_count());
    for i in g.node_indices().filter(|&i| !removed(i)) {
        let mut node = g[i].clone();
        if let Some(op) = becomes[i.index()].take() {
            node.op = op;
        }
        index[i.index()] = Some(out.add_node(node));
        spans.push(ir.spans.nodes[i.index()]);
    }
    let new = |i: NodeIndex| index[i.index()].expect("a node that was kept");
    for i in g.node_indices().filter(|&i| !removed(i)) {
        for e in incoming(ir, i) {
            let edges = match removed(e.source()) {
                true => incoming(ir, e.source()),
                false => vec![e],
            };
            for e in edges {
                out.add_edge(new(e.source()), new(i), e.weight().clone());
            }
        }
    }

    let moved = |i: NodeIndex| new(merged_into[i.index()].unwrap_or(i));
    let mut merged = ir.clone();
    merged.graph = out;
    merged.spans.nodes = spans;
    for s in &mut merged.sites {
        s.latent = s.latent.map(moved);
        s.lax_add = s.lax_add.map(moved);
    }
    for p in &mut merged.pathways {
        p.gate_node = moved(p.gate_node);
        p.norm_node = moved(p.norm_node);
    }
    merged
}

/// The edges into `node` in the order it reads them (`Ir::inputs`).
fn incoming(ir: &Ir, node: NodeIndex) -> Vec<petgraph::graph::EdgeReference<'_, Edge>> {
    let mut edges: Vec<_> = ir.graph.edges_directed(node, Direction::Incoming).collect();
    edges.sort_by_key(|e| e.id());
    edges
}
