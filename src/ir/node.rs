//! IR nodes and edges. Each op knows its own parameter count and FLOPs, so every report figure
//! is a sum over nodes.

use crate::ir::{Activation, NormKind, SiteRef};
use serde::Serialize;

/// What a weight matrix is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A dense linear layer.
    Dense,
    /// The down factor A (in × r) of SVD / CoLA.
    Down,
    /// The up factor B (r × out) of SVD / CoLA.
    Up,
    /// LoRA's frozen base weight.
    LoraBase,
    LoraA,
    LoraB,
    /// The classifier or LM head.
    Head,
}

/// A LaX gate with every shape known.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Gate {
    Identity,
    Linear,
    /// `h` folded row-major to `input`, contracted with G0 (s1 × s1') and G1 (s0 × s0').
    Tensor {
        input: [usize; 2],
        output: [usize; 2],
    },
    Dense,
}

impl Gate {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Gate::Identity => "identity",
            Gate::Linear => "linear",
            Gate::Tensor { .. } => "tensor",
            Gate::Dense => "dense",
        }
    }
}

/// The epsilon of LaX's norms (docs/conventions.md §Norms) and of the LLaMA and timm ViT norms.
pub const NORM_EPS: f64 = 1e-6;

/// The divisor pair of `r` closest to √r: `(s0, s1)` with `s0 ≤ s1` and `s0·s1 = r`.
pub fn fold(r: usize) -> [usize; 2] {
    let mut s0 = (r as f64).sqrt() as usize;
    while s0 > 1 && !r.is_multiple_of(s0) {
        s0 -= 1;
    }
    let s0 = s0.max(1);
    [s0, r / s0]
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    TokenInput {
        seq: usize,
    },
    ImageInput {
        channels: usize,
        image: usize,
        patch: usize,
    },
    Embedding {
        vocab: usize,
        dim: usize,
    },
    PatchEmbed {
        channels: usize,
        patch: usize,
        dim: usize,
    },
    ClsToken {
        dim: usize,
    },
    PosEmbed {
        tokens: usize,
        dim: usize,
    },
    /// A norm over the last `width` channels; `eps` is added to the variance (or the mean
    /// square) inside the root.
    Norm {
        kind: NormKind,
        width: usize,
        eps: f64,
    },
    /// `y = x W (+ b)`, W is `inp × out`.
    Linear {
        inp: usize,
        out: usize,
        bias: bool,
        role: Role,
    },
    /// `y = x Eᵀ` with E the model's token embedding (`vocab × dim`): an LM head tied to the
    /// input embedding, with no parameters of its own.
    TiedHead {
        dim: usize,
        vocab: usize,
    },
    /// One tensor-train core `(left, mode, right)`, contracted `batch` times per token.
    TtCore {
        index: usize,
        left: usize,
        mode: usize,
        right: usize,
        batch: usize,
        /// The layer's bias, carried by the last core.
        bias: usize,
    },
    /// The latent a LaX pathway leaves from: the very tensor fed to the up factor.
    Latent {
        width: usize,
    },
    /// `z + g(h)` where a pathway arrives (or `t3 + t1` inside a TT layer).
    LaxAdd {
        width: usize,
    },
    /// `Norm(z + g(h))`: a pathway's add and its norm as one op, made by the pass
    /// `passes::fuse_lax_norms` (never by the builder); it counts what the two count.
    LaxAddNorm {
        kind: NormKind,
        width: usize,
        eps: f64,
    },
    Gate {
        gate: Gate,
        src: usize,
        dst: usize,
    },
    Activation {
        act: Activation,
        width: usize,
    },
    /// Rotate-half rotary positions on each of `heads` heads of `width / heads` channels, with
    /// frequencies `theta^(−2i/d)`.
    Rope {
        width: usize,
        heads: usize,
        theta: f64,
    },
    /// Scaled dot-product attention over `tokens` positions (QKᵀ, softmax, AV). Queries have
    /// `heads` heads; keys and values `kv_heads`, each shared by `heads / kv_heads` queries.
    Attention {
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        tokens: usize,
        causal: bool,
    },
    /// SwiGLU's elementwise product.
    Mul {
        width: usize,
    },
    /// `silu(gate) ⊙ up`: SwiGLU's SiLU and product as one op, made by the pass
    /// `passes::fuse_swiglu` (never by the builder); it counts what the two count.
    SwiGlu {
        width: usize,
    },
    /// Residual add.
    Add {
        width: usize,
    },
    /// Zeroes each element with probability p and scales the rest by 1/(1 − p) while
    /// training; the identity in evaluation.
    Dropout {
        width: usize,
        rate: DropRate,
    },
    /// LoRA's `base + (alpha / r) · adapter`.
    LoraMerge {
        width: usize,
        scale: f64,
    },
    Output {
        width: usize,
    },
}

