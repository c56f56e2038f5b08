//! The norm kernels' rows sixteen at a time with AVX-512, for rows of 16 to 256 elements (a
//! LaX latent, a small model's hidden width), to the bit what the portable code in `norm`
//! computes.
//!
//! Why: a row that narrow is a few vectors, and the portable code spends it on reducing each
//! row's sums across lanes one row at a time (a chain of shuffles and adds per sum, four per
//! row in the backward pass) and on loop control: 0.4–0.7 ns an element at widths 32 and 64,
//! where moving the data costs under 0.1. Here each sum of sixteen rows is reduced together
//! ([`totals`]: one transposing tree, 45 instructions for the sixteen), and every per-row
//! scalar (mean, inverse deviation) is computed sixteen wide.
//!
//! The same bits: each row's sum is taken on sixteen lanes (element `j` into lane `j % 16`, in
//! order, from zero) and the lanes are added pairwise, halves first, exactly as `sum_by` and
//! its `total`; every other operation is the portable code's, in its order, in IEEE single
//! precision (no fused multiply-add). `tests` compares both paths bit for bit.

use super::norm::Rows;
use std::arch::x86_64::*;

/// Rows handled together.
pub(super) const BLOCK: usize = 16;
/// The widest rows taken: a tiny model's hidden width (256) as well as LaX latents.
const MAX_WIDTH: usize = 256;

/// Whether these kernels can run here: the processor has AVX-512F and the rows are 16 to 256
/// elements, a whole number of vectors.
pub(super) fn applies(width: usize) -> bool {
    width.is_multiple_of(16)
        && (16..=MAX_WIDTH).contains(&width)
        && is_x86_feature_detected!("avx512f")
}

/// `$blocks::<V>($work)` for rows of `$width = 16 · V` elements, V from 1 to 16: one copy of
/// the code per row width, its vectors counted at compile time.
macro_rules! by_vectors {
    ($width:expr, $blocks:ident, $work:expr) => {
        match $width / 16 {
            1 => $blocks::<1>($work),
            2 => $blocks::<2>($work),
            3 => $blocks::<3>($work),
            4 => $blocks::<4>($work),
            5 => $blocks::<5>($work),
            6 => $blocks::<6>($work),
            7 => $blocks::<7>($work),
            8 => $blocks::<8>($work),
            9 => $blocks::<9>($work),
            10 => $blocks::<10>($work),
            11 => $blocks::<11>($work),
            12 => $blocks::<12>($work),
            13 => $blocks::<13>($work),
            14 => $blocks::<14>($work),
            15 => $blocks::<15>($work),
            _ => $blocks::<16>($work),
        }
    };
}

/// The inputs of a forward block: its rows (`norm::Rows`: the norm of `x` into `y`, or of
/// `x + addend` over `x`, the sum written to `sum`), γ, and β (empty for none).
pub(super) struct ForwardRows<'a> {
    pub rows: Rows<'a>,
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub eps: f32,
    pub centered: bool,
}

/// The norm of the first whole blocks of sixteen rows of `work` (rows of γ's width); the
/// number of rows done, for the portable code to finish the rest. Call only where
/// [`applies`] holds for γ's width.
pub(super) fn forward(work: ForwardRows<'_>) -> usize {
    let width = work.gamma.len();
    assert!(applies(width));
    // SAFETY: AVX-512F is present (`applies`).
    unsafe { by_vectors!(width, forward_blocks, work) }
}

/// The inputs of a backward block, as `norm::NormGradientRows`: the output gradient `g` to
/// turn into `dx`, the rows' `x`, γ, and the task's running dγ and dβ (added to in row order).
pub(super) struct GradientRows<'a> {
    pub g_then_dx: &'a mut [f32],
    pub x: &'a [f32],
    pub gamma: &'a [f32],
    pub d_gamma: &'a mut [f32],
    pub d_beta: &'a mut [f32],
    pub eps: f32,
    pub centered: bool,
}

