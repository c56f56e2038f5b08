//! Matrix products on Flex's buffers, through the `gemm` crate as Flex's own matmul does, minus
//! the two passes Flex spends on its output before the product.
//!
//! Burn 0.21's Flex allocates a product's output as a zeroed byte vector (`FlexTensor::empty`),
//! which `Bytes` then copies into a new allocation to align it to 16 bytes: a `memset` and a
//! `memmove` over every product's output, forward and backward, 9 % of a LLaMA training step
//! (BENCHMARKS.md, attempt 12). Here gemm writes each output once, into a vector it is the
//! first to touch. Flex's thresholds choose between gemm's own threads and one thread; what
//! they leave on one thread is shared out where that pays ([`Plan::path`]: blocks of rows or
//! columns, two halves of a depth, a small output's depth in blocks (`depth_blocks`), a tall
//! output of a shallow, narrow product in tiles of rows (`row_tiles`), a batch of small
//! products one per thread by a kernel of laxc's (`small_batch`)), each way
//! summing every element as one gemm call on one thread does, to the bit (tested), so that a
//! run's numbers do not depend on the number of threads. `timings` times each product by
//! shape for `laxc bench --products`.

mod depth_blocks;
mod row_tiles;
mod small_batch;
pub mod timings;

use super::flex_kernels::{fills_its_buffer, output, written_part};
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// One product at least this many multiply-adds runs on all of rayon's threads (Flex's rule).
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;
/// A batch of smaller products at least this many multiply-adds in all runs one product per
/// thread (Flex's rule).
const PARALLEL_BATCH: usize = 128 * 128 * 128;
/// A smaller single product at least this many multiply-adds runs in blocks, one per thread
/// ([`Plan::parts`]).
const SPLIT_PRODUCT: usize = 64 * 64 * 64;
/// A larger single product whose output is at most this wide on one side may run in blocks
/// too ([`Plan::thin_cut`]).
const THIN_SIDE: usize = 32;
/// The largest output ([`Plan::depth_halves`]) summed in two halves of its depth: the second
/// half's sums are a buffer of their own and a pass to add, which a product this small in
/// output repays by its depth.
const HALVES_OUTPUT: usize = 256 * 256;
/// Elements per task of the add that joins the two halves.
const HALVES_ADD_TASK: usize = 1 << 14;
/// Blocks of rows or columns are a multiple of this long (gemm's widest micro-kernel side on
/// AVX-512), so that no block ends in a partial tile of gemm's but the last.
const PART_ALIGN: usize = 16;

/// `scale · a · b` over the last two axes, for f32 tensors of one rank ≥ 2 whose leading
/// (batch) axes are equal, with any strides (transposed views included: gemm reads them in
/// place); the scale is gemm's own factor on the product, not a pass of its own. `None` for
/// anything else (another dtype, broadcast batch axes), for the caller to use Flex's own.
pub fn matmul(a: &FlexTensor, b: &FlexTensor, scale: f32) -> Option<FlexTensor> {
    matmul_in(a, b, scale, Order::RowMajor)
}

/// How a batch of products lays out its output buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// One m × n product after the other, row-major: the (…, m, n) tensor itself.
    RowMajor,
    /// For two batch axes (b, h): the buffer of a contiguous (b, m, h, n) tensor, whose view
    /// with the middle axes swapped is the (b, h, m, n) product. Attention's products over
    /// its heads laid out so need no copy to merge the heads back into (b·m, h·n) rows, nor
    /// their gradients to go back to the rows the heads were split from (BENCHMARKS.md,
    /// attempt 89).
    MiddleAxesSwapped,
}

/// The order `t` is laid out in: [`Order::MiddleAxesSwapped`] where it is a 4-D view, its
/// middle axes swapped, of a contiguous tensor that fills its buffer; else row-major.
pub fn order_of(t: &FlexTensor) -> Order {
    let whole = fills_its_buffer;
    match t.layout().shape().num_dims() == 4 && !whole(t) && whole(&t.transpose(1, 2)) {
        true => Order::MiddleAxesSwapped,
        false => Order::RowMajor,
    }
}

/// [`matmul`] with its output laid out in `order`.
pub fn matmul_in(a: &FlexTensor, b: &FlexTensor, scale: f32, order: Order) -> Option<FlexTensor> {
    let plan = Plan::of(a, b)?;
    // With one head (or none) the two orders are one layout.
    let order = match plan.batch_shape[..] {
        [_, heads] if heads > 1 => order,
        _ => Order::RowMajor,
    };
    let (rows, cols) = (plan.m, plan.n);
    let size = rows * cols;
    let mut out: Vec<f32> = Vec::with_capacity(plan.batch * size);
    if plan.k == 0 || size == 0 {
        out.resize(plan.batch * size, 0.0);
    } else {
        let out_all = &mut out.spare_capacity_mut()[..plan.batch * size];
        plan.run(
            a,
            b,
            scale,
            Write::Over,
            Target {
                order,
                out: out_all,
            },
        );
        // SAFETY: `run` wrote every element of the first `batch · size` (gemm without reading
        // the destination writes all of each m × n block, and the blocks of either order
        // tile the buffer).
        unsafe { out.set_len(plan.batch * size) };
    }
    let mut shape = plan.batch_shape;
    Some(match order {
        Order::RowMajor => {
            shape.extend([rows, cols]);
            FlexTensor::from_data(TensorData::new(out, shape))
        }
        Order::MiddleAxesSwapped => {
            let stored = vec![shape[0], rows, shape[1], cols];
            FlexTensor::from_data(TensorData::new(out, stored)).transpose(1, 2)
        }
    })
}

