//! GELU (exact Φ), SiLU and SwiGLU (`silu(gate) ⊙ up`), forward and backward: one vectorized
//! pass each, where Flex calls libm's `erff` (15 % of a tiny ViT's step in GELU's forward
//! alone) and `expf` per element.
//! GELU and its derivative are within 1e-6 of f64 on [−10, 10] (tests/lowering.rs).

use super::math::{normal_cdf, normal_pdf, sigmoid};
use super::{f32s, like, output, overwritable, own_f32s, vectorized, written, Kernel, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// GELU, `x Φ(x)` with `Φ(x) = (1 + erf(x/√2)) / 2`.
pub fn gelu(x: &FlexTensor) -> Option<FlexTensor> {
    elementwise(GeluAt, x, x)
}

/// GELU's input gradient, `g (Φ(x) + x φ(x))` with `φ` the standard normal density, written
/// over `g` (see [`over_gradient`]).
pub fn gelu_backward(x: &FlexTensor, g: &mut FlexTensor) -> Option<()> {
    over_gradient(GeluGradientAt, x, g)
}

/// GELU's tanh approximation (GPT-2's `gelu_new`), `x/2 · (1 + tanh(u))` with
/// `u = √(2/π) (x + 0.044715 x³)`, computed as `x σ(2u)` (the same function: `(1 + tanh u)/2 =
/// σ(2u)`), with the vectorized `exp` where the composed form calls `powf` and `tanh` on each
/// element.
pub fn gelu_tanh(x: &FlexTensor) -> Option<FlexTensor> {
    elementwise(GeluTanhAt, x, x)
}

/// [`gelu_tanh`]'s input gradient, `g (s + x s (1 − s) 2u′)` with `s = σ(2u)` and
/// `u′ = √(2/π) (1 + 3 · 0.044715 x²)`, written over `g` (see [`over_gradient`]).
pub fn gelu_tanh_backward(x: &FlexTensor, g: &mut FlexTensor) -> Option<()> {
    over_gradient(GeluTanhGradientAt, x, g)
}

/// SiLU, `x σ(x)`.
pub fn silu(x: &FlexTensor) -> Option<FlexTensor> {
    elementwise(SiluAt, x, x)
}

/// SiLU's input gradient, `g σ(x) (1 + x (1 − σ(x)))`, written over `g` (see
/// [`over_gradient`]).
pub fn silu_backward(x: &FlexTensor, g: &mut FlexTensor) -> Option<()> {
    over_gradient(SiluGradientAt, x, g)
}

/// SwiGLU, `silu(gate) ⊙ up`, in one pass.
pub fn swiglu(gate: &FlexTensor, up: &FlexTensor) -> Option<FlexTensor> {
    elementwise(SwiGluAt, gate, up)
}

/// SwiGLU's gradients given the output gradient `g`, in one pass, written over the inputs the
/// backward pass kept (and reads last: `own_f32s` copies a buffer they share first):
/// `d gate = g ⊙ up ⊙ σ (1 + gate (1 − σ))` over `gate`, `d up = g ⊙ silu(gate)` over `up`,
/// σ = σ(gate). `None`, and both untouched, unless f32 of one shape (`g` contiguous).
pub fn swiglu_backward(gate: &mut FlexTensor, up: &mut FlexTensor, g: &FlexTensor) -> Option<()> {
    let gs = f32s(g)?;
    let takes = |t: &FlexTensor| overwritable(t) && t.shape() == g.shape();
    if !(takes(gate) && takes(up)) {
        return None;
    }
    let (gates, ups) = (own_f32s(gate), own_f32s(up));
    gates
        .par_chunks_mut(CHUNK)
        .zip(ups.par_chunks_mut(CHUNK))
        .zip(gs.par_chunks(CHUNK))
        .for_each(|((gate_then_d, up_then_d), g)| {
            vectorized(SwiGluGradient {
                gate_then_d,
                up_then_d,
                g,
            })
        });
    Some(())
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

/// √(2/π) and the cubic's coefficient of [`gelu_tanh`].
const GELU_TANH_SCALE: f32 = 0.797_884_6;
const GELU_TANH_CUBIC: f32 = 0.044_715;

struct GeluTanhAt;

impl Elementwise for GeluTanhAt {
    #[inline(always)]
    fn at(&self, x: f32, _: f32) -> f32 {
        let u = GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * x * x * x);
        x * sigmoid(2.0 * u)
    }
}

struct GeluTanhGradientAt;

impl Elementwise for GeluTanhGradientAt {
    #[inline(always)]
    fn at(&self, x: f32, g: f32) -> f32 {
        let u = GELU_TANH_SCALE * (x + GELU_TANH_CUBIC * x * x * x);
        let du = GELU_TANH_SCALE * (1.0 + 3.0 * GELU_TANH_CUBIC * x * x);
        let s = sigmoid(2.0 * u);
        g * (s + x * s * (1.0 - s) * 2.0 * du)
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

struct SwiGluAt;

impl Elementwise for SwiGluAt {
    #[inline(always)]
    fn at(&self, gate: f32, up: f32) -> f32 {
        gate * sigmoid(gate) * up
    }
}

/// A chunk of [`swiglu_backward`]: each element's two gradients over its `gate` and `up`.
struct SwiGluGradient<'a> {
    gate_then_d: &'a mut [f32],
    up_then_d: &'a mut [f32],
    g: &'a [f32],
}

impl Kernel for SwiGluGradient<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let pairs = self.gate_then_d.iter_mut().zip(self.up_then_d.iter_mut());
        for ((gate, up), &g) in pairs.zip(self.g) {
            let (x, u) = (*gate, *up);
            let s = sigmoid(x);
            *up = g * x * s;
            *gate = g * u * s * (1.0 + x * (1.0 - s));
        }
    }
}

