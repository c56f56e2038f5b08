//! Kernels on Flex's own buffers, for the ops where Burn 0.21's Flex is slow on a CPU: it calls
//! libm one element at a time (GELU's `erf`, SiLU's and softmax's `exp`), composes a norm's
//! backward pass of a dozen passes over memory, and copies a permuted view through a general
//! strided iterator. One module per kind of op:
//!
//! - `adamw`: one AdamW step of a parameter (the optimizer's, `train::optimizer`);
//! - `add`: the sum of two tensors over the first (a LaX add without a norm);
//! - `activation`: GELU (exact and tanh), SiLU and SwiGLU, forward and backward;
//! - `softmax`: softmax with an additive mask, and its backward;
//! - `squares`: the sum of a tensor's squares (a gradient's share of the clip's global norm);
//! - `norm`: RMSNorm forward, either norm of a sum (`add_norm`; of a scaled sum, a linear
//!   gate's, `add_scaled_norm`), both norms' backward (of a scaled sum with the gate's
//!   gradients, `scaled_norm_backward`); `norm_blocks` takes their rows of 16 to 256 elements
//!   sixteen rows at a time;
//! - `rope`: rotate-half RoPE and its transpose;
//! - `kron`: the Kronecker product of a tensor gate's two cores, and its backward;
//! - `tensor_gate`: a tensor gate applied to rows in its factored form, and its input gradient;
//! - `scale`: the linear gate's product by a scalar, and its backward;
//! - `layout`: the swap of a 3-D or 4-D tensor's middle axes;
//! - `math`: `exp` and `erf` without branches or library calls;
//! - `lanes`: the vector registers that hand-written kernels (the tensor gate's rows here,
//!   `flex_gemm`'s product kernels) take, AVX-512's or AVX2's, behind one trait, and the
//!   instruction set this processor has for them (`norm_blocks` too).
//!
//! Each kernel reads contiguous f32 tensors (otherwise it declines, `None`, and the caller
//! composes the formula from Burn's ops); where an op reads an input last, its kernel writes its
//! output over that input ([`own_f32s`]). Each splits the work into tasks over rayon's pool
//! (Flex's own), and where it is arithmetic, runs loops the compiler vectorizes ([`vectorized`]: compiled
//! again for AVX-512 and for AVX2 and chosen at run time; sums along a row on [`LANES`]
//! accumulators, [`sum_by`]). Each is tested against its composed formula (tests/lowering.rs)
//! and, for `exp` and `erf`, against f64 (`math`).

mod activation;
mod adamw;
mod add;
mod cross_entropy;
mod dropout;
mod kron;
pub(crate) mod lanes;
mod layout;
mod math;
mod norm;
#[cfg(target_arch = "x86_64")]
mod norm_blocks;
mod rope;
mod scale;
mod softmax;
mod squares;
mod tensor_gate;

pub use activation::{
    gelu, gelu_backward, gelu_tanh, gelu_tanh_backward, silu, silu_backward, swiglu,
    swiglu_backward,
};
pub use adamw::{adamw, adamw_first, AdamWStep};
pub use add::add_over;
pub use cross_entropy::{cross_entropy, cross_entropy_backward};
pub use dropout::dropout;
pub use kron::{kron, kron_backward};
pub use layout::swap_middle_axes;
pub use norm::{add_norm, add_scaled_norm, norm_backward, rms_norm, scaled_norm_backward};
pub use rope::rope;
pub use scale::{scale, scale_backward};
pub use softmax::{softmax, softmax_backward};
pub use squares::sum_of_squares;
pub use tensor_gate::{tensor_gate, tensor_gate_applies, tensor_gate_input_gradient};

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData, TensorMetadata};
use std::mem::{ManuallyDrop, MaybeUninit};

/// The elements of a contiguous f32 tensor.
pub(super) fn f32s(t: &FlexTensor) -> Option<&[f32]> {
    match t.dtype() {
        DType::F32 => t.as_slice::<f32>(),
        _ => None,
    }
}

