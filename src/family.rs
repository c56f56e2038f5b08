//! Model families: their size keys and the linear sites inside each block.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Vit,
}

impl Family {
    pub const NAMES: [&'static str; 2] = ["llama", "vit"];

    pub fn from_name(name: &str) -> Option<Family> {
        match name {
            "llama" => Some(Family::Llama),
            "vit" => Some(Family::Vit),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Vit => "vit",
        }
    }

    /// The size keys of the family, and whether each is required; optional ones have a default.
    pub fn keys(self) -> &'static [KeySpec] {
        match self {
            Family::Llama => LLAMA_KEYS,
            Family::Vit => VIT_KEYS,
        }
    }

    /// Group and name of every linear site in one block, in execution order.
    pub fn site_names(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Family::Llama => &[
                ("attn", "q"),
                ("attn", "k"),
                ("attn", "v"),
                ("attn", "o"),
                ("mlp", "gate"),
                ("mlp", "up"),
                ("mlp", "down"),
            ],
            Family::Vit => &[
                ("attn", "q"),
                ("attn", "k"),
                ("attn", "v"),
                ("attn", "o"),
                ("mlp", "fc1"),
                ("mlp", "fc2"),
            ],
        }
    }

    /// Parts of the model that are not factorizable sites (named so errors can explain).
    pub fn fixed_parts(self) -> &'static [&'static str] {
        match self {
            Family::Llama => &["embed", "head", "norm", "final_norm"],
            Family::Vit => &["patch_embed", "cls_token", "pos_embed", "head", "norm"],
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    pub default: Option<i64>,
}

impl KeySpec {
    const fn required(name: &'static str) -> Self {
        KeySpec {
            name,
            default: None,
        }
    }
    const fn optional(name: &'static str, default: i64) -> Self {
        KeySpec {
            name,
            default: Some(default),
        }
    }
}

/// The sizes of a model, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    pub name: String,
    pub family: Family,
    pub hidden: usize,
    pub heads: usize,
    pub layers: usize,
    /// llama: vocabulary; vit: 0.
    pub vocab: usize,
    /// llama: SwiGLU width; vit: MLP width.
    pub ffn: usize,
    /// llama: sequence length; vit: patches + cls token.
    pub tokens: usize,
    pub image: usize,
    pub patch: usize,
    pub channels: usize,
    pub classes: usize,
    pub mlp_norm: bool,
}

impl ModelConfig {
    /// `(in, out)` of a site, by its index in [`Family::site_names`].
    pub fn site_dims(&self, local: usize) -> (usize, usize) {
        let (h, f) = (self.hidden, self.ffn);
        match (self.family, local) {
            (_, 0..=3) => (h, h),
            (Family::Llama, 4 | 5) => (h, f),
            (Family::Llama, 6) => (f, h),
            (Family::Vit, 4) => (h, f),
            (Family::Vit, 5) => (f, h),
            _ => unreachable!("site index {local} out of range"),
        }
    }

    /// Whether the family puts a bias on its block linears.
    pub fn linear_bias(&self) -> bool {
        self.family == Family::Vit
    }

    pub fn sites_per_block(&self) -> usize {
        self.family.site_names().len()
    }

    pub fn patches(&self) -> usize {
        (self.image / self.patch.max(1)).pow(2)
    }
}

const LLAMA_KEYS: &[KeySpec] = &[
    KeySpec::required("vocab"),
    KeySpec::required("hidden"),
    KeySpec::required("ffn"),
    KeySpec::required("heads"),
    KeySpec::required("layers"),
    KeySpec::required("seq"),
];

const VIT_KEYS: &[KeySpec] = &[
    KeySpec::required("image"),
    KeySpec::required("patch"),
    KeySpec::optional("channels", 3),
    KeySpec::required("classes"),
    KeySpec::required("hidden"),
    KeySpec::required("mlp"),
    KeySpec::required("heads"),
    KeySpec::required("layers"),
    // The authors' low-rank ViTs put a LayerNorm(mlp) between fc1's GELU and fc2.
    KeySpec::optional("mlp_norm", 0),
];
