//! A tensor gate applied to every row in its factored form, `G1ᵀ R G0` (R the row folded
//! `s0 × s1`), and the same with the cores transposed (the gate's input gradient).
//!
//! Why not the product by the dense `kron(G1, G0)`: that is `(s0·s1)·(t0·t1)` multiply-adds a
//! row where the factored form is `s0·s1·t1 + s0·t0·t1` (a rank-64 gate's 8 × 8 cores: 4,096
//! against 1,024; rank 32's 4 × 8: 1,024 against 384), the count the report gives. As two
//! GEMMs with axis swaps between them the factored form lost to the one dense GEMM
//! (BENCHMARKS.md, attempt 16): GEMMs eight wide and two copies. Here each row is done whole
//! in registers, its `s0` rows of `R G0` and then `G1ᵀ` over them, with AVX-512 or with AVX2 and
//! FMA (`lanes`; the same bits either way: attempt 100) for the folds with rows of 8 (ranks 16
//! to 64; at rank 64 half the dense GEMM's time, at rank 32 two thirds: BENCHMARKS.md attempt
//! 50) and of 16 or 32 (ranks 128 to 1,024, where the lowering had two small GEMMs and two axis
//! swaps: attempt 52). For other cores, and without either instruction set, the kernels
//! decline and the dense product serves.

use super::lanes::{self, isa, Isa, Lanes};
use super::{f32s, output, written, CHUNK};
use burn::backend::flex::FlexTensor;
use burn::tensor::{TensorData, TensorMetadata};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Every row of (rows, s0·s1) `h` times `kron(g1, g0)` for `g1 (s0, t0)` and `g0 (s1, t1)`:
/// row `R` (folded row-major `s0 × s1`) becomes `G1ᵀ (R G0)` (`t0 × t1`, row-major; the order
/// of the sums is that of `wide` and `avx512::rows`). `None` unless contiguous f32 of matching
/// shapes, on a processor with AVX-512 or AVX2 and cores its rows take
/// ([`tensor_gate_applies`]).
pub fn tensor_gate(h: &FlexTensor, g1: &FlexTensor, g0: &FlexTensor) -> Option<FlexTensor> {
    let ([s0, t0], [s1, t1]) = (dims(g1)?, dims(g0)?);
    let cores = Cores {
        g1: f32s(g1)?.to_vec(),
        g0: f32s(g0)?.to_vec(),
        s: [s0, s1],
        t: [t0, t1],
    };
    apply(h, &cores)
}

/// The gradient of [`tensor_gate`]'s input given the output gradient `g` (rows, t0·t1):
/// `g · kron(g1, g0)ᵀ = g · kron(g1ᵀ, g0ᵀ)`, the same rows with the cores transposed. `None`
/// where [`tensor_gate`] would be for the transposed cores.
pub fn tensor_gate_input_gradient(
    g: &FlexTensor,
    g1: &FlexTensor,
    g0: &FlexTensor,
) -> Option<FlexTensor> {
    let ([s0, t0], [s1, t1]) = (dims(g1)?, dims(g0)?);
    let cores = Cores {
        g1: transposed(f32s(g1)?, [s0, t0]),
        g0: transposed(f32s(g0)?, [s1, t1]),
        s: [t0, t1],
        t: [s0, s1],
    };
    apply(g, &cores)
}

/// Whether [`tensor_gate`] and [`tensor_gate_input_gradient`] both take cores of these shapes,
/// `g1 (s0, t0)` and `g0 (s1, t1)`, on this processor (for the lowering to choose the factored
/// form where the dense product would cost many times its multiply-adds).
pub fn tensor_gate_applies([s0, t0]: [usize; 2], [s1, t1]: [usize; 2]) -> bool {
    applies([s0, s1], [t0, t1]) && applies([t0, t1], [s0, s1])
}

/// A gate's two cores as the rows read them: `g1 (s0, t0)`, `g0 (s1, t1)`, row-major.
struct Cores {
    g1: Vec<f32>,
    g0: Vec<f32>,
    s: [usize; 2],
    t: [usize; 2],
}

