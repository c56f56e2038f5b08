//! Ops with a backward pass of their own: the matrix product, σ, SiLU, GELU (exact and its tanh
//! form), RoPE, the swap of two middle axes, softmax (with an additive mask), cross-entropy,
//! dropout, LayerNorm and RMSNorm (also of a sum, for LaX pathways), SwiGLU, the linear gate's
//! product by a scalar, a tensor gate (`h · kron(G1, G0)`).
//!
//! Under autodiff, Burn 0.21 records a composed op as one graph node per primitive: a
//! LayerNorm is seven forward nodes and about twice as many backward passes, each a trip
//! through memory, the allocator and the thread pool, where PyTorch runs one kernel each way.
//! Here each op is one autodiff node: its forward runs on the inner backend and its backward
//! is the closed-form gradient. On Flex in f32 most of them run laxc's own kernels on Flex's
//! buffers (`flex_kernels`, `flex_gemm`); on other inner backends, the backend's ops.
//!
//! laxc's CPU autodiff backends (`Autodiff` over Flex, NdArray and Candle) take that path, and
//! the GPU ones (`Autodiff` over wgpu and CUDA) for the norms (`for_each_gpu_inner_backend`
//! says why not the products); any other backend (a plain one in evaluation and
//! generation) computes the composed
//! formula (`composed`) or the backend's own op for it (softmax, LayerNorm). The composed
//! formulas are also the reference the tests hold each node to, values and gradients alike
//! (tests/lowering.rs, "fused").

use super::attention::rope_composed;
use super::flex_gemm::{self, Order};
use super::flex_kernels;

mod add;
mod dropout;
mod join;
mod norm;
mod scale;
mod tensor_gate;
pub use add::lax_add;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{DType, Int, Shape, Tensor, TensorMetadata, TensorPrimitive};
pub use dropout::dropout;
pub use join::join_graphs;
pub use norm::{
    add_layer_norm, add_rms_norm, add_scaled_layer_norm, add_scaled_rms_norm, layer_norm, rms_norm,
};
pub use scale::scale;
use std::any::{Any, TypeId};
pub use tensor_gate::{factors_tensor_gate, kron, tensor_gate};

/// `Σ x²` of each tensor (a step's gradients: the clip's global norm), in f64, in the tensors'
/// order. On Flex in f32 each is read at once (`flex_kernels::sum_of_squares`, Flex's own sum
/// to the bit). The rest stay on the device until all are queued, then are read in one
/// transfer: on the GPU back ends in f32 as one op for all of them, whose kernels write each
/// tensor's partial sums (`cube_squares`), elsewhere `square().sum()` a tensor ([`read_sums`]).
/// On a GPU each read waits for the device, and each op the host registers costs it time.
pub fn sums_of_squares<B: Backend>(tensors: Vec<FloatTensor<B>>) -> Vec<f64> {
    let read_now = |t: &FloatTensor<B>| match t.shape().num_elements() {
        0 => Some(0.0),
        _ => flex::<B>(t)
            .and_then(flex_kernels::sum_of_squares)
            .map(f64::from),
    };
    let mut sums: Vec<Option<f64>> = tensors.iter().map(read_now).collect();
    let (places, on_device): (Vec<usize>, Vec<FloatTensor<B>>) = (tensors.into_iter())
        .enumerate()
        .filter(|(i, _)| sums[*i].is_none())
        .unzip();
    if !on_device.is_empty() {
        for (place, sum) in places.into_iter().zip(sums_on_device::<B>(on_device)) {
            sums[place] = Some(sum);
        }
    }
    sums.into_iter()
        .map(|s| s.expect("every tensor's sum is taken"))
        .collect()
}

/// [`sums_of_squares`] of tensors Flex's kernel does not take (none of them empty).
fn sums_on_device<B: Backend>(tensors: Vec<FloatTensor<B>>) -> Vec<f64> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let tensors = match cube_squares::sums_of_squares::<B>(tensors) {
        Ok(sums) => return sums,
        Err(tensors) => tensors,
    };
    let sums = (tensors.into_iter())
        .map(|t| {
            let n = t.shape().num_elements();
            float::<B, 1>(B::float_reshape(t, Shape::new([n])))
                .square()
                .sum()
        })
        .collect();
    read_sums(sums)
}

/// The sums of vectors' elements (of one dtype, on one device) in f64, each added in its
/// elements' order, read in one transfer (concatenated first), in their order. (The GPU back
/// ends' f32 sums never come here: `cube_squares` reads its partial sums from their buffers.)
fn read_sums<B: Backend>(sums: Vec<Tensor<B, 1>>) -> Vec<f64> {
    if sums.is_empty() {
        return Vec::new();
    }
    let lengths: Vec<usize> = sums.iter().map(|t| t.dims()[0]).collect();
    let all: Vec<f64> = Tensor::cat(sums, 0).into_data().iter::<f64>().collect();
    let mut at = 0;
    (lengths.into_iter())
        .map(|n| {
            at += n;
            all[at - n..at].iter().sum::<f64>()
        })
        .collect()
}

/// `scale · a · b` over the last two axes (the scale is 1 but for attention's scores, where it
/// is 1/√d). On Flex in f32, gemm writes the output directly, scale included (`flex_gemm`);
/// elsewhere, or with broadcast batch axes, the backend's matmul. Backward: `scale · g · bᵀ`
/// and `scale · aᵀ · g`, read through transposed views.
pub fn matmul<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    scale: f64,
) -> Tensor<B, D> {
    product_node(a, b, scale, false, Order::RowMajor)
}

/// [`matmul`] of attention's (batch, heads, rows, ·) operands, the product written on Flex in
/// f32 with its heads merged: the buffer of (batch, rows, heads, n), so that [`merge_heads`]
/// and the reshape to rows after it copy nothing (BENCHMARKS.md, attempt 89). The same values
/// as [`matmul`] on every backend.
pub fn matmul_merging_heads<B: Backend>(a: Tensor<B, 4>, b: Tensor<B, 4>) -> Tensor<B, 4> {
    product_node(a, b, 1.0, false, Order::MiddleAxesSwapped)
}

/// `scale · a · bᵀ` over the last two axes, for a `b` stored row by row (attention's keys, a
/// tied head's table), as [`matmul`]. The gradient of `b` comes out in `b`'s own layout: the
/// product of a transposed view gave it transposed, and the reshapes after it (the heads'
/// merge) then copied it element by element (2.9 % of a LLaMA step).
pub fn matmul_transposed<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    scale: f64,
) -> Tensor<B, D> {
    product_node(a, b, scale, true, Order::RowMajor)
}

/// [`matmul`] (`b_transposed` false) or [`matmul_transposed`], its output laid out in `order`
/// on Flex: one node where the batch axes match, else Burn's product.
fn product_node<B: Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    scale: f64,
    b_transposed: bool,
    order: Order,
) -> Tensor<B, D> {
    let composed = |a, b: Tensor<B, D>| match b_transposed {
        true => composed::matmul(a, b.swap_dims(D - 2, D - 1), scale),
        false => composed::matmul(a, b, scale),
    };
    if a.dims()[..D - 2] != b.dims()[..D - 2] {
        return composed(a, b);
    }
    let inputs = [a, b].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 2>(
        MatMul {
            scale,
            b_transposed,
            order,
        },
        inputs,
    ) {
        Ok(out) => float(out),
        Err([a, b]) => composed(float(a), float(b)),
    }
}

