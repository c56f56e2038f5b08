//! LayerNorm and RMSNorm row by row while each row is in cache: RMSNorm's forward, the forward
//! of either after an addition (LaX's `Norm(z + g(h))`), and both backward passes. Every pass
//! over a row is a loop the compiler vectorizes (sums on `LANES` accumulators).

#[cfg(target_arch = "x86_64")]
use super::norm_avx512;
use super::{
    f32s, like, output, sum4_by, sum4_by_pairs, sum_by, sum_by_pairs, vectorized, written,
    written_part, Kernel, CHUNK,
};
use burn::backend::flex::FlexTensor;
use burn::tensor::{TensorData, TensorMetadata};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// RMSNorm of (rows, width) `x` with scale `gamma` (width elements): `y = x · r · γ` with
/// `r = 1/√(mean(x²) + ε)` per row, one pass over `x` where the composed form makes seven.
/// `None` unless contiguous f32 of matching widths.
pub fn rms_norm(x: &FlexTensor, gamma: &FlexTensor, epsilon: f64) -> Option<FlexTensor> {
    rms_norm_on(x, gamma, epsilon, true)
}

/// [`rms_norm`], whole blocks of sixteen rows by `norm_avx512` if
/// `sixteen_row_blocks` (a switch for the test that compares the two paths).
fn rms_norm_on(
    x: &FlexTensor,
    gamma: &FlexTensor,
    epsilon: f64,
    sixteen_row_blocks: bool,
) -> Option<FlexTensor> {
    let (xs, gs) = (f32s(x)?, f32s(gamma)?);
    let width = rows_of(x, gs.len())?;
    let mut y = output(xs.len());
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
                sixteen_row_blocks,
            })
        });
    // SAFETY: `NormRows` writes every element of its `y`, and the tasks' `y` cover the buffer.
    Some(like(x, unsafe { written(y) }))
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
    add_norm_on([x, addend], gamma, beta, epsilon, true)
}

/// [`add_norm`], whole blocks of sixteen rows by `norm_avx512` if
/// `sixteen_row_blocks` (a switch for the test that compares the two paths).
fn add_norm_on(
    [x, addend]: [&FlexTensor; 2],
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    epsilon: f64,
    sixteen_row_blocks: bool,
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
    let (mut y, mut sum) = (output(xs.len()), output(xs.len()));
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
                sixteen_row_blocks,
            })
        });
    // SAFETY: `NormRows` writes every element of its `y` and `sum`, which the tasks cover.
    let (y, sum) = unsafe { (written(y), written(sum)) };
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
    norm_backward_on([x, gamma, g], epsilon, centered, true)
}

/// [`norm_backward`], whole blocks of sixteen rows by `norm_avx512` if
/// `sixteen_row_blocks` (a switch for the test that compares the two paths).
fn norm_backward_on(
    [x, gamma, g]: [&FlexTensor; 3],
    epsilon: f64,
    centered: bool,
    sixteen_row_blocks: bool,
) -> Option<[FlexTensor; 3]> {
    let (xs, gammas, gs) = (f32s(x)?, f32s(gamma)?, f32s(g)?);
    let width = rows_of(x, gammas.len())?;
    if gs.len() != xs.len() {
        return None;
    }
    let eps = epsilon as f32;
    let mut dx = output(xs.len());
    let per_task = CHUNK.div_ceil(width) * width;
    let mut partial = Vec::new();
    dx.par_chunks_mut(per_task)
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
                sixteen_row_blocks,
            });
            sums
        })
        .collect_into_vec(&mut partial);
    // The tasks' sums added in task order: rayon's `reduce` pairs them as its splits fell,
    // which depends on which thread stole what, and made the gradients differ run to run.
    let sums = partial
        .into_iter()
        .fold(ColumnSums::new(width), ColumnSums::add);
    // SAFETY: `NormGradientRows` writes every element of its `dx`, which the tasks cover.
    let dx = unsafe { written(dx) };
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
    y: &'a mut [MaybeUninit<f32>],
    x: &'a [f32],
    add: Option<(&'a [f32], &'a mut [MaybeUninit<f32>])>,
    params: [&'a [f32]; 2],
    eps: f32,
    centered: bool,
    /// Whether whole blocks of sixteen rows may take `norm_avx512` (tests turn it off to
    /// compare the two paths).
    sixteen_row_blocks: bool,
}

