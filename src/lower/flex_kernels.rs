//! Element-wise kernels on Flex's own buffers, for the ops where Burn 0.21's Flex calls libm one
//! element at a time: GELU's `erf` (libm's `erff`, 15 % of a tiny ViT's training step in its
//! forward pass alone) and SiLU's `exp` (libm's `expf`), forward and backward.
//!
//! Also softmax with its additive mask (libm's `expf` again) and its backward, RMSNorm forward and the LayerNorm and RMSNorm backward passes (a handful of reads of
//! each row in cache, where the composed forms make seven to fourteen passes), RoPE's rotation (seven composed passes each way, and its tables repeated over the
//! batch), and the swap of a 3-D or 4-D tensor's middle axes (attention's heads, the tensor-train
//! cores and the tensor gates), which Flex copies one element at a time.
//!
//! Each kernel reads contiguous f32 tensors (otherwise it declines and the caller composes the
//! formula from Burn's ops), splits the elements into chunks over rayon's pool (Flex's own), and
//! evaluates with `exp` and `erf` written without branches or library calls so that the compiler
//! vectorizes the loop, with AVX2 and FMA where the processor has them (detected at run time).
//! Accuracy: `erf` is its series near 0 and Abramowitz and Stegun's 7.1.26 beyond (absolute
//! error under 3e-7 in f32), `exp` a degree-6 polynomial after range reduction (relative error
//! under 4e-7): GELU and its derivative within 1e-6 of the exact values computed in f64, a few
//! units of f32 rounding (tests here and in tests/lowering.rs).

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData, TensorMetadata};
use rayon::prelude::*;

/// GELU, `x Φ(x)` with `Φ(x) = (1 + erf(x/√2)) / 2`.
pub fn gelu(x: &FlexTensor) -> Option<FlexTensor> {
    elementwise(GeluAt, x, x)
}

/// GELU's input gradient, `g (Φ(x) + x φ(x))` with `φ` the standard normal density.
pub fn gelu_backward(x: &FlexTensor, g: &FlexTensor) -> Option<FlexTensor> {
    elementwise(GeluGradientAt, x, g)
}

/// SiLU, `x σ(x)`.
pub fn silu(x: &FlexTensor) -> Option<FlexTensor> {
    elementwise(SiluAt, x, x)
}

/// SiLU's input gradient, `g σ(x) (1 + x (1 − σ(x)))`.
pub fn silu_backward(x: &FlexTensor, g: &FlexTensor) -> Option<FlexTensor> {
    elementwise(SiluGradientAt, x, g)
}

/// Softmax over the last axis of `x + bias` (attention's causal mask, −10³⁰ above the
/// diagonal; or no bias), each row in one pass after its maximum: `e = exp(x + b − max)` with
/// this module's `exp` (0 below e^−87, so masked places stay exactly 0), then `e / Σe`.
/// Flex's own softmax calls libm's `expf` per element, after a separate pass for the bias.
/// `None` unless contiguous f32 of one shape.
pub fn softmax(x: &FlexTensor, bias: Option<&FlexTensor>) -> Option<FlexTensor> {
    let xs = f32s(x)?;
    let bs = match bias {
        Some(b) if b.shape() == x.shape() => Some(f32s(b)?),
        Some(_) => return None,
        None => None,
    };
    let width = last_axis(x)?;
    let mut out = vec![0.0; xs.len()];
    let per_task = CHUNK.div_ceil(width) * width;
    out.par_chunks_mut(per_task).enumerate().for_each(|(i, y)| {
        let at = i * per_task..i * per_task + y.len();
        let rows = SoftmaxRows {
            out: y,
            x: &xs[at.clone()],
            bias: bs.map(|b| &b[at]),
            width,
        };
        rows.run()
    });
    Some(like(x, out))
}

/// Softmax's input gradient from its output `y` and the output gradient `g`, per row
/// `y ⊙ (g − Σ g ⊙ y)`, in one pass (the composed form makes four). `None` unless contiguous
/// f32 of one shape.
pub fn softmax_backward(y: &FlexTensor, g: &FlexTensor) -> Option<FlexTensor> {
    let (ys, gs) = (f32s(y)?, f32s(g)?);
    let width = last_axis(y)?;
    if gs.len() != ys.len() {
        return None;
    }
    let mut out = vec![0.0; ys.len()];
    out.par_chunks_mut(width)
        .zip(ys.par_chunks(width).zip(gs.par_chunks(width)))
        .with_min_len(CHUNK.div_ceil(width))
        .for_each(|(dx, (y, g))| {
            let along: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
            for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                *dx = y * (g - along);
            }
        });
    Some(like(y, out))
}

