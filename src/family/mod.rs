//! Model families. A family is one file in this folder that declares everything laxc knows of
//! it: its size keys, how sizes become a [`ModelConfig`], its linear sites (the one table that
//! maps a site's name to its place in a block) and its IR template (stem, one block, head).
//! Checks, reports, drawings, lowering and training are generic over [`FamilyDef`]; adding a
//! family is a new file here plus its variant in [`Family`] (the enum, `ALL` and `def`).

mod gpt2;
mod llama;
mod vit;

use crate::ir::build::Builder;
use petgraph::graph::NodeIndex;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Llama,
    Vit,
    Gpt2,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Llama, Family::Vit, Family::Gpt2];

    /// Every family's name, as specs write it.
    pub fn names() -> impl Iterator<Item = &'static str> + Clone {
        Family::ALL.into_iter().map(Family::name)
    }

    /// Everything the family declares.
    pub fn def(self) -> &'static FamilyDef {
        match self {
            Family::Llama => &llama::LLAMA,
            Family::Vit => &vit::VIT,
            Family::Gpt2 => &gpt2::GPT2,
        }
    }

    pub fn from_name(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    /// The size keys of the family, and whether each is required; optional ones have a default.
    pub fn keys(self) -> &'static [KeySpec] {
        self.def().keys
    }

    /// Group and name of every linear site in one block, in execution order.
    pub fn site_names(self) -> impl Iterator<Item = (&'static str, &'static str)> {
        self.def().sites.iter().map(|s| (s.group, s.name))
    }

    /// Group and name of the site at `local` in a block.
    pub fn site_name(self, local: usize) -> (&'static str, &'static str) {
        let s = &self.def().sites[local];
        (s.group, s.name)
    }

    /// Parts of the model that are not factorizable sites (named so errors can explain).
    pub fn fixed_parts(self) -> &'static [&'static str] {
        self.def().fixed_parts
    }
}

/// What a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Input {
    /// Token ids; the model predicts the next token at every position.
    Tokens,
    /// Images; the model predicts one class per image.
    Images,
}

/// Which initial distributions a family's reference code uses (docs/conventions.md
/// §Initialization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitScheme {
    /// Dense weights and positions N(0, 0.02²); SVD/CoLA factors as CoLA's LLaMA code.
    Gpt,
    /// timm: dense weights and positions truncated N(0, 0.02²); factors kaiming-normal.
    Timm,
}

/// The sizes of a decoder language model (llama, gpt2); llama adds its own.
pub(crate) const LANGUAGE_KEYS: &[KeySpec] = &[
    KeySpec::required("vocab"),
    KeySpec::required("hidden"),
    KeySpec::required("ffn"),
    KeySpec::required("heads"),
    KeySpec::required("layers"),
    KeySpec::required("seq"),
];

/// Site widths shared by the families: hidden → hidden (attention), hidden → ffn (into the
/// MLP), ffn → hidden (out of it).
pub(crate) mod dims {
    use super::ModelConfig;

    pub fn square(m: &ModelConfig) -> (usize, usize) {
        (m.hidden, m.hidden)
    }

    pub fn widen(m: &ModelConfig) -> (usize, usize) {
        (m.hidden, m.ffn)
    }

    pub fn narrow(m: &ModelConfig) -> (usize, usize) {
        (m.ffn, m.hidden)
    }

    /// hidden → the key-value heads' width (k and v under grouped-query attention).
    pub fn kv(m: &ModelConfig) -> (usize, usize) {
        (m.hidden, m.kv_width())
    }
}

/// A linear site of a block: its name and its `(in, out)` widths.
pub struct SiteDef {
    pub group: &'static str,
    pub name: &'static str,
    pub dims: fn(&ModelConfig) -> (usize, usize),
}

impl SiteDef {
    /// An attention projection, hidden → hidden.
    pub(crate) const fn attn(name: &'static str) -> SiteDef {
        SiteDef {
            group: "attn",
            name,
            dims: dims::square,
        }
    }

    /// A key or value projection, hidden → kv_heads · head width.
    pub(crate) const fn attn_kv(name: &'static str) -> SiteDef {
        SiteDef {
            group: "attn",
            name,
            dims: dims::kv,
        }
    }

    /// An MLP linear with the given widths.
    pub(crate) const fn mlp(
        name: &'static str,
        dims: fn(&ModelConfig) -> (usize, usize),
    ) -> SiteDef {
        SiteDef {
            group: "mlp",
            name,
            dims,
        }
    }
}

