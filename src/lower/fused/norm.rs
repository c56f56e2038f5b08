//! LayerNorm and RMSNorm as one autodiff node each, alone and of a sum (a LaX pathway's
//! `Norm(z + g(h))`, `passes::fuse_lax_norms`); both backward passes share `norm_gradients`.

use super::{
    as_node, column_sums, composed, float, give, inverse_root, mean_last, on_flex, on_flex_many,
    record, Node,
};
use crate::lower::flex_kernels;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorMetadata};

/// LayerNorm over the last dimension, `(x − mean) / √(var + ε) · γ + β` (biased variance).
pub fn layer_norm<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, 2> {
    let inputs = [x, gamma.unsqueeze(), beta.unsqueeze()].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 3>(LayerNorm { epsilon }, inputs) {
        Ok(out) => float(out),
        // A plain backend's own op: one pass on Flex.
        Err([x, gamma, beta]) => {
            let width = gamma.shape().num_elements();
            let vector = |t: FloatTensor<B>| B::float_reshape(t, Shape::new([width]));
            float(B::layer_norm(x, vector(gamma), Some(vector(beta)), epsilon))
        }
    }
}

/// RMSNorm over the last dimension, `x / √(mean(x²) + ε) · γ`.
pub fn rms_norm<B: Backend>(x: Tensor<B, 2>, gamma: Tensor<B, 1>, epsilon: f64) -> Tensor<B, 2> {
    let inputs = [x, gamma.unsqueeze()].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 2>(RmsNorm { epsilon }, inputs) {
        Ok(out) => float(out),
        Err([x, gamma]) => composed::rms_norm(float(x), float(gamma), epsilon),
    }
}

/// LayerNorm of `x + addend` (a LaX pathway's `Norm(z + g(h))`, `passes::fuse_lax_norms`): one
/// node whose forward adds inside the norm's pass and keeps the sum, and whose backward gives
/// the sum's gradient to both inputs. On Flex in f32 one kernel each way (`flex_kernels`).
pub fn add_layer_norm<B: Backend>(
    x: Tensor<B, 2>,
    addend: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, 2> {
    let inputs = [x, addend, gamma.unsqueeze(), beta.unsqueeze()];
    match as_node::<B, _, 4>(
        AddNorm { epsilon },
        inputs.map(|t| t.into_primitive().tensor()),
    ) {
        Ok(out) => float(out),
        Err([x, addend, gamma, beta]) => {
            let width = gamma.shape().num_elements();
            let vector =
                |t: FloatTensor<B>| float::<B, 1>(B::float_reshape(t, Shape::new([width])));
            layer_norm(
                float::<B, 2>(x) + float(addend),
                vector(gamma),
                vector(beta),
                epsilon,
            )
        }
    }
}

/// RMSNorm of `x + addend`, as [`add_layer_norm`].
pub fn add_rms_norm<B: Backend>(
    x: Tensor<B, 2>,
    addend: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, 2> {
    let inputs = [x, addend, gamma.unsqueeze()].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 3>(AddNorm { epsilon }, inputs) {
        Ok(out) => float(out),
        Err([x, addend, gamma]) => {
            composed::rms_norm(float::<B, 2>(x) + float(addend), float(gamma), epsilon)
        }
    }
}

struct LayerNorm {
    epsilon: f64,
}

/// Backward, with `x̂ = (x − mean) · r` and `r = 1/√(var + ε)` recomputed from the saved
/// input: `dβ = Σrows g`, `dγ = Σrows g ⊙ x̂`, and with `h = g ⊙ γ`,
/// `dx = r · (h − mean(h) − x̂ ⊙ mean(h ⊙ x̂))`.
#[derive(Debug)]
struct LayerNormBackward {
    epsilon: f64,
}

impl<I: Backend> Backward<I, 3> for LayerNormBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let [x_node, gamma_node, beta_node] =
            ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let (dx, d_gamma, d_beta) = norm_gradients::<I>([x, gamma, g], self.epsilon, true);
        give::<I>(grads, x_node, || dx);
        give::<I>(grads, gamma_node, || d_gamma);
        give::<I>(grads, beta_node, || d_beta.expect("LayerNorm's dβ"));
    }
}

