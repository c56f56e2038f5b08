//! A LaX add without a norm (`z + g(h)`; a tensor-train layer's intra-layer `t3 + t1`) as one
//! node, whose sum on Flex in f32 is written over `z` on every thread (`flex_kernels::add_over`).

use super::{as_node, float, give, none, on_flex_over, record, take_buffer, Node};
use crate::lower::flex_kernels;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

/// `z + addend` for two tensors of one shape: the same values and gradients as `z + addend`
/// (each gradient the output's, as it is). Tensors of two shapes (a broadcast) take Burn's add.
pub fn lax_add<B: Backend>(z: Tensor<B, 2>, addend: Tensor<B, 2>) -> Tensor<B, 2> {
    if z.dims() != addend.dims() {
        return z + addend;
    }
    let inputs = [
        z.into_primitive().tensor(),
        addend.into_primitive().tensor(),
    ];
    match as_node::<B, _, 2>(LaxAdd, inputs) {
        Ok(out) => float(out),
        Err([z, addend]) => float::<B, 2>(z) + float::<B, 2>(addend),
    }
}

struct LaxAdd;

impl Node<2> for LaxAdd {
    fn run<I: Backend>(
        self,
        [mut z, addend]: [FloatTensor<Autodiff<I>>; 2],
    ) -> FloatTensor<Autodiff<I>> {
        // `z` is read last (a product's output, or a latent), so its buffer takes the sum.
        let mut sum = take_buffer(&mut z);
        let kernel = |sum: &mut _, [addend]: [&_; 1]| flex_kernels::add_over(sum, addend).map(none);
        let y = match on_flex_over::<I, 1, 0>(&mut sum, [&addend.primitive], kernel) {
            Some([]) => sum,
            None => I::float_add(sum, addend.primitive.clone()),
        };
        record(LaxAddBackward, [&z, &addend], (), y)
    }
}

/// Backward of [`LaxAdd`]: the output's gradient to both inputs.
#[derive(Debug)]
struct LaxAddBackward;

impl<I: Backend> Backward<I, 2> for LaxAddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<I>(&ops.node);
        let [z, addend] = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        give::<I>(grads, z, || g.clone());
        give::<I>(grads, addend, || g);
    }
}
