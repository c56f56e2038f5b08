//! The Burn modules for linear sites, LaX gates and norms. Tensors here are 2-D, `(N, width)`
//! with N = tokens; row vectors as in DESIGN.md §3, so a layer computes `x W`, not `W x`.

use super::init::Init;
use crate::ir::Gate;
use crate::spec::{Activation, NormKind};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::{activation, backend::Backend, Tensor};

/// The LaX norm epsilon (DESIGN.md §3).
pub const NORM_EPS: f64 = 1e-6;

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

/// A norm as the spec chose it: LayerNorm, RMSNorm, or none (both fields empty).
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    pub layer: Option<LayerNorm<B>>,
    pub rms: Option<RmsNorm<B>>,
}

impl<B: Backend> Norm<B> {
    pub fn new(kind: NormKind, width: usize, device: &B::Device) -> Self {
        Norm {
            layer: (kind == NormKind::Layernorm).then(|| {
                LayerNormConfig::new(width)
                    .with_epsilon(NORM_EPS)
                    .init(device)
            }),
            rms: (kind == NormKind::Rmsnorm).then(|| RmsNorm::new(width, NORM_EPS, device)),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match (&self.layer, &self.rms) {
            (Some(n), _) => n.forward(x),
            (_, Some(n)) => n.forward(x),
            _ => x,
        }
    }
}

/// A LaX gate: maps the source latent (N, src) to the target's width (N, dst). Which
/// parameters exist says which gate it is: none (identity), `alpha` (linear), `g0` and `g1`
/// (tensor), `weight` and `bias` (dense).
#[derive(Module, Debug)]
pub struct GateModule<B: Backend> {
    /// `α h`, one scalar.
    pub alpha: Option<Param<Tensor<B, 1>>>,
    /// `G1ᵀ R G0` with `R` the row-major fold of h: equal to `h · kron(G1, G0)`.
    pub g0: Option<Param<Tensor<B, 2>>>,
    pub g1: Option<Param<Tensor<B, 2>>>,
    pub weight: Option<Param<Tensor<B, 2>>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Tensor gate folds: source s0 × s1, target t0 × t1.
    #[module(skip)]
    pub folds: [usize; 4],
}

impl<B: Backend> GateModule<B> {
    pub fn identity() -> Self {
        GateModule {
            alpha: None,
            g0: None,
            g1: None,
            weight: None,
            bias: None,
            folds: [0; 4],
        }
    }

    pub fn new(gate: &Gate, src: usize, dst: usize, init: &mut Init, device: &B::Device) -> Self {
        let mut g = Self::identity();
        match gate {
            Gate::Identity => {}
            // Starts at 1: the pathway begins as an identity pathway.
            Gate::Linear => g.alpha = Some(init.constant([1], 1.0, device)),
            Gate::Tensor { input, output } => {
                // PyTorch's kaiming_uniform_(a = √5), fan-in the second dimension: bound √(1/fan_in).
                let (g0_shape, g1_shape) = ([input[1], output[1]], [input[0], output[0]]);
                g.g0 = Some(init.uniform(g0_shape, (1.0 / g0_shape[1] as f64).sqrt(), device));
                g.g1 = Some(init.uniform(g1_shape, (1.0 / g1_shape[1] as f64).sqrt(), device));
                g.folds = [input[0], input[1], output[0], output[1]];
            }
            Gate::Dense => {
                g.weight = Some(init.trunc_normal([src, dst], 0.02, device));
                g.bias = Some(init.constant([dst], 0.0, device));
            }
        }
        g
    }

    pub fn forward(&self, h: Tensor<B, 2>) -> Tensor<B, 2> {
        if let Some(alpha) = &self.alpha {
            return h * alpha.val().unsqueeze::<2>();
        }
        if let (Some(g0), Some(g1)) = (&self.g0, &self.g1) {
            let [s0, s1, t0, t1] = self.folds;
            let n = h.dims()[0];
            // R G0: (N·s0, s1)(s1, t1) → (N, s0, t1)
            let r = h.reshape([n * s0, s1]).matmul(g0.val());
            // G1ᵀ (R G0): contract s0 with G1 (s0, t0) → (N, t1, t0) → (N, t0, t1)
            let r = r
                .reshape([n, s0, t1])
                .swap_dims(1, 2)
                .reshape([n * t1, s0])
                .matmul(g1.val());
            return r.reshape([n, t1, t0]).swap_dims(1, 2).reshape([n, t0 * t1]);
        }
        if let (Some(w), Some(b)) = (&self.weight, &self.bias) {
            return h.matmul(w.val()) + b.val().unsqueeze::<2>();
        }
        h
    }
}

/// An inter-layer pathway's gate and norm; the add happens in the target layer.
#[derive(Module, Debug)]
pub struct Pathway<B: Backend> {
    pub gate: GateModule<B>,
    pub norm: Norm<B>,
}

impl<B: Backend> Pathway<B> {
    /// `Norm(z + g(h))`.
    pub fn arrive(&self, z: Tensor<B, 2>, h_source: Tensor<B, 2>) -> Tensor<B, 2> {
        self.norm.forward(z + self.gate.forward(h_source))
    }
}

/// What arrives at a layer: the source latent and the pathway it crosses.
pub type Arriving<'a, B> = Option<(Tensor<B, 2>, &'a Pathway<B>)>;

