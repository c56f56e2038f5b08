//! A small output summed over a long depth, `Σ_d a[i, d] · b[d, j]` for outputs of at most
//! 64 × 64 and depths of thousands: a tensor-train core's gradient `Xᵀ · dY` over every row
//! of a batch (an (8 × 17,408) by (17,408 × 8) product in the tiny ViT's TT layers, (16 ×
//! 16,384) by (16,384 × 16) in the LLaMA's).
//!
//! gemm runs such a product on one thread (too small in output for its threads and for
//! `Plan::parts`) with its micro-kernel's 64 lanes mostly empty: 21–95 GFLOP/s in a step
//! (BENCHMARKS.md, attempt 68). Here each block of 512 of the depth, the blocks gemm sums a
//! small output in, is summed in registers (one accumulator per element, the terms in order
//! from zero, each product fused into its addition, as gemm's micro-kernel does), the blocks on
//! every thread at once, and the blocks' sums are then added in order, each rounded once, as
//! gemm adds a block to the blocks before it. So every element has gemm's bits (tested against
//! one gemm call), on any number of threads. With AVX-512 or with AVX2 and FMA
//! (`flex_kernels::lanes`).

use super::{Grain, Matrix, ONE_DEPTH_BLOCK};
use crate::lower::flex_kernels::lanes::{isa, Lanes};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Whether this kernel takes an (m × n) output of depth `k`: small (gemm's 64 × 64) but of two
/// rows and two columns at least (gemm sums a single row or column by its matrix-vector
/// kernels, in another order), at least three blocks deep (two are `Plan::depth_halves`'),
/// `a`'s rows and `b`'s columns adjacent (each step of the depth reads a column of `a` and a
/// row of `b` whole), on a processor with AVX-512 or AVX2.
pub(super) fn applies([m, k, n]: [usize; 3], grain: Grain) -> bool {
    let shapes = (2..=64).contains(&m) && (2..=64).contains(&n) && k > 2 * ONE_DEPTH_BLOCK;
    shapes && grain.a_rows_adjacent && grain.b_columns_adjacent && isa().is_some()
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
    assert!(applies([m, k, n], Grain::of([a, b])) && out.len() == m * n);
    let size = m * n;
    let blocks = k.div_ceil(ONE_DEPTH_BLOCK);
    let mut sums = vec![0f32; blocks * size];
    sums.par_chunks_mut(size)
        .enumerate()
        .for_each(|(block, sum)| {
            let start = block * ONE_DEPTH_BLOCK;
            let depth = ONE_DEPTH_BLOCK.min(k - start);
            let a = a.offset(start as isize * a.col_stride);
            let b = b.offset(start as isize * b.row_stride);
            // SAFETY: this block's columns of `a` and rows of `b` lie inside the caller's
            // matrices; the processor has the instruction set (`applies`).
            unsafe { block_sum([m, depth, n], [a, b], sum) }
        });
    // SAFETY: AVX2 and FMA are present (`applies`: `isa` takes AVX-512 only with both).
    unsafe { add_blocks(&sums, size, scale, out) }
}

/// `out = scale · Σ blocks`, the blocks (`size` each) added in order into the first, each
/// product fused into its addition. Compiled for FMA: built for the baseline, `mul_add` is a
/// call into the runtime's `fmaf` an element (0.7 % of a tiny ViT's step with tensor gates,
/// whose 32 × 32 gradient it sums), here a vector instruction with the same bits.
///
/// # Safety
/// The processor has AVX2 and FMA.
#[cfg_attr(target_arch = "x86_64", target_feature(enable = "avx2,fma"))]
unsafe fn add_blocks(sums: &[f32], size: usize, scale: f32, out: &mut [MaybeUninit<f32>]) {
    let mut blocks = sums.chunks(size);
    let first = blocks.next().expect("at least three blocks");
    let mut total: Vec<f32> = first.iter().map(|s| scale * s).collect();
    for block in blocks {
        for (t, s) in total.iter_mut().zip(block) {
            *t = scale.mul_add(*s, *t);
        }
    }
    for (o, t) in out.iter_mut().zip(total) {
        o.write(t);
    }
}

/// One block's sums, `Σ_d a[i, d] · b[d, j]` over its `k`, into `sum` (m × n, row-major), in
/// tiles of rows by `V` vectors: eight rows with AVX-512 (up to two vectors of 16 columns a
/// row, the tensor-train cores' outputs up to 32 wide, their accumulators and a row of `b` fit
/// its 32 registers; wider outputs spill some), eight accumulators with AVX2's 16.
///
/// # Safety
/// As [`product`]'s, for this block; the processor has the instruction set (`applies`).
#[cfg(target_arch = "x86_64")]
unsafe fn block_sum([m, k, n]: [usize; 3], [a, b]: [Matrix; 2], sum: &mut [f32]) {
    use crate::lower::flex_kernels::lanes::Isa;
    let sizes = [m, k, n];
    // SAFETY: the caller's, for each width.
    unsafe {
        match (isa(), n.div_ceil(8)) {
            (Some(Isa::Avx512), 1 | 2) => on_avx512::<1>(sizes, [a, b], sum),
            (Some(Isa::Avx512), 3 | 4) => on_avx512::<2>(sizes, [a, b], sum),
            (Some(Isa::Avx512), 5 | 6) => on_avx512::<3>(sizes, [a, b], sum),
            (Some(Isa::Avx512), _) => on_avx512::<4>(sizes, [a, b], sum),
            (Some(Isa::Avx2), 1) => on_avx2::<1, 8>(sizes, [a, b], sum),
            (Some(Isa::Avx2), 2) => on_avx2::<2, 4>(sizes, [a, b], sum),
            (Some(Isa::Avx2), 3 | 4) => on_avx2::<4, 2>(sizes, [a, b], sum),
            (Some(Isa::Avx2), _) => on_avx2::<8, 1>(sizes, [a, b], sum),
            (None, _) => unreachable!("`applies` holds only with AVX-512 or AVX2"),
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_sum(_: [usize; 3], _: [Matrix; 2], _: &mut [f32]) {
    unreachable!("`applies` holds only with AVX-512 or AVX2");
}

/// [`tiles`] with AVX-512, eight rows a tile.
///
/// # Safety
/// As [`tiles`]'s; the processor has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn on_avx512<const V: usize>(sizes: [usize; 3], ab: [Matrix; 2], sum: &mut [f32]) {
    unsafe { tiles::<crate::lower::flex_kernels::lanes::Avx512, V, 8>(sizes, ab, sum) }
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
    sum: &mut [f32],
) {
    unsafe { tiles::<crate::lower::flex_kernels::lanes::Avx2, V, ROWS>(sizes, ab, sum) }
}

/// The block's output in tiles of `ROWS` rows by `V` vectors of `L::WIDTH` columns (the last
/// ones masked to `n`), each tile's accumulators in registers through the whole depth.
///
/// # Safety
/// As [`block_sum`]'s, with `n ≤ V · L::WIDTH`, inside a wrapper compiled for `L`.
#[inline(always)]
unsafe fn tiles<L: Lanes, const V: usize, const ROWS: usize>(
    [m, k, n]: [usize; 3],
    [a, b]: [Matrix; 2],
    sum: &mut [f32],
) {
    assert!(n <= L::WIDTH * V && sum.len() == m * n);
    // Lanes of each vector inside the output's n columns.
    let masks: [L::Mask; V] =
        std::array::from_fn(|v| unsafe { L::first(n.saturating_sub(L::WIDTH * v)) });
    for top in (0..m).step_by(ROWS) {
        let rows = ROWS.min(m - top);
        let mut acc = [[unsafe { L::zero() }; V]; ROWS];
        for d in 0..k {
            // SAFETY: row d of `b` (its columns adjacent) holds n values; column d of `a` (its
            // rows adjacent) holds m, of which rows [top, top + rows) are read.
            let (row, column) = unsafe {
                (
                    b.at.offset(d as isize * b.row_stride),
                    a.at.offset(d as isize * a.col_stride + top as isize),
                )
            };
            let ys: [L::Vector; V] =
                // `wrapping_add`: a vector wholly past column n (masked off, so neither read
                // nor written) may start past the end of `b`.
                std::array::from_fn(|v| unsafe {
                    L::load(masks[v], row.wrapping_add(L::WIDTH * v))
                });
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                let x = unsafe { L::splat(*column.add(r)) };
                for (acc, y) in acc.iter_mut().zip(ys) {
                    *acc = unsafe { L::mul_add(x, y, *acc) };
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(rows) {
            let at = sum[(top + r) * n..].as_mut_ptr();
            for (v, acc) in acc.iter().enumerate() {
                // SAFETY: the masked lanes of row top + r lie inside `sum`.
                unsafe { L::store(at.wrapping_add(L::WIDTH * v), masks[v], *acc) };
            }
        }
    }
}