/// Every row of `x` through `cores`, the rows split into tasks over the pool; `None` where
/// [`applies`] does not hold.
fn apply(x: &FlexTensor, cores: &Cores) -> Option<FlexTensor> {
    let ([s0, s1], [t0, t1]) = (cores.s, cores.t);
    let xs = f32s(x)?;
    if dims(x)?[1] != s0 * s1 || !applies(cores.s, cores.t) {
        return None;
    }
    let rows = xs.len() / (s0 * s1);
    let mut out = output(rows * t0 * t1);
    let per_task = CHUNK.div_ceil(s0 * s1);
    out.par_chunks_mut(per_task * t0 * t1)
        .zip(xs.par_chunks(per_task * s0 * s1))
        .for_each(|(y, x)| run(x, y, cores));
    // SAFETY: `run` writes every element of its rows, and the tasks cover the buffer.
    let values = unsafe { written(out) };
    Some(FlexTensor::from_data(TensorData::new(
        values,
        [rows, t0 * t1],
    )))
}

/// Rows of `R G0` eight wide (ranks 16 to 64).
const NARROW: usize = 8;
/// The most rows of a fold (`s0`, `t0`) taken where its rows are [`NARROW`].
const MAX_NARROW_ROWS: usize = 16;
/// The most rows of a fold taken where its rows are 16 or 32 wide (ranks 128 to 1,024).
const MAX_WIDE_ROWS: usize = 32;

/// Whether the rows take a fold `s = [s0, s1]` into `t = [t0, t1]` on this processor: the
/// shapes both instruction sets' rows are written for ([`shapes_taken`]), with AVX-512F or with
/// AVX2 and FMA. The same shapes on either, so that a gate's form (and its sums' order) does
/// not depend on the processor.
fn applies(s: [usize; 2], t: [usize; 2]) -> bool {
    shapes_taken(s, t) && isa().is_some()
}

/// Folds whose rows are eight wide with an even number of rows (`s0`, `t0` from 2 to 16: the
/// AVX-512 rows pair them in one register), or 16 or 32 wide with up to 32 rows.
fn shapes_taken([s0, s1]: [usize; 2], [t0, t1]: [usize; 2]) -> bool {
    let paired = |n: usize| n.is_multiple_of(2) && (2..=MAX_NARROW_ROWS).contains(&n);
    let wide = |n: usize| (1..=MAX_WIDE_ROWS).contains(&n);
    match (s1, t1) {
        (NARROW, NARROW) => paired(s0) && paired(t0),
        (16, 16) | (32, 32) => wide(s0) && wide(t0),
        _ => false,
    }
}

/// The rows of `x` through `cores` into `y`. Call only where [`applies`] holds.
fn run(x: &[f32], y: &mut [MaybeUninit<f32>], cores: &Cores) {
    let isa = isa().expect("`applies` holds only with AVX-512 or AVX2");
    // SAFETY: `isa` is this processor's.
    unsafe { run_on(isa, x, y, cores) }
}

/// [`run`] with `isa`'s rows: with AVX-512, rows eight wide two to a register
/// (`avx512::rows`), wider ones by [`wide`]; with AVX2, every width by [`wide`] (its registers
/// are eight wide).
///
/// # Safety
/// The processor has `isa`.
unsafe fn run_on(isa: Isa, x: &[f32], y: &mut [MaybeUninit<f32>], cores: &Cores) {
    assert!(shapes_taken(cores.s, cores.t));
    // SAFETY: the caller's for `isa`; `t1` is 8, 16 or 32 (`shapes_taken`).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match (isa, cores.t[1]) {
            (Isa::Avx512, NARROW) => avx512::rows(x, y, cores),
            (Isa::Avx512, 16) => wide_avx512::<1>(x, y, cores),
            (Isa::Avx512, _) => wide_avx512::<2>(x, y, cores),
            (Isa::Avx2, NARROW) => wide_avx2::<1>(x, y, cores),
            (Isa::Avx2, 16) => wide_avx2::<2>(x, y, cores),
            (Isa::Avx2, _) => wide_avx2::<4>(x, y, cores),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("no {isa:?} here")
}

/// [`wide`] with AVX-512.
///
/// # Safety
/// As [`wide`]'s; the processor has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn wide_avx512<const V: usize>(x: &[f32], y: &mut [MaybeUninit<f32>], cores: &Cores) {
    unsafe { wide::<lanes::Avx512, V>(x, y, cores) }
}

/// [`wide`] with AVX2 and FMA.
///
/// # Safety
/// As [`wide`]'s; the processor has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn wide_avx2<const V: usize>(x: &[f32], y: &mut [MaybeUninit<f32>], cores: &Cores) {
    unsafe { wide::<lanes::Avx2, V>(x, y, cores) }
}

