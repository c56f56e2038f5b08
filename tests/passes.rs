//! The passes on the IR (`laxc::passes`) change how a model runs, never what it computes or what
//! the report counts: each spec here is lowered with and without them from the same seed and
//! must give the same outputs and the same gradient for every parameter (NdArray, f64), and the
//! report of the optimized IR must equal the report of the IR as written.
#![cfg(feature = "train")]

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use laxc::ir::Op;
use laxc::lower::{lower, lower_as_written, LaxModel};

type AD = Autodiff<NdArray<f64>>;

/// Every kind of pathway the pass fuses (each gate, both norms, CoLA's activation after the
/// norm, LoRA's latent, a tensor-train's middle rank) and the ones it leaves (`norm = none`,
/// intra-layer adds).
const SPECS: &[(&str, &str)] = &[
    (
        "svd, identity gates, layernorm",
        "model t: llama { vocab = 13, hidden = 8, ffn = 12, heads = 2, layers = 3, seq = 5 }
         factorize * as svd(rank = 4)
         lax inter * { gate = identity, norm = layernorm }",
    ),
    (
        "svd, linear and tensor gates, rmsnorm and none",
        "model t: llama { vocab = 13, hidden = 8, ffn = 12, heads = 2, layers = 3, seq = 5 }
         factorize * as svd(rank = 4)
         lax inter attn.* { gate = linear, norm = rmsnorm }
         lax inter mlp.* { gate = tensor, norm = none }",
    ),
    (
        "cola, dense gates, layernorm",
        "model t: llama { vocab = 13, hidden = 8, ffn = 12, heads = 2, layers = 3, seq = 5 }
         factorize * as cola(rank = 4, act = silu)
         lax inter * { gate = dense, norm = layernorm }",
    ),
    (
        "lora, identity gates, layernorm",
        "model t: llama { vocab = 13, hidden = 8, ffn = 12, heads = 2, layers = 3, seq = 5 }
         factorize attn.{q,v} as lora(rank = 2, alpha = 4)
         lax inter attn.{q,v} { gate = identity, norm = layernorm }",
    ),
    (
        "vit tensor-train, inter and intra",
        "model v: vit { image = 8, patch = 4, channels = 1, classes = 3, hidden = 16, mlp = 32,
                       heads = 2, layers = 3, mlp_norm = true }
         factorize attn.* as tt(modes = [4, 4, 4, 4], ranks = [2, 4, 2])
         factorize mlp.* as svd(rank = 4)
         lax inter * { gate = identity, norm = layernorm }
         lax intra attn.*",
    ),
];

fn compiled(name: &str, text: &str) -> laxc::Compiled {
    laxc::compile(&laxc::source::Source::new(format!("{name}.lax"), text))
        .unwrap_or_else(|d| panic!("{name}: {d:?}"))
}

/// Pathways whose add the pass fuses: those with a norm.
fn with_norm(ir: &laxc::ir::Ir) -> usize {
    ir.pathways
        .iter()
        .filter(|p| p.norm != laxc::ir::NormKind::None)
        .count()
}

/// Nodes of `ir` whose op is of the kind `is` says.
fn count(ir: &laxc::ir::Ir, is: fn(&Op) -> bool) -> usize {
    ir.graph.node_weights().filter(|n| is(&n.op)).count()
}

