//! The training loop: data → micro-batches → loss → gradients (accumulated, globally clipped)
//! → AdamW, with a progress bar, validation, JSONL metrics, checkpoints, resume, a checkpoint on
//! Ctrl-C and a clean stop on a NaN loss.

use super::checkpoint;
use super::data::{self, Data, ImageData};
use super::optimizer::{AdamW, GradientScale};
use super::parallel::{self, GradientSync, Replica, Topology};
use crate::family::Input;
use crate::lower::precision::compute_dtype;
use crate::lower::{lower, LaxModel};
use crate::options::{Schedule, TrainOptions};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Set by the Ctrl-C handler; the loop checkpoints and stops at the next step.
pub static STOP: AtomicBool = AtomicBool::new(false);

pub struct RunPlan<'a> {
    pub compiled: &'a crate::Compiled,
    pub spec_dir: PathBuf,
    pub options: TrainOptions,
    pub out: PathBuf,
    /// Where a resumed run goes on from; None for a new run.
    pub resume: Option<Resumed>,
    /// Print a line per log step instead of drawing a bar (tests, pipes).
    pub plain: bool,
    /// The replicas this run trains with, on this node and others.
    pub topology: Topology,
}

/// What a resume goes on from.
pub struct Resumed {
    /// The options the run started with: its schedule keeps their length, whatever `steps`
    /// the resume sets.
    pub first: TrainOptions,
    /// The checkpoint to load, found (and verified) once before the resume records anything.
    pub checkpoint: PathBuf,
}

/// Why a resume ending at step `end` cannot go on from step `at`.
pub fn already_there(at: u64, end: u64) -> String {
    format!(
        "the run is at step {at} already and this resume ends at step {end}; go on with --set \
         steps=N (N > {at})"
    )
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub steps: u64,
    pub final_loss: f64,
    pub val_loss: Option<f64>,
    pub val_perplexity: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub seconds: f64,
    pub items_per_second: f64,
    pub unit: &'static str,
    pub params: u128,
    /// Why the run ended before its last step, if it did.
    pub stopped: Option<Stop>,
    pub run_dir: PathBuf,
}

/// Why a run ended early.
#[derive(Debug, Clone, PartialEq)]
pub enum Stop {
    /// Ctrl-C, SIGTERM or SIGHUP: a checkpoint of the last finished step was written.
    Interrupted,
    /// At step `step` (1-based, as in the logs) `what` (the loss or the gradient norm) was NaN
    /// or infinite, or the update made the weights so; that update was not kept, and the
    /// latest checkpoint is the last one written before it.
    Diverged {
        step: u64,
        what: &'static str,
        value: f64,
    },
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Interrupted => f.write_str("interrupted (Ctrl-C or SIGTERM)"),
            Stop::Diverged { step, what, value } => {
                // The weights are checked as a whole: NaN stands for "some not finite".
                let became = if value.is_nan() && *what == "weights" {
                    "non-finite".to_string()
                } else {
                    value.to_string()
                };
                write!(
                    f,
                    "the {what} became {became} at step {step}; stopped (lower `lr` or raise \
                     `warmup`)"
                )
            }
        }
    }
}

/// In summary.json a stop is its sentence, as people read it.
impl serde::Serialize for Stop {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Mean cross-entropy: log-sum-exp with the max subtracted, one autodiff node in training
/// (`fused::cross_entropy`).
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    token_losses(logits, targets).mean()
}

/// Each row's cross-entropy, `(rows, 1)`.
fn token_losses<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 2> {
    crate::lower::fused::cross_entropy(logits, targets)
}

/// Cross-entropy over the rows whose target is not [`IGNORED`] (a prompt or padding position).
pub fn masked_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let (losses, scored) = scored_losses(logits, targets);
    losses.sum() / scored.sum().clamp_min(1.0)
}

/// Each row's cross-entropy where its target is scored and 0 where it is [`IGNORED`], and
/// which rows are scored (1) or not (0).
fn scored_losses<B: Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let scored = targets.clone().greater_equal_elem(0).float();
    let losses = token_losses(logits, targets.clamp_min(0)).reshape([scored.dims()[0]]);
    (losses * scored.clone(), scored)
}

/// The target of a position that is not scored.
pub const IGNORED: i64 = -1;

/// Learning rate at `step`: linear warm-up, then constant, cosine or linear decay to `min_lr`.
pub fn learning_rate(o: &TrainOptions, step: u64, total: u64) -> f64 {
    if step < o.warmup {
        return o.lr * (step + 1) as f64 / o.warmup as f64;
    }
    let span = total.saturating_sub(o.warmup).max(1) as f64;
    let t = ((step - o.warmup) as f64 / span).min(1.0);
    match o.schedule {
        Schedule::Constant => o.lr,
        Schedule::Cosine => {
            o.min_lr + 0.5 * (o.lr - o.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
        }
        Schedule::Linear => o.lr + (o.min_lr - o.lr) * t,
    }
}

/// Sum of squares of every gradient: the global norm, as `torch.nn.utils.clip_grad_norm_`.
/// Each gradient's sum in its own precision, added in f64 in the parameters' order; the
/// gradients are gathered first, so that a GPU computes and reads all the sums at once
/// (`fused::sums_of_squares`).
struct GradNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    gathered: Vec<FloatTensor<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.gathered.push(g.into_primitive().tensor());
        }
    }
}

