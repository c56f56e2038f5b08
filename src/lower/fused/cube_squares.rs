//! A gradient's sum of squares (its share of the clip's global norm) on the GPU back ends as
//! one cubecl kernel, where Burn's `square().sum()` was two registered ops and two or three
//! kernels a parameter tensor (BENCHMARKS.md, attempt 82). Each cube sums the squares of its
//! strided share of the elements in shared memory and writes one partial sum; the caller reads
//! the partial sums of every tensor in one transfer (`cube_read`) and adds them in f64.

use super::cube_op::{cube_sum, empty_f32, register, Fused, FusedTensor, Kernels};
use super::same_type;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};
use cubecl::prelude::*;
use std::any::TypeId;

/// Units a cube (a power of two, for `cube_sum`).
const UNITS: u32 = 256;
/// Elements a unit takes at least before another cube is added, and the most cubes: a tensor
/// of up to 2,048 elements is one cube and one partial sum, the largest 512.
const PER_UNIT: usize = 8;
const MOST_CUBES: usize = 512;

/// The partial sums of `t`'s squares, a vector of f32 on the device whose sum is `Σ t²`, from
/// one kernel where `I` is a GPU back end's inner backend and `t` is f32; else `t` back.
pub fn partial_sums_of_squares<I: Backend>(
    t: FloatTensor<I>,
) -> Result<FloatTensor<I>, FloatTensor<I>> {
    macro_rules! try_cube {
        ($_inner:ty, $runtime:ty, $bool:ty) => {
            if TypeId::of::<I>() == TypeId::of::<Fused<$runtime, $bool>>() {
                let own = same_type(t).unwrap_or_else(|_| unreachable!("I was checked"));
                let out = register_sum::<$runtime, $bool>(own);
                return Ok(same_type(out).unwrap_or_else(|_| unreachable!("I was checked")));
            }
        };
    }
    if t.dtype() == DType::F32 && t.shape().num_elements() > 0 {
        for_each_gpu_inner_backend!(try_cube);
    }
    Err(t)
}

/// Cubes for `n` elements.
fn cubes_for(n: usize) -> usize {
    n.div_ceil(UNITS as usize * PER_UNIT).clamp(1, MOST_CUBES)
}

fn register_sum<R: CubeRuntime, BT: BoolElement>(t: FusedTensor<R>) -> FusedTensor<R> {
    let shapes = vec![Shape::new([cubes_for(t.shape.num_elements())])];
    let [out] = register::<R, BT, _>("laxc_sum_of_squares", vec![t], shapes, 1, SquaresKernel)
        .try_into()
        .unwrap_or_else(|_| unreachable!("the kernel has one output"));
    out
}

#[derive(Debug)]
struct SquaresKernel;

impl<R: CubeRuntime> Kernels<R> for SquaresKernel {
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        let x = inputs.into_iter().next().expect("one input");
        let cubes = cubes_for(x.shape().num_elements());
        let client = x.client.clone();
        let partials = empty_f32(&x, Shape::new([cubes]));
        sum_of_squares::launch::<f32, R>(
            &client,
            CubeCount::Static(cubes as u32, 1, 1),
            CubeDim::new_1d(UNITS),
            x.into_tensor_arg(),
            partials.clone().into_tensor_arg(),
            UNITS,
        );
        vec![partials]
    }
}

/// `partials[cube] = Σ x[i]²` over the elements `i` of this cube's units, each unit striding
/// over the whole grid.
#[cube(launch)]
fn sum_of_squares<F: Float>(x: &Tensor<F>, partials: &mut Tensor<F>, #[comptime] units: u32) {
    let cube = CUBE_POS_X as usize;
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut i = cube * CUBE_DIM_X as usize + UNIT_POS_X as usize;
    let mut squares = F::new(0.0);
    while i < x.len() {
        let v = x[i];
        squares += v * v;
        i += stride;
    }
    let mut shared = SharedMemory::<F>::new(units as usize);
    let total = cube_sum::<F>(squares, &mut shared);
    if UNIT_POS_X == 0 {
        partials[cube] = total;
    }
}