/// The gradients `(dx, dγ, dβ)` of LayerNorm (`centered`) or RMSNorm (no dβ) of `x`
/// with scale `gamma` (1, width), given the output gradient `g`: with `x̂ = (x − mean) · r`,
/// `r = 1/√(var + ε)` recomputed from `x`, and `h = g ⊙ γ`: `dβ = Σrows g`,
/// `dγ = Σrows g ⊙ x̂`, `dx = r · (h − mean(h) − x̂ ⊙ mean(h ⊙ x̂))` (RMSNorm: no mean taken
/// and no `mean(h)`). On Flex in f32 one kernel (`flex_kernels::norm_backward`).
fn norm_gradients<I: Backend>(
    [x, gamma, g]: [FloatTensor<I>; 3],
    epsilon: f64,
    centered: bool,
) -> (FloatTensor<I>, FloatTensor<I>, Option<FloatTensor<I>>) {
    let kernel = |inputs: [&FlexTensor; 3]| flex_kernels::norm_backward(inputs, epsilon, centered);
    if let Some([dx, d_gamma, d_beta]) = on_flex_many::<I, 3, 3>([&x, &gamma, &g], kernel) {
        return (dx, d_gamma, centered.then_some(d_beta));
    }
    let x = if centered {
        I::float_sub(x.clone(), mean_last::<I>(x))
    } else {
        x
    };
    let variance = mean_last::<I>(I::float_mul(x.clone(), x.clone()));
    let r = inverse_root::<I>(variance, epsilon);
    let normalized = I::float_mul(x, r.clone());
    let d_beta = centered.then(|| column_sums::<I>(g.clone()));
    let d_gamma = column_sums::<I>(I::float_mul(g.clone(), normalized.clone()));
    let h = I::float_mul(g, gamma);
    let mean_hx = mean_last::<I>(I::float_mul(h.clone(), normalized.clone()));
    let h = if centered {
        I::float_sub(h.clone(), mean_last::<I>(h))
    } else {
        h
    };
    let dx = I::float_mul(I::float_sub(h, I::float_mul(normalized, mean_hx)), r);
    (dx, d_gamma, d_beta)
}

impl Node<3> for LayerNorm {
    fn run<I: Backend>(
        self,
        [x, gamma, beta]: [FloatTensor<Autodiff<I>>; 3],
    ) -> FloatTensor<Autodiff<I>> {
        let width = gamma.primitive.shape().num_elements();
        let vector = |t: FloatTensor<I>| I::float_reshape(t, Shape::new([width]));
        let y = I::layer_norm(
            x.primitive.clone(),
            vector(gamma.primitive.clone()),
            Some(vector(beta.primitive.clone())),
            self.epsilon,
        );
        let node = LayerNormBackward {
            epsilon: self.epsilon,
        };
        record(
            node,
            [&x, &gamma, &beta],
            (x.primitive.clone(), gamma.primitive.clone()),
            y,
        )
    }
}

struct RmsNorm {
    epsilon: f64,
}

/// Backward (`norm_gradients`), with `r = 1/√(mean(x²) + ε)` recomputed from the saved `x`
/// and `x̂ = x · r`: `dγ = Σrows g ⊙ x̂`, and with `h = g ⊙ γ`, `dx = r · (h − x̂ ⊙ mean(h ⊙ x̂))`.
#[derive(Debug)]
struct RmsNormBackward {
    epsilon: f64,
}

impl<I: Backend> Backward<I, 2> for RmsNormBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let [x_node, gamma_node] = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let (dx, d_gamma, _) = norm_gradients::<I>([x, gamma, g], self.epsilon, false);
        give::<I>(grads, x_node, || dx);
        give::<I>(grads, gamma_node, || d_gamma);
    }
}

impl Node<2> for RmsNorm {
    fn run<I: Backend>(
        self,
        [x, gamma]: [FloatTensor<Autodiff<I>>; 2],
    ) -> FloatTensor<Autodiff<I>> {
        let y = rms_norm_inner::<I>(x.primitive.clone(), gamma.primitive.clone(), self.epsilon);
        record(
            RmsNormBackward {
                epsilon: self.epsilon,
            },
            [&x, &gamma],
            (x.primitive.clone(), gamma.primitive.clone()),
            y,
        )
    }
}

