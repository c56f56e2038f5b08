//! The norm kernels' rows sixteen at a time with AVX-512 or with AVX2, for rows of 16 to 256
//! elements (a LaX latent, a small model's hidden width), to the bit what the portable code in
//! `norm` computes.
//!
//! Why: a row that narrow is a few vectors, and the portable code spends it on reducing each
//! row's sums across lanes one row at a time (a chain of shuffles and adds per sum, four per
//! row in the backward pass) and on loop control: 0.4–0.7 ns an element at widths 32 and 64
//! with AVX-512, 0.6–1.3 with AVX2, where moving the data costs under 0.1. Here each sum of
//! sixteen rows is reduced together ([`Sixteen::totals`]: one transposing tree for the
//! sixteen), and every per-row scalar (mean, inverse deviation) is computed sixteen wide.
//!
//! The same bits: each row's sum is taken on sixteen lanes (element `j` into lane `j % 16`, in
//! order, from zero) and the lanes are added pairwise, halves first, exactly as `sum_by` and
//! its `total`; every other operation is the portable code's, in its order, in IEEE single
//! precision (no fused multiply-add). `tests` compares both paths bit for bit. The blocks are
//! written once over [`Sixteen`], sixteen lanes in one AVX-512 register or in two of AVX2's.

use super::lanes::{isa, Isa};
use super::norm::{gate_group, GateGradient, Rows};
use super::LANES;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows handled together.
pub(super) const BLOCK: usize = 16;
/// The widest rows taken: a tiny model's hidden width (256) as well as LaX latents.
const MAX_WIDTH: usize = 256;

/// Whether these kernels can run here: the processor has AVX-512F or AVX2, and the rows are
/// 16 to 256 elements, a whole number of sixteen-lane vectors.
pub(super) fn applies(width: usize) -> bool {
    width.is_multiple_of(16) && (16..=MAX_WIDTH).contains(&width) && isa().is_some()
}

/// `$blocks::<S, V>($work)` for rows of `$width = 16 · V` elements, V from 1 to 16: one copy
/// of the code per row width, its vectors counted at compile time.
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

/// The wrappers compiled for each instruction set, by the width's vectors.
macro_rules! on_isa {
    ($avx512:ident, $avx2:ident, $generic:ident, $work:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        unsafe fn $avx512<const V: usize>(work: $work) -> usize {
            unsafe { $generic::<__m512, V>(work) }
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn $avx2<const V: usize>(work: $work) -> usize {
            unsafe { $generic::<Avx2Pair, V>(work) }
        }
    };
}

on_isa!(
    forward_avx512,
    forward_avx2,
    forward_blocks,
    ForwardRows<'_>
);
on_isa!(
    backward_avx512,
    backward_avx2,
    backward_blocks,
    GradientRows<'_>
);

/// The inputs of a forward block: its rows (`norm::Rows`: the norm of `x` into `y`, or of
/// `x + addend · scale` over `x`, the sum written to `sum`), γ, and β (empty for none).
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
    // SAFETY: the instruction set each wrapper is compiled for is present (`isa`).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match isa() {
            Some(Isa::Avx512) => return by_vectors!(width, forward_avx512, work),
            Some(Isa::Avx2) => return by_vectors!(width, forward_avx2, work),
            None => {}
        }
    }
    unreachable!("`applies` holds only with AVX-512 or AVX2")
}

/// The inputs of a backward block, as `norm::NormGradientRows`: the output gradient `g` to
/// turn into `dx`, the rows' `x`, γ, and a slot for each block's dγ and dβ (twice the width,
/// dγ first; each block's rows' terms added to it in row order), followed by a linear gate's
/// lanes of dα where `gate` is given (its share of each block taken by `norm::gate_group`).
pub(super) struct GradientRows<'a> {
    pub g_then_dx: &'a mut [f32],
    pub x: &'a [f32],
    pub gamma: &'a [f32],
    pub sums: &'a mut [f32],
    pub gate: Option<GateGradient<'a>>,
    pub eps: f32,
    pub centered: bool,
}

/// The gradients of the first whole blocks of sixteen rows of `work`; the number of rows
/// done. Call only where [`applies`] holds for γ's width.
pub(super) fn backward(work: GradientRows<'_>) -> usize {
    let width = work.gamma.len();
    assert!(applies(width));
    // SAFETY: the instruction set each wrapper is compiled for is present (`isa`).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match isa() {
            Some(Isa::Avx512) => return by_vectors!(width, backward_avx512, work),
            Some(Isa::Avx2) => return by_vectors!(width, backward_avx2, work),
            None => {}
        }
    }
    unreachable!("`applies` holds only with AVX-512 or AVX2")
}