impl<B: AutodiffBackend> GradNorm<'_, B> {
    fn total(self) -> f64 {
        let sums = crate::lower::fused::sums_of_squares::<B::InnerBackend>(self.gathered);
        sums.into_iter().sum()
    }
}

use burn::tensor::ElementConversion;

/// Whether every weight is a finite number.
struct AllFinite(bool);

impl<B: Backend> ModuleVisitor<B> for AllFinite {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.0 {
            let finite = param.val().is_finite().all().into_data();
            self.0 = finite.iter::<bool>().all(|b| b);
        }
    }
}

fn all_finite<B: Backend>(model: &LaxModel<B>) -> bool {
    let mut v = AllFinite(true);
    model.visit(&mut v);
    v.0
}

/// Clips gradients to a global norm `max` (0: off): sets the factor the optimizer's next step
/// multiplies them by (`scale`, 1 where the norm is within `max`), and returns the norm before
/// clipping. The optimizer applies it as it reads each gradient, where a pass of its own here
/// read and wrote every gradient once more (BENCHMARKS.md, attempt 58).
pub(super) fn clip_global<B: AutodiffBackend>(
    model: &LaxModel<B>,
    grads: &GradientsParams,
    max: f64,
    scale: &GradientScale,
) -> f64 {
    let mut n = GradNorm::<B> {
        grads,
        gathered: Vec::new(),
    };
    model.visit(&mut n);
    let norm = n.total().sqrt();
    let clips = max > 0.0 && norm > max;
    scale.set(if clips { max / (norm + 1e-6) } else { 1.0 });
    norm
}

/// One batch of whichever kind the model takes.
pub(super) enum Batch<B: Backend> {
    Tokens {
        input: Tensor<B, 2, Int>,
        target: Tensor<B, 1, Int>,
        count: usize,
        /// Whether some targets are [`IGNORED`] (prompt-response examples).
        masked: bool,
    },
    Images {
        x: Tensor<B, 4>,
        y: Tensor<B, 1, Int>,
        count: usize,
    },
}

impl<B: Backend> Batch<B> {
    fn count(&self) -> usize {
        match self {
            Batch::Tokens { count, .. } | Batch::Images { count, .. } => *count,
        }
    }
}

pub(super) fn token_batch<B: Backend>(
    flat: Vec<i64>,
    batch: usize,
    seq: usize,
    device: &B::Device,
) -> Batch<B> {
    let mut input = Vec::with_capacity(batch * seq);
    let mut target = Vec::with_capacity(batch * seq);
    for row in flat.chunks_exact(seq + 1) {
        input.extend_from_slice(&row[..seq]);
        target.extend_from_slice(&row[1..]);
    }
    Batch::Tokens {
        input: Tensor::from_data(TensorData::new(input, [batch, seq]), device),
        target: Tensor::from_data(TensorData::new(target, [batch * seq]), device),
        count: batch * seq,
        masked: false,
    }
}

/// Examples as rows of `seq` positions: each one's tokens from the left, padding after; the
/// target of a position is the next token where that token is part of the response, else
/// [`IGNORED`]. `count` is the number of scored positions.
pub(super) fn example_batch<B: Backend>(
    examples: &[&data::Example],
    seq: usize,
    device: &B::Device,
) -> Batch<B> {
    let rows = examples.len();
    let mut input = vec![0i64; rows * seq];
    let mut target = vec![IGNORED; rows * seq];
    for (r, e) in examples.iter().enumerate() {
        let n = e.tokens.len().min(seq + 1);
        for j in 0..n - 1 {
            input[r * seq + j] = e.tokens[j] as i64;
            if j + 1 >= e.response_from {
                target[r * seq + j] = e.tokens[j + 1] as i64;
            }
        }
    }
    let count = examples.iter().map(|e| scored_positions(e, seq)).sum();
    Batch::Tokens {
        input: Tensor::from_data(TensorData::new(input, [rows, seq]), device),
        target: Tensor::from_data(TensorData::new(target, [rows * seq]), device),
        count,
        masked: true,
    }
}

/// How many positions of an example's row are scored: those whose next token is part of the
/// response.
fn scored_positions(e: &data::Example, seq: usize) -> usize {
    let n = e.tokens.len().min(seq + 1);
    (0..n.saturating_sub(1))
        .filter(|j| j + 1 >= e.response_from)
        .count()
}