/// `into + a · b` (`scale` 1), written over `into`, where that is to the bit what adding
/// `a · b` to it after the product would give: `into` a row-major f32 tensor of the product's shape that
/// nothing else holds, and a depth gemm does not cut (gemm 0.19 keeps a depth of up to 512
/// in one block, `gemm_common::cache::kernel_params`), so that each element is
/// `into + Σ` rounded once, as the add rounds it (gemm's `dst + 1 · Σ`, a fused multiply-add
/// by one). `None`, `into` untouched, anywhere else.
///
/// Why: a tensor read by several products (a norm's output by q, k and v; a LaX latent by its
/// up factor and the next layer's pathway) gets one input gradient from each, which the
/// autodiff graph adds in a pass of its own; gemm adds its product to the gradient already
/// there as it writes it (BENCHMARKS.md, attempt 54).
pub fn matmul_add(into: &mut FlexTensor, a: &FlexTensor, b: &FlexTensor, scale: f32) -> Option<()> {
    // Another scale would be one rounding (`out + scale · Σ` fused) where the add made two.
    if scale != 1.0 {
        return None;
    }
    let plan = Plan::of(a, b)?;
    let mut shape = plan.batch_shape.clone();
    shape.extend([plan.m, plan.n]);
    let (start, end) = into.layout().contiguous_offsets()?;
    let fits = into.dtype() == DType::F32 && into.layout().shape().to_vec() == shape;
    if !fits || !into.is_unique() || plan.k == 0 || plan.k > ONE_DEPTH_BLOCK {
        return None;
    }
    let values = &mut into.try_storage_mut::<f32>()?[start..end];
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and every element is initialized.
    let out = unsafe {
        std::slice::from_raw_parts_mut(values.as_mut_ptr().cast::<MaybeUninit<f32>>(), values.len())
    };
    let target = Target {
        order: Order::RowMajor,
        out,
    };
    plan.run(a, b, 1.0, Write::AddTo, target);
    Some(())
}

/// The deepest product gemm 0.19 sums in one block (its `kernel_params`' depth is at least 512),
/// and the depth of the blocks it sums a [`small_output`] in.
const ONE_DEPTH_BLOCK: usize = 512;

/// Whether gemm 0.19 takes an (m × n) output as small: of at most 64 × 64, whose depth it cuts
/// in blocks of [`ONE_DEPTH_BLOCK`] instead of its cache model's.
fn small_output(m: usize, n: usize) -> bool {
    m <= 64 && n <= 64
}

/// Whether a product writes its output (`Over` memory it does not read) or adds itself to it.
#[derive(Clone, Copy)]
enum Write {
    Over,
    AddTo,
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

    /// Each product into its (m × n) block of the target, the way [`Plan::path`] says.
    fn run(&self, a: &FlexTensor, b: &FlexTensor, scale: f32, write: Write, target: Target) {
        let Target { order, out } = target;
        let (a_at, b_at) = (Operand::of(a), Operand::of(b));
        // The first product's matrices: every product of a batch has their strides.
        let (a, b) = (a_at.matrix(0), b_at.matrix(0));
        let grain = Grain::of([a, b]);
        let path = self.path(grain, write);
        let started = timings::recording().then(std::time::Instant::now);
        let one = |i: usize, into: Dst, threads| {
            let (a, b) = (a_at.matrix(i), b_at.matrix(i));
            // SAFETY: `a` and `b` point into live buffers at the offsets and strides of their
            // layouts, which span (m × k) and (k × n); `into` is product `i`'s block of the
            // output, which holds the whole batch's in the target's order.
            unsafe { self.block(into, [self.m, self.n], [a, b], scale, write, threads) }
        };
        let size = self.m * self.n;
        let blocks = Output(out.as_mut_ptr().cast());
        match (path, order) {
            (Path::SmallBatch, _) => {
                let sizes = [self.m, self.k, self.n];
                let per_task = small_batch::products_a_task(sizes);
                (0..self.batch)
                    .into_par_iter()
                    .with_min_len(per_task)
                    .for_each(|i| {
                        let (a, b) = (a_at.matrix(i), b_at.matrix(i));
                        let into = self.block_of(blocks, order, i);
                        // SAFETY: as for `one`, and `into`'s columns are adjacent in either order.
                        unsafe { small_batch::product(sizes, [a, b], scale, into) }
                    })
            }
            (Path::Batch, Order::RowMajor) => {
                out.par_chunks_mut(size).enumerate().for_each(|(i, block)| {
                    let into = self.row_major(block.as_mut_ptr().cast());
                    one(i, into, gemm::Parallelism::None)
                })
            }
            (Path::Batch, Order::MiddleAxesSwapped) => (0..self.batch)
                .into_par_iter()
                .for_each(|i| one(i, self.block_of(blocks, order, i), gemm::Parallelism::None)),
            (Path::GemmThreads | Path::OneThread, _) => {
                let threads = match path {
                    Path::GemmThreads => gemm::Parallelism::Rayon(0),
                    _ => gemm::Parallelism::None,
                };
                for i in 0..self.batch {
                    one(i, self.block_of(blocks, order, i), threads);
                }
            }
            // The paths of a single product (`matmul_in` makes a batch of one row-major).
            (Path::DepthBlocks | Path::RowTiles | Path::DepthHalves(_) | Path::Parts(_), _)
                if order != Order::RowMajor =>
            {
                unreachable!("a single product is laid out row-major")
            }
            // SAFETY (the four): as for `one`; `out` holds the one m × n product.
            (Path::DepthBlocks, _) => unsafe {
                depth_blocks::product([self.m, self.k, self.n], [a, b], scale, out)
            },
            (Path::RowTiles, _) => unsafe {
                row_tiles::product([self.m, self.k, self.n], [a, b], scale, out)
            },
            (Path::DepthHalves(first), _) => unsafe {
                self.in_depth_halves(first, out, [a, b], scale, write)
            },
            (Path::Parts(parts), _) => unsafe {
                self.in_parts(parts, blocks, [a, b], scale, write)
            },
        }
        if let Some(started) = started {
            let shape = timings::ProductShape {
                batch: self.batch,
                m: self.m,
                k: self.k,
                n: self.n,
                a_transposed: grain.a_rows_adjacent && self.k > 1,
                b_transposed: !grain.b_columns_adjacent && self.n > 1,
                adds_into: matches!(write, Write::AddTo),
                path: path.name(),
            };
            timings::record(shape, started.elapsed().as_secs_f64());
        }
    }