/// Rows of `V` vectors: see [`forward`].
///
/// # Safety
/// Inside a wrapper compiled for `S`'s instruction set. (Every pointer read or written is
/// inside a slice whose length is asserted first.)
#[inline(always)]
unsafe fn forward_blocks<S: Sixteen, const V: usize>(work: ForwardRows<'_>) -> usize {
    let w = 16 * V;
    assert!(work.gamma.len() == w && (work.beta.is_empty() || work.beta.len() == w));
    let (gamma, beta) = (
        vectors::<S, V>(work.gamma),
        (!work.beta.is_empty()).then(|| vectors::<S, V>(work.beta)),
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
            let add = (addend.as_ptr(), scale, sum.as_mut_ptr().cast::<f32>());
            (rows, both.cast_const(), both, Some(add))
        }
    };
    // SAFETY: every offset below lies inside the rows asserted above; the caller's for `S`.
    unsafe {
        for block in (0..rows).step_by(BLOCK) {
            let at = block * w;
            // The rows normalized: `x`, or `x + addend · scale` written to `sum` and read back.
            let source = match add {
                Some((addend, scale, sum)) => {
                    let scale = S::splat(scale);
                    for k in 0..BLOCK * V {
                        let o = at + 16 * k;
                        S::load(x.add(o))
                            .add(S::load(addend.add(o)).mul(scale))
                            .store(sum.add(o));
                    }
                    sum.cast_const()
                }
                None => x,
            };
            let row = |k: usize, v: usize| S::load(source.add(at + k * w + 16 * v));
            let (centers, inverse) = statistics::<S, V>(&row, work.centered, work.eps);
            for k in 0..BLOCK {
                let (mean, r) = (S::splat(centers[k]), S::splat(inverse[k]));
                for v in 0..V {
                    let scaled = row(k, v).sub(mean).mul(r).mul(gamma[v]);
                    let out = match &beta {
                        Some(beta) => scaled.add(beta[v]),
                        None => scaled,
                    };
                    out.store(y.add(at + k * w + 16 * v));
                }
            }
        }
    }
    rows
}

/// Rows of `V` vectors: see [`backward`].
///
/// # Safety
/// As [`forward_blocks`].
#[inline(always)]
unsafe fn backward_blocks<S: Sixteen, const V: usize>(mut work: GradientRows<'_>) -> usize {
    let w = 16 * V;
    let rows = work.x.len() / w / BLOCK * BLOCK;
    let slot = 2 * w + if work.gate.is_some() { LANES } else { 0 };
    assert!(work.g_then_dx.len() >= rows * w && work.gamma.len() == w);
    assert!(work.sums.len() >= rows / BLOCK * slot);
    // SAFETY: every offset below lies inside the rows asserted above; the caller's for `S`.
    unsafe {
        let n = S::splat(w as f32);
        let gamma = vectors::<S, V>(work.gamma);
        // One pointer for `g` and `dx`: each vector of `dx` is stored after the last read of
        // the same vector of `g`, and every other read of the block's `g` comes before.
        let g_then_dx = work.g_then_dx.as_mut_ptr();
        let dx = g_then_dx;
        for (block, slot) in (0..rows)
            .step_by(BLOCK)
            .zip(work.sums.chunks_exact_mut(slot))
        {
            let at = block * w;
            let (d_gamma_slot, rest) = slot.split_at_mut(w);
            let (d_beta_slot, lanes) = rest.split_at_mut(w);
            let (mut d_gamma, mut d_beta) =
                (vectors::<S, V>(d_gamma_slot), vectors::<S, V>(d_beta_slot));
            let x = |k: usize, v: usize| S::load(work.x.as_ptr().add(at + k * w + 16 * v));
            let g = |k: usize, v: usize| S::load(g_then_dx.cast_const().add(at + k * w + 16 * v));
            let (centers, inverse) = statistics::<S, V>(&x, work.centered, work.eps);
            // h = g ⊙ γ; mean(h) (0 for RMSNorm) and Σ h ⊙ (x − mean).
            let h = |k: usize, v: usize| g(k, v).mul(gamma[v]);
            let mean_h = match work.centered {
                true => means::<S, V>(h),
                false => S::zero(),
            };
            let along = total::<S, V>(|k, v| h(k, v).mul(x(k, v).sub(S::splat(centers[k]))));
            // mean(h ⊙ x̂) = r · Σ h ⊙ (x − mean) / n
            let mean_hx = scalars(S::load(inverse.as_ptr()).mul(along).div(n));
            let mean_h = scalars(mean_h);
            for k in 0..BLOCK {
                let (mean, r) = (S::splat(centers[k]), S::splat(inverse[k]));
                let (mh, mhx) = (S::splat(mean_h[k]), S::splat(mean_hx[k]));
                for v in 0..V {
                    let (g, centered) = (g(k, v), x(k, v).sub(mean));
                    d_gamma[v] = d_gamma[v].add(g.mul(centered).mul(r));
                    d_beta[v] = d_beta[v].add(g);
                    let normalized = centered.mul(r);
                    let inner = h(k, v).sub(mh).sub(normalized.mul(mhx));
                    r.mul(inner).store(dx.add(at + k * w + 16 * v));
                }
            }
            store::<S, V>(d_gamma_slot, d_gamma);
            store::<S, V>(d_beta_slot, d_beta);
            if let Some(gate) = &mut work.gate {
                // The block's dx, just written and still in cache.
                let done = std::slice::from_raw_parts(dx.cast_const().add(at), BLOCK * w);
                gate_group([done, &gate.h[at..]], gate.alpha, &mut gate.dh[at..], lanes);
            }
        }
    }
    rows
}