fn image_batch<B: Backend>(
    x: &[f32],
    y: &[u32],
    idx: &[usize],
    d: &ImageData,
    device: &B::Device,
) -> Batch<B> {
    let px = d.pixels();
    let mut xs = Vec::with_capacity(idx.len() * px);
    let mut ys = Vec::with_capacity(idx.len());
    for &i in idx {
        xs.extend_from_slice(&x[i * px..(i + 1) * px]);
        ys.push(y[i] as i64);
    }
    Batch::Images {
        x: Tensor::from_data(
            TensorData::new(xs, [idx.len(), d.channels, d.size, d.size]),
            device,
        ),
        y: Tensor::from_data(TensorData::new(ys, [idx.len()]), device),
        count: idx.len(),
    }
}

/// Loss and number of correct predictions (images only).
pub(super) fn forward<B: Backend>(
    model: &LaxModel<B>,
    batch: Batch<B>,
) -> (Tensor<B, 1>, Option<Tensor<B, 1, Int>>) {
    forward_over(model, batch, None)
}

/// As [`forward`], the loss summed over the batch's items and divided by `items` where given
/// (a replica's rows of a batch with that many items in all), else averaged over them: the
/// replicas' losses then add up to the whole batch's mean in the order a single process sums.
fn forward_over<B: Backend>(
    model: &LaxModel<B>,
    batch: Batch<B>,
    items: Option<usize>,
) -> (Tensor<B, 1>, Option<Tensor<B, 1, Int>>) {
    let reduce = |losses: Tensor<B, 2>| match items {
        Some(n) => losses.sum() / n.max(1) as f64,
        None => losses.mean(),
    };
    match batch {
        Batch::Tokens {
            input,
            target,
            masked,
            ..
        } => {
            let logits = model.forward_tokens(input);
            let [b, n, v] = logits.dims();
            let logits = logits.reshape([b * n, v]);
            let loss = match (masked, items) {
                (true, None) => masked_cross_entropy(logits, target),
                (true, Some(n)) => scored_losses(logits, target).0.sum() / n.max(1) as f64,
                (false, _) => reduce(token_losses(logits, target)),
            };
            (loss, None)
        }
        Batch::Images { x, y, .. } => {
            let logits = model.forward_images(x);
            let correct = logits
                .clone()
                .argmax(1)
                .reshape([y.dims()[0]])
                .equal(y.clone())
                .int()
                .sum();
            (reduce(token_losses(logits, y)), Some(correct))
        }
    }
}

/// AdamW with the run's betas, epsilon and weight decay (the learning rate comes per step),
/// its gradients multiplied by `clip`'s factor ([`clip_global`]).
pub(super) fn adamw<B: AutodiffBackend>(
    o: &TrainOptions,
    clip: &GradientScale,
) -> OptimizerAdaptor<AdamW, LaxModel<B>, B> {
    let adamw = AdamW::new(
        o.beta1 as f32,
        o.beta2 as f32,
        o.eps as f32,
        o.weight_decay as f32,
        clip.clone(),
    );
    OptimizerAdaptor::from(adamw)
}

/// Checks that the data fits the model before any compute is spent.
pub fn check_data(data: &Data, c: &crate::Compiled) -> Result<(), String> {
    let m = &c.ir.model;
    let family = m.family.name();
    match (data, m.def().input) {
        (Data::Tokens(t), Input::Tokens) => {
            if (t.vocab_used as usize) > m.vocab {
                return Err(format!(
                    "the data uses token ids up to {} ({}) but the model's vocab is {}",
                    t.vocab_used - 1,
                    t.tokenizer,
                    m.vocab
                ));
            }
            for (name, toks) in [("training", &t.train), ("validation", &t.valid)] {
                if toks.len() < m.tokens + 2 {
                    return Err(format!(
                        "the {name} data has {} tokens, fewer than one sequence of {} + 1",
                        toks.len(),
                        m.tokens
                    ));
                }
            }
            Ok(())
        }
        (Data::Examples(e), Input::Tokens) => check_examples(e, m),
        (Data::Images(d), Input::Images) => {
            if d.size != m.image || d.channels != m.channels || d.classes as usize > m.classes {
                return Err(format!(
                    "the images are {}×{}×{} with {} classes but the model takes {}×{}×{} with {}",
                    d.channels, d.size, d.size, d.classes, m.channels, m.image, m.image, m.classes
                ));
            }
            Ok(())
        }
        (Data::Tokens(_) | Data::Examples(_), Input::Images) => Err(format!(
            "a {family} model trains on images: use mnist(...) or cifar10(...)"
        )),
        (Data::Images(_), Input::Tokens) => Err(format!(
            "a {family} model trains on text: use text(...) or tokens(...)"
        )),
    }
}

