//! The IR: a petgraph DAG of ops with tensor shapes on the edges, plus an index of the linear
//! sites and LaX pathways in it. Checks, reports, drawings and lowering read only this.

mod build;
pub mod node;

pub use build::build;
pub use node::{fold, Edge, EdgeKind, Gate, Node, Op, Role, Scope, Tokens};

use crate::family::ModelConfig;
use crate::source::Span;
use crate::spec::{Factorization, NormKind, RuleMatch, SiteRef, TrainSpec};
use petgraph::graph::{DiGraph, NodeIndex};

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
    /// The add node where an inter-layer pathway arrives.
    pub lax_add: Option<NodeIndex>,
    /// Intra-layer LaX (TT only): t1 is added to t3.
    pub intra: bool,
    pub span: Span,
    pub rank_span: Span,
    pub modes_span: Span,
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
    pub span: Span,
    pub gate_span: Span,
}

#[derive(Debug, Clone)]
pub struct Ir {
    pub model: ModelConfig,
    pub graph: DiGraph<Node, Edge>,
    pub sites: Vec<SiteInfo>,
    pub pathways: Vec<PathwayInfo>,
    pub rules: Vec<RuleMatch>,
    pub train: Option<TrainSpec>,
    /// A spec with any LoRA site fine-tunes: everything but adapters and LaX is frozen.
    pub fine_tuning: bool,
}

impl Ir {
    pub fn site(&self, s: SiteRef) -> &SiteInfo {
        &self.sites[s.block * self.model.sites_per_block() + s.local]
    }

    /// Tokens in one sample: the sequence (llama) or patches + cls (vit).
    pub fn tokens_per_sample(&self) -> usize {
        self.model.tokens
    }

    pub fn node(&self, i: NodeIndex) -> &Node {
        &self.graph[i]
    }
}
