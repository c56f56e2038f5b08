//! LayerNorm and RMSNorm as one autodiff node each, alone and of a sum (a LaX pathway's
//! `Norm(z + g(h))`, `passes::fuse_lax_norms`), all with one backward (`NormBackward`).

use super::{
    as_node, column_sums, composed, float, give, gpu_inner, inverse_root, mean_last, on_flex,
    on_flex_over, record, take_buffer, Node,
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
    let inputs = [
        x.into_primitive(),
        gamma.into_primitive(),
        beta.into_primitive(),
    ];
    match as_node::<B, _, 3>(LayerNorm { epsilon }, inputs.map(|t| t.tensor())) {
        Ok(out) => float(out),
        Err([x, gamma, beta]) => float(layer_norm_inner::<B>(x, gamma, beta, epsilon)),
    }
}

/// RMSNorm over the last dimension, `x / √(mean(x²) + ε) · γ`.
pub fn rms_norm<B: Backend>(x: Tensor<B, 2>, gamma: Tensor<B, 1>, epsilon: f64) -> Tensor<B, 2> {
    let inputs = [x.into_primitive().tensor(), gamma.into_primitive().tensor()];
    match as_node::<B, _, 2>(RmsNorm { epsilon }, inputs) {
        Ok(out) => float(out),
        Err([x, gamma]) => composed::rms_norm(float(x), float::<B, 1>(gamma).unsqueeze(), epsilon),
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
    let matrices = [x, addend].map(|t| t.into_primitive().tensor());
    let vectors = [gamma, beta].map(|t| t.into_primitive().tensor());
    let [x, addend] = matrices;
    let [gamma, beta] = vectors;
    match as_node::<B, _, 4>(AddNorm { epsilon }, [x, addend, gamma, beta]) {
        Ok(out) => float(out),
        Err([x, addend, gamma, beta]) => {
            let sum = B::float_add(x, addend);
            float(layer_norm_inner::<B>(sum, gamma, beta, epsilon))
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
    let [x, addend] = [x, addend].map(|t| t.into_primitive().tensor());
    let gamma = gamma.into_primitive().tensor();
    match as_node::<B, _, 3>(AddNorm { epsilon }, [x, addend, gamma]) {
        Ok(out) => float(out),
        Err([x, addend, gamma]) => {
            let gamma = float::<B, 1>(gamma).unsqueeze();
            composed::rms_norm(float::<B, 2>(x) + float(addend), gamma, epsilon)
        }
    }
}

struct LayerNorm {
    epsilon: f64,
}

/// Backward of every norm node here: the norm's gradients at the saved input
/// (`norm_gradients`), given to the node's parents in their order: the input's gradient to each
/// of the first `inputs` (the input, or both addends of a sum), dγ to the next, and dβ to the
/// last where there is one (LayerNorm, whose node has a parent more).
#[derive(Debug)]
struct NormBackward {
    epsilon: f64,
    inputs: usize,
}

/// What a norm node keeps for its backward pass: the input to normalize (the sum, for a norm of
/// a sum) and γ; or, from a GPU's forward pass (`norm_keeping_rows`), the input already
/// normalized, `x̂`, γ and the rows' `r = 1/√(var + ε)`.
type NormState<I> = (FloatTensor<I>, FloatTensor<I>, Option<FloatTensor<I>>);

impl<I: Backend, const N: usize> Backward<I, N> for NormBackward {
    type State = NormState<I>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, gamma, r) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let parents = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let centered = N == self.inputs + 2;
        let (dx, d_gamma, d_beta) = match r {
            Some(r) => gradients_from_rows::<I>([x, r, gamma, g], centered),
            None => norm_gradients::<I>([x, gamma, g], self.epsilon, centered),
        };
        let (last, others) = parents[..self.inputs]
            .split_last()
            .expect("a norm has an input");
        for &parent in others {
            give::<I>(grads, parent, || dx.clone());
        }
        give::<I>(grads, *last, || dx);
        give::<I>(grads, parents[self.inputs], || d_gamma);
        if let Some(d_beta) = d_beta {
            give::<I>(grads, parents[self.inputs + 1], || d_beta);
        }
    }
}

/// The gradients `(dx, dγ, dβ)` of LayerNorm (`centered`) or RMSNorm (no dβ) of `x`
/// with scale `gamma` (a vector of the rows' width), given the output gradient `g`: with `x̂ = (x − mean) · r`,
/// `r = 1/√(var + ε)` recomputed from `x`, and `h = g ⊙ γ`: `dβ = Σrows g`,
/// `dγ = Σrows g ⊙ x̂`, `dx = r · (h − mean(h) − x̂ ⊙ mean(h ⊙ x̂))` (RMSNorm: no mean taken
/// and no `mean(h)`). On Flex in f32 one kernel (`flex_kernels::norm_backward`).
fn norm_gradients<I: Backend>(
    [x, gamma, g]: [FloatTensor<I>; 3],
    epsilon: f64,
    centered: bool,
) -> (FloatTensor<I>, FloatTensor<I>, Option<FloatTensor<I>>) {
    // dγ and dβ come out as (1, width) rows, and go to γ and β as the vectors they are.
    let width = gamma.shape().num_elements();
    let vector = |t: FloatTensor<I>| I::float_reshape(t, Shape::new([width]));
    let mut g = g;
    let kernel = |g: &mut FlexTensor, [x, gamma]: [&FlexTensor; 2]| {
        flex_kernels::norm_backward(x, gamma, g, epsilon, centered)
    };
    if let Some([d_gamma, d_beta]) = on_flex_over::<I, 2, 2>(&mut g, [&x, &gamma], kernel) {
        // `g` now holds dx.
        return (g, vector(d_gamma), centered.then(|| vector(d_beta)));
    }
    let (normalized, r) = normalize::<I>(x, epsilon, centered);
    gradients_from_rows::<I>([normalized, r, gamma, g], centered)
}

/// `(x̂, r)`: the rows of `x` centred (LayerNorm) and scaled by `r = 1/√(var + ε)` (the mean
/// square, uncentred, for RMSNorm), and `r` as a column.
fn normalize<I: Backend>(
    x: FloatTensor<I>,
    epsilon: f64,
    centered: bool,
) -> (FloatTensor<I>, FloatTensor<I>) {
    let x = if centered {
        I::float_sub(x.clone(), mean_last::<I>(x))
    } else {
        x
    };
    let variance = mean_last::<I>(I::float_mul(x.clone(), x.clone()));
    let r = inverse_root::<I>(variance, epsilon);
    (I::float_mul(x, r.clone()), r)
}

/// [`norm_gradients`] from the normalized rows `x̂` and their `r`: on a GPU back end in f32
/// two kernels of laxc's own (`cube_norm`), else composed of the backend's ops.
fn gradients_from_rows<I: Backend>(
    [normalized, r, gamma, g]: [FloatTensor<I>; 4],
    centered: bool,
) -> (FloatTensor<I>, FloatTensor<I>, Option<FloatTensor<I>>) {
    let width = gamma.shape().num_elements();
    let vector = |t: FloatTensor<I>| I::float_reshape(t, Shape::new([width]));
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let [normalized, r, gamma, g] =
        match super::cube_norm::gradients::<I>([normalized, r, gamma, g], centered) {
            Ok(gradients) => return gradients,
            Err(inputs) => inputs,
        };
    let d_beta = centered.then(|| column_sums::<I>(g.clone()));
    let d_gamma = column_sums::<I>(I::float_mul(g.clone(), normalized.clone()));
    let gamma = row::<I>(gamma);
    let h = I::float_mul(g, gamma);
    let mean_hx = mean_last::<I>(I::float_mul(h.clone(), normalized.clone()));
    let h = if centered {
        I::float_sub(h.clone(), mean_last::<I>(h))
    } else {
        h
    };
    let dx = I::float_mul(I::float_sub(h, I::float_mul(normalized, mean_hx)), r);
    (dx, vector(d_gamma), d_beta.map(vector))
}

impl Node<3> for LayerNorm {
    const ON_GPU: bool = true;

    fn run<I: Backend>(
        self,
        [x, gamma, beta]: [FloatTensor<Autodiff<I>>; 3],
    ) -> FloatTensor<Autodiff<I>> {
        let (input, g) = (x.primitive.clone(), gamma.primitive.clone());
        let backward = NormBackward {
            epsilon: self.epsilon,
            inputs: 1,
        };
        let parents = [&x, &gamma, &beta];
        if gpu_inner::<I>() {
            let b = Some(beta.primitive.clone());
            let (y, state) = norm_keeping_rows::<I>(input, None, g, b, self.epsilon);
            return record(backward, parents, state, y);
        }
        let y = layer_norm_inner::<I>(
            input.clone(),
            g.clone(),
            beta.primitive.clone(),
            self.epsilon,
        );
        record(backward, parents, (input, g, None), y)
    }
}

/// The GPU back ends' forward pass of a norm node: the norm of `x` (of `x + addend` where there
/// is one; LayerNorm with `beta`, else RMSNorm), one kernel of laxc's own in f32 (`cube_norm`),
/// else composed of the backend's ops; and its rows' statistics kept as the backward's state,
/// which then starts from them instead of normalizing `x` again. Autodiff's graph of a composed
/// norm was about 24 kernels a step there (BENCHMARKS.md, attempts 76 and 77).
fn norm_keeping_rows<I: Backend>(
    x: FloatTensor<I>,
    addend: Option<FloatTensor<I>>,
    gamma: FloatTensor<I>,
    beta: Option<FloatTensor<I>>,
    epsilon: f64,
) -> (FloatTensor<I>, NormState<I>) {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let (x, addend, gamma, beta) =
        match super::cube_norm::forward::<I>(x, addend, gamma.clone(), beta, epsilon) {
            Ok([y, normalized, r]) => return (y, (normalized, gamma, Some(r))),
            Err(inputs) => inputs,
        };
    let x = match addend {
        Some(addend) => I::float_add(x, addend),
        None => x,
    };
    let (normalized, r) = normalize::<I>(x, epsilon, beta.is_some());
    let y = I::float_mul(normalized.clone(), row::<I>(gamma.clone()));
    let y = match beta {
        Some(beta) => I::float_add(y, row::<I>(beta)),
        None => y,
    };
    (y, (normalized, gamma, Some(r)))
}

/// LayerNorm on a backend from γ and β as vectors: the backend's own op (one pass on Flex).
fn layer_norm_inner<I: Backend>(
    x: FloatTensor<I>,
    gamma: FloatTensor<I>,
    beta: FloatTensor<I>,
    epsilon: f64,
) -> FloatTensor<I> {
    I::layer_norm(x, gamma, Some(beta), epsilon)
}

/// A vector (γ) as a (1, width) row, which a backend's element-wise ops broadcast over rows.
fn row<I: Backend>(vector: FloatTensor<I>) -> FloatTensor<I> {
    let width = vector.shape().num_elements();
    I::float_reshape(vector, Shape::new([1, width]))
}

struct RmsNorm {
    epsilon: f64,
}

impl Node<2> for RmsNorm {
    const ON_GPU: bool = true;

    fn run<I: Backend>(
        self,
        [x, gamma]: [FloatTensor<Autodiff<I>>; 2],
    ) -> FloatTensor<Autodiff<I>> {
        let (input, g) = (x.primitive.clone(), gamma.primitive.clone());
        let backward = NormBackward {
            epsilon: self.epsilon,
            inputs: 1,
        };
        if gpu_inner::<I>() {
            let (y, state) = norm_keeping_rows::<I>(input, None, g, None, self.epsilon);
            return record(backward, [&x, &gamma], state, y);
        }
        let y = rms_norm_inner::<I>(input.clone(), g.clone(), self.epsilon);
        record(backward, [&x, &gamma], (input, g, None), y)
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
        I::float_mul(I::float_mul(x, r), row::<I>(gamma))
    })
}

