//! Matrix products on Flex's buffers, through the `gemm` crate as Flex's own matmul does, minus
//! the two passes Flex spends on its output before the product.
//!
//! Burn 0.21's Flex allocates a product's output as a zeroed byte vector (`FlexTensor::empty`),
//! which `Bytes` then copies into a new allocation to align it to 16 bytes: a `memset` and a
//! `memmove` over every product's output, forward and backward, 9 % of a LLaMA training step
//! (BENCHMARKS.md, attempt 12). Here gemm writes each output once, into a vector it is the
//! first to touch. The choice of threads is Flex's (the same thresholds), so the only change
//! is the passes saved; the sums are the same gemm kernels' in the same order.

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// One product at least this many multiply-adds runs on all of rayon's threads (Flex's rule).
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;
/// A batch of smaller products at least this many multiply-adds in all runs one product per
/// thread (Flex's rule).
const PARALLEL_BATCH: usize = 128 * 128 * 128;

/// `scale · a · b` over the last two axes, for f32 tensors of one rank ≥ 2 whose leading
/// (batch) axes are equal, with any strides (transposed views included: gemm reads them in
/// place); the scale is gemm's own factor on the product, not a pass of its own. `None` for
/// anything else (another dtype, broadcast batch axes), for the caller to use Flex's own.
pub fn matmul(a: &FlexTensor, b: &FlexTensor, scale: f32) -> Option<FlexTensor> {
    let plan = Plan::of(a, b)?;
    let (rows, cols) = (plan.m, plan.n);
    let size = rows * cols;
    let mut out: Vec<f32> = Vec::with_capacity(plan.batch * size);
    if plan.k == 0 || size == 0 {
        out.resize(plan.batch * size, 0.0);
    } else {
        plan.run(
            a,
            b,
            scale,
            &mut out.spare_capacity_mut()[..plan.batch * size],
        );
        // SAFETY: `run` wrote every element of the first `batch · size` (gemm without reading
        // the destination writes all of each m × n block).
        unsafe { out.set_len(plan.batch * size) };
    }
    let mut shape = plan.batch_shape;
    shape.extend([rows, cols]);
    Some(FlexTensor::from_data(TensorData::new(out, shape)))
}

/// The products `a · b` stands for: `batch` products of (m × k) by (k × n).
struct Plan {
    batch_shape: Vec<usize>,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

impl Plan {
    fn of(a: &FlexTensor, b: &FlexTensor) -> Option<Plan> {
        if a.dtype() != DType::F32 || b.dtype() != DType::F32 {
            return None;
        }
        let (sa, sb) = (a.layout().shape(), b.layout().shape());
        let rank = sa.len();
        if rank < 2 || sb.len() != rank || sa[..rank - 2] != sb[..rank - 2] {
            return None;
        }
        let (m, k, n) = (sa[rank - 2], sa[rank - 1], sb[rank - 1]);
        if sb[rank - 2] != k {
            return None;
        }
        let batch_shape = sa[..rank - 2].to_vec();
        let batch = batch_shape.iter().product();
        Some(Plan {
            batch_shape,
            batch,
            m,
            k,
            n,
        })
    }

    /// Each product into its (m × n) block of `out`, row-major.
    fn run(&self, a: &FlexTensor, b: &FlexTensor, scale: f32, out: &mut [MaybeUninit<f32>]) {
        let (a_at, b_at) = (Operand::of(a), Operand::of(b));
        let one = |i: usize, block: &mut [MaybeUninit<f32>], threads| {
            let (a, b) = (a_at.matrix(i), b_at.matrix(i));
            // SAFETY: `a` and `b` point into live buffers at the offsets and strides of their
            // layouts, which span (m × k) and (k × n); `block` holds m × n elements.
            unsafe { self.product(block.as_mut_ptr().cast(), [a, b], scale, threads) }
        };
        let flops = self.m * self.n * self.k;
        let size = self.m * self.n;
        if self.batch > 1 && self.batch * flops >= PARALLEL_BATCH && !self.one_is_large(flops) {
            out.par_chunks_mut(size)
                .enumerate()
                .for_each(|(i, block)| one(i, block, gemm::Parallelism::None));
        } else {
            let threads = if flops >= PARALLEL_PRODUCT {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            };
            for (i, block) in out.chunks_mut(size).enumerate() {
                one(i, block, threads);
            }
        }
    }

    /// Whether each product is large enough to share out by itself (and the batch is too
    /// short to share out instead): Flex's order of preference.
    fn one_is_large(&self, flops: usize) -> bool {
        flops >= PARALLEL_PRODUCT && self.batch < 4
    }

    /// # Safety
    /// `out` is valid for m × n writes; `a` and `b` for the reads their strides describe.
    unsafe fn product(
        &self,
        out: *mut f32,
        [a, b]: [Matrix; 2],
        scale: f32,
        threads: gemm::Parallelism,
    ) {
        // SAFETY: the caller's; gemm writes out[i·n + j] for i < m, j < n without reading it
        // (`read_dst` false: out = scale · a · b).
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                out,
                1,
                self.n as isize,
                false,
                a.at,
                a.col_stride,
                a.row_stride,
                b.at,
                b.col_stride,
                b.row_stride,
                0.0,
                scale,
                false,
                false,
                false,
                threads,
            )
        }
    }
}

/// One matrix of an operand: where its first element is and how to step along rows and columns.
#[derive(Clone, Copy)]
struct Matrix {
    at: *const f32,
    row_stride: isize,
    col_stride: isize,
}

/// A tensor as a batch of matrices.
struct Operand<'a> {
    data: &'a [f32],
    start: isize,
    batch_shape: &'a [usize],
    batch_strides: &'a [isize],
    row_stride: isize,
    col_stride: isize,
}

// SAFETY: an `Operand` only reads an immutable buffer it borrows; its pointers are derived
// from that borrow on use.
unsafe impl Sync for Operand<'_> {}

impl<'a> Operand<'a> {
    fn of(t: &'a FlexTensor) -> Operand<'a> {
        let layout = t.layout();
        let strides = layout.strides();
        let rank = strides.len();
        Operand {
            data: t.storage::<f32>(),
            start: layout.start_offset() as isize,
            batch_shape: &layout.shape()[..rank - 2],
            batch_strides: &strides[..rank - 2],
            row_stride: strides[rank - 2],
            col_stride: strides[rank - 1],
        }
    }

    /// The `i`-th matrix in row-major order of the batch axes.
    fn matrix(&self, i: usize) -> Matrix {
        let mut offset = self.start;
        let mut rest = i;
        for (&len, &stride) in self.batch_shape.iter().zip(self.batch_strides).rev() {
            offset += (rest % len) as isize * stride;
            rest /= len;
        }
        Matrix {
            // The layout keeps every element it describes inside the buffer.
            at: self.data.as_ptr().wrapping_offset(offset),
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
}