/// Each row's cross-entropy, `logsumexp(x) − x[target]`, as a (rows, 1) column. Targets
/// must be valid class indices (masked rows are clamped by the caller).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    let rows = targets.dims()[0];
    let targets = targets.reshape([rows, 1]);
    let op = CrossEntropy {
        targets: Box::new(targets.clone().into_primitive()),
    };
    match as_node::<B, _, 1>(op, [logits.into_primitive().tensor()]) {
        Ok(out) => float(out),
        Err([logits]) => composed::cross_entropy(float(logits), targets),
    }
}

/// σ(x) = 1 / (1 + e^(−x)). The node's forward is the backend's own sigmoid on f32 (one pass
/// on Flex, overflow-free); on other dtypes the clamped formula, because Burn's default
/// computes through f32 (1e-4 off finite differences in f64). Its backward is σ(1 − σ) from
/// the output, where the composed formula was five nodes each way.
pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match as_node::<B, _, 1>(Sigmoid, [x.into_primitive().tensor()]) {
        Ok(out) => float(out),
        Err([x]) => composed::sigmoid(float(x)),
    }
}

/// SiLU, `x σ(x)` (SwiGLU's gate). On Flex in f32 one vectorized pass each way
/// (`flex_kernels`); elsewhere σ from the inner backend. Its backward is `g σ (1 + x (1 − σ))`.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match as_node::<B, _, 1>(ActivationNode(Silu), [x.into_primitive().tensor()]) {
        Ok(out) => float(out),
        Err([x]) => composed::silu(float(x)),
    }
}

/// GELU with the exact Φ, `x (1 + erf(x/√2)) / 2`. On Flex in f32, the node's forward and
/// backward are one vectorized pass each (`flex_kernels`); elsewhere the formula from the inner
/// backend's ops. Its backward is `g (Φ(x) + x φ(x))`.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match as_node::<B, _, 1>(ActivationNode(Gelu), [x.into_primitive().tensor()]) {
        Ok(out) => float(out),
        Err([x]) => composed::gelu(float(x)),
    }
}

/// GELU's tanh approximation (GPT-2's `gelu_new`), `x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
/// On Flex in f32 one vectorized pass each way (`flex_kernels::gelu_tanh`, as `x σ(2u)`), where
/// the composed form makes seven passes and calls `powf` and `tanh` element by element;
/// elsewhere `x σ(2u)` from the inner backend's σ. Its backward is
/// `g (s + x s (1 − s) 2u′)`, `s = σ(2u)`, `u′ = √(2/π) (1 + 3 · 0.044715 x²)`.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    match as_node::<B, _, 1>(ActivationNode(GeluTanh), [x.into_primitive().tensor()]) {
        Ok(out) => float(out),
        Err([x]) => composed::gelu_tanh(float(x)),
    }
}

/// SwiGLU's `silu(gate) ⊙ up` (`passes::fuse_swiglu`). On Flex in f32 one pass each way
/// (`flex_kernels::swiglu`), where the composed form makes two forward (keeping `silu(gate)`)
/// and three backward; elsewhere SiLU from the inner backend's σ. Backward:
/// `d gate = g ⊙ up ⊙ σ (1 + gate (1 − σ))` and `d up = g ⊙ silu(gate)`, with σ = σ(gate).
pub fn swiglu<B: Backend, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    let inputs = [gate, up].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 2>(SwiGlu, inputs) {
        Ok(out) => float(out),
        Err([gate, up]) => composed::silu(float::<B, D>(gate)) * float(up),
    }
}

/// A 3-D or 4-D tensor with axes 1 and 2 swapped (attention's heads and positions, the
/// tensor-train cores' and tensor gates' contractions): on Flex a contiguous copy each way
/// (`flex_kernels`), so that the reshape after it is free, or a view where that is already
/// contiguous; elsewhere a view, as `swap_dims`.
pub fn swap_middle_axes<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    swap_node(x, SwapMiddleAxes::default())
}

/// Attention's (batch, rows, heads, d) as (batch, heads, rows, d) for products alone to read:
/// on Flex in f32 a view, which gemm reads in place, and whose gradient the products write in
/// the rows' own order, so that its swap back is a view too (BENCHMARKS.md, attempt 89);
/// elsewhere [`swap_middle_axes`].
pub fn split_heads_for_products<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let view = SwapMiddleAxes {
        view_forward: true,
        view_backward: false,
    };
    swap_node(x, view)
}

/// Attention's (batch, heads, rows, d) back as (batch, rows, heads, d): free for the output of
/// [`matmul_merging_heads`], a copy for any other on Flex; the gradient's swap back a view,
/// which the product's backward reads in place.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let view = SwapMiddleAxes {
        view_forward: false,
        view_backward: true,
    };
    swap_node(x, view)
}

fn swap_node<B: Backend, const D: usize>(x: Tensor<B, D>, op: SwapMiddleAxes) -> Tensor<B, D> {
    assert!(D == 3 || D == 4, "the middle axes of a 3-D or 4-D tensor");
    match as_node::<B, _, 1>(op, [x.into_primitive().tensor()]) {
        Ok(out) => float(out),
        Err([x]) => float::<B, D>(x).swap_dims(1, 2),
    }
}

/// Rotate-half RoPE of (batch·seq, hidden) rows with `attention::rope_tables`' (seq, hidden)
/// tables: forward `x·cos + P(x)·sin`, backward `g·cos + P(g·sin)`, with `P` the swap of each
/// head's halves (its own inverse). On Flex in f32 one pass each way that reads the tables
/// by position (`flex_kernels::rope`), where the composed form repeats them over the batch
/// and makes seven passes; on the GPU back ends in f32 one kernel each way (`cube_rope`);
/// elsewhere `attention::rope_composed`.
pub fn rope<B: Backend>(
    x: Tensor<B, 2>,
    heads: usize,
    [cos, sin]: [&Tensor<B, 2>; 2],
) -> Tensor<B, 2> {
    let inputs = [x, cos.clone(), sin.clone()].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 3>(Rope { heads }, inputs) {
        Ok(out) => float(out),
        Err([x, cos, sin]) => rope_composed(float(x), heads, [float(cos), float(sin)], false),
    }
}

/// [`rope`] with its output split by head for attention's products, `(batch, heads, seq,
/// head)`, where training runs on a GPU back end in f32: one kernel each way that writes (and
/// in the backward pass reads) that layout, where RoPE then the split were two launches and the
/// products copied the split's view again (BENCHMARKS.md, attempt 96). Elsewhere `x` back, for
/// [`rope`] and the split after it.
pub fn rope_by_heads<B: Backend>(
    x: Tensor<B, 2>,
    heads: usize,
    [cos, sin]: [&Tensor<B, 2>; 2],
) -> Result<Tensor<B, 4>, Tensor<B, 2>> {
    if !trains_on_gpu::<B>() || x.dtype() != DType::F32 {
        return Err(x);
    }
    let inputs = [x, cos.clone(), sin.clone()].map(|t| t.into_primitive().tensor());
    match as_node::<B, _, 3>(RopeByHeads { heads }, inputs) {
        Ok(out) => Ok(float(out)),
        Err([x, ..]) => Err(float(x)),
    }
}

/// Softmax over the last dimension. On Flex in f32 one pass a row each way with a vectorized
/// `exp` (`flex_kernels::softmax`); on the GPU back ends in f32 one kernel each way
/// (`cube_softmax`); elsewhere the backend's softmax.
pub fn softmax<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    scaled_softmax(x, None, 1.0)
}