/// Sixteen rows' means (0 where not `centered`: RMSNorm) and inverse deviations
/// `1 / √(mean((x − mean)²) + ε)`, element `k` row `k`'s, each as the portable code's
/// `row_statistics`; `row(k, v)` is row `k`'s vector `v`.
///
/// # Safety
/// Inside a wrapper compiled for `S`'s instruction set.
#[inline(always)]
unsafe fn statistics<S: Sixteen, const V: usize>(
    row: &impl Fn(usize, usize) -> S,
    centered: bool,
    eps: f32,
) -> ([f32; BLOCK], [f32; BLOCK]) {
    unsafe {
        let (centers, variances) = match centered {
            true => {
                let c = scalars(means::<S, V>(row));
                let variances = means::<S, V>(|k, v| {
                    let d = row(k, v).sub(S::splat(c[k]));
                    d.mul(d)
                });
                (c, variances)
            }
            // RMSNorm: `x − 0` is `x` to the bit, so the subtraction is left out.
            false => (
                [0.0; BLOCK],
                means::<S, V>(|k, v| {
                    let d = row(k, v);
                    d.mul(d)
                }),
            ),
        };
        let root = variances.add(S::splat(eps)).sqrt();
        (centers, scalars(S::splat(1.0).div(root)))
    }
}

/// Sixteen rows' means of `term(k, v)` over their 16·V elements, lane `k` row `k`'s: the
/// portable code's `sum_by(…) / n`.
///
/// # Safety
/// Inside a wrapper compiled for `S`'s instruction set.
#[inline(always)]
unsafe fn means<S: Sixteen, const V: usize>(term: impl Fn(usize, usize) -> S) -> S {
    unsafe { total::<S, V>(term).div(S::splat((16 * V) as f32)) }
}

/// Sixteen rows' totals of `term(k, v)` over their 16·V elements, lane `k` row `k`'s: each
/// row's terms added on sixteen lanes in vector order from zero (the lanes `sum_by` keeps),
/// handed to [`Sixteen::totals`] as its tree asks for that row.
///
/// # Safety
/// Inside a wrapper compiled for `S`'s instruction set.
#[inline(always)]
unsafe fn total<S: Sixteen, const V: usize>(term: impl Fn(usize, usize) -> S) -> S {
    unsafe {
        S::totals(|k| {
            let mut sum = S::zero();
            for v in 0..V {
                sum = sum.add(term(k, v));
            }
            sum
        })
    }
}

/// The sixteen lanes of `v` as numbers: a row's scalar then goes to all lanes as a broadcast
/// from memory (a load), where taking lane `k` out of a register took a shuffle, and a
/// register indexed by a loop variable went through the stack anyway (BENCHMARKS.md,
/// attempt 113).
///
/// # Safety
/// Inside a wrapper compiled for `S`'s instruction set.
#[inline(always)]
unsafe fn scalars<S: Sixteen>(v: S) -> [f32; BLOCK] {
    let mut out = [0.0f32; BLOCK];
    unsafe { v.store(out.as_mut_ptr()) };
    out
}

