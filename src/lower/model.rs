//! The lowered model: the parameters of the IR's nodes and the program that runs the IR's graph.
//! There is no forward pass per family: `run` walks the checked graph, node by node, and each op
//! kind is one arm of `ops::eval`.

use super::fused;
use super::init::Init;
use super::ops::{eval, Frame, KvCache, Value};
use super::params::{init_node, NodeParams};
use super::precision::widen;
use super::program::Program;
use crate::ir::Ir;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{backend::Backend, Int, Shape, Tensor, TensorMetadata, TensorPrimitive};

#[derive(Module, Debug)]
pub struct LaxModel<B: Backend> {
    /// The parameters of every IR node that has any, in node order.
    pub nodes: Vec<NodeParams<B>>,
    #[module(skip)]
    pub program: Program,
}

/// Builds the model from the checked IR after the passes (`passes::optimize`), initialized from
/// `seed` (docs/conventions.md §Initialization).
pub fn lower<B: Backend>(ir: &Ir, seed: u64, device: &B::Device) -> LaxModel<B> {
    lower_as_written(&crate::passes::optimize(ir), seed, device)
}

/// The model of `ir` exactly as it is, without the passes: what they are tested against. The
/// passes keep every parameter in its order, so the two take the same weights.
///
/// On the GPU back ends the parameters go to cubecl's pool of exact sizes (its persistent
/// memory; elsewhere this is a plain call), and with them every later buffer of a parameter's
/// size (gradients, AdamW's moments, each step's new weights): they live for the whole run, and
/// in cubecl's sliced pools each launch's reservation walked past them (BENCHMARKS.md, attempt 94).
pub fn lower_as_written<B: Backend>(ir: &Ir, seed: u64, device: &B::Device) -> LaxModel<B> {
    B::memory_persistent_allocations(device, (), |()| initialized(ir, seed, device))
}

fn initialized<B: Backend>(ir: &Ir, seed: u64, device: &B::Device) -> LaxModel<B> {
    let mut init = Init::new(seed);
    let mut nodes = Vec::new();
    let mut params = vec![None; ir.graph.node_count()];
    // Node order is the order values are drawn in: stem, blocks, gates, head.
    for i in ir.graph.node_indices() {
        if let Some(p) = init_node(ir, &ir.graph[i], &mut init, device) {
            params[i.index()] = Some(nodes.len());
            nodes.push(p);
        }
    }
    LaxModel {
        nodes,
        program: Program::new(ir, params),
    }
    .with_sequential_ids()
    .with_compute(super::precision::native::<B>())
}

struct SequentialIds {
    next: u64,
}

impl<B: Backend> burn::module::ModuleMapper<B> for SequentialIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (_, tensor, mapper) = param.consume();
        self.next += 1;
        Param::from_mapped_value(burn::module::ParamId::from(self.next), tensor, mapper)
    }
}

impl<B: Backend> LaxModel<B> {
    /// Parameter ids by position, so the same spec always has the same ids: the optimizer state
    /// of a checkpoint (keyed by id) then fits the model a resumed run lowers afresh.
    pub fn with_sequential_ids(self) -> Self {
        self.map(&mut SequentialIds { next: 0 })
    }

    /// The model with its dropout nodes at rate `p` while training (the run's `dropout`).
    pub fn with_dropout(mut self, p: f64) -> Self {
        self.program.dropout = p;
        self
    }

    /// The model with every dropout off, LoRA's included: a training pass that is a function
    /// of the weights and the batch alone (back ends compared, finite differences).
    pub fn without_dropout(mut self) -> Self {
        self.program.dropout = 0.0;
        self.program.fixed_dropout = false;
        self
    }

    /// The model computing its activations and matrix products in `dtype` (the run's `dtype`;
    /// `lower::precision`). Its parameters stay f32.
    pub fn with_compute(mut self, dtype: burn::tensor::FloatDType) -> Self {
        self.program.compute = dtype;
        self
    }

    /// The parameters of the IR node of this name.
    pub fn params_of(&self, name: &str) -> Option<&NodeParams<B>> {
        let node = self.program.node(name)?;
        self.program.params[node].map(|i| &self.nodes[i])
    }

    /// Runs the graph on one batch: `input` feeds the input node; returns the output node's
    /// value, `(batch·tokens, width)` or `(batch, width)` for a cls-token output.
    fn run(&self, input: Value<B>, batch: usize, seq: usize) -> Tensor<B, 2> {
        let program = &self.program;
        let mut feeds: Vec<Option<Value<B>>> = (0..program.names.len()).map(|_| None).collect();
        feeds[program.input] = Some(input);
        let mut frame = self.frame(batch, seq);
        let logits = self
            .execute(feeds, &mut frame, program.output)
            .expect("the output depends on the input")
            .float();
        // The loss reads f32 logits whatever the pass computed in.
        widen(logits)
    }

    fn frame(&self, batch: usize, seq: usize) -> Frame<B> {
        let p = &self.program;
        Frame::new(batch, seq, p.dropout, p.fixed_dropout, p.compute)
    }