/// `softmax(x + bias)` over the last dimension, the bias a constant (attention's causal mask):
/// on Flex and the GPU back ends the addition happens inside the softmax's pass instead of a
/// pass of its own.
pub fn softmax_with_bias<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    bias: &Tensor<B, D>,
) -> Tensor<B, D> {
    scaled_softmax(x, Some(bias), 1.0)
}

/// Whether [`scaled_softmax`] scales its input inside its own kernel for tensors of `dtype`:
/// where training runs on a GPU back end in f32. Attention's scores are scaled there, not by
/// their product, whose scale was an element-wise launch a layer each way (BENCHMARKS.md,
/// attempts 97 and 98); on the CPU its product scales them for free.
pub fn softmax_scales<B: Backend>(dtype: DType) -> bool {
    trains_on_gpu::<B>() && dtype == DType::F32
}

/// `softmax(scale · x + bias)` over the last dimension, the bias (if any) a constant: one node
/// as [`softmax_with_bias`], its backward `scale · y ⊙ (g − Σ g ⊙ y)`.
pub fn scaled_softmax<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    bias: Option<&Tensor<B, D>>,
    scale: f64,
) -> Tensor<B, D> {
    let x = x.into_primitive().tensor();
    let op = Softmax { dim: D - 1, scale };
    let unfused = match bias {
        Some(bias) => {
            let inputs = [x, bias.clone().into_primitive().tensor()];
            as_node::<B, _, 2>(op, inputs).map_err(|[x, _]| x)
        }
        None => as_node::<B, _, 1>(op, [x]).map_err(|[x]| x),
    };
    match unfused {
        Ok(out) => float(out),
        Err(x) => composed::softmax(float(x), bias, scale),
    }
}

/// The same formulas composed of Burn's ops: what a backend without the nodes runs, and the
/// reference for the nodes' values and gradients. γ and β come as (1, width) rows.
pub mod composed {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Int, Tensor};

    pub fn matmul<B: Backend, const D: usize>(
        a: Tensor<B, D>,
        b: Tensor<B, D>,
        scale: f64,
    ) -> Tensor<B, D> {
        let product = a.matmul(b);
        if scale == 1.0 {
            product
        } else {
            product.mul_scalar(scale)
        }
    }

    /// `softmax(scale · x + bias)` over the last dimension.
    pub fn softmax<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        bias: Option<&Tensor<B, D>>,
        scale: f64,
    ) -> Tensor<B, D> {
        let x = if scale == 1.0 { x } else { x.mul_scalar(scale) };
        let x = match bias {
            Some(bias) => x + bias.clone(),
            None => x,
        };
        burn::tensor::activation::softmax(x, D - 1)
    }

    /// With x clamped to ±80 so that e^(−x) stays finite and the backward pass never meets
    /// ∞ · 0 (σ(±80) is 0 or 1 in f32 anyway).
    pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        (x.clamp(-80.0, 80.0).neg().exp() + 1.0).recip()
    }

    pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        x.clone() * sigmoid(x)
    }

    pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        (x.clone().mul_scalar(std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0).mul_scalar(0.5) * x
    }

    pub fn cross_entropy<B: Backend>(
        logits: Tensor<B, 2>,
        targets: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let max = logits.clone().detach().max_dim(1);
        let shifted = logits - max;
        let lse = shifted.clone().exp().sum_dim(1).log();
        lse - shifted.gather(1, targets)
    }

    pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
        let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
            .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
        (inner.tanh() + 1.0).mul_scalar(0.5) * x
    }

    pub fn layer_norm<B: Backend>(
        x: Tensor<B, 2>,
        gamma: Tensor<B, 2>,
        beta: Tensor<B, 2>,
        epsilon: f64,
    ) -> Tensor<B, 2> {
        let centered = x.clone() - x.mean_dim(1);
        let var = centered.clone().square().mean_dim(1);
        centered / (var + epsilon).sqrt() * gamma + beta
    }

    pub fn rms_norm<B: Backend>(
        x: Tensor<B, 2>,
        gamma: Tensor<B, 2>,
        epsilon: f64,
    ) -> Tensor<B, 2> {
        let rms = (x.clone().square().mean_dim(1) + epsilon).sqrt();
        x / rms * gamma
    }

    /// `kron(g1, g0)`: the broadcast product `(s0, 1, t0, 1) · (1, s1, 1, t1)` folded to two
    /// axes.
    pub fn kron<B: Backend>(g1: Tensor<B, 2>, g0: Tensor<B, 2>) -> Tensor<B, 2> {
        let ([s0, t0], [s1, t1]) = (g1.dims(), g0.dims());
        let product = g1.reshape([s0, 1, t0, 1]) * g0.reshape([1, s1, 1, t1]);
        product.reshape([s0 * s1, t0 * t1])
    }
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// An op that is one autodiff node over `N` float inputs, on any inner backend `I`.
trait Node<const N: usize> {
    /// Whether the GPU back ends run it as a node too: so far the norms, whose node there keeps
    /// the forward pass's row statistics for its backward (`norm::norm_keeping_rows`), RoPE,
    /// one kernel each way there (`cube_rope`), the softmax, one kernel each way there
    /// (`cube_softmax`), the swap of the middle axes, a copy each way there (`cube_layout`),
    /// a tensor gate's Kronecker product, one kernel each way there (`cube_kron`), and the
    /// join of autodiff graphs, which launches nothing (`join`). Never the products:
    /// on a GPU a product keeps to `product::rows_times`'s shapes, which avoid the cubecl matmul
    /// kernel known to be wrong.
    const ON_GPU: bool = false;

    fn run<I: Backend>(self, inputs: [FloatTensor<Autodiff<I>>; N]) -> FloatTensor<Autodiff<I>>;
}

/// `value` as a `U` when it is one (`T` and `U` the same type), else `value` back.
fn same_type<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    if TypeId::of::<T>() != TypeId::of::<U>() {
        return Err(value);
    }
    let boxed: Box<dyn Any> = Box::new(value);
    Ok(*boxed.downcast::<U>().expect("the type was checked"))
}

/// Calls `$then!(I)` for each CPU backend `I` whose `Autodiff<I>` laxc trains on (and the
/// tests' f64 one): the one list of backends that have the nodes.
macro_rules! for_each_inner_backend {
    ($then:ident) => {
        $then!(burn::backend::Flex);
        $then!(burn::backend::NdArray);
        // The f64 backend of the formula and finite-difference tests, so that they check the
        // nodes themselves.
        $then!(burn::backend::NdArray<f64>);
        $then!(burn::backend::Candle);
        // The GPU back ends have the nodes whose `ON_GPU` says so (`for_each_gpu_inner_backend`).
    };
}