#[test]
fn the_passes_fuse_each_pathway_with_a_norm_and_each_swiglu_and_nothing_else() {
    for (name, text) in SPECS {
        let c = compiled(name, text);
        let optimized = laxc::passes::optimize(&c.ir);
        let fused = count(&optimized, |op| matches!(op, Op::LaxAddNorm { .. }));
        assert_eq!(fused, with_norm(&c.ir), "{name}: fused pathways");
        let swiglu = count(&optimized, |op| matches!(op, Op::SwiGlu { .. }));
        let products = count(&c.ir, |op| matches!(op, Op::Mul { .. }));
        assert_eq!(swiglu, products, "{name}: every SwiGLU product fused");
        let blocks = if c.ir.model.family == laxc::family::Family::Llama {
            3
        } else {
            0
        };
        assert_eq!(swiglu, blocks, "{name}: one SwiGLU a LLaMA block");
        assert_eq!(
            optimized.graph.node_count(),
            c.ir.graph.node_count() - fused - swiglu,
            "{name}: one node fewer per fusion"
        );
        // The adds that remain: pathways without a norm, and intra-layer adds.
        let adds = |ir: &laxc::ir::Ir| {
            ir.graph
                .node_weights()
                .filter(|n| matches!(n.op, Op::LaxAdd { .. }))
                .count()
        };
        assert_eq!(adds(&optimized), adds(&c.ir) - fused, "{name}: adds left");
        // Every index into the graph still names the node it named.
        for p in &optimized.pathways {
            let norm = &optimized.graph[p.norm_node];
            let fused_or_none = matches!(norm.op, Op::LaxAddNorm { .. })
                || matches!(
                    norm.op,
                    Op::Norm {
                        kind: laxc::ir::NormKind::None,
                        ..
                    }
                );
            assert!(fused_or_none, "{name}: {} is {:?}", norm.name, norm.op);
            assert!(matches!(optimized.graph[p.gate_node].op, Op::Gate { .. }));
        }
        assert_eq!(optimized.spans.nodes.len(), optimized.graph.node_count());
        // Nothing the report counts changes: parameters, FLOPs, memory, per site and pathway.
        let before = serde_json::to_value(c.report()).unwrap();
        let after_compiled = laxc::Compiled {
            ir: optimized,
            spec: c.spec.clone(),
            warnings: Vec::new(),
            dense_reference: c.dense_reference,
        };
        let after = serde_json::to_value(after_compiled.report()).unwrap();
        assert_eq!(before, after, "{name}: the report of the optimized IR");
    }
}

/// The gradient of every parameter, in module order.
struct Gradients<'a, B: AutodiffBackend> {
    grads: &'a B::Gradients,
    out: Vec<Vec<f64>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Gradients<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let g = param.val().grad(self.grads);
        self.out.push(g.map_or_else(Vec::new, |g| {
            g.into_data().convert::<f64>().to_vec().unwrap()
        }));
    }
}

/// Logits on a fixed batch, and a loss's gradient for every parameter.
fn run<B: AutodiffBackend>(model: &LaxModel<B>, vit: bool) -> (Vec<f64>, Vec<Vec<f64>>) {
    let dev = Default::default();
    let logits: Tensor<B, 2> = if vit {
        let pixels: Vec<f32> = (0..2 * 64)
            .map(|i| ((i * 29 % 17) as f32 - 8.0) / 8.0)
            .collect();
        model.forward_images(Tensor::from_data(
            TensorData::new(pixels, [2, 1, 8, 8]),
            &dev,
        ))
    } else {
        let ids: Vec<i64> = (0..10).map(|i| (i * 7 % 13) as i64).collect();
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, 5]), &dev);
        model.forward_tokens(tokens).reshape([10, 13])
    };
    let weights = logits.clone().detach().sin();
    let loss = (logits.clone() * logits.clone() * weights).sum();
    let grads = loss.backward();
    let mut visitor = Gradients::<B> {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut visitor);
    let logits = logits.into_data().convert::<f64>().to_vec().unwrap();
    (logits, visitor.out)
}

fn assert_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * (1.0 + y.abs()),
            "{what}: element {i}: {x} with the passes, {y} without"
        );
    }
}

/// Every spec with and without the passes on backend `B`, to `tol` relative.
fn alike_with_and_without<B: AutodiffBackend>(tol: f64) {
    for (name, text) in SPECS {
        let c = compiled(name, text);
        let dev = Default::default();
        let with = lower::<B>(&c.ir, 5, &dev).without_dropout();
        let without = lower_as_written::<B>(&c.ir, 5, &dev).without_dropout();
        assert_eq!(
            with.num_params(),
            without.num_params(),
            "{name}: parameters"
        );
        let vit = c.ir.model.family == laxc::family::Family::Vit;
        let (logits, grads) = run(&with, vit);
        let (logits_as_written, grads_as_written) = run(&without, vit);
        assert_close(&logits, &logits_as_written, tol, &format!("{name}: logits"));
        assert_eq!(grads.len(), grads_as_written.len());
        for (i, (g, w)) in grads.iter().zip(&grads_as_written).enumerate() {
            assert_close(g, w, tol, &format!("{name}: gradient of parameter {i}"));
        }
    }
}

/// In f64 on NdArray: the fused nodes over the backend's ops.
#[test]
fn specs_run_alike_with_and_without_the_passes() {
    alike_with_and_without::<AD>(1e-10);
}

/// In f32 on Flex: the fused nodes' kernels (`flex_kernels::add_norm`, `swiglu`) in whole
/// models, against the ops they replace.
#[test]
fn specs_run_alike_with_and_without_the_passes_on_flex() {
    alike_with_and_without::<Autodiff<burn::backend::Flex>>(1e-4);
}