/// Examples fit a language model: token ids within its vocabulary, each example within its
/// `seq` + 1 tokens (one row; nothing is cut), both sets non-empty.
fn check_examples(e: &data::ExampleData, m: &crate::family::ModelConfig) -> Result<(), String> {
    if (e.vocab_used as usize) > m.vocab {
        return Err(format!(
            "{}: the examples use token ids up to {} ({}) but the model's vocab is {}",
            e.file.display(),
            e.vocab_used - 1,
            e.tokenizer,
            m.vocab
        ));
    }
    if e.valid.is_empty() {
        return Err(format!(
            "{} has one example: give `valid = ...` or more examples (a tenth are held out)",
            e.file.display()
        ));
    }
    let longest = e
        .train
        .iter()
        .chain(&e.valid)
        .max_by_key(|x| x.tokens.len());
    if let Some(x) = longest.filter(|x| x.tokens.len() > m.tokens + 1) {
        return Err(format!(
            "{} line {}: the example is {} tokens, longer than the model's `seq` = {} (+ 1): \
             raise `seq` or shorten it (examples are never cut)",
            e.file.display(),
            x.line,
            x.tokens.len(),
            m.tokens
        ));
    }
    Ok(())
}

/// Validation: mean loss over the first `eval_batches` batches, and accuracy for images.
pub fn evaluate<B: Backend>(
    model: &LaxModel<B>,
    data: &Data,
    o: &TrainOptions,
    seq: usize,
    device: &B::Device,
    max_batches: usize,
) -> (f64, Option<f64>) {
    let mut loss_sum = 0.0;
    let mut weight = 0usize;
    let mut correct = 0i64;
    match data {
        Data::Tokens(t) => {
            for i in 0..max_batches {
                let Some(flat) = data::token_eval_batch(&t.valid, o.batch, seq, i) else {
                    break;
                };
                let (l, _) = forward(model, token_batch::<B>(flat, o.batch, seq, device));
                let l: f64 = l.into_scalar().elem();
                loss_sum += l * (o.batch * seq) as f64;
                weight += o.batch * seq;
            }
            if weight == 0 {
                // Validation text shorter than a batch: one window of it.
                let flat = data::token_eval_batch(&t.valid, 1, seq, 0).expect("checked length");
                let (l, _) = forward(model, token_batch::<B>(flat, 1, seq, device));
                return (l.into_scalar().elem(), None);
            }
            (loss_sum / weight as f64, None)
        }
        Data::Examples(e) => {
            let all: Vec<&data::Example> = e.valid.iter().collect();
            for chunk in all.chunks(o.batch).take(max_batches) {
                let batch = example_batch::<B>(chunk, seq, device);
                let scored = batch.count();
                let (l, _) = forward(model, batch);
                let l: f64 = l.into_scalar().elem();
                loss_sum += l * scored as f64;
                weight += scored;
            }
            (loss_sum / weight.max(1) as f64, None)
        }
        Data::Images(d) => {
            let n = d.test_y.len().min(max_batches * o.batch);
            let idx: Vec<usize> = (0..n).collect();
            for chunk in idx.chunks(o.batch) {
                let (l, c) = forward(
                    model,
                    image_batch::<B>(&d.test_x, &d.test_y, chunk, d, device),
                );
                let l: f64 = l.into_scalar().elem();
                loss_sum += l * chunk.len() as f64;
                weight += chunk.len();
                let c: i64 = c.expect("images count correct").into_scalar().elem();
                correct += c;
            }
            (
                loss_sum / weight.max(1) as f64,
                Some(correct as f64 / weight.max(1) as f64),
            )
        }
    }
}

/// The run's length in optimizer steps, from `steps` or from `epochs` over this data; the
/// warm-up must fit in it (with `epochs` that is known only now).
fn total_steps(o: &TrainOptions, data: &Data, seq: usize) -> Result<u64, String> {
    let per_step = (o.batch * o.accum) as u64;
    let total = match (o.steps, o.epochs, data) {
        (Some(s), _, _) => s,
        (None, Some(e), Data::Tokens(t)) => {
            e.saturating_mul(t.train.len() as u64) / per_step.saturating_mul(seq as u64)
        }
        (None, Some(e), Data::Images(d)) => e.saturating_mul(d.train_y.len() as u64) / per_step,
        (None, Some(e), Data::Examples(x)) => e.saturating_mul(x.train.len() as u64) / per_step,
        (None, None, _) => {
            return Err("set `steps` or `epochs` in the train section or with --set".into())
        }
    }
    .max(1);
    if o.warmup > total {
        return Err(format!(
            "`warmup` = {} is longer than the run ({total} steps); lower it with --set warmup=...",
            o.warmup
        ));
    }
    Ok(total)
}

/// Keeps the per-step dropout seeds apart from the per-sample window seeds.
const DROPOUT_STREAM: u64 = 0xD0_0000_0000_0000;

/// A seed for one step's batch from the run seed (splitmix64).
fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Drops the records of steps after `step` from a run's metrics: a run killed after its last
/// checkpoint logged steps that the resumed run logs again.
fn forget_metrics_after(path: &Path, step: u64) -> Result<(), String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let keep = |line: &&str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|r| r["step"].as_u64())
            .is_none_or(|s| s <= step)
    };
    let kept: Vec<&str> = text.lines().filter(keep).collect();
    if kept.len() == text.lines().count() {
        return Ok(());
    }
    let mut out = kept.join("\n");
    out.push('\n');
    crate::files::write_atomically(path, out.as_bytes())
        .map_err(|e| format!("cannot rewrite {}: {e}", path.display()))
}