/// The gradients of the first whole blocks of sixteen rows of `work`; the number of rows
/// done. Call only where [`applies`] holds for γ's width.
pub(super) fn backward(work: GradientRows<'_>) -> usize {
    let width = work.gamma.len();
    assert!(applies(width));
    // SAFETY: AVX-512F is present (`applies`).
    unsafe { by_vectors!(width, backward_blocks, work) }
}

/// Rows of `V` vectors: see [`forward`].
///
/// # Safety
/// The processor has AVX-512F. (Every pointer read or written is inside a slice whose length
/// is asserted first.)
#[target_feature(enable = "avx512f")]
unsafe fn forward_blocks<const V: usize>(work: ForwardRows<'_>) -> usize {
    let w = 16 * V;
    assert!(work.gamma.len() == w && (work.beta.is_empty() || work.beta.len() == w));
    let (gamma, beta) = (
        vectors::<V>(work.gamma),
        (!work.beta.is_empty()).then(|| vectors::<V>(work.beta)),
    );
    // Raw pointers: in place (`SumOver`), `x` and `y` are one buffer, each block read whole
    // (into `sum`) before its norms are written over it.
    let (rows, x, y, add) = match work.rows {
        Rows::Apart { y, x } => {
            let rows = x.len() / w / BLOCK * BLOCK;
            assert!(y.len() >= rows * w);
            (rows, x.as_ptr(), y.as_mut_ptr().cast::<f32>(), None)
        }
        Rows::SumOver {
            x_then_y,
            addend,
            scale,
            sum,
        } => {
            let rows = x_then_y.len() / w / BLOCK * BLOCK;
            assert!(addend.len() >= rows * w && sum.len() >= rows * w);
            let both = x_then_y.as_mut_ptr();
            let add = (
                addend.as_ptr(),
                _mm512_set1_ps(scale),
                sum.as_mut_ptr().cast::<f32>(),
            );
            (rows, both.cast_const(), both, Some(add))
        }
    };
    for block in (0..rows).step_by(BLOCK) {
        let at = block * w;
        // The rows normalized: `x`, or `x + addend` written to `sum` and read back from it.
        let source = match add {
            Some((addend, scale, sum)) => {
                for k in 0..BLOCK * V {
                    let o = at + 16 * k;
                    let scaled = _mm512_mul_ps(load(addend.add(o)), scale);
                    let s = _mm512_add_ps(load(x.add(o)), scaled);
                    _mm512_storeu_ps(sum.add(o), s);
                }
                sum.cast_const()
            }
            None => x,
        };
        let row = |k: usize, v: usize| load(source.add(at + k * w + 16 * v));
        let (centers, inverse) = statistics::<V>(&row, work.centered, work.eps);
        for k in 0..BLOCK {
            let (mean, r) = (broadcast_lane(centers, k), broadcast_lane(inverse, k));
            for v in 0..V {
                let scaled =
                    _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(row(k, v), mean), r), gamma[v]);
                let out = match &beta {
                    Some(beta) => _mm512_add_ps(scaled, beta[v]),
                    None => scaled,
                };
                _mm512_storeu_ps(y.add(at + k * w + 16 * v), out);
            }
        }
    }
    rows
}

