//! Kernels on Flex's own buffers, for the ops where Burn 0.21's Flex is slow on a CPU: it calls
//! libm one element at a time (GELU's `erf`, SiLU's and softmax's `exp`), composes a norm's
//! backward pass of a dozen passes over memory, and copies a permuted view through a general
//! strided iterator. One module per kind of op:
//!
//! - `adamw`: one AdamW step of a parameter (the optimizer's, `train::optimizer`);
//! - `activation`: GELU, SiLU and SwiGLU, forward and backward;
//! - `softmax`: softmax with an additive mask, and its backward;
//! - `norm`: RMSNorm forward, either norm of a sum (`add_norm`), both norms' backward;
//! - `rope`: rotate-half RoPE and its transpose;
//! - `layout`: the swap of a 3-D or 4-D tensor's middle axes;
//! - `math`: `exp` and `erf` without branches or library calls.
//!
//! Each kernel reads contiguous f32 tensors (otherwise it declines, `None`, and the caller
//! composes the formula from Burn's ops), splits the work into tasks over rayon's pool (Flex's
//! own), and where it is arithmetic, runs loops the compiler vectorizes ([`vectorized`]: compiled
//! a second time for AVX2 and FMA and chosen at run time; sums along a row on [`LANES`]
//! accumulators, [`sum_by`]). Each is tested against its composed formula (tests/lowering.rs)
//! and, for `exp` and `erf`, against f64 (`math`).

mod activation;
mod adamw;
mod layout;
mod math;
mod norm;
mod rope;
mod softmax;

pub use activation::{gelu, gelu_backward, silu, silu_backward, swiglu, swiglu_backward};
pub use adamw::{adamw, AdamWStep};
pub use layout::swap_middle_axes;
pub use norm::{add_norm, norm_backward, rms_norm};
pub use rope::rope;
pub use softmax::{softmax, softmax_backward};

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData, TensorMetadata};

/// The elements of a contiguous f32 tensor.
pub(super) fn f32s(t: &FlexTensor) -> Option<&[f32]> {
    match t.dtype() {
        DType::F32 => t.as_slice::<f32>(),
        _ => None,
    }
}

/// A new tensor of `values`, shaped as `t`.
pub(super) fn like(t: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, t.shape()))
}

/// Elements per task: large enough that a task outweighs its hand-off.
pub(super) const CHUNK: usize = 1 << 14;

/// Independent accumulators of a sum along a row. Floating-point addition does not reassociate,
/// so a plain running sum is one serial chain the compiler must keep scalar; `LANES` chains
/// (two AVX2 registers' worth) vectorize, and are added together at the end.
pub(super) const LANES: usize = 16;

/// `Σ f(x)` over `xs` on [`LANES`] accumulators.
#[inline(always)]
pub(super) fn sum_by(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    total(lanes) + tail
}

/// `Σ f(x, y)` over the pairs of `xs` and `ys` (of one length) on [`LANES`] accumulators.
#[inline(always)]
pub(super) fn sum_by_pairs(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    debug_assert_eq!(xs.len(), ys.len());
    let mut lanes = [0.0f32; LANES];
    let (mut xc, mut yc) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    for (x, y) in (&mut xc).zip(&mut yc) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += f(x, y);
        }
    }
    let pairs = xc.remainder().iter().zip(yc.remainder());
    let tail: f32 = pairs.map(|(&x, &y)| f(x, y)).sum();
    total(lanes) + tail
}

/// The largest of `xs` (−∞ for none), on [`LANES`] running maxima.
#[inline(always)]
pub(super) fn max_of(xs: &[f32]) -> f32 {
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = larger(*lane, x);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| larger(m, x));
    lanes.into_iter().fold(tail, larger)
}

/// The lanes added pairwise.
#[inline(always)]
fn total(lanes: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    let mut lanes = lanes;
    while half > 0 {
        for i in 0..half {
            lanes[i] += lanes[i + half];
        }
        half /= 2;
    }
    lanes[0]
}

/// Work whose loops vectorize, run by [`vectorized`]. Every implementation marks `run`
/// `#[inline(always)]`: that is what compiles it into the AVX2 copy. (A closure there is
/// often called rather than inlined, and then runs as built for the baseline, four wide at
/// best: seen in the profile of the first version of these kernels.)
pub(super) trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// Runs `work` compiled for AVX2 and FMA where the processor has them (its loops then vectorize
/// eight wide with fused multiply-adds), else as built for the baseline.
#[inline(always)]
pub(super) fn vectorized<K: Kernel>(work: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: both features were just detected on this processor.
        return unsafe { with_avx2(work) };
    }
    work.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<K: Kernel>(work: K) -> K::Output {
    work.run()
}
