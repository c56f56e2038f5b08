//! The IR as Graphviz DOT: one cluster per block, factor nodes as boxes, LaX pathways as bold
//! coloured dashed edges, edge labels with the per-token shape.

use crate::ir::{EdgeKind, Ir, Op, Scope};
use petgraph::visit::EdgeRef;
use std::fmt::Write;

pub fn render_dot(ir: &Ir) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&ir.model.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fillcolor=\"#f4f4f4\", fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(
        out,
        "  edge [fontname=\"Helvetica\", fontsize=8, color=\"#666666\"];"
    );
    let _ = writeln!(
        out,
        "  label=\"{} ({}): LaX pathways in red\"; labelloc=t;",
        escape(&ir.model.name),
        ir.model.family.name()
    );
    let block_of = |i: petgraph::graph::NodeIndex| match ir.graph[i].scope {
        Scope::Block { block } => Some(block),
        Scope::Site { site } => Some(site.block),
        Scope::Pathway { pathway } => Some(ir.pathways[pathway].target.block),
        Scope::Stem => None,
    };
    for block in 0..ir.model.layers {
        let _ = writeln!(out, "  subgraph cluster_block{block} {{");
        let _ = writeln!(
            out,
            "    label=\"blocks[{block}]\"; style=rounded; color=\"#bbbbbb\";"
        );
        for i in ir.graph.node_indices() {
            if block_of(i) == Some(block) {
                let _ = writeln!(out, "    {}", node_line(ir, i));
            }
        }
        let _ = writeln!(out, "  }}");
    }
    for i in ir.graph.node_indices() {
        if block_of(i).is_none() {
            let _ = writeln!(out, "  {}", node_line(ir, i));
        }
    }
    for e in ir.graph.edge_references() {
        let shape = e
            .weight()
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("×");
        let style = match e.weight().kind {
            EdgeKind::Data => String::new(),
            EdgeKind::Lax => ", color=\"#d62728\", fontcolor=\"#d62728\", style=\"bold,dashed\", constraint=false".to_string(),
        };
        let _ = writeln!(
            out,
            "  n{} -> n{} [label=\"N×{shape}\"{style}];",
            e.source().index(),
            e.target().index()
        );
    }
    let _ = writeln!(out, "}}");
    out
}

fn node_line(ir: &Ir, i: petgraph::graph::NodeIndex) -> String {
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