/// The rows for folds whose rows are `V` whole vectors (`s1 = t1 = V · L::WIDTH`), each
/// element of `R` and of `G1` broadcast from memory against whole rows of `G0` and of `R G0`.
/// The sums over `d` on two chains (even and odd `d`, added at the end: one chain was the
/// rank-32 gate's latency), over `c` in order; each product fused into its addition: the
/// order of `avx512::rows` too, so either instruction set gives the same bits.
///
/// # Safety
/// Inside a wrapper compiled for `L`; `cores` as `shapes_taken` takes them with
/// `t1 = V · L::WIDTH`. (Every pointer read or written is inside a slice whose length is
/// checked first.)
#[inline(always)]
unsafe fn wide<L: Lanes, const V: usize>(x: &[f32], y: &mut [MaybeUninit<f32>], cores: &Cores) {
    let ([s0, s1], [t0, t1]) = (cores.s, cores.t);
    assert!(s1 == L::WIDTH * V && t1 == L::WIDTH * V && s0 <= MAX_WIDE_ROWS);
    assert!(cores.g0.len() == s1 * t1 && cores.g1.len() == s0 * t0);
    let (in_width, out_width) = (s0 * s1, t0 * t1);
    let count = x.len() / in_width;
    assert!(y.len() >= count * out_width);
    let (g0, g1) = (cores.g0.as_ptr(), cores.g1.as_ptr());
    // SAFETY: the offsets lie inside the slices asserted above; the caller's for `L`.
    unsafe {
        let all = L::first(L::WIDTH);
        let mut inner = [[L::zero(); V]; MAX_WIDE_ROWS];
        for n in 0..count {
            let (at, to) = (
                x.as_ptr().add(n * in_width),
                y.as_mut_ptr().add(n * out_width).cast::<f32>(),
            );
            for (c, inner) in inner[..s0].iter_mut().enumerate() {
                let mut sums = [[L::zero(); V]; 2];
                for d in 0..s1 {
                    let r = L::splat(*at.add(c * s1 + d));
                    for (v, sum) in sums[d % 2].iter_mut().enumerate() {
                        *sum = L::mul_add(r, L::load(all, g0.add(d * t1 + L::WIDTH * v)), *sum);
                    }
                }
                for v in 0..V {
                    inner[v] = L::add(sums[0][v], sums[1][v]);
                }
            }
            for i in 0..t0 {
                let mut sum = [L::zero(); V];
                for (c, inner) in inner[..s0].iter().enumerate() {
                    let weight = L::splat(*g1.add(c * t0 + i));
                    for v in 0..V {
                        sum[v] = L::mul_add(weight, inner[v], sum[v]);
                    }
                }
                for (v, &sum) in sum.iter().enumerate() {
                    L::store(to.add(i * t1 + L::WIDTH * v), all, sum);
                }
            }
        }
    }
}

/// `m (rows, cols)` transposed, row-major.
fn transposed(m: &[f32], [rows, cols]: [usize; 2]) -> Vec<f32> {
    (0..cols * rows)
        .map(|k| m[(k % rows) * cols + k / rows])
        .collect()
}

/// The two sides of a 2-D tensor.
fn dims(t: &FlexTensor) -> Option<[usize; 2]> {
    let shape = t.shape();
    (shape.num_dims() == 2).then(|| shape.dims::<2>())
}