/// Whether `t` is contiguous from its buffer's start to its end: what a kernel reading the
/// buffer whole, or a reshape without a copy, needs.
pub fn fills_its_buffer(t: &FlexTensor) -> bool {
    let layout = t.layout();
    layout.is_contiguous()
        && layout.start_offset() == 0
        && t.bytes().len() == layout.num_elements() * t.dtype().size()
}

/// Whether a kernel may write over `t` ([`own_f32s`]): contiguous f32, as every kernel reads
/// (a strided one goes to the composed formula, as it did before kernels wrote in place).
pub(super) fn overwritable(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32 && t.layout().contiguous_offsets().is_some()
}

/// The elements of a contiguous f32 tensor `t` ([`overwritable`]) for a kernel to write over:
/// `t`'s own buffer where nothing else holds it, else a private copy that `t` then holds
/// (whatever else held the old buffer keeps it unchanged). An output written over an input
/// that was just computed is written into memory still in cache, where a fresh buffer's every
/// line is first read from memory (BENCHMARKS.md, attempt 43).
pub(super) fn own_f32s(t: &mut FlexTensor) -> &mut [f32] {
    assert!(overwritable(t), "a contiguous f32 tensor");
    if !t.is_unique() {
        let values = f32s(t).expect("contiguous f32").to_vec();
        *t = FlexTensor::from_data(TensorData::new(values, t.shape()));
    }
    let (start, end) = t.layout().contiguous_offsets().expect("contiguous");
    let all = t.try_storage_mut::<f32>().expect("nothing else holds it");
    &mut all[start..end]
}

/// An output buffer of `len` elements for a kernel to write whole, not zeroed first: a
/// `vec![0.0; len]` is a pass over memory of its own (`memset`, 2–3 % of a training step in
/// `perf`). [`written`] makes it a `Vec<f32>` once every element is written.
pub(super) fn output(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut out = Vec::with_capacity(len);
    // SAFETY: the capacity is `len`, and `MaybeUninit` elements need no initialization.
    unsafe { out.set_len(len) };
    out
}

/// An [`output`] buffer as the f32 it now holds.
///
/// # Safety
/// Every element of `out` has been written.
pub(super) unsafe fn written(out: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut out = ManuallyDrop::new(out);
    let (ptr, len, capacity) = (out.as_mut_ptr(), out.len(), out.capacity());
    // SAFETY: `MaybeUninit<f32>` has f32's size and alignment, the buffer came from a Vec of
    // this capacity, and the caller vouches that all `len` elements are initialized.
    unsafe { Vec::from_raw_parts(ptr.cast::<f32>(), len, capacity) }
}

/// A part of an [`output`] buffer, once written, as f32 (for a kernel that reads back what it
/// wrote, as the norms' passes over a row do).
///
/// # Safety
/// Every element of `part` has been written.
#[inline(always)]
pub(super) unsafe fn written_part(part: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: same layout, and the caller vouches that every element is initialized.
    unsafe { &mut *(part as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// A new tensor of `values`, shaped as `t`.
pub(super) fn like(t: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, t.shape()))
}

/// Elements per task: large enough that a task outweighs its hand-off.
pub(super) const CHUNK: usize = 1 << 14;

/// Elements per task of a parallel pass over `n` elements in whole `unit`s (a row, a block of
/// rows): tasks of [`CHUNK`], but where that makes more tasks than the pool has threads, their
/// number rounded down to a multiple of the threads (fewer and longer), of equal length but
/// for the last (whole units can leave fewer: 9 units in 4 tasks are 3 of 3). Why: a pass
/// ends when its slowest thread does, and tasks of exactly `CHUNK` left one thread a short
/// third task after both had done one (a tiny ViT's latent, 1,088 rows of 32: tasks of 512,
/// 512 and 64 rows, where two of 544 take less).
pub(super) fn per_task(n: usize, unit: usize) -> usize {
    let (units, threads) = (n.div_ceil(unit).max(1), rayon::current_num_threads().max(1));
    let mut tasks = units.div_ceil(CHUNK.div_ceil(unit));
    if tasks > threads {
        tasks = tasks / threads * threads;
    }
    units.div_ceil(tasks) * unit
}

/// Independent accumulators of a sum along a row. Floating-point addition does not reassociate,
/// so a plain running sum is one serial chain the compiler must keep scalar; `LANES` chains
/// (two AVX2 registers' worth) vectorize, and are added together at the end.
pub(super) const LANES: usize = 16;

/// `Σ f(x)` over `xs` on [`LANES`] accumulators.
#[inline(always)]
pub(super) fn sum_by(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f(x);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    total(lanes) + tail
}

/// `Σ f(x, y)` over the pairs of `xs` and `ys` (of one length) on [`LANES`] accumulators.
#[inline(always)]
pub(super) fn sum_by_pairs(xs: &[f32], ys: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    debug_assert_eq!(xs.len(), ys.len());
    let mut lanes = [0.0f32; LANES];
    let (mut xc, mut yc) = (xs.chunks_exact(LANES), ys.chunks_exact(LANES));
    for (x, y) in (&mut xc).zip(&mut yc) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += f(x, y);
        }
    }
    let pairs = xc.remainder().iter().zip(yc.remainder());
    let tail: f32 = pairs.map(|(&x, &y)| f(x, y)).sum();
    total(lanes) + tail
}