    /// How the products run: a batch of small products by laxc's kernel, a batch one product
    /// per thread (Flex's rule), one product in blocks of its depth (a small output) or halves
    /// of it, in blocks of rows or columns, in gemm's own threads, or on one.
    fn path(&self, grain: Grain, write: Write) -> Path {
        let flops = self.m * self.n * self.k;
        let sizes = [self.m, self.k, self.n];
        if matches!(write, Write::Over) && small_batch::applies(self.batch, sizes, grain) {
            return Path::SmallBatch;
        }
        if self.batch > 1 && self.batch * flops >= PARALLEL_BATCH && !self.one_is_large(flops) {
            return Path::Batch;
        }
        if self.batch == 1 {
            if matches!(write, Write::Over) && depth_blocks::applies(sizes, grain) {
                return Path::DepthBlocks;
            }
            if matches!(write, Write::Over) && row_tiles::applies(sizes, grain) {
                return Path::RowTiles;
            }
            if let Some(first) = self.depth_halves(flops) {
                return Path::DepthHalves(first);
            }
            if let Some(parts) = self.parts(flops, grain) {
                return Path::Parts(parts);
            }
        }
        match flops >= PARALLEL_PRODUCT {
            true => Path::GemmThreads,
            false => Path::OneThread,
        }
    }

    /// Where to cut the depth of one product that gemm sums in exactly two blocks of depth
    /// (`gemm_depth_block`), with an output of at most [`HALVES_OUTPUT`] elements: at the
    /// first block's end, so that each thread sums one block, as gemm would. `None` for any
    /// other product.
    ///
    /// Why: a weight's gradient, `xᵀ · g` over the batch's 1,024 rows, is such a product
    /// (the depth is the rows), and gemm's threads share its thin output less well: in a
    /// llama-svd step (64 × 1,024) by (1,024 × 256) took 110 µs in gemm's threads, 96 in
    /// halves of its depth (BENCHMARKS.md, attempt 60).
    fn depth_halves(&self, flops: usize) -> Option<usize> {
        if flops < SPLIT_PRODUCT
            || self.m * self.n > HALVES_OUTPUT
            || rayon::current_num_threads() < 2
        {
            return None;
        }
        let block = gemm_depth_block(self.m, self.n, self.k);
        (self.k > block && self.k <= 2 * block).then_some(block)
    }

    /// The product summed in two halves of its depth at once, `first` deep and the rest:
    /// gemm writes (or adds, `write`) the first block's sum into `out` as it would in one
    /// call, the second block's into a buffer of its own, which is then added to `out`,
    /// rounded once, as gemm adds a block to the blocks before it. So every element is what
    /// one call gives, to the bit (tested in tests/lowering.rs).
    ///
    /// # Safety
    /// As [`Plan::product`]'s, for the whole m × n product.
    unsafe fn in_depth_halves(
        &self,
        first: usize,
        out: &mut [MaybeUninit<f32>],
        [a, b]: [Matrix; 2],
        scale: f32,
        write: Write,
    ) {
        let (head, tail) = (self.with_depth(first), self.with_depth(self.k - first));
        // `a`'s columns and `b`'s rows run along the depth.
        let rest = [
            a.offset(first as isize * a.col_stride),
            b.offset(first as isize * b.row_stride),
        ];
        let mut second = output(out.len());
        let (into, apart) = (
            Output(out.as_mut_ptr().cast()),
            Output(second.as_mut_ptr().cast()),
        );
        let [m, n] = [self.m, self.n];
        let none = gemm::Parallelism::None;
        rayon::join(
            // SAFETY: the caller's, for the first `first` of the depth and for the rest; gemm
            // writes every element of each m × n block it does not read.
            || unsafe {
                head.block(
                    self.row_major(into.at(0)),
                    [m, n],
                    [a, b],
                    scale,
                    write,
                    none,
                )
            },
            || unsafe {
                tail.block(
                    self.row_major(apart.at(0)),
                    [m, n],
                    rest,
                    scale,
                    Write::Over,
                    none,
                )
            },
        );
        // SAFETY: both halves wrote (or added to) every element.
        let (sums, seconds) = unsafe { (written_part(out), written_part(&mut second)) };
        sums.par_chunks_mut(HALVES_ADD_TASK)
            .zip(seconds.par_chunks(HALVES_ADD_TASK))
            .for_each(|(sums, seconds)| {
                for (sum, second) in sums.iter_mut().zip(seconds) {
                    *sum += *second;
                }
            });
    }

    /// The same products with a depth of `k`.
    fn with_depth(&self, k: usize) -> Plan {
        Plan {
            batch_shape: self.batch_shape.clone(),
            k,
            ..*self
        }
    }

    /// How to share out one product too small for gemm's own threads (Flex's rule) but large
    /// enough to be worth it (a LaX gate's (1024 × 64) by (64 × 64) ran on one thread while
    /// the other waited): blocks of rows or of columns, one per thread, each the full depth
    /// `k`. `None` to make it one call.
    ///
    /// Each element of a block is then the same sum in the same order as in one call, so long
    /// as gemm cuts the depth the same way: gemm 0.19 cuts it at 512 for products of at most
    /// 64 × 64 and elsewhere at a depth of its cache model's (`gemm_common::gemm`,
    /// `kernel_params`), so blocks stay on the same side of 64 × 64 as the whole product
    /// (tested bit for bit in tests/lowering.rs). The longer side is cut first; where its
    /// blocks would fall on the other side of 64 × 64 over a depth above 512, the shorter one
    /// (a ViT's weight gradients, (32 × 1,088) by (1,088 × 128), ran on one thread: cut in
    /// columns of 64 they were small products, cut in rows of 16 they are not). A larger
    /// product is cut only as [`Plan::thin_cut`] says.
    fn parts(&self, flops: usize, grain: Grain) -> Option<Parts> {
        let threads = rayon::current_num_threads();
        if flops < SPLIT_PRODUCT || threads < 2 {
            return None;
        }
        let parts = if flops >= PARALLEL_PRODUCT {
            self.thin_cut(grain, threads)
        } else {
            let longer_is_rows = self.m >= self.n;
            [longer_is_rows, !longer_is_rows]
                .into_iter()
                .find_map(|by_rows| self.cut(by_rows, threads))
        }?;
        // Blocks of columns are written column-major where `a` suits it and a block is
        // narrower than gemm's lanes (`column_block`).
        let narrow = parts.step < gemm_micro_kernel()[0];
        let column_major = !parts.by_rows && grain.a_rows_adjacent && narrow;
        Some(Parts {
            column_major,
            ..parts
        })
    }

