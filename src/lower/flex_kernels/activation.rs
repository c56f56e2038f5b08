//! GELU (exact Φ), SiLU and SwiGLU (`silu(gate) ⊙ up`), forward and backward: one vectorized
//! pass each, where Flex calls libm's `erff` (15 % of a tiny ViT's step in GELU's forward
//! alone) and `expf` per element.
//! GELU and its derivative are within 1e-6 of f64 on [−10, 10] (tests/lowering.rs).

use super::math::{normal_cdf, normal_pdf, sigmoid};
use super::{f32s, like, output, vectorized, written, Kernel, CHUNK};
use burn::backend::flex::FlexTensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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

/// SwiGLU, `silu(gate) ⊙ up`, in one pass.
pub fn swiglu(gate: &FlexTensor, up: &FlexTensor) -> Option<FlexTensor> {
    elementwise(SwiGluAt, gate, up)
}

/// SwiGLU's gradients `[d gate, d up]` given the output gradient `g`, in one pass:
/// `d gate = g ⊙ up ⊙ σ (1 + gate (1 − σ))`, `d up = g ⊙ silu(gate)`, σ = σ(gate).
pub fn swiglu_backward(
    gate: &FlexTensor,
    up: &FlexTensor,
    g: &FlexTensor,
) -> Option<[FlexTensor; 2]> {
    let (gates, ups, gs) = (f32s(gate)?, f32s(up)?, f32s(g)?);
    if ups.len() != gates.len() || gs.len() != gates.len() {
        return None;
    }
    let (mut d_gate, mut d_up) = (output(gates.len()), output(gates.len()));
    let inputs = gates
        .par_chunks(CHUNK)
        .zip(ups.par_chunks(CHUNK).zip(gs.par_chunks(CHUNK)));
    d_gate
        .par_chunks_mut(CHUNK)
        .zip(d_up.par_chunks_mut(CHUNK))
        .zip(inputs)
        .for_each(|((d_gate, d_up), (gate, (up, g)))| {
            vectorized(SwiGluGradient {
                d_gate,
                d_up,
                gate,
                up,
                g,
            })
        });
    // SAFETY: `SwiGluGradient` writes every element of its chunks, which cover both buffers.
    let (d_gate, d_up) = unsafe { (written(d_gate), written(d_up)) };
    Some([like(gate, d_gate), like(gate, d_up)])
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

struct SwiGluAt;

impl Elementwise for SwiGluAt {
    #[inline(always)]
    fn at(&self, gate: f32, up: f32) -> f32 {
        gate * sigmoid(gate) * up
    }
}

/// A chunk of [`swiglu_backward`].
struct SwiGluGradient<'a> {
    d_gate: &'a mut [MaybeUninit<f32>],
    d_up: &'a mut [MaybeUninit<f32>],
    gate: &'a [f32],
    up: &'a [f32],
    g: &'a [f32],
}

impl Kernel for SwiGluGradient<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let outputs = self.d_gate.iter_mut().zip(self.d_up.iter_mut());
        let inputs = self.gate.iter().zip(self.up).zip(self.g);
        for ((d_gate, d_up), ((&x, &up), &g)) in outputs.zip(inputs) {
            let s = sigmoid(x);
            d_up.write(g * x * s);
            d_gate.write(g * up * s * (1.0 + x * (1.0 - s)));
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
