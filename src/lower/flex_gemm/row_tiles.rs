//! A tall output of a shallow, narrow product, `Σ_d a[i, d] · b[d, j]` for thousands of rows,
//! a depth of 3 to 32 and 2 to 16 columns: a tensor-train core applied to every row of a batch
//! ((34,816 × 16) by (16 × 8) in the tiny ViT's TT layers).
//!
//! gemm lays its micro-kernel's 64 lanes along such an output's 2 to 16 columns and ran these
//! at 31–68 GFLOP/s in a step (BENCHMARKS.md, attempt 69). Here the lanes run along the
//! columns too, but the vectors are 16 wide (two of 8 with AVX2) and four or eight rows share
//! each load of a row of `b`;
//! each element is one accumulator, its terms in order from zero, each product fused into its
//! addition, then multiplied by the scale, as gemm's micro-kernel does for a depth within one
//! block. So every element has gemm's bits (tested against one gemm call), on any number of
//! threads. With AVX-512 or with AVX2 and FMA (`flex_kernels::lanes`; two vectors a row of 9
//! to 16 there).

use super::{Grain, Matrix, ONE_DEPTH_BLOCK};
use crate::lower::flex_kernels::lanes::{isa, Lanes};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Output rows a tile sums at once with AVX-512, sharing each row of `b` they read.
const TILE_ROWS: usize = 8;
/// Output rows a task takes.
const TASK_ROWS: usize = 512;

/// Whether this kernel takes an (m × n) output of depth `k`: at least 1,024 rows, 2 to 16
/// columns (gemm sums a single column by its matrix-vector kernels), a depth of 3 to 32 (gemm
/// takes depths of 1 or 2 by another kernel; this one reads a row of `a` whole), `a`'s
/// columns adjacent, on a processor with AVX-512 or AVX2.
pub(super) fn applies([m, k, n]: [usize; 3], grain: Grain) -> bool {
    let shapes = m >= 1024 && (2..=16).contains(&n) && (3..=32).contains(&k);
    debug_assert!(k <= ONE_DEPTH_BLOCK);
    shapes && grain.a_columns_adjacent && isa().is_some()
}

/// `scale · a · b` written into `out` (m × n, row-major), where [`applies`] holds.
///
/// # Safety
/// `a` and `b` address (m × k) and (k × n) matrices at their strides in live buffers.
pub(super) unsafe fn product(
    [m, k, n]: [usize; 3],
    [a, b]: [Matrix; 2],
    scale: f32,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(a.col_stride == 1 && (2..=16).contains(&n) && k <= 32 && out.len() == m * n);
    // `b` in rows of 16, zero past column n (a few hundred bytes, in cache for every task).
    let mut rows_of_b = [[0f32; 16]; 32];
    for (d, row) in rows_of_b.iter_mut().enumerate().take(k) {
        for (j, value) in row.iter_mut().enumerate().take(n) {
            // SAFETY: (d, j) lies inside `b`.
            *value = unsafe {
                *b.at
                    .offset(d as isize * b.row_stride + j as isize * b.col_stride)
            };
        }
    }
    out.par_chunks_mut(TASK_ROWS * n)
        .enumerate()
        .for_each(|(task, out)| {
            let a = a.offset((task * TASK_ROWS) as isize * a.row_stride);
            // SAFETY: this task's rows of `a` lie inside it; the processor has the instruction
            // set (`applies`).
            unsafe { rows(a, &rows_of_b[..k], n, scale, out) }
        });
}