    /// How to share out a product large enough for gemm's own threads whose output is at
    /// most [`THIN_SIDE`] on one side: in blocks of its short side, each block's long side
    /// along gemm's lanes (a tall output's blocks of columns written column-major, a wide
    /// one's blocks of rows row-major), where the operand gemm reads along the lanes is
    /// contiguous along them. `None` for any other product, for gemm's own threads.
    ///
    /// Why: gemm's threads share a thin output out poorly. A ViT's weight gradients
    /// (512 × 1,088) by (1,088 × 32) took 211 µs in a step and (32 × 1,088) by (1,088 × 512)
    /// 136; in such blocks, 142 and 87 (BENCHMARKS.md, attempt 67). Blocks of the long side, or
    /// any blocks of an operand not contiguous along the lanes (the forward products,
    /// (1,088 × 512) by (512 × 32)), were no faster or far slower than gemm's threads.
    ///
    /// Only where gemm's micro-kernel is longer than the thin side (AVX-512's 64 lanes): with
    /// AVX2's 16, gemm's threads share such a product well, and the blocks lose. On an AVX2
    /// machine (512 × 1,088) by (1,088 × 32) took 607–617 µs a call in a vit-svd step in
    /// blocks and 384–394 in gemm's threads (BENCHMARKS.md, attempt 104).
    fn thin_cut(&self, grain: Grain, threads: usize) -> Option<Parts> {
        if self.m.min(self.n) > THIN_SIDE || gemm_micro_kernel()[0] <= THIN_SIDE {
            return None;
        }
        let tall = self.m > self.n;
        let suits = if tall {
            grain.a_rows_adjacent
        } else {
            grain.b_columns_adjacent
        };
        suits.then(|| self.cut(!tall, threads)).flatten()
    }

    /// [`Plan::parts`] in blocks of rows (`by_rows`) or of columns, if that side allows it.
    fn cut(&self, by_rows: bool, threads: usize) -> Option<Parts> {
        let (side, other) = if by_rows {
            (self.m, self.n)
        } else {
            (self.n, self.m)
        };
        let count = threads.min(side / PART_ALIGN);
        if count < 2 {
            return None;
        }
        let step = side.div_ceil(count).next_multiple_of(PART_ALIGN);
        let shortest = side - (side.div_ceil(step) - 1) * step;
        let small = |side: usize| small_output(side, other);
        let same_depth_cut = self.k <= ONE_DEPTH_BLOCK || small(side) == small(shortest);
        // A block a few rows or columns wide could take gemm's matrix-vector path instead.
        let whole_tiles = shortest >= PART_ALIGN;
        (same_depth_cut && whole_tiles).then_some(Parts {
            by_rows,
            step,
            column_major: false,
        })
    }

    /// The product in the blocks of [`Plan::parts`], one gemm call each, in parallel.
    ///
    /// # Safety
    /// As [`Plan::product`]'s, for the whole m × n product.
    unsafe fn in_parts(
        &self,
        parts: Parts,
        out: Output,
        [a, b]: [Matrix; 2],
        scale: f32,
        write: Write,
    ) {
        let Parts {
            by_rows,
            step,
            column_major,
        } = parts;
        let side = if by_rows { self.m } else { self.n };
        let threads = gemm::Parallelism::None;
        (0..side.div_ceil(step)).into_par_iter().for_each(|part| {
            let (start, len) = (part * step, step.min(side - part * step));
            if by_rows {
                let a = a.offset(start as isize * a.row_stride);
                let out = self.row_major(out.at(start * self.n));
                // SAFETY: rows [start, start + len) of `out` and of `a`, inside the caller's
                // product; the blocks are disjoint.
                unsafe { self.block(out, [len, self.n], [a, b], scale, write, threads) }
            } else if column_major {
                let b = b.offset(start as isize * b.col_stride);
                // SAFETY: columns [start, start + len) of `out` and of `b`, as above.
                unsafe { self.column_block(out.at(start), len, [a, b], scale, write) }
            } else {
                let b = b.offset(start as isize * b.col_stride);
                let out = self.row_major(out.at(start));
                // SAFETY: as above.
                unsafe { self.block(out, [self.m, len], [a, b], scale, write, threads) }
            }
        });
    }

    /// One block of `len` columns of the output at `out` (rows `self.n` apart), written
    /// through a buffer of its own in column-major order and copied in.
    ///
    /// Why: gemm lays its micro-kernel's long side (64 lanes with AVX-512) along the output's
    /// contiguous axis; in a row-major block of 16 columns it ran a quarter full. A ViT's
    /// weight gradients, (128 × 1,088) by (1,088 × 32) in two blocks of 16 columns, took 69 µs
    /// in a step; column-major, 21 µs alone against 37 (BENCHMARKS.md, attempt 66). A block
    /// at least as wide as the lanes (AVX2's 16) fills them row-major, where the copy is all
    /// this would add: on an AVX2 machine the same product took 97 µs a call in a step
    /// column-major and 90–92 row-major (attempt 104). The sums are the same: gemm sums each
    /// element in the same order either way (tested bit for bit in tests/lowering.rs).
    ///
    /// # Safety
    /// As [`Plan::block`]'s, for rows `self.m` of `len` columns at `out`.
    unsafe fn column_block(
        &self,
        out: *mut f32,
        len: usize,
        [a, b]: [Matrix; 2],
        scale: f32,
        write: Write,
    ) {
        let rows = self.m;
        let mut buffer = output(rows * len);
        let at = |i: usize, j: usize| out.wrapping_add(i * self.n + j);
        if let Write::AddTo = write {
            for (j, column) in buffer.chunks_mut(rows).enumerate() {
                for (i, value) in column.iter_mut().enumerate() {
                    // SAFETY: (i, j) lies in the block, which the caller lets us read.
                    value.write(unsafe { *at(i, j) });
                }
            }
        }
        let into = Dst {
            at: buffer.as_mut_ptr().cast(),
            row_stride: 1,
            col_stride: rows as isize,
        };
        let none = gemm::Parallelism::None;
        // SAFETY: `buffer` holds the rows × len block at those strides; the rest, the caller's.
        unsafe { self.block(into, [rows, len], [a, b], scale, write, none) };
        // SAFETY: gemm wrote (or added to) every element of the buffer.
        let buffer = unsafe { written_part(&mut buffer) };
        for i in 0..rows {
            for j in 0..len {
                // SAFETY: (i, j) lies in the block, which the caller lets us write.
                unsafe { *at(i, j) = buffer[j * rows + i] };
            }
        }
    }