/// The GPU back ends' inner backends, for the nodes with `ON_GPU`: on them a composed norm is
/// about 24 kernels a step, recorded op by op (a LaX pathway's add-norm doubled an H100 step:
/// BENCHMARKS.md "GPU"). Not their products: with laxc's matmul node on wgpu the grouped-query
/// spec's embedding gradient came out 0.126 of its norm off Flex's in two of three runs of
/// tests/wgpu.rs, the product of an 8 × 8 weight by autotune's wrong kernel (`product.rs`).
/// Each comes with the cubecl runtime and bool element of its `CubeBackend`, for laxc's own
/// kernels on it (`cube_norm`).
macro_rules! for_each_gpu_inner_backend {
    ($then:ident) => {
        #[cfg(feature = "wgpu")]
        $then!(burn::backend::Wgpu, burn::backend::wgpu::WgpuRuntime, u32);
        #[cfg(feature = "cuda")]
        $then!(burn::backend::Cuda, cubecl::cuda::CudaRuntime, u8);
    };
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_adamw;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use cube_adamw::adamw_step as gpu_adamw_step;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_kron;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_layout;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_norm;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_op;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_read;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_rope;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_softmax;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube_squares;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub use cube_op::launches as gpu_kernel_launches;

/// Runs `op` as one node when `B` is one of laxc's autodiff backends (whose tensors are then
/// `Autodiff<I>`'s own); otherwise gives the inputs back for the composed formula.
#[allow(deprecated)] // burn-candle, one of the CPU backends laxc offers
fn as_node<B: Backend, Op: Node<N>, const N: usize>(
    op: Op,
    inputs: [FloatTensor<B>; N],
) -> Result<FloatTensor<B>, [FloatTensor<B>; N]> {
    let mut inputs = Some(inputs);
    macro_rules! try_on {
        ($inner:ty $(, $_cube:ty)*) => {
            if TypeId::of::<B>() == TypeId::of::<Autodiff<$inner>>() {
                let own =
                    same_type::<_, [FloatTensor<Autodiff<$inner>>; N]>(inputs.take().unwrap());
                let out =
                    op.run::<$inner>(own.unwrap_or_else(|_| unreachable!("B is Autodiff<I>")));
                return Ok(same_type(out).unwrap_or_else(|_| unreachable!("B is Autodiff<I>")));
            }
        };
    }
    for_each_inner_backend!(try_on);
    if Op::ON_GPU {
        for_each_gpu_inner_backend!(try_on);
    }
    Err(inputs.take().expect("not taken"))
}

/// Whether `B` runs all of these ops as nodes of their own, products included (the tests check
/// that CPU training does); the GPU back ends run only the norms as nodes.
#[allow(deprecated)] // burn-candle
pub fn has_nodes<B: Backend>() -> bool {
    macro_rules! is {
        ($inner:ty $(, $_cube:ty)*) => {
            if TypeId::of::<B>() == TypeId::of::<Autodiff<$inner>>() {
                return true;
            }
        };
    }
    for_each_inner_backend!(is);
    false
}

/// Whether `B` trains on a GPU back end: the autodiff backend over one of its inner backends.
/// Always false in a build without one.
#[cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(unused_macros, clippy::extra_unused_type_parameters)
)]
fn trains_on_gpu<B: Backend>() -> bool {
    macro_rules! is {
        ($inner:ty $(, $_cube:ty)*) => {
            if TypeId::of::<B>() == TypeId::of::<Autodiff<$inner>>() {
                return true;
            }
        };
    }
    for_each_gpu_inner_backend!(is);
    false
}

/// Whether `I` is the inner backend of a GPU back end (its nodes are those with `ON_GPU`).
/// Always false in a build without one (where the list is empty and `I` unread).
#[cfg_attr(
    not(any(feature = "wgpu", feature = "cuda")),
    allow(unused_macros, clippy::extra_unused_type_parameters)
)]
fn gpu_inner<I: Backend>() -> bool {
    macro_rules! is {
        ($inner:ty $(, $_cube:ty)*) => {
            if TypeId::of::<I>() == TypeId::of::<$inner>() {
                return true;
            }
        };
    }
    for_each_gpu_inner_backend!(is);
    false
}

/// Registers `grad` for `parent` when it takes gradients.
fn give<I: Backend>(
    grads: &mut Gradients,
    parent: Option<NodeId>,
    grad: impl FnOnce() -> FloatTensor<I>,
) {
    if let Some(id) = parent {
        grads.register::<I>(id, grad());
    }
}

/// A (rows, width) tensor's sum over its rows, as a (1, width) row.
fn column_sums<I: Backend>(t: FloatTensor<I>) -> FloatTensor<I> {
    I::float_sum_dim(t, 0)
}

fn mean_last<I: Backend>(t: FloatTensor<I>) -> FloatTensor<I> {
    let last = t.shape().num_dims() - 1;
    I::float_mean_dim(t, last)
}

/// 1 / √(v + ε).
fn inverse_root<I: Backend>(v: FloatTensor<I>, epsilon: f64) -> FloatTensor<I> {
    I::float_recip(I::float_sqrt(I::float_add_scalar(v, epsilon.into())))
}

struct CrossEntropy {
    /// The (rows, 1) targets: the backend's own int tensor, whose type is known once `I` is.
    targets: Box<dyn Any>,
}

/// Backward: `(softmax(x) − onehot(target)) · g`, from the saved logits and each row's
/// `logsumexp`: on Flex one pass written over the logits (`flex_kernels::cross_entropy_backward`),
/// elsewhere `exp(x − logsumexp)` and a scatter of `−g` at the targets.
#[derive(Debug)]
struct CrossEntropyBackward;

impl<I: Backend> Backward<I, 1> for CrossEntropyBackward {
    type State = (FloatTensor<I>, FloatTensor<I>, IntTensor<I>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (mut x, lse, targets) = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |g| {
            let kernel = |x: &mut FlexTensor, [lse, g]: [&FlexTensor; 2]| {
                let targets = (&targets as &dyn Any).downcast_ref::<FlexTensor>()?;
                flex_kernels::cross_entropy_backward(x, lse, targets, g).map(none)
            };
            if on_flex_over::<I, 2, 0>(&mut x, [&lse, &g], kernel).is_some() {
                return x;
            }
            let softmax = I::float_exp(I::float_sub(x, lse));
            I::float_scatter_add(
                1,
                I::float_mul(softmax, g.clone()),
                targets,
                I::float_neg(g),
            )
        });
    }
}

impl Node<1> for CrossEntropy {
    fn run<I: Backend>(self, [x]: [FloatTensor<Autodiff<I>>; 1]) -> FloatTensor<Autodiff<I>> {
        let targets = *self
            .targets
            .downcast::<IntTensor<I>>()
            .expect("targets of the logits' backend");
        let [loss, lse] = cross_entropy_inner::<I>(x.primitive.clone(), targets.clone());
        record(
            CrossEntropyBackward,
            [&x],
            (x.primitive.clone(), lse, targets),
            loss,
        )
    }
}

/// Each row's loss and `logsumexp(x)`, as (rows, 1) columns: Flex's one-pass kernel where it
/// takes them, else the backend's ops (`logsumexp` from the row's maximum).
fn cross_entropy_inner<I: Backend>(
    x: FloatTensor<I>,
    targets: IntTensor<I>,
) -> [FloatTensor<I>; 2] {
    let kernel = |[x]: [&FlexTensor; 1]| {
        let targets = (&targets as &dyn Any).downcast_ref::<FlexTensor>()?;
        flex_kernels::cross_entropy(x, targets)
    };
    if let Some(both) = on_flex_many::<I, 1, 2>([&x], kernel) {
        return both;
    }
    let max = I::float_max_dim(x.clone(), 1);
    let sum = I::float_sum_dim(I::float_exp(I::float_sub(x.clone(), max.clone())), 1);
    let lse = I::float_add(I::float_log(sum), max);
    let picked = I::float_gather(1, x, targets);
    [I::float_sub(lse.clone(), picked), lse]
}

struct Sigmoid;

#[derive(Debug)]
struct SigmoidBackward;

