//! ViT (timm): a patch embedding, a cls token and learned positions; pre-LayerNorm blocks of
//! attention (separate q, k, v and o, with biases) and a GELU MLP (fc1, fc2); a final LayerNorm
//! and a classifier head on the cls token. The authors' low-rank ViTs add a LayerNorm(mlp)
//! between fc1's GELU and fc2 (`mlp_norm = true`).

use super::dims::{narrow, widen};
use super::{
    residual, AttentionHalf, FamilyDef, InitScheme, Input, KeySpec, ModelConfig, SiteDef,
    SizeError, Sizes,
};
use crate::ir::build::{ln, Builder};
use crate::ir::Activation;
use crate::ir::{Op, Role, Scope, Tokens, NORM_EPS};
use petgraph::graph::NodeIndex;

pub static VIT: FamilyDef = FamilyDef {
    name: "vit",
    keys: &[
        KeySpec::required("image"),
        KeySpec::required("patch"),
        KeySpec::optional("channels", 3),
        KeySpec::required("classes"),
        KeySpec::required("hidden"),
        KeySpec::required("mlp"),
        KeySpec::required("heads"),
        KeySpec::required("layers"),
        KeySpec::flag("mlp_norm"),
    ],
    sites: &[
        SiteDef::attn("q"),
        SiteDef::attn("k"),
        SiteDef::attn("v"),
        SiteDef::attn("o"),
        SiteDef::mlp("fc1", widen),
        SiteDef::mlp("fc2", narrow),
    ],
    fixed_parts: &["patch_embed", "cls_token", "pos_embed", "head", "norm"],
    input: Input::Images,
    init: InitScheme::Timm,
    linear_bias: true,
    config,
    stem,
    block,
    head,
};

fn config(s: &Sizes) -> Result<ModelConfig, SizeError> {
    let (image, patch) = (s.get("image"), s.get("patch"));
    if image % patch != 0 {
        return Err(SizeError {
            key: "patch",
            message: format!("`patch` = {patch} does not divide `image` = {image}"),
            label: "must divide image",
            hint: "the image is cut into (image / patch)² square patches",
        });
    }
    Ok(ModelConfig {
        name: s.name.to_string(),
        family: s.family,
        hidden: s.get("hidden"),
        heads: s.get("heads"),
        layers: s.get("layers"),
        vocab: 0,
        ffn: s.get("mlp"),
        tokens: (image / patch).pow(2) + 1,
        image,
        patch,
        channels: s.get("channels"),
        classes: s.get("classes"),
        mlp_norm: s.get("mlp_norm") != 0,
        kv_heads: s.get("heads"),
        tie_embeddings: false,
        rope_theta: 0.0,
        norm_eps: NORM_EPS,
    })
}

/// timm's ViT LayerNorm (epsilon 1e-6).
fn norm(m: &ModelConfig, width: usize) -> Op {
    ln(width, m.norm_eps)
}

fn stem(b: &mut Builder) -> NodeIndex {
    let m = b.model().clone();
    let h = m.hidden;
    let image = Op::ImageInput {
        channels: m.channels,
        image: m.image,
        patch: m.patch,
    };
    let img = b.add("image".into(), image, Scope::Stem);
    let embed = Op::PatchEmbed {
        channels: m.channels,
        patch: m.patch,
        dim: h,
    };
    let pe = b.then(img, "patch_embed".into(), embed, Scope::Stem);
    b.set_tokens(pe, Tokens::Patches);
    let cls = b.add("cls_token".into(), Op::ClsToken { dim: h }, Scope::Stem);
    b.set_tokens(cls, Tokens::Cls);
    let positions = Op::PosEmbed {
        tokens: m.tokens,
        dim: h,
    };
    // The sequence is the cls token, then the patches: inputs in that order.
    b.join(&[cls, pe], "pos_embed".into(), positions, Scope::Stem)
}

const ATTENTION: AttentionHalf = AttentionHalf {
    norm: "norm1",
    norm_op: norm,
    rope: false,
    causal: false,
    // The authors' ViT drops out only in its MLP (after fc1's activation and after fc2).
    dropout: false,
};

fn block(b: &mut Builder, x: NodeIndex, block: usize) -> NodeIndex {
    let m = b.model().clone();
    let r1 = ATTENTION.build(b, x, block);
    let n2 = b.block_op(r1, block, "norm2", norm(&m, m.hidden));
    let fc1 = b.site(n2, block, "mlp.fc1");
    let gelu = Op::Activation {
        act: Activation::Gelu,
        width: m.ffn,
    };
    let act = b.block_op(fc1, block, "gelu", gelu);
    // timm's Mlp: dropout after the activation and after fc2, the norm between.
    let mut act = b.block_dropout(act, block, "act_dropout");
    if m.mlp_norm {
        act = b.block_op(act, block, "mlp_norm", norm(&m, m.ffn));
    }
    let fc2 = b.site(act, block, "mlp.fc2");
    residual(b, r1, fc2, block, "mlp")
}

fn head(b: &mut Builder, x: NodeIndex) {
    let m = b.model().clone();
    let fin = b.then(x, "final_norm".into(), norm(&m, m.hidden), Scope::Stem);
    let linear = Op::Linear {
        inp: m.hidden,
        out: m.classes,
        bias: true,
        role: Role::Head,
    };
    let head = b.then(fin, "head".into(), linear, Scope::Stem);
    b.set_tokens(head, Tokens::Cls);
    let out = b.then(
        head,
        "logits".into(),
        Op::Output { width: m.classes },
        Scope::Stem,
    );
    b.set_tokens(out, Tokens::Cls);
}