/// The rows of `out` (n wide) from the same rows of `a`, in tiles of rows: [`TILE_ROWS`] of a
/// vector of 16 lanes with AVX-512; eight of one vector of 8, or four of two, with AVX2.
///
/// # Safety
/// `a` holds `out`'s rows, each `b.len()` long at unit stride; the processor has the
/// instruction set (`applies`).
#[cfg(target_arch = "x86_64")]
unsafe fn rows(a: Matrix, b: &[[f32; 16]], n: usize, scale: f32, out: &mut [MaybeUninit<f32>]) {
    use crate::lower::flex_kernels::lanes::Isa;
    // SAFETY: the caller's.
    unsafe {
        match (isa(), n) {
            (Some(Isa::Avx512), _) => on_avx512(a, b, n, scale, out),
            (Some(Isa::Avx2), ..=8) => on_avx2::<1, 8>(a, b, n, scale, out),
            (Some(Isa::Avx2), _) => on_avx2::<2, 4>(a, b, n, scale, out),
            (None, _) => unreachable!("`applies` holds only with AVX-512 or AVX2"),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn rows(_: Matrix, _: &[[f32; 16]], _: usize, _: f32, _: &mut [MaybeUninit<f32>]) {
    unreachable!("`applies` holds only with AVX-512 or AVX2");
}

/// [`tiles`] with AVX-512.
///
/// # Safety
/// As [`tiles`]'s; the processor has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn on_avx512(
    a: Matrix,
    b: &[[f32; 16]],
    n: usize,
    scale: f32,
    out: &mut [MaybeUninit<f32>],
) {
    unsafe { tiles::<crate::lower::flex_kernels::lanes::Avx512, 1, TILE_ROWS>(a, b, n, scale, out) }
}

/// [`tiles`] with AVX2 and FMA.
///
/// # Safety
/// As [`tiles`]'s; the processor has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn on_avx2<const V: usize, const ROWS: usize>(
    a: Matrix,
    b: &[[f32; 16]],
    n: usize,
    scale: f32,
    out: &mut [MaybeUninit<f32>],
) {
    unsafe { tiles::<crate::lower::flex_kernels::lanes::Avx2, V, ROWS>(a, b, n, scale, out) }
}

/// The rows of `out` in tiles of `ROWS` rows, each row `V` vectors of `L::WIDTH` lanes (the
/// last masked to `n`): each element of `a` broadcast against the rows of `b`. (Eight rows of
/// one vector with AVX-512, eight of one or four of two with AVX2's 16 registers.)
///
/// # Safety
/// As [`rows`]'s, with `n ≤ V · L::WIDTH ≤ 16`, inside a wrapper compiled for `L`.
#[inline(always)]
unsafe fn tiles<L: Lanes, const V: usize, const ROWS: usize>(
    a: Matrix,
    b: &[[f32; 16]],
    n: usize,
    scale: f32,
    out: &mut [MaybeUninit<f32>],
) {
    assert!(n <= L::WIDTH * V && L::WIDTH * V <= 16);
    let masks: [L::Mask; V] =
        std::array::from_fn(|v| unsafe { L::first(n.saturating_sub(L::WIDTH * v)) });
    let all = unsafe { L::first(L::WIDTH) };
    let factor = unsafe { L::splat(scale) };
    let count = out.len() / n;
    for top in (0..count).step_by(ROWS) {
        let tile = ROWS.min(count - top);
        let mut acc = [[unsafe { L::zero() }; V]; ROWS];
        for (d, row) in b.iter().enumerate() {
            let ys: [L::Vector; V] =
                std::array::from_fn(|v| unsafe { L::load(all, row[L::WIDTH * v..].as_ptr()) });
            for (r, acc) in acc.iter_mut().enumerate().take(tile) {
                // SAFETY: row top + r of `a` holds `b.len()` values.
                let x = unsafe { *a.at.offset((top + r) as isize * a.row_stride + d as isize) };
                let x = unsafe { L::splat(x) };
                for (acc, y) in acc.iter_mut().zip(ys) {
                    *acc = unsafe { L::mul_add(x, y, *acc) };
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(tile) {
            let at = out[(top + r) * n..].as_mut_ptr().cast::<f32>();
            for (v, acc) in acc.iter().enumerate() {
                // SAFETY: the masked lanes are row top + r of `out`.
                unsafe { L::store(at.add(L::WIDTH * v), masks[v], L::mul(*acc, factor)) };
            }
        }
    }
}