/// The length of `x`'s last axis, when it has one that is not empty.
fn last_axis(x: &FlexTensor) -> Option<usize> {
    let dims = x.shape();
    let width = *dims.last()?;
    (width > 0).then_some(width)
}

/// Rows of a softmax: `out` from `x` (and `bias`), `width` elements each.
struct SoftmaxRows<'a> {
    out: &'a mut [f32],
    x: &'a [f32],
    bias: Option<&'a [f32]>,
    width: usize,
}

impl SoftmaxRows<'_> {
    fn run(self) {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: both features were just detected on this processor.
            return unsafe { self.with_avx2() };
        }
        self.each()
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn with_avx2(self) {
        self.each()
    }

    #[inline(always)]
    fn each(self) {
        let w = self.width;
        for (r, y) in self.out.chunks_exact_mut(w).enumerate() {
            let x = &self.x[r * w..(r + 1) * w];
            // The biased scores, kept in `y` until they become probabilities.
            match self.bias {
                Some(b) => {
                    for ((y, &x), &b) in y.iter_mut().zip(x).zip(&b[r * w..(r + 1) * w]) {
                        *y = x + b;
                    }
                }
                None => y.copy_from_slice(x),
            }
            let max = y.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            let mut sum = 0.0;
            for y in y.iter_mut() {
                let d = *y - max;
                *y = if d < -87.0 { 0.0 } else { exp(d) };
                sum += *y;
            }
            let inverse = 1.0 / sum;
            for y in y.iter_mut() {
                *y *= inverse;
            }
        }
    }
}

/// RMSNorm of (rows, width) `x` with scale `gamma` (width elements): `[y, r]` with
/// `r = 1/√(mean(x²) + ε)` per row (rows, 1) and `y = x · r · γ`, one pass over `x` where the
/// composed form makes seven. `None` unless contiguous f32 of matching widths.
pub fn rms_norm(x: &FlexTensor, gamma: &FlexTensor, epsilon: f64) -> Option<[FlexTensor; 2]> {
    let (xs, gs) = (f32s(x)?, f32s(gamma)?);
    let width = rows_of(x, gs.len())?;
    let rows = xs.len() / width;
    let (mut y, mut r) = (vec![0.0; xs.len()], vec![0.0; rows]);
    let per_task = CHUNK.div_ceil(width);
    y.par_chunks_mut(width)
        .zip(r.par_iter_mut())
        .zip(xs.par_chunks(width))
        .with_min_len(per_task)
        .for_each(|((y, r), x)| {
            *r = inverse_rms(x, epsilon as f32);
            for ((y, &x), &g) in y.iter_mut().zip(x).zip(gs) {
                *y = x * *r * g;
            }
        });
    let shape = x.shape();
    Some([
        FlexTensor::from_data(TensorData::new(y, shape)),
        FlexTensor::from_data(TensorData::new(r, [rows, 1])),
    ])
}

/// The gradients of LayerNorm (`centered`) or RMSNorm over (rows, width) `x` with scale
/// `gamma`, given the output gradient `g`: `[dx, dγ, dβ]`, with `x̂` the normalized row,
/// `r` its inverse deviation (inverse RMS), `h = g ⊙ γ`:
/// `dx = r (h − mean(h) − x̂ mean(h ⊙ x̂))` (RMSNorm: without `mean(h)`), `dγ = Σrows g ⊙ x̂`,
/// `dβ = Σrows g`, the last two as (1, width). Each row is read three times while in cache,
/// where the composed backward makes about fourteen passes over the whole tensor. `None`
/// unless contiguous f32 of matching shapes.
pub fn norm_backward(
    [x, gamma, g]: [&FlexTensor; 3],
    epsilon: f64,
    centered: bool,
) -> Option<[FlexTensor; 3]> {
    let (xs, gammas, gs) = (f32s(x)?, f32s(gamma)?, f32s(g)?);
    let width = rows_of(x, gammas.len())?;
    if gs.len() != xs.len() {
        return None;
    }
    let eps = epsilon as f32;
    let mut dx = vec![0.0; xs.len()];
    let per_task = CHUNK.div_ceil(width) * width;
    let sums = dx
        .par_chunks_mut(per_task)
        .zip(xs.par_chunks(per_task).zip(gs.par_chunks(per_task)))
        .map(|(dx, (x, g))| {
            let mut sums = ColumnSums::new(width);
            let rows = dx.chunks_exact_mut(width).zip(x.chunks_exact(width));
            for ((dx, x), g) in rows.zip(g.chunks_exact(width)) {
                norm_row_backward(
                    [dx, &mut sums.gamma, &mut sums.beta],
                    [x, gammas, g],
                    eps,
                    centered,
                );
            }
            sums
        })
        .reduce(|| ColumnSums::new(width), ColumnSums::add);
    Some([
        like(x, dx),
        FlexTensor::from_data(TensorData::new(sums.gamma, [1, width])),
        FlexTensor::from_data(TensorData::new(sums.beta, [1, width])),
    ])
}

