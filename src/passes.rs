//! Passes on the checked IR, between the checks and the lowering: rewrites that change how the
//! model runs, never what it computes or what the report counts (the same parameters, FLOPs and
//! memory; `tests/passes.rs` runs specs with and without them and compares their outputs).
//! `laxc graph --optimized` draws their result; `laxc check` reports the IR as written.
//!
//! - [`fuse_lax_norms`]: a pathway's add and the norm after it become one `LaxAddNorm` node.
//! - [`fuse_swiglu`]: SwiGLU's SiLU and product become one `SwiGlu` node.
//!
//! Each fused op runs as one node each way (`lower::fused`), one kernel on Flex.

use crate::ir::{Activation, Ir, NormKind, Op};
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

/// `ir` with each merge made: the removed node's inputs become inputs of the node it fed, in
/// the place of the edge between them (every node keeps the order it reads its inputs in,
/// which is the order of their edges), and every other node and index stays as it was, in
/// order.
fn merge(ir: &Ir, merges: Vec<Merge>) -> Ir {
    if merges.is_empty() {
        return ir.clone();
    }
    let g = &ir.graph;
    let removed_into = |i: NodeIndex| merges.iter().find(|m| m.removed == i).map(|m| m.into);
    let mut out = DiGraph::with_capacity(g.node_count() - merges.len(), g.edge_count());
    let mut index: Vec<Option<NodeIndex>> = vec![None; g.node_count()];
    let mut spans = Vec::with_capacity(g.node_count());
    for i in g.node_indices() {
        if removed_into(i).is_some() {
            continue;
        }
        let mut node = g[i].clone();
        if let Some(m) = merges.iter().find(|m| m.into == i) {
            node.op = m.op.clone();
        }
        index[i.index()] = Some(out.add_node(node));
        spans.push(ir.spans.nodes[i.index()]);
    }
    let new = |i: NodeIndex| index[i.index()].expect("a node that was kept");
    // In the old edge order, an edge into a removed node now goes to the node it fed, and the
    // edge between the two goes.
    for e in g.edge_references() {
        if removed_into(e.source()).is_some() {
            continue;
        }
        let to = removed_into(e.target()).unwrap_or(e.target());
        out.add_edge(new(e.source()), new(to), e.weight().clone());
    }

    let moved = |i: NodeIndex| new(removed_into(i).unwrap_or(i));
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
