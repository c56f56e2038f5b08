//! A batch of small products, each of at most 64 rows by 2 to 32 columns at a depth of 3 to 64:
//! attention's products one (image, head) at a time in the ViT, `q · kᵀ` of (17 × 32) by
//! (32 × 17) and `p · v` of (17 × 17) by (17 × 32), 256 of each a step.
//!
//! gemm ran a batch of 256 such products in 54–127 µs, at 37–88 GFLOP/s (`laxc bench
//! --products`, BENCHMARKS.md, attempt 91): its per-call work (choosing kernels, packing both
//! operands) is most of a product this small. Here one thread takes a whole product: it reads
//! `b` by rows of one or two 16-lane vectors (one to four of 8 with AVX2; a transposed `b`
//! copied into rows first), and
//! sums tiles of `a`'s rows against them, each output element one accumulator, its terms in
//! order from zero, each product fused into its addition, then multiplied by the scale, as
//! gemm's micro-kernel does for a depth within one block. So every element has gemm's bits
//! (tested against one gemm call), on any number of threads. With AVX-512 or with AVX2 and FMA
//! (`flex_kernels::lanes`; rows of up to four vectors of 8 there).

use super::{Dst, Grain, Matrix};
use crate::lower::flex_kernels::lanes::{isa, Lanes};
use std::mem::MaybeUninit;

/// The widest output row (two vectors of 16, four of 8), the deepest product, the most rows.
const MOST_COLUMNS: usize = 32;
const MOST_DEPTH: usize = 64;
const MOST_ROWS: usize = 64;

/// Whether this kernel takes a batch of (m × n) outputs of depth `k` of operands laid out as
/// `grain` says: more than one product, 2 to [`MOST_ROWS`] rows and 2 to [`MOST_COLUMNS`]
/// columns (gemm sums a single row or column by its matrix-vector kernels), a depth of 3 to
/// [`MOST_DEPTH`] (gemm takes depths of 1 or 2 by another kernel), on a processor with
/// AVX-512 or AVX2; and not an output of at most 256 elements from a row-major `a` and a transposed
/// `b`, which gemm sums as dot products along the depth, in another order.
pub(super) fn applies(batch: usize, [m, k, n]: [usize; 3], grain: Grain) -> bool {
    let shapes = (2..=MOST_ROWS).contains(&m)
        && (2..=MOST_COLUMNS).contains(&n)
        && (3..=MOST_DEPTH).contains(&k);
    let dots = grain.a_columns_adjacent && grain.b_rows_adjacent && m * n <= 256;
    batch > 1 && shapes && !dots && isa().is_some()
}

/// Products a task takes at least: about 64 K multiply-adds, so that a task repays its cost.
pub(super) fn products_a_task([m, k, n]: [usize; 3]) -> usize {
    (1usize << 16).div_ceil(m * k * n).max(1)
}

/// `scale · a · b` written into the (m × n) block at `out`, where [`applies`] holds.
///
/// # Safety
/// `a` and `b` address (m × k) and (k × n) matrices at their strides in live buffers; `out`
/// is valid for the block's writes, its columns adjacent.
pub(super) unsafe fn product([m, k, n]: [usize; 3], [a, b]: [Matrix; 2], scale: f32, out: Dst) {
    assert!(m <= MOST_ROWS && k <= MOST_DEPTH && (2..=MOST_COLUMNS).contains(&n));
    assert_eq!(out.col_stride, 1, "the output's columns are adjacent");
    // A row-major `b` is read in place; another (attention's `kᵀ`) is first copied into rows
    // (8 KB at most, on this thread's stack), of which the kernel reads the first n columns.
    let mut copy = [MaybeUninit::<f32>::uninit(); MOST_DEPTH * MOST_COLUMNS];
    let rows_of_b = match b.col_stride {
        1 => b,
        _ => {
            for d in 0..k {
                for j in 0..n {
                    // SAFETY: (d, j) lies inside `b`.
                    let value = unsafe {
                        *b.at
                            .offset(d as isize * b.row_stride + j as isize * b.col_stride)
                    };
                    copy[d * MOST_COLUMNS + j].write(value);
                }
            }
            Matrix {
                at: copy.as_ptr().cast(),
                row_stride: MOST_COLUMNS as isize,
                col_stride: 1,
            }
        }
    };
    // SAFETY: the caller's; `rows_of_b` holds k rows of n values, columns adjacent; the
    // processor has the instruction set (`applies`).
    unsafe { tiles_by_isa([m, k, n], [a, rows_of_b], scale, out) }
}