/// How much a dropout node drops.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "rate", rename_all = "lowercase")]
pub enum DropRate {
    /// A rate the spec fixes: LoRA's `dropout` argument.
    Fixed { p: f64 },
    /// The run's `dropout` train option (the model's own dropout; 0 unless set).
    Train,
}

/// Which tokens of a sample an op runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokens {
    All,
    /// Image patches only (ViT patch embedding): tokens − 1.
    Patches,
    /// The cls token only (ViT head).
    Cls,
}

/// Where in the model a node belongs, for grouping in reports and drawings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum Scope {
    /// Outside the blocks: embeddings, final norm, head.
    Stem,
    /// Inside a block, outside any linear site (norms, attention, residuals).
    Block { block: usize },
    /// Part of a linear site.
    Site { site: SiteRef },
    /// Part of a LaX pathway (gate, norm, add), by index into `Ir::pathways`.
    Pathway { pathway: usize },
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub scope: Scope,
    pub tokens: Tokens,
    /// Frozen parameters get no gradient and no optimizer state (LoRA fine-tuning).
    pub frozen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EdgeKind {
    Data,
    /// A LaX pathway: a latent crossing to another layer or core.
    Lax,
}

/// An edge carries the per-token shape of the tensor flowing on it: the tensor is `(N, dims...)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub shape: Vec<usize>,
    pub kind: EdgeKind,
}

impl Edge {
    pub fn width(&self) -> u128 {
        self.shape.iter().map(|&d| d as u128).product()
    }
}

impl Op {
    /// Trainable-or-frozen parameter count of the op.
    pub fn params(&self) -> u128 {
        let u = |x: usize| x as u128;
        match *self {
            Op::Embedding { vocab, dim } => u(vocab) * u(dim),
            Op::PatchEmbed {
                channels,
                patch,
                dim,
            } => u(channels) * u(patch) * u(patch) * u(dim) + u(dim),
            Op::ClsToken { dim } => u(dim),
            Op::PosEmbed { tokens, dim } => u(tokens) * u(dim),
            Op::Norm { kind, width, .. } | Op::LaxAddNorm { kind, width, .. } => match kind {
                NormKind::Layernorm => 2 * u(width),
                NormKind::Rmsnorm => u(width),
                NormKind::None => 0,
            },
            Op::Linear { inp, out, bias, .. } => u(inp) * u(out) + if bias { u(out) } else { 0 },
            Op::TtCore {
                left,
                mode,
                right,
                bias,
                ..
            } => u(left) * u(mode) * u(right) + u(bias),
            Op::Gate { ref gate, src, dst } => match gate {
                Gate::Identity => 0,
                Gate::Linear => 1,
                Gate::Tensor { input, output } => {
                    u(input[0]) * u(output[0]) + u(input[1]) * u(output[1])
                }
                Gate::Dense => u(src) * u(dst) + u(dst),
            },
            _ => 0,
        }
    }

    /// Forward GEMM FLOPs per token the op runs on (2·M·K·N per GEMM).
    pub fn gemm_flops(&self) -> u128 {
        let u = |x: usize| x as u128;
        match *self {
            Op::PatchEmbed {
                channels,
                patch,
                dim,
            } => 2 * u(channels) * u(patch) * u(patch) * u(dim),
            Op::Linear { inp, out, .. } => 2 * u(inp) * u(out),
            Op::TiedHead { dim, vocab } => 2 * u(dim) * u(vocab),
            Op::TtCore {
                left,
                mode,
                right,
                batch,
                ..
            } => 2 * u(left) * u(mode) * u(right) * u(batch),
            Op::Gate { ref gate, src, dst } => match gate {
                Gate::Tensor { input, output } => {
                    2 * u(input[0]) * u(input[1]) * u(output[1])
                        + 2 * u(output[0]) * u(input[0]) * u(output[1])
                }
                Gate::Dense => 2 * u(src) * u(dst),
                _ => 0,
            },
            // QKᵀ and AV: 2·n·d each per token; not halved for a causal mask.
            Op::Attention {
                heads,
                head_dim,
                tokens,
                ..
            } => 4 * u(tokens) * u(heads) * u(head_dim),
            _ => 0,
        }
    }

