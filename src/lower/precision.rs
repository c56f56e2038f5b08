//! Mixed precision (the `dtype` train key): activations and matrix products in the pass's
//! compute dtype (f32 or bf16), everything else in f32 (the backend's own float type). Parameters stay f32 tensors, so
//! gradients, the optimizer's state and checkpoints are f32 whatever the pass computes in: each
//! use of a weight casts it to its input's dtype, and autodiff's cast carries the gradient back
//! to f32. Norms, softmax and the loss read f32 casts of their inputs. At f32 every cast is the
//! identity (Burn returns the tensor unchanged), so an f32 pass is the pass it always was.

use burn::tensor::{backend::Backend, Element, FloatDType, Tensor};

/// `t` in the dtype of `like` (a weight cast to the activation it meets).
pub fn cast_like<B: Backend, const D: usize, const E: usize>(
    t: Tensor<B, D>,
    like: &Tensor<B, E>,
) -> Tensor<B, D> {
    t.cast(FloatDType::from(like.dtype()))
}

/// The backend's own float dtype, its parameters': f32 on every backend laxc trains on (f64 in
/// the f64 formula tests).
pub fn native<B: Backend>() -> FloatDType {
    FloatDType::from(<B::FloatElem as Element>::dtype())
}

/// `t` in the backend's own dtype, for a norm, a softmax or the loss.
pub fn widen<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    t.cast(native::<B>())
}

/// The compute dtype of a `dtype` option on backend `B`: its own for `f32`.
pub fn compute_dtype<B: Backend>(p: crate::options::Precision) -> FloatDType {
    match p {
        crate::options::Precision::F32 => native::<B>(),
        crate::options::Precision::Bf16 => FloatDType::BF16,
    }
}