/// The width of `x`'s rows when `x` is 2-D with rows of `width` elements, else `None`.
fn rows_of(x: &FlexTensor, width: usize) -> Option<usize> {
    let dims = x.shape();
    (dims.num_dims() == 2 && dims.dims::<2>()[1] == width && width > 0).then_some(width)
}

/// 1/√(mean(x²) + ε) of a row.
#[inline(always)]
fn inverse_rms(x: &[f32], eps: f32) -> f32 {
    let squares: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (squares / x.len() as f32 + eps).sqrt()
}

/// One row of [`norm_backward`]: its `dx`, and its terms added to the column sums.
#[inline(always)]
fn norm_row_backward(
    [dx, d_gamma, d_beta]: [&mut [f32]; 3],
    [x, gamma, g]: [&[f32]; 3],
    eps: f32,
    centered: bool,
) {
    let n = x.len() as f32;
    let mean = if centered {
        x.iter().sum::<f32>() / n
    } else {
        0.0
    };
    let spread: f32 = x.iter().map(|v| (v - mean) * (v - mean)).sum();
    let r = 1.0 / (spread / n + eps).sqrt();
    let (mut sum_h, mut sum_hx) = (0.0f32, 0.0f32);
    for j in 0..x.len() {
        let normalized = (x[j] - mean) * r;
        let h = g[j] * gamma[j];
        sum_h += h;
        sum_hx += h * normalized;
        d_gamma[j] += g[j] * normalized;
        d_beta[j] += g[j];
    }
    let mean_h = if centered { sum_h / n } else { 0.0 };
    let mean_hx = sum_hx / n;
    for j in 0..x.len() {
        let normalized = (x[j] - mean) * r;
        dx[j] = r * (g[j] * gamma[j] - mean_h - normalized * mean_hx);
    }
}

/// A task's share of dγ and dβ.
struct ColumnSums {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

impl ColumnSums {
    fn new(width: usize) -> ColumnSums {
        ColumnSums {
            gamma: vec![0.0; width],
            beta: vec![0.0; width],
        }
    }

