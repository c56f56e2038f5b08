//! The report: parameters, memory and FLOPs, a pure function of the checked IR. It is the single
//! source of every cost number laxc prints; the conventions are in docs/conventions.md.

mod json;
mod table;

pub use json::{render_json, to_json};
pub use table::{render_comparison, render_table, thousands};

use crate::family::Family;
use crate::ir::Factorization;
use crate::ir::{Gate, Ir, Op, Scope};
use crate::spec::RuleMatch;
use serde::Serialize;

/// Bumped whenever a field of the JSON report changes meaning or disappears; README.md lists
/// what each version changed.
pub const SCHEMA_VERSION: u32 = 2;

pub const CONVENTIONS: &[&str] = &[
    "params: every tensor counts (embeddings, biases, norms, LaX gates and norms, head); frozen = LoRA bases and, in a LoRA spec, everything but adapters and LaX",
    "memory: bf16 = 8 B per trainable param (weight, grad, 2 Adam moments; the LaX/CoLA/GaLore tables' convention) + 2 B per frozen; fp32 = 16 B + 4 B; GiB = 2^30 B; activations apart: per sample, 4 B for every value of every op's output kept for the backward pass, attention scores and probabilities included (an estimate: laxc's one-node ops keep less, the backend's allocator more; a CPU training step's measured peak is 0.91–1.07× the training state plus this on the LLaMA bench specs, 0.95× on a LLaMA-60M, plus the process's own 45–65 MiB on the tiny ViTs)",
    "FLOPs: a GEMM (M×K)(K×N) is 2MKN; attention QKᵀ+AV is 4·n²·hidden per block, not halved for causal masks; train = 3× forward GEMM (2× for frozen layers); norms, activations, softmax and LaX adds are counted apart as `other`",
];

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub model: ModelSummary,
    pub sites: Vec<SiteRow>,
    pub pathways: Vec<PathwayRow>,
    pub params: Params,
    pub memory: Memory,
    pub data_parallel: DataParallel,
    pub flops: Flops,
    pub rules: Vec<RuleMatch>,
    pub conventions: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub family: Family,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    /// Heads of keys and values (fewer than `heads` under grouped-query attention).
    pub kv_heads: usize,
    pub tokens_per_sample: usize,
    pub fine_tuning: bool,
    pub linear_sites: usize,
    pub factorized_sites: usize,
    /// Every size of the model that its family has (vocab and ffn for language models; image,
    /// patch, channels, classes, ffn and mlp_norm for vit), for tools that rebuild it.
    pub config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SiteRow {
    pub site: String,
    pub block: usize,
    pub name: String,
    pub kind: String,
    #[serde(rename = "in")]
    pub inp: usize,
    pub out: usize,
    /// For people: `r`, `r (α a)`, or the TT modes and ranks; empty for dense. JSON has the
    /// numbers in `factorization` instead.
    #[serde(skip)]
    pub rank: String,
    /// The factorization with all its arguments.
    pub factorization: Factorization,
    pub params: u128,
    pub trainable: u128,
    pub flops_forward_per_token: u128,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathwayRow {
    pub kind: &'static str,
    pub source: String,
    pub target: String,
    pub gate: String,
    pub norm: String,
    pub src_width: usize,
    pub dst_width: usize,
    pub params: u128,
    pub flops_forward_per_token: u128,
}

#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub total: u128,
    pub trainable: u128,
    pub frozen: u128,
    pub embeddings: u128,
    pub linear_sites: u128,
    pub norms: u128,
    pub lax: u128,
    pub head: u128,
    /// The same model with every site dense and no LaX.
    pub dense_reference: u128,
    pub ratio_to_dense: f64,
    /// Trainable parameters over all of them (PEFT's `trainable%`, as a fraction).
    pub trainable_share: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub train_bytes_bf16: u128,
    pub train_bytes_fp32: u128,
    pub train_gib_bf16: f64,
    pub train_gib_fp32: f64,
    pub weights_bytes_bf16: u128,
    /// fp32 activations one sample keeps for the backward pass (an estimate: docs/conventions.md).
    pub activation_bytes_per_sample_fp32: u128,
    /// The same for the spec's `batch` (one micro-batch), where the train section sets it.
    pub activation_bytes_per_batch_fp32: Option<u128>,
}

