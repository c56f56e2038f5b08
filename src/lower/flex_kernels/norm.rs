//! LayerNorm and RMSNorm row by row while each row is in cache: RMSNorm's forward, the forward
//! of either after an addition (LaX's `Norm(z + g(h))`), and both backward passes. Every pass
//! over a row is a loop the compiler vectorizes (sums on `LANES` accumulators).

#[cfg(target_arch = "x86_64")]
use super::norm_blocks;
use super::{
    f32s, like, output, overwritable, own_f32s, per_task, sum4_by, sum4_by_pairs, sum_by,
    sum_by_pairs, total, vectorized, written, written_part, Kernel, LANES,
};
use burn::backend::flex::FlexTensor;
use burn::tensor::{TensorData, TensorMetadata};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows a task takes a multiple of, and the rows whose terms of dγ and dβ the backward pass
/// sums apart before adding the groups' sums in order: `norm_blocks`' sixteen (the portable
/// code's four divide it), so that only a pass's last task has rows those blocks leave to the
/// portable code, and both paths sum the same rows together.
const ROWS_TOGETHER: usize = 16;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(ROWS_TOGETHER == norm_blocks::BLOCK);

/// RMSNorm of (rows, width) `x` with scale `gamma` (width elements): `y = x · r · γ` with
/// `r = 1/√(mean(x²) + ε)` per row, one pass over `x` where the composed form makes seven.
/// `None` unless contiguous f32 of matching widths.
pub fn rms_norm(x: &FlexTensor, gamma: &FlexTensor, epsilon: f64) -> Option<FlexTensor> {
    rms_norm_on(x, gamma, epsilon, true)
}