/// `V` vectors of a row (`row` holds 16·V elements).
///
/// # Safety
/// Inside a wrapper compiled for `S`'s instruction set.
#[inline(always)]
unsafe fn vectors<S: Sixteen, const V: usize>(row: &[f32]) -> [S; V] {
    assert_eq!(row.len(), 16 * V);
    let mut out = [unsafe { S::zero() }; V];
    for (v, out) in out.iter_mut().enumerate() {
        // SAFETY: `row` holds 16·V elements (asserted); the caller's for `S`.
        *out = unsafe { S::load(row.as_ptr().add(16 * v)) };
    }
    out
}

/// # Safety
/// Inside a wrapper compiled for `S`'s instruction set.
#[inline(always)]
unsafe fn store<S: Sixteen, const V: usize>(row: &mut [f32], values: [S; V]) {
    assert_eq!(row.len(), 16 * V);
    for (v, value) in values.into_iter().enumerate() {
        // SAFETY: `row` holds 16·V elements (asserted); the caller's for `S`.
        unsafe { value.store(row.as_mut_ptr().add(16 * v)) };
    }
}

/// Sixteen f32 lanes and the operations the blocks need, each lane's as IEEE single precision
/// computes it. Every method is `unsafe`: call it only inside a wrapper compiled for the
/// instruction set.
trait Sixteen: Copy {
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    /// # Safety
    /// Also: `at` points at 16 readable f32.
    unsafe fn load(at: *const f32) -> Self;
    /// # Safety
    /// Also: `at` points at 16 writable f32.
    unsafe fn store(self, at: *mut f32);
    unsafe fn add(self, other: Self) -> Self;
    unsafe fn sub(self, other: Self) -> Self;
    unsafe fn mul(self, other: Self) -> Self;
    unsafe fn div(self, other: Self) -> Self;
    unsafe fn sqrt(self) -> Self;
    /// Sixteen rows' lanes (`row(k)`: row `k`'s sixteen lanes) each added pairwise as
    /// `total` adds them (lane i and i + 8, then i and i + 4, i and i + 2, i and i + 1): lane
    /// `k` of the result is row `k`'s total. Each row is asked for once, when the tree takes
    /// it, so that an implementation can keep few rows in registers at a time.
    unsafe fn totals(row: impl Fn(usize) -> Self) -> Self;
}

/// One level of a transposing tree: the registers taken two by two, each pair's `$low` and
/// `$high` rearrangements added by `$add` (`$low` holds the lower lane of every sum, as `total`
/// adds them). A loop, not closures: a closure here is not compiled for the instruction set,
/// and its intrinsics became calls (the blocks three times slower than the portable code).
macro_rules! add_pairs {
    ($rows:expr, $n:literal, $add:ident, $low:ident::<$lo:literal>, $high:ident::<$hi:literal>) => {{
        let rows = $rows;
        let mut sums = [rows[0]; $n];
        for (j, sum) in sums.iter_mut().enumerate() {
            let (a, b) = (rows[2 * j], rows[2 * j + 1]);
            *sum = $add($low::<$lo>(a, b), $high::<$hi>(a, b));
        }
        sums
    }};
}

/// AVX-512: sixteen lanes, one register.
#[cfg(target_arch = "x86_64")]
impl Sixteen for __m512 {
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(at: *const f32) -> Self {
        unsafe { _mm512_loadu_ps(at) }
    }
    #[inline(always)]
    unsafe fn store(self, at: *mut f32) {
        unsafe { _mm512_storeu_ps(at, self) }
    }
    #[inline(always)]
    unsafe fn add(self, other: Self) -> Self {
        _mm512_add_ps(self, other)
    }
    #[inline(always)]
    unsafe fn sub(self, other: Self) -> Self {
        _mm512_sub_ps(self, other)
    }
    #[inline(always)]
    unsafe fn mul(self, other: Self) -> Self {
        _mm512_mul_ps(self, other)
    }
    #[inline(always)]
    unsafe fn div(self, other: Self) -> Self {
        _mm512_div_ps(self, other)
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        _mm512_sqrt_ps(self)
    }
    /// A tree that transposes as it adds, two rows into one register at each level.
    #[inline(always)]
    unsafe fn totals(row: impl Fn(usize) -> Self) -> Self {
        // Each level below moves row k's result to lane 4 (k % 4) + k / 4; feeding the rows
        // in that order's inverse leaves row k in lane k.
        let mut order = [_mm512_setzero_ps(); BLOCK];
        for (p, o) in order.iter_mut().enumerate() {
            *o = row((p % 4) * 4 + p / 4);
        }
        // Halves: [a.lo + a.hi, b.lo + b.hi], eight sums of each of two rows.
        let halves = add_pairs!(
            order,
            8,
            _mm512_add_ps,
            _mm512_shuffle_f32x4::<0x44>,
            _mm512_shuffle_f32x4::<0xEE>
        );
        // Quarters: four sums of each of four rows, a row to each 128-bit quarter.
        let quarters = add_pairs!(
            halves,
            4,
            _mm512_add_ps,
            _mm512_shuffle_f32x4::<0x88>,
            _mm512_shuffle_f32x4::<0xDD>
        );
        // Pairs: within each quarter, two sums of each of two rows.
        let pairs = add_pairs!(
            quarters,
            2,
            _mm512_add_ps,
            _mm512_shuffle_ps::<0x44>,
            _mm512_shuffle_ps::<0xEE>
        );
        // Totals: within each quarter, one sum of each of four rows.
        let [totals] = add_pairs!(
            pairs,
            1,
            _mm512_add_ps,
            _mm512_shuffle_ps::<0x88>,
            _mm512_shuffle_ps::<0xDD>
        );
        totals
    }
}