fn append_jsonl(path: &Path, v: serde_json::Value) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{v}")
}

/// What every replica of a run trains on, loaded once.
struct Course {
    data: Data,
    /// The run's length in optimizer steps.
    total: u64,
    /// The length its learning-rate schedule was made for (a resumed run keeps its first).
    schedule_total: u64,
}

/// Trains the compiled spec on backend `B`, one replica per device (and per device of every
/// other node). Returns this node's first replica's summary, or a one-line error.
pub fn train<B: AutodiffBackend>(
    plan: &RunPlan,
    devices: Vec<B::Device>,
) -> Result<Summary, String> {
    let c = plan.compiled;
    let o = &plan.options;
    let seq = c.ir.model.tokens;
    let data_spec = o
        .data
        .as_ref()
        .ok_or("the spec has no `data` in its train section; add one or pass --set data=...")?;
    let data = data::load(data_spec, &plan.spec_dir)?;
    check_data(&data, c)?;
    let total = total_steps(o, &data, seq)?;
    // A resumed run keeps the schedule it started with, however long it now runs.
    let schedule_total = match &plan.resume {
        Some(resumed) => total_steps(&resumed.first, &data, seq)?,
        None => total,
    };
    let world = plan.topology.world();
    let samples = match &data {
        Data::Images(d) => d.train_y.len(),
        Data::Examples(e) => e.train.len(),
        Data::Tokens(_) => usize::MAX,
    };
    if samples.min(o.batch) < world {
        return Err(format!(
            "the training data has {samples} samples, fewer than the {world} replicas: each \
             replica needs one of every batch"
        ));
    }
    let course = Course {
        data,
        total,
        schedule_total,
    };
    parallel::replicate::<B, _>(&plan.topology, devices, |replica, device, sync| {
        train_replica::<B>(plan, &course, replica, device, sync)
    })
}

/// One replica's training loop. Every replica computes its slice of each batch and takes the
/// same step from the summed gradients; the first one also logs, validates and checkpoints.
fn train_replica<B: AutodiffBackend>(
    plan: &RunPlan,
    course: &Course,
    replica: Replica,
    device: B::Device,
    sync: &GradientSync,
) -> Result<Summary, String> {
    let o = &plan.options;
    let (data, total) = (&course.data, course.total);
    let seq = plan.compiled.ir.model.tokens;
    let clip = GradientScale::default();
    let (mut model, mut optim, start) = starting_point::<B>(plan, total, &device, replica, &clip)?;
    parallel::same_start(sync, &model, replica)?;
    let mut log = RunLog::new(plan, data, total, start, replica.leads());
    let mut sampler = Sampler::default();
    let mut step = start;
    let mut stopped = None;
    while step < total {
        let lr = learning_rate(o, step, course.schedule_total);
        // Dropout masks come from the backend's generator: seeded per step (and replica), a
        // resumed run draws the masks the uninterrupted run would have.
        B::seed(
            &device,
            mix(o.seed, DROPOUT_STREAM ^ step ^ replica.stream()),
        );
        let (loss, grads, items) =
            accumulate(&model, data, o, step, &mut sampler, &device, replica);
        let stop_asked = STOP.load(Ordering::SeqCst);
        let exchanging = Instant::now();
        let (grads, agreed) = sync.all_reduce(&model, grads, loss, stop_asked)?;
        log.exchanged(exchanging.elapsed().as_secs_f64(), replica.world > 1);
        log.items(items);
        let grad_norm = clip_global(&model, &grads, o.clip, &clip);
        // A step that would write NaN or infinity into the weights is not taken (by any
        // replica: they all see the same summed loss and gradients).
        if !agreed.loss.is_finite() || !grad_norm.is_finite() {
            stopped = Some(if agreed.loss.is_finite() {
                diverged(step + 1, "gradient norm", grad_norm)
            } else {
                diverged(step + 1, "loss", agreed.loss)
            });
            break;
        }
        model = optim.step(lr, model, grads);
        step += 1;
        log.step(step, agreed.loss, lr, grad_norm)?;
        let validates = (o.eval_every > 0 && step.is_multiple_of(o.eval_every)) || step == total;
        if validates && replica.leads() {
            let (vl, acc) = evaluate(&model.valid(), data, o, seq, &device, o.eval_batches);
            log.validation(step, vl, acc)?;
        }
        if o.checkpoint_every > 0 && step.is_multiple_of(o.checkpoint_every) && step < total {
            let losses = (step, agreed.loss, log.val_loss_at(step));
            stopped = checkpoint_unless_diverged(plan, losses, &model, &optim, replica)?;
            if stopped.is_some() {
                break;
            }
        }
        // Ctrl-C or SIGTERM on any replica (or node): every replica stops after this step.
        if agreed.stop && step < total {
            stopped = Some(Stop::Interrupted);
            break;
        }
    }
    // Leave a checkpoint of where the run got to, at the end and on Ctrl-C. After a divergence
    // the weights are not worth keeping: the last periodic checkpoint stays the latest.
    if step > start && (stopped.is_none() || stopped == Some(Stop::Interrupted)) {
        let losses = (step, log.last_loss, log.val_loss_at(step));
        stopped = checkpoint_unless_diverged(plan, losses, &model, &optim, replica)?.or(stopped);
    }
    log.finish(step, stopped)
}