/// What data-parallel training costs (`laxc train --device cpu,cpu`, `--nodes`): every replica
/// holds the whole training state and sums its gradients with the others' every step.
#[derive(Debug, Clone, Serialize)]
pub struct DataParallel {
    /// fp32 gradients of the trainable parameters: the tensor all-reduced every step.
    pub gradient_bytes_per_step: u128,
    /// For 2, 4 and 8 replicas.
    pub replicas: Vec<ReplicaCost>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplicaCost {
    pub replicas: u128,
    /// Bytes each replica sends a step in a ring all-reduce (and receives as many):
    /// 2 (N − 1) / N of the gradients.
    pub ring_bytes_sent_per_replica: u128,
    /// Rows of the spec's batch each replica computes (the larger share where it does not
    /// divide), where the train section sets `batch` and it is at least N.
    pub batch_per_replica: Option<u128>,
    /// fp32 weights, gradients and Adam state, and the activations of that share of the batch.
    pub train_bytes_fp32_per_replica: Option<u128>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Flops {
    pub tokens_per_sample: usize,
    /// GEMM FLOPs per token, rounded to the nearest whole FLOP (exact where the sample's
    /// FLOPs divide evenly, as they do for language models).
    pub forward_per_token: u128,
    pub forward_per_sample: u128,
    pub train_per_sample: u128,
    pub other_forward_per_sample: u128,
    /// Part of `forward_per_sample`: QKᵀ and AV.
    pub attention_per_sample: u128,
    /// Part of `forward_per_sample`: the LaX gates' GEMMs.
    pub lax_gemm_per_sample: u128,
    /// Part of `other_forward_per_sample`: LaX adds and pathway norms.
    pub lax_other_per_sample: u128,
    /// From the train section: samples per step = batch × accum.
    pub samples_per_step: Option<u128>,
    pub train_per_step: Option<u128>,
}

/// Per-sample forward GEMM, training GEMM and other FLOPs of one node.
fn node_flops(ir: &Ir, i: petgraph::graph::NodeIndex) -> (u128, u128, u128) {
    let node = &ir.graph[i];
    let tokens = node.tokens_per_sample(ir.tokens_per_sample());
    let fwd = node.op.gemm_flops() * tokens;
    // Frozen weights need no weight gradient: forward + input gradient only.
    let mult = if node.frozen && node.op.params() > 0 {
        2
    } else {
        3
    };
    (fwd, fwd * mult, node.op.other_flops() * tokens)
}

/// fp32 values one sample keeps for the backward pass: every node's, over its tokens.
fn kept_per_sample(ir: &Ir) -> u128 {
    let n = ir.tokens_per_sample();
    ir.graph
        .node_weights()
        .map(|node| node.op.kept_per_token() * node.tokens_per_sample(n))
        .sum()
}

/// What the report takes besides the IR: figures of the spec that are not part of the graph.
pub struct ReportContext<'a> {
    /// Parameters of the dense model of the same sizes.
    pub dense_reference: u128,
    /// What each rule of the spec matched.
    pub rules: &'a [RuleMatch],
    /// Samples per optimizer step (batch × accum), where the spec's train section sets `batch`.
    pub samples_per_step: Option<u128>,
    /// Samples per micro-batch, where the spec's train section sets `batch`.
    pub batch: Option<u128>,
}

pub fn report(ir: &Ir, ctx: &ReportContext) -> Report {
    let n = ir.tokens_per_sample();
    let Tally {
        mut params,
        mut flops,
        sites,
        pathways,
    } = tally(ir, ctx.dense_reference);
    params.ratio_to_dense = params.total as f64 / params.dense_reference.max(1) as f64;
    params.trainable_share = params.trainable as f64 / params.total.max(1) as f64;
    let n128 = n.max(1) as u128;
    flops.forward_per_token = (flops.forward_per_sample + n128 / 2) / n128;
    if let Some(samples) = ctx.samples_per_step {
        flops.samples_per_step = Some(samples);
        flops.train_per_step = Some(flops.train_per_sample * samples);
    }
    let (p, frozen) = (params.trainable, params.frozen);
    let memory = Memory {
        train_bytes_bf16: 8 * p + 2 * frozen,
        train_bytes_fp32: 16 * p + 4 * frozen,
        train_gib_bf16: (8 * p + 2 * frozen) as f64 / GIB,
        train_gib_fp32: (16 * p + 4 * frozen) as f64 / GIB,
        weights_bytes_bf16: 2 * params.total,
        activation_bytes_per_batch_fp32: ctx.batch.map(|b| b * 4 * kept_per_sample(ir)),
        activation_bytes_per_sample_fp32: 4 * kept_per_sample(ir),
    };
    let data_parallel = data_parallel(&params, &memory, ctx.batch);
    Report {
        schema_version: SCHEMA_VERSION,
        model: model_summary(ir),
        sites: site_rows(ir, &sites),
        pathways: pathway_rows(ir, &pathways),
        params,
        memory,
        data_parallel,
        flops,
        rules: ctx.rules.to_vec(),
        conventions: CONVENTIONS.iter().map(|s| s.to_string()).collect(),
    }
}

/// Gradient traffic and per-replica memory for 2, 4 and 8 replicas.
fn data_parallel(params: &Params, memory: &Memory, batch: Option<u128>) -> DataParallel {
    let gradients = 4 * params.trainable;
    let replicas = [2u128, 4, 8]
        .into_iter()
        .map(|n| {
            let share = batch.filter(|b| *b >= n).map(|b| b.div_ceil(n));
            ReplicaCost {
                replicas: n,
                // 2 (N − 1) / N × 4 B × trainable, exact for N dividing 8.
                ring_bytes_sent_per_replica: 8 * params.trainable * (n - 1) / n,
                batch_per_replica: share,
                train_bytes_fp32_per_replica: share.map(|rows| {
                    memory.train_bytes_fp32 + rows * memory.activation_bytes_per_sample_fp32
                }),
            }
        })
        .collect();
    DataParallel {
        gradient_bytes_per_step: gradients,
        replicas,
    }
}

/// The sums over nodes: parameters and FLOPs of the whole model, and per site (params,
/// trainable, forward GEMM FLOPs per token) and per pathway (params, GEMM FLOPs per token).
struct Tally {
    params: Params,
    flops: Flops,
    sites: Vec<(u128, u128, u128)>,
    pathways: Vec<(u128, u128)>,
}

fn tally(ir: &Ir, dense_reference: u128) -> Tally {
    let n = ir.tokens_per_sample();
    let mut p = Params {
        total: 0,
        trainable: 0,
        frozen: 0,
        embeddings: 0,
        linear_sites: 0,
        norms: 0,
        lax: 0,
        head: 0,
        dense_reference,
        ratio_to_dense: 0.0,
        trainable_share: 0.0,
    };
    let mut f = Flops {
        tokens_per_sample: n,
        forward_per_token: 0,
        forward_per_sample: 0,
        train_per_sample: 0,
        other_forward_per_sample: 0,
        attention_per_sample: 0,
        lax_gemm_per_sample: 0,
        lax_other_per_sample: 0,
        samples_per_step: None,
        train_per_step: None,
    };
    let mut site_params = vec![(0u128, 0u128, 0u128); ir.sites.len()];
    let mut path_params = vec![(0u128, 0u128); ir.pathways.len()];
    for i in ir.graph.node_indices() {
        let node = &ir.graph[i];
        let params = node.op.params();
        p.total += params;
        if node.frozen {
            p.frozen += params;
        } else {
            p.trainable += params;
        }
        let (fwd, train, other) = node_flops(ir, i);
        f.forward_per_sample += fwd;
        f.train_per_sample += train;
        f.other_forward_per_sample += other;
        match node.scope {
            Scope::Site { site } => {
                let row = &mut site_params[ir.model.site_index(site)];
                row.0 += params;
                if !node.frozen {
                    row.1 += params;
                }
                row.2 += node.op.gemm_flops();
                p.linear_sites += params;
                if matches!(node.op, Op::LaxAdd { .. }) {
                    f.lax_other_per_sample += other;
                }
            }
            Scope::Pathway { pathway } => {
                path_params[pathway].0 += params;
                path_params[pathway].1 += node.op.gemm_flops();
                p.lax += params;
                f.lax_gemm_per_sample += fwd;
                f.lax_other_per_sample += other;
            }
            Scope::Stem | Scope::Block { .. } => match node.op {
                Op::Norm { .. } => p.norms += params,
                Op::Linear { .. } => p.head += params,
                Op::Attention { .. } => f.attention_per_sample += fwd,
                _ => p.embeddings += params,
            },
        }
    }
    Tally {
        params: p,
        flops: f,
        sites: site_params,
        pathways: path_params,
    }
}

fn model_summary(ir: &Ir) -> ModelSummary {
    ModelSummary {
        name: ir.model.name.clone(),
        family: ir.model.family,
        layers: ir.model.layers,
        hidden: ir.model.hidden,
        heads: ir.model.heads,
        kv_heads: ir.model.kv_heads,
        tokens_per_sample: ir.tokens_per_sample(),
        fine_tuning: ir.fine_tuning,
        linear_sites: ir.sites.len(),
        factorized_sites: ir
            .sites
            .iter()
            .filter(|s| s.fact != Factorization::Dense)
            .count(),
        config: config_json(&ir.model),
    }
}

/// The sizes the model's family has, by their names in the language.
fn config_json(m: &crate::family::ModelConfig) -> serde_json::Map<String, serde_json::Value> {
    let mut c = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        c.insert(k.to_string(), v);
    };
    put("name", m.name.clone().into());
    put("family", m.family.name().into());
    for (k, v) in [
        ("hidden", m.hidden),
        ("heads", m.heads),
        ("layers", m.layers),
        ("ffn", m.ffn),
        ("tokens", m.tokens),
    ] {
        put(k, v.into());
    }
    match m.family {
        Family::Vit => {
            for (k, v) in [
                ("image", m.image),
                ("patch", m.patch),
                ("channels", m.channels),
                ("classes", m.classes),
            ] {
                put(k, v.into());
            }
            put("mlp_norm", m.mlp_norm.into());
        }
        Family::Gpt2 => put("vocab", m.vocab.into()),
        Family::Llama => {
            put("vocab", m.vocab.into());
            put("kv_heads", m.kv_heads.into());
            put("tie_embeddings", m.tie_embeddings.into());
            put("rope_theta", m.rope_theta.into());
            put("norm_eps", m.norm_eps.into());
        }
    }
    c
}