impl Kernel for NormRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(mut self) {
        let w = self.params[0].len();
        let (eps, centered, params) = (self.eps, self.centered, self.params);
        let done = w * sixteen_rows_forward(&mut self);
        let (y, x) = (&mut self.y[done..], &self.x[done..]);
        let blocks = y.chunks_mut(4 * w).zip(x.chunks(4 * w));
        match self.add {
            None => {
                for (y, x) in blocks {
                    normalize_rows(y, x, params, eps, centered);
                }
            }
            Some((addend, sum)) => {
                let (addend, sum) = (&addend[done..], &mut sum[done..]);
                let sums = addend.chunks(4 * w).zip(sum.chunks_mut(4 * w));
                for ((y, x), (a, sum)) in blocks.zip(sums) {
                    for ((s, &x), &a) in sum.iter_mut().zip(x).zip(a) {
                        s.write(x + a);
                    }
                    // SAFETY: the loop above wrote the whole block.
                    let sum = unsafe { written_part(sum) };
                    normalize_rows(y, sum, params, eps, centered);
                }
            }
        }
    }
}

/// [`normalize_row`] over up to four rows (`x` holds `y`'s rows, of γ's width): four at a
/// time, their statistics side by side ([`sum4_by`]).
#[inline(always)]
fn normalize_rows(
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    params: [&[f32]; 2],
    eps: f32,
    centered: bool,
) {
    let w = params[0].len();
    if x.len() != 4 * w {
        for (y, x) in y.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
            let statistics = row_statistics(x, eps, centered);
            write_normalized(y, x, params, statistics);
        }
        return;
    }
    let xs = four_rows(x, w);
    let statistics = four_rows_statistics(xs, eps, centered);
    for ((y, x), statistics) in y.chunks_exact_mut(w).zip(xs).zip(statistics) {
        write_normalized(y, x, params, statistics);
    }
}

/// Rows of a norm's backward pass: `dx`, with the rows' terms of dγ and dβ added to `sums`.
struct NormGradientRows<'a> {
    dx: &'a mut [MaybeUninit<f32>],
    x: &'a [f32],
    g: &'a [f32],
    gammas: &'a [f32],
    sums: &'a mut ColumnSums,
    eps: f32,
    centered: bool,
    /// As `NormRows::sixteen_row_blocks`.
    sixteen_row_blocks: bool,
}

impl Kernel for NormGradientRows<'_> {
    type Output = ();

    #[inline(always)]
    fn run(mut self) {
        let w = self.gammas.len();
        let done = w * sixteen_rows_backward(&mut self);
        let (dx, x, g) = (&mut self.dx[done..], &self.x[done..], &self.g[done..]);
        let blocks = dx.chunks_mut(4 * w).zip(x.chunks(4 * w));
        for ((dx, x), g) in blocks.zip(g.chunks(4 * w)) {
            norm_rows_backward(
                dx,
                [&mut self.sums.gamma, &mut self.sums.beta],
                [x, self.gammas, g],
                self.eps,
                self.centered,
            );
        }
    }
}

/// The first whole blocks of sixteen rows of a forward task by `norm_avx512` where it applies;
/// how many rows it did (none elsewhere).
#[inline(always)]
fn sixteen_rows_forward(work: &mut NormRows<'_>) -> usize {
    #[cfg(target_arch = "x86_64")]
    if work.sixteen_row_blocks && norm_avx512::applies(work.params[0].len()) {
        return norm_avx512::forward(norm_avx512::ForwardRows {
            y: &mut *work.y,
            x: work.x,
            add: work.add.as_mut().map(|(addend, sum)| (*addend, &mut **sum)),
            gamma: work.params[0],
            beta: work.params[1],
            eps: work.eps,
            centered: work.centered,
        });
    }
    0
}

