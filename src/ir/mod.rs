//! The IR: a petgraph DAG of ops with tensor shapes on the edges, plus an index of the linear
//! sites and LaX pathways in it. Checks, reports, drawings and lowering read only this.

pub mod build;
pub mod node;
pub mod types;

pub use build::build;
pub use node::{fold, DropRate, Edge, EdgeKind, Gate, Node, Op, Role, Scope, Tokens, NORM_EPS};
pub use types::{Activation, Factorization, NormKind, SiteRef};

use crate::family::ModelConfig;
use crate::source::Span;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

/// A linear site of the model and the nodes that make it up.
#[derive(Debug, Clone)]
pub struct SiteInfo {
    pub site: SiteRef,
    pub name: String,
    pub fact: Factorization,
    pub inp: usize,
    pub out: usize,
    /// The node that carries the latent a pathway leaves from (None for dense layers).
    pub latent: Option<NodeIndex>,
    /// The add node where an inter-layer pathway arrives (after `passes::fuse_lax_norms`, the
    /// add-and-norm node that replaced it).
    pub lax_add: Option<NodeIndex>,
    /// Intra-layer LaX (TT only): t1 is added to t3.
    pub intra: bool,
}

/// An inter-layer LaX pathway in the graph.
#[derive(Debug, Clone)]
pub struct PathwayInfo {
    pub source: SiteRef,
    pub target: SiteRef,
    pub gate: Gate,
    pub norm: NormKind,
    pub gate_node: NodeIndex,
    pub norm_node: NodeIndex,
    /// Fold shapes the spec wrote explicitly, to check against the widths.
    pub written_input: Option<Vec<usize>>,
    pub written_output: Option<Vec<usize>>,
    pub src_width: usize,
    pub dst_width: usize,
}

/// Where in the spec each part of the IR came from, kept beside the IR (as naga keeps spans
/// beside its arenas): the graph and its indexes carry no source positions.
#[derive(Debug, Clone, Default)]
pub struct Spans {
    /// Per node: the rule that made it, where one did.
    pub nodes: Vec<Option<Span>>,
    /// Per site, by `ModelConfig::site_index`.
    pub sites: Vec<SiteSpans>,
    /// Per pathway, in `Ir::pathways` order.
    pub pathways: Vec<PathwaySpans>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SiteSpans {
    /// The `factorize` rule that chose the site's form (the model, for a dense default).
    pub rule: Span,
    pub rank: Span,
    pub modes: Span,
    /// The `lax intra` rule on the site, if any.
    pub intra: Option<Span>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PathwaySpans {
    /// The `lax` rule.
    pub rule: Span,
    pub gate: Span,
}

#[derive(Debug, Clone)]
pub struct Ir {
    pub model: ModelConfig,
    pub graph: DiGraph<Node, Edge>,
    pub sites: Vec<SiteInfo>,
    pub pathways: Vec<PathwayInfo>,
    pub spans: Spans,
    /// A spec with any LoRA site fine-tunes: everything but adapters and LaX is frozen.
    pub fine_tuning: bool,
}

impl Ir {
    /// Whether a training pass drops anything: a dropout node at the run's rate `train_rate`
    /// above 0, or at a rate of its own (LoRA's) above 0.
    pub fn has_dropout(&self, train_rate: f64) -> bool {
        self.graph.node_weights().any(|n| match n.op {
            Op::Dropout { rate, .. } => match rate {
                DropRate::Fixed { p } => p > 0.0,
                DropRate::Train => train_rate > 0.0,
            },
            _ => false,
        })
    }

    pub fn site(&self, s: SiteRef) -> &SiteInfo {
        &self.sites[self.model.site_index(s)]
    }

    /// Tokens in one sample: the sequence (llama) or patches + cls (vit).
    pub fn tokens_per_sample(&self) -> usize {
        self.model.tokens
    }

    pub fn node(&self, i: NodeIndex) -> &Node {
        &self.graph[i]
    }

    /// The inputs of a node in the order its op reads them: the order the builder wired them
    /// (the builder never removes an edge, so edge indices keep that order).
    pub fn inputs(&self, i: NodeIndex) -> Vec<NodeIndex> {
        let mut edges: Vec<_> = self
            .graph
            .edges_directed(i, petgraph::Direction::Incoming)
            .map(|e| (e.id(), e.source()))
            .collect();
        edges.sort_by_key(|(id, _)| *id);
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// Every node once, each after its inputs; among the nodes ready to run, the one added
    /// first. Node order is the builder's order (stem, blocks, gates, head), so this is the
    /// order a hand-written forward pass would take; a gate (added late) runs when the block's
    /// nodes before its target's add have run and that add waits for it.
    pub fn schedule(&self) -> Vec<NodeIndex> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let mut waiting: Vec<usize> = self
            .graph
            .node_indices()
            .map(|i| {
                self.graph
                    .edges_directed(i, petgraph::Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<NodeIndex>> = self
            .graph
            .node_indices()
            .filter(|i| waiting[i.index()] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::with_capacity(waiting.len());
        while let Some(Reverse(i)) = ready.pop() {
            order.push(i);
            for e in self.graph.edges_directed(i, petgraph::Direction::Outgoing) {
                let t = e.target();
                waiting[t.index()] -= 1;
                if waiting[t.index()] == 0 {
                    ready.push(Reverse(t));
                }
            }
        }
        assert_eq!(
            order.len(),
            waiting.len(),
            "the IR is acyclic by construction"
        );
        order
    }
}