    /// Generation: the logits `(batch, seq, vocab)` of `tokens` that continue the sequence
    /// `cache` holds (empty at first), and the cache with their keys and values appended. The
    /// same graph as [`LaxModel::forward_tokens`]; attention reads the cached positions too.
    pub fn forward_cached(
        &self,
        tokens: Tensor<B, 2, Int>,
        cache: KvCache<B>,
    ) -> (Tensor<B, 3>, KvCache<B>) {
        let program = &self.program;
        let [batch, seq] = tokens.dims();
        let mut feeds: Vec<Option<Value<B>>> = (0..program.names.len()).map(|_| None).collect();
        feeds[program.input] = Some(Value::Ids(tokens));
        let mut frame = self.frame(batch, seq);
        frame.cache = Some(cache);
        let logits = self
            .execute(feeds, &mut frame, program.output)
            .expect("the output depends on the input")
            .float();
        let logits = widen(logits);
        let mut cache = frame.cache.take().expect("the pass keeps its cache");
        cache.offset += seq;
        let vocab = logits.dims()[1];
        (logits.reshape([batch, seq, vocab]), cache)
    }

    /// Runs the part of the graph that the given values reach: `feeds` name nodes and the
    /// values they take (`(batch·seq, width)` activations); every node whose inputs are all
    /// known is computed. Returns the value of node `read`, if it was reached. For tests and
    /// inspection of one layer or pathway through the very code training runs.
    pub fn run_part(
        &self,
        feeds: &[(&str, Tensor<B, 2>)],
        read: &str,
        [batch, seq]: [usize; 2],
    ) -> Result<Option<Tensor<B, 2>>, String> {
        let program = &self.program;
        let node = |name: &str| program.node(name).ok_or(format!("no node `{name}`"));
        let mut values: Vec<Option<Value<B>>> = (0..program.names.len()).map(|_| None).collect();
        for (name, t) in feeds {
            values[node(name)?] = Some(Value::Float(t.clone()));
        }
        let mut frame = self.frame(batch, seq);
        Ok(self
            .execute(values, &mut frame, node(read)?)
            .map(Value::float))
    }

    /// Runs every step in program order; a fed node keeps its value, a node with an input that
    /// is not known is skipped. Returns the value of node `read`.
    fn execute(
        &self,
        mut values: Vec<Option<Value<B>>>,
        frame: &mut Frame<B>,
        read: usize,
    ) -> Option<Value<B>> {
        let program = &self.program;
        self.join_parameter_graphs();
        for step in &program.steps {
            // The input node has no inputs: it only ever has a value when fed.
            let fed_or_input = values[step.node].is_some() || step.node == program.input;
            if fed_or_input || step.inputs.iter().any(|o| values[o.node].is_none()) {
                continue;
            }
            let args = step
                .inputs
                .iter()
                .map(|o| {
                    let v = if o.last_use && o.node != read {
                        values[o.node].take()
                    } else {
                        values[o.node].clone()
                    };
                    v.expect("checked above")
                })
                .collect();
            let params = program.params[step.node].map(|i| &self.nodes[i]);
            values[step.node] = Some(eval(step, params, args, frame));
        }
        values[read].take()
    }

    /// Puts every trainable parameter into one autodiff graph before the forward pass. Burn's
    /// autodiff starts each parameter in a graph of its own and merges two graphs when an op
    /// first combines them, copying one into the other, and the copied one is as often the
    /// large graph of the activations as the parameter's: a step cost parameters × nodes,
    /// quadratic in depth (BENCHMARKS.md, "Step time against depth"). One node over all of
    /// them merges them at a cost linear in their number (`fused::join_graphs`,
    /// which launches nothing on any device); its result is dropped and never reached by
    /// backward. Beyond its 1,024 inputs, or without laxc's nodes, one concatenation of a
    /// one-element view of each (a kernel a view and a place on a GPU). Without autodiff (or
    /// for frozen parameters) there is nothing to join.
    fn join_parameter_graphs(&self) {
        struct Trained<B: Backend>(Vec<FloatTensor<B>>);
        impl<B: Backend> ModuleVisitor<B> for Trained<B> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let t = param.val();
                if t.is_require_grad() {
                    self.0.push(t.into_primitive().tensor());
                }
            }
        }
        let mut trained = Trained(Vec::new());
        self.visit(&mut trained);
        if let Err(tensors) = fused::join_graphs::<B>(trained.0) {
            let views = tensors.into_iter().map(|t: FloatTensor<B>| {
                let n = t.shape().num_elements();
                let flat = B::float_reshape(t, Shape::new([n]));
                Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(flat)).narrow(0, 0, 1)
            });
            drop(Tensor::cat(views.collect(), 0));
        }
    }

    /// A language model: token ids (batch, seq) → logits (batch, seq, vocab).
    pub fn forward_tokens(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [batch, seq] = tokens.dims();
        let logits = self.run(Value::Ids(tokens), batch, seq);
        let vocab = logits.dims()[1];
        logits.reshape([batch, seq, vocab])
    }

    /// A classifier: images (batch, channels, height, width) → logits (batch, classes).
    pub fn forward_images(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        let batch = images.dims()[0];
        self.run(Value::Images(images), batch, self.program.tokens)
    }
}