/// [`tiles`] for the instruction set this processor has: rows of one or two vectors of 16
/// with AVX-512 (eight accumulators a tile), of one to four of 8 with AVX2 (at most nine:
/// three rows of three vectors for attention's rows of 17 to 24). Also `row_tiles`' kernel,
/// a task's rows at a time.
///
/// # Safety
/// As [`tiles`]'s, without the instruction set.
#[cfg(target_arch = "x86_64")]
pub(super) unsafe fn tiles_by_isa(sizes: [usize; 3], ab: [Matrix; 2], scale: f32, out: Dst) {
    use crate::lower::flex_kernels::lanes::Isa;
    // SAFETY: the caller's, and the instruction set each wrapper is compiled for is present.
    unsafe {
        match (isa(), sizes[2].div_ceil(8)) {
            (Some(Isa::Avx512), 1 | 2) => on_avx512::<1, 8>(sizes, ab, scale, out),
            (Some(Isa::Avx512), _) => on_avx512::<2, 4>(sizes, ab, scale, out),
            (Some(Isa::Avx2), 1) => on_avx2::<1, 8>(sizes, ab, scale, out),
            (Some(Isa::Avx2), 2) => on_avx2::<2, 4>(sizes, ab, scale, out),
            (Some(Isa::Avx2), 3) => on_avx2::<3, 3>(sizes, ab, scale, out),
            (Some(Isa::Avx2), _) => on_avx2::<4, 2>(sizes, ab, scale, out),
            (None, _) => unreachable!("`applies` holds only with AVX-512 or AVX2"),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(super) unsafe fn tiles_by_isa(_: [usize; 3], _: [Matrix; 2], _: f32, _: Dst) {
    unreachable!("`applies` holds only with AVX-512 or AVX2");
}

/// [`tiles`] with AVX-512.
///
/// # Safety
/// As [`tiles`]'s; the processor has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn on_avx512<const V: usize, const ROWS: usize>(
    sizes: [usize; 3],
    ab: [Matrix; 2],
    scale: f32,
    out: Dst,
) {
    unsafe { tiles::<crate::lower::flex_kernels::lanes::Avx512, V, ROWS>(sizes, ab, scale, out) }
}

/// [`tiles`] with AVX2 and FMA.
///
/// # Safety
/// As [`tiles`]'s; the processor has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn on_avx2<const V: usize, const ROWS: usize>(
    sizes: [usize; 3],
    ab: [Matrix; 2],
    scale: f32,
    out: Dst,
) {
    unsafe { tiles::<crate::lower::flex_kernels::lanes::Avx2, V, ROWS>(sizes, ab, scale, out) }
}

/// The m rows of `out` from `a`'s, in tiles of `ROWS` rows, each row `V` vectors of `L::WIDTH`
/// lanes, the lanes past column n neither read nor written.
///
/// # Safety
/// `a` and `b` address (m × k) and (k × n) matrices at their strides, `b`'s columns adjacent;
/// `out` holds m rows of n, columns adjacent; `n ≤ V · L::WIDTH`; inside a wrapper compiled
/// for `L`.
#[inline(always)]
unsafe fn tiles<L: Lanes, const V: usize, const ROWS: usize>(
    [m, k, n]: [usize; 3],
    [a, b]: [Matrix; 2],
    scale: f32,
    out: Dst,
) {
    // Lanes of each vector inside the row's n columns.
    let masks: [L::Mask; V] =
        std::array::from_fn(|v| unsafe { L::first(n.saturating_sub(L::WIDTH * v)) });
    let factor = unsafe { L::splat(scale) };
    for top in (0..m).step_by(ROWS) {
        let tile = ROWS.min(m - top);
        let mut acc = [[unsafe { L::zero() }; V]; ROWS];
        for d in 0..k {
            let row = b.at.wrapping_offset(d as isize * b.row_stride);
            // SAFETY: the masked lanes are columns of row d of `b`; the others are not read.
            let y: [L::Vector; V] = std::array::from_fn(|v| unsafe {
                L::load(masks[v], row.wrapping_add(L::WIDTH * v))
            });
            for (r, acc) in acc.iter_mut().enumerate().take(tile) {
                // SAFETY: (top + r, d) lies inside `a`.
                let x = unsafe {
                    *a.at
                        .offset((top + r) as isize * a.row_stride + d as isize * a.col_stride)
                };
                let x = unsafe { L::splat(x) };
                for (acc, y) in acc.iter_mut().zip(y) {
                    *acc = unsafe { L::mul_add(x, y, *acc) };
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(tile) {
            let row = out.at.wrapping_offset((top + r) as isize * out.row_stride);
            for (v, acc) in acc.iter().enumerate() {
                // SAFETY: the masked lanes are columns of row top + r of `out`.
                unsafe {
                    L::store(
                        row.wrapping_add(L::WIDTH * v),
                        masks[v],
                        L::mul(*acc, factor),
                    )
                };
            }
        }
    }
}
