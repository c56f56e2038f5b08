//! A permuted view made contiguous on the GPU back ends, as an op of its own in Burn's fusion
//! stream: attention's heads split and merged (`swap_middle_axes`). Left a view there, every
//! product that read it copied it first (cubecl's matmul takes no batch axis whose stride is
//! below a row's), and every reshape after it copied it again: twelve copies a LLaMA layer
//! each step on wgpu, where one copy of each swap, each way, reads the same values: eight
//! (BENCHMARKS.md, attempt 95).

use super::cube_op::{on_gpu, register, FusedTensor, GpuOp, Kernels};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime};

/// `x`'s values laid out contiguously in its shape's order, where `I` is a GPU back end's inner
/// backend and `x` is f32; else `x` back. The registered op launches cubecl's copy kernel
/// (none where `x` is contiguous already).
pub fn contiguous<I: Backend>(x: FloatTensor<I>) -> Result<FloatTensor<I>, FloatTensor<I>> {
    if !super::gpu_inner::<I>() || x.dtype() != DType::F32 {
        return Err(x);
    }
    on_gpu::<I, _>(Contiguous, vec![x]).map_err(|mut inputs| inputs.swap_remove(0))
}

/// The op [`contiguous`] runs on a GPU back end.
#[derive(Debug, Clone, Copy)]
struct Contiguous;

impl GpuOp for Contiguous {
    type Output<T: 'static> = T;

    fn run<R: CubeRuntime, BT: BoolElement>(self, inputs: Vec<FusedTensor<R>>) -> FusedTensor<R> {
        let shape = inputs[0].shape.clone();
        let mut out = register::<R, BT, _>("laxc_contiguous", inputs, vec![shape], 1, self);
        out.pop().expect("the op has one output")
    }
}

impl<R: CubeRuntime> Kernels<R> for Contiguous {
    /// The input as the stream made it for the op: contiguous (`cube_op`'s `Custom`).
    fn launch(&self, inputs: Vec<CubeTensor<R>>) -> Vec<CubeTensor<R>> {
        inputs
    }
}
