//! Training options: the one typed schema of the `train` keys. The spec's `train` section, every
//! `laxc train --set key=value` and the docs' table of keys are checked against [`KEYS`]; each
//! key says what values it takes (with its range), what it means and how it sets
//! [`TrainOptions`]. A value a user writes is applied or rejected with a located error, never
//! ignored.

use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::resolve::eval::{Evaluated, Num, Scope};
use crate::source::{Source, Span};
use crate::spec::TrainValue;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DataSpec {
    /// Text files: byte-level tokens, or those of a HuggingFace tokenizer.json.
    Text {
        train: PathBuf,
        valid: Option<PathBuf>,
        tokenizer: Option<PathBuf>,
    },
    /// Prompt-response examples, one JSON object a line: the model learns the response given
    /// the prompt (the loss is on response tokens only), one example a row, padded.
    Jsonl {
        train: PathBuf,
        valid: Option<PathBuf>,
        /// The fields holding the prompt and the response.
        prompt: String,
        response: String,
        /// Lay each prompt out as a user turn of the tokenizer's chat template.
        chat: bool,
        /// A tokenizer.json, GGUF file or HuggingFace directory; default: the spec's LoRA base.
        tokenizer: Option<PathBuf>,
    },
    /// nanoGPT / llm.c token shards in a folder: `*train*.bin` and `*val*.bin`.
    Tokens {
        dir: PathBuf,
    },
    Mnist {
        dir: PathBuf,
    },
    Cifar10 {
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Cosine,
    Linear,
}

/// The precision of a training pass's activations and matrix products. Weights, gradients and
/// optimizer state stay f32 in every case (each use of a weight casts it); norms, softmax and the
/// loss run in f32 too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Every field is a key of [`KEYS`]; a run records them in `resolved.json` and a resume reads
/// them back from there.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TrainOptions {
    pub data: Option<DataSpec>,
    pub steps: Option<u64>,
    pub epochs: Option<u64>,
    pub batch: usize,
    pub accum: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub schedule: Schedule,
    pub warmup: u64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub clip: f64,
    pub dropout: f64,
    pub seed: u64,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub log_every: u64,
    pub checkpoint_every: u64,
    pub keep: u64,
    pub device: String,
    pub dtype: Precision,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            data: None,
            steps: None,
            epochs: None,
            batch: 8,
            accum: 1,
            lr: 1e-3,
            min_lr: 0.0,
            schedule: Schedule::Cosine,
            warmup: 0,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            clip: 1.0,
            dropout: 0.0,
            seed: 0,
            eval_every: 100,
            eval_batches: 20,
            log_every: 10,
            checkpoint_every: 0,
            keep: 3,
            device: "cpu".into(),
            dtype: Precision::F32,
        }
    }
}

/// The largest step count, batch or interval a key takes (2^32): products of counts and sizes
/// then stay far inside 64 bits.
pub const MAX_COUNT: i64 = 1 << 32;

/// The values a key takes.
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    /// A whole number from `min` to `max`.
    Count { min: i64, max: i64 },
    /// A number in `range`.
    Number(Range),
    /// `cpu`, `cuda`, `cuda:N` or `wgpu`.
    Device,
    /// One of the named choices, each optionally called with the arguments it lists.
    Choice(&'static [Choice]),
}

#[derive(Debug, Clone, Copy)]
pub enum Range {
    /// `x >= 0`.
    NonNegative,
    /// `x > 0`.
    Positive,
    /// `0 <= x < 1`.
    Fraction,
}

impl Range {
    fn contains(self, x: f64) -> bool {
        x.is_finite()
            && match self {
                Range::NonNegative => x >= 0.0,
                Range::Positive => x > 0.0,
                Range::Fraction => (0.0..1.0).contains(&x),
            }
    }

    fn describe(self) -> &'static str {
        match self {
            Range::NonNegative => "a number >= 0",
            Range::Positive => "a number > 0",
            Range::Fraction => "a number from 0 up to (not including) 1",
        }
    }
}

/// A named choice and the named arguments it takes (positional ones are paths, for data).
#[derive(Debug, Clone, Copy)]
pub struct Choice {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// How many positional arguments it takes at most.
    pub positional: usize,
    /// What its first argument (or `path = ...`) is the path of; None: it takes no path.
    pub path_of: Option<&'static str>,
}

/// One key of the `train` section.
pub struct Key {
    pub name: &'static str,
    pub kind: KeyKind,
    /// For the docs' table and `--help`.
    pub meaning: &'static str,
    /// What to do instead, said when the value is out of range.
    pub hint: &'static str,
    /// What a new value means when a run is resumed (`laxc train --resume RUN --set ...`);
    /// `None`: the key cannot change on resume, because the weights, the optimizer state or
    /// the schedule so far depend on it.
    pub on_resume: Option<&'static str>,
    set: fn(&mut TrainOptions, &TrainValue),
}