    /// Forward non-GEMM FLOPs per token (norms, activations, softmax, adds), by the per-element
    /// costs in docs/conventions.md.
    pub fn other_flops(&self) -> u128 {
        let u = |x: usize| x as u128;
        match *self {
            Op::Norm { kind, width, .. } => match kind {
                NormKind::Layernorm => 5 * u(width),
                NormKind::Rmsnorm => 4 * u(width),
                NormKind::None => 0,
            },
            Op::LaxAddNorm { kind, width, eps } => {
                let norm = Op::Norm { kind, width, eps };
                Op::LaxAdd { width }.other_flops() + norm.other_flops()
            }
            Op::Linear {
                out, bias: true, ..
            } => u(out),
            Op::PatchEmbed { dim, .. } => u(dim),
            Op::TtCore { bias, .. } => u(bias),
            Op::PosEmbed { dim, .. } => u(dim),
            Op::Activation { width, .. } => u(width),
            Op::Mul { width } | Op::Add { width } | Op::LaxAdd { width } => u(width),
            // The SiLU's and the product's.
            Op::SwiGlu { width } => 2 * u(width),
            Op::Rope { width, .. } => 3 * u(width),
            Op::Attention { heads, tokens, .. } => 3 * u(heads) * u(tokens),
            Op::LoraMerge { width, .. } => 2 * u(width),
            Op::Gate {
                gate: Gate::Linear,
                src,
                ..
            } => u(src),
            Op::Gate {
                gate: Gate::Dense,
                dst,
                ..
            } => u(dst),
            _ => 0,
        }
    }

    /// The width the op's `port`-th input (in the order the IR wires them) must have, where
    /// the op fixes it.
    pub fn input_width(&self, port: usize) -> Option<u128> {
        let u = |x: usize| x as u128;
        Some(match *self {
            Op::Embedding { .. } | Op::PatchEmbed { .. } => return None,
            Op::Norm { width, .. }
            | Op::Activation { width, .. }
            | Op::Rope { width, .. }
            | Op::Mul { width }
            | Op::SwiGlu { width }
            | Op::Add { width }
            | Op::LaxAdd { width }
            | Op::LaxAddNorm { width, .. }
            | Op::LoraMerge { width, .. }
            | Op::Latent { width }
            | Op::Dropout { width, .. }
            | Op::Output { width } => u(width),
            Op::Linear { inp, .. } => u(inp),
            Op::TiedHead { dim, .. } => u(dim),
            Op::TtCore {
                left,
                mode,
                batch,
                index,
                ..
            } => match index {
                0 => u(mode) * u(batch),
                1 => u(left) * u(mode),
                2 => u(left),
                _ => u(left) * u(batch),
            },
            Op::Gate { src, .. } => u(src),
            // q, then k and v.
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
                ..
            } => u(if port == 0 { heads } else { kv_heads }) * u(head_dim),
            Op::ClsToken { dim } | Op::PosEmbed { dim, .. } => u(dim),
            Op::TokenInput { .. } | Op::ImageInput { .. } => return None,
        })
    }

    /// Short label for tables and drawings.
    pub fn label(&self) -> String {
        match self {
            Op::TokenInput { seq } => format!("tokens ({seq})"),
            Op::ImageInput {
                channels, image, ..
            } => format!("image {channels}×{image}×{image}"),
            Op::Embedding { vocab, dim } => format!("embedding {vocab}×{dim}"),
            Op::PatchEmbed {
                channels,
                patch,
                dim,
            } => format!("patch embed {channels}·{patch}²→{dim}"),
            Op::ClsToken { dim } => format!("cls token {dim}"),
            Op::PosEmbed { tokens, dim } => format!("positions {tokens}×{dim}"),
            Op::Norm { kind, width, .. } => format!("{}({width})", kind.name()),
            Op::Linear { inp, out, role, .. } => {
                let r = match role {
                    Role::Dense => "W",
                    Role::Down => "A",
                    Role::Up => "B",
                    Role::LoraBase => "W₀ (frozen)",
                    Role::LoraA => "lora A",
                    Role::LoraB => "lora B",
                    Role::Head => "head",
                };
                format!("{r} {inp}×{out}")
            }
            Op::TiedHead { dim, vocab } => format!("head {dim}×{vocab} (tied to embed)"),
            Op::TtCore {
                index,
                left,
                mode,
                right,
                ..
            } => format!("C{index} {left}×{mode}×{right}"),
            Op::Latent { width } => format!("latent {width}"),
            Op::LaxAdd { width } => format!("+ ({width})"),
            Op::LaxAddNorm { kind, width, .. } => format!("+ → {}({width})", kind.name()),
            Op::Gate { gate, src, dst } => match gate {
                Gate::Tensor { input, output } => format!(
                    "tensor gate {}×{}→{}×{}",
                    input[0], input[1], output[0], output[1]
                ),
                g => format!("{} gate {src}→{dst}", g.kind_name()),
            },
            Op::Activation { act, width } => format!("{}({width})", act.name()),
            Op::Rope { width, .. } => format!("rope({width})"),
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
                causal,
                ..
            } => format!(
                "{}attention {heads}×{head_dim}{}",
                if *causal { "causal " } else { "" },
                if kv_heads < heads {
                    format!(", {kv_heads} kv heads")
                } else {
                    String::new()
                }
            ),
            Op::Mul { width } => format!("× ({width})"),
            Op::SwiGlu { width } => format!("silu(gate) × up ({width})"),
            Op::Add { width } => format!("residual + ({width})"),
            Op::Dropout { rate, .. } => match rate {
                DropRate::Fixed { p } => format!("dropout({p})"),
                DropRate::Train => "dropout (train)".into(),
            },
            Op::LoraMerge { scale, .. } => format!("W₀x + {scale}·BAx"),
            Op::Output { width } => format!("output ({width})"),
        }
    }
}

