//! A tall output of a shallow, narrow product, `Σ_d a[i, d] · b[d, j]` for thousands of rows,
//! a depth of 3 to 32 and 2 to 16 columns: a tensor-train core applied to every row of a batch
//! ((34,816 × 16) by (16 × 8) in the tiny ViT's TT layers).
//!
//! gemm lays its micro-kernel's 64 lanes along such an output's 2 to 16 columns and ran these
//! at 31–68 GFLOP/s in a step (BENCHMARKS.md, attempt 69). Here `b` is copied into rows of 16
//! (zero past column n) and each task of rows runs `small_batch`'s tiles on it: the lanes run
//! along the columns too, but the vectors are 16 wide (8 with AVX2) and several rows share each
//! load of a row of `b`; each element is one accumulator, its terms in order from zero, each
//! product fused into its addition, then multiplied by the scale, as gemm's micro-kernel does
//! for a depth within one block. So every element has gemm's bits (tested against one gemm
//! call), on any number of threads.

use super::{small_batch, Dst, Grain, Matrix, ONE_DEPTH_BLOCK};
use crate::lower::flex_kernels::lanes::isa;
use rayon::prelude::*;
use std::mem::MaybeUninit;

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
            let b = Matrix {
                at: rows_of_b.as_ptr().cast(),
                row_stride: 16,
                col_stride: 1,
            };
            let into = Dst {
                at: out.as_mut_ptr().cast(),
                row_stride: n as isize,
                col_stride: 1,
            };
            // SAFETY: this task's rows of `a` lie inside it, `b`'s k rows of n inside
            // `rows_of_b`, and `into`'s rows inside `out`; the processor has the instruction
            // set (`applies`).
            unsafe { small_batch::tiles_by_isa([out.len() / n, k, n], [a, b], scale, into) }
        });
}
