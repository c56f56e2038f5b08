//! LayerNorm and RMSNorm as one autodiff node each: alone, of a sum (a LaX pathway's
//! `Norm(z + g(h))`, `passes::fuse_lax_norms`), and of a sum whose addend a linear gate scales
//! (`Norm(z + α h)`), the last with the scale's gradients taken by the norm's backward kernel
//! on Flex, after the norm's backward elsewhere.

use super::scale::{as_matrix, scale, scale_gradients};
use super::{
    as_node, column_sums, composed, flex, float, give, gpu_inner, inverse_root, mean_last, on_flex,
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

/// LayerNorm of `x + h · α` for a one-element `alpha` (a LaX pathway with a linear gate,
/// `Norm(z + α h)`): [`add_layer_norm`] of `x` and [`scale`]`(h, α)`, the same values to the
/// bit, as one node where those are two. On Flex in f32 the add's kernel multiplies `h` by α
/// as it reads it, and the backward pass gives `dh` and `dα` from the sum's gradient by the
/// scale's backward kernel: the scaled latent is never written, and has no node of its own
/// either way (BENCHMARKS.md, attempt 103). Elsewhere (the GPU back ends) the two nodes.
pub fn add_scaled_layer_norm<B: Backend>(
    x: Tensor<B, 2>,
    (h, alpha): (Tensor<B, 2>, Tensor<B, 1>),
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, 2> {
    let [x, h] = [x, h].map(|t| t.into_primitive().tensor());
    let [alpha, gamma, beta] = [alpha, gamma, beta].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 5>(ScaledAddNorm { epsilon }, [x, h, alpha, gamma, beta]) {
        Ok(out) => float(out),
        Err([x, h, alpha, gamma, beta]) => {
            let addend = scale(float(h), float(alpha));
            add_layer_norm(float(x), addend, float(gamma), float(beta), epsilon)
        }
    }
}

/// RMSNorm of `x + h · α`, as [`add_scaled_layer_norm`].
pub fn add_scaled_rms_norm<B: Backend>(
    x: Tensor<B, 2>,
    (h, alpha): (Tensor<B, 2>, Tensor<B, 1>),
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, 2> {
    let [x, h] = [x, h].map(|t| t.into_primitive().tensor());
    let [alpha, gamma] = [alpha, gamma].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 4>(ScaledAddNorm { epsilon }, [x, h, alpha, gamma]) {
        Ok(out) => float(out),
        Err([x, h, alpha, gamma]) => {
            let addend = scale(float(h), float(alpha));
            add_rms_norm(float(x), addend, float(gamma), epsilon)
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
        let g = grads.consume::<I>(&ops.node);
        let parents = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let centered = N == self.inputs + 2;
        let (dx, d_gamma, d_beta) = kept_norm_gradients::<I>(ops.state, g, self.epsilon, centered);
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

/// The gradients `(dx, dγ, dβ)` of a norm from what its node kept ([`NormState`]) and the
/// output gradient `g`: from the rows' statistics where a GPU's forward pass kept them, else
/// from the input ([`norm_gradients`]).
fn kept_norm_gradients<I: Backend>(
    (x, gamma, r): NormState<I>,
    g: FloatTensor<I>,
    epsilon: f64,
    centered: bool,
) -> (FloatTensor<I>, FloatTensor<I>, Option<FloatTensor<I>>) {
    match r {
        Some(r) => gradients_from_rows::<I>([x, r, gamma, g], centered),
        None => norm_gradients::<I>([x, gamma, g], epsilon, centered),
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
    let mut g = g;
    let kernel = |g: &mut FlexTensor, [x, gamma]: [&FlexTensor; 2]| {
        flex_kernels::norm_backward(x, gamma, g, epsilon, centered)
    };
    if let Some(rows) = on_flex_over::<I, 2, 2>(&mut g, [&x, &gamma], kernel) {
        let (d_gamma, d_beta) = as_vectors::<I>(rows, centered);
        // `g` now holds dx.
        return (g, d_gamma, d_beta);
    }
    let (normalized, r) = normalize::<I>(x, epsilon, centered);
    gradients_from_rows::<I>([normalized, r, gamma, g], centered)
}

/// dγ and dβ as the norm kernels give them, (1, width) rows, as the vectors γ and β are; dβ
/// only for LayerNorm (`centered`).
fn as_vectors<I: Backend>(
    [d_gamma, d_beta]: [FloatTensor<I>; 2],
    centered: bool,
) -> (FloatTensor<I>, Option<FloatTensor<I>>) {
    let vector = |t: FloatTensor<I>| {
        let width = t.shape().num_elements();
        I::float_reshape(t, Shape::new([width]))
    };
    (vector(d_gamma), centered.then(|| vector(d_beta)))
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
    /// `y` and the backward's state on the inner backend, for the norm of `x + addend`, or of
    /// `x + addend · α` with `alpha`: one Flex kernel where it applies, which writes `y` over
    /// `x`'s buffer (copied first if anything else holds it) and keeps the sum; on a GPU back
    /// end the sum's rows' statistics (`norm_keeping_rows`).
    fn forward<I: Backend>(
        &self,
        [mut x, addend]: [FloatTensor<I>; 2],
        alpha: Option<FloatTensor<I>>,
        gamma: FloatTensor<I>,
        beta: Option<FloatTensor<I>>,
    ) -> (FloatTensor<I>, NormState<I>) {
        let eps = self.epsilon;
        // The scale's own product, as its node's fallback computes it.
        let scaled = |addend, alpha: Option<_>| match alpha {
            Some(alpha) => I::float_mul(addend, as_matrix::<I>(alpha)),
            None => addend,
        };
        if gpu_inner::<I>() {
            let addend = scaled(addend, alpha);
            return norm_keeping_rows::<I>(x, Some(addend), gamma, beta, eps);
        }
        let params = (&gamma, beta.as_ref());
        if let Some(sum) = add_norm_kernel::<I>(&mut x, (&addend, alpha.as_ref()), params, eps) {
            return (x, (sum, gamma, None));
        }
        // A scaled addend the kernel does not take as it is (strided): its product first, then
        // the norm of the sum, as the scale's node and the norm's would have run.
        if alpha.is_some() {
            return self.forward::<I>([x, scaled(addend, alpha)], None, gamma, beta);
        }
        let sum = I::float_add(x, addend);
        let y = match beta {
            Some(beta) => layer_norm_inner::<I>(sum.clone(), gamma.clone(), beta, eps),
            None => rms_norm_inner::<I>(sum.clone(), gamma.clone(), eps),
        };
        (y, (sum, gamma, None))
    }
}

/// [`flex_kernels::add_norm`] (or `add_scaled_norm`, with `alpha`) over `x` where `I` is Flex
/// and the kernel takes the tensors: the sum it keeps. `None`, and `x` untouched, otherwise.
fn add_norm_kernel<I: Backend>(
    x: &mut FloatTensor<I>,
    (addend, alpha): (&FloatTensor<I>, Option<&FloatTensor<I>>),
    (gamma, beta): (&FloatTensor<I>, Option<&FloatTensor<I>>),
    eps: f64,
) -> Option<FloatTensor<I>> {
    // The optional inputs as Flex's where `I` is Flex (the only backend the kernel runs on).
    let [alpha, beta] = [alpha, beta].map(|t| t.and_then(flex::<I>));
    let [sum] = on_flex_over::<I, 2, 1>(x, [addend, gamma], |x, [addend, gamma]| {
        let sum = match alpha {
            Some(alpha) => flex_kernels::add_scaled_norm(x, [addend, alpha], gamma, beta, eps),
            None => flex_kernels::add_norm(x, addend, gamma, beta, eps),
        };
        sum.map(|sum| [sum])
    })?;
    Some(sum)
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
        let (y, state) = self.forward::<I>(inputs, None, g, Some(beta.primitive.clone()));
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
        let (y, state) = self.forward::<I>(inputs, None, g, None);
        record(backward, [&x, &addend, &gamma], state, y)
    }
}

/// A norm of a scaled sum, `x + h · α`: LayerNorm over `[x, h, α, γ, β]`, RMSNorm over
/// `[x, h, α, γ]`. Not on the GPU back ends, where the scale and the norm of the sum stay two
/// nodes (their kernels are laxc's own there already).
struct ScaledAddNorm {
    epsilon: f64,
}

impl ScaledAddNorm {
    /// The node's output and its record, for parents `[x, h, α, γ]` and β where there is one.
    fn run_over<I: Backend, const N: usize>(
        self,
        mut parents: [FloatTensor<Autodiff<I>>; N],
    ) -> FloatTensor<Autodiff<I>> {
        let [h, alpha] = [1, 2].map(|i| parents[i].primitive.clone());
        let x = take_buffer(&mut parents[0]);
        let [gamma, beta] = [3, 4].map(|i| parents.get(i).map(|p| p.primitive.clone()));
        let gamma = gamma.expect("a norm has γ");
        let epsilon = self.epsilon;
        let adding = AddNorm { epsilon };
        let scaled = Some(alpha.clone());
        let (y, state) = adding.forward::<I>([x, h.clone()], scaled, gamma, beta);
        let backward = ScaledNormBackward { epsilon };
        record(backward, parents.each_ref(), (state, [h, alpha]), y)
    }
}

impl Node<5> for ScaledAddNorm {
    fn run<I: Backend>(self, parents: [FloatTensor<Autodiff<I>>; 5]) -> FloatTensor<Autodiff<I>> {
        self.run_over(parents)
    }
}

impl Node<4> for ScaledAddNorm {
    fn run<I: Backend>(self, parents: [FloatTensor<Autodiff<I>>; 4]) -> FloatTensor<Autodiff<I>> {
        self.run_over(parents)
    }
}

/// Backward of [`ScaledAddNorm`]: the norm's gradients at the kept sum; the sum's gradient
/// to `x`, and through the scale to `h` and α; dγ and dβ. On Flex in f32 one kernel
/// (`flex_kernels::scaled_norm_backward`: the scale's gradients taken as each group of rows'
/// `dx` is written); else the norm's backward ([`kept_norm_gradients`]) and then the scale's
/// (`scale_gradients`). The values [`NormBackward`] and the scale's backward give, in the
/// same order (but for `dα`'s sum: its terms added in another order in the kernel).
#[derive(Debug)]
struct ScaledNormBackward {
    epsilon: f64,
}

impl<I: Backend, const N: usize> Backward<I, N> for ScaledNormBackward {
    /// The norm's state, and `[h, α]`.
    type State = (NormState<I>, [FloatTensor<I>; 2]);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (norm_state, [h, alpha]) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let parents = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        let centered = N == 5;
        let (dx, [dh, d_alpha], d_gamma, d_beta) =
            scaled_norm_gradients::<I>((norm_state, [h, alpha]), g, self.epsilon, centered);
        give::<I>(grads, parents[0], || dx);
        give::<I>(grads, parents[1], || dh);
        give::<I>(grads, parents[2], || d_alpha);
        give::<I>(grads, parents[3], || d_gamma);
        if let Some(d_beta) = d_beta {
            give::<I>(grads, parents[4], || d_beta);
        }
    }
}

/// The gradients `(dx, [dh, dα], dγ, dβ)` of `Norm(x + h · α)` from what its node kept and the
/// output gradient `g`: see [`ScaledNormBackward`].
#[allow(clippy::type_complexity)]
fn scaled_norm_gradients<I: Backend>(
    ((sum, gamma, r), [h, alpha]): (NormState<I>, [FloatTensor<I>; 2]),
    g: FloatTensor<I>,
    epsilon: f64,
    centered: bool,
) -> (
    FloatTensor<I>,
    [FloatTensor<I>; 2],
    FloatTensor<I>,
    Option<FloatTensor<I>>,
) {
    let mut g = g;
    if r.is_none() {
        let kernel = |g: &mut FlexTensor, [sum, gamma, h, alpha]: [&FlexTensor; 4]| {
            flex_kernels::scaled_norm_backward(sum, gamma, g, [h, alpha], epsilon, centered)
        };
        let inputs = [&sum, &gamma, &h, &alpha];
        if let Some([d_gamma, d_beta, dh, d_alpha]) =
            on_flex_over::<I, 4, 4>(&mut g, inputs, kernel)
        {
            let (d_gamma, d_beta) = as_vectors::<I>([d_gamma, d_beta], centered);
            // `g` now holds dx.
            return (g, [dh, d_alpha], d_gamma, d_beta);
        }
    }
    let (dx, d_gamma, d_beta) = kept_norm_gradients::<I>((sum, gamma, r), g, epsilon, centered);
    let gate = scale_gradients::<I>(h, alpha, dx.clone());
    (dx, gate, d_gamma, d_beta)
}