fn site_rows(ir: &Ir, site_params: &[(u128, u128, u128)]) -> Vec<SiteRow> {
    ir.sites
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (g, nm) = ir.model.family.site_name(s.site.local);
            SiteRow {
                site: s.name.clone(),
                block: s.site.block,
                name: format!("{g}.{nm}"),
                kind: s.fact.kind_name().to_string(),
                inp: s.inp,
                out: s.out,
                rank: rank_text(&s.fact),
                factorization: s.fact.clone(),
                params: site_params[i].0,
                trainable: site_params[i].1,
                flops_forward_per_token: site_params[i].2,
            }
        })
        .collect()
}

/// The inter-layer pathways, then a row per intra-layer add.
fn pathway_rows(ir: &Ir, path_params: &[(u128, u128)]) -> Vec<PathwayRow> {
    let mut pathways: Vec<PathwayRow> = ir
        .pathways
        .iter()
        .enumerate()
        .map(|(i, pw)| PathwayRow {
            kind: "inter",
            source: ir.site(pw.source).name.clone(),
            target: ir.site(pw.target).name.clone(),
            gate: match &pw.gate {
                Gate::Tensor { input, output } => format!(
                    "tensor {}×{}→{}×{}",
                    input[0], input[1], output[0], output[1]
                ),
                g => g.kind_name().to_string(),
            },
            norm: pw.norm.name().to_string(),
            src_width: pw.src_width,
            dst_width: pw.dst_width,
            params: path_params[i].0,
            flops_forward_per_token: path_params[i].1,
        })
        .collect();
    for s in ir.sites.iter().filter(|s| s.intra) {
        if let Factorization::Tt { modes, ranks } = &s.fact {
            pathways.push(PathwayRow {
                kind: "intra",
                source: format!("{}.t1", s.name),
                target: format!("{}.t3", s.name),
                gate: "add".into(),
                norm: "none".into(),
                src_width: modes[1] * ranks[0],
                dst_width: modes[2] * ranks[2],
                params: 0,
                flops_forward_per_token: 0,
            });
        }
    }
    pathways
}

const GIB: f64 = (1u64 << 30) as f64;

pub(crate) fn rank_text(f: &Factorization) -> String {
    match f {
        Factorization::Dense => String::new(),
        Factorization::Svd { rank } | Factorization::Cola { rank, .. } => rank.to_string(),
        Factorization::Lora { rank, alpha, .. } => format!("{rank} (α {alpha})"),
        Factorization::Tt { modes, ranks } => format!(
            "{} | {}",
            modes.map(|m| m.to_string()).join("·"),
            ranks.map(|r| r.to_string()).join(",")
        ),
    }
}