    /// The destination at `out`, row-major in the plan's output (rows `self.n` apart).
    fn row_major(&self, out: *mut f32) -> Dst {
        Dst {
            at: out,
            row_stride: self.n as isize,
            col_stride: 1,
        }
    }

    /// Where product `i` of the batch goes in an output laid out in `order`.
    fn block_of(&self, out: Output, order: Order, i: usize) -> Dst {
        match order {
            Order::RowMajor => self.row_major(out.at(i * self.m * self.n)),
            // Product (batch j, head h) is rows j·m … of head h's columns in (b, m, h, n).
            Order::MiddleAxesSwapped => {
                let heads = self.batch_shape[1];
                let (j, h) = (i / heads, i % heads);
                Dst {
                    at: out.at((j * self.m * heads + h) * self.n),
                    row_stride: (heads * self.n) as isize,
                    col_stride: 1,
                }
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
    #[cfg(test)]
    unsafe fn product(
        &self,
        out: *mut f32,
        [a, b]: [Matrix; 2],
        scale: f32,
        write: Write,
        threads: gemm::Parallelism,
    ) {
        // SAFETY: the caller's.
        let out = self.row_major(out);
        unsafe { self.block(out, [self.m, self.n], [a, b], scale, write, threads) }
    }

    /// `scale · a · b` for an (m × k) `a` and a (k × n) `b`, into the m × n block at `out`.
    ///
    /// # Safety
    /// `out` is valid for the block's writes; `a` and `b` for the reads their strides describe.
    unsafe fn block(
        &self,
        out: Dst,
        [m, n]: [usize; 2],
        [a, b]: [Matrix; 2],
        scale: f32,
        write: Write,
        threads: gemm::Parallelism,
    ) {
        // gemm computes `out = alpha · out + scale · a · b`, reading `out` only with
        // `read_dst`; alpha 1 is its `out + scale · Σ` as one fused multiply-add.
        let (read_dst, alpha) = match write {
            Write::Over => (false, 0.0),
            Write::AddTo => (true, 1.0),
        };
        // SAFETY: the caller's; gemm writes (and with `read_dst` reads) the block's elements
        // (i, j), i < m, j < n, at `out`'s strides.
        unsafe {
            gemm::gemm(
                m,
                n,
                self.k,
                out.at,
                out.col_stride,
                out.row_stride,
                read_dst,
                a.at,
                a.col_stride,
                a.row_stride,
                b.at,
                b.col_stride,
                b.row_stride,
                alpha,
                scale,
                false,
                false,
                false,
                threads,
            )
        }
    }
}

/// The depth gemm 0.19 sums an (m × n) product of depth `k` in, block by block, adding each
/// block's sum to the blocks' before it (`gemm_common::gemm`): at most 512 for outputs of at
/// most 64 × 64, else its cache model's (`kernel_params`, from the CPU's caches and the
/// micro-kernel gemm runs, [`gemm_micro_kernel`]).
fn gemm_depth_block(m: usize, n: usize, k: usize) -> usize {
    if small_output(m, n) {
        return k.min(ONE_DEPTH_BLOCK);
    }
    let [mr, nr] = gemm_micro_kernel();
    gemm_common::cache::kernel_params(m, n, k, mr, nr, std::mem::size_of::<f32>()).kc
}

/// The output tile gemm 0.19's f32 micro-kernel computes at once here, `[lanes, columns]`:
/// 64 × 6 with AVX-512, else 16 × 6 (AVX2 and FMA; gemm's cache model takes the same
/// elsewhere). Its lanes run along the output's contiguous axis. gemm chooses by `avx512f`
/// alone, so this asks the same (not `flex_kernels::lanes::isa`, which laxc's kernels take).
fn gemm_micro_kernel() -> [usize; 2] {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return [64, 6];
    }
    [16, 6]
}

/// One matrix of an operand: where its first element is and how to step along rows and columns.
#[derive(Clone, Copy)]
struct Matrix {
    at: *const f32,
    row_stride: isize,
    col_stride: isize,
}

// SAFETY: a `Matrix` only addresses an immutable buffer that outlives the product it is read in.
unsafe impl Send for Matrix {}
unsafe impl Sync for Matrix {}

impl Matrix {
    /// The matrix starting `by` elements further on (a block of its rows or columns).
    fn offset(self, by: isize) -> Matrix {
        Matrix {
            at: self.at.wrapping_offset(by),
            ..self
        }
    }
}

/// How [`Plan::run`] runs a product ([`Plan::path`]).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    /// A batch of small products, each on one thread by laxc's kernel (`small_batch`), the
    /// products shared out.
    SmallBatch,
    /// Each product of a batch on one thread, the products shared out.
    Batch,
    /// A small output of a long depth, its depth's blocks summed on every thread at once
    /// (`depth_blocks`).
    DepthBlocks,
    /// A tall output of a shallow, narrow product, in tiles of rows on every thread
    /// (`row_tiles`).
    RowTiles,
    /// One product in two halves of its depth at once, cut this deep.
    DepthHalves(usize),
    /// One product in blocks of rows or columns, one per thread.
    Parts(Parts),
    /// gemm's own threads.
    GemmThreads,
    /// One thread.
    OneThread,
}

impl Path {
    /// The name `laxc bench --products` shows.
    fn name(self) -> &'static str {
        match self {
            Path::SmallBatch => "small batch",
            Path::Batch => "batch",
            Path::DepthBlocks => "depth blocks",
            Path::RowTiles => "row tiles",
            Path::DepthHalves(_) => "depth halves",
            Path::Parts(Parts { by_rows: true, .. }) => "rows",
            Path::Parts(Parts {
                column_major: true, ..
            }) => "columns (column-major)",
            Path::Parts(_) => "columns",
            Path::GemmThreads => "gemm threads",
            Path::OneThread => "one thread",
        }
    }
}

