//! Softmax over the last axis, with an additive mask, and its backward: one pass a row each way
//! on the vectorized `exp` of `math`.

use super::math::exp;
use super::{
    f32s, like, max_of, output, sum_by, sum_by_pairs, vectorized, written, written_part, Kernel,
    CHUNK,
};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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
    let mut out = output(xs.len());
    let per_task = CHUNK.div_ceil(width) * width;
    out.par_chunks_mut(per_task).enumerate().for_each(|(i, y)| {
        let at = i * per_task..i * per_task + y.len();
        vectorized(SoftmaxRows {
            out: y,
            x: &xs[at.clone()],
            bias: bs.map(|b| &b[at]),
            width,
        })
    });
    // SAFETY: `SoftmaxRows` writes every element of its `out`, and the tasks cover the buffer.
    Some(like(x, unsafe { written(out) }))
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
    let mut out = output(ys.len());
    let per_task = CHUNK.div_ceil(width) * width;
    out.par_chunks_mut(per_task)
        .zip(ys.par_chunks(per_task).zip(gs.par_chunks(per_task)))
        .for_each(|(dx, (y, g))| vectorized(SoftmaxGradientRows { dx, y, g, width }));
    // SAFETY: `SoftmaxGradientRows` writes every element of its `dx`, which the tasks cover.
    Some(like(y, unsafe { written(out) }))
}

/// The length of `x`'s last axis, when it has one that is not empty.
fn last_axis(x: &FlexTensor) -> Option<usize> {
    let dims = x.shape();
    let width = *dims.last()?;
    (width > 0).then_some(width)
}

/// Rows of a softmax: `out` from `x` (and `bias`), `width` elements each.
struct SoftmaxRows<'a> {
    out: &'a mut [MaybeUninit<f32>],
    x: &'a [f32],
    bias: Option<&'a [f32]>,
    width: usize,
}

impl Kernel for SoftmaxRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let w = self.width;
        for (r, y) in self.out.chunks_exact_mut(w).enumerate() {
            let x = &self.x[r * w..(r + 1) * w];
            // The biased scores, kept in `y` until they become probabilities.
            match self.bias {
                Some(b) => {
                    for ((y, &x), &b) in y.iter_mut().zip(x).zip(&b[r * w..(r + 1) * w]) {
                        y.write(x + b);
                    }
                }
                None => {
                    for (y, &x) in y.iter_mut().zip(x) {
                        y.write(x);
                    }
                }
            }
            // SAFETY: either arm above wrote the whole row.
            let y = unsafe { written_part(y) };
            let max = max_of(y);
            for y in y.iter_mut() {
                let d = *y - max;
                *y = if d < -87.0 { 0.0 } else { exp(d) };
            }
            let inverse = 1.0 / sum_by(y, |v| v);
            for y in y.iter_mut() {
                *y *= inverse;
            }
        }
    }
}

/// Rows of softmax's input gradient: `dx` from the output `y` and its gradient `g`.
struct SoftmaxGradientRows<'a> {
    dx: &'a mut [MaybeUninit<f32>],
    y: &'a [f32],
    g: &'a [f32],
    width: usize,
}

impl Kernel for SoftmaxGradientRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let w = self.width;
        let rows = self.dx.chunks_exact_mut(w).zip(self.y.chunks_exact(w));
        for ((dx, y), g) in rows.zip(self.g.chunks_exact(w)) {
            let along = sum_by_pairs(y, g, |y, g| y * g);
            for ((dx, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                dx.write(y * (g - along));
            }
        }
    }
}