/// Rows of `V` vectors: see [`backward`].
///
/// # Safety
/// As [`forward_blocks`].
#[target_feature(enable = "avx512f")]
unsafe fn backward_blocks<const V: usize>(work: GradientRows<'_>) -> usize {
    let w = 16 * V;
    let rows = work.x.len() / w / BLOCK * BLOCK;
    assert!(work.g_then_dx.len() >= rows * w && work.gamma.len() == w);
    assert!(work.d_gamma.len() == w && work.d_beta.len() == w);
    let n = _mm512_set1_ps(w as f32);
    let gamma = vectors::<V>(work.gamma);
    let (mut d_gamma, mut d_beta) = (vectors::<V>(work.d_gamma), vectors::<V>(work.d_beta));
    // One pointer for `g` and `dx`: each vector of `dx` is stored after the last read of the
    // same vector of `g`, and every other read of the block's `g` comes before.
    let g_then_dx = work.g_then_dx.as_mut_ptr();
    let dx = g_then_dx;
    for block in (0..rows).step_by(BLOCK) {
        let at = block * w;
        let x = |k: usize, v: usize| load(work.x.as_ptr().add(at + k * w + 16 * v));
        let g = |k: usize, v: usize| load(g_then_dx.cast_const().add(at + k * w + 16 * v));
        let (centers, inverse) = statistics::<V>(&x, work.centered, work.eps);
        // h = g ⊙ γ; mean(h) (0 for RMSNorm) and Σ h ⊙ (x − mean).
        let h = |k: usize, v: usize| _mm512_mul_ps(g(k, v), gamma[v]);
        let mean_h = match work.centered {
            true => means::<V>(h),
            false => _mm512_setzero_ps(),
        };
        let along = totals(lanes::<V>(|k, v| {
            _mm512_mul_ps(h(k, v), _mm512_sub_ps(x(k, v), broadcast_lane(centers, k)))
        }));
        // mean(h ⊙ x̂) = r · Σ h ⊙ (x − mean) / n
        let mean_hx = _mm512_div_ps(_mm512_mul_ps(inverse, along), n);
        for k in 0..BLOCK {
            let (mean, r) = (broadcast_lane(centers, k), broadcast_lane(inverse, k));
            let (mh, mhx) = (broadcast_lane(mean_h, k), broadcast_lane(mean_hx, k));
            for v in 0..V {
                let (g, centered) = (g(k, v), _mm512_sub_ps(x(k, v), mean));
                d_gamma[v] =
                    _mm512_add_ps(d_gamma[v], _mm512_mul_ps(_mm512_mul_ps(g, centered), r));
                d_beta[v] = _mm512_add_ps(d_beta[v], g);
                let normalized = _mm512_mul_ps(centered, r);
                let inner =
                    _mm512_sub_ps(_mm512_sub_ps(h(k, v), mh), _mm512_mul_ps(normalized, mhx));
                _mm512_storeu_ps(dx.add(at + k * w + 16 * v), _mm512_mul_ps(r, inner));
            }
        }
    }
    store::<V>(work.d_gamma, d_gamma);
    store::<V>(work.d_beta, d_beta);
    rows
}

/// Sixteen rows' means (0 where not `centered`: RMSNorm) and inverse deviations
/// `1 / √(mean((x − mean)²) + ε)`, lane `k` row `k`'s, each as the portable code's
/// `row_statistics`; `row(k, v)` is row `k`'s vector `v`.
#[inline]
#[target_feature(enable = "avx512f")]
fn statistics<const V: usize>(
    row: &impl Fn(usize, usize) -> __m512,
    centered: bool,
    eps: f32,
) -> (__m512, __m512) {
    let centers = match centered {
        true => means::<V>(row),
        false => _mm512_setzero_ps(),
    };
    let variances = means::<V>(|k, v| {
        let d = _mm512_sub_ps(row(k, v), broadcast_lane(centers, k));
        _mm512_mul_ps(d, d)
    });
    let root = _mm512_sqrt_ps(_mm512_add_ps(variances, _mm512_set1_ps(eps)));
    (centers, _mm512_div_ps(_mm512_set1_ps(1.0), root))
}

/// Sixteen rows' means of `term(k, v)` over their 16·V elements, lane `k` row `k`'s: the
/// portable code's `sum_by(…) / n`.
#[inline]
#[target_feature(enable = "avx512f")]
fn means<const V: usize>(term: impl Fn(usize, usize) -> __m512) -> __m512 {
    _mm512_div_ps(totals(lanes::<V>(term)), _mm512_set1_ps((16 * V) as f32))
}

/// Each of sixteen rows' terms `term(k, v)` (row `k`, vector `v`) added on sixteen lanes in
/// vector order from zero: the lanes `sum_by` keeps, one register per row.
#[inline]
#[target_feature(enable = "avx512f")]
fn lanes<const V: usize>(term: impl Fn(usize, usize) -> __m512) -> [__m512; BLOCK] {
    let mut sums = [_mm512_setzero_ps(); BLOCK];
    for (k, sum) in sums.iter_mut().enumerate() {
        for v in 0..V {
            *sum = _mm512_add_ps(*sum, term(k, v));
        }
    }
    sums
}