/// The rows with AVX-512 for cores whose `R G0` rows are eight wide (`s1 = t1 = 8`: the gates
/// of ranks 16 to 64, 2 × 8 to 8 × 8) and of an even number of rows (`s0`, `t0` from 2 to
/// 16): two rows of eight in each sixteen-lane register.
///
/// Per row of the input: the `s0 × 8` fold is loaded two rows a register; each pair of rows of
/// `R G0` is `Σ_d [R[c, d] ×8, R[c+1, d] ×8] ⊙ [G0[d, :], G0[d, :]]` (a lane permute and a
/// fused multiply-add per `d`); then each pair of output rows `i, i+1` is
/// `Σ_c [G1[c, i] ×8, G1[c, i+1] ×8] ⊙ [T[c, :], T[c, :]]`, the coefficients laid out once per
/// task. Each product fused into its addition; the sums over `d` on two chains (even and odd
/// `d`, added at the end: one chain of eight was the rank-32 gate's latency), over `c` in order.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Cores;
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{MAX_NARROW_ROWS as MAX_ROWS, NARROW as WIDTH};

    /// # Safety
    /// The processor has AVX-512F, and `cores` are as `shapes_taken` takes them (`t1 = 8`).
    /// (Every pointer read or written is inside a slice whose length is checked first.)
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(x: &[f32], y: &mut [MaybeUninit<f32>], cores: &Cores) {
        let ([s0, _], [t0, _]) = (cores.s, cores.t);
        let (in_width, out_width) = (s0 * WIDTH, t0 * WIDTH);
        let count = x.len() / in_width;
        assert!(y.len() >= count * out_width);
        // [G0[d, :], G0[d, :]] and the permutes that spread R[c, d] and R[c+1, d].
        let g0: [__m512; WIDTH] = std::array::from_fn(|d| {
            let row = _mm256_loadu_ps(cores.g0[d * WIDTH..].as_ptr());
            _mm512_insertf32x8::<1>(_mm512_castps256_ps512(row), row)
        });
        let spread: [__m512i; WIDTH] = std::array::from_fn(|d| {
            let (low, high) = (d as i32, (WIDTH + d) as i32);
            _mm512_set_epi32(
                high, high, high, high, high, high, high, high, low, low, low, low, low, low, low,
                low,
            )
        });
        // [G1[c, i] ×8, G1[c, i+1] ×8] for each c and each pair of output rows i.
        let pairs = t0 / 2;
        let coefficients: Vec<__m512> = (0..s0 * pairs)
            .map(|k| {
                let (c, q) = (k / pairs, k % pairs);
                let low = _mm256_set1_ps(cores.g1[c * t0 + 2 * q]);
                let high = _mm256_set1_ps(cores.g1[c * t0 + 2 * q + 1]);
                _mm512_insertf32x8::<1>(_mm512_castps256_ps512(low), high)
            })
            .collect();
        // One row at a time (two side by side, their chains interleaved, ran slower: their
        // registers spilled), `inner` set once (zeroing it for each row cost a fifth).
        let mut inner = [_mm512_setzero_ps(); MAX_ROWS];
        for n in 0..count {
            let (at, to) = (
                x.as_ptr().add(n * in_width),
                y.as_mut_ptr().add(n * out_width),
            );
            // Each pair of rows of R G0, then each of its rows in both halves.
            for p in 0..s0 / 2 {
                let rows = _mm512_loadu_ps(at.add(2 * p * WIDTH));
                // Even and odd `d` on chains of their own, added at the end.
                let mut sums = [_mm512_setzero_ps(); 2];
                for d in 0..WIDTH {
                    let r = _mm512_permutexvar_ps(spread[d], rows);
                    sums[d % 2] = _mm512_fmadd_ps(r, g0[d], sums[d % 2]);
                }
                let sum = _mm512_add_ps(sums[0], sums[1]);
                inner[2 * p] = _mm512_shuffle_f32x4::<0x44>(sum, sum);
                inner[2 * p + 1] = _mm512_shuffle_f32x4::<0xEE>(sum, sum);
            }
            for q in 0..pairs {
                let mut sum = _mm512_setzero_ps();
                for c in 0..s0 {
                    sum = _mm512_fmadd_ps(coefficients[c * pairs + q], inner[c], sum);
                }
                _mm512_storeu_ps(to.add(2 * q * WIDTH).cast::<f32>(), sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::tensor;
    use super::*;

    /// Deterministic values in [−1, 1).
    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n as u32)
            .map(|i| {
                (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 8_388_608.0 - 1.0
            })
            .collect()
    }

    /// `x · kron(g1, g0)` in f64 from the definition `kron[(i, j), (a, b)] = g1[i, a] g0[j, b]`.
    fn dense(
        x: &[f32],
        g1: &[f32],
        g0: &[f32],
        [s0, t0]: [usize; 2],
        [s1, t1]: [usize; 2],
    ) -> Vec<f64> {
        let rows = x.len() / (s0 * s1);
        let mut y = vec![0.0f64; rows * t0 * t1];
        for n in 0..rows {
            for (i, j, a, b) in itertools(s0, s1, t0, t1) {
                let k = g1[i * t0 + a] as f64 * g0[j * t1 + b] as f64;
                y[n * t0 * t1 + a * t1 + b] += x[n * s0 * s1 + i * s1 + j] as f64 * k;
            }
        }
        y
    }

    fn itertools(
        s0: usize,
        s1: usize,
        t0: usize,
        t1: usize,
    ) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        (0..s0).flat_map(move |i| {
            (0..s1).flat_map(move |j| (0..t0).flat_map(move |a| (0..t1).map(move |b| (i, j, a, b))))
        })
    }

    fn close(got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "element {k}: {g} against {w}"
            );
        }
    }

    /// The factored rows equal the product by the dense Kronecker product (in f64) for the
    /// cores taken (`s1 = t1 = 8` with even `s0` and `t0`; `s1 = t1` of 16 or 32 with up to 32
    /// rows; square or not), forward and for the input gradient (the product by its
    /// transpose); other cores are declined, for the dense product to serve.
    #[test]
    fn rows_equal_the_product_by_the_dense_kronecker_product() {
        // The rows are written for AVX-512 and AVX2: elsewhere every gate goes to the dense
        // product.
        if !tensor_gate_applies([4, 4], [8, 8]) {
            return;
        }
        for ([s0, t0], [s1, t1]) in [
            ([4, 4], [8, 8]),
            ([8, 8], [8, 8]),
            ([2, 6], [8, 8]),
            ([16, 2], [8, 8]),
            ([8, 8], [16, 16]),
            ([16, 16], [16, 16]),
            ([3, 5], [16, 16]),
            ([16, 16], [32, 32]),
        ] {
            let rows = 37;
            let (g1, g0) = (values(s0 * t0, 1), values(s1 * t1, 2));
            let x = values(rows * s0 * s1, 3);
            let (c1, c0) = (tensor(g1.clone(), [s0, t0]), tensor(g0.clone(), [s1, t1]));
            let y = tensor_gate(&tensor(x.clone(), [rows, s0 * s1]), &c1, &c0).expect("taken");
            close(f32s(&y).unwrap(), &dense(&x, &g1, &g0, [s0, t0], [s1, t1]));

            let g = values(rows * t0 * t1, 4);
            let (g1t, g0t) = (transposed(&g1, [s0, t0]), transposed(&g0, [s1, t1]));
            let dx = tensor_gate_input_gradient(&tensor(g.clone(), [rows, t0 * t1]), &c1, &c0);
            let dx = dx.expect("taken");
            close(
                f32s(&dx).unwrap(),
                &dense(&g, &g1t, &g0t, [t0, s0], [t1, s1]),
            );
        }
        for ([s0, t0], [s1, t1]) in [
            ([3, 3], [8, 8]),
            ([4, 4], [4, 4]),
            ([33, 33], [16, 16]),
            ([4, 4], [8, 4]),
            ([4, 4], [16, 32]),
        ] {
            let x = tensor(values(5 * s0 * s1, 5), [5, s0 * s1]);
            let (c1, c0) = (
                tensor(values(s0 * t0, 6), [s0, t0]),
                tensor(values(s1 * t1, 7), [s1, t1]),
            );
            assert!(tensor_gate(&x, &c1, &c0).is_none(), "{s0} x {s1} declined");
        }
    }

    /// Where the processor has AVX-512, its rows (the paired eight-wide ones and [`wide`]'s
    /// sixteen lanes) and the AVX2 rows give the same bits for every shape taken (elsewhere the
    /// AVX2 rows are the ones the test above checks).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_rows_equal_the_avx512_rows_bit_for_bit() {
        if isa() != Some(Isa::Avx512) {
            return;
        }
        for (s, t) in [
            ([4, 8], [4, 8]),
            ([8, 8], [2, 8]),
            ([16, 16], [3, 16]),
            ([32, 32], [16, 32]),
        ] {
            let rows = 19;
            let cores = Cores {
                g1: values(s[0] * t[0], 1),
                g0: values(s[1] * t[1], 2),
                s,
                t,
            };
            let x = values(rows * s[0] * s[1], 3);
            let outputs = [Isa::Avx512, Isa::Avx2].map(|isa| {
                let mut y = output(rows * t[0] * t[1]);
                // SAFETY: the processor has both (checked above).
                unsafe { run_on(isa, &x, &mut y, &cores) };
                // SAFETY: `run_on` writes every element of its rows.
                unsafe { written(y) }
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>()
            });
            assert_eq!(outputs[0], outputs[1], "{s:?} into {t:?}");
        }
    }
}