/// `f(x, g)` at each pair of elements of `x` and `g`, written over `g`: a backward pass's output
/// gradient, just computed and read by nothing else, is in cache where a new buffer is not
/// (`own_f32s` copies a buffer `g` shares first). `None`, and `g` untouched, unless f32 of
/// one size (`x` contiguous).
fn over_gradient(f: impl Elementwise, x: &FlexTensor, g: &mut FlexTensor) -> Option<()> {
    let xs = f32s(x)?;
    if !overwritable(g) || g.shape().num_elements() != xs.len() {
        return None;
    }
    own_f32s(g)
        .par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK))
        .for_each(|(g_then_out, xs)| {
            vectorized(MapOver {
                f: &f,
                xs,
                g_then_out,
            })
        });
    Some(())
}

/// `g[i] = f(xs[i], g[i])`.
struct MapOver<'a, F> {
    f: &'a F,
    xs: &'a [f32],
    g_then_out: &'a mut [f32],
}

impl<F: Elementwise> Kernel for MapOver<'_, F> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for (g, &x) in self.g_then_out.iter_mut().zip(self.xs) {
            *g = self.f.at(x, *g);
        }
    }
}

/// `f` at each pair of elements, in chunks over rayon's pool.
fn map(f: impl Elementwise, xs: &[f32], ys: &[f32]) -> Vec<f32> {
    let mut out = output(xs.len());
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK).zip(ys.par_chunks(CHUNK)))
        .for_each(|(out, (xs, ys))| vectorized(Map { f: &f, out, xs, ys }));
    // SAFETY: `Map` writes every element of its `out`, and the tasks cover the buffer.
    unsafe { written(out) }
}

/// `out[i] = f(xs[i], ys[i])`.
struct Map<'a, F> {
    f: &'a F,
    out: &'a mut [MaybeUninit<f32>],
    xs: &'a [f32],
    ys: &'a [f32],
}

impl<F: Elementwise> Kernel for Map<'_, F> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for ((o, &x), &y) in self.out.iter_mut().zip(self.xs).zip(self.ys) {
            o.write(self.f.at(x, y));
        }
    }
}