impl<I: Backend> Backward<I, 1> for SigmoidBackward {
    type State = FloatTensor<I>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |g| I::sigmoid_backward(y, g));
    }
}

/// σ on the inner backend: its own op in f32 (one pass on Flex), the clamped formula in
/// other dtypes (Burn's default computes through f32).
fn sigmoid_inner<I: Backend>(x: FloatTensor<I>) -> FloatTensor<I> {
    match x.dtype() {
        DType::F32 => I::sigmoid(x),
        _ => {
            let clamped = I::float_clamp(x, (-80.0).into(), 80.0.into());
            let e = I::float_exp(I::float_neg(clamped));
            I::float_recip(I::float_add_scalar(e, 1.0.into()))
        }
    }
}

impl Node<1> for Sigmoid {
    fn run<I: Backend>(self, [x]: [FloatTensor<Autodiff<I>>; 1]) -> FloatTensor<Autodiff<I>> {
        let y = sigmoid_inner::<I>(x.primitive.clone());
        record(SigmoidBackward, [&x], y.clone(), y)
    }
}

/// An element-wise activation whose backward pass needs its input only: its Flex kernels, and
/// its formula from any backend's ops for everything else.
trait Activation: Send + Sync + std::fmt::Debug + 'static {
    fn flex(x: &FlexTensor) -> Option<FlexTensor>;
    /// `g` times the derivative at `x`, written over `g`; `None` (`g` untouched) where the
    /// kernel does not take them.
    fn flex_backward(x: &FlexTensor, g: &mut FlexTensor) -> Option<()>;
    fn forward<I: Backend>(x: FloatTensor<I>) -> FloatTensor<I>;
    /// `g` times the derivative at `x`.
    fn backward<I: Backend>(x: FloatTensor<I>, g: FloatTensor<I>) -> FloatTensor<I>;
}

/// SiLU, `x σ(x)`; its derivative `σ (1 + x (1 − σ))`.
#[derive(Debug)]
struct Silu;

impl Activation for Silu {
    fn flex(x: &FlexTensor) -> Option<FlexTensor> {
        flex_kernels::silu(x)
    }

    fn flex_backward(x: &FlexTensor, g: &mut FlexTensor) -> Option<()> {
        flex_kernels::silu_backward(x, g)
    }

    fn forward<I: Backend>(x: FloatTensor<I>) -> FloatTensor<I> {
        I::float_mul(x.clone(), sigmoid_inner::<I>(x))
    }

    fn backward<I: Backend>(x: FloatTensor<I>, g: FloatTensor<I>) -> FloatTensor<I> {
        let s = sigmoid_inner::<I>(x.clone());
        let one_minus = I::float_add_scalar(I::float_neg(s.clone()), 1.0.into());
        let slope = I::float_add_scalar(I::float_mul(x, one_minus), 1.0.into());
        I::float_mul(g, I::float_mul(s, slope))
    }
}

/// GELU, `x Φ(x)`; its derivative `Φ(x) + x φ(x)`, `φ(x) = e^(−x²/2) / √(2π)`.
#[derive(Debug)]
struct Gelu;

impl Activation for Gelu {
    fn flex(x: &FlexTensor) -> Option<FlexTensor> {
        flex_kernels::gelu(x)
    }

    fn flex_backward(x: &FlexTensor, g: &mut FlexTensor) -> Option<()> {
        flex_kernels::gelu_backward(x, g)
    }

    fn forward<I: Backend>(x: FloatTensor<I>) -> FloatTensor<I> {
        I::float_mul(x.clone(), normal_cdf::<I>(x))
    }

    fn backward<I: Backend>(x: FloatTensor<I>, g: FloatTensor<I>) -> FloatTensor<I> {
        let cdf = normal_cdf::<I>(x.clone());
        let square = I::float_mul(x.clone(), x.clone());
        let density = I::float_mul_scalar(
            I::float_exp(I::float_mul_scalar(square, (-0.5).into())),
            (1.0 / (2.0 * std::f64::consts::PI).sqrt()).into(),
        );
        I::float_mul(g, I::float_add(cdf, I::float_mul(x, density)))
    }
}

/// GELU's tanh approximation as `x σ(2u)`, `u = √(2/π) (x + 0.044715 x³)`; its derivative
/// `s + x s (1 − s) 2u′` with `s = σ(2u)`, `u′ = √(2/π) (1 + 3 · 0.044715 x²)`.
#[derive(Debug)]
struct GeluTanh;

impl GeluTanh {
    const SCALE: f64 = 0.797_884_560_802_865_4;
    const CUBIC: f64 = 0.044715;

    /// `2u` and `2u′` from the backend's ops.
    fn doubled<I: Backend>(x: FloatTensor<I>) -> [FloatTensor<I>; 2] {
        let square = I::float_mul(x.clone(), x.clone());
        let cubic =
            I::float_mul_scalar(I::float_mul(square.clone(), x.clone()), Self::CUBIC.into());
        let u2 = I::float_mul_scalar(I::float_add(x, cubic), (2.0 * Self::SCALE).into());
        let slope = I::float_add_scalar(
            I::float_mul_scalar(square, (3.0 * Self::CUBIC).into()),
            1.0.into(),
        );
        [u2, I::float_mul_scalar(slope, (2.0 * Self::SCALE).into())]
    }
}

impl Activation for GeluTanh {
    fn flex(x: &FlexTensor) -> Option<FlexTensor> {
        flex_kernels::gelu_tanh(x)
    }

    fn flex_backward(x: &FlexTensor, g: &mut FlexTensor) -> Option<()> {
        flex_kernels::gelu_tanh_backward(x, g)
    }

    fn forward<I: Backend>(x: FloatTensor<I>) -> FloatTensor<I> {
        let [u2, _] = Self::doubled::<I>(x.clone());
        I::float_mul(x, sigmoid_inner::<I>(u2))
    }

    fn backward<I: Backend>(x: FloatTensor<I>, g: FloatTensor<I>) -> FloatTensor<I> {
        let [u2, du2] = Self::doubled::<I>(x.clone());
        let s = sigmoid_inner::<I>(u2);
        let one_minus = I::float_add_scalar(I::float_neg(s.clone()), 1.0.into());
        let spread = I::float_mul(I::float_mul(x, s.clone()), I::float_mul(one_minus, du2));
        I::float_mul(g, I::float_add(s, spread))
    }
}

/// Φ(x) = (1 + erf(x/√2)) / 2 from the backend's ops.
fn normal_cdf<I: Backend>(x: FloatTensor<I>) -> FloatTensor<I> {
    let scaled = I::float_mul_scalar(x, std::f64::consts::FRAC_1_SQRT_2.into());
    I::float_mul_scalar(
        I::float_add_scalar(I::float_erf(scaled), 1.0.into()),
        0.5.into(),
    )
}

/// An activation as one node: the Flex kernel where it applies, else the formula.
struct ActivationNode<A>(A);

#[derive(Debug)]
struct ActivationBackward<A>(A);

impl<I: Backend, A: Activation> Backward<I, 1> for ActivationBackward<A> {
    type State = FloatTensor<I>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |mut g| {
            match on_flex_over::<I, 1, 0>(&mut g, [&x], |g, [x]| A::flex_backward(x, g).map(none)) {
                Some([]) => g,
                None => A::backward::<I>(x, g),
            }
        });
    }
}

