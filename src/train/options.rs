//! Training options: the spec's `train` section, then `--set key=value` overrides, each checked
//! against the same schema (`resolve::train::SCHEMA`).

use crate::diagnostic::Diagnostic;
use crate::resolve::eval::Scope;
use crate::resolve::train::check_entry;
use crate::source::{Source, Span};
use crate::spec::TrainValue;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DataSpec {
    /// Text files: byte-level tokens, or those of a HuggingFace tokenizer.json.
    Text {
        train: PathBuf,
        valid: Option<PathBuf>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Cosine,
    Linear,
}

#[derive(Debug, Clone, serde::Serialize)]
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
    pub device: String,
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
            device: "cpu".into(),
        }
    }
}

/// An override that could not be taken, rendered against its own text.
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
    let Some((key, value)) = text.split_once('=') else {
        return Err(fail(
            Diagnostic::error(
                "E0601",
                "an override is `key=value`",
                Span::new(0, text.len()),
            )
            .with_label("no `=`")
            .with_hint("e.g. `--set steps=100 --set lr=3e-3`"),
        ));
    };
    let key = key.trim();
    let offset = text.find('=').unwrap() + 1;
    // Parsed with the key's width as padding, so spans point into the whole `key=value`.
    let padded = format!("{}{value}", " ".repeat(offset));
    let value_ast = crate::syntax::parse_value(&padded).map_err(fail)?;
    let evaluated = Scope::default().eval_value(&value_ast).map_err(fail)?;
    let v = check_entry(key, Span::new(0, key.len()), &evaluated).map_err(fail)?;
    Ok((key.to_string(), v))
}

impl TrainOptions {
    /// The spec's entries, then the overrides (later wins).
    pub fn resolve(
        entries: &BTreeMap<String, TrainValue>,
        overrides: &[(String, TrainValue)],
    ) -> Result<TrainOptions, String> {
        let mut all = entries.clone();
        for (k, v) in overrides {
            all.insert(k.clone(), v.clone());
        }
        let mut o = TrainOptions::default();
        for (k, v) in &all {
            let int = || match v {
                TrainValue::Int(i) => Ok(*i as u64),
                _ => Err(format!("`{k}` must be a whole number")),
            };
            let num = || match v {
                TrainValue::Int(i) => Ok(*i as f64),
                TrainValue::Float(f) => Ok(*f),
                _ => Err(format!("`{k}` must be a number")),
            };
            match k.as_str() {
                "data" => o.data = Some(data_spec(v)?),
                "steps" => o.steps = Some(int()?),
                "epochs" => o.epochs = Some(int()?),
                "batch" => o.batch = int()?.max(1) as usize,
                "accum" => o.accum = int()?.max(1) as usize,
                "lr" => o.lr = num()?,
                "min_lr" => o.min_lr = num()?,
                "schedule" => {
                    let TrainValue::Choice { name, args, .. } = v else {
                        return Err("`schedule` must be constant, cosine or linear".into());
                    };
                    o.schedule = match name.as_str() {
                        "constant" => Schedule::Constant,
                        "linear" => Schedule::Linear,
                        _ => Schedule::Cosine,
                    };
                    if let Some(TrainValue::Int(w)) = args.get("warmup") {
                        o.warmup = *w as u64;
                    }
                }
                "warmup" => o.warmup = int()?,
                "weight_decay" => o.weight_decay = num()?,
                "beta1" => o.beta1 = num()?,
                "beta2" => o.beta2 = num()?,
                "eps" => o.eps = num()?,
                "clip" => o.clip = num()?,
                "dropout" => o.dropout = num()?,
                "seed" => o.seed = int()?,
                "eval_every" => o.eval_every = int()?,
                "eval_batches" => o.eval_batches = int()?.max(1) as usize,
                "log_every" => o.log_every = int()?.max(1),
                "checkpoint_every" => o.checkpoint_every = int()?,
                "device" => {
                    if let TrainValue::Str(s) = v {
                        o.device = s.clone();
                    }
                }
                other => return Err(format!("unknown train key `{other}`")),
            }
        }
        Ok(o)
    }
}

fn data_spec(v: &TrainValue) -> Result<DataSpec, String> {
    let TrainValue::Choice {
        name,
        args,
        positional,
    } = v
    else {
        return Err("`data` must be text(...), tokens(...), mnist(...) or cifar10(...)".into());
    };
    let path = |key: &str, pos: usize| -> Option<PathBuf> {
        match args.get(key).or_else(|| positional.get(pos)) {
            Some(TrainValue::Str(s)) => Some(PathBuf::from(s)),
            _ => None,
        }
    };
    let first = |what: &str| {
        path("path", 0).ok_or_else(|| format!("`{name}(...)` needs the path of its {what}"))
    };
    Ok(match name.as_str() {
        "text" => DataSpec::Text {
            train: first("training text")?,
            valid: path("valid", 1),
            tokenizer: path("tokenizer", 2),
        },
        "tokens" => DataSpec::Tokens {
            dir: first("shard folder")?,
        },
        "mnist" => DataSpec::Mnist {
            dir: first("IDX folder")?,
        },
        _ => DataSpec::Cifar10 {
            dir: first("binary batch folder")?,
        },
    })
}