/// As [`sixteen_rows_forward`], for a backward task.
#[inline(always)]
fn sixteen_rows_backward(work: &mut NormGradientRows<'_>) -> usize {
    #[cfg(target_arch = "x86_64")]
    if work.sixteen_row_blocks && norm_avx512::applies(work.gammas.len()) {
        return norm_avx512::backward(norm_avx512::GradientRows {
            dx: &mut *work.dx,
            x: work.x,
            g: work.g,
            gamma: work.gammas,
            d_gamma: &mut work.sums.gamma,
            d_beta: &mut work.sums.beta,
            eps: work.eps,
            centered: work.centered,
        });
    }
    0
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

/// The four rows of width `w` that `t` holds.
#[inline(always)]
fn four_rows(t: &[f32], w: usize) -> [&[f32]; 4] {
    std::array::from_fn(|k| &t[k * w..(k + 1) * w])
}

/// [`row_statistics`] of four rows, side by side: each row's the same operations as alone.
#[inline(always)]
fn four_rows_statistics(xs: [&[f32]; 4], eps: f32, centered: bool) -> [(f32, f32); 4] {
    let n = xs[0].len() as f32;
    let means = if centered {
        sum4_by(xs, |_, v| v).map(|sum| sum / n)
    } else {
        [0.0; 4]
    };
    let spreads = sum4_by(xs, |k, v| (v - means[k]) * (v - means[k]));
    std::array::from_fn(|k| (means[k], 1.0 / (spreads[k] / n + eps).sqrt()))
}

/// `y = (x − mean) · r · γ (+ β)` for one row of statistics `(mean, r)`, `betas` empty for
/// none.
#[inline(always)]
fn write_normalized(
    y: &mut [MaybeUninit<f32>],
    x: &[f32],
    [gammas, betas]: [&[f32]; 2],
    (mean, r): (f32, f32),
) {
    for ((y, &x), &g) in y.iter_mut().zip(x).zip(gammas) {
        y.write((x - mean) * r * g);
    }
    // SAFETY: the loop above wrote the whole row.
    let y = unsafe { written_part(y) };
    for (y, &b) in y.iter_mut().zip(betas) {
        *y += b;
    }
}

/// [`norm_backward`] over up to four rows (`x`, `g` and `dx` of as many rows of γ's width),
/// their dγ and dβ terms added to `sums` in row order: four at a time, their sums side by side
/// ([`sum4_by`]), each row's arithmetic the same as alone.
#[inline(always)]
fn norm_rows_backward(
    dx: &mut [MaybeUninit<f32>],
    sums: [&mut [f32]; 2],
    [x, gamma, g]: [&[f32]; 3],
    eps: f32,
    centered: bool,
) {
    let w = gamma.len();
    let n = w as f32;
    if x.len() != 4 * w {
        let [d_gamma, d_beta] = sums;
        let rows = dx.chunks_exact_mut(w).zip(x.chunks_exact(w));
        for ((dx, x), g) in rows.zip(g.chunks_exact(w)) {
            let statistics = row_statistics(x, eps, centered);
            let dx = write_h(dx, g, gamma);
            let mean_h = if centered { sum_by(dx, |h| h) / n } else { 0.0 };
            let along = sum_by_pairs(dx, x, |h, x| h * (x - statistics.0));
            let means = (mean_h, statistics.1 * along / n);
            finish_row_backward(dx, [d_gamma, d_beta], [x, g], statistics, means);
        }
        return;
    }
    let (xs, gs) = (four_rows(x, w), four_rows(g, w));
    let statistics = four_rows_statistics(xs, eps, centered);
    let dx = write_h(dx, g, gamma);
    let hs = four_rows(dx, w);
    let mean_h = if centered {
        sum4_by(hs, |_, h| h).map(|sum| sum / n)
    } else {
        [0.0; 4]
    };
    let along = sum4_by_pairs(hs, xs, |k, h, x| h * (x - statistics[k].0));
    let [d_gamma, d_beta] = sums;
    for (k, dx) in dx.chunks_exact_mut(w).enumerate() {
        let means = (mean_h[k], statistics[k].1 * along[k] / n);
        let sums = [&mut *d_gamma, &mut *d_beta];
        finish_row_backward(dx, sums, [xs[k], gs[k]], statistics[k], means);
    }
}

/// `h = g ⊙ γ` written into `dx`, row by row (`γ` one row's width), which the backward pass
/// then turns into the gradient in place.
#[inline(always)]
fn write_h<'a>(dx: &'a mut [MaybeUninit<f32>], g: &[f32], gamma: &[f32]) -> &'a mut [f32] {
    let w = gamma.len();
    for (dx, g) in dx.chunks_exact_mut(w).zip(g.chunks_exact(w)) {
        for ((h, &g), &gamma) in dx.iter_mut().zip(g).zip(gamma) {
            h.write(g * gamma);
        }
    }
    // SAFETY: the loops above wrote every row (`dx` holds whole rows, as `g`).
    unsafe { written_part(dx) }
}

