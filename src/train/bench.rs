//! `laxc bench`: times whole training steps (forward, loss, backward, global-norm clipping,
//! AdamW) of a spec on synthetic batches, so that throughput can be compared with other
//! implementations of the same model (bench/twin.py is the PyTorch one) and across specs.
//!
//! Synthetic batches keep the measurement about compute: uniform random tokens (or Gaussian
//! images with random labels) cost the same FLOPs as real data, and nothing is read from disk.

use super::optimizer::{AdamW, GradientScale};
use super::run::{adamw, clip_global, forward, token_batch, Batch};
use crate::family::Input;
use crate::lower::flex_gemm::timings::{self, Call, ProductShape};
use crate::lower::precision::compute_dtype;
use crate::lower::{lower, LaxModel};
use crate::options::TrainOptions;
use burn::module::Module;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first (allocator and thread-pool warm-up).
    pub warmup: usize,
    /// Samples per step: sequences (LLaMA) or images (ViT).
    pub batch: usize,
    pub seed: u64,
    /// Time every matrix product of the timed steps, by shape (`laxc bench --products`).
    pub products: bool,
}

/// What one `laxc bench` run measured. bench/twin.py prints the same fields.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub implementation: String,
    pub spec: String,
    pub batch: usize,
    pub tokens_per_sample: usize,
    pub unit: &'static str,
    pub steps: usize,
    pub warmup: usize,
    pub params: usize,
    /// The dropout rate of the model's own dropout nodes while training (the run's `dropout`),
    /// so a twin timed beside it drops out as much.
    pub dropout: f64,
    /// Every timed step, in seconds.
    pub step_seconds: Vec<f64>,
    /// Every warm-up step, in seconds: on a GPU the first ones include compiling its kernels.
    pub warmup_step_seconds: Vec<f64>,
    pub median_step_seconds: f64,
    /// Where the timed steps' time went, each phase's median: the forward pass with the loss
    /// (and the batch's upload), the backward pass, and the optimizer (clipping and AdamW).
    pub median_phase_seconds: Phases,
    /// Samples (`unit`) per second at the median step time.
    pub items_per_second: f64,
    /// The report's training FLOPs of one step, over the median step time.
    pub gflops_per_second: f64,
    pub train_flops_per_step: u128,
    pub final_loss: f64,
    /// The process's peak resident memory (Linux VmHWM), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// The report's fp32 estimate for weights, gradients and Adam moments, bytes.
    pub report_train_bytes_fp32: u128,
    /// The report's estimate of the activations a batch keeps for the backward pass, bytes.
    pub report_activation_bytes_fp32: u128,
    /// With `--products`: the timed steps' matrix products by shape, the most time a step
    /// first (Flex's products only: other backends run their own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub products: Option<Vec<ProductRow>>,
}

/// The calls of one product shape in the timed steps (`laxc bench --products`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProductRow {
    #[serde(flatten)]
    pub shape: ProductShape,
    /// Calls a step.
    pub calls_per_step: f64,
    /// The median call, seconds.
    pub median_seconds: f64,
    /// Its calls' time in a step, seconds (the median call times the calls a step).
    pub seconds_per_step: f64,
    /// GFLOP/s of the median call.
    pub gflops_per_second: f64,
}