/// Saves a checkpoint of `(step, loss, validation loss)`, unless the weights are no longer
/// finite: then the run stops as diverged, and `latest` stays the last good checkpoint. (Checked
/// only here, where it matters, not after every step.)
/// Every replica checks (their weights are the same, so they stop together); the first one
/// writes.
fn checkpoint_unless_diverged<B: AutodiffBackend>(
    plan: &RunPlan,
    losses: (u64, f64, Option<f64>),
    model: &LaxModel<B>,
    optim: &Adam<B>,
    replica: Replica,
) -> Result<Option<Stop>, String> {
    if !all_finite(model) {
        return Ok(Some(diverged(losses.0, "weights", f64::NAN)));
    }
    if replica.leads() {
        checkpoint::save(&plan.out, losses, model, optim, plan.options.keep)?;
    }
    Ok(None)
}

fn diverged(step: u64, what: &'static str, value: f64) -> Stop {
    Stop::Diverged { step, what, value }
}

/// laxc's optimizer: AdamW over the lowered model.
type Adam<B> = OptimizerAdaptor<AdamW, LaxModel<B>, B>;

/// The model and optimizer a run starts from, and the step it starts at: fresh (with a LoRA
/// base loaded where the spec names one), or the run folder's latest checkpoint.
fn starting_point<B: AutodiffBackend>(
    plan: &RunPlan,
    total: u64,
    device: &B::Device,
    replica: Replica,
    clip: &GradientScale,
) -> Result<(LaxModel<B>, Adam<B>, u64), String> {
    let (c, o) = (plan.compiled, &plan.options);
    B::seed(device, o.seed);
    let mut model: LaxModel<B> = lower(&c.ir, o.seed, device)
        .with_dropout(o.dropout)
        .with_compute(compute_dtype::<B>(o.dtype));
    let optim = adamw::<B>(o, clip);
    let Some(resumed) = &plan.resume else {
        // Without a base, `laxc check`'s W0703 has said that the frozen weights start random.
        if let Some(base) = crate::lower::base::base_file(&c.spec)? {
            let file = data::locate(&base, &plan.spec_dir);
            model = crate::lower::base::load_lora_base(model, &c.spec, &file, device)?;
        }
        return Ok((model, optim, 0));
    };
    let (model, optim, state) = checkpoint::load(&resumed.checkpoint, model, optim, device)?;
    if replica.leads() {
        forget_metrics_after(&plan.out.join("metrics.jsonl"), state.step)?;
    }
    if state.step >= total {
        return Err(already_there(state.step, total));
    }
    Ok((model, optim, state.step))
}

/// Where each sample of a run comes from. Batches are a function of (seed, step), never of
/// history: a resumed run sees exactly the batches the uninterrupted run would have seen.
#[derive(Default)]
struct Sampler {
    /// The shuffled order of the images of one epoch, and which epoch it is.
    order: Option<(u64, Vec<usize>)>,
}

impl Sampler {
    /// The replica's rows of micro-batch `k` of the run (step × accum + micro), and how many
    /// items (scored tokens, images) the whole micro-batch has.
    fn micro_batch<B: AutodiffBackend>(
        &mut self,
        data: &Data,
        o: &TrainOptions,
        seq: usize,
        k: u64,
        replica: Replica,
        device: &B::Device,
    ) -> (Batch<B>, usize) {
        match data {
            Data::Tokens(t) => {
                let rows = replica.rows(o.batch);
                let first = k * o.batch as u64 + rows.start as u64;
                let n = rows.len();
                let flat = data::token_batch(&t.train, first, n, seq, |w| mix(o.seed, w));
                (token_batch::<B>(flat, n, seq, device), o.batch * seq)
            }
            Data::Images(d) => {
                let idx = self.epoch_positions(d.train_y.len(), o, k);
                let rows = replica.rows(idx.len());
                let batch = image_batch::<B>(&d.train_x, &d.train_y, &idx[rows], d, device);
                (batch, idx.len())
            }
            Data::Examples(e) => {
                let idx = self.epoch_positions(e.train.len(), o, k);
                let all: Vec<&data::Example> = idx.iter().map(|&i| &e.train[i]).collect();
                let whole = all.iter().map(|x| scored_positions(x, seq)).sum();
                let rows = replica.rows(all.len());
                (example_batch::<B>(&all[rows], seq, device), whole)
            }
        }
    }