/// A family, declared once in its own file.
pub struct FamilyDef {
    pub name: &'static str,
    pub keys: &'static [KeySpec],
    pub sites: &'static [SiteDef],
    pub fixed_parts: &'static [&'static str],
    pub input: Input,
    pub init: InitScheme,
    /// Whether the block linears carry a bias.
    pub linear_bias: bool,
    /// The model's sizes from the spec's keys, or what is wrong with them.
    pub config: fn(&Sizes) -> Result<ModelConfig, SizeError>,
    /// The IR template: the stem (returns its output), one block, the head.
    pub stem: fn(&mut Builder) -> NodeIndex,
    pub block: fn(&mut Builder, NodeIndex, usize) -> NodeIndex,
    pub head: fn(&mut Builder, NodeIndex),
}

#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub name: &'static str,
    pub kind: KeyKind,
    pub default: KeyDefault,
}

/// What values a model key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A whole number from 1 to 2^24: a width, a count.
    Size,
    /// `true` or `false`, held as 1 or 0.
    Flag,
    /// A positive real number: an epsilon, a frequency base.
    Real,
}

/// What a key is when the spec does not set it.
#[derive(Debug, Clone, Copy)]
pub enum KeyDefault {
    Required,
    Int(i64),
    Real(f64),
    /// The value of another key of the model (`kv_heads` defaults to `heads`).
    SameAs(&'static str),
}

impl KeySpec {
    pub const fn required(name: &'static str) -> Self {
        KeySpec {
            name,
            kind: KeyKind::Size,
            default: KeyDefault::Required,
        }
    }
    pub const fn optional(name: &'static str, default: i64) -> Self {
        KeySpec {
            name,
            kind: KeyKind::Size,
            default: KeyDefault::Int(default),
        }
    }
    /// A size that is another key's value unless set.
    pub const fn same_as(name: &'static str, other: &'static str) -> Self {
        KeySpec {
            name,
            kind: KeyKind::Size,
            default: KeyDefault::SameAs(other),
        }
    }
    /// A positive real number with a default.
    pub const fn real(name: &'static str, default: f64) -> Self {
        KeySpec {
            name,
            kind: KeyKind::Real,
            default: KeyDefault::Real(default),
        }
    }
    /// A yes/no key, off unless set.
    pub const fn flag(name: &'static str) -> Self {
        KeySpec {
            name,
            kind: KeyKind::Flag,
            default: KeyDefault::Int(0),
        }
    }
}

/// The values of a model's keys (flags as 0 or 1), every key present.
pub struct Sizes<'a> {
    pub name: &'a str,
    pub family: Family,
    pub values: std::collections::BTreeMap<&'static str, usize>,
    /// The values of the family's real-valued keys.
    pub reals: std::collections::BTreeMap<&'static str, f64>,
}

impl Sizes<'_> {
    pub fn get(&self, key: &str) -> usize {
        self.values.get(key).copied().unwrap_or(0)
    }

    pub fn real(&self, key: &str) -> f64 {
        self.reals.get(key).copied().unwrap_or(0.0)
    }
}

/// A size that does not fit the family: the key to point at, and what to say.
#[derive(Debug)]
pub struct SizeError {
    pub key: &'static str,
    pub message: String,
    pub label: &'static str,
    pub hint: &'static str,
}

/// The sizes of a model, resolved.
#[derive(Debug, Clone, Serialize)]
pub struct ModelConfig {
    pub name: String,
    pub family: Family,
    pub hidden: usize,
    pub heads: usize,
    /// Heads of keys and values: `heads` unless grouped-query attention shares each k/v head
    /// among `heads / kv_heads` query heads.
    pub kv_heads: usize,
    pub layers: usize,
    /// Language models: the vocabulary; vit: 0.
    pub vocab: usize,
    /// The MLP's inner width (llama: SwiGLU; vit: `mlp`).
    pub ffn: usize,
    /// Language models: the sequence length; vit: patches + cls token.
    pub tokens: usize,
    pub image: usize,
    pub patch: usize,
    pub channels: usize,
    pub classes: usize,
    pub mlp_norm: bool,
    /// llama: the LM head is the token embedding (no parameters of its own).
    pub tie_embeddings: bool,
    /// llama: RoPE's frequency base θ (frequencies θ^(−2i/d)).
    pub rope_theta: f64,
    /// The epsilon of the family's block and final norms.
    pub norm_eps: f64,
}

