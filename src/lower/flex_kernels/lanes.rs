//! The vector instructions laxc's hand-written kernels are written in (`flex_gemm`'s
//! `depth_blocks`, `row_tiles` and `small_batch`, and a tensor gate's wide rows): AVX-512
//! (sixteen lanes) or AVX2 with FMA (eight), whichever the processor has, behind one trait so
//! that each kernel is written once. The norms' sixteen-row blocks (`norm_blocks`) take the
//! instruction set from [`isa`] too, over sixteen lanes of their own.
//!
//! Why both: without AVX-512 (most laptops, AMD before Zen 4, many cloud machines, this
//! project's CI) the kernels declined and gemm ran those products, at the cost their
//! BENCHMARKS.md attempts measured (a tiny ViT's step 3 % longer, its TT layers' 19 %).
//! Either set gives the same bits: a kernel's sums are in the order it writes them, each product
//! fused into its addition, whatever the vectors' width.
//!
//! A kernel is generic over [`Lanes`] and `#[inline(always)]`; a wrapper per instruction set
//! with `#[target_feature]` instantiates it, so the trait's methods and the intrinsics inside
//! them compile into that wrapper as single instructions.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// The instruction sets the kernels are written for, as this processor has them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    Avx512,
    Avx2,
}

/// The widest of the instruction sets the kernels are written for that this processor has.
pub(crate) fn isa() -> Option<Isa> {
    #[cfg(target_arch = "x86_64")]
    {
        // AVX2 and FMA too: the kernels' scalar parts are compiled with them alongside.
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if is_x86_feature_detected!("avx512f") && avx2 {
            return Some(Isa::Avx512);
        }
        if avx2 {
            return Some(Isa::Avx2);
        }
    }
    None
}

/// One vector register of f32 lanes and the few operations the kernels need. Every method is
/// `unsafe`: call it only where the processor has the instruction set (inside its wrapper).
pub(crate) trait Lanes {
    /// Lanes of a vector.
    const WIDTH: usize;
    type Vector: Copy;
    /// Which lanes a masked load reads and a masked store writes.
    type Mask: Copy;
    unsafe fn zero() -> Self::Vector;
    unsafe fn splat(x: f32) -> Self::Vector;
    /// `a · b + c`, rounded once.
    unsafe fn mul_add(a: Self::Vector, b: Self::Vector, c: Self::Vector) -> Self::Vector;
    unsafe fn mul(a: Self::Vector, b: Self::Vector) -> Self::Vector;
    unsafe fn add(a: Self::Vector, b: Self::Vector) -> Self::Vector;
    /// The first `n` lanes (all of them for `n ≥ WIDTH`, none for 0).
    unsafe fn first(n: usize) -> Self::Mask;
    /// The masked lanes from `at`, the others zero (their memory is not read).
    unsafe fn load(mask: Self::Mask, at: *const f32) -> Self::Vector;
    /// The masked lanes of `v` to `at` (the others' memory is not written).
    unsafe fn store(at: *mut f32, mask: Self::Mask, v: Self::Vector);
}

/// AVX-512F: sixteen lanes, masks in mask registers.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    const WIDTH: usize = 16;
    type Vector = __m512;
    type Mask = __mmask16;
    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m512 {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m512, b: __m512, c: __m512) -> __m512 {
        _mm512_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: __m512, b: __m512) -> __m512 {
        _mm512_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: __m512, b: __m512) -> __m512 {
        _mm512_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn first(n: usize) -> __mmask16 {
        ((1u32 << n.min(16)) - 1) as __mmask16
    }
    #[inline(always)]
    unsafe fn load(mask: __mmask16, at: *const f32) -> __m512 {
        _mm512_maskz_loadu_ps(mask, at)
    }
    #[inline(always)]
    unsafe fn store(at: *mut f32, mask: __mmask16, v: __m512) {
        _mm512_mask_storeu_ps(at, mask, v)
    }
}

/// AVX2 with FMA: eight lanes. A mask is a vector whose lanes' sign bits are set, and whether
/// it is all of them: a whole vector is loaded and stored plainly, since AVX2's masked store
/// is microcoded on AMD's processors (a tiny ViT's TT step 8 % longer with every store masked).
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

/// [`Avx2`]'s mask.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct Avx2Mask {
    whole: bool,
    lanes: __m256i,
}

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    const WIDTH: usize = 8;
    type Vector = __m256;
    type Mask = Avx2Mask;
    #[inline(always)]
    unsafe fn zero() -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> __m256 {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn mul_add(a: __m256, b: __m256, c: __m256) -> __m256 {
        _mm256_fmadd_ps(a, b, c)
    }
    #[inline(always)]
    unsafe fn mul(a: __m256, b: __m256) -> __m256 {
        _mm256_mul_ps(a, b)
    }
    #[inline(always)]
    unsafe fn add(a: __m256, b: __m256) -> __m256 {
        _mm256_add_ps(a, b)
    }
    #[inline(always)]
    unsafe fn first(n: usize) -> Avx2Mask {
        let order = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        Avx2Mask {
            whole: n >= 8,
            lanes: _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), order),
        }
    }
    #[inline(always)]
    unsafe fn load(mask: Avx2Mask, at: *const f32) -> __m256 {
        match mask.whole {
            true => _mm256_loadu_ps(at),
            false => _mm256_maskload_ps(at, mask.lanes),
        }
    }
    #[inline(always)]
    unsafe fn store(at: *mut f32, mask: Avx2Mask, v: __m256) {
        match mask.whole {
            true => _mm256_storeu_ps(at, v),
            false => _mm256_maskstore_ps(at, mask.lanes, v),
        }
    }
}
