//! LLaMA: token embedding; pre-RMSNorm blocks of rotary causal attention (q, k, v, o without
//! biases) and a SwiGLU MLP (gate, up, down); a final RMSNorm and an untied LM head.

use super::dims::{narrow, widen};
use super::{
    residual, AttentionHalf, FamilyDef, InitScheme, Input, ModelConfig, SiteDef, SizeError, Sizes,
    LANGUAGE_KEYS,
};
use crate::ir::build::{rms, Builder};
use crate::ir::Activation;
use crate::ir::{Op, Role, Scope};
use petgraph::graph::NodeIndex;

pub static LLAMA: FamilyDef = FamilyDef {
    name: "llama",
    keys: LANGUAGE_KEYS,
    sites: &[
        SiteDef::attn("q"),
        SiteDef::attn("k"),
        SiteDef::attn("v"),
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

fn config(s: &Sizes) -> Result<ModelConfig, SizeError> {
    let m = ModelConfig::language(s);
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

const ATTENTION: AttentionHalf = AttentionHalf {
    norm: "attn_norm",
    norm_op: rms,
    rope: true,
    causal: true,
    dropout: true,
};

fn block(b: &mut Builder, x: NodeIndex, block: usize) -> NodeIndex {
    let m = b.model().clone();
    let r1 = ATTENTION.build(b, x, block);
    let n2 = b.block_op(r1, block, "mlp_norm", rms(m.hidden));
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
    let fin = b.then(x, "final_norm".into(), rms(m.hidden), Scope::Stem);
    let linear = Op::Linear {
        inp: m.hidden,
        out: m.vocab,
        bias: false,
        role: Role::Head,
    };
    let head = b.then(fin, "head".into(), linear, Scope::Stem);
    b.then(
        head,
        "logits".into(),
        Op::Output { width: m.vocab },
        Scope::Stem,
    );
}
