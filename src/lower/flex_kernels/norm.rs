//! RMSNorm's forward and the LayerNorm and RMSNorm backward passes, row by row while each row
//! is in cache.

use super::{f32s, like, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::{TensorData, TensorMetadata};
use rayon::prelude::*;

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
    Some([
        like(x, y),
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