/// The sixteen rows' lanes each added pairwise as `total` adds them (lane i and i + 8, then
/// i and i + 4, i and i + 2, i and i + 1): lane `k` of the result is row `k`'s total. A tree
/// that transposes as it adds, two rows into one register at each level.
#[inline]
#[target_feature(enable = "avx512f")]
fn totals(rows: [__m512; BLOCK]) -> __m512 {
    // Each level below moves row k's result to lane 4 (k % 4) + k / 4; feeding the rows in
    // that order's inverse leaves row k in lane k.
    let mut order = [_mm512_setzero_ps(); BLOCK];
    for (p, row) in order.iter_mut().enumerate() {
        *row = rows[(p % 4) * 4 + p / 4];
    }
    // Halves: [a.lo + a.hi, b.lo + b.hi], eight sums of each of two rows.
    let halves: [__m512; 8] = add_pairs(
        &order,
        |a, b| _mm512_shuffle_f32x4::<0x44>(a, b),
        |a, b| _mm512_shuffle_f32x4::<0xEE>(a, b),
    );
    // Quarters: four sums of each of four rows, a row to each 128-bit quarter.
    let quarters: [__m512; 4] = add_pairs(
        &halves,
        |c, d| _mm512_shuffle_f32x4::<0x88>(c, d),
        |c, d| _mm512_shuffle_f32x4::<0xDD>(c, d),
    );
    // Pairs: within each quarter, two sums of each of two rows.
    let pairs: [__m512; 2] = add_pairs(
        &quarters,
        |e, f| _mm512_shuffle_ps::<0x44>(e, f),
        |e, f| _mm512_shuffle_ps::<0xEE>(e, f),
    );
    // Totals: within each quarter, one sum of each of four rows.
    let [totals]: [__m512; 1] = add_pairs(
        &pairs,
        |g, h| _mm512_shuffle_ps::<0x88>(g, h),
        |g, h| _mm512_shuffle_ps::<0xDD>(g, h),
    );
    totals
}

/// One level of [`totals`]: the registers taken two by two, each pair's `low` and `high`
/// rearrangements added (`low` holds the lower lane of every sum, as `total` adds them).
#[inline]
#[target_feature(enable = "avx512f")]
fn add_pairs<const N: usize>(
    rows: &[__m512],
    low: impl Fn(__m512, __m512) -> __m512,
    high: impl Fn(__m512, __m512) -> __m512,
) -> [__m512; N] {
    assert_eq!(rows.len(), 2 * N);
    let mut sums = [_mm512_setzero_ps(); N];
    for (j, sum) in sums.iter_mut().enumerate() {
        let (a, b) = (rows[2 * j], rows[2 * j + 1]);
        *sum = _mm512_add_ps(low(a, b), high(a, b));
    }
    sums
}

/// Lane `k` of `v` in every lane.
#[inline]
#[target_feature(enable = "avx512f")]
fn broadcast_lane(v: __m512, k: usize) -> __m512 {
    _mm512_permutexvar_ps(_mm512_set1_epi32(k as i32), v)
}

/// # Safety
/// `at` points at 16 readable f32.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn load(at: *const f32) -> __m512 {
    _mm512_loadu_ps(at)
}

/// `V` vectors of a row (`row` holds 16·V elements).
#[inline]
#[target_feature(enable = "avx512f")]
fn vectors<const V: usize>(row: &[f32]) -> [__m512; V] {
    assert_eq!(row.len(), 16 * V);
    let mut out = [_mm512_setzero_ps(); V];
    for (v, out) in out.iter_mut().enumerate() {
        // SAFETY: `row` holds 16·V elements (asserted).
        *out = unsafe { load(row.as_ptr().add(16 * v)) };
    }
    out
}

#[inline]
#[target_feature(enable = "avx512f")]
fn store<const V: usize>(row: &mut [f32], values: [__m512; V]) {
    assert_eq!(row.len(), 16 * V);
    for (v, value) in values.into_iter().enumerate() {
        // SAFETY: `row` holds 16·V elements (asserted).
        unsafe { _mm512_storeu_ps(row.as_mut_ptr().add(16 * v), value) };
    }
}
