//! A tensor gate, `h · kron(G1, G0)` (a LaX pathway's `gate = tensor`, where
//! `lower::ops::tensor_gate` chooses it), as one node.

use super::{as_node, composed, float, give, matmul_inner, on_flex, on_flex_many, record, Node};
use crate::lower::flex_kernels;
use crate::lower::product::rows_times;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata};
use std::any::TypeId;

/// `h · kron(g1, g0)` for (rows, s0·s1) `h`, `g1 (s0, t0)` and `g0 (s1, t1)`, where
/// `kron(g1, g0)[(i, j), (a, b)] = g1[i, a] · g0[j, b]`: each row `R` (folded `s0 × s1`) becomes
/// `G1ᵀ R G0`. On Flex in f32 each row in that factored form (`flex_kernels::tensor_gate`: a
/// quarter of the dense product's multiply-adds at rank 64), forward and for `h`'s gradient;
/// the cores' gradients from `dK = hᵀ · g` (one GEMM) folded onto them
/// (`flex_kernels::kron_backward`). Backends without the node take the product by the dense
/// `kron(g1, g0)` through `product::rows_times` (for its grouping of rows on the GPU ones).
pub fn tensor_gate<B: Backend>(
    h: Tensor<B, 2>,
    g1: Tensor<B, 2>,
    g0: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let inputs = [h, g1, g0].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 3>(TensorGate, inputs) {
        Ok(out) => float(out),
        Err([h, g1, g0]) => rows_times(float(h), kron(float(g1), float(g0))),
    }
}

/// `kron(g1, g0)`: one node on the GPU back ends (`cube_kron`, a kernel each way, where the
/// composed broadcast product was a product forward and two products and four reductions
/// backward: BENCHMARKS.md, attempt 99) and on the CPU ones; elsewhere the broadcast product.
pub fn kron<B: Backend>(g1: Tensor<B, 2>, g0: Tensor<B, 2>) -> Tensor<B, 2> {
    let inputs = [g1, g0].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 2>(Kron, inputs) {
        Ok(out) => float(out),
        Err([g1, g0]) => composed::kron(float(g1), float(g0)),
    }
}

/// Whether the node factors a gate with cores `g1 (s0, t0)` and `g0 (s1, t1)` on `B` (Flex's
/// autodiff, with AVX-512 or AVX2 and cores `flex_kernels::tensor_gate_applies` takes), so
/// that the lowering takes the node even where the dense product would cost many times the
/// factored form's multiply-adds.
pub fn factors_tensor_gate<B: Backend>(g1: [usize; 2], g0: [usize; 2]) -> bool {
    TypeId::of::<B>() == TypeId::of::<Autodiff<Flex>>() && flex_kernels::tensor_gate_applies(g1, g0)
}

struct TensorGate;

/// Backward from the kept `h` and cores.
#[derive(Debug)]
struct TensorGateBackward;

impl<I: Backend> Backward<I, 3> for TensorGateBackward {
    type State = (FloatTensor<I>, FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (h, g1, g0) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let [h_node, g1_node, g0_node] = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        if g1_node.is_some() || g0_node.is_some() {
            let dk = matmul_inner::<I>(I::float_transpose(h), g.clone(), 1.0);
            let [dg1, dg0] = kron_backward_inner::<I>(g1.clone(), g0.clone(), dk);
            give::<I>(grads, g1_node, || dg1);
            give::<I>(grads, g0_node, || dg0);
        }
        give::<I>(grads, h_node, || {
            let kernel =
                |[g, g1, g0]: [&FlexTensor; 3]| flex_kernels::tensor_gate_input_gradient(g, g1, g0);
            on_flex::<I, 3>([&g, &g1, &g0], kernel).unwrap_or_else(|| {
                let k = kron_inner::<I>(g1.clone(), g0.clone());
                matmul_inner::<I>(g.clone(), I::float_transpose(k), 1.0)
            })
        });
    }
}

impl Node<3> for TensorGate {
    fn run<I: Backend>(
        self,
        [h, g1, g0]: [FloatTensor<Autodiff<I>>; 3],
    ) -> FloatTensor<Autodiff<I>> {
        let (x, a, b) = (
            h.primitive.clone(),
            g1.primitive.clone(),
            g0.primitive.clone(),
        );
        let kernel = |[x, a, b]: [&FlexTensor; 3]| flex_kernels::tensor_gate(x, a, b);
        let y = on_flex::<I, 3>([&x, &a, &b], kernel).unwrap_or_else(|| {
            matmul_inner::<I>(x.clone(), kron_inner::<I>(a.clone(), b.clone()), 1.0)
        });
        record(TensorGateBackward, [&h, &g1, &g0], (x, a, b), y)
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
        let [dg1, dg0] = kron_backward_inner::<I>(g1, g0, dk);
        give::<I>(grads, g1_node, || dg1);
        give::<I>(grads, g0_node, || dg0);
    }
}

impl Node<2> for Kron {
    const ON_GPU: bool = true;

    fn run<I: Backend>(self, [g1, g0]: [FloatTensor<Autodiff<I>>; 2]) -> FloatTensor<Autodiff<I>> {
        let (a, b) = (g1.primitive.clone(), g0.primitive.clone());
        let k = kron_inner::<I>(a.clone(), b.clone());
        record(KronBackward, [&g1, &g0], (a, b), k)
    }
}

/// `kron(g1, g0)` on the inner backend: a GPU back end's kernel (`cube_kron`), one loop on
/// Flex (`flex_kernels::kron`), else the broadcast product.
fn kron_inner<I: Backend>(g1: FloatTensor<I>, g0: FloatTensor<I>) -> FloatTensor<I> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let (g1, g0) = match super::cube_kron::kron::<I>(g1, g0) {
        Ok(k) => return k,
        Err([g1, g0]) => (g1, g0),
    };
    on_flex::<I, 2>([&g1, &g0], |[a, b]| flex_kernels::kron(a, b)).unwrap_or_else(|| {
        composed::kron::<I>(float(g1), float(g0))
            .into_primitive()
            .tensor()
    })
}

/// `[dg1, dg0]` of `kron(g1, g0)` from its gradient `dk` on the inner backend: a GPU back end's
/// kernel (`cube_kron`), Flex's (`flex_kernels::kron_backward`), else the composed sums.
fn kron_backward_inner<I: Backend>(
    g1: FloatTensor<I>,
    g0: FloatTensor<I>,
    dk: FloatTensor<I>,
) -> [FloatTensor<I>; 2] {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let dk = match super::cube_kron::kron_backward::<I>(&g1, &g0, dk) {
        Ok(cores) => return cores,
        Err(dk) => dk,
    };
    let kernel = |[g1, g0, dk]: [&FlexTensor; 3]| flex_kernels::kron_backward(g1, g0, dk);
    on_flex_many::<I, 3, 2>([&g1, &g0, &dk], kernel)
        .unwrap_or_else(|| kron_backward_composed::<I>(g1, g0, dk))
}

/// `[dg1, dg0]` of `kron(g1, g0)` from the inner backend's ops, given its gradient `dk`:
/// `dk` unfolded to (s0, s1, t0, t1), times the other core broadcast, summed over the other
/// core's axes.
fn kron_backward_composed<I: Backend>(
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