/// [`rms_norm`], whole blocks of sixteen rows by `norm_blocks` if
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
    let task_len = per_task(xs.len(), ROWS_TOGETHER * width);
    y.par_chunks_mut(task_len)
        .zip(xs.par_chunks(task_len))
        .for_each(|(y, x)| {
            vectorized(NormRows {
                rows: Rows::Apart { y, x },
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
/// (rows, width), with scale `gamma`, written over `x`; returns the sum `x + addend`, kept for
/// the backward pass. One pass over the inputs where the composed form adds them in a pass of
/// its own first, and no new buffer for the norm: `x`, a LaX latent just out of its product
/// and read by nothing else, is still in cache (`own_f32s`; a buffer `x` shares is copied
/// first, never changed). `None`, and `x` untouched, unless f32 of matching shapes (the
/// addend, γ and β contiguous).
pub fn add_norm(
    x: &mut FlexTensor,
    addend: &FlexTensor,
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    epsilon: f64,
) -> Option<FlexTensor> {
    add_norm_on(x, addend, 1.0, gamma, beta, epsilon, true)
}

/// [`add_norm`] of `x + addend · alpha` for a one-element `alpha` (a LaX pathway's linear gate,
/// `Norm(z + α h)`), each element of the sum `x + addend · α` as the broadcast product and the
/// add compute it, one after the other; returns that sum. `None`, and `x` untouched, where
/// [`add_norm`] declines or `alpha` is not one f32.
pub fn add_scaled_norm(
    x: &mut FlexTensor,
    [addend, alpha]: [&FlexTensor; 2],
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    epsilon: f64,
) -> Option<FlexTensor> {
    let &[scale] = f32s(alpha)? else {
        return None;
    };
    add_norm_on(x, addend, scale, gamma, beta, epsilon, true)
}

/// [`add_scaled_norm`] by a factor `scale` (1 for [`add_norm`]: `x + a · 1` is `x + a` to the
/// bit), whole blocks of sixteen rows by `norm_blocks` if `sixteen_row_blocks` (a switch for
/// the test that compares the two paths).
fn add_norm_on(
    x: &mut FlexTensor,
    addend: &FlexTensor,
    scale: f32,
    gamma: &FlexTensor,
    beta: Option<&FlexTensor>,
    epsilon: f64,
    sixteen_row_blocks: bool,
) -> Option<FlexTensor> {
    let (adds, gammas) = (f32s(addend)?, f32s(gamma)?);
    let betas = match beta {
        Some(b) => f32s(b)?,
        None => &[],
    };
    let width = rows_of(x, gammas.len())?;
    if !overwritable(x) || addend.shape() != x.shape() || (beta.is_some() && betas.len() != width) {
        return None;
    }
    let eps = epsilon as f32;
    let mut sum = output(adds.len());
    let task_len = per_task(adds.len(), ROWS_TOGETHER * width);
    own_f32s(x)
        .par_chunks_mut(task_len)
        .zip(sum.par_chunks_mut(task_len))
        .zip(adds.par_chunks(task_len))
        .for_each(|((x_then_y, sum), addend)| {
            vectorized(NormRows {
                rows: Rows::SumOver {
                    x_then_y,
                    addend,
                    scale,
                    sum,
                },
                params: [gammas, betas],
                eps,
                centered: beta.is_some(),
                sixteen_row_blocks,
            })
        });
    // SAFETY: `NormRows` writes every element of its `sum`, which the tasks cover.
    Some(like(x, unsafe { written(sum) }))
}

/// The gradients of LayerNorm (`centered`) or RMSNorm over (rows, width) `x` with scale
/// `gamma`, given the output gradient `g`: `dx` written over `g`, and `[dγ, dβ]` returned,
/// with `x̂` the normalized row, `r` its inverse deviation (inverse RMS), `h = g ⊙ γ`:
/// `dx = r (h − mean(h) − x̂ mean(h ⊙ x̂))` (RMSNorm: without `mean(h)`), `dγ = Σrows g ⊙ x̂`,
/// `dβ = Σrows g`, the last two as (1, width). Each row is read a few times while in cache,
/// where the composed backward makes about fourteen passes over the whole tensor; `g`, just
/// computed, is in cache where a new buffer for `dx` is not (`own_f32s`: a buffer `g` shares
/// is copied first, never changed). `None`, and `g` untouched, unless f32 of matching shapes
/// (`x` and γ contiguous).
pub fn norm_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    g: &mut FlexTensor,
    epsilon: f64,
    centered: bool,
) -> Option<[FlexTensor; 2]> {
    let [d_gamma, d_beta] = norm_backward_on(x, gamma, g, None, (epsilon, centered), true)?.0;
    Some([d_gamma, d_beta])
}

/// [`norm_backward`] of a norm of a sum whose addend a linear gate scales, `Norm(z + h · α)`
/// (`x` the kept sum): also the addend's gradient `dh = dx · α` and `dα = Σ dx ⊙ h`, shaped as
/// `alpha`, each group of rows' share taken as soon as its `dx` is written (in cache, where the
/// gate's own backward pass read it back from memory; BENCHMARKS.md, attempt 114).
/// `[dγ, dβ, dh, dα]`. `None`, and `g` untouched, where [`norm_backward`] declines, `h` is
/// not contiguous f32 of `x`'s shape, or `alpha` not one f32.
pub fn scaled_norm_backward(
    x: &FlexTensor,
    gamma: &FlexTensor,
    g: &mut FlexTensor,
    [h, alpha]: [&FlexTensor; 2],
    epsilon: f64,
    centered: bool,
) -> Option<[FlexTensor; 4]> {
    scaled_norm_backward_on(x, gamma, g, [h, alpha], (epsilon, centered), true)
}

/// [`scaled_norm_backward`], with the switch of [`norm_backward_on`].
fn scaled_norm_backward_on(
    x: &FlexTensor,
    gamma: &FlexTensor,
    g: &mut FlexTensor,
    [h, alpha]: [&FlexTensor; 2],
    (epsilon, centered): (f64, bool),
    sixteen_row_blocks: bool,
) -> Option<[FlexTensor; 4]> {
    let (hs, &[scale]) = (f32s(h)?, f32s(alpha)?) else {
        return None;
    };
    if h.shape() != x.shape() {
        return None;
    }
    let mut dh = output(hs.len());
    let gate = GateGradient {
        h: hs,
        alpha: scale,
        dh: &mut dh,
    };
    let kernel = (epsilon, centered);
    let ([d_gamma, d_beta], lanes) =
        norm_backward_on(x, gamma, g, Some(gate), kernel, sixteen_row_blocks)?;
    let d_alpha = total(lanes.expect("a gate's lanes").try_into().expect("LANES"));
    // SAFETY: the backward pass wrote `dh` whole (`GateGradient`).
    let dh = like(h, unsafe { written(dh) });
    let d_alpha = FlexTensor::from_data(TensorData::new(vec![d_alpha], alpha.shape()));
    Some([d_gamma, d_beta, dh, d_alpha])
}

/// A linear gate's part of a norm's backward pass ([`scaled_norm_backward`]): the addend `h`,
/// the gate's `α`, and the buffer for `dh` (as many elements as `h`).
pub(super) struct GateGradient<'a> {
    pub h: &'a [f32],
    pub alpha: f32,
    pub dh: &'a mut [MaybeUninit<f32>],
}

/// [`norm_backward`], whole blocks of sixteen rows by `norm_blocks` if
/// `sixteen_row_blocks` (a switch for the test that compares the two paths), and with a
/// linear gate's gradients where `gate` is given: dγ, dβ, and the lanes of `dα` (`None`
/// without a gate) to be added up ([`total`]).
fn norm_backward_on(
    x: &FlexTensor,
    gamma: &FlexTensor,
    g: &mut FlexTensor,
    gate: Option<GateGradient<'_>>,
    (epsilon, centered): (f64, bool),
    sixteen_row_blocks: bool,
) -> Option<([FlexTensor; 2], Option<Vec<f32>>)> {
    let (xs, gammas) = (f32s(x)?, f32s(gamma)?);
    let width = rows_of(x, gammas.len())?;
    if !overwritable(g) || g.shape() != x.shape() {
        return None;
    }
    let eps = epsilon as f32;
    let group = ROWS_TOGETHER * width;
    let task_len = per_task(xs.len(), group);
    // Each task's slots, one a group: the zip below cuts `partial` as the tasks' rows only if
    // a task is whole groups (else some slots would stay unwritten).
    assert!(task_len.is_multiple_of(group));
    let slot = slot_len(width, gate.is_some());
    // The gate's share of each task.
    let tasks = xs.len().div_ceil(task_len);
    let gates: Vec<Option<GateGradient<'_>>> = match gate {
        Some(GateGradient { h, alpha, dh }) => h
            .chunks(task_len)
            .zip(dh.chunks_mut(task_len))
            .map(|(h, dh)| Some(GateGradient { h, alpha, dh }))
            .collect(),
        None => (0..tasks).map(|_| None).collect(),
    };
    // dγ and dβ (and a gate's lanes of dα) of each group of rows, side by side: each task
    // zeroes its groups' slots (in parallel, and in its own cache) and fills them.
    let mut partial = output(xs.len().div_ceil(group) * slot);
    own_f32s(g)
        .par_chunks_mut(task_len)
        .zip(xs.par_chunks(task_len))
        .zip(partial.par_chunks_mut(task_len / group * slot))
        .zip(gates.into_par_iter())
        .for_each(|(((g_then_dx, x), sums), gate)| {
            sums.fill(MaybeUninit::new(0.0));
            // SAFETY: just written.
            let sums = unsafe { written_part(sums) };
            vectorized(NormGradientRows {
                g_then_dx,
                x,
                gammas,
                sums,
                gate,
                eps,
                centered,
                sixteen_row_blocks,
            })
        });
    // SAFETY: the tasks cover the buffer, and each zeroed its part.
    let mut sums = slots_in_row_order(unsafe { &written(partial) }, slot);
    let lanes = (slot > 2 * width).then(|| sums.split_off(2 * width));
    let d_beta = sums.split_off(width);
    let column = |values| FlexTensor::from_data(TensorData::new(values, [1, width]));
    Some(([column(sums), column(d_beta)], lanes))
}

/// The elements of a group's slot: its dγ and dβ terms (a row's width each), and a linear
/// gate's [`LANES`] of dα where there is one.
fn slot_len(width: usize, gated: bool) -> usize {
    2 * width + if gated { LANES } else { 0 }
}

/// The groups' slots (`slot` elements each: dγ, dβ, a gate's lanes), added element by element
/// in row order: the same bits however the rows fell into tasks (which depends on the number
/// of threads), and on every run (rayon's `reduce` would pair them as its splits fell, which
/// depends on which thread stole what).
fn slots_in_row_order(partial: &[f32], slot: usize) -> Vec<f32> {
    let mut sums = vec![0.0; slot];
    for group in partial.chunks_exact(slot) {
        for (sum, &part) in sums.iter_mut().zip(group) {
            *sum += part;
        }
    }
    sums
}

/// The width of `x`'s rows when `x` is 2-D with rows of `width` elements, else `None`.
fn rows_of(x: &FlexTensor, width: usize) -> Option<usize> {
    let dims = x.shape();
    (dims.num_dims() == 2 && dims.dims::<2>()[1] == width && width > 0).then_some(width)
}

/// Rows of a norm's forward pass (`rows`); `params` are γ (a row's width) and β (empty for
/// none).
struct NormRows<'a> {
    rows: Rows<'a>,
    params: [&'a [f32]; 2],
    eps: f32,
    centered: bool,
    /// Whether whole blocks of sixteen rows may take `norm_blocks` (tests turn it off to
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
        match self.rows {
            Rows::Apart { y, x } => {
                for (y, x) in y[done..].chunks_mut(4 * w).zip(x[done..].chunks(4 * w)) {
                    normalize_rows(y, x, params, eps, centered);
                }
            }
            Rows::SumOver {
                x_then_y,
                addend,
                scale,
                sum,
            } => {
                let blocks = x_then_y[done..].chunks_mut(4 * w);
                let sums = addend[done..]
                    .chunks(4 * w)
                    .zip(sum[done..].chunks_mut(4 * w));
                for (x_then_y, (a, sum)) in blocks.zip(sums) {
                    for ((s, &x), &a) in sum.iter_mut().zip(&*x_then_y).zip(a) {
                        s.write(x + a * scale);
                    }
                    // SAFETY: the loop above wrote the whole block.
                    let sum = unsafe { written_part(sum) };
                    // SAFETY: `normalize_rows` writes only initialized values.
                    let y = unsafe { as_output(x_then_y) };
                    normalize_rows(y, sum, params, eps, centered);
                }
            }
        }
    }
}