/// `y = x W (+ b)`.
#[derive(Module, Debug)]
pub struct DenseLayer<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

/// SVD (`act` None) or CoLA: `y = σ(Norm(x A + g(h))) B + b`.
#[derive(Module, Debug)]
pub struct LowRankLayer<B: Backend> {
    pub a: Param<Tensor<B, 2>>,
    pub b: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    pub act: Option<Activation>,
}

/// A 4-core tensor train; C0 is stored (m0, r1) and C3 (r3, m3), their unit ranks dropped.
#[derive(Module, Debug)]
pub struct TtLayer<B: Backend> {
    pub c0: Param<Tensor<B, 2>>,
    pub c1: Param<Tensor<B, 3>>,
    pub c2: Param<Tensor<B, 3>>,
    pub c3: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    pub modes: [usize; 4],
    #[module(skip)]
    pub ranks: [usize; 3],
    /// Intra-layer LaX: t1 is added to t3.
    #[module(skip)]
    pub intra: bool,
}

/// `y = x W₀ + b + (α / r)·(x A) B`, W₀ frozen.
#[derive(Module, Debug)]
pub struct LoraLayer<B: Backend> {
    pub base: Param<Tensor<B, 2>>,
    pub base_bias: Option<Param<Tensor<B, 1>>>,
    pub a: Param<Tensor<B, 2>>,
    pub b: Param<Tensor<B, 2>>,
    #[module(skip)]
    pub scale: f64,
    pub dropout: Dropout,
}

/// One linear site, in whichever form the spec chose.
#[derive(Module, Debug)]
pub enum SiteLayer<B: Backend> {
    Dense(DenseLayer<B>),
    LowRank(LowRankLayer<B>),
    Tt(TtLayer<B>),
    Lora(LoraLayer<B>),
}

impl<B: Backend> SiteLayer<B> {
    /// Returns the output and the latent this layer emits (None for dense layers).
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        arriving: Arriving<'_, B>,
    ) -> (Tensor<B, 2>, Option<Tensor<B, 2>>) {
        let receive = |z: Tensor<B, 2>| match arriving {
            Some((h, p)) => p.arrive(z, h),
            None => z,
        };
        match self {
            SiteLayer::Dense(l) => (add_bias(x.matmul(l.weight.val()), &l.bias), None),
            SiteLayer::LowRank(l) => {
                let mut z = receive(x.matmul(l.a.val()));
                if let Some(act) = l.act {
                    z = apply_activation(act, z);
                }
                let y = add_bias(z.clone().matmul(l.b.val()), &l.bias);
                (y, Some(z))
            }
            SiteLayer::Tt(l) => {
                let [m0, m1, m2, m3] = l.modes;
                let [r1, rr, r3] = l.ranks;
                let n = x.dims()[0];
                // t1[n, i1, a] = Σ_i0 x[n, i0, i1] C0[i0, a]
                let t1 = x
                    .reshape([n, m0, m1])
                    .swap_dims(1, 2)
                    .reshape([n * m1, m0])
                    .matmul(l.c0.val())
                    .reshape([n, m1, r1]);
                // t2[n, b] = Σ_{a, i1} t1[n, i1, a] C1[a, i1, b]
                let t2 = t1
                    .clone()
                    .swap_dims(1, 2)
                    .reshape([n, r1 * m1])
                    .matmul(l.c1.val().reshape([r1 * m1, rr]));
                let t2 = receive(t2);
                // t3[n, j2, c] = Σ_b t2[n, b] C2[b, j2, c]
                let mut t3 = t2.clone().matmul(l.c2.val().reshape([rr, m2 * r3]));
                if l.intra {
                    // Intra-layer LaX: a plain add, (m1, r1) = (m2, r3).
                    t3 = t3 + t1.reshape([n, m1 * r1]);
                }
                // y[n, j2, j3] = Σ_c t3[n, j2, c] C3[c, j3]
                let y = t3
                    .reshape([n * m2, r3])
                    .matmul(l.c3.val())
                    .reshape([n, m2 * m3]);
                (add_bias(y, &l.bias), Some(t2))
            }
            SiteLayer::Lora(l) => {
                let frozen = add_bias(x.clone().matmul(l.base.val()), &l.base_bias);
                let z = receive(l.dropout.forward(x).matmul(l.a.val()));
                let y = frozen + z.clone().matmul(l.b.val()).mul_scalar(l.scale);
                (y, Some(z))
            }
        }
    }
}

pub fn add_bias<B: Backend>(y: Tensor<B, 2>, bias: &Option<Param<Tensor<B, 1>>>) -> Tensor<B, 2> {
    match bias {
        Some(b) => y + b.val().unsqueeze::<2>(),
        None => y,
    }
}

pub fn dropout(p: f64) -> Dropout {
    DropoutConfig::new(p).init()
}
