//! Softmax over the last axis, with an additive mask, and its backward: one pass a row each way
//! on the vectorized `exp` of `math`.

use super::math::exp;
use super::{
    f32s, max_of, overwritable, own_f32s, sum_by, sum_by_pairs, vectorized, Kernel, CHUNK,
};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

/// Softmax over the last axis of `x + bias` (attention's causal mask, −10³⁰ above the
/// diagonal; or no bias), each row in one pass after its maximum: `e = exp(x + b − max)` with
/// this module's `exp` (0 below e^−87, so masked places stay exactly 0), then `e / Σe`.
/// Flex's own softmax calls libm's `expf` per element, after a separate pass for the bias.
/// Written over `x` (attention's scores, just out of their product and read by nothing else:
/// in cache, where a new buffer is not; `own_f32s` copies a buffer `x` shares first). `None`,
/// and `x` untouched, unless f32 of one shape (the bias contiguous).
pub fn softmax(x: &mut FlexTensor, bias: Option<&FlexTensor>) -> Option<()> {
    let bs = match bias {
        Some(b) if b.shape() == x.shape() => Some(f32s(b)?),
        Some(_) => return None,
        None => None,
    };
    let width = last_axis(x)?;
    if !overwritable(x) {
        return None;
    }
    let per_task = CHUNK.div_ceil(width) * width;
    own_f32s(x)
        .par_chunks_mut(per_task)
        .enumerate()
        .for_each(|(i, rows)| {
            let at = i * per_task..i * per_task + rows.len();
            vectorized(SoftmaxRows {
                rows,
                bias: bs.map(|b| &b[at]),
                width,
            })
        });
    Some(())
}

/// Softmax's input gradient from its output `y` and the output gradient `g`, per row
/// `y ⊙ (g − Σ g ⊙ y)`, in one pass (the composed form makes four), written over `g` (as
/// [`softmax`] over its input). `None`, and `g` untouched, unless f32 of one shape (`y`
/// contiguous).
pub fn softmax_backward(y: &FlexTensor, g: &mut FlexTensor) -> Option<()> {
    let ys = f32s(y)?;
    let width = last_axis(y)?;
    if !overwritable(g) || g.shape() != y.shape() {
        return None;
    }
    let per_task = CHUNK.div_ceil(width) * width;
    own_f32s(g)
        .par_chunks_mut(per_task)
        .zip(ys.par_chunks(per_task))
        .for_each(|(g_then_dx, y)| {
            vectorized(SoftmaxGradientRows {
                g_then_dx,
                y,
                width,
            })
        });
    Some(())
}

/// The length of `x`'s last axis, when it has one that is not empty.
fn last_axis(x: &FlexTensor) -> Option<usize> {
    let dims = x.shape();
    let width = *dims.last()?;
    (width > 0).then_some(width)
}

/// Rows of a softmax, `width` elements each: the scores `rows` (plus `bias`) turned into
/// probabilities in place.
struct SoftmaxRows<'a> {
    rows: &'a mut [f32],
    bias: Option<&'a [f32]>,
    width: usize,
}

impl Kernel for SoftmaxRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let w = self.width;
        for (r, y) in self.rows.chunks_exact_mut(w).enumerate() {
            // The biased scores, kept in `y` until they become probabilities.
            if let Some(b) = self.bias {
                for (y, &b) in y.iter_mut().zip(&b[r * w..(r + 1) * w]) {
                    *y += b;
                }
            }
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

/// Rows of softmax's input gradient: `dx` over the output gradient `g`, from the output `y`.
struct SoftmaxGradientRows<'a> {
    g_then_dx: &'a mut [f32],
    y: &'a [f32],
    width: usize,
}

impl Kernel for SoftmaxGradientRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let w = self.width;
        let rows = self
            .g_then_dx
            .chunks_exact_mut(w)
            .zip(self.y.chunks_exact(w));
        for (g_then_dx, y) in rows {
            let along = sum_by_pairs(y, g_then_dx, |y, g| y * g);
            for (g, &y) in g_then_dx.iter_mut().zip(y) {
                *g = y * (*g - along);
            }
        }
    }
}
