//! The element-wise functions and the norm laxc composes itself, because Burn 0.21's own get a
//! gradient wrong. Tensors are `(N, width)` with N = tokens; row vectors, as in
//! docs/conventions.md §LaX equations.

use crate::ir::Activation;
use burn::module::{Module, Param};
use burn::tensor::{activation, backend::Backend, Tensor};

/// The activations, composed from primitives whose gradients are right. Burn 0.21's own
/// `sigmoid`, `silu` and `gelu` have backward passes that disagree with finite differences
/// (errors of 1e-2 to 1e-4 on the f64 ndarray backend; see tests/lowering.rs), so laxc does not
/// use them.
pub fn apply_activation<B: Backend, const D: usize>(
    act: Activation,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    match act {
        Activation::Silu => silu(x),
        Activation::Gelu => gelu(x),
        Activation::GeluTanh => gelu_tanh(x),
        Activation::Relu => activation::relu(x),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => sigmoid(x),
    }
}

/// σ(x) = 1 / (1 + e^(−x)), with x clamped to ±80 first so that e^(−x) stays finite in f32 and
/// the backward pass never meets ∞ · 0 (σ(±80) is 0 or 1 to f32 precision anyway). Written with
/// `exp` rather than as (1 + tanh(x / 2)) / 2: the CPU backends evaluate tanh element by element
/// through libm's tanhf, which took 11 % of a tiny LLaMA's training step (perf, BENCHMARKS.md).
pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    (x.clamp(-80.0, 80.0).neg().exp() + 1.0).recip()
}

pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * sigmoid(x)
}

/// The exact (erf) GELU, PyTorch's default.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    (x.clone().mul_scalar(std::f64::consts::FRAC_1_SQRT_2).erf() + 1.0).mul_scalar(0.5) * x
}

/// GELU's tanh approximation, `x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`: GPT-2's `gelu_new`
/// and PyTorch's `gelu(approximate="tanh")`.
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715))
        .mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    (inner.tanh() + 1.0).mul_scalar(0.5) * x
}

/// RMSNorm, `x / √(mean(x²) + ε) · γ`. laxc's own: burn-nn 0.21's RmsNorm computes the root
/// mean square through an f32 cast whose backward drops the gradient (found by the
/// finite-difference test in tests/lowering.rs).
#[derive(Module, Debug)]
pub struct RmsNorm<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub epsilon: f64,
}

impl<B: Backend> RmsNorm<B> {
    pub fn new(width: usize, epsilon: f64, device: &B::Device) -> Self {
        RmsNorm {
            gamma: Param::from_tensor(Tensor::ones([width], device)),
            epsilon,
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let rms = (x.clone().square().mean_dim(D - 1) + self.epsilon).sqrt();
        (x / rms) * self.gamma.val().unsqueeze()
    }
}