impl<A: Activation> Node<1> for ActivationNode<A> {
    fn run<I: Backend>(self, [x]: [FloatTensor<Autodiff<I>>; 1]) -> FloatTensor<Autodiff<I>> {
        let y = on_flex::<I, 1>([&x.primitive], |[x]| A::flex(x))
            .unwrap_or_else(|| A::forward::<I>(x.primitive.clone()));
        record(ActivationBackward(self.0), [&x], x.primitive.clone(), y)
    }
}

/// `y` as the output of one autodiff node over `parents`, whose backward pass gets `state`.
fn record<I: Backend, Op: Backward<I, N>, const N: usize>(
    backward: Op,
    parents: [&FloatTensor<Autodiff<I>>; N],
    state: Op::State,
    y: FloatTensor<I>,
) -> FloatTensor<Autodiff<I>> {
    let nodes = parents.map(|p| p.node.clone());
    match backward
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

/// A Flex kernel's result when `I` is Flex and the kernel takes these tensors (contiguous
/// f32); `None` otherwise, for the caller to compose the formula.
fn on_flex<I: Backend, const N: usize>(
    inputs: [&FloatTensor<I>; N],
    kernel: impl FnOnce([&FlexTensor; N]) -> Option<FlexTensor>,
) -> Option<FloatTensor<I>> {
    let [out] = on_flex_many::<I, N, 1>(inputs, |inputs| kernel(inputs).map(|out| [out]))?;
    Some(out)
}

/// [`on_flex`] for a kernel with `M` outputs.
pub(crate) fn on_flex_many<I: Backend, const N: usize, const M: usize>(
    inputs: [&FloatTensor<I>; N],
    kernel: impl FnOnce([&FlexTensor; N]) -> Option<[FlexTensor; M]>,
) -> Option<[FloatTensor<I>; M]> {
    if TypeId::of::<I>() != TypeId::of::<Flex>() {
        return None;
    }
    let own = inputs.map(|t| flex::<I>(t).expect("I is Flex"));
    let out = kernel(own)?;
    Some(out.map(|t| same_type(t).unwrap_or_else(|_| unreachable!("I is Flex"))))
}

/// [`on_flex_many`] for a kernel that writes over its first input `target` (`flex_kernels`'
/// in-place kernels); `None`, and `target` untouched, where `I` is not Flex or the kernel does
/// not take these tensors.
pub(crate) fn on_flex_over<I: Backend, const N: usize, const M: usize>(
    target: &mut FloatTensor<I>,
    inputs: [&FloatTensor<I>; N],
    kernel: impl FnOnce(&mut FlexTensor, [&FlexTensor; N]) -> Option<[FlexTensor; M]>,
) -> Option<[FloatTensor<I>; M]> {
    let target = flex_mut::<I>(target)?;
    let own = inputs.map(|t| flex::<I>(t).expect("I is Flex"));
    let out = kernel(target, own)?;
    Some(out.map(|t| same_type(t).unwrap_or_else(|_| unreachable!("I is Flex"))))
}

/// `t` as the Flex tensor it is where `I` is Flex.
fn flex<I: Backend>(t: &FloatTensor<I>) -> Option<&FlexTensor> {
    (t as &dyn Any).downcast_ref::<FlexTensor>()
}

/// [`flex`], to write over.
pub(crate) fn flex_mut<I: Backend>(t: &mut FloatTensor<I>) -> Option<&mut FlexTensor> {
    (t as &mut dyn Any).downcast_mut::<FlexTensor>()
}

/// No outputs besides the one written over (an in-place kernel's `()` for [`on_flex_over`]).
fn none<T>((): ()) -> [T; 0] {
    []
}

/// The buffer of `x`, taken out of its autodiff tensor for a kernel to write its output over:
/// an input the node reads last (a latent, attention's scores, q or k before RoPE), so that
/// nothing else holds it. The tensor keeps its node for `record`, and an empty stand-in that
/// is never read.
fn take_buffer<I: Backend>(x: &mut FloatTensor<Autodiff<I>>) -> FloatTensor<I> {
    let device = I::float_device(&x.primitive);
    let empty = I::float_empty(Shape::new([0]), &device, x.primitive.dtype().into());
    std::mem::replace(&mut x.primitive, empty)
}

struct MatMul {
    scale: f64,
    /// The product is `a · bᵀ` (`matmul_transposed`).
    b_transposed: bool,
    /// How Flex lays out the output.
    order: Order,
}

/// The product on the inner backend: gemm on Flex's buffers where it applies, else the
/// backend's matmul.
fn matmul_inner<I: Backend>(a: FloatTensor<I>, b: FloatTensor<I>, scale: f64) -> FloatTensor<I> {
    matmul_inner_in::<I>(a, b, scale, Order::RowMajor)
}

/// [`matmul_inner`], written in `order` on Flex.
fn matmul_inner_in<I: Backend>(
    a: FloatTensor<I>,
    b: FloatTensor<I>,
    scale: f64,
    order: Order,
) -> FloatTensor<I> {
    let product = |[a, b]: [&FlexTensor; 2]| flex_gemm::matmul_in(a, b, scale as f32, order);
    on_flex::<I, 2>([&a, &b], product).unwrap_or_else(|| {
        let product = I::float_matmul(a, b);
        if scale == 1.0 {
            product
        } else {
            I::float_mul_scalar(product, scale.into())
        }
    })
}

/// Backward, from the saved operands: `scale · g · bᵀ` and `scale · aᵀ · g`; for `a · bᵀ`,
/// `scale · g · b` and `scale · gᵀ · a` (in `b`'s layout). Each written in its operand's order
/// on Flex (attention's split heads': `flex_gemm::order_of`), and added to the gradient its
/// operand already has from another of its readers by gemm as it writes the product, where
/// that is the same sum ([`product_added`]); Burn's `register` adds it in a pass of its own.
#[derive(Debug)]
struct MatMulBackward {
    scale: f64,
    b_transposed: bool,
}

impl<I: Backend> Backward<I, 2> for MatMulBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        let orders = [&a, &b].map(|t| flex::<I>(t).map_or(Order::RowMajor, flex_gemm::order_of));
        let scale = self.scale;
        let g = grads.consume::<I>(&ops.node);
        let [lhs, rhs] = ops.parents;
        // The operands of each gradient's product (transposes are views).
        let (for_a, for_b) = match self.b_transposed {
            true => ([g.clone(), b], [I::float_transpose(g), a]),
            false => (
                [g.clone(), I::float_transpose(b)],
                [I::float_transpose(a), g],
            ),
        };
        for ((parent, [left, right]), order) in [(lhs, for_a), (rhs, for_b)].into_iter().zip(orders)
        {
            let Some(parent) = parent else { continue };
            // A stand-in tensor on the parent's node: Burn's `Gradients` takes a gradient out
            // by the tensor it belongs to.
            let mut key = <Autodiff<I> as FloatTensorOps<Autodiff<I>>>::float_empty(
                Shape::new([0]),
                &I::float_device(&left),
                left.dtype().into(),
            );
            key.node = parent.clone();
            let before = grads.remove::<I>(&key);
            let gradient = product_added::<I>(before, [left, right], scale, order);
            grads.register::<I>(parent.id, gradient);
        }
    }
}