    fn add(mut self, other: ColumnSums) -> ColumnSums {
        for (a, b) in self.gamma.iter_mut().zip(&other.gamma) {
            *a += b;
        }
        for (a, b) in self.beta.iter_mut().zip(&other.beta) {
            *a += b;
        }
        self
    }
}

/// Rotate-half RoPE of `x` (rows, hidden), rows in (batch, seq) order, with (seq, hidden)
/// tables: per head, with `a` in the first half and `b = a + half` its partner,
/// `y[a] = x[a] cos[a] + x[b] sin[a]` and `y[b] = x[b] cos[b] + x[a] sin[b]`; with
/// `transposed` the transpose (the input gradient), `y[a] = x[a] cos[a] + x[b] sin[b]` and
/// `y[b] = x[b] cos[b] + x[a] sin[a]`. Each row reads its position's table row. `None` unless
/// all are contiguous f32 of matching shapes.
pub fn rope(
    x: &FlexTensor,
    [cos, sin]: [&FlexTensor; 2],
    heads: usize,
    transposed: bool,
) -> Option<FlexTensor> {
    let (xs, cs, ss) = (f32s(x)?, f32s(cos)?, f32s(sin)?);
    let (dims, table) = (x.shape(), cos.shape());
    if dims.num_dims() != 2 || table.num_dims() != 2 || sin.shape() != table {
        return None;
    }
    let ([n, hidden], [seq, width]) = (dims.dims::<2>(), table.dims::<2>());
    if width != hidden || seq == 0 || n % seq != 0 || heads == 0 || hidden % (2 * heads) != 0 {
        return None;
    }
    let half = hidden / heads / 2;
    let mut out = vec![0.0; xs.len()];
    if hidden == 0 {
        return Some(like(x, out));
    }
    out.par_chunks_mut(hidden)
        .zip(xs.par_chunks(hidden))
        .enumerate()
        .with_min_len(CHUNK.div_ceil(hidden))
        .for_each(|(row, (y, x))| {
            let at = row % seq * hidden;
            let (c, s) = (&cs[at..at + hidden], &ss[at..at + hidden]);
            for head in (0..hidden).step_by(2 * half) {
                for a in head..head + half {
                    let b = a + half;
                    let (sa, sb) = if transposed {
                        (s[b], s[a])
                    } else {
                        (s[a], s[b])
                    };
                    y[a] = x[a] * c[a] + x[b] * sa;
                    y[b] = x[b] * c[b] + x[a] * sb;
                }
            }
        });
    Some(like(x, out))
}

/// A contiguous 3-D (a, b, c) or 4-D (a, b, c, d) tensor with its axes 1 and 2 swapped, as a
/// contiguous (a, c, b) or (a, c, b, d) one, where Flex's own copy of a permuted view walks it
/// one element at a time through a general strided iterator (~7 % of a LLaMA step around the
/// attention heads; 40 % of a tensor-train step). Each of the `a` slabs is copied on its own
/// (in parallel): whole rows of d elements, or for 3-D a plain transpose of each (b × c) matrix.
pub fn swap_middle_axes(x: &FlexTensor) -> Option<FlexTensor> {
    let xs = f32s(x)?;
    let dims = x.shape();
    let (swapped, [b, c, d]) = match dims.num_dims() {
        3 => {
            let [a, b, c] = dims.dims::<3>();
            (vec![a, c, b], [b, c, 1])
        }
        4 => {
            let [a, b, c, d] = dims.dims::<4>();
            (vec![a, c, b, d], [b, c, d])
        }
        _ => return None,
    };
    let slab = b * c * d;
    let mut out = vec![0.0; xs.len()];
    if slab > 0 {
        out.par_chunks_mut(slab)
            .zip(xs.par_chunks(slab))
            .with_min_len(CHUNK.div_ceil(slab))
            .for_each(|(to, from)| swap_slab(to, from, [b, c, d]));
    }
    Some(FlexTensor::from_data(TensorData::new(out, swapped)))
}

/// `to[k, j] = from[j, k]` for j < b, k < c, each element a row of d values.
fn swap_slab(to: &mut [f32], from: &[f32], [b, c, d]: [usize; 3]) {
    if d == 1 {
        for (k, row) in to.chunks_exact_mut(b).enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                *value = from[j * c + k];
            }
        }
        return;
    }
    for (k, rows) in to.chunks_exact_mut(b * d).enumerate() {
        for (j, row) in rows.chunks_exact_mut(d).enumerate() {
            let at = (j * c + k) * d;
            row.copy_from_slice(&from[at..at + d]);
        }
    }
}

/// `f` at each pair of elements of `x` and `y` (the same tensor twice for a function of one),
/// as a new tensor shaped as `x`; `None` unless both are contiguous f32 of one size.
fn elementwise(f: impl Elementwise, x: &FlexTensor, y: &FlexTensor) -> Option<FlexTensor> {
    let (xs, ys) = (f32s(x)?, f32s(y)?);
    if xs.len() != ys.len() {
        return None;
    }
    Some(like(x, map(f, xs, ys)))
}

/// A function of one or two elements. Named types with `#[inline(always)]` methods rather
/// than closures, so that each is inlined into the loop and the loop vectorized.
trait Elementwise: Sync {
    fn at(&self, x: f32, y: f32) -> f32;
}

struct GeluAt;

impl Elementwise for GeluAt {
    #[inline(always)]
    fn at(&self, x: f32, _: f32) -> f32 {
        x * normal_cdf(x)
    }
}

struct GeluGradientAt;

impl Elementwise for GeluGradientAt {
    #[inline(always)]
    fn at(&self, x: f32, g: f32) -> f32 {
        g * (normal_cdf(x) + x * normal_pdf(x))
    }
}

struct SiluAt;

impl Elementwise for SiluAt {
    #[inline(always)]
    fn at(&self, x: f32, _: f32) -> f32 {
        x * sigmoid(x)
    }
}

struct SiluGradientAt;

impl Elementwise for SiluGradientAt {
    #[inline(always)]
    fn at(&self, x: f32, g: f32) -> f32 {
        let s = sigmoid(x);
        g * s * (1.0 + x * (1.0 - s))
    }
}

