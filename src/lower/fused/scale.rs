//! The linear gate `h · α` (a LaX pathway's `gate = linear`, one scalar α) as one node.

use super::{as_node, float, give, on_flex, on_flex_many, record, Node};
use crate::lower::flex_kernels;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata};

/// `h · α` for (rows, width) `h` and a one-element `alpha`. On Flex in f32 one pass each way
/// (`flex_kernels::scale`, `scale_backward`: `dh = g · α` and `dα = Σ g ⊙ h` together), where
/// the composed form broadcasts α in a pass, and backward multiplies twice and reduces the
/// product in passes of their own; elsewhere the broadcast product. The node reads α as the
/// vector it is: a (1, 1) view of it would be an autodiff node more each way.
pub fn scale<B: Backend>(h: Tensor<B, 2>, alpha: Tensor<B, 1>) -> Tensor<B, 2> {
    let inputs = [h.into_primitive().tensor(), alpha.into_primitive().tensor()];
    match as_node::<B, _, 2>(Scale, inputs) {
        Ok(out) => float(out),
        Err([h, alpha]) => float::<B, 2>(h) * float::<B, 1>(alpha).unsqueeze::<2>(),
    }
}

/// `alpha`, a one-element vector, as a (1, 1) matrix that broadcasts over rows.
pub(super) fn as_matrix<I: Backend>(alpha: FloatTensor<I>) -> FloatTensor<I> {
    I::float_reshape(alpha, Shape::new([1, 1]))
}

/// The gradients `[dh, dα]` of `h · α` given the output gradient `g` (`dα` in α's shape): on
/// Flex one pass (`flex_kernels::scale_backward`), elsewhere the composed products and sum.
pub(super) fn scale_gradients<I: Backend>(
    h: FloatTensor<I>,
    alpha: FloatTensor<I>,
    g: FloatTensor<I>,
) -> [FloatTensor<I>; 2] {
    let kernel = |[h, a, g]: [&FlexTensor; 3]| flex_kernels::scale_backward(h, a, g);
    on_flex_many::<I, 3, 2>([&h, &alpha, &g], kernel).unwrap_or_else(|| {
        let d_alpha = I::float_sum(I::float_mul(g.clone(), h));
        let shape = alpha.shape();
        [
            I::float_mul(g, as_matrix::<I>(alpha)),
            I::float_reshape(d_alpha, shape),
        ]
    })
}

struct Scale;

/// Backward from the kept `h` and `α` (one element), giving `dα` in α's shape.
#[derive(Debug)]
struct ScaleBackward;

impl<I: Backend> Backward<I, 2> for ScaleBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (h, alpha) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let [h_node, alpha_node] = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let [dh, d_alpha] = scale_gradients::<I>(h, alpha, g);
        give::<I>(grads, h_node, || dh);
        give::<I>(grads, alpha_node, || d_alpha);
    }
}

impl Node<2> for Scale {
    fn run<I: Backend>(
        self,
        [h, alpha]: [FloatTensor<Autodiff<I>>; 2],
    ) -> FloatTensor<Autodiff<I>> {
        let (x, a) = (h.primitive.clone(), alpha.primitive.clone());
        let y = on_flex::<I, 2>([&x, &a], |[x, a]| flex_kernels::scale(x, a))
            .unwrap_or_else(|| I::float_mul(x.clone(), as_matrix::<I>(a.clone())));
        record(ScaleBackward, [&h, &alpha], (x, a), y)
    }
}