/// Blocks of one product's rows (or columns), `step` of them to a block; blocks of columns
/// written through a column-major buffer of their own where `column_major`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Parts {
    by_rows: bool,
    step: usize,
    column_major: bool,
}

/// Which operand axes lie adjacent in memory, for the way a product's blocks are laid out:
/// gemm runs its micro-kernel's long side (its lanes: 64 with AVX-512) along the output's
/// contiguous axis, and reads fastest an operand that is contiguous along it too.
#[derive(Clone, Copy)]
struct Grain {
    /// `a`'s rows are adjacent (a transposed `a`, as in a weight's gradient `xᵀ · g`): the
    /// output's columns suit gemm column-major.
    a_rows_adjacent: bool,
    /// `b`'s columns are adjacent (a row-major `b`): the output's rows suit gemm row-major.
    b_columns_adjacent: bool,
    /// `a`'s columns are adjacent (a row-major `a`): each row of it is read whole.
    a_columns_adjacent: bool,
    /// `b`'s rows are adjacent (a transposed `b`, as in attention's `q · kᵀ`).
    b_rows_adjacent: bool,
}

impl Grain {
    /// The grain of `a · b`, from the two matrices' strides.
    fn of([a, b]: [Matrix; 2]) -> Grain {
        Grain {
            a_rows_adjacent: a.row_stride == 1,
            b_columns_adjacent: b.col_stride == 1,
            a_columns_adjacent: a.col_stride == 1,
            b_rows_adjacent: b.row_stride == 1,
        }
    }
}

/// The buffer a batch of products is written into (or added to), and its order.
struct Target<'a> {
    order: Order,
    out: &'a mut [MaybeUninit<f32>],
}

/// A product's output, written in disjoint blocks by the threads of [`Plan::run`] and
/// [`Plan::in_parts`].
#[derive(Clone, Copy)]
struct Output(*mut f32);

// SAFETY: each thread writes its own block of the buffer, which outlives the product.
unsafe impl Send for Output {}
unsafe impl Sync for Output {}

impl Output {
    /// The address `i` elements on.
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Where a product's block is written: its first element and how to step along rows and
/// columns.
#[derive(Clone, Copy)]
struct Dst {
    at: *mut f32,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A single product `m × k` by `k × n`.
    fn single(m: usize, k: usize, n: usize) -> Plan {
        Plan {
            batch_shape: Vec::new(),
            batch: 1,
            m,
            k,
            n,
        }
    }

    /// `f` on a pool of two threads, where the plans are made.
    fn on_two_threads<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool");
        pool.install(f)
    }

    /// Row-major operands, as in a forward product `x · w`.
    const ROW_MAJOR: Grain = Grain {
        a_rows_adjacent: false,
        b_columns_adjacent: true,
        a_columns_adjacent: true,
        b_rows_adjacent: false,
    };
    /// A transposed `a` by a row-major `b`, as in a weight's gradient `xᵀ · g`.
    const GRADIENT: Grain = Grain {
        a_rows_adjacent: true,
        b_columns_adjacent: true,
        a_columns_adjacent: false,
        b_rows_adjacent: false,
    };

    /// How a single product of operands laid out as `grain` says is shared out in blocks
    /// between two threads.
    fn cut(m: usize, k: usize, n: usize, grain: Grain) -> Option<Parts> {
        on_two_threads(|| single(m, k, n).parts(m * k * n, grain))
    }

    fn rows(step: usize) -> Option<Parts> {
        Some(Parts {
            by_rows: true,
            step,
            column_major: false,
        })
    }

    fn columns(step: usize, column_major: bool) -> Option<Parts> {
        Some(Parts {
            by_rows: false,
            step,
            column_major,
        })
    }