/// `before + scale · left · right` (the product alone, in `order`, where there is no
/// `before`): added by gemm into `before`'s buffer where [`flex_gemm::matmul_add`] takes them
/// (the same bits as the add after the product), else the product and then the add, in
/// `Gradients::register`'s order.
fn product_added<I: Backend>(
    before: Option<FloatTensor<I>>,
    [left, right]: [FloatTensor<I>; 2],
    scale: f64,
    order: Order,
) -> FloatTensor<I> {
    let Some(mut sum) = before else {
        return matmul_inner_in::<I>(left, right, scale, order);
    };
    let added = on_flex_over::<I, 2, 0>(&mut sum, [&left, &right], |sum, [l, r]| {
        flex_gemm::matmul_add(sum, l, r, scale as f32).map(none)
    });
    match added {
        Some([]) => sum,
        None => I::float_add(matmul_inner::<I>(left, right, scale), sum),
    }
}

impl Node<2> for MatMul {
    fn run<I: Backend>(self, [a, b]: [FloatTensor<Autodiff<I>>; 2]) -> FloatTensor<Autodiff<I>> {
        let right = match self.b_transposed {
            true => I::float_transpose(b.primitive.clone()),
            false => b.primitive.clone(),
        };
        let y = matmul_inner_in::<I>(a.primitive.clone(), right, self.scale, self.order);
        let state = (a.primitive.clone(), b.primitive.clone());
        let backward = MatMulBackward {
            scale: self.scale,
            b_transposed: self.b_transposed,
        };
        record(backward, [&a, &b], state, y)
    }
}

struct Rope {
    heads: usize,
}

/// RoPE (or with `transposed` its transpose) on the inner backend: Flex's one-pass kernel
/// where it applies, a GPU back end's own kernel (`cube_rope`) where that does, else the
/// composed form.
fn rope_inner<I: Backend>(
    x: FloatTensor<I>,
    heads: usize,
    [cos, sin]: &[FloatTensor<I>; 2],
    transposed: bool,
) -> FloatTensor<I> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let x = match cube_rope::rope::<I>(x, heads, [cos, sin], transposed) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let mut x = x;
    let kernel = |x: &mut FlexTensor, [cos, sin]: [&FlexTensor; 2]| {
        flex_kernels::rope(x, [cos, sin], heads, transposed).map(none)
    };
    if on_flex_over::<I, 2, 0>(&mut x, [cos, sin], kernel).is_some() {
        return x;
    }
    let tables = [cos.clone(), sin.clone()].map(float);
    rope_composed::<I>(float(x), heads, tables, transposed)
        .into_primitive()
        .tensor()
}

/// Backward: the transpose, from the saved tables (constants: no gradient of their own).
#[derive(Debug)]
struct RopeBackward {
    heads: usize,
}

impl<I: Backend> Backward<I, 1> for RopeBackward {
    type State = [FloatTensor<I>; 2];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let tables = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |g| {
            rope_inner::<I>(g, self.heads, &tables, true)
        });
    }
}

impl Node<3> for Rope {
    const ON_GPU: bool = true;

    fn run<I: Backend>(
        self,
        [mut x, cos, sin]: [FloatTensor<Autodiff<I>>; 3],
    ) -> FloatTensor<Autodiff<I>> {
        let tables = [cos.primitive, sin.primitive];
        let y = rope_inner::<I>(take_buffer(&mut x), self.heads, &tables, false);
        record(RopeBackward { heads: self.heads }, [&x], tables, y)
    }
}

struct RopeByHeads {
    heads: usize,
}

/// RoPE of rows `x` split by head ([`rope_by_heads`]), or with `transposed` the input gradient
/// of that, from the output's gradient split by head back to rows: a GPU back end's kernel
/// (`cube_rope`) where it takes the tensors, else RoPE and the split as two steps.
fn rope_by_heads_inner<I: Backend>(
    x: FloatTensor<I>,
    heads: usize,
    tables: &[FloatTensor<I>; 2],
    transposed: bool,
) -> FloatTensor<I> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let x = match cube_rope::rope_by_heads::<I>(x, heads, [&tables[0], &tables[1]], transposed) {
        Ok(y) => return y,
        Err(x) => x,
    };
    let positions = tables[0].shape().dims::<2>()[0];
    if transposed {
        let [batch, heads, seq, head] = x.shape().dims::<4>();
        let rows = swap_middle_axes_inner::<I>(x, false);
        let rows = I::float_reshape(rows, Shape::new([batch * seq, heads * head]));
        return rope_inner::<I>(rows, heads, tables, true);
    }
    let [rows, width] = x.shape().dims::<2>();
    let y = rope_inner::<I>(x, heads, tables, false);
    let split = [rows / positions, positions, heads, width / heads];
    swap_middle_axes_inner::<I>(I::float_reshape(y, Shape::new(split)), false)
}

/// Backward: the transpose from the gradient split by head, from the saved tables.
#[derive(Debug)]
struct RopeByHeadsBackward {
    heads: usize,
}

impl<I: Backend> Backward<I, 1> for RopeByHeadsBackward {
    type State = [FloatTensor<I>; 2];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let tables = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |g| {
            rope_by_heads_inner::<I>(g, self.heads, &tables, true)
        });
    }
}

impl Node<3> for RopeByHeads {
    const ON_GPU: bool = true;

    fn run<I: Backend>(
        self,
        [x, cos, sin]: [FloatTensor<Autodiff<I>>; 3],
    ) -> FloatTensor<Autodiff<I>> {
        let tables = [cos.primitive, sin.primitive];
        let y = rope_by_heads_inner::<I>(x.primitive.clone(), self.heads, &tables, false);
        record(RopeByHeadsBackward { heads: self.heads }, [&x], tables, y)
    }
}

/// The swap of the middle axes; on Flex in f32, a view where a side of it asks for one (that
/// side's reader is a product, which reads any strides in place). On the GPU back ends a copy
/// each way, whatever a side asks: their products copy such a view before they read it.
#[derive(Default)]
struct SwapMiddleAxes {
    view_forward: bool,
    view_backward: bool,
}

/// The swap on the inner backend. On Flex: a view where `as_view` asks for one of an f32
/// tensor, else the kernel (a copy, or a view where the swapped tensor is contiguous). On a
/// GPU back end in f32 the view made contiguous (`cube_layout`). On other backends a view.
fn swap_middle_axes_inner<I: Backend>(x: FloatTensor<I>, as_view: bool) -> FloatTensor<I> {
    let swapped = on_flex::<I, 1>([&x], |[x]| match as_view && x.dtype() == DType::F32 {
        true => Some(x.transpose(1, 2)),
        false => flex_kernels::swap_middle_axes(x),
    });
    if let Some(swapped) = swapped {
        return swapped;
    }
    let view = I::float_swap_dims(x, 1, 2);
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let view = match cube_layout::contiguous::<I>(view) {
        Ok(copy) => return copy,
        Err(view) => view,
    };
    view
}

/// Backward: the same swap of the gradient.
#[derive(Debug)]
struct SwapMiddleAxesBackward {
    as_view: bool,
}

impl<I: Backend> Backward<I, 1> for SwapMiddleAxesBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let swap = |g| swap_middle_axes_inner::<I>(g, self.as_view);
        unary::<I, _>(ops.parents, ops.node, grads, swap);
    }
}

impl Node<1> for SwapMiddleAxes {
    const ON_GPU: bool = true;

    fn run<I: Backend>(self, [x]: [FloatTensor<Autodiff<I>>; 1]) -> FloatTensor<Autodiff<I>> {
        let y = swap_middle_axes_inner::<I>(x.primitive.clone(), self.view_forward);
        let backward = SwapMiddleAxesBackward {
            as_view: self.view_backward,
        };
        record(backward, [&x], (), y)
    }
}

/// The softmax of `scale · x (+ bias)` over axis `dim`.
struct Softmax {
    dim: usize,
    scale: f64,
}

