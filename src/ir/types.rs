//! The compiler's own vocabulary of layers: a site's place, how a linear layer is
//! parameterized, activations and norms. The front end resolves specs into these; every later
//! stage reads them from the IR.

use serde::Serialize;

/// A linear site: block index and index into the family's site list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SiteRef {
    pub block: usize,
    pub local: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    Silu,
    Gelu,
    /// GELU's tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    Relu,
    Tanh,
    Sigmoid,
}

impl Activation {
    pub const NAMES: [&'static str; 6] = ["silu", "gelu", "gelu_tanh", "relu", "tanh", "sigmoid"];
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "silu" => Activation::Silu,
            "gelu" => Activation::Gelu,
            "gelu_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Activation::Silu => "silu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_tanh",
            Activation::Relu => "relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        }
    }
}

/// How one linear layer is parameterized.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Factorization {
    Dense,
    Svd {
        rank: usize,
    },
    Cola {
        rank: usize,
        act: Activation,
    },
    Tt {
        modes: [usize; 4],
        ranks: [usize; 3],
    },
    Lora {
        rank: usize,
        alpha: f64,
        dropout: f64,
        base: Option<String>,
    },
}

impl Factorization {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Factorization::Dense => "dense",
            Factorization::Svd { .. } => "svd",
            Factorization::Cola { .. } => "cola",
            Factorization::Tt { .. } => "tt",
            Factorization::Lora { .. } => "lora",
        }
    }

    /// The width of the latent a LaX pathway carries (None for dense layers).
    pub fn latent_width(&self) -> Option<usize> {
        match self {
            Factorization::Dense => None,
            Factorization::Svd { rank }
            | Factorization::Cola { rank, .. }
            | Factorization::Lora { rank, .. } => Some(*rank),
            Factorization::Tt { ranks, .. } => Some(ranks[1]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    Layernorm,
    Rmsnorm,
    None,
}

impl NormKind {
    pub const NAMES: [&'static str; 3] = ["layernorm", "rmsnorm", "none"];
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "layernorm" => NormKind::Layernorm,
            "rmsnorm" => NormKind::Rmsnorm,
            "none" => NormKind::None,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            NormKind::Layernorm => "layernorm",
            NormKind::Rmsnorm => "rmsnorm",
            NormKind::None => "none",
        }
    }
}
