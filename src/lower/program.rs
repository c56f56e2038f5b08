//! The forward pass as the IR states it: the graph's nodes in a topological order, each with
//! the nodes it reads and whether it is the last to read them (so that a value is moved, not
//! copied, at its last use and its memory goes as soon as nothing needs it).

use crate::ir::{Ir, Op, Tokens};

/// A value a step reads: the node that made it, and whether this is its last reader.
#[derive(Debug, Clone, Copy)]
pub struct Operand {
    pub node: usize,
    pub last_use: bool,
}

/// One node to run.
#[derive(Debug, Clone)]
pub struct Step {
    pub node: usize,
    pub op: Op,
    pub inputs: Vec<Operand>,
    /// A cls-token op fed by every token (the ViT head) reads each sample's first token.
    pub first_token_only: bool,
}

#[derive(Debug, Clone)]
pub struct Program {
    pub steps: Vec<Step>,
    /// Per IR node: its name, and the index of its parameters in `LaxModel::nodes`.
    pub names: Vec<String>,
    pub params: Vec<Option<usize>>,
    /// Per IR node: whether its parameters are frozen.
    pub frozen: Vec<bool>,
    /// The node the batch feeds (token ids or images), and the node whose value is the output.
    pub input: usize,
    pub output: usize,
    /// Tokens per sample the model was built for (sequence, or patches + cls).
    pub tokens: usize,
    /// The sizes of the model.
    pub model: crate::family::ModelConfig,
    /// The rate of the model's own dropout nodes while training (the run's `dropout`).
    pub dropout: f64,
    /// Whether the rates the spec fixes (LoRA's `dropout`) apply while training; off for
    /// passes that must be deterministic (comparing back ends, finite differences).
    pub fixed_dropout: bool,
    /// The dtype activations and matrix products are computed in (the run's `dtype`).
    pub compute: burn::tensor::FloatDType,
}

impl Program {
    /// The program of `ir`, given where each node's parameters are.
    pub fn new(ir: &Ir, mut params: Vec<Option<usize>>) -> Program {
        let g = &ir.graph;
        // A tied head reads the parameters of the model's token embedding.
        let embedding = g
            .node_indices()
            .find(|&i| matches!(g[i].op, Op::Embedding { .. }));
        for i in g.node_indices() {
            if matches!(g[i].op, Op::TiedHead { .. }) {
                params[i.index()] = embedding.and_then(|e| params[e.index()]);
            }
        }
        let mut readers: Vec<usize> = g
            .node_indices()
            .map(|i| g.edges_directed(i, petgraph::Direction::Outgoing).count())
            .collect();
        let mut output = None;
        let mut input = None;
        let steps = ir
            .schedule()
            .into_iter()
            .map(|i| {
                let node = &g[i];
                match node.op {
                    Op::Output { .. } => output = Some(i.index()),
                    Op::TokenInput { .. } | Op::ImageInput { .. } => input = Some(i.index()),
                    _ => {}
                }
                let sources = ir.inputs(i);
                let first_token_only = node.tokens == Tokens::Cls
                    && sources.iter().any(|s| g[*s].tokens == Tokens::All);
                let inputs = sources
                    .into_iter()
                    .map(|s| {
                        readers[s.index()] -= 1;
                        Operand {
                            node: s.index(),
                            last_use: readers[s.index()] == 0,
                        }
                    })
                    .collect();
                Step {
                    node: i.index(),
                    op: node.op.clone(),
                    inputs,
                    first_token_only,
                }
            })
            .collect();
        Program {
            steps,
            names: g.node_weights().map(|n| n.name.clone()).collect(),
            frozen: g.node_weights().map(|n| n.frozen).collect(),
            params,
            input: input.expect("every model has an input node"),
            output: output.expect("every model has an output node"),
            tokens: ir.model.tokens,
            model: ir.model.clone(),
            dropout: 0.0,
            fixed_dropout: true,
            compute: burn::tensor::FloatDType::F32, // lower() sets the backend's own
        }
    }

    /// The node of this name, if any.
    pub fn node(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}