    /// The samples of micro-batch `k` among `n`: positions k·batch .. of its epoch's shuffled
    /// order (each epoch its own order, from the run seed).
    fn epoch_positions(&mut self, n: usize, o: &TrainOptions, k: u64) -> Vec<usize> {
        let per_epoch = (n / o.batch).max(1) as u64;
        let epoch = k / per_epoch;
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            let mut v: Vec<usize> = (0..n).collect();
            v.shuffle(&mut StdRng::seed_from_u64(mix(o.seed, epoch ^ 0x5eed)));
            self.order = Some((epoch, v));
        }
        let order = &self.order.as_ref().expect("just set").1;
        let at = ((k % per_epoch) as usize) * o.batch;
        order[at..(at + o.batch).min(n)].to_vec()
    }
}

/// One optimizer step's gradients, accumulated over `accum` micro-batches: the step's mean
/// loss, the gradients and how many items (tokens or images) the step has.
///
/// Where the items of a micro-batch vary (examples score their responses only) or the
/// micro-batch is split among replicas, each loss is its rows' summed loss over the whole
/// step's item count, so that the micro-batches' and replicas' losses add up to the mean over
/// every item of the step: `accum` and the number of replicas leave the objective as it is.
/// A single replica of fixed-size micro-batches averages each and divides by `accum`, which
/// is the same mean.
fn accumulate<B: AutodiffBackend>(
    model: &LaxModel<B>,
    data: &Data,
    o: &TrainOptions,
    step: u64,
    sampler: &mut Sampler,
    device: &B::Device,
    replica: Replica,
) -> (f64, GradientsParams, usize) {
    let seq = model.program.tokens;
    let micro_batches: Vec<(Batch<B>, usize)> = (0..o.accum as u64)
        .map(|micro| {
            let k = step * o.accum as u64 + micro;
            sampler.micro_batch::<B>(data, o, seq, k, replica, device)
        })
        .collect();
    let items: usize = micro_batches.iter().map(|(_, whole)| whole).sum();
    let over_items = replica.world > 1 || matches!(data, Data::Examples(_));
    let mut acc = GradientsAccumulator::<LaxModel<B>>::new();
    let mut loss_sum = 0.0;
    for (batch, _) in micro_batches {
        let loss = match over_items {
            true => forward_over(model, batch, Some(items)).0,
            false => forward(model, batch).0.div_scalar(o.accum as f64),
        };
        let l: f64 = loss.clone().into_scalar().elem();
        loss_sum += l;
        let grads = GradientsParams::from_grads(loss.backward(), model);
        acc.accumulate(model, grads);
    }
    (loss_sum, acc.grads(), items)
}

/// What a run tells as it goes: the progress bar (or plain lines), metrics.jsonl, and the
/// figures of its summary.
struct RunLog<'a> {
    plan: &'a RunPlan<'a>,
    /// Whether this replica tells (the first one does; the others only keep figures).
    tells: bool,
    metrics: PathBuf,
    bar: ProgressBar,
    total: u64,
    unit: &'static str,
    tokens_data: bool,
    began: Instant,
    window_items: usize,
    window_start: Instant,
    /// Seconds spent in the replicas' all-reduce since the last record, and how many steps;
    /// None for a run of one replica.
    window_exchange: Option<(f64, u64)>,
    items_total: usize,
    last_loss: f64,
    last_val: (Option<f64>, Option<f64>),
    /// The step of the last validation.
    last_val_step: Option<u64>,
}

