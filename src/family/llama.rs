//! LLaMA (HF `LlamaForCausalLM`): token embedding; pre-RMSNorm blocks of rotary causal
//! attention (q, k, v, o without biases; k and v with `kv_heads` heads, grouped-query attention
//! when fewer than `heads`) and a SwiGLU MLP (gate, up, down); a final RMSNorm and an LM head,
//! its own or the token embedding (`tie_embeddings`). `rope_theta` and `norm_eps` are HF's.

use super::dims::{narrow, widen};
use super::{
    residual, AttentionHalf, FamilyDef, InitScheme, Input, KeySpec, ModelConfig, SiteDef,
    SizeError, Sizes, LANGUAGE_KEYS,
};
use crate::ir::build::{rms, Builder};
use crate::ir::Activation;
use crate::ir::{Op, Role, Scope};
use petgraph::graph::NodeIndex;

pub static LLAMA: FamilyDef = FamilyDef {
    name: "llama",
    keys: KEYS,
    sites: &[
        SiteDef::attn("q"),
        SiteDef::attn_kv("k"),
        SiteDef::attn_kv("v"),
        SiteDef::attn("o"),
        SiteDef::mlp("gate", widen),
        SiteDef::mlp("up", widen),
        SiteDef::mlp("down", narrow),
    ],
    fixed_parts: &["embed", "head", "norm", "final_norm"],
    input: Input::Tokens,
    init: InitScheme::Gpt,
    linear_bias: false,
    config,
    stem,
    block,
    head,
};

/// The epsilon of CoLA's LLaMA RMSNorm (HF's default is 1e-6 too).
const RMS_EPS: f64 = 1e-6;
/// RoPE's base in the original LLaMA.
const ROPE_THETA: f64 = 10000.0;

const KEYS: &[KeySpec] = &[
    LANGUAGE_KEYS[0],
    LANGUAGE_KEYS[1],
    LANGUAGE_KEYS[2],
    LANGUAGE_KEYS[3],
    LANGUAGE_KEYS[4],
    LANGUAGE_KEYS[5],
    KeySpec::same_as("kv_heads", "heads"),
    KeySpec::flag("tie_embeddings"),
    KeySpec::real("rope_theta", ROPE_THETA),
    KeySpec::real("norm_eps", RMS_EPS),
];

fn config(s: &Sizes) -> Result<ModelConfig, SizeError> {
    let m = ModelConfig {
        kv_heads: s.get("kv_heads"),
        tie_embeddings: s.get("tie_embeddings") != 0,
        rope_theta: s.real("rope_theta"),
        norm_eps: s.real("norm_eps"),
        ..ModelConfig::language(s)
    };
    if !m.heads.is_multiple_of(m.kv_heads) {
        return Err(SizeError {
            key: "kv_heads",
            message: format!(
                "`kv_heads` = {} does not divide `heads` = {}",
                m.kv_heads, m.heads
            ),
            label: "must divide heads",
            hint: "each key-value head serves heads / kv_heads query heads",
        });
    }
    if !(m.hidden / m.heads).is_multiple_of(2) {
        return Err(SizeError {
            key: "heads",
            message: format!(
                "the head width hidden / heads = {} is odd",
                m.hidden / m.heads
            ),
            label: "RoPE needs an even head width",
            hint: "choose hidden and heads so that hidden / heads is even",
        });
    }
    Ok(m)
}

fn stem(b: &mut Builder) -> NodeIndex {
    let m = b.model().clone();
    let tokens = b.add(
        "tokens".into(),
        Op::TokenInput { seq: m.tokens },
        Scope::Stem,
    );
    let embed = Op::Embedding {
        vocab: m.vocab,
        dim: m.hidden,
    };
    b.then(tokens, "embed".into(), embed, Scope::Stem)
}

fn norm(m: &ModelConfig, width: usize) -> Op {
    rms(width, m.norm_eps)
}

const ATTENTION: AttentionHalf = AttentionHalf {
    norm: "attn_norm",
    norm_op: norm,
    rope: true,
    causal: true,
    dropout: true,
};

fn block(b: &mut Builder, x: NodeIndex, block: usize) -> NodeIndex {
    let m = b.model().clone();
    let r1 = ATTENTION.build(b, x, block);
    let n2 = b.block_op(r1, block, "mlp_norm", norm(&m, m.hidden));
    let gate = b.site(n2, block, "mlp.gate");
    let silu = Op::Activation {
        act: Activation::Silu,
        width: m.ffn,
    };
    let act = b.block_op(gate, block, "silu", silu);
    let up = b.site(n2, block, "mlp.up");
    let mul = b.block_join(&[act, up], block, "swiglu", Op::Mul { width: m.ffn });
    let down = b.site(mul, block, "mlp.down");
    residual(b, r1, down, block, "mlp")
}

fn head(b: &mut Builder, x: NodeIndex) {
    let m = b.model().clone();
    let fin = b.then(x, "final_norm".into(), norm(&m, m.hidden), Scope::Stem);
    let op = if m.tie_embeddings {
        Op::TiedHead {
            dim: m.hidden,
            vocab: m.vocab,
        }
    } else {
        Op::Linear {
            inp: m.hidden,
            out: m.vocab,
            bias: false,
            role: Role::Head,
        }
    };
    let head = b.then(fin, "head".into(), op, Scope::Stem);
    b.then(
        head,
        "logits".into(),
        Op::Output { width: m.vocab },
        Scope::Stem,
    );
}