/// Backward: `scale · y ⊙ (g − Σ g ⊙ y)` from the saved output; on Flex one pass a row.
#[derive(Debug)]
struct SoftmaxBackward {
    dim: usize,
    scale: f64,
}

impl<I: Backend> Backward<I, 1> for SoftmaxBackward {
    type State = FloatTensor<I>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let y = ops.state;
        unary::<I, _>(ops.parents, ops.node, grads, |g| {
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            let g = match cube_softmax::softmax_backward::<I>(&y, g, self.scale as f32) {
                Ok(dx) => return dx,
                Err(g) => g,
            };
            let mut g = g;
            let kernel = |g: &mut FlexTensor, [y]: [&FlexTensor; 1]| {
                flex_kernels::softmax_backward(y, g).map(none)
            };
            let dx = match on_flex_over::<I, 1, 0>(&mut g, [&y], kernel) {
                Some([]) => g,
                None => {
                    let along = I::float_sum_dim(I::float_mul(g.clone(), y.clone()), self.dim);
                    I::float_mul(y, I::float_sub(g, along))
                }
            };
            match self.scale == 1.0 {
                true => dx,
                false => I::float_mul_scalar(dx, self.scale.into()),
            }
        });
    }
}

/// The softmax of `scale · x` (plus a constant bias) on the inner backend: a GPU back end's own
/// kernel (`cube_softmax`) where it applies, Flex's where that does, else the backend's softmax.
fn softmax_inner<I: Backend>(
    x: FloatTensor<I>,
    bias: Option<FloatTensor<I>>,
    Softmax { dim, scale }: Softmax,
) -> FloatTensor<I> {
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    let x = match dim + 1 == x.shape().num_dims() {
        true => match cube_softmax::softmax::<I>(x, bias.as_ref(), scale as f32) {
            Ok(y) => return y,
            Err(x) => x,
        },
        false => x,
    };
    let mut x = match scale == 1.0 {
        true => x,
        false => I::float_mul_scalar(x, scale.into()),
    };
    let done = match &bias {
        Some(b) => on_flex_over::<I, 1, 0>(&mut x, [b], |x, [b]| {
            flex_kernels::softmax(x, Some(b)).map(none)
        }),
        None => {
            on_flex_over::<I, 0, 0>(&mut x, [], |x, []| flex_kernels::softmax(x, None).map(none))
        }
    };
    if done.is_some() {
        return x;
    }
    let biased = match bias {
        Some(b) => I::float_add(x, b),
        None => x,
    };
    I::softmax(biased, dim)
}

impl Softmax {
    fn backward(&self) -> SoftmaxBackward {
        SoftmaxBackward {
            dim: self.dim,
            scale: self.scale,
        }
    }
}

impl Node<1> for Softmax {
    const ON_GPU: bool = true;

    fn run<I: Backend>(self, [mut x]: [FloatTensor<Autodiff<I>>; 1]) -> FloatTensor<Autodiff<I>> {
        let backward = self.backward();
        let y = softmax_inner::<I>(take_buffer(&mut x), None, self);
        record(backward, [&x], y.clone(), y)
    }
}

/// With a bias: a constant, so the node's one parent is `x`.
impl Node<2> for Softmax {
    const ON_GPU: bool = true;

    fn run<I: Backend>(
        self,
        [mut x, bias]: [FloatTensor<Autodiff<I>>; 2],
    ) -> FloatTensor<Autodiff<I>> {
        let backward = self.backward();
        let y = softmax_inner::<I>(take_buffer(&mut x), Some(bias.primitive), self);
        record(backward, [&x], y.clone(), y)
    }
}

struct SwiGlu;

/// Backward from the kept `gate` and `up`.
#[derive(Debug)]
struct SwiGluBackward;

impl<I: Backend> Backward<I, 2> for SwiGluBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (mut gate, mut up) = ops.state;
        let g = grads.consume::<I>(&ops.node);
        let [gate_node, up_node] = ops.parents.each_ref().map(|p| p.as_ref().map(|n| n.id));
        // The kept inputs, read last here, become their own gradients (`d_gate` over `gate`,
        // `d_up` over `up`).
        let in_place = match (
            flex_mut::<I>(&mut gate),
            flex_mut::<I>(&mut up),
            flex::<I>(&g),
        ) {
            (Some(gate), Some(up), Some(g)) => flex_kernels::swiglu_backward(gate, up, g),
            _ => None,
        };
        let [d_gate, d_up] = match in_place {
            Some(()) => [gate, up],
            None => {
                let d_up = I::float_mul(g.clone(), Silu::forward::<I>(gate.clone()));
                let d_gate = Silu::backward::<I>(gate, I::float_mul(g, up));
                [d_gate, d_up]
            }
        };
        give::<I>(grads, gate_node, || d_gate);
        give::<I>(grads, up_node, || d_up);
    }
}

impl Node<2> for SwiGlu {
    fn run<I: Backend>(
        self,
        [gate, up]: [FloatTensor<Autodiff<I>>; 2],
    ) -> FloatTensor<Autodiff<I>> {
        let (g, u) = (gate.primitive.clone(), up.primitive.clone());
        let y = on_flex::<I, 2>([&g, &u], |[g, u]| flex_kernels::swiglu(g, u))
            .unwrap_or_else(|| I::float_mul(Silu::forward::<I>(g.clone()), u.clone()));
        record(SwiGluBackward, [&gate, &up], (g, u), y)
    }
}

#[cfg(test)]
mod tests {
    use super::sums_of_squares;
    use burn::backend::{Flex, NdArray};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData};

    /// Tensors of a step's kinds: contiguous, a transposed view (which Flex's kernel does not
    /// take, so it goes through the device path), empty, and one element.
    fn cases<B: Backend>() -> (Vec<burn::tensor::ops::FloatTensor<B>>, Vec<f64>) {
        let device = Default::default();
        let mut tensors = Vec::new();
        let mut want = Vec::new();
        for (k, [rows, cols]) in [[3, 5], [40, 33], [0, 4], [1, 1], [17, 2_049]]
            .into_iter()
            .enumerate()
        {
            let v: Vec<f32> = (0..rows * cols)
                .map(|i| (((i + k) * 7919) % 1000) as f32 / 250.0 - 2.0)
                .collect();
            want.push(v.iter().map(|&x| f64::from(x) * f64::from(x)).sum());
            let t = Tensor::<B, 2>::from_data(TensorData::new(v, [rows, cols]), &device);
            let t = match k {
                1 => t.reshape([cols, rows]).transpose(),
                _ => t,
            };
            tensors.push(t.into_primitive().tensor());
        }
        (tensors, want)
    }

    /// Every tensor's sum of squares, in order, against the f64 sum (f32 sums of up to 35,000
    /// squares: 1e-6 relative), on Flex's kernel and view path and on another backend.
    #[test]
    fn sums_of_squares_are_each_tensor_s_in_order() {
        fn check<B: Backend>() {
            let (tensors, want) = cases::<B>();
            let got = sums_of_squares::<B>(tensors);
            assert_eq!(got.len(), want.len());
            for (got, want) in got.into_iter().zip(want) {
                assert!(
                    (got - want).abs() <= 1e-6 * want.max(1.0),
                    "{got} against {want}"
                );
            }
        }
        check::<Flex>();
        // In f64, as the other tests on NdArray in this process (they share its device).
        check::<NdArray<f64>>();
    }
}