/// The end of one row's backward pass, given its statistics `(mean, r)` and the means of `h`
/// and of `h ⊙ x̂` (`mean(h ⊙ x̂) = r · mean(h ⊙ (x − mean))`): its terms of dγ and dβ, and
/// `dx = r (h − mean(h) − x̂ mean(h ⊙ x̂))` in place of `h`.
#[inline(always)]
fn finish_row_backward(
    dx: &mut [f32],
    [d_gamma, d_beta]: [&mut [f32]; 2],
    [x, g]: [&[f32]; 2],
    (mean, r): (f32, f32),
    (mean_h, mean_hx): (f32, f32),
) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(rows: usize, width: usize, seed: u64) -> FlexTensor {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
        let values: Vec<f32> = (0..rows * width)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                // Values off zero by a random offset, as a latent's rows are.
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.3) * 3.0
            })
            .collect();
        FlexTensor::from_data(TensorData::new(values, [rows, width]))
    }

    fn bits(t: &FlexTensor) -> Vec<u32> {
        f32s(t).expect("f32").iter().map(|v| v.to_bits()).collect()
    }

    /// The sixteen-row AVX-512 path and the portable one give the same bits, forward and
    /// backward, LayerNorm and RMSNorm, for widths it takes (16 to 256) and ones it does
    /// not, and row counts that leave the portable code a remainder of each size class (none,
    /// under four, four and more). On a processor without AVX-512 both are the portable path.
    #[test]
    fn sixteen_rows_at_once_equal_the_portable_rows_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        let has_avx512 = is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let has_avx512 = false;
        if !has_avx512 {
            eprintln!("no AVX-512 here: both paths are the portable code, compared all the same");
        }
        for width in [16, 32, 48, 64, 96, 128, 176, 256, 272, 384] {
            // The sixteen-row path is taken exactly where it should be (not vacuously equal).
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                norm_avx512::applies(width),
                has_avx512 && width <= 256,
                "width {width}"
            );
            for rows in [16, 35, 100, 1024, 1030] {
                let case = format!("{rows} x {width}");
                let (x, a, g) = (
                    tensor(rows, width, 1),
                    tensor(rows, width, 2),
                    tensor(rows, width, 3),
                );
                let (gamma, beta) = (tensor(1, width, 4), tensor(1, width, 5));
                for beta in [Some(&beta), None] {
                    let [wide, portable] = [true, false]
                        .map(|s| add_norm_on([&x, &a], &gamma, beta, 1e-6, s).expect("applies"));
                    for (w, p) in wide.iter().zip(&portable) {
                        assert_eq!(bits(w), bits(p), "add_norm, {case}, β {}", beta.is_some());
                    }
                    let centered = beta.is_some();
                    let [wide, portable] = [true, false].map(|s| {
                        norm_backward_on([&x, &gamma, &g], 1e-6, centered, s).expect("applies")
                    });
                    for (w, p) in wide.iter().zip(&portable) {
                        assert_eq!(bits(w), bits(p), "backward, {case}, centered {centered}");
                    }
                }
                let [wide, portable] =
                    [true, false].map(|s| rms_norm_on(&x, &gamma, 1e-6, s).expect("applies"));
                assert_eq!(bits(&wide), bits(&portable), "rms_norm, {case}");
            }
        }
    }
}
