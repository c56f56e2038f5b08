//! The parameters of IR nodes: one Burn module per kind of parametric op, and the initial values
//! of each (docs/conventions.md §Initialization, the authors' code). Values are drawn node by
//! node in node order, so a spec always gets the same weights from the same seed.

use super::init::Init;
use super::layers::{LayerNorm, RmsNorm};
use super::precision::cast_like;
use super::product::rows_times;
use crate::family::InitScheme;
use crate::ir::NormKind;
use crate::ir::{Gate, Ir, Node, Op, Role, Scope};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};

/// `y = x W (+ b)`: every linear op (dense sites, factors, LoRA, the head), the patch
/// embedding and the dense LaX gate.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `in × out`.
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let weight = cast_like(self.weight.val(), &x);
        add_bias(rows_times(x, weight), &self.bias)
    }
}

/// One tensor-train core, stored `(left, mode, right)` as the IR states it; the last core
/// carries the layer's bias.
#[derive(Module, Debug)]
pub struct TtCore<B: Backend> {
    pub core: Param<Tensor<B, 3>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

/// The tensor gate's two small cores: `G1ᵀ R G0` with R the row-major fold of the latent.
#[derive(Module, Debug)]
pub struct TensorGate<B: Backend> {
    /// `s1 × t1`.
    pub g0: Param<Tensor<B, 2>>,
    /// `s0 × t0`.
    pub g1: Param<Tensor<B, 2>>,
}

/// The parameters of one IR node, by the kind of op it is.
#[derive(Module, Debug)]
pub enum NodeParams<B: Backend> {
    /// A lookup table: the token embedding, the position embedding.
    Table(Param<Tensor<B, 2>>),
    /// A vector: the cls token; the linear gate's α (one element).
    Vector(Param<Tensor<B, 1>>),
    Linear(Linear<B>),
    TtCore(TtCore<B>),
    LayerNorm(LayerNorm<B>),
    RmsNorm(RmsNorm<B>),
    TensorGate(TensorGate<B>),
}

pub fn add_bias<B: Backend>(y: Tensor<B, 2>, bias: &Option<Param<Tensor<B, 1>>>) -> Tensor<B, 2> {
    match bias {
        Some(b) => {
            let b = cast_like(b.val(), &y);
            y + b.unsqueeze::<2>()
        }
        None => y,
    }
}

/// The initial parameters of a node, or None for an op without any. Draws from `init` in a
/// fixed order per node (weight, then bias).
pub fn init_node<B: Backend>(
    ir: &Ir,
    node: &Node,
    init: &mut Init,
    device: &B::Device,
) -> Option<NodeParams<B>> {
    let params = match &node.op {
        Op::Embedding { vocab, dim } => {
            NodeParams::Table(init.normal([*vocab, *dim], 0.02, device))
        }
        Op::PatchEmbed {
            channels,
            patch,
            dim,
        } => {
            // The authors' Conv2d keeps PyTorch's default (timm's ViT init re-initializes only
            // nn.Linear): weight and bias U(±1/√fan_in), fan_in = channels · patch².
            let fan_in = channels * patch * patch;
            let bound = 1.0 / (fan_in as f64).sqrt();
            NodeParams::Linear(Linear {
                weight: init.uniform([fan_in, *dim], bound, device),
                bias: Some(init.uniform([*dim], bound, device)),
            })
        }
        Op::ClsToken { dim } => NodeParams::Vector(init.normal([*dim], 1e-6, device)),
        Op::PosEmbed { tokens, dim } => NodeParams::Table(match ir.model.def().init {
            InitScheme::Gpt => init.normal([*tokens, *dim], 0.02, device),
            InitScheme::Timm => init.trunc_normal([*tokens, *dim], 0.02, device),
        }),
        Op::Norm { kind, width, eps } | Op::LaxAddNorm { kind, width, eps } => match kind {
            NormKind::Layernorm => NodeParams::LayerNorm(LayerNorm::new(*width, *eps, device)),
            NormKind::Rmsnorm => NodeParams::RmsNorm(RmsNorm::new(*width, *eps, device)),
            NormKind::None => return None,
        },
        Op::Linear {
            inp,
            out,
            bias,
            role,
        } => NodeParams::Linear(init_linear(
            ir,
            node,
            [*inp, *out],
            *bias,
            *role,
            init,
            device,
        )),
        Op::TtCore {
            left,
            mode,
            right,
            bias,
            ..
        } => NodeParams::TtCore(TtCore {
            // kaiming-normal with PyTorch's fan-in: the product of all but the first dimension.
            core: init.normal(
                [*left, *mode, *right],
                (2.0 / (mode * right) as f64).sqrt(),
                device,
            ),
            // Factorized layers keep a bias drawn from N(0, 1), as the authors' code does.
            bias: (*bias > 0).then(|| init.normal([*bias], 1.0, device)),
        }),
        Op::Gate { gate, src, dst } => init_gate(gate, *src, *dst, init, device)?,
        _ => return None,
    };
    Some(if node.frozen {
        params.no_grad()
    } else {
        params
    })
}

/// A linear op's weight and bias, by what the weight is for.
fn init_linear<B: Backend>(
    ir: &Ir,
    node: &Node,
    [inp, out]: [usize; 2],
    bias: bool,
    role: Role,
    init: &mut Init,
    device: &B::Device,
) -> Linear<B> {
    let gpt = ir.model.def().init == InitScheme::Gpt;
    let zeros = |init: &mut Init| bias.then(|| init.constant([out], 0.0, device));
    match role {
        Role::Dense | Role::LoraBase => Linear {
            weight: if gpt {
                init.normal([inp, out], 0.02, device)
            } else {
                init.trunc_normal([inp, out], 0.02, device)
            },
            bias: zeros(init),
        },
        Role::Down | Role::Up => {
            let std = if gpt {
                // CoLA's LLaMA init: N(0, 1) · r^-1/4 · (in + out)^-1/4 of the whole site.
                let Scope::Site { site } = node.scope else {
                    unreachable!("factors belong to a site")
                };
                let s = ir.site(site);
                let r = if role == Role::Down { out } else { inp };
                (r as f64).powf(-0.25) * ((s.inp + s.out) as f64).powf(-0.25)
            } else {
                // kaiming-normal with PyTorch's fan-in (the second dimension).
                (2.0 / out as f64).sqrt()
            };
            Linear {
                weight: init.normal([inp, out], std, device),
                bias: bias.then(|| init.normal([out], 1.0, device)),
            }
        }
        // PyTorch's kaiming_uniform_(a = √5) on A: bound 1/√in.
        Role::LoraA => Linear {
            weight: init.uniform([inp, out], 1.0 / (inp as f64).sqrt(), device),
            bias: zeros(init),
        },
        // B starts at zero, so the adapted model starts equal to the base.
        Role::LoraB => Linear {
            weight: init.constant([inp, out], 0.0, device),
            bias: zeros(init),
        },
        Role::Head => Linear {
            weight: init.trunc_normal([inp, out], 0.02, device),
            bias: zeros(init),
        },
    }
}

fn init_gate<B: Backend>(
    gate: &Gate,
    src: usize,
    dst: usize,
    init: &mut Init,
    device: &B::Device,
) -> Option<NodeParams<B>> {
    Some(match gate {
        Gate::Identity => return None,
        // Starts at 1: the pathway begins as an identity pathway.
        Gate::Linear => NodeParams::Vector(init.constant([1], 1.0, device)),
        Gate::Tensor { input, output } => {
            // The authors call nn.init.kaiming_uniform_ with its default a = 0 (not
            // nn.Linear's a = √5): bound √(6/fan_in), fan-in the core's second dimension.
            let (g0, g1) = ([input[1], output[1]], [input[0], output[0]]);
            let bound = |core: [usize; 2]| (6.0 / core[1] as f64).sqrt();
            NodeParams::TensorGate(TensorGate {
                g0: init.uniform(g0, bound(g0), device),
                g1: init.uniform(g1, bound(g1), device),
            })
        }
        Gate::Dense => NodeParams::Linear(Linear {
            weight: init.trunc_normal([src, dst], 0.02, device),
            bias: Some(init.constant([dst], 0.0, device)),
        }),
    })
}