/// Where a forward task's rows come from and their norms go.
pub(super) enum Rows<'a> {
    /// The norm of `x` into `y`.
    Apart {
        y: &'a mut [MaybeUninit<f32>],
        x: &'a [f32],
    },
    /// `x + addend · scale` into `sum`, and its norm over `x`: each block of rows is read
    /// whole (into `sum`) before its norms are written.
    SumOver {
        x_then_y: &'a mut [f32],
        addend: &'a [f32],
        scale: f32,
        sum: &'a mut [MaybeUninit<f32>],
    },
}

impl Rows<'_> {
    /// The same rows, borrowed again.
    fn reborrow(&mut self) -> Rows<'_> {
        match self {
            Rows::Apart { y, x } => Rows::Apart { y, x },
            Rows::SumOver {
                x_then_y,
                addend,
                scale,
                sum,
            } => Rows::SumOver {
                x_then_y,
                addend,
                scale: *scale,
                sum,
            },
        }
    }
}

/// Initialized elements as a buffer for a kernel to write.
///
/// # Safety
/// The caller writes only initialized values through it (the elements must stay initialized).
unsafe fn as_output(values: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has f32's layout; the caller keeps the elements initialized.
    unsafe { &mut *(values as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// Normalizes up to four rows into `y` (`x` holds `y`'s rows, of γ's width): four at a time
/// with their statistics side by side ([`four_rows_statistics`]), fewer one by one.
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

/// Rows of a norm's backward pass: `dx` over the output gradient `g` (each row's `g` read
/// whole before its `dx` is written), with each group of [`ROWS_TOGETHER`] rows' terms of dγ
/// and dβ added, in row order, to its slot of `sums` (dγ then dβ, a row's width each, then a
/// gate's lanes of dα: [`slot_len`]; a slot for every group of the rows, the last maybe part
/// of one, each zero to begin with); and where a linear gate scaled the addend, its `dh` and
/// dα terms of each group ([`gate_group`]).
struct NormGradientRows<'a> {
    g_then_dx: &'a mut [f32],
    x: &'a [f32],
    gammas: &'a [f32],
    sums: &'a mut [f32],
    gate: Option<GateGradient<'a>>,
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
        let slot = slot_len(w, self.gate.is_some());
        let done = sixteen_rows_backward(&mut self);
        let group = ROWS_TOGETHER * w;
        let (start, slots) = (done * w, done / ROWS_TOGETHER * slot);
        let groups = self.g_then_dx[start..]
            .chunks_mut(group)
            .zip(self.x[start..].chunks(group))
            .zip(self.sums[slots..].chunks_exact_mut(slot));
        for (i, ((g_then_dx, x), slot)) in groups.enumerate() {
            let (d_gamma, rest) = slot.split_at_mut(w);
            let (d_beta, lanes) = rest.split_at_mut(w);
            for (g_then_dx, x) in g_then_dx.chunks_mut(4 * w).zip(x.chunks(4 * w)) {
                norm_rows_backward(
                    g_then_dx,
                    [&mut *d_gamma, &mut *d_beta],
                    [x, self.gammas],
                    self.eps,
                    self.centered,
                );
            }
            if let Some(gate) = &mut self.gate {
                let at = start + i * group;
                let (h, dh) = (&gate.h[at..], &mut gate.dh[at..]);
                gate_group([g_then_dx, h], gate.alpha, dh, lanes);
            }
        }
    }
}

/// A linear gate's share of one group of rows, once the group's `dx` is written: `dh = dx · α`
/// into `dh`, and `dx ⊙ h` added to the group's [`LANES`] lanes of dα (element `i` of the
/// group into lane `i % LANES`, in order). `h` and `dh` begin at the group's first element.
/// The sixteen-row path calls this too, so both paths give the same bits by construction.
#[inline(always)]
pub(super) fn gate_group(
    [dx, h]: [&[f32]; 2],
    alpha: f32,
    dh: &mut [MaybeUninit<f32>],
    lanes: &mut [f32],
) {
    let mut sums: [f32; LANES] = lanes.try_into().expect("LANES lanes");
    let (h, dh) = (&h[..dx.len()], &mut dh[..dx.len()]);
    let mut chunks = dx.chunks_exact(LANES).zip(h.chunks_exact(LANES));
    let mut outs = dh.chunks_exact_mut(LANES);
    // Whole chunks as arrays: lengths the compiler knows, so the loop vectorizes.
    let array = |c: &[f32]| -> [f32; LANES] { c.try_into().expect("LANES elements") };
    for ((dx, h), dh) in (&mut chunks).zip(&mut outs) {
        let (dx, h) = (array(dx), array(h));
        let dh: &mut [MaybeUninit<f32>; LANES] = dh.try_into().expect("LANES elements");
        for i in 0..LANES {
            dh[i].write(dx[i] * alpha);
            sums[i] += dx[i] * h[i];
        }
    }
    let full = dx.len() - dx.len() % LANES;
    for (i, dh) in outs.into_remainder().iter_mut().enumerate() {
        dh.write(dx[full + i] * alpha);
        sums[i] += dx[full + i] * h[full + i];
    }
    lanes.copy_from_slice(&sums);
}

/// The first whole blocks of sixteen rows of a forward task by `norm_blocks` where it applies;
/// how many rows it did (none elsewhere).
#[inline(always)]
fn sixteen_rows_forward(work: &mut NormRows<'_>) -> usize {
    #[cfg(target_arch = "x86_64")]
    if work.sixteen_row_blocks && norm_blocks::applies(work.params[0].len()) {
        return norm_blocks::forward(norm_blocks::ForwardRows {
            rows: work.rows.reborrow(),
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
    if work.sixteen_row_blocks && norm_blocks::applies(work.gammas.len()) {
        return norm_blocks::backward(norm_blocks::GradientRows {
            g_then_dx: &mut *work.g_then_dx,
            x: work.x,
            gamma: work.gammas,
            sums: &mut *work.sums,
            gate: work.gate.as_mut().map(|gate| GateGradient {
                h: gate.h,
                alpha: gate.alpha,
                dh: &mut *gate.dh,
            }),
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

/// [`norm_backward`] over up to four rows (`x`, and `g` to turn into `dx`, of as many rows of
/// γ's width), their dγ and dβ terms added to `sums` in row order: four at a time, their sums
/// side by side ([`sum4_by`]), each row's arithmetic the same as alone. A row's dγ and dβ
/// terms are taken from `g` before `h = g ⊙ γ` is written over it.
#[inline(always)]
fn norm_rows_backward(
    g_then_dx: &mut [f32],
    sums: [&mut [f32]; 2],
    [x, gamma]: [&[f32]; 2],
    eps: f32,
    centered: bool,
) {
    let w = gamma.len();
    let n = w as f32;
    let [d_gamma, d_beta] = sums;
    if x.len() != 4 * w {
        for (g_then_dx, x) in g_then_dx.chunks_exact_mut(w).zip(x.chunks_exact(w)) {
            let statistics = row_statistics(x, eps, centered);
            add_column_terms([d_gamma, d_beta], [x, g_then_dx], statistics);
            let h = times_gamma(g_then_dx, gamma);
            let mean_h = if centered { sum_by(h, |h| h) / n } else { 0.0 };
            let along = sum_by_pairs(h, x, |h, x| h * (x - statistics.0));
            let means = (mean_h, statistics.1 * along / n);
            finish_row_backward(h, x, statistics, means);
        }
        return;
    }
    let xs = four_rows(x, w);
    let statistics = four_rows_statistics(xs, eps, centered);
    for (k, g) in g_then_dx.chunks_exact(w).enumerate() {
        add_column_terms([&mut *d_gamma, &mut *d_beta], [xs[k], g], statistics[k]);
    }
    let h = times_gamma(g_then_dx, gamma);
    let hs = four_rows(h, w);
    let mean_h = if centered {
        sum4_by(hs, |_, h| h).map(|sum| sum / n)
    } else {
        [0.0; 4]
    };
    let along = sum4_by_pairs(hs, xs, |k, h, x| h * (x - statistics[k].0));
    for (k, dx) in h.chunks_exact_mut(w).enumerate() {
        let means = (mean_h[k], statistics[k].1 * along[k] / n);
        finish_row_backward(dx, xs[k], statistics[k], means);
    }
}

/// `h = g ⊙ γ` over `g`, row by row (`γ` one row's width), which the backward pass then turns
/// into the gradient in place.
#[inline(always)]
fn times_gamma<'a>(g: &'a mut [f32], gamma: &[f32]) -> &'a mut [f32] {
    for row in g.chunks_exact_mut(gamma.len()) {
        for (h, &gamma) in row.iter_mut().zip(gamma) {
            *h *= gamma;
        }
    }
    g
}

/// One row's terms of dγ (`g ⊙ x̂`) and dβ (`g`), given its statistics `(mean, r)`.
#[inline(always)]
fn add_column_terms(
    [d_gamma, d_beta]: [&mut [f32]; 2],
    [x, g]: [&[f32]; 2],
    (mean, r): (f32, f32),
) {
    for (((dg, db), &g), &x) in d_gamma.iter_mut().zip(d_beta.iter_mut()).zip(g).zip(x) {
        *dg += g * (x - mean) * r;
        *db += g;
    }
}

/// The end of one row's backward pass, given its statistics `(mean, r)` and the means of `h`
/// and of `h ⊙ x̂` (`mean(h ⊙ x̂) = r · mean(h ⊙ (x − mean))`):
/// `dx = r (h − mean(h) − x̂ mean(h ⊙ x̂))` in place of `h`.
#[inline(always)]
fn finish_row_backward(
    dx: &mut [f32],
    x: &[f32],
    (mean, r): (f32, f32),
    (mean_h, mean_hx): (f32, f32),
) {
    for (dx, &x) in dx.iter_mut().zip(x) {
        let normalized = (x - mean) * r;
        *dx = r * (*dx - mean_h - normalized * mean_hx);
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

    /// A tensor of `t`'s values in a buffer of its own.
    fn copy(t: &FlexTensor) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(f32s(t).expect("f32").to_vec(), t.shape()))
    }

    fn address(t: &FlexTensor) -> *const f32 {
        f32s(t).expect("f32").as_ptr()
    }

    /// The in-place kernels write over a buffer only their own argument holds, and copy one
    /// that another tensor shares first: the other keeps its values, and both ways give the
    /// same bits. (The norm written over the latent, dx over g: `add_norm`, `norm_backward`.)
    #[test]
    fn in_place_kernels_write_over_their_own_buffer_and_never_a_shared_one() {
        let (x, a, g) = (tensor(64, 32, 1), tensor(64, 32, 2), tensor(64, 32, 3));
        let (gamma, beta) = (tensor(1, 32, 4), tensor(1, 32, 5));
        let (x_bits, g_bits) = (bits(&x), bits(&g));

        let mut own = copy(&x);
        let at = address(&own);
        let own_sum = add_norm(&mut own, &a, &gamma, Some(&beta), 1e-6).expect("applies");
        assert_eq!(address(&own), at, "a buffer of its own is written over");
        let mut shared = x.clone();
        let shared_sum = add_norm(&mut shared, &a, &gamma, Some(&beta), 1e-6).expect("applies");
        assert_eq!(
            bits(&x),
            x_bits,
            "the other holder of a shared buffer keeps its values"
        );
        assert_ne!(address(&shared), address(&x));
        assert_eq!(bits(&shared), bits(&own));
        assert_eq!(bits(&shared_sum), bits(&own_sum));
        assert_ne!(bits(&own), x_bits, "the norm was written");

        let mut own = copy(&g);
        let at = address(&own);
        let own_grads = norm_backward(&x, &gamma, &mut own, 1e-6, true).expect("applies");
        assert_eq!(address(&own), at);
        let mut shared = g.clone();
        let shared_grads = norm_backward(&x, &gamma, &mut shared, 1e-6, true).expect("applies");
        assert_eq!(bits(&g), g_bits);
        assert_eq!(bits(&shared), bits(&own));
        for (s, o) in shared_grads.iter().zip(&own_grads) {
            assert_eq!(bits(s), bits(o));
        }
        assert_ne!(bits(&own), g_bits, "dx was written");

        // A strided operand is declined and left as it is (the caller composes the formula).
        let mut strided = tensor(32, 64, 1).transpose(0, 1);
        assert!(norm_backward(&x, &gamma, &mut strided, 1e-6, true).is_none());
        assert!(add_norm(&mut strided, &a, &gamma, Some(&beta), 1e-6).is_none());
        assert_eq!(
            bits(&copy(&strided.transpose(0, 1))),
            bits(&tensor(32, 64, 1))
        );
    }

    /// The sixteen-row path (AVX-512 or AVX2) and the portable one give the same bits,
    /// forward and backward, LayerNorm and RMSNorm, for widths it takes (16 to 256) and ones it
    /// does not, and row counts that leave the portable code a remainder of each size class
    /// (none, under four, four and more). On a processor with neither both are the portable
    /// path.
    #[test]
    fn sixteen_rows_at_once_equal_the_portable_rows_bit_for_bit() {
        #[cfg(target_arch = "x86_64")]
        let has_blocks = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let has_blocks = false;
        if !has_blocks {
            eprintln!("no AVX2 and FMA here: both paths are the portable code");
        }
        for width in [16, 32, 48, 64, 96, 128, 176, 256, 272, 384] {
            // The sixteen-row path is taken exactly where it should be (not vacuously equal).
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                norm_blocks::applies(width),
                has_blocks && width <= 256,
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
                    // The addend as it is, and scaled (a linear gate's α).
                    for scale in [1.0, -0.7] {
                        let [wide, portable] = [true, false].map(|s| {
                            let mut y = copy(&x);
                            let sum = add_norm_on(&mut y, &a, scale, &gamma, beta, 1e-6, s)
                                .expect("applies");
                            [y, sum]
                        });
                        for (w, p) in wide.iter().zip(&portable) {
                            assert_eq!(bits(w), bits(p), "add_norm, {case}, β {}", beta.is_some());
                        }
                    }
                    let centered = beta.is_some();
                    let kernel = (1e-6, centered);
                    let [wide, portable] = [true, false].map(|s| {
                        let mut dx = copy(&g);
                        let ([d_gamma, d_beta], _) =
                            norm_backward_on(&x, &gamma, &mut dx, None, kernel, s)
                                .expect("applies");
                        [dx, d_gamma, d_beta]
                    });
                    for (w, p) in wide.iter().zip(&portable) {
                        assert_eq!(bits(w), bits(p), "backward, {case}, centered {centered}");
                    }
                    // With a linear gate's gradients: the same dx, dγ and dβ, and dh and dα
                    // the same on both paths.
                    let gate = [&a, &tensor(1, 1, 6)];
                    let [gated_wide, gated_portable] = [true, false].map(|s| {
                        let mut dx = copy(&g);
                        let grads = scaled_norm_backward_on(&x, &gamma, &mut dx, gate, kernel, s)
                            .expect("applies");
                        let [d_gamma, d_beta, dh, d_alpha] = grads;
                        [dx, d_gamma, d_beta, dh, d_alpha]
                    });
                    for (w, p) in gated_wide.iter().zip(&gated_portable) {
                        assert_eq!(
                            bits(w),
                            bits(p),
                            "gated backward, {case}, centered {centered}"
                        );
                    }
                    for (gated, plain) in gated_wide.iter().zip(&wide) {
                        assert_eq!(bits(gated), bits(plain), "gated against plain, {case}");
                    }
                }
                let [wide, portable] =
                    [true, false].map(|s| rms_norm_on(&x, &gamma, 1e-6, s).expect("applies"));
                assert_eq!(bits(&wide), bits(&portable), "rms_norm, {case}");
            }
        }
    }

    /// The gate's gradients the backward pass takes with it ([`scaled_norm_backward`]) are those
    /// of the linear gate's own backward (`scale_backward`) over the same `dx`: `dh = dx · α`
    /// to the bit, and `dα = Σ dx ⊙ h` to f32 rounding (its terms added in another order),
    /// against the sum in f64; over widths on both paths and rows that end in a part of a
    /// group of sixteen.
    #[test]
    fn the_gates_gradients_equal_the_scales_own_backward() {
        for (rows, width) in [(1088, 32), (1030, 64), (35, 100), (703, 48)] {
            let (x, h, g) = (
                tensor(rows, width, 11),
                tensor(rows, width, 12),
                tensor(rows, width, 13),
            );
            let (gamma, alpha) = (tensor(1, width, 14), tensor(1, 1, 15));
            for centered in [true, false] {
                let case = format!("{rows} x {width}, centered {centered}");
                let mut dx = copy(&g);
                let [d_gamma, d_beta, dh, d_alpha] =
                    scaled_norm_backward(&x, &gamma, &mut dx, [&h, &alpha], 1e-6, centered)
                        .expect("applies");
                let mut plain_dx = copy(&g);
                let [plain_gamma, plain_beta] =
                    norm_backward(&x, &gamma, &mut plain_dx, 1e-6, centered).expect("applies");
                let [plain_dh, plain_alpha] =
                    crate::lower::flex_kernels::scale_backward(&h, &alpha, &plain_dx)
                        .expect("applies");
                for (got, want) in [(&dx, &plain_dx), (&d_gamma, &plain_gamma), (&dh, &plain_dh)] {
                    assert_eq!(bits(got), bits(want), "{case}");
                }
                assert_eq!(bits(&d_beta), bits(&plain_beta), "{case}");
                let exact: f64 = f32s(&dx)
                    .expect("f32")
                    .iter()
                    .zip(f32s(&h).expect("f32"))
                    .map(|(&d, &h)| d as f64 * h as f64)
                    .sum();
                let magnitude: f64 = f32s(&dx)
                    .expect("f32")
                    .iter()
                    .zip(f32s(&h).expect("f32"))
                    .map(|(&d, &h)| (d as f64 * h as f64).abs())
                    .sum();
                for d in [&d_alpha, &plain_alpha] {
                    let got = f32s(d).expect("f32")[0] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-6 * magnitude,
                        "{case}: dα {got} against {exact} (terms' magnitude {magnitude})"
                    );
                }
                assert_eq!(d_alpha.shape(), alpha.shape());
            }
        }
    }
}