/// The recorded calls by shape, the most time a step first.
fn product_rows(calls: Vec<Call>, steps: usize) -> Vec<ProductRow> {
    let mut by_shape: BTreeMap<ProductShape, Vec<f64>> = BTreeMap::new();
    for call in calls {
        by_shape.entry(call.shape).or_default().push(call.seconds);
    }
    let mut rows: Vec<ProductRow> = by_shape
        .into_iter()
        .map(|(shape, seconds)| {
            let calls_per_step = seconds.len() as f64 / steps as f64;
            let median_seconds = median(&seconds);
            ProductRow {
                calls_per_step,
                median_seconds,
                seconds_per_step: median_seconds * calls_per_step,
                gflops_per_second: shape.flops() / median_seconds / 1e9,
                shape,
            }
        })
        .collect();
    rows.sort_by(|a, b| b.seconds_per_step.total_cmp(&a.seconds_per_step));
    rows
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Peak resident set size of this process, from /proc (None elsewhere).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Synthetic batches, drawn before timing starts.
enum HostBatch {
    Tokens(Vec<i64>),
    Images(Vec<f32>, Vec<i64>),
}

fn synthetic_batches(c: &crate::Compiled, o: &BenchOptions, n: usize) -> Vec<HostBatch> {
    let m = &c.ir.model;
    let mut rng = StdRng::seed_from_u64(o.seed);
    (0..n)
        .map(|_| match m.def().input {
            Input::Tokens => HostBatch::Tokens(
                (0..o.batch * (m.tokens + 1))
                    .map(|_| rng.random_range(0..m.vocab as i64))
                    .collect(),
            ),
            Input::Images => {
                let px = m.channels * m.image * m.image;
                let x = (0..o.batch * px)
                    .map(|_| StandardNormal.sample(&mut rng))
                    .collect();
                let y = (0..o.batch)
                    .map(|_| rng.random_range(0..m.classes as i64))
                    .collect();
                HostBatch::Images(x, y)
            }
        })
        .collect()
}

fn device_batch<B: AutodiffBackend>(
    c: &crate::Compiled,
    host: &HostBatch,
    batch: usize,
    device: &B::Device,
) -> Batch<B> {
    let m = &c.ir.model;
    match host {
        HostBatch::Tokens(flat) => token_batch::<B>(flat.clone(), batch, m.tokens, device),
        HostBatch::Images(x, y) => Batch::Images {
            x: Tensor::from_data(
                TensorData::new(x.clone(), [batch, m.channels, m.image, m.image]),
                device,
            ),
            y: Tensor::from_data(TensorData::new(y.clone(), [batch]), device),
            count: batch,
        },
    }
}

/// The parts of a training step, in seconds.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Phases {
    pub forward: f64,
    pub backward: f64,
    pub optimizer: f64,
}

/// One spec's model, optimizer and synthetic batches, stepped one timed training step at a
/// time, and what its steps measured: `bench` steps one, `bench_pair` two in alternation.
struct Stepper<'a, B: AutodiffBackend> {
    c: &'a crate::Compiled,
    train: &'a TrainOptions,
    o: &'a BenchOptions,
    device: B::Device,
    /// Taken by each step's optimizer and given back (always there between steps).
    model: Option<LaxModel<B>>,
    optim: OptimizerAdaptor<AdamW, LaxModel<B>, B>,
    clip: GradientScale,
    host: Vec<HostBatch>,
    params: usize,
    step_seconds: Vec<f64>,
    warmup_step_seconds: Vec<f64>,
    phases: Vec<Phases>,
    final_loss: f64,
}

impl<'a, B: AutodiffBackend> Stepper<'a, B> {
    /// The model lowered and its batches drawn, from the bench's seed (the backend's
    /// generator seeded first, as a training run seeds it).
    fn new(
        c: &'a crate::Compiled,
        train: &'a TrainOptions,
        o: &'a BenchOptions,
        device: B::Device,
    ) -> Self {
        B::seed(&device, o.seed);
        let model: LaxModel<B> = lower(&c.ir, o.seed, &device)
            .with_dropout(train.dropout)
            .with_compute(compute_dtype::<B>(train.dtype));
        let clip = GradientScale::default();
        Stepper {
            params: model.num_params(),
            model: Some(model),
            optim: adamw::<B>(train, &clip),
            clip,
            host: synthetic_batches(c, o, o.warmup + o.steps),
            step_seconds: Vec::with_capacity(o.steps),
            warmup_step_seconds: Vec::with_capacity(o.warmup),
            phases: Vec::with_capacity(o.steps),
            final_loss: f64::NAN,
            c,
            train,
            o,
            device,
        }
    }