impl ModelConfig {
    /// A language model's config: the sizes every decoder family has.
    fn language(s: &Sizes) -> ModelConfig {
        ModelConfig {
            name: s.name.to_string(),
            family: s.family,
            hidden: s.get("hidden"),
            heads: s.get("heads"),
            kv_heads: s.get("heads"),
            layers: s.get("layers"),
            vocab: s.get("vocab"),
            ffn: s.get("ffn"),
            tokens: s.get("seq"),
            image: 0,
            patch: 0,
            channels: 0,
            classes: 0,
            mlp_norm: false,
            tie_embeddings: false,
            rope_theta: 0.0,
            norm_eps: 0.0,
        }
    }

    /// The width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// The width of the keys (and of the values): `kv_heads` heads.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim()
    }

    pub fn def(&self) -> &'static FamilyDef {
        self.family.def()
    }

    /// `(in, out)` of a site, by its place in the family's site table.
    pub fn site_dims(&self, local: usize) -> (usize, usize) {
        (self.def().sites[local].dims)(self)
    }

    /// Whether the family puts a bias on its block linears.
    pub fn linear_bias(&self) -> bool {
        self.def().linear_bias
    }

    pub fn sites_per_block(&self) -> usize {
        self.def().sites.len()
    }

    /// The one place a site's position in a model-wide list is computed.
    pub fn site_index(&self, s: crate::ir::SiteRef) -> usize {
        s.block * self.sites_per_block() + s.local
    }

    /// Every site of the model, block by block, in the order of `site_index`.
    pub fn site_refs(&self) -> impl Iterator<Item = crate::ir::SiteRef> + '_ {
        (0..self.layers).flat_map(move |block| {
            (0..self.sites_per_block()).map(move |local| crate::ir::SiteRef { block, local })
        })
    }

    /// The place of site `group.name` in a block.
    pub fn local_site(&self, qualified: &str) -> usize {
        let (group, name) = qualified.split_once('.').unwrap_or((qualified, ""));
        self.def()
            .sites
            .iter()
            .position(|s| s.group == group && s.name == name)
            .unwrap_or_else(|| panic!("{} has no site {qualified}", self.family.name()))
    }

    pub fn patches(&self) -> usize {
        (self.image / self.patch.max(1)).pow(2)
    }
}

/// The end of a block's attention or MLP half, shared by every family: the run's dropout on
/// the half's output (`HALF_dropout`), then the residual add (`residual_HALF`).
pub(crate) fn residual(
    b: &mut Builder,
    skip: NodeIndex,
    branch: NodeIndex,
    block: usize,
    half: &str,
) -> NodeIndex {
    let branch = b.block_dropout(branch, block, &format!("{half}_dropout"));
    residual_add(b, skip, branch, block, half)
}

/// The residual add that ends a block's half (`residual_HALF`), without dropout.
fn residual_add(
    b: &mut Builder,
    skip: NodeIndex,
    branch: NodeIndex,
    block: usize,
    half: &str,
) -> NodeIndex {
    let width = b.model().hidden;
    let add = crate::ir::Op::Add { width };
    b.block_join(&[skip, branch], block, &format!("residual_{half}"), add)
}

/// The attention half of a pre-norm block, shared by every family: norm, the q, k, v sites,
/// RoPE where the family uses it, attention, the o site, dropout where the family's reference
/// has it, and the residual add.
pub(crate) struct AttentionHalf {
    pub norm: &'static str,
    pub norm_op: fn(&ModelConfig, usize) -> crate::ir::Op,
    pub rope: bool,
    pub causal: bool,
    /// Whether the run's `dropout` acts on the half's output.
    pub dropout: bool,
}

impl AttentionHalf {
    pub fn build(&self, b: &mut Builder, x: NodeIndex, block: usize) -> NodeIndex {
        use crate::ir::Op;
        let m = b.model().clone();
        let h = m.hidden;
        let n1 = b.block_op(x, block, self.norm, (self.norm_op)(&m, h));
        let mut q = b.site(n1, block, "attn.q");
        let mut k = b.site(n1, block, "attn.k");
        let v = b.site(n1, block, "attn.v");
        if self.rope {
            let rope = |width, heads| Op::Rope {
                width,
                heads,
                theta: m.rope_theta,
            };
            q = b.block_op(q, block, "rope_q", rope(h, m.heads));
            k = b.block_op(k, block, "rope_k", rope(m.kv_width(), m.kv_heads));
        }
        let attention = Op::Attention {
            heads: m.heads,
            kv_heads: m.kv_heads,
            head_dim: m.head_dim(),
            tokens: m.tokens,
            causal: self.causal,
        };
        let att = b.block_join(&[q, k, v], block, "attention", attention);
        let o = b.site(att, block, "attn.o");
        if self.dropout {
            residual(b, x, o, block, "attn")
        } else {
            residual_add(b, x, o, block, "attn")
        }
    }
}
