//! The element-wise functions and the norms, laxc's own because Burn 0.21's get a gradient
//! wrong or cannot be one autodiff node. Tensors are `(N, width)` with N = tokens; row vectors, as in
//! docs/conventions.md §LaX equations.

use super::fused;
use crate::ir::Activation;
use burn::module::{Module, Param};
use burn::tensor::{activation, backend::Backend, Tensor};

/// The activations, composed from primitives whose gradients are right. Burn 0.21's own
/// `sigmoid`, `silu` and `gelu` have backward passes that disagree with finite differences
/// (errors of 1e-2 to 1e-4 on the f64 ndarray backend; see tests/lowering.rs), so laxc does not
/// use them; σ is a node of laxc's own (`fused::sigmoid`).
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

/// σ(x) = 1 / (1 + e^(−x)): one autodiff node in training (`fused::sigmoid`).
pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    fused::sigmoid(x)
}

/// SiLU, `x σ(x)`: one autodiff node in training (`fused::silu`).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    fused::silu(x)
}

/// The exact (erf) GELU, PyTorch's default: one autodiff node in training (`fused::gelu`).
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    fused::gelu(x)
}

/// GELU's tanh approximation, `x/2 · (1 + tanh(√(2/π) (x + 0.044715 x³)))`: GPT-2's `gelu_new`
/// and PyTorch's `gelu(approximate="tanh")`. One autodiff node in training
/// (`fused::gelu_tanh`).
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    fused::gelu_tanh(x)
}

/// RMSNorm, `x / √(mean(x²) + ε) · γ`, over the last dimension. laxc's own: burn-nn 0.21's
/// RmsNorm computes the root mean square through an f32 cast whose backward drops the gradient
/// (found by the finite-difference test in tests/lowering.rs). One autodiff node in training
/// (`fused::rms_norm`).
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

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        fused::rms_norm(x, self.gamma.val(), self.epsilon)
    }

    /// RMSNorm of `x + addend`, the two added inside the norm's own pass.
    pub fn forward_sum(&self, x: Tensor<B, 2>, addend: Tensor<B, 2>) -> Tensor<B, 2> {
        fused::add_rms_norm(x, addend, self.gamma.val(), self.epsilon)
    }

    /// RMSNorm of `x + h · α` for a one-element `α`, as one node.
    pub fn forward_scaled_sum(
        &self,
        x: Tensor<B, 2>,
        scaled: (Tensor<B, 2>, Tensor<B, 1>),
    ) -> Tensor<B, 2> {
        fused::add_scaled_rms_norm(x, scaled, self.gamma.val(), self.epsilon)
    }
}

/// LayerNorm, `(x − mean) / √(var + ε) · γ + β` with the biased variance, over the last
/// dimension: burn-nn's parameters (`gamma`, `beta`, so checkpoints read the same), with the
/// epsilon readable and one autodiff node in training (`fused::layer_norm`).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
    pub beta: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub epsilon: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(width: usize, epsilon: f64, device: &B::Device) -> Self {
        LayerNorm {
            gamma: Param::from_tensor(Tensor::ones([width], device)),
            beta: Param::from_tensor(Tensor::zeros([width], device)),
            epsilon,
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        fused::layer_norm(x, self.gamma.val(), self.beta.val(), self.epsilon)
    }

    /// LayerNorm of `x + addend`, the two added inside the norm's own pass.
    pub fn forward_sum(&self, x: Tensor<B, 2>, addend: Tensor<B, 2>) -> Tensor<B, 2> {
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        fused::add_layer_norm(x, addend, gamma, beta, self.epsilon)
    }

    /// LayerNorm of `x + h · α` for a one-element `α`, as one node.
    pub fn forward_scaled_sum(
        &self,
        x: Tensor<B, 2>,
        scaled: (Tensor<B, 2>, Tensor<B, 1>),
    ) -> Tensor<B, 2> {
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        fused::add_scaled_layer_norm(x, scaled, gamma, beta, self.epsilon)
    }
}