    /// Runs step `i` (a warm-up step while `i < warmup`) and records its time; returns it.
    fn step(&mut self, i: usize) -> f64 {
        let (c, o, device) = (self.c, self.o, &self.device);
        let model = self
            .model
            .take()
            .expect("the model is back after each step");
        let began = Instant::now();
        let batch = device_batch::<B>(c, &self.host[i], o.batch, device);
        let (loss, _) = forward(&model, batch);
        // Reading the loss waits for the forward pass on asynchronous devices, and a sync for
        // the backward pass and the optimizer (on a CPU each call returns when done).
        self.final_loss = loss.clone().into_scalar().elem();
        let forwarded = Instant::now();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        B::sync(device).ok();
        let backwarded = Instant::now();
        clip_global(&model, &grads, self.train.clip, &self.clip);
        self.model = Some(self.optim.step(self.train.lr, model, grads));
        B::sync(device).ok();
        let done = Instant::now();
        let took = (done - began).as_secs_f64();
        match i < o.warmup {
            true => self.warmup_step_seconds.push(took),
            false => {
                self.step_seconds.push(took);
                self.phases.push(Phases {
                    forward: (forwarded - began).as_secs_f64(),
                    backward: (backwarded - forwarded).as_secs_f64(),
                    optimizer: (done - backwarded).as_secs_f64(),
                });
            }
        }
        took
    }

    /// What the timed steps measured, with the products' table where they were timed.
    fn result(self, spec_name: &str, products: Option<Vec<ProductRow>>) -> BenchResult {
        let (c, o) = (self.c, self.o);
        let phases = &self.phases;
        let phase = |f: fn(&Phases) -> f64| median(&phases.iter().map(f).collect::<Vec<_>>());
        let report = c.report();
        let samples = o.batch as f64;
        let flops_per_step = report.flops.train_per_sample * o.batch as u128;
        let med = median(&self.step_seconds);
        BenchResult {
            implementation: "laxc".into(),
            spec: spec_name.to_string(),
            batch: o.batch,
            tokens_per_sample: c.ir.model.tokens,
            unit: match c.ir.model.def().input {
                Input::Tokens => "tokens",
                Input::Images => "images",
            },
            steps: o.steps,
            warmup: o.warmup,
            params: self.params,
            dropout: self.train.dropout,
            median_step_seconds: med,
            median_phase_seconds: Phases {
                forward: phase(|p| p.forward),
                backward: phase(|p| p.backward),
                optimizer: phase(|p| p.optimizer),
            },
            items_per_second: match c.ir.model.def().input {
                Input::Tokens => samples * c.ir.model.tokens as f64 / med,
                Input::Images => samples / med,
            },
            gflops_per_second: flops_per_step as f64 / med / 1e9,
            train_flops_per_step: flops_per_step,
            step_seconds: self.step_seconds,
            warmup_step_seconds: self.warmup_step_seconds,
            final_loss: self.final_loss,
            peak_rss_bytes: peak_rss_bytes(),
            report_train_bytes_fp32: report.memory.train_bytes_fp32,
            report_activation_bytes_fp32: report.memory.activation_bytes_per_sample_fp32
                * o.batch as u128,
            products,
        }
    }
}

/// Runs `warmup + steps` training steps and times each of the last `steps`.
pub fn bench<B: AutodiffBackend>(
    c: &crate::Compiled,
    spec_name: &str,
    train: &TrainOptions,
    o: &BenchOptions,
    device: B::Device,
) -> BenchResult {
    let mut stepper = Stepper::<B>::new(c, train, o, device);
    for i in 0..o.warmup + o.steps {
        if o.products && i == o.warmup {
            timings::start();
        }
        stepper.step(i);
    }
    let products = o.products.then(|| product_rows(timings::stop(), o.steps));
    stepper.result(spec_name, products)
}

