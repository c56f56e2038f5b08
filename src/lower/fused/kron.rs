//! A tensor gate's `kron(G1, G0)` (built to apply the gate as one product) as one node.

use super::{as_node, composed, float, give, on_flex, on_flex_many, record, Node};
use crate::lower::flex_kernels;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata};

/// `kron(g1, g0)` for `g1 (s0, t0)` and `g0 (s1, t1)`: the (s0·s1, t0·t1) matrix with
/// `[(i, j), (a, b)] = g1[i, a] · g0[j, b]`. On Flex in f32 one loop each way
/// (`flex_kernels::kron`, `kron_backward`), where the composed broadcast product costs Flex a
/// strided pass forward and, backward, two products and four reductions through its general
/// strided iterator: about 200 µs a pathway, 8 % of a LLaMA tensor-gate step (BENCHMARKS.md,
/// attempt 31). Elsewhere the broadcast product.
pub fn kron<B: Backend>(g1: Tensor<B, 2>, g0: Tensor<B, 2>) -> Tensor<B, 2> {
    let inputs = [g1, g0].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 2>(Kron, inputs) {
        Ok(out) => float(out),
        Err([g1, g0]) => composed::kron(float(g1), float(g0)),
    }
}

struct Kron;

/// Backward from the kept cores.
#[derive(Debug)]
struct KronBackward;

impl<I: Backend> Backward<I, 2> for KronBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (g1, g0) = ops.state;
        let dk = grads.consume::<I>(&ops.node);
        let [g1_node, g0_node] = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let kernel = |[g1, g0, dk]: [&FlexTensor; 3]| flex_kernels::kron_backward(g1, g0, dk);
        let [dg1, dg0] = on_flex_many::<I, 3, 2>([&g1, &g0, &dk], kernel)
            .unwrap_or_else(|| backward_composed::<I>(g1, g0, dk));
        give::<I>(grads, g1_node, || dg1);
        give::<I>(grads, g0_node, || dg0);
    }
}

/// `[dg1, dg0]` from the inner backend's ops: `dk` unfolded to (s0, s1, t0, t1), times the
/// other core broadcast, summed over the other core's axes.
fn backward_composed<I: Backend>(
    g1: FloatTensor<I>,
    g0: FloatTensor<I>,
    dk: FloatTensor<I>,
) -> [FloatTensor<I>; 2] {
    let ([s0, t0], [s1, t1]) = (g1.shape().dims::<2>(), g0.shape().dims::<2>());
    let dk = I::float_reshape(dk, Shape::new([s0, s1, t0, t1]));
    let g0 = I::float_reshape(g0, Shape::new([1, s1, 1, t1]));
    let g1 = I::float_reshape(g1, Shape::new([s0, 1, t0, 1]));
    let dg1 = I::float_sum_dim(I::float_sum_dim(I::float_mul(dk.clone(), g0), 3), 1);
    let dg0 = I::float_sum_dim(I::float_sum_dim(I::float_mul(dk, g1), 2), 0);
    [
        I::float_reshape(dg1, Shape::new([s0, t0])),
        I::float_reshape(dg0, Shape::new([s1, t1])),
    ]
}

impl Node<2> for Kron {
    fn run<I: Backend>(self, [g1, g0]: [FloatTensor<Autodiff<I>>; 2]) -> FloatTensor<Autodiff<I>> {
        let (a, b) = (g1.primitive.clone(), g0.primitive.clone());
        let y = on_flex::<I, 2>([&a, &b], |[a, b]| flex_kernels::kron(a, b)).unwrap_or_else(|| {
            let product = composed::kron::<I>(float(a.clone()), float(b.clone()));
            product.into_primitive().tensor()
        });
        record(KronBackward, [&g1, &g0], (a, b), y)
    }
}
