//! A resolved spec: every name evaluated, every selector expanded to concrete sites. This is the
//! input of the IR builder; it carries spans so later checks can point back into the file.

use crate::family::ModelConfig;
use crate::ir::{Factorization, NormKind, SiteRef};
use crate::source::Span;
use serde::Serialize;
use std::collections::BTreeMap;

/// The factorization chosen for a site, and the rule that chose it.
#[derive(Debug, Clone)]
pub struct SiteAssignment {
    pub fact: Factorization,
    /// Index of the `factorize` rule that won (None: dense by default).
    pub rule: Option<usize>,
    pub span: Span,
    /// Where the rank (or TT modes/ranks) was written, for errors about it.
    pub rank_span: Span,
    pub modes_span: Span,
}

/// A LaX gate as written; fold shapes are optional and checked against the latent widths.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum GateSpec {
    Identity,
    Linear,
    Tensor {
        input: Option<[usize; 2]>,
        output: Option<[usize; 2]>,
    },
    Dense {
        input: Option<usize>,
        output: Option<usize>,
    },
}

impl GateSpec {
    pub const NAMES: [&'static str; 4] = ["identity", "linear", "tensor", "dense"];
    pub fn kind_name(&self) -> &'static str {
        match self {
            GateSpec::Identity => "identity",
            GateSpec::Linear => "linear",
            GateSpec::Tensor { .. } => "tensor",
            GateSpec::Dense { .. } => "dense",
        }
    }
}

/// An inter-layer pathway: the latent of `source` is gated, added to the latent of `target`,
/// and normalized.
#[derive(Debug, Clone)]
pub struct InterPathway {
    pub source: SiteRef,
    pub target: SiteRef,
    pub gate: GateSpec,
    pub norm: NormKind,
    pub rule: usize,
    pub span: Span,
    pub gate_span: Span,
}

/// Intra-layer LaX inside one TT layer: t1 is added to t3.
#[derive(Debug, Clone)]
pub struct IntraPathway {
    pub site: SiteRef,
    pub rule: usize,
    pub span: Span,
}

/// What one rule of the spec matched, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct RuleMatch {
    pub line: usize,
    pub text: String,
    pub sites: usize,
    /// Sites on which this rule is the one that counts (not overridden by a later rule).
    pub effective: usize,
}

/// A checked `train { ... }` entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum TrainValue {
    Int(i64),
    Float(f64),
    Str(String),
    Choice {
        name: String,
        args: BTreeMap<String, TrainValue>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        positional: Vec<TrainValue>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct TrainSpec {
    pub entries: BTreeMap<String, (TrainValue, Span)>,
    pub span: Span,
}

/// The whole resolved spec.
#[derive(Debug, Clone)]
pub struct Spec {
    pub model: ModelConfig,
    pub model_span: Span,
    /// One per site, indexed by `block * sites_per_block + local`.
    pub sites: Vec<SiteAssignment>,
    pub inter: Vec<InterPathway>,
    pub intra: Vec<IntraPathway>,
    pub rules: Vec<RuleMatch>,
    pub train: Option<TrainSpec>,
}

impl Spec {
    pub fn site(&self, s: SiteRef) -> &SiteAssignment {
        &self.sites[self.model.site_index(s)]
    }

    pub fn site_name(&self, s: SiteRef) -> String {
        site_name(&self.model, s)
    }

    /// Samples per optimizer step (batch × accum), where the train section sets `batch`.
    pub fn samples_per_step(&self) -> Option<u128> {
        Some(self.batch()? * self.train_int("accum").unwrap_or(1).max(1))
    }

    /// Samples per forward pass (one micro-batch), where the train section sets `batch`.
    pub fn batch(&self) -> Option<u128> {
        self.train_int("batch")
    }

    fn train_int(&self, key: &str) -> Option<u128> {
        match self.train.as_ref()?.entries.get(key) {
            Some((TrainValue::Int(v), _)) => Some(*v as u128),
            _ => None,
        }
    }
}

pub fn site_name(model: &ModelConfig, s: SiteRef) -> String {
    let (group, name) = model.family.site_name(s.local);
    format!("blocks[{}].{group}.{name}", s.block)
}