/// AVX2: sixteen lanes in two registers, lanes 0–7 and 8–15.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Avx2Pair([__m256; 2]);

#[cfg(target_arch = "x86_64")]
impl Sixteen for Avx2Pair {
    #[inline(always)]
    unsafe fn zero() -> Self {
        Avx2Pair([_mm256_setzero_ps(); 2])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx2Pair([_mm256_set1_ps(x); 2])
    }
    #[inline(always)]
    unsafe fn load(at: *const f32) -> Self {
        unsafe { Avx2Pair([_mm256_loadu_ps(at), _mm256_loadu_ps(at.add(8))]) }
    }
    #[inline(always)]
    unsafe fn store(self, at: *mut f32) {
        unsafe {
            _mm256_storeu_ps(at, self.0[0]);
            _mm256_storeu_ps(at.add(8), self.0[1]);
        }
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        Avx2Pair([
            _mm256_add_ps(self.0[0], o.0[0]),
            _mm256_add_ps(self.0[1], o.0[1]),
        ])
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        Avx2Pair([
            _mm256_sub_ps(self.0[0], o.0[0]),
            _mm256_sub_ps(self.0[1], o.0[1]),
        ])
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        Avx2Pair([
            _mm256_mul_ps(self.0[0], o.0[0]),
            _mm256_mul_ps(self.0[1], o.0[1]),
        ])
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        Avx2Pair([
            _mm256_div_ps(self.0[0], o.0[0]),
            _mm256_div_ps(self.0[1], o.0[1]),
        ])
    }
    #[inline(always)]
    unsafe fn sqrt(self) -> Self {
        Avx2Pair([_mm256_sqrt_ps(self.0[0]), _mm256_sqrt_ps(self.0[1])])
    }
    /// Each row's halves added (lane i and i + 8), then a tree over each eight rows that
    /// transposes as it adds: lane `k` of the first register row `k`'s total, of the second
    /// row `8 + k`'s. Eight rows at a time, each one register as soon as it is asked for:
    /// sixteen rows' pairs are all of AVX2's registers, and held at once they went through the
    /// stack (attempt 113).
    #[inline(always)]
    unsafe fn totals(row: impl Fn(usize) -> Self) -> Self {
        let mut totals = [_mm256_setzero_ps(); 2];
        for (eight, total) in totals.iter_mut().enumerate() {
            // Each level below moves row k's result to lane 4 (k % 2) + k / 2; feeding the
            // rows in that order's inverse leaves row k in lane k.
            let mut order = [_mm256_setzero_ps(); 8];
            for (p, o) in order.iter_mut().enumerate() {
                let source = row(8 * eight + (p % 2) * 4 + p / 2);
                *o = _mm256_add_ps(source.0[0], source.0[1]);
            }
            // Quarters: [a.lo + a.hi, b.lo + b.hi], four sums of each of two rows.
            let quarters = add_pairs!(
                order,
                4,
                _mm256_add_ps,
                _mm256_permute2f128_ps::<0x20>,
                _mm256_permute2f128_ps::<0x31>
            );
            // Pairs: within each 128-bit half, two sums of each of two rows.
            let pairs = add_pairs!(
                quarters,
                2,
                _mm256_add_ps,
                _mm256_shuffle_ps::<0x44>,
                _mm256_shuffle_ps::<0xEE>
            );
            // Totals: within each half, one sum of each of four rows.
            let [sums] = add_pairs!(
                pairs,
                1,
                _mm256_add_ps,
                _mm256_shuffle_ps::<0x88>,
                _mm256_shuffle_ps::<0xDD>
            );
            *total = sums;
        }
        Avx2Pair(totals)
    }
}