impl Op {
    /// The per-token shape of the op's output, which its outgoing edges carry.
    pub fn output_shape(&self) -> Vec<usize> {
        match *self {
            Op::TokenInput { .. } => vec![1],
            Op::ImageInput {
                channels, patch, ..
            } => vec![channels, patch, patch],
            Op::Embedding { dim, .. }
            | Op::PatchEmbed { dim, .. }
            | Op::ClsToken { dim }
            | Op::PosEmbed { dim, .. } => vec![dim],
            Op::Norm { width, .. }
            | Op::Latent { width }
            | Op::LaxAdd { width }
            | Op::LaxAddNorm { width, .. }
            | Op::Activation { width, .. }
            | Op::Rope { width, .. }
            | Op::Mul { width }
            | Op::SwiGlu { width }
            | Op::Add { width }
            | Op::LoraMerge { width, .. }
            | Op::Dropout { width, .. }
            | Op::Output { width } => vec![width],
            Op::Linear { out, .. } => vec![out],
            Op::TiedHead { vocab, .. } => vec![vocab],
            Op::TtCore {
                index,
                mode,
                right,
                batch,
                ..
            } => match index {
                0 => vec![batch, right],
                1 => vec![right],
                2 => vec![mode, right],
                _ => vec![batch * mode],
            },
            Op::Gate { dst, .. } => vec![dst],
            Op::Attention {
                heads, head_dim, ..
            } => vec![heads * head_dim],
        }
    }
}

impl Op {
    /// fp32 values per token that the op's output adds to what training keeps for the backward
    /// pass: its output, and for attention also the scores and probabilities (`heads` × `n`
    /// each per query token). Ops that pass a tensor on unchanged (a latent, the output, a
    /// dropout that is off) and token ids keep nothing new.
    pub fn kept_per_token(&self) -> u128 {
        let u = |x: usize| x as u128;
        match *self {
            Op::TokenInput { .. } | Op::Latent { .. } | Op::Output { .. } | Op::Dropout { .. } => 0,
            // The sum it normalizes and its output, as the add and the norm it stands for.
            Op::LaxAddNorm { width, .. } => 2 * u(width),
            // The SiLU's output and the product, as the two ops it stands for.
            Op::SwiGlu { width } => 2 * u(width),
            // Grouped-query attention also keeps k and v repeated to every query head.
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
                tokens,
                ..
            } => {
                let repeated = if kv_heads < heads { 2 } else { 0 };
                (1 + repeated) * u(heads) * u(head_dim) + 2 * u(heads) * u(tokens)
            }
            _ => self.output_shape().iter().map(|&d| u(d)).product(),
        }
    }
}

impl Node {
    pub fn tokens_per_sample(&self, n: usize) -> u128 {
        match self.tokens {
            Tokens::All => n as u128,
            Tokens::Patches => n.saturating_sub(1) as u128,
            Tokens::Cls => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fold;

    #[test]
    fn fold_is_the_divisor_pair_closest_to_the_square_root() {
        assert_eq!(fold(256), [16, 16]);
        assert_eq!(fold(336), [16, 21]);
        assert_eq!(fold(158), [2, 79]);
        assert_eq!(fold(159), [3, 53]);
        assert_eq!(fold(128), [8, 16]);
        assert_eq!(fold(64), [8, 8]);
        assert_eq!(fold(97), [1, 97]);
        assert_eq!(fold(1), [1, 1]);
    }
}
