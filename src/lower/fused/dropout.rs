//! Dropout as one node, its mask drawn by laxc on Flex.

use super::{as_node, float, on_flex_many, record, Node};
use crate::lower::flex_kernels;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::Autodiff;
use burn::nn::DropoutConfig;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Distribution, Shape, Tensor, TensorMetadata};

/// Dropout at rate `p` while training: each element kept with probability `1 − p` and scaled
/// by `1 / (1 − p)`, else 0, the mask drawn anew on every call from the backend's generator
/// (seeded per step by the training loop). The identity at `p = 0` and outside autodiff
/// (evaluation), as Burn's. On laxc's CPU autodiff backends one node, whose mask on Flex in
/// f32 is drawn in parallel from one seed the call takes from the generator
/// (`flex_kernels::dropout`); elsewhere Burn's dropout.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    if p == 0.0 {
        return x;
    }
    match as_node::<B, _, 1>(Dropout { keep: 1.0 - p }, [x.into_primitive().tensor()]) {
        Ok(out) => float(out),
        Err([x]) => DropoutConfig::new(p).init().forward(float::<B, D>(x)),
    }
}

struct Dropout {
    keep: f64,
}

/// Backward: the output gradient times the kept mask (`1 / keep` or 0).
#[derive(Debug)]
struct DropoutBackward;

impl<I: Backend> Backward<I, 1> for DropoutBackward {
    type State = FloatTensor<I>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let mask = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |g| I::float_mul(g, mask));
    }
}

impl Node<1> for Dropout {
    fn run<I: Backend>(self, [x]: [FloatTensor<Autodiff<I>>; 1]) -> FloatTensor<Autodiff<I>> {
        let input = x.primitive.clone();
        let keep = self.keep;
        let seed = seed_from::<I>(&input);
        let kernel = |[x]: [&FlexTensor; 1]| flex_kernels::dropout(x, keep, seed);
        let [y, mask] = on_flex_many::<I, 1, 2>([&input], kernel).unwrap_or_else(|| {
            let device = I::float_device(&input);
            let drawn = I::float_random(
                input.shape(),
                Distribution::Bernoulli(keep),
                &device,
                input.dtype().into(),
            );
            let mask = I::float_mul_scalar(drawn, (1.0 / keep).into());
            [I::float_mul(input.clone(), mask.clone()), mask]
        });
        record(DropoutBackward, [&x], mask, y)
    }
}

/// A 64-bit seed drawn from the backend's generator (three uniform draws of 24 bits each, the
/// precision of an f32 in [0, 1)), so that the training loop's seeding per step decides the
/// mask, as it decides Burn's.
fn seed_from<I: Backend>(like: &FloatTensor<I>) -> u64 {
    let device = I::float_device(like);
    let draws = I::float_random(
        Shape::new([3]),
        Distribution::Default,
        &device,
        burn::tensor::FloatDType::F32,
    );
    let values = float::<I, 1>(draws)
        .into_data()
        .to_vec::<f32>()
        .expect("f32 draws");
    values
        .iter()
        .fold(0u64, |seed, &u| (seed << 24) ^ (u * 16_777_216.0) as u64)
}
