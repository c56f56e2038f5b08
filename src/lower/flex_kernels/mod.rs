//! Kernels on Flex's own buffers, for the ops where Burn 0.21's Flex is slow on a CPU: it calls
//! libm one element at a time (GELU's `erf`, SiLU's and softmax's `exp`), composes a norm's
//! backward pass of a dozen passes over memory, and copies a permuted view through a general
//! strided iterator. One module per kind of op:
//!
//! - `activation`: GELU and SiLU, forward and backward;
//! - `softmax`: softmax with an additive mask, and its backward;
//! - `norm`: RMSNorm forward, LayerNorm's and RMSNorm's backward;
//! - `rope`: rotate-half RoPE and its transpose;
//! - `layout`: the swap of a 3-D or 4-D tensor's middle axes;
//! - `math`: `exp` and `erf` without branches or library calls.
//!
//! Each kernel reads contiguous f32 tensors (otherwise it declines, `None`, and the caller
//! composes the formula from Burn's ops), splits the work into tasks over rayon's pool (Flex's
//! own), and where it is arithmetic, runs a loop the compiler vectorizes, compiled a second
//! time for AVX2 and FMA and chosen at run time. Each is tested against its composed formula
//! (tests/lowering.rs) and, for `exp` and `erf`, against f64 (`math`).

mod activation;
mod layout;
mod math;
mod norm;
mod rope;
mod softmax;

pub use activation::{gelu, gelu_backward, silu, silu_backward};
pub use layout::swap_middle_axes;
pub use norm::{norm_backward, rms_norm};
pub use rope::rope;
pub use softmax::{softmax, softmax_backward};

use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, TensorData, TensorMetadata};

/// The elements of a contiguous f32 tensor.
pub(super) fn f32s(t: &FlexTensor) -> Option<&[f32]> {
    match t.dtype() {
        DType::F32 => t.as_slice::<f32>(),
        _ => None,
    }
}

/// A new tensor of `values`, shaped as `t`.
pub(super) fn like(t: &FlexTensor, values: Vec<f32>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, t.shape()))
}

/// Elements per task: large enough that a task outweighs its hand-off.
pub(super) const CHUNK: usize = 1 << 14;
