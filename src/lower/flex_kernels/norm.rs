//! LayerNorm and RMSNorm row by row while each row is in cache: RMSNorm's forward, the forward
//! of either after an addition (LaX's `Norm(z + g(h))`), and both backward passes. Every pass
//! over a row is a loop the compiler vectorizes (sums on `LANES` accumulators).

use super::{f32s, like, sum_by, sum_by_pairs, vectorized, Kernel, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::{TensorData, TensorMetadata};
use rayon::prelude::*;

/// RMSNorm of (rows, width) `x` with scale `gamma` (width elements): `y = x · r · γ` with
/// `r = 1/√(mean(x²) + ε)` per row, one pass over `x` where the composed form makes seven.
/// `None` unless contiguous f32 of matching widths.
pub fn rms_norm(x: &FlexTensor, gamma: &FlexTensor, epsilon: f64) -> Option<FlexTensor> {
    let (xs, gs) = (f32s(x)?, f32s(gamma)?);
    let width = rows_of(x, gs.len())?;
    let mut y = vec![0.0; xs.len()];
    let eps = epsilon as f32;
    let per_task = CHUNK.div_ceil(width) * width;
    y.par_chunks_mut(per_task)
        .zip(xs.par_chunks(per_task))
        .for_each(|(y, x)| {
            vectorized(NormRows {
                y,
                x,
                add: None,
                params: [gs, &[]],
                eps,
                centered: false,
            })
        });
    Some(like(x, y))
}

/// LayerNorm (with its shift `beta`) or RMSNorm (`beta` None) of `x + addend`, both
/// (rows, width), with scale `gamma`: `[y, x + addend]`, the sum kept for the backward pass.
/// One pass over the inputs where the composed form adds them in a pass of its own first.
/// `None` unless contiguous f32 of matching shapes.
pub fn add_norm(
    [x, addend]: [&FlexTensor; 2],
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    epsilon: f64,
) -> Option<[FlexTensor; 2]> {
    let (xs, adds, gammas) = (f32s(x)?, f32s(addend)?, f32s(gamma)?);
    let betas = match beta {
        Some(b) => f32s(b)?,
        None => &[],
    };
    let width = rows_of(x, gammas.len())?;
    if addend.shape() != x.shape() || (beta.is_some() && betas.len() != width) {
        return None;
    }
    let eps = epsilon as f32;
    let (mut y, mut sum) = (vec![0.0; xs.len()], vec![0.0; xs.len()]);
    let per_task = CHUNK.div_ceil(width) * width;
    y.par_chunks_mut(per_task)
        .zip(sum.par_chunks_mut(per_task))
        .zip(xs.par_chunks(per_task).zip(adds.par_chunks(per_task)))
        .for_each(|((y, sum), (x, add))| {
            vectorized(NormRows {
                y,
                x,
                add: Some((add, sum)),
                params: [gammas, betas],
                eps,
                centered: beta.is_some(),
            })
        });
    Some([like(x, y), like(x, sum)])
}

/// The gradients of LayerNorm (`centered`) or RMSNorm over (rows, width) `x` with scale
/// `gamma`, given the output gradient `g`: `[dx, dγ, dβ]`, with `x̂` the normalized row,
/// `r` its inverse deviation (inverse RMS), `h = g ⊙ γ`:
/// `dx = r (h − mean(h) − x̂ mean(h ⊙ x̂))` (RMSNorm: without `mean(h)`), `dγ = Σrows g ⊙ x̂`,
/// `dβ = Σrows g`, the last two as (1, width). Each row is read a few times while in cache,
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
            vectorized(NormGradientRows {
                dx,
                x,
                g,
                gammas,
                sums: &mut sums,
                eps,
                centered,
            });
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

/// Rows of a norm's forward pass: `y` = the norm of `x`, or of `x + addend` with the sum
/// written to `sum` (`add: Some((addend, sum))`); `params` are γ (a row's width) and β (empty
/// for none).
struct NormRows<'a> {
    y: &'a mut [f32],
    x: &'a [f32],
    add: Option<(&'a [f32], &'a mut [f32])>,
    params: [&'a [f32]; 2],
    eps: f32,
    centered: bool,
}

impl Kernel for NormRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let w = self.params[0].len();
        let (eps, centered) = (self.eps, self.centered);
        let rows = self.y.chunks_exact_mut(w).zip(self.x.chunks_exact(w));
        match self.add {
            None => {
                for (y, x) in rows {
                    normalize_row(y, x, self.params, eps, centered);
                }
            }
            Some((addend, sum)) => {
                let sums = addend.chunks_exact(w).zip(sum.chunks_exact_mut(w));
                for ((y, x), (a, sum)) in rows.zip(sums) {
                    for ((s, &x), &a) in sum.iter_mut().zip(x).zip(a) {
                        *s = x + a;
                    }
                    normalize_row(y, sum, self.params, eps, centered);
                }
            }
        }
    }
}