/// One side of `laxc bench SPEC --against OTHER`: a spec, its name, its options.
pub struct Side<'a> {
    pub compiled: &'a crate::Compiled,
    pub name: &'a str,
    pub train: &'a TrainOptions,
    pub bench: &'a BenchOptions,
}

/// Two specs timed in one process, step by step in alternation (`laxc bench SPEC --against
/// OTHER`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PairResult {
    /// The spec, its steps timed as `laxc bench` times them (no products).
    pub spec: BenchResult,
    /// The spec it is measured against.
    pub against: BenchResult,
    /// The median over the timed rounds of the spec's step time over the other's in the same
    /// round: what the spec costs against the other, each round's two steps a few
    /// milliseconds apart.
    pub ratio: f64,
    /// The first and third quartiles of the rounds' ratios: how far one round's noise reaches.
    pub ratio_quartiles: [f64; 2],
    /// The report's training FLOPs a step of the spec over the other's, at their batches.
    pub flops_ratio: f64,
    /// The process's peak resident memory with both models (the sides' own are left out:
    /// neither is its alone).
    pub peak_rss_bytes: Option<u64>,
}

/// Times two specs' training steps in alternation, one of each a round (the spec first in
/// even rounds, the other first in odd ones, so that neither always follows the other): a
/// machine whose speed drifts over seconds or minutes slows both sides of a round alike, where
/// two `laxc bench` processes minutes apart take the drift into their ratio.
pub fn bench_pair<B: AutodiffBackend>(
    [spec, against]: [Side<'_>; 2],
    device: B::Device,
) -> PairResult {
    let mut a = Stepper::<B>::new(spec.compiled, spec.train, spec.bench, device.clone());
    let mut b = Stepper::<B>::new(against.compiled, against.train, against.bench, device);
    let (warmup, steps) = (spec.bench.warmup, spec.bench.steps);
    assert!(
        against.bench.warmup == warmup && against.bench.steps == steps,
        "both sides take the same number of steps"
    );
    let mut ratios = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let (ta, tb) = match i % 2 {
            0 => (a.step(i), b.step(i)),
            _ => {
                let tb = b.step(i);
                (a.step(i), tb)
            }
        };
        if i >= warmup {
            ratios.push(ta / tb);
        }
    }
    let alone = |r: BenchResult| BenchResult {
        peak_rss_bytes: None,
        ..r
    };
    let (spec, against) = (a.result(spec.name, None), b.result(against.name, None));
    let (spec, against) = (alone(spec), alone(against));
    PairResult {
        peak_rss_bytes: peak_rss_bytes(),
        ratio: median(&ratios),
        ratio_quartiles: [quantile(&ratios, 0.25), quantile(&ratios, 0.75)],
        flops_ratio: spec.train_flops_per_step as f64 / against.train_flops_per_step as f64,
        spec,
        against,
    }
}

/// The `q`-quantile of `xs` (0 ≤ q ≤ 1), interpolated linearly between the two nearest
/// ranks of the sorted values (NaN for none).
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n => {
            let at = q * (n - 1) as f64;
            let (low, high) = (at.floor() as usize, at.ceil() as usize);
            v[low] + (v[high] - v[low]) * (at - low as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{median, quantile};

    #[test]
    fn quartiles_interpolate_between_ranks() {
        let xs = [7.0, 1.0, 3.0, 5.0];
        // Sorted 1, 3, 5, 7: ranks 0.75 and 2.25.
        assert_eq!(quantile(&xs, 0.25), 2.5);
        assert_eq!(quantile(&xs, 0.75), 5.5);
        assert_eq!(quantile(&xs, 0.5), median(&xs));
        assert_eq!(quantile(&xs, 0.0), 1.0);
        assert_eq!(quantile(&xs, 1.0), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