const DATA: &[Choice] = &[
    Choice {
        name: "text",
        args: &["path", "valid", "tokenizer"],
        positional: 3,
        path_of: Some("training text"),
    },
    Choice {
        name: "jsonl",
        args: &["path", "valid", "prompt", "response", "chat", "tokenizer"],
        positional: 2,
        path_of: Some("training examples"),
    },
    Choice {
        name: "tokens",
        args: &["path"],
        positional: 1,
        path_of: Some("shard folder"),
    },
    Choice {
        name: "mnist",
        args: &["path"],
        positional: 1,
        path_of: Some("IDX folder"),
    },
    Choice {
        name: "cifar10",
        args: &["path"],
        positional: 1,
        path_of: Some("binary batch folder"),
    },
];

const PRECISIONS: &[Choice] = &[
    Choice {
        name: "f32",
        args: &[],
        positional: 0,
        path_of: None,
    },
    Choice {
        name: "bf16",
        args: &[],
        positional: 0,
        path_of: None,
    },
];

const SCHEDULES: &[Choice] = &[
    Choice {
        name: "constant",
        args: &["warmup"],
        positional: 0,
        path_of: None,
    },
    Choice {
        name: "cosine",
        args: &["warmup"],
        positional: 0,
        path_of: None,
    },
    Choice {
        name: "linear",
        args: &["warmup"],
        positional: 0,
        path_of: None,
    },
];

fn count(v: &TrainValue) -> u64 {
    match v {
        TrainValue::Int(i) => *i as u64,
        _ => unreachable!("checked against the schema"),
    }
}

fn number(v: &TrainValue) -> f64 {
    match v {
        TrainValue::Int(i) => *i as f64,
        TrainValue::Float(f) => *f,
        _ => unreachable!("checked against the schema"),
    }
}