/// The elements of a contiguous f32 tensor.
fn f32s(t: &FlexTensor) -> Option<&[f32]> {
    match t.dtype() {
        DType::F32 => t.as_slice::<f32>(),
        _ => None,
    }
}

/// A new tensor of `values`, shaped as `t`.
fn like(t: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, t.shape()))
}

/// Elements per task: large enough that a task outweighs its hand-off.
const CHUNK: usize = 1 << 14;

/// `f` at each pair of elements, in chunks over rayon's pool.
fn map(f: impl Elementwise, xs: &[f32], ys: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; xs.len()];
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK).zip(ys.par_chunks(CHUNK)))
        .for_each(|(out, (xs, ys))| vectorized(&f, out, xs, ys));
    out
}

/// `out[i] = f(xs[i], ys[i])`, compiled a second time for AVX2 + FMA and run so when the
/// processor has them.
fn vectorized(f: &impl Elementwise, out: &mut [f32], xs: &[f32], ys: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: both features were just detected on this processor.
        return unsafe { with_avx2(f, out, xs, ys) };
    }
    each(f, out, xs, ys)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2(f: &impl Elementwise, out: &mut [f32], xs: &[f32], ys: &[f32]) {
    each(f, out, xs, ys)
}

#[inline(always)]
fn each(f: &impl Elementwise, out: &mut [f32], xs: &[f32], ys: &[f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(xs).zip(ys) {
        *o = f.at(x, y);
    }
}

/// 1 / (1 + e^(−x)); `exp`'s clamp keeps e^(−x) finite, so σ is 0, never NaN, far below 0.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[inline(always)]
fn normal_pdf(x: f32) -> f32 {
    // 1/√(2π)
    0.398_942_3 * exp(-0.5 * x * x)
}

/// erf: below |x| = 1/2 its Maclaurin series to x¹¹ (truncation under 2e-8), above it
/// Abramowitz and Stegun 7.1.26, `1 − (a1 t + … + a5 t⁵) e^(−x²)` with `t = 1/(1 + p|x|)`
/// (where the subtraction from 1 loses little). Both are computed and one is selected, which
/// the compiler turns into a blend rather than a branch.
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    let far = 1.0 - poly * exp(-a * a);
    let s = a * a;
    // 2/√π (a − a³/3 + a⁵/10 − a⁷/42 + a⁹/216 − a¹¹/1320)
    let near = std::f32::consts::FRAC_2_SQRT_PI
        * a
        * (1.0
            + s * (-1.0 / 3.0
                + s * (1.0 / 10.0 + s * (-1.0 / 42.0 + s * (1.0 / 216.0 + s * (-1.0 / 1320.0))))));
    (if a < 0.5 { near } else { far }).copysign(x)
}

/// e^x: x = n ln 2 + f with |f| ≤ ln 2 / 2, e^f by its Taylor polynomial to f⁶, times 2ⁿ built
/// in the exponent bits. Inputs are clamped to [−87, 88], where 2ⁿ stays a normal number.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // Adding 1.5 · 2²³ rounds to an integer, which then sits in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LN2_HIGH: f32 = 0.693_359_4;
    const LN2_LOW: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let k = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let f = (x - n * LN2_HIGH) - n * LN2_LOW;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    p * f32::from_bits(((k + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::{erf, exp};

    /// The two approximations against f64 across their whole useful range.
    #[test]
    fn exp_and_erf_are_within_their_stated_error() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            assert!(
                ((got - want) / want).abs() < 4e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let want = erf_f64(x as f64);
            let got = erf(x) as f64;
            assert!((got - want).abs() < 3e-7, "erf({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn not_a_number_stays_not_a_number() {
        assert!(exp(f32::NAN).is_nan() && erf(f32::NAN).is_nan());
    }

    /// erf by its Maclaurin series (|x| < 3) or the asymptotic series of erfc (|x| ≥ 3, where
    /// its first five terms are within 1e-9): an f64 reference apart from the approximation
    /// under test.
    fn erf_f64(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let (mut term, mut sum, mut n) = (x, x, 0.0);
            while term.abs() > 1e-17 * sum.abs().max(1e-300) {
                n += 1.0;
                term *= -x * x / n;
                sum += term / (2.0 * n + 1.0);
            }
            return 2.0 / std::f64::consts::PI.sqrt() * sum;
        }
        let a = x.abs();
        let u = 1.0 / (2.0 * a * a);
        let series = 1.0 - u + 3.0 * u * u - 15.0 * u.powi(3) + 105.0 * u.powi(4);
        let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series;
        (1.0 - erfc).copysign(x)
    }
}
