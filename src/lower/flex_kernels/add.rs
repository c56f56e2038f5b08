//! The sum of two tensors of one shape, written over the first on every thread of the pool.

use super::{f32s, overwritable, own_f32s, per_task, vectorized, Kernel};
use burn::backend::flex::FlexTensor;
use burn::tensor::TensorMetadata;
use rayon::prelude::*;

/// Rows a task takes a multiple of: whole cache lines of a row of 16 floats or more.
const UNIT: usize = 16;

/// `x + addend` written over `x` (a buffer `x` shares is copied first, never changed), each
/// element as Flex's add computes it. Why: Flex adds on one thread (`cargo bench --bench
/// kernels`: its add no faster on two threads than on one), and a TT layer's intra-layer
/// `t3 + t1` of 1,024 × 256 took 52 µs a call in a step (BENCHMARKS.md, attempt 115). `None`,
/// and `x` untouched, unless both are contiguous f32 of one shape.
pub fn add_over(x: &mut FlexTensor, addend: &FlexTensor) -> Option<()> {
    let adds = f32s(addend)?;
    if !overwritable(x) || x.shape() != addend.shape() {
        return None;
    }
    let task_len = per_task(adds.len(), UNIT);
    own_f32s(x)
        .par_chunks_mut(task_len)
        .zip(adds.par_chunks(task_len))
        .for_each(|(x, addend)| vectorized(Sum { x, addend }));
    Some(())
}

/// A task of [`add_over`].
struct Sum<'a> {
    x: &'a mut [f32],
    addend: &'a [f32],
}

impl Kernel for Sum<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for (x, &a) in self.x.iter_mut().zip(self.addend) {
            *x += a;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::tensor;
    use super::*;

    /// The sum goes over `x`'s own buffer, or over a copy where another tensor shares it (which
    /// keeps its values); other shapes and strided views are declined, `x` untouched.
    #[test]
    fn the_sum_is_written_over_x_and_never_over_a_shared_buffer() {
        let n = 3 * 40_000; // more than one task
        let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let addend = tensor((0..n).map(|i| 1.0 - i as f32).collect(), [3, 40_000]);
        let want: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 + (1.0 - i as f32)).collect();

        let mut own = tensor(values.clone(), [3, 40_000]);
        let at = f32s(&own).expect("f32").as_ptr();
        add_over(&mut own, &addend).expect("applies");
        assert_eq!(f32s(&own).expect("f32").as_ptr(), at);
        assert_eq!(f32s(&own).expect("f32"), want.as_slice());

        let shared = tensor(values.clone(), [3, 40_000]);
        let mut other = shared.clone();
        add_over(&mut other, &addend).expect("applies");
        assert_eq!(f32s(&shared).expect("f32"), values.as_slice());
        assert_eq!(f32s(&other).expect("f32"), want.as_slice());

        let mut wrong = tensor(values.clone(), [40_000, 3]);
        assert!(add_over(&mut wrong, &addend).is_none());
        let mut strided = tensor(values.clone(), [40_000, 3]).transpose(0, 1);
        assert!(add_over(&mut strided, &addend).is_none());
        assert_eq!(f32s(&wrong).expect("f32"), values.as_slice());
    }
}