/// [`sum_by`] of four rows of one length at once, `f` given the row's index (0 to 3). Each
/// row's sum is the same additions in the same order as alone; the four chains interleave,
/// which a processor overlaps. (A row's sum is a chain of dependent additions and a total
/// across lanes: on a 64-wide row that latency, not the elements, sets the time.)
#[inline(always)]
pub(super) fn sum4_by(rows: [&[f32]; 4], f: impl Fn(usize, f32) -> f32) -> [f32; 4] {
    sum4_by_pairs(rows, rows, |k, x, _| f(k, x))
}

/// [`sum_by_pairs`] of four pairs of rows at once, each pair's sum the same additions in the
/// same order as alone, the four chains interleaved as [`sum4_by`] says.
#[inline(always)]
pub(super) fn sum4_by_pairs(
    xs: [&[f32]; 4],
    ys: [&[f32]; 4],
    f: impl Fn(usize, f32, f32) -> f32,
) -> [f32; 4] {
    let len = xs[0].len();
    debug_assert!(xs.iter().chain(&ys).all(|row| row.len() == len));
    let lane = |chunk: &[f32]| -> [f32; LANES] { chunk.try_into().expect("LANES elements") };
    let (mut l0, mut l1, mut l2, mut l3) =
        ([0.0f32; LANES], [0.0; LANES], [0.0; LANES], [0.0; LANES]);
    let [x0, x1, x2, x3] = xs.map(|row| row.chunks_exact(LANES));
    let [y0, y1, y2, y3] = ys.map(|row| row.chunks_exact(LANES));
    for ((((a0, b0), (a1, b1)), (a2, b2)), (a3, b3)) in
        x0.zip(y0).zip(x1.zip(y1)).zip(x2.zip(y2)).zip(x3.zip(y3))
    {
        let (a0, a1, a2, a3) = (lane(a0), lane(a1), lane(a2), lane(a3));
        let (b0, b1, b2, b3) = (lane(b0), lane(b1), lane(b2), lane(b3));
        for i in 0..LANES {
            l0[i] += f(0, a0[i], b0[i]);
            l1[i] += f(1, a1[i], b1[i]);
            l2[i] += f(2, a2[i], b2[i]);
            l3[i] += f(3, a3[i], b3[i]);
        }
    }
    let full = len - len % LANES;
    let tail = |k: usize| -> f32 {
        let pairs = xs[k][full..].iter().zip(&ys[k][full..]);
        pairs.map(|(&x, &y)| f(k, x, y)).sum()
    };
    [
        total(l0) + tail(0),
        total(l1) + tail(1),
        total(l2) + tail(2),
        total(l3) + tail(3),
    ]
}

/// The largest of `xs` (−∞ for none), on [`LANES`] running maxima.
#[inline(always)]
pub(super) fn max_of(xs: &[f32]) -> f32 {
    let larger = |a: f32, b: f32| if b > a { b } else { a };
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = larger(*lane, x);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| larger(m, x));
    lanes.into_iter().fold(tail, larger)
}