/// A norm of a sum: LayerNorm over `[x, addend, γ, β]`, RMSNorm over `[x, addend, γ]`.
struct AddNorm {
    epsilon: f64,
}

impl AddNorm {
    /// `y` and the backward's state on the inner backend: one Flex kernel where it applies,
    /// which writes `y` over `x`'s buffer (copied first if anything else holds it) and keeps
    /// `x + addend`; on a GPU back end the sum's rows' statistics (`norm_keeping_rows`).
    fn forward<I: Backend>(
        &self,
        [mut x, addend]: [FloatTensor<I>; 2],
        gamma: FloatTensor<I>,
        beta: Option<FloatTensor<I>>,
    ) -> (FloatTensor<I>, NormState<I>) {
        let eps = self.epsilon;
        if gpu_inner::<I>() {
            return norm_keeping_rows::<I>(x, Some(addend), gamma, beta, eps);
        }
        let fused = match &beta {
            Some(beta) => {
                on_flex_over::<I, 3, 1>(&mut x, [&addend, &gamma, beta], |x, [a, g, b]| {
                    flex_kernels::add_norm(x, a, g, Some(b), eps).map(|sum| [sum])
                })
            }
            None => on_flex_over::<I, 2, 1>(&mut x, [&addend, &gamma], |x, [a, g]| {
                flex_kernels::add_norm(x, a, g, None, eps).map(|sum| [sum])
            }),
        };
        if let Some([sum]) = fused {
            return (x, (sum, gamma, None));
        }
        let sum = I::float_add(x, addend);
        let y = match beta {
            Some(beta) => layer_norm_inner::<I>(sum.clone(), gamma.clone(), beta, eps),
            None => rms_norm_inner::<I>(sum.clone(), gamma.clone(), eps),
        };
        (y, (sum, gamma, None))
    }
}

impl Node<4> for AddNorm {
    const ON_GPU: bool = true;

    fn run<I: Backend>(
        self,
        [mut x, addend, gamma, beta]: [FloatTensor<Autodiff<I>>; 4],
    ) -> FloatTensor<Autodiff<I>> {
        let inputs = [take_buffer(&mut x), addend.primitive.clone()];
        let g = gamma.primitive.clone();
        let backward = NormBackward {
            epsilon: self.epsilon,
            inputs: 2,
        };
        let (y, state) = self.forward::<I>(inputs, g, Some(beta.primitive.clone()));
        record(backward, [&x, &addend, &gamma, &beta], state, y)
    }
}

impl Node<3> for AddNorm {
    const ON_GPU: bool = true;

    fn run<I: Backend>(
        self,
        [mut x, addend, gamma]: [FloatTensor<Autodiff<I>>; 3],
    ) -> FloatTensor<Autodiff<I>> {
        let inputs = [take_buffer(&mut x), addend.primitive.clone()];
        let g = gamma.primitive.clone();
        let backward = NormBackward {
            epsilon: self.epsilon,
            inputs: 2,
        };
        let (y, state) = self.forward::<I>(inputs, g, None);
        record(backward, [&x, &addend, &gamma], state, y)
    }
}