    /// Whether gemm's micro-kernel here is AVX-512's, 64 lanes long (else 16).
    fn wide_lanes() -> bool {
        #[cfg(target_arch = "x86_64")]
        return std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// The longer side where its blocks keep gemm's depth cut, else the shorter one, else none
    /// (the bits of each cut are tested in tests/lowering.rs); blocks of columns column-major
    /// where `a`'s rows are adjacent and a block is narrower than gemm's lanes (AVX-512's 64).
    #[test]
    fn cuts_the_side_that_keeps_the_depth_cut() {
        assert_eq!(cut(1024, 64, 64, ROW_MAJOR), rows(512));
        assert_eq!(cut(64, 1024, 64, ROW_MAJOR), rows(32));
        // A ViT's weight gradients: halves of the longer side would be small products.
        assert_eq!(cut(32, 1088, 128, GRADIENT), rows(16));
        assert_eq!(cut(128, 1088, 32, GRADIENT), columns(16, wide_lanes()));
        assert_eq!(cut(128, 1088, 32, ROW_MAJOR), columns(16, false));
        // Wider than tall.
        assert_eq!(cut(64, 300, 256, ROW_MAJOR), columns(128, false));
        // Neither side: the longer one's blocks are small, the shorter one's too thin.
        assert_eq!(cut(100, 1088, 40, ROW_MAJOR), None);
        // Too small to share.
        assert_eq!(cut(32, 32, 32, ROW_MAJOR), None);
    }

    /// Products large enough for gemm's own threads stay whole, but for thin outputs whose
    /// short side's blocks suit the operands, where gemm's lanes (AVX-512's 64) are longer
    /// than the short side.
    #[test]
    fn cuts_large_products_only_thin_along_their_grain() {
        assert_eq!(cut(256, 256, 256, ROW_MAJOR), None);
        // A ViT's weight gradients in its MLP.
        let thin = |parts: Option<Parts>| parts.filter(|_| wide_lanes());
        assert_eq!(cut(512, 1088, 32, GRADIENT), thin(columns(16, true)));
        assert_eq!(cut(32, 1088, 512, GRADIENT), thin(rows(16)));
        // Its forward product: `x` is row-major, so columns would not suit it.
        assert_eq!(cut(1088, 512, 32, ROW_MAJOR), None);
        // A LLaMA's: not thin.
        assert_eq!(cut(768, 1024, 64, GRADIENT), None);
    }

    /// A (rows × cols) tensor of values in [−0.5, 0.5) from `seed`.
    fn values(rows: usize, cols: usize, seed: u64) -> FlexTensor {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let values = (0..rows * cols)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect::<Vec<f32>>();
        FlexTensor::from_data(TensorData::new(values, [rows, cols]))
    }

    /// `a · b` runs by `path`, and through [`matmul`] on two threads has the bits of one gemm
    /// call on one thread, at scales 1 and 0.3.
    fn assert_one_call_bits(a: &FlexTensor, b: &FlexTensor, path: Path) {
        let plan = Plan::of(a, b).expect("f32");
        let (m, k, n) = (plan.m, plan.k, plan.n);
        let grain = Grain::of([Operand::of(a).matrix(0), Operand::of(b).matrix(0)]);
        assert_eq!(plan.path(grain, Write::Over), path, "({m}, {k}, {n})");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for scale in [1.0, 0.3] {
            let mut one_call = vec![0f32; m * n];
            let matrices = [Operand::of(a).matrix(0), Operand::of(b).matrix(0)];
            let none = gemm::Parallelism::None;
            // SAFETY: `a` and `b` are live (m × k) and (k × n) matrices; the buffer holds m × n.
            unsafe { plan.product(one_call.as_mut_ptr(), matrices, scale, Write::Over, none) };
            let shared = on_two_threads(|| matmul(a, b, scale).expect("f32"));
            let got = shared.as_slice::<f32>().expect("f32");
            assert!(bits(got) == bits(&one_call), "({m}, {k}, {n}) at {scale}");
        }
    }

    /// A small output of a long depth, `xᵀ · g` (the tensor-train cores' gradients), summed in
    /// blocks of its depth on every thread at once has the bits of one gemm call on one thread,
    /// at scale 1 and 0.3, for depths that are and are not a multiple of 512, outputs narrower
    /// than a vector and wider, and rows beyond a tile of eight (the test fails with the
    /// blocks' sums added in two roundings).
    #[test]
    fn depth_blocks_equal_one_gemm_call() {
        use burn::backend::Flex;
        use burn::tensor::ops::FloatTensorOps;
        if !depth_blocks::applies([8, 2048, 8], GRADIENT) {
            return; // neither AVX-512 nor AVX2 here: gemm runs these products
        }
        // A single row or column is gemm's matrix-vector kernel's, two blocks depth halves'.
        assert!(!depth_blocks::applies([1, 2048, 8], GRADIENT));
        assert!(!depth_blocks::applies([8, 2048, 1], GRADIENT));
        assert!(!depth_blocks::applies([8, 1024, 8], GRADIENT));
        for (m, k, n) in [
            (8, 17408, 8),
            (16, 16384, 16),
            (8, 17408, 32),
            (16, 34816, 8),
            (13, 2049, 37),
            (64, 1100, 64),
            (2, 1537, 2),
        ] {
            let x = Flex::float_transpose(values(k, m, 1));
            assert_one_call_bits(&x, &values(k, n, 2), Path::DepthBlocks);
        }
    }

    /// A tall output of a shallow, narrow product, `x · w` and `g · wᵀ` (a tensor-train core
    /// applied to every row, and its input gradient), summed in tiles of rows has the bits of
    /// one gemm call on one thread, at scale 1 and 0.3, for widths under and at a vector's,
    /// depths of 3 to 32, and rows beyond whole tiles and tasks.
    #[test]
    fn row_tiles_equal_one_gemm_call() {
        use burn::backend::Flex;
        use burn::tensor::ops::FloatTensorOps;
        if !row_tiles::applies([2048, 8, 8], ROW_MAJOR) {
            return; // neither AVX-512 nor AVX2 here: gemm runs these products
        }
        // One column is gemm's matrix-vector kernel's, a depth of two its outer products'.
        assert!(!row_tiles::applies([2048, 8, 1], ROW_MAJOR));
        assert!(!row_tiles::applies([2048, 2, 8], ROW_MAJOR));
        assert!(!row_tiles::applies([2048, 8, 8], GRADIENT));
        for (m, k, n, transposed) in [
            (34816, 16, 8, false),
            (17408, 8, 8, true),
            (17408, 8, 8, false),
            (16384, 16, 16, true),
            (1030, 3, 2, false),
            (2001, 32, 13, true),
        ] {
            let w = match transposed {
                true => Flex::float_transpose(values(n, k, 4)),
                false => values(k, n, 4),
            };
            assert_one_call_bits(&values(m, k, 3), &w, Path::RowTiles);
        }
    }

    /// A (batch × rows × cols) tensor of values in [−0.5, 0.5) from `seed`.
    fn batch_of(batch: usize, rows: usize, cols: usize, seed: u64) -> FlexTensor {
        let flat = values(batch * rows, cols, seed);
        let data = flat.into_data().to_vec::<f32>().expect("f32");
        FlexTensor::from_data(TensorData::new(data, [batch, rows, cols]))
    }

    /// A batch of small products (attention's per-head products in the ViT, `q · kᵀ` and
    /// `p · v`, and their gradients' transposed operands) by laxc's kernel has, product by
    /// product, the bits of one gemm call on one thread, at scale 1 and 0.3, for one and two
    /// vectors of columns, tiles of rows whole and not, row-major and transposed operands, and
    /// the largest shapes it takes.
    #[test]
    fn small_batches_equal_one_gemm_call_a_product() {
        use burn::backend::Flex;
        use burn::tensor::ops::FloatTensorOps;
        if !small_batch::applies(2, [17, 32, 17], ROW_MAJOR) {
            return; // neither AVX-512 nor AVX2 here: gemm runs these products
        }
        // One product, one row or column, a depth of two, more than the kernel holds, or
        // gemm's dot products (a row-major `a` by a transposed `b`, at most 256 outputs): gemm's.
        let dots = Grain {
            b_rows_adjacent: true,
            ..ROW_MAJOR
        };
        for (batch, sizes, grain) in [
            (1, [17, 32, 17], ROW_MAJOR),
            (2, [1, 32, 17], ROW_MAJOR),
            (2, [17, 32, 1], ROW_MAJOR),
            (2, [17, 2, 17], ROW_MAJOR),
            (2, [65, 32, 17], ROW_MAJOR),
            (2, [17, 65, 17], ROW_MAJOR),
            (2, [17, 32, 33], ROW_MAJOR),
            (2, [16, 32, 16], dots),
        ] {
            assert!(
                !small_batch::applies(batch, sizes, grain),
                "{batch} × {sizes:?}"
            );
        }
        assert!(small_batch::applies(2, [17, 32, 16], dots));
        let none = gemm::Parallelism::None;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (batch, m, k, n, a_transposed, b_transposed) in [
            (256, 17, 32, 17, false, true),
            (256, 17, 17, 32, false, false),
            (256, 17, 17, 32, true, false),
            (256, 17, 32, 17, false, false),
            (3, 64, 64, 32, false, false),
            (3, 64, 64, 32, false, true),
            (7, 9, 5, 32, false, true),
            (7, 9, 5, 16, true, true),
            (2, 33, 20, 20, true, true),
            (5, 2, 3, 2, true, false),
            (4, 64, 3, 2, false, false),
            (3, 11, 7, 8, false, false),
            (3, 12, 9, 12, true, false),
        ] {
            let a = match a_transposed {
                true => Flex::float_transpose(batch_of(batch, k, m, 1)),
                false => batch_of(batch, m, k, 1),
            };
            let b = match b_transposed {
                true => Flex::float_transpose(batch_of(batch, n, k, 2)),
                false => batch_of(batch, k, n, 2),
            };
            let case = format!("{batch} × ({m} × {k}) by ({k} × {n})");
            let plan = Plan::of(&a, &b).expect("f32");
            let (a_at, b_at) = (Operand::of(&a), Operand::of(&b));
            let grain = Grain::of([a_at.matrix(0), b_at.matrix(0)]);
            assert_eq!(plan.path(grain, Write::Over), Path::SmallBatch, "{case}");
            for scale in [1.0, 0.3] {
                let mut one_call = vec![0f32; batch * m * n];
                for (i, out) in one_call.chunks_exact_mut(m * n).enumerate() {
                    let matrices = [a_at.matrix(i), b_at.matrix(i)];
                    // SAFETY: product i's matrices are live; its block holds m × n.
                    unsafe { plan.product(out.as_mut_ptr(), matrices, scale, Write::Over, none) };
                }
                let shared = on_two_threads(|| matmul(&a, &b, scale).expect("f32"));
                let got = shared.as_slice::<f32>().expect("f32");
                assert!(bits(got) == bits(&one_call), "{case} at {scale}");
            }
        }
    }

    /// Blocks of columns written column-major (`column_block`, which only machines with
    /// AVX-512 choose) have the bits of one gemm call on one thread, on any machine: written
    /// over and added to, blocks whole and not, at scale 0.3.
    #[test]
    fn column_major_blocks_equal_one_gemm_call() {
        use burn::backend::Flex;
        use burn::tensor::ops::FloatTensorOps;
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (m, k, n) in [(128, 1088, 32), (512, 1088, 32), (100, 300, 40)] {
            let (a, b) = (Flex::float_transpose(values(k, m, 1)), values(k, n, 2));
            let plan = Plan::of(&a, &b).expect("f32");
            let matrices = [Operand::of(&a).matrix(0), Operand::of(&b).matrix(0)];
            let parts = columns(16, true).expect("blocks");
            let before = values(m, n, 3).into_data().to_vec::<f32>().expect("f32");
            for write in [Write::Over, Write::AddTo] {
                let mut one_call = before.clone();
                let none = gemm::Parallelism::None;
                // SAFETY: `a` and `b` are live (m × k) and (k × n) matrices; the buffer holds
                // m × n.
                unsafe { plan.product(one_call.as_mut_ptr(), matrices, 0.3, write, none) };
                let mut blocks = before.clone();
                let out = Output(blocks.as_mut_ptr());
                // SAFETY: as above.
                on_two_threads(|| unsafe { plan.in_parts(parts, out, matrices, 0.3, write) });
                let adds = matches!(write, Write::AddTo);
                assert!(
                    bits(&blocks) == bits(&one_call),
                    "({m}, {k}, {n}), adding {adds}"
                );
            }
        }
    }

    /// Where the depth of a single product is cut for two threads.
    fn halves(m: usize, k: usize, n: usize) -> Option<usize> {
        on_two_threads(|| single(m, k, n).depth_halves(m * k * n))
    }

    /// At gemm's one block boundary, for two blocks only.
    #[test]
    fn halves_a_depth_of_two_blocks_only() {
        // Outputs of at most 64 × 64: blocks of 512.
        assert_eq!(halves(64, 1024, 64), Some(512));
        assert_eq!(halves(64, 600, 64), Some(512));
        assert_eq!(halves(64, 1088, 64), None);
        assert_eq!(halves(64, 512, 64), None);
        // Larger ones: gemm's cache model's block, which is the half on any cache.
        let half = gemm_depth_block(64, 256, 1024);
        assert!(half >= 512, "{half}");
        assert_eq!(halves(64, 1024, 256), (half < 1024).then_some(half));
        // Outputs too large, products too small.
        assert_eq!(halves(512, 1024, 512), None);
        assert_eq!(halves(16, 1000, 16), None);
    }
}