/// The lanes added pairwise.
#[inline(always)]
fn total(lanes: [f32; LANES]) -> f32 {
    let mut half = LANES / 2;
    let mut lanes = lanes;
    while half > 0 {
        for i in 0..half {
            lanes[i] += lanes[i + half];
        }
        half /= 2;
    }
    lanes[0]
}

/// Work whose loops vectorize, run by [`vectorized`]. Every implementation marks `run`
/// `#[inline(always)]`: that is what compiles it into the AVX-512 and AVX2 copies. (A closure
/// there is often called rather than inlined, and then runs as built for the baseline, four
/// wide at best: seen in the profile of the first version of these kernels, and of RoPE's
/// until attempt 40.)
pub(super) trait Kernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// Runs `work` compiled for AVX-512 where the processor has it (its loops then vectorize sixteen
/// wide: the portable norm kernels on a rank-64 latent ran 15–30 % faster than eight wide),
/// else for AVX2 and FMA (eight wide), else as built for the baseline. The result is the same
/// to the bit on each: the sums' order is fixed by [`LANES`], and no multiply and add is fused
/// unless written as `mul_add`.
#[inline(always)]
pub(super) fn vectorized<K: Kernel>(work: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
        // SAFETY: both features were just detected on this processor.
        return unsafe { with_avx512(work) };
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: both features were just detected on this processor.
        return unsafe { with_avx2(work) };
    }
    work.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn with_avx2<K: Kernel>(work: K) -> K::Output {
    work.run()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn with_avx512<K: Kernel>(work: K) -> K::Output {
    work.run()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A (rows, columns) tensor of `values`: the kernels' tests' inputs.
    pub(super) fn tensor(values: Vec<f32>, shape: [usize; 2]) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// Tasks as long as `CHUNK` (16,384 elements) until there are more of them than threads,
    /// then as many for each thread, each a whole number of units. The figures by hand: a tiny
    /// ViT's latent, 1,088 rows of 32 in groups of 16 rows (512 elements; 32 groups make a
    /// chunk): 68 groups, 3 chunks' worth; on two threads 2 tasks of 34 groups, on one 3 tasks
    /// of 23; on four, 3 tasks (no more than the threads) of 23.
    #[test]
    fn tasks_are_chunks_until_there_are_more_than_threads_then_a_multiple_of_them() {
        let on = |threads: usize, n: usize, unit: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a pool");
            pool.install(|| per_task(n, unit))
        };
        assert_eq!(on(2, 1088 * 32, 512), 34 * 512);
        assert_eq!(on(1, 1088 * 32, 512), 23 * 512);
        assert_eq!(on(4, 1088 * 32, 512), 23 * 512);
        // 9 chunks of single elements on 2 threads: 8 tasks of 18,432 (147,456 / 8).
        assert_eq!(on(2, 9 * 16_384, 1), 18_432);
        // At most a chunk: one task; nothing: one unit.
        assert_eq!(on(2, 16_384, 1), 16_384);
        assert_eq!(on(2, 100, 32), 128);
        assert_eq!(on(2, 0, 32), 32);
    }

    /// A buffer only `t` holds is handed out as it is; one another tensor shares is first copied
    /// into a buffer of `t`'s own, and the other holder keeps its values whatever is written. A
    /// strided view is not for writing over (the kernels decline it).
    #[test]
    fn own_f32s_writes_over_a_buffer_only_where_nothing_else_holds_it() {
        let mut own = tensor(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
        let at = f32s(&own).expect("f32").as_ptr();
        assert_eq!(own_f32s(&mut own).as_ptr(), at);

        let shared = tensor(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]);
        let mut other = shared.clone();
        own_f32s(&mut other).fill(0.0);
        assert_eq!(f32s(&shared).expect("f32"), [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(f32s(&other).expect("f32"), [0.0; 6]);

        assert!(!overwritable(&shared.transpose(0, 1)));
    }
}