/// Every key the `train` section accepts.
pub const KEYS: &[Key] = &[
    Key {
        name: "data",
        kind: KeyKind::Choice(DATA),
        meaning: "training data",
        hint: "",
        on_resume: Some("the same files at another path (their SHA-256 must match the run's)"),
        set: |o, v| o.data = Some(data_spec(v)),
    },
    Key {
        name: "steps",
        kind: KeyKind::Count {
            min: 1,
            max: MAX_COUNT,
        },
        meaning: "optimizer steps",
        hint: "a run takes at least one step; to only evaluate, use `laxc eval`",
        on_resume: Some("where the run stops; the schedule keeps the run's first length, so steps past its end run at `min_lr`"),
        set: |o, v| o.steps = Some(count(v)),
    },
    Key {
        name: "epochs",
        kind: KeyKind::Count {
            min: 1,
            max: MAX_COUNT,
        },
        meaning: "passes over the data (instead of steps)",
        hint: "a run takes at least one pass; or set `steps`",
        on_resume: Some("as `steps`"),
        set: |o, v| o.epochs = Some(count(v)),
    },
    Key {
        name: "batch",
        kind: KeyKind::Count {
            min: 1,
            max: MAX_COUNT,
        },
        meaning: "sequences or images per micro-batch",
        hint: "a micro-batch holds at least one sample",
        on_resume: None,
        set: |o, v| o.batch = count(v) as usize,
    },
    Key {
        name: "accum",
        kind: KeyKind::Count {
            min: 1,
            max: MAX_COUNT,
        },
        meaning: "micro-batches per optimizer step",
        hint: "`accum = 1` is one micro-batch a step, no accumulation",
        on_resume: None,
        set: |o, v| o.accum = count(v) as usize,
    },
    Key {
        name: "lr",
        kind: KeyKind::Number(Range::Positive),
        meaning: "peak learning rate",
        hint: "a learning rate of 0 never changes the weights",
        on_resume: None,
        set: |o, v| o.lr = number(v),
    },
    Key {
        name: "min_lr",
        kind: KeyKind::Number(Range::NonNegative),
        meaning: "final learning rate of the schedule (at most `lr`)",
        hint: "",
        on_resume: None,
        set: |o, v| o.min_lr = number(v),
    },
    Key {
        name: "schedule",
        kind: KeyKind::Choice(SCHEDULES),
        meaning: "learning-rate schedule after the warm-up",
        hint: "",
        on_resume: None,
        set: |o, v| {
            let TrainValue::Choice { name, args, .. } = v else {
                unreachable!("checked against the schema")
            };
            o.schedule = match name.as_str() {
                "constant" => Schedule::Constant,
                "linear" => Schedule::Linear,
                _ => Schedule::Cosine,
            };
            if let Some(w) = args.get("warmup") {
                o.warmup = count(w);
            }
        },
    },
    Key {
        name: "warmup",
        kind: KeyKind::Count {
            min: 0,
            max: MAX_COUNT,
        },
        meaning: "warm-up steps (at most `steps`)",
        hint: "",
        on_resume: None,
        set: |o, v| o.warmup = count(v),
    },
    Key {
        name: "weight_decay",
        kind: KeyKind::Number(Range::NonNegative),
        meaning: "AdamW weight decay",
        hint: "",
        on_resume: None,
        set: |o, v| o.weight_decay = number(v),
    },
    Key {
        name: "beta1",
        kind: KeyKind::Number(Range::Fraction),
        meaning: "AdamW beta1",
        hint: "the first-moment decay, usually 0.9",
        on_resume: None,
        set: |o, v| o.beta1 = number(v),
    },
    Key {
        name: "beta2",
        kind: KeyKind::Number(Range::Fraction),
        meaning: "AdamW beta2",
        hint: "the second-moment decay, usually 0.95 to 0.999",
        on_resume: None,
        set: |o, v| o.beta2 = number(v),
    },
    Key {
        name: "eps",
        kind: KeyKind::Number(Range::Positive),
        meaning: "AdamW epsilon",
        hint: "AdamW divides by √v + eps: eps must be above 0, usually 1e-8",
        on_resume: None,
        set: |o, v| o.eps = number(v),
    },
    Key {
        name: "clip",
        kind: KeyKind::Number(Range::NonNegative),
        meaning: "global gradient-norm clipping (0: off)",
        hint: "",
        on_resume: None,
        set: |o, v| o.clip = number(v),
    },
    Key {
        name: "dropout",
        kind: KeyKind::Number(Range::Fraction),
        meaning: "dropout while training (0: off), where each family's reference puts it: the \
                  attention and MLP outputs of every LLaMA and GPT-2 block, GPT-2's embeddings, \
                  the ViT's fc1 activation and fc2 output (the authors' ViT); not the attention \
                  probabilities",
        hint: "a dropout of 1 would drop everything",
        on_resume: None,
        set: |o, v| o.dropout = number(v),
    },
    Key {
        name: "seed",
        kind: KeyKind::Count {
            min: 0,
            max: i64::MAX,
        },
        meaning: "random seed (initialization, batches, dropout)",
        hint: "",
        on_resume: None,
        set: |o, v| o.seed = count(v),
    },
    Key {
        name: "eval_every",
        kind: KeyKind::Count {
            min: 0,
            max: MAX_COUNT,
        },
        meaning: "steps between validations (0: only at the end)",
        hint: "",
        on_resume: Some("applies from the resumed step"),
        set: |o, v| o.eval_every = count(v),
    },
    Key {
        name: "eval_batches",
        kind: KeyKind::Count {
            min: 1,
            max: MAX_COUNT,
        },
        meaning: "batches per validation",
        hint: "a validation needs a batch; to validate less often, raise `eval_every`",
        on_resume: Some("applies from the resumed step"),
        set: |o, v| o.eval_batches = count(v) as usize,
    },
    Key {
        name: "log_every",
        kind: KeyKind::Count {
            min: 1,
            max: MAX_COUNT,
        },
        meaning: "steps between metric records",
        hint: "`log_every = 1` records every step",
        on_resume: Some("applies from the resumed step"),
        set: |o, v| o.log_every = count(v),
    },
    Key {
        name: "checkpoint_every",
        kind: KeyKind::Count {
            min: 0,
            max: MAX_COUNT,
        },
        meaning: "steps between checkpoints (0: only at the end)",
        hint: "",
        on_resume: Some("applies from the resumed step"),
        set: |o, v| o.checkpoint_every = count(v),
    },
    Key {
        name: "keep",
        kind: KeyKind::Count {
            min: 0,
            max: MAX_COUNT,
        },
        meaning: "checkpoints kept: the newest `keep` plus the best by validation loss (0: all)",
        hint: "",
        on_resume: Some("applies from the next checkpoint"),
        set: |o, v| o.keep = count(v),
    },
    Key {
        name: "dtype",
        kind: KeyKind::Choice(PRECISIONS),
        meaning: "precision of activations and matrix products: f32, or bf16 with f32 weights, \
                  gradients, optimizer state, norms, softmax and loss (CPU `flex` and CUDA; not \
                  wgpu, ndarray or candle; `laxc generate` runs in f32). No f16: its range needs \
                  loss scaling",
        hint: "",
        on_resume: Some("applies to the rest of the run"),
        set: |o, v| {
            let TrainValue::Choice { name, .. } = v else {
                unreachable!("checked against the schema")
            };
            o.dtype = match name.as_str() {
                "bf16" => Precision::Bf16,
                _ => Precision::F32,
            };
        },
    },
    Key {
        name: "device",
        kind: KeyKind::Device,
        meaning: "where training runs: one device, or several of one kind (`cpu,cpu`, \
                  `cuda:0,cuda:1`) for a data-parallel replica on each (`laxc train --device` \
                  overrides it; eval, generate and bench use the first)",
        hint: "",
        on_resume: Some("where the rest of the run trains, on as many replicas as it lists"),
        set: |o, v| {
            if let TrainValue::Str(s) = v {
                o.device = s.clone();
            }
        },
    },
];

