//! Softmax over the last axis, with an additive mask, and its backward: one pass a row each way
//! on the vectorized `exp` of `math`.

use super::math::exp;
use super::{f32s, like, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

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