/// A run that ends in an error or a panic leaves no half-drawn bar in the terminal.
impl Drop for RunLog<'_> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl<'a> RunLog<'a> {
    fn new(plan: &'a RunPlan<'a>, data: &Data, total: u64, start: u64, tells: bool) -> Self {
        let tokens_data = !matches!(data, Data::Images(_));
        let bar = if plan.plain || !tells {
            ProgressBar::hidden()
        } else {
            let b = ProgressBar::new(total);
            // The bar takes what the terminal's width leaves: the line never wraps, which in
            // an 80-column terminal would print a new line at every redraw.
            b.set_style(
                ProgressStyle::with_template("{wide_bar:.cyan/blue} {pos}/{len} {msg} eta {eta}")
                    .expect("valid template")
                    .progress_chars("█▉▊▋▌▍▎▏ "),
            );
            b
        };
        bar.set_position(start);
        RunLog {
            plan,
            tells,
            metrics: plan.out.join("metrics.jsonl"),
            bar,
            total,
            unit: if tokens_data { "tokens" } else { "images" },
            tokens_data,
            began: Instant::now(),
            window_items: 0,
            window_start: Instant::now(),
            window_exchange: None,
            items_total: 0,
            last_loss: f64::NAN,
            last_val: (None, None),
            last_val_step: None,
        }
    }

    fn say(&self, line: String) {
        if !self.tells {
            return;
        }
        if self.plan.plain {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// A step's all-reduce took `seconds` (waiting for the slowest replica included).
    fn exchanged(&mut self, seconds: f64, replicated: bool) {
        if replicated {
            let (s, n) = self.window_exchange.get_or_insert((0.0, 0));
            *s += seconds;
            *n += 1;
        }
    }

    fn items(&mut self, n: usize) {
        self.window_items += n;
        self.items_total += n;
    }

    fn record(&self, rec: serde_json::Value) -> Result<(), String> {
        if !self.tells {
            return Ok(());
        }
        append_jsonl(&self.metrics, rec)
            .map_err(|e| format!("cannot write {}: {e}", self.metrics.display()))
    }

    /// After each optimizer step; records every `log_every` steps and at the end.
    fn step(&mut self, step: u64, loss: f64, lr: f64, grad_norm: f64) -> Result<(), String> {
        self.last_loss = loss;
        self.bar.set_position(step);
        let o = &self.plan.options;
        if !(step.is_multiple_of(o.log_every) || step == self.total) {
            return Ok(());
        }
        let (unit, total) = (self.unit, self.total);
        let secs = self.window_start.elapsed().as_secs_f64().max(1e-9);
        let rate = self.window_items as f64 / secs;
        self.bar
            .set_message(format!("loss {loss:.4} {rate:.0} {unit}/s"));
        if self.plan.plain && self.tells {
            self.say(format!(
                "step {step}/{total} loss {loss:.4} lr {lr:.3e} {rate:.0} {unit}/s"
            ));
        }
        let mut record = serde_json::json!({
            "step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            format!("{unit}_per_s"): rate, "elapsed_s": self.began.elapsed().as_secs_f64(),
        });
        if let Some((seconds, steps)) = self.window_exchange.take() {
            record["allreduce_s_per_step"] = (seconds / steps.max(1) as f64).into();
            record["allreduce_share"] = (seconds / secs).into();
        }
        self.record(record)?;
        self.window_items = 0;
        self.window_start = Instant::now();
        Ok(())
    }

    /// The validation loss measured at `step` itself, if the run validated there.
    fn val_loss_at(&self, step: u64) -> Option<f64> {
        self.last_val.0.filter(|_| self.last_val_step == Some(step))
    }

    fn validation(&mut self, step: u64, vl: f64, acc: Option<f64>) -> Result<(), String> {
        self.last_val = (Some(vl), acc);
        self.last_val_step = Some(step);
        let mut rec = serde_json::json!({"step": step, "val_loss": vl});
        let line = match acc {
            Some(a) => {
                rec["val_accuracy"] = a.into();
                format!("step {step}: val loss {vl:.4}, accuracy {:.2}%", 100.0 * a)
            }
            None => {
                rec["val_perplexity"] = vl.exp().into();
                format!("step {step}: val loss {vl:.4}, perplexity {:.2}", vl.exp())
            }
        };
        self.say(line);
        self.record(rec)
    }

    /// The summary, also written to `summary.json`.
    fn finish(self, steps: u64, stopped: Option<Stop>) -> Result<Summary, String> {
        // (Drop clears the bar too, for runs that end in an error.)
        self.bar.finish_and_clear();
        let seconds = self.began.elapsed().as_secs_f64();
        let run = &self.plan.out;
        let summary = Summary {
            steps,
            final_loss: self.last_loss,
            val_loss: self.last_val.0,
            val_perplexity: self.last_val.0.filter(|_| self.tokens_data).map(f64::exp),
            val_accuracy: self.last_val.1,
            seconds,
            items_per_second: self.items_total as f64 / seconds.max(1e-9),
            unit: self.unit,
            params: self.plan.compiled.report().params.total,
            stopped,
            run_dir: run.clone(),
        };
        if !self.tells {
            return Ok(summary);
        }
        let json = serde_json::to_string_pretty(&summary).expect("serializes");
        crate::files::write_atomically(&run.join("summary.json"), json.as_bytes())
            .map_err(|e| format!("cannot write the summary: {e}"))?;
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    type B = NdArray<f64>;

    /// A row is the example's tokens, padding after; only positions whose next token is part
    /// of the response are scored, and the masked loss is the mean over exactly those.
    #[test]
    fn examples_score_their_responses_only() {
        let e = data::Example {
            tokens: vec![5, 6, 7, 8, 9],
            response_from: 3,
            line: 1,
        };
        let Batch::Tokens {
            input,
            target,
            count,
            masked,
        } = example_batch::<B>(&[&e], 6, &Default::default())
        else {
            unreachable!()
        };
        assert!(masked);
        assert_eq!(count, 2);
        let input: Vec<i64> = input.into_data().to_vec().unwrap();
        let targets: Vec<i64> = target.clone().into_data().to_vec().unwrap();
        assert_eq!(input, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(targets, vec![-1, -1, 8, 9, -1, -1]);
        // Logits favouring token 1 everywhere: the loss of scored rows only.
        let vocab = 10;
        let mut logits = vec![0.0f64; 6 * vocab];
        for r in 0..6 {
            logits[r * vocab + 1] = 2.0;
        }
        let t = Tensor::<B, 2>::from_data(TensorData::new(logits, [6, vocab]), &Default::default());
        let got: f64 = masked_cross_entropy(t, target).into_scalar();
        let z = (2f64).exp() + 9.0;
        assert!((got - z.ln()).abs() < 1e-12, "{got}");
    }
}