/// RMSNorm on the inner backend: Flex's kernel where it applies.
fn rms_norm_inner<I: Backend>(
    x: FloatTensor<I>,
    gamma: FloatTensor<I>,
    epsilon: f64,
) -> FloatTensor<I> {
    let kernel = |[x, gamma]: [&FlexTensor; 2]| flex_kernels::rms_norm(x, gamma, epsilon);
    on_flex::<I, 2>([&x, &gamma], kernel).unwrap_or_else(|| {
        let square = I::float_mul(x.clone(), x.clone());
        let r = inverse_root::<I>(mean_last::<I>(square), epsilon);
        I::float_mul(I::float_mul(x, r), gamma)
    })
}

/// A norm of a sum: LayerNorm over `[x, addend, γ, β]`, RMSNorm over `[x, addend, γ]`.
struct AddNorm {
    epsilon: f64,
}

/// Backward: the norm's gradients at the kept sum, the sum's given to both addends.
#[derive(Debug)]
struct AddNormBackward {
    epsilon: f64,
}

impl AddNorm {
    /// `[y, x + addend]` on the inner backend: one Flex kernel where it applies.
    fn forward<I: Backend>(
        &self,
        [x, addend]: [FloatTensor<I>; 2],
        gamma: FloatTensor<I>,
        beta: Option<FloatTensor<I>>,
    ) -> [FloatTensor<I>; 2] {
        let eps = self.epsilon;
        let fused = match &beta {
            Some(beta) => on_flex_many::<I, 4, 2>([&x, &addend, &gamma, beta], |[x, a, g, b]| {
                flex_kernels::add_norm([x, a], g, Some(b), eps)
            }),
            None => on_flex_many::<I, 3, 2>([&x, &addend, &gamma], |[x, a, g]| {
                flex_kernels::add_norm([x, a], g, None, eps)
            }),
        };
        fused.unwrap_or_else(|| {
            let sum = I::float_add(x, addend);
            let y = match beta {
                Some(beta) => {
                    let width = gamma.shape().num_elements();
                    let vector = |t: FloatTensor<I>| I::float_reshape(t, Shape::new([width]));
                    I::layer_norm(sum.clone(), vector(gamma), Some(vector(beta)), eps)
                }
                None => rms_norm_inner::<I>(sum.clone(), gamma, eps),
            };
            [y, sum]
        })
    }
}

impl<I: Backend> Backward<I, 4> for AddNormBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (sum, gamma) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let [x_node, addend_node, gamma_node, beta_node] =
            ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let (d_sum, d_gamma, d_beta) = norm_gradients::<I>([sum, gamma, g], self.epsilon, true);
        give::<I>(grads, x_node, || d_sum.clone());
        give::<I>(grads, addend_node, || d_sum);
        give::<I>(grads, gamma_node, || d_gamma);
        give::<I>(grads, beta_node, || d_beta.expect("LayerNorm's dβ"));
    }
}

impl<I: Backend> Backward<I, 3> for AddNormBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (sum, gamma) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let [x_node, addend_node, gamma_node] =
            ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let (d_sum, d_gamma, _) = norm_gradients::<I>([sum, gamma, g], self.epsilon, false);
        give::<I>(grads, x_node, || d_sum.clone());
        give::<I>(grads, addend_node, || d_sum);
        give::<I>(grads, gamma_node, || d_gamma);
    }
}

impl Node<4> for AddNorm {
    fn run<I: Backend>(
        self,
        [x, addend, gamma, beta]: [FloatTensor<Autodiff<I>>; 4],
    ) -> FloatTensor<Autodiff<I>> {
        let inputs = [x.primitive.clone(), addend.primitive.clone()];
        let g = gamma.primitive.clone();
        let [y, sum] = self.forward::<I>(inputs, g.clone(), Some(beta.primitive.clone()));
        let backward = AddNormBackward {
            epsilon: self.epsilon,
        };
        record(backward, [&x, &addend, &gamma, &beta], (sum, g), y)
    }
}

impl Node<3> for AddNorm {
    fn run<I: Backend>(
        self,
        [x, addend, gamma]: [FloatTensor<Autodiff<I>>; 3],
    ) -> FloatTensor<Autodiff<I>> {
        let inputs = [x.primitive.clone(), addend.primitive.clone()];
        let g = gamma.primitive.clone();
        let [y, sum] = self.forward::<I>(inputs, g.clone(), None);
        let backward = AddNormBackward {
            epsilon: self.epsilon,
        };
        record(backward, [&x, &addend, &gamma], (sum, g), y)
    }
}