/// Rows of a norm's backward pass: `dx`, with the rows' terms of dγ and dβ added to `sums`.
struct NormGradientRows<'a> {
    dx: &'a mut [f32],
    x: &'a [f32],
    g: &'a [f32],
    gammas: &'a [f32],
    sums: &'a mut ColumnSums,
    eps: f32,
    centered: bool,
}

impl Kernel for NormGradientRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let w = self.gammas.len();
        let rows = self.dx.chunks_exact_mut(w).zip(self.x.chunks_exact(w));
        for ((dx, x), g) in rows.zip(self.g.chunks_exact(w)) {
            norm_row_backward(
                [dx, &mut self.sums.gamma, &mut self.sums.beta],
                [x, self.gammas, g],
                self.eps,
                self.centered,
            );
        }
    }
}

/// A row's mean (0 for RMSNorm, not `centered`) and inverse deviation
/// `1/√(mean((x − mean)²) + ε)`.
#[inline(always)]
fn row_statistics(x: &[f32], eps: f32, centered: bool) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = if centered { sum_by(x, |v| v) / n } else { 0.0 };
    let spread = sum_by(x, |v| (v - mean) * (v - mean));
    (mean, 1.0 / (spread / n + eps).sqrt())
}

/// `y = (x − mean) · r · γ (+ β)` for one row, `betas` empty for none.
#[inline(always)]
fn normalize_row(y: &mut [f32], x: &[f32], [gammas, betas]: [&[f32]; 2], eps: f32, centered: bool) {
    let (mean, r) = row_statistics(x, eps, centered);
    for ((y, &x), &g) in y.iter_mut().zip(x).zip(gammas) {
        *y = (x - mean) * r * g;
    }
    for (y, &b) in y.iter_mut().zip(betas) {
        *y += b;
    }
}

/// One row of [`norm_backward`]: its `dx`, and its terms added to the column sums. `h = g ⊙ γ`
/// is formed in `dx` first, then turned into the gradient in place.
#[inline(always)]
fn norm_row_backward(
    [dx, d_gamma, d_beta]: [&mut [f32]; 3],
    [x, gamma, g]: [&[f32]; 3],
    eps: f32,
    centered: bool,
) {
    let n = x.len() as f32;
    let (mean, r) = row_statistics(x, eps, centered);
    for ((h, &g), &gamma) in dx.iter_mut().zip(g).zip(gamma) {
        *h = g * gamma;
    }
    let mean_h = if centered { sum_by(dx, |h| h) / n } else { 0.0 };
    // Σ h ⊙ x̂ = r · Σ h ⊙ (x − mean)
    let mean_hx = r * sum_by_pairs(dx, x, |h, x| h * (x - mean)) / n;
    for (((dg, db), &g), &x) in d_gamma.iter_mut().zip(d_beta.iter_mut()).zip(g).zip(x) {
        *dg += g * (x - mean) * r;
        *db += g;
    }
    for (dx, &x) in dx.iter_mut().zip(x) {
        let normalized = (x - mean) * r;
        *dx = r * (*dx - mean_h - normalized * mean_hx);
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
