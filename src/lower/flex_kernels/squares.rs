//! The sum of a tensor's squares (a gradient's share of the global norm the clip takes), in one
//! read of the tensor, where `square().sum()` writes the squares out and reads them back.
//!
//! Its sum is Flex's own to the bit: Flex sums a contiguous f32 tensor on macerator's eight
//! accumulators (`burn_flex::simd::kernels::sum_f32`), and this is that loop over the
//! squares, each rounded to f32 first as the `square` op rounds it, with the same vector
//! width, the same order of the accumulators' adds and macerator's own horizontal add. So the
//! norm a run logs, and the clip's factor, do not move.

use burn::backend::flex::FlexTensor;
use burn::tensor::DType;
use macerator::{vload_unaligned, Scalar, Simd};

/// From this many elements Flex sums in parallel chunks, an order rayon's splits decide: the
/// caller composes the formula there, as before.
const FLEX_PARALLEL_SUM: usize = 4 * 1024 * 1024;

/// `Σ x²` over an f32 tensor whose elements are one contiguous run; `None` for any other, and
/// from [`FLEX_PARALLEL_SUM`] elements. Not for a permuted view of a whole buffer: Flex's
/// `square` writes its squares in the view's order, which its sum then adds, where a sum over
/// the buffer would add them in the buffer's (another rounding, one time in a few).
pub fn sum_of_squares(t: &FlexTensor) -> Option<f32> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let (start, end) = t.layout().contiguous_offsets()?;
    let xs = &t.storage::<f32>()[start..end];
    (xs.len() < FLEX_PARALLEL_SUM).then(|| squares_summed(xs))
}

/// Flex's eight-accumulator sum (`macerator_sum`), of the squares.
#[macerator::with_simd]
fn squares_summed<S: Simd>(mut xs: &[f32]) -> f32 {
    let lanes = f32::lanes::<S>();
    let stride = lanes * 8;
    let square = |at: *const f32| {
        // SAFETY: the callers below read only vectors that lie inside `xs`.
        let v = unsafe { vload_unaligned::<S, f32>(at) };
        v * v
    };
    let zero = 0.0f32.splat::<S>();
    let mut s = [zero; 8];
    while xs.len() >= stride {
        let p = xs.as_ptr();
        for (k, acc) in s.iter_mut().enumerate() {
            // SAFETY: `k · lanes + lanes ≤ stride ≤ xs.len()`.
            *acc += square(unsafe { p.add(k * lanes) });
        }
        xs = &xs[stride..];
    }
    let mut sum = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
    while xs.len() >= lanes {
        sum += square(xs.as_ptr());
        xs = &xs[lanes..];
    }
    sum.reduce_add() + xs.iter().map(|x| x * x).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tensor};

    /// Equal to Flex's `square().sum()` bit for bit, at every length around the vector and
    /// stride boundaries, and declined for a transposed view and a strided slice. (A sum over
    /// a transposed view's buffer differed from Flex's in the last bit in some runs of this
    /// test's random values: CI, session 31.)
    #[test]
    fn equals_flex_square_then_sum_bit_for_bit() {
        let device = Default::default();
        for n in (0..300).chain([1000, 4095, 4096, 4097, 65_536 + 37]) {
            let t = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 3.0), &device);
            let flex: f32 = t.clone().square().sum().into_scalar();
            let ours = sum_of_squares(&t.into_primitive().tensor()).expect("contiguous f32");
            assert_eq!(ours.to_bits(), flex.to_bits(), "{n} elements");
        }
        let m = Tensor::<Flex, 2>::random([37, 53], Distribution::Default, &device).transpose();
        assert!(sum_of_squares(&m.clone().into_primitive().tensor()).is_none());
        let slice = m.narrow(1, 1, 20);
        assert!(sum_of_squares(&slice.into_primitive().tensor()).is_none());
    }
}