/// The table of keys in docs/language.md, made from the schema (a test keeps the two equal).
pub fn docs_table() -> String {
    let mut out = String::from("| key | value | meaning | on `--resume` |\n|---|---|---|---|\n");
    for k in KEYS {
        let value = match k.kind {
            KeyKind::Count {
                min,
                max: MAX_COUNT,
            } => format!("whole number from {min} to 2^32"),
            KeyKind::Count { min, max: i64::MAX } => format!("whole number ≥ {min}"),
            KeyKind::Count { min, max } => format!("whole number from {min} to {max}"),
            KeyKind::Number(Range::NonNegative) => "number ≥ 0".into(),
            KeyKind::Number(Range::Positive) => "number > 0".into(),
            KeyKind::Number(Range::Fraction) => "number in [0, 1)".into(),
            KeyKind::Device => "`cpu`, `cuda`, `cuda:N` or `wgpu`, or a list (`cpu,cpu`)".into(),
            KeyKind::Choice(choices) => choices
                .iter()
                .map(|c| match (c.path_of, c.args) {
                    (None, []) => format!("`{}`", c.name),
                    (None, args) => format!("`{}` or `{}({} = N)`", c.name, c.name, args[0]),
                    (Some(_), args) => format!("`{}({})`", c.name, args.join(", ")),
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        let on_resume = k.on_resume.unwrap_or("cannot change");
        out.push_str(&format!(
            "| `{}` | {value} | {} | {on_resume} |\n",
            k.name, k.meaning
        ));
    }
    out
}

pub fn keys() -> impl Iterator<Item = &'static str> {
    KEYS.iter().map(|k| k.name)
}

fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
    /// wgpu's default adapter (Vulkan, Metal or DX12; a GPU when there is one).
    Wgpu,
}

impl Device {
    /// Every device name, for messages.
    pub const NAMES: &'static str = "`cpu`, `cuda` (the first GPU), `cuda:N` or `wgpu`, or \
                                     several of one kind for data parallelism (`cpu,cpu`, \
                                     `cuda:0,cuda:1`)";

    /// The one parser of device names: `cpu`, `cuda` (device 0), `cuda:N` or `wgpu`.
    pub fn parse(s: &str) -> Option<Device> {
        match s {
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda(0)),
            "wgpu" => Some(Device::Wgpu),
            _ => s.strip_prefix("cuda:")?.parse().ok().map(Device::Cuda),
        }
    }

    /// One device, or several of one kind separated by commas (`cpu,cpu`, `cuda:0,cuda:1`):
    /// a replica of the model on each, trained data-parallel.
    pub fn parse_list(s: &str) -> Result<Vec<Device>, String> {
        let devices = s
            .split(',')
            .map(|d| {
                Device::parse(d.trim()).ok_or_else(|| format!("unknown device `{}`", d.trim()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let first = devices[0];
        let kind = std::mem::discriminant(&first);
        if devices.iter().any(|d| std::mem::discriminant(d) != kind) {
            return Err(format!(
                "`{s}` mixes kinds of device: replicas run on devices of one kind (`cpu,cpu` or \
                 `cuda:0,cuda:1`)"
            ));
        }
        if first == Device::Wgpu && devices.len() > 1 {
            return Err(
                "wgpu has one device (its default adapter): several replicas run on \
                        `cpu,cpu` or `cuda:0,cuda:1`"
                    .into(),
            );
        }
        for (i, d) in devices.iter().enumerate() {
            if matches!(d, Device::Cuda(_)) && devices[..i].contains(d) {
                return Err(format!("`{s}` names cuda:{} twice", d.index()));
            }
        }
        Ok(devices)
    }

    /// The GPU's index (0 for the CPU and wgpu).
    fn index(self) -> usize {
        match self {
            Device::Cuda(i) => i,
            _ => 0,
        }
    }
}

/// Checks one `key = value` against the schema: the key exists, the value has its kind and
/// lies in its range.
pub fn check_entry(
    key_name: &str,
    key_span: Span,
    v: &Evaluated,
) -> Result<TrainValue, Diagnostic> {
    let Some(key) = key(key_name) else {
        return Err(Diagnostic::error(
            "E0601",
            format!("unknown train key `{key_name}`"),
            key_span,
        )
        .with_label("not a train setting")
        .with_hint(
            did_you_mean(key_name, keys()).unwrap_or_else(|| {
                format!("the keys are: {}", keys().collect::<Vec<_>>().join(", "))
            }),
        ));
    };
    convert(key, v)
}

fn wrong(key: &str, expected: &str, v: &Evaluated) -> Diagnostic {
    Diagnostic::error(
        "E0602",
        format!("`{key}` must be {expected}, found {}", v.describe()),
        v.span(),
    )
    .with_label(format!("expected {expected}"))
}

fn out_of_range(key: &Key, expected: &str, v: &Evaluated) -> Diagnostic {
    let d = Diagnostic::error(
        "E0605",
        format!("`{}` must be {expected}, found {}", key.name, v.describe()),
        v.span(),
    )
    .with_label("out of range");
    if key.hint.is_empty() {
        d
    } else {
        d.with_hint(key.hint)
    }
}

fn convert(key: &Key, v: &Evaluated) -> Result<TrainValue, Diagnostic> {
    let name = key.name;
    match (key.kind, v) {
        (KeyKind::Count { min, max }, Evaluated::Num(Num::Int(i), _)) => {
            if *i < min || *i > max {
                let range = format!("a whole number from {min} to {max}");
                return Err(out_of_range(key, &range, v));
            }
            Ok(TrainValue::Int(*i))
        }
        (KeyKind::Count { min, .. }, _) => Err(wrong(name, &format!("a whole number >= {min}"), v)),
        (KeyKind::Number(range), Evaluated::Num(n, _)) => {
            if !range.contains(n.as_f64()) {
                return Err(out_of_range(key, range.describe(), v));
            }
            Ok(TrainValue::Float(n.as_f64()))
        }
        (KeyKind::Number(range), _) => Err(wrong(name, range.describe(), v)),
        (KeyKind::Device, Evaluated::Str(s, span) | Evaluated::Word(s, span)) => {
            if let Err(why) = Device::parse_list(s) {
                let label = match why.starts_with("unknown") {
                    true => "not a device",
                    false => "not one kind of device",
                };
                return Err(Diagnostic::error("E0605", why, *span)
                    .with_label(label)
                    .with_hint(Device::NAMES));
            }
            Ok(TrainValue::Str(s.clone()))
        }
        (KeyKind::Device, _) => Err(wrong(name, "a device name", v)),
        (KeyKind::Choice(choices), Evaluated::Word(w, s)) => {
            let choice = choose(name, choices, w, *s)?;
            if let Some(what) = choice.path_of {
                return Err(needs_path(w, what, *s));
            }
            Ok(TrainValue::Choice {
                name: w.clone(),
                args: BTreeMap::new(),
                positional: Vec::new(),
            })
        }
        (
            KeyKind::Choice(choices),
            Evaluated::Call {
                name: called,
                name_span,
                positional,
                named,
                ..
            },
        ) => {
            let choice = choose(name, choices, called, *name_span)?;
            call_arguments(choice, called, *name_span, positional, named)
        }
        (KeyKind::Choice(choices), _) => {
            let names: Vec<&str> = choices.iter().map(|c| c.name).collect();
            Err(wrong(name, &format!("one of {}", names.join(", ")), v))
        }
    }
}

/// The arguments of `CHOICE(...)`: at most its unnamed ones (paths), named ones it takes, none
/// given twice, and the path where it needs one.
fn call_arguments(
    choice: &Choice,
    called: &str,
    name_span: Span,
    positional: &[Evaluated],
    named: &[(String, Span, Evaluated)],
) -> Result<TrainValue, Diagnostic> {
    if positional.len() > choice.positional {
        return Err(Diagnostic::error(
            "E0608",
            format!(
                "`{called}(...)` takes {} unnamed argument{}",
                choice.positional,
                if choice.positional == 1 { "" } else { "s" }
            ),
            positional[choice.positional].span(),
        )
        .with_label("one too many")
        .with_hint(format!("its arguments are: {}", choice.args.join(", "))));
    }
    let mut args = BTreeMap::new();
    for (k, k_span, a) in named {
        if !choice.args.contains(&k.as_str()) {
            return Err(Diagnostic::error(
                "E0608",
                format!("`{called}(...)` has no argument `{k}`"),
                *k_span,
            )
            .with_label("unknown argument")
            .with_hint(
                did_you_mean(k, choice.args.iter().copied())
                    .unwrap_or_else(|| format!("its arguments are: {}", choice.args.join(", "))),
            ));
        }
        args.insert(k.clone(), argument(k, a)?);
    }
    let positional: Vec<TrainValue> = positional.iter().map(path).collect::<Result<_, _>>()?;
    // `text("a.txt", "v.txt", valid = "w.txt")`: one of the two would be dropped.
    for (arg, _) in choice.args.iter().zip(&positional) {
        if let Some((_, k_span, _)) = named.iter().find(|(k, _, _)| k == arg) {
            return Err(Diagnostic::error(
                "E0608",
                format!("`{called}(...)` is given `{arg}` twice, by place and by name"),
                *k_span,
            )
            .with_label("given by place already")
            .with_hint("give it once"));
        }
    }
    if let Some(what) = choice.path_of {
        if positional.is_empty() && !args.contains_key("path") {
            return Err(needs_path(called, what, name_span));
        }
    }
    Ok(TrainValue::Choice {
        name: called.to_string(),
        args,
        positional,
    })
}

fn needs_path(name: &str, what: &str, span: Span) -> Diagnostic {
    Diagnostic::error(
        "E0608",
        format!("`{name}(...)` needs the path of its {what}"),
        span,
    )
    .with_label("no path")
    .with_hint(format!(
        "e.g. `{name}(\"data/...\")`; relative paths start at the spec's folder"
    ))
}

fn choose(
    key: &str,
    choices: &'static [Choice],
    w: &str,
    span: Span,
) -> Result<&'static Choice, Diagnostic> {
    if let Some(c) = choices.iter().find(|c| c.name == w) {
        return Ok(c);
    }
    let names = choices.iter().map(|c| c.name);
    Err(
        Diagnostic::error("E0602", format!("unknown {key} `{w}`"), span)
            .with_label(format!("not a {key} choice"))
            .with_hint(did_you_mean(w, names.clone()).unwrap_or_else(|| {
                format!("choose one of {}", names.collect::<Vec<_>>().join(", "))
            })),
    )
}

/// A named argument: `warmup` is a step count, the others are paths.
fn argument(name: &str, v: &Evaluated) -> Result<TrainValue, Diagnostic> {
    match (name, v) {
        ("warmup", Evaluated::Num(Num::Int(i), _)) if *i >= 0 => Ok(TrainValue::Int(*i)),
        ("warmup", _) => Err(wrong("warmup", "a whole number >= 0", v)),
        ("chat", Evaluated::Word(w, _)) if w == "true" || w == "false" => {
            Ok(TrainValue::Str(w.clone()))
        }
        ("chat", _) => Err(wrong("chat", "`true` or `false`", v)),
        ("prompt" | "response", Evaluated::Str(s, _)) => Ok(TrainValue::Str(s.clone())),
        ("prompt" | "response", _) => Err(wrong(name, "the name of a field, as a string", v)),
        _ => path(v),
    }
}

fn path(v: &Evaluated) -> Result<TrainValue, Diagnostic> {
    match v {
        Evaluated::Str(s, _) => Ok(TrainValue::Str(s.clone())),
        other => Err(Diagnostic::error(
            "E0602",
            format!("a path here is a string, found {}", other.describe()),
            other.span(),
        )
        .with_label("expected a \"path\"")),
    }
}

/// An override that could not be taken, rendered against its own text (or, for `check --set`,
/// against the spec it was spliced into).
#[derive(Debug)]
pub struct OverrideError {
    pub source: Source,
    pub diagnostic: Diagnostic,
}

/// Parses `key=value` with the spec's own value syntax and checks it against the schema.
pub fn parse_override(text: &str) -> Result<(String, TrainValue), OverrideError> {
    let source = Source::new("--set", text.to_string());
    let fail = |d: Diagnostic| OverrideError {
        source: source.clone(),
        diagnostic: d,
    };
    let (key, value, offset) =
        crate::syntax::split_assignment(text, "key", "e.g. `--set steps=100 --set lr=3e-3`")
            .map_err(fail)?;
    // A device is a bare word on the command line too: `--set device=cuda:1`.
    let quoted;
    let value = match self::key(key) {
        Some(k) if matches!(k.kind, KeyKind::Device) && !value.trim().starts_with('"') => {
            quoted = format!("\"{}\"", value.trim());
            quoted.as_str()
        }
        _ => value,
    };
    let value_ast = crate::syntax::parse_value_at(value, offset).map_err(fail)?;
    let evaluated = Scope::default().eval_value(&value_ast).map_err(fail)?;
    let v = check_entry(key, Span::new(0, key.len()), &evaluated).map_err(fail)?;
    Ok((key.to_string(), v))
}

/// One layer of settings, with `schedule(warmup = N)` split into `schedule` and `warmup`, the
/// one setting it is. In the spec (whose keys are each written once) a schedule's warm-up that
/// differs from `warmup` is a contradiction; on the command line a later `--set` wins.
fn normalize(
    layer: &[(String, TrainValue)],
    later_wins: bool,
) -> Result<BTreeMap<String, TrainValue>, OptionsError> {
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: TrainValue| match out.get(k) {
        Some(old) if *old != v && !later_wins => Err(OptionsError {
            key: k.to_string(),
            message: format!("`schedule(warmup = ...)` and `warmup` give two warm-ups ({k})"),
        }),
        _ => {
            out.insert(k.to_string(), v);
            Ok(())
        }
    };
    for (k, v) in layer {
        let mut v = v.clone();
        if let TrainValue::Choice { args, .. } = &mut v {
            if k == "schedule" {
                if let Some(w) = args.remove("warmup") {
                    put("warmup", w)?;
                }
            }
        }
        put(k, v)?;
    }
    Ok(out)
}

/// Settings that cannot be taken together: what is wrong, and the key to point at.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionsError {
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for OptionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The keys that say how long a run is: setting one in a later layer replaces the other.
const RUN_LENGTH: [&str; 2] = ["steps", "epochs"];

impl TrainOptions {
    /// The spec's entries, then the overrides (a later layer wins; `steps` and `epochs` replace
    /// each other), every value applied by its key, then the checks between keys.
    pub fn resolve(
        entries: &[(String, TrainValue)],
        overrides: &[(String, TrainValue)],
    ) -> Result<TrainOptions, OptionsError> {
        let mut spec = TrainOptions::default();
        for (k, v) in &normalize(entries, false)? {
            // Every entry was checked against the schema when it was read.
            (key(k).expect("a schema key").set)(&mut spec, v);
        }
        spec.with(overrides)
    }

    /// What no single key can check: the error, and the key it is best pointed at.
    pub fn check_between_keys(&self) -> Result<(), (&'static str, String)> {
        if self.steps.is_some() && self.epochs.is_some() {
            let why = "`steps` and `epochs` are both set: a run's length is one of them";
            return Err(("epochs", why.into()));
        }
        if self.min_lr > self.lr {
            let why = format!(
                "`min_lr` = {} is above `lr` = {}: the schedule decays from lr to min_lr",
                self.min_lr, self.lr
            );
            return Err(("min_lr", why));
        }
        match self.steps {
            Some(steps) if self.warmup > steps => {
                let why = format!(
                    "`warmup` = {} is longer than the run (`steps` = {steps})",
                    self.warmup
                );
                Err(("warmup", why))
            }
            _ => Ok(()),
        }
    }

    /// The options of a resumed run: these (what the run trained with so far), then the
    /// overrides of the resume, each of a key that may change on resume.
    pub fn resume_with(&self, overrides: &[(String, TrainValue)]) -> Result<Self, OptionsError> {
        for (k, _) in overrides {
            if key(k).expect("a schema key").on_resume.is_none() {
                let can: Vec<&str> = KEYS
                    .iter()
                    .filter(|k| k.on_resume.is_some())
                    .map(|k| k.name)
                    .collect();
                return Err(OptionsError {
                    key: k.clone(),
                    message: format!(
                        "`{k}` cannot change when a run resumes: the weights, the optimizer state \
                         and the schedule so far were made with the run's value; the keys that \
                         can are {}",
                        can.join(", ")
                    ),
                });
            }
        }
        self.with(overrides)
    }

    /// These options, then the overrides (a later one wins; `steps` and `epochs` replace each
    /// other), then the checks between keys.
    pub fn with(&self, overrides: &[(String, TrainValue)]) -> Result<Self, OptionsError> {
        let later = normalize(overrides, true)?;
        let mut o = self.clone();
        // A run length in the overrides replaces the earlier one, whichever key it used.
        if RUN_LENGTH.iter().any(|k| later.contains_key(*k)) {
            (o.steps, o.epochs) = (None, None);
        }
        for (k, v) in &later {
            (key(k).expect("a schema key").set)(&mut o, v);
        }
        o.check_between_keys()
            .map_err(|(key, message)| OptionsError {
                key: key.to_string(),
                message,
            })?;
        Ok(o)
    }

    /// The device training runs on: the first of `devices()` (where evaluation, generation
    /// and benchmarks run).
    pub fn device(&self) -> Device {
        self.devices()[0]
    }

    /// One device per replica.
    pub fn devices(&self) -> Vec<Device> {
        Device::parse_list(&self.device).expect("checked against the schema")
    }
}

/// `data = ...` as a data source (the value was checked against the schema).
fn data_spec(v: &TrainValue) -> DataSpec {
    let TrainValue::Choice {
        name,
        args,
        positional,
    } = v
    else {
        unreachable!("checked against the schema")
    };
    // An argument by name, or by its place: unnamed arguments come in the schema's order.
    let choice = DATA.iter().find(|c| c.name == name).expect("checked");
    let arg = |key: &str| {
        let place = choice.args.iter().position(|a| *a == key);
        args.get(key).or_else(|| positional.get(place?))
    };
    let text = |key: &str| match arg(key) {
        Some(TrainValue::Str(s)) => Some(s.clone()),
        _ => None,
    };
    let path = |key: &str| text(key).map(PathBuf::from);
    // A missing path reads as the empty path, which the data loader refuses by name.
    let first = path("path").unwrap_or_default();
    match name.as_str() {
        "text" => DataSpec::Text {
            train: first,
            valid: path("valid"),
            tokenizer: path("tokenizer"),
        },
        "jsonl" => DataSpec::Jsonl {
            train: first,
            valid: path("valid"),
            prompt: text("prompt").unwrap_or_else(|| "prompt".into()),
            response: text("response").unwrap_or_else(|| "response".into()),
            chat: text("chat").is_some_and(|c| c == "true"),
            tokenizer: path("tokenizer"),
        },
        "tokens" => DataSpec::Tokens { dir: first },
        "mnist" => DataSpec::Mnist { dir: first },
        _ => DataSpec::Cifar10 { dir: first },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str) -> (String, TrainValue) {
        parse_override(text).unwrap_or_else(|e| panic!("{text}: {}", e.diagnostic.message))
    }

    fn code(text: &str) -> &'static str {
        match parse_override(text) {
            Ok(_) => panic!("{text} was accepted"),
            Err(e) => e.diagnostic.code,
        }
    }

    #[test]
    fn every_value_out_of_range_is_refused_with_its_code() {
        for bad in [
            "steps=0",
            "epochs=0",
            "batch=0",
            "accum=0",
            "log_every=0",
            "eval_batches=0",
            "beta1=5",
            "beta2=1",
            "eps=0",
            "lr=0",
            "dropout=1",
            "device=tpu",
            "device=cuda:x",
            "steps=5000000000",
        ] {
            assert_eq!(code(bad), "E0605", "{bad}");
        }
        for wrong in ["warmup=3.7", "schedule=cosine(warmup=0.5)", "steps=\"ten\""] {
            assert_eq!(code(wrong), "E0602", "{wrong}");
        }
        for arguments in [
            "schedule=cosine(warmpu=3)",
            "data=text",
            "data=text()",
            "data=mnist(\"a\", \"b\")",
            "data=text(\"a\", \"v\", valid = \"w\")",
            "data=mnist(\"a\", path = \"b\")",
        ] {
            assert_eq!(code(arguments), "E0608", "{arguments}");
        }
        assert_eq!(code("steps"), "E0607");
        assert_eq!(code("stpes=3"), "E0601");
        for good in [
            "steps=1",
            "beta2=0.95",
            "dropout=0",
            "device=cuda:1",
            "clip=0",
        ] {
            set(good);
        }
    }

    #[test]
    fn overrides_win_and_a_schedule_warmup_is_the_warmup_setting() {
        let spec = vec![set("warmup=2"), set("steps=10"), set("lr=0.01")];
        let o = TrainOptions::resolve(&spec, &[set("schedule=cosine(warmup=3)")]).unwrap();
        assert_eq!((o.warmup, o.schedule), (3, Schedule::Cosine));
        // In the spec, two different warm-ups are a conflict, not a silent choice; on the command
        // line the later `--set` wins, as it does for every key.
        let twice = [set("warmup=2"), set("schedule=linear(warmup=3)")];
        let e = TrainOptions::resolve(&twice, &[]).unwrap_err();
        assert_eq!(e.key, "warmup");
        let o = TrainOptions::resolve(&[], &twice).unwrap();
        assert_eq!((o.warmup, o.schedule), (3, Schedule::Linear));
        let o = TrainOptions::resolve(&[], &[set("lr=0.1"), set("lr=0.2")]).unwrap();
        assert_eq!(o.lr, 0.2);
        // `steps` on the command line replaces the spec's `epochs`, and the other way round.
        let o = TrainOptions::resolve(&[set("epochs=5")], &[set("steps=20")]).unwrap();
        assert_eq!((o.steps, o.epochs), (Some(20), None));
        let o = TrainOptions::resolve(&[set("steps=5")], &[set("epochs=2")]).unwrap();
        assert_eq!((o.steps, o.epochs), (None, Some(2)));
    }

    #[test]
    fn settings_that_contradict_each_other_are_refused() {
        let cases = [
            (vec![set("lr=0.001"), set("min_lr=0.01")], "min_lr"),
            (vec![set("steps=10"), set("warmup=20")], "warmup"),
            (vec![set("steps=10"), set("epochs=2")], "epochs"),
        ];
        for (layer, key) in cases {
            let e = TrainOptions::resolve(&layer, &[]).unwrap_err();
            assert_eq!(e.key, key, "{}", e.message);
        }
        // Both lengths among the overrides are a contradiction too, not a silent choice.
        let both = [set("steps=3"), set("epochs=2")];
        assert_eq!(TrainOptions::resolve(&[], &both).unwrap_err().key, "epochs");
        let e = TrainOptions::default().with(&both).unwrap_err();
        assert_eq!(e.key, "epochs");
        // An override that resolves the contradiction is taken.
        let o = TrainOptions::resolve(&[set("steps=10"), set("warmup=20")], &[set("steps=40")]);
        assert_eq!(o.unwrap().warmup, 20);
    }

    #[test]
    fn a_resume_changes_only_the_keys_that_may_change() {
        let first = TrainOptions::resolve(&[set("steps=100"), set("lr=0.01")], &[]).unwrap();
        let longer = first
            .resume_with(&[set("steps=200"), set("log_every=1"), set("keep=0")])
            .unwrap();
        assert_eq!(
            (longer.steps, longer.log_every, longer.keep),
            (Some(200), 1, 0)
        );
        assert_eq!(longer.lr, 0.01);
        let by_epochs = first.resume_with(&[set("epochs=3")]).unwrap();
        assert_eq!((by_epochs.steps, by_epochs.epochs), (None, Some(3)));
        for fixed in [
            "lr=0.1",
            "batch=2",
            "schedule=constant",
            "warmup=1",
            "seed=1",
        ] {
            let e = first.resume_with(&[set(fixed)]).unwrap_err();
            assert!(
                e.message.contains("cannot change when a run resumes"),
                "{fixed}"
            );
        }
    }

    #[test]
    fn the_docs_table_of_keys_is_the_schema() {
        let docs = include_str!("../docs/language.md");
        assert!(
            docs.contains(&docs_table()),
            "docs/language.md's train table differs from the schema; it should read:\n{}",
            docs_table()
        );
    }

    #[test]
    fn every_key_sets_its_option() {
        let all = [
            "data=text(\"t.txt\", valid = \"v.txt\")",
            "steps=7",
            "batch=3",
            "accum=2",
            "lr=0.5",
            "min_lr=0.25",
            "schedule=linear",
            "warmup=4",
            "weight_decay=0.2",
            "beta1=0.8",
            "beta2=0.9",
            "eps=0.001",
            "clip=2",
            "dropout=0.1",
            "seed=9",
            "eval_every=5",
            "eval_batches=6",
            "log_every=3",
            "checkpoint_every=2",
            "keep=5",
            "dtype=bf16",
            "device=cuda:1",
        ];
        let layer: Vec<_> = all.iter().map(|t| set(t)).collect();
        let o = TrainOptions::resolve(&layer, &[]).unwrap();
        let got = serde_json::to_value(&o).unwrap();
        let want = serde_json::json!({
            "data": {"kind": "text", "train": "t.txt", "valid": "v.txt", "tokenizer": null},
            "steps": 7, "epochs": null, "batch": 3, "accum": 2, "lr": 0.5, "min_lr": 0.25,
            "schedule": "linear", "warmup": 4, "weight_decay": 0.2, "beta1": 0.8, "beta2": 0.9,
            "eps": 0.001, "clip": 2.0, "dropout": 0.1, "seed": 9, "eval_every": 5,
            "eval_batches": 6, "log_every": 3, "checkpoint_every": 2, "keep": 5, "dtype": "bf16",
            "device": "cuda:1"
        });
        assert_eq!(got, want);
        // What a run records in resolved.json, a resume reads back.
        let back: TrainOptions = serde_json::from_value(got).unwrap();
        assert_eq!(back, o);
        // `epochs` is the one key left out above (it excludes `steps`).
        assert_eq!(KEYS.len(), all.len() + 1);
        assert_eq!(o.device(), Device::Cuda(1));
    }
}
