//! GPT-2 (Radford et al. 2019; HF `GPT2LMHeadModel`): token and learned position embeddings;
//! pre-LayerNorm blocks of causal attention (q, k, v, o with biases: HF's fused `c_attn` split
//! in three) and a GELU MLP (`mlp.fc` = `c_fc`, `mlp.proj` = `c_proj`, tanh GELU as GPT-2's
//! `gelu_new`); a final LayerNorm and a head tied to the token embedding (no parameters of
//! its own). GPT-2 small: vocab 50257, seq 1024, hidden 768, heads 12, layers 12, ffn 3072.

use super::dims::{narrow, widen};
use super::{
    residual, AttentionHalf, FamilyDef, InitScheme, Input, ModelConfig, SiteDef, SizeError, Sizes,
    LANGUAGE_KEYS,
};
use crate::ir::build::{ln, Builder};
use crate::ir::Activation;
use crate::ir::{DropRate, Op, Scope};
use petgraph::graph::NodeIndex;

pub static GPT2: FamilyDef = FamilyDef {
    name: "gpt2",
    keys: LANGUAGE_KEYS,
    sites: &[
        SiteDef::attn("q"),
        SiteDef::attn("k"),
        SiteDef::attn("v"),
        SiteDef::attn("o"),
        SiteDef::mlp("fc", widen),
        SiteDef::mlp("proj", narrow),
    ],
    fixed_parts: &["embed", "pos_embed", "head", "norm", "final_norm"],
    input: Input::Tokens,
    init: InitScheme::Gpt,
    linear_bias: true,
    config,
    stem,
    block,
    head,
};

/// GPT-2's LayerNorm epsilon (HF `layer_norm_epsilon`).
const LN_EPS: f64 = 1e-5;

fn norm(m: &ModelConfig, width: usize) -> Op {
    ln(width, m.norm_eps)
}

fn config(s: &Sizes) -> Result<ModelConfig, SizeError> {
    Ok(ModelConfig {
        norm_eps: LN_EPS,
        ..ModelConfig::language(s)
    })
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
    let e = b.then(tokens, "embed".into(), embed, Scope::Stem);
    let positions = Op::PosEmbed {
        tokens: m.tokens,
        dim: m.hidden,
    };
    let x = b.then(e, "pos_embed".into(), positions, Scope::Stem);
    let dropout = Op::Dropout {
        width: m.hidden,
        rate: DropRate::Train,
    };
    b.then(x, "embed_dropout".into(), dropout, Scope::Stem)
}

const ATTENTION: AttentionHalf = AttentionHalf {
    norm: "ln_1",
    norm_op: norm,
    rope: false,
    causal: true,
    dropout: true,
};

fn block(b: &mut Builder, x: NodeIndex, block: usize) -> NodeIndex {
    let m = b.model().clone();
    let r1 = ATTENTION.build(b, x, block);
    let n2 = b.block_op(r1, block, "ln_2", norm(&m, m.hidden));
    let fc = b.site(n2, block, "mlp.fc");
    let gelu = Op::Activation {
        act: Activation::GeluTanh,
        width: m.ffn,
    };
    let act = b.block_op(fc, block, "gelu", gelu);
    let proj = b.site(act, block, "mlp.proj");
    residual(b, r1, proj, block, "mlp")
}

fn head(b: &mut Builder, x: NodeIndex) {
    let m = b.model().clone();
    let fin = b.then(x, "final_norm".into(), norm(&m, m.hidden), Scope::Stem);
    let tied = Op::TiedHead {
        dim: m.hidden,
        vocab: m.vocab,
    };
    let head = b.then(fin, "head".into(), tied, Scope::Stem);
    b.then(
        head,
        "logits".into(),
        Op::Output { width: m.vocab },
        Scope::Stem,
    );
}
