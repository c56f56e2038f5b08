//! `laxc generate`: text from a language model, streamed as it is generated. The weights come
//! from a run (`--checkpoint`), a pretrained file (`--base`: GGUF, HuggingFace directory) or the
//! base a LoRA spec names; the spec from the command line, the run's record, or the base itself
//! (the spec `laxc import` would write).

use crate::common::{self, Format, IO_ERROR};
use crate::train::{options, refused, spec_of_checkpoint, Placement, ToEvaluate};
use laxc::generate::{Sampling, Stream, TextCodec};
use laxc::train::session::{self, GenerateRequest, WeightsFrom};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The .lax spec (default: the spec the --checkpoint's run recorded, or the one `laxc
    /// import` writes for the --base).
    spec: Option<PathBuf>,
    /// A run folder (its latest checkpoint) or a checkpoint folder.
    #[arg(long, conflicts_with = "base")]
    checkpoint: Option<PathBuf>,
    /// Pretrained weights: a GGUF file, a HuggingFace directory, or a dense laxc
    /// model.safetensors.
    #[arg(long)]
    base: Option<PathBuf>,
    /// A PEFT LoRA adapter (adapter_config.json, adapter_model.safetensors) over the --base:
    /// without a spec, its LoRA sites come from the adapter's config.
    #[arg(long, requires = "base")]
    adapter: Option<PathBuf>,
    /// The tokenizer: a tokenizer.json, GGUF file or HuggingFace directory (default: the
    /// base's, else the run's data's: bytes or its tokenizer.json). E.g. GPT-2's tokenizer.json
    /// for a model trained on llm.c token shards.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// The text to continue (with --chat: the user's message).
    #[arg(long, required_unless_present = "prompts", conflicts_with = "prompts")]
    prompt: Option<String>,
    /// A JSONL file of prompts (the `--field` of each line): one answer each, printed as JSONL
    /// `{"prompt", "output", "tokens"}` lines, from one loaded model.
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// The field of each `--prompts` line that holds the prompt.
    #[arg(long, default_value = "prompt")]
    field: String,
    /// Stop after this many tokens (or at the model's end-of-text token, or its context).
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 (default): always the most likely token; higher: more varied samples.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Sample among the k most likely tokens only.
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample among the fewest most likely tokens whose probabilities add up to p.
    #[arg(long)]
    top_p: Option<f64>,
    /// The sampling seed: the same seed, prompt and settings give the same text.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Lay the prompt out as one user turn of the model's chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    placement: Placement,
    /// `json`: the prompt, the text and the figures as one JSON object (nothing streamed).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// The model to generate from: its spec and options, where its weights are, and the file
/// whose tokenizer it reads (a pretrained base).
struct Model {
    spec: ToEvaluate,
    base: Option<PathBuf>,
}

fn model(a: &GenerateArgs) -> Result<Model, ExitCode> {
    let device = a.placement.device.as_deref();
    if let Some(ck) = &a.checkpoint {
        let spec = spec_of_checkpoint(a.spec.as_deref(), ck, &[], device, a.format)?;
        let base = lora_base(&spec);
        return Ok(Model { spec, base });
    }
    let (source, compiled) = match (&a.spec, &a.base) {
        (Some(p), _) => common::read_and_compile(Some(p), a.format)?,
        (None, Some(base)) => {
            let pretrained = laxc::import::read_pretrained(base).map_err(|e| {
                eprintln!("error: {e}");
                ExitCode::from(IO_ERROR)
            })?;
            let base_text = base.display().to_string();
            let mut text = laxc::import::spec_text(&pretrained, &base_text);
            if let Some(adapter) = &a.adapter {
                text += &laxc::import::peft_rule(adapter, &base_text).map_err(|e| {
                    eprintln!("error: {e}");
                    ExitCode::from(IO_ERROR)
                })?;
            }
            let source = laxc::source::Source::new(format!("{} (imported)", base.display()), &text);
            let compiled = common::compile(&source, a.format)?;
            (source, compiled)
        }
        (None, None) => {
            eprintln!(
                "error: generate needs weights: --checkpoint RUN, --base FILE, or a spec whose \
                 LoRA sites name a base"
            );
            return Err(ExitCode::from(IO_ERROR));
        }
    };
    let opts = options(&source, &compiled, &[], device)?;
    let spec_dir = session::spec_dir(a.spec.as_deref()).map_err(refused)?;
    let spec = ToEvaluate {
        source,
        compiled,
        options: opts,
        spec_dir,
    };
    let base = a.base.clone().or_else(|| lora_base(&spec));
    Ok(Model { spec, base })
}

/// The prompt given, or the `--field` of every line of the `--prompts` file.
fn prompt_texts(a: &GenerateArgs) -> Result<Vec<String>, String> {
    let Some(file) = &a.prompts else {
        return Ok(vec![a.prompt.clone().unwrap_or_default()]);
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = |what: String| format!("{} line {}: {what}", file.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let p = v[&a.field]
            .as_str()
            .ok_or_else(|| at(format!("no string field `{}`", a.field)))?;
        out.push(p.to_string());
    }
    if out.is_empty() {
        return Err(format!("{} has no prompts", file.display()));
    }
    Ok(out)
}

/// The base the spec's LoRA sites name, found as the spec's files are.
fn lora_base(s: &ToEvaluate) -> Option<PathBuf> {
    let base = laxc::lower::base::base_file(&s.compiled.spec).ok()??;
    Some(laxc::train::data::locate(&base, &s.spec_dir))
}

pub fn run(a: GenerateArgs) -> ExitCode {
    let m = match model(&a) {
        Ok(m) => m,
        Err(c) => return c,
    };
    if let Err(c) = a.placement.start_threads(m.spec.options.device()) {
        return c;
    }
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(IO_ERROR)
    };
    let codec = match &a.tokenizer {
        Some(t) => TextCodec::from_path(t),
        None => TextCodec::for_model(
            &m.spec.compiled,
            m.spec.options.data.as_ref(),
            m.base.as_deref(),
        ),
    };
    let codec = match codec {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let texts = match prompt_texts(&a) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let mut prompts = Vec::with_capacity(texts.len());
    for text in &texts {
        let laid_out = match a.chat {
            true => codec.chat(text),
            false => Ok(text.clone()),
        };
        match laid_out.and_then(|t| codec.encode(&t)) {
            Ok(p) => prompts.push(p),
            Err(e) => return fail(e),
        }
    }
    let sampling = Sampling {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        seed: a.seed,
    };
    if let Err(e) = sampling.check() {
        return fail(e);
    }
    let weights = match (&a.checkpoint, &a.base) {
        (Some(ck), _) => WeightsFrom::Checkpoint(ck),
        (None, Some(base)) => WeightsFrom::Base(base),
        (None, None) => WeightsFrom::SpecBase,
    };
    // One prompt in text: the answer streams after the prompt.
    let streaming = a.format == Format::Text && a.prompts.is_none();
    if streaming && !a.chat {
        print!("{}", texts[0]);
    }
    let mut streams: Vec<Stream> = texts.iter().map(|_| Stream::new()).collect();
    let mut on_token = |i: usize, id: u32| {
        let new = streams[i].push(&codec, id);
        if streaming {
            print!("{new}");
            let _ = std::io::stdout().flush();
        }
    };
    let request = GenerateRequest {
        compiled: &m.spec.compiled,
        device: m.spec.options.device(),
        backend: a.placement.backend.into(),
        spec_dir: &m.spec.spec_dir,
        weights,
        adapter: a.adapter.as_deref(),
        prompts: &prompts,
        sampling: &sampling,
        is_stop: &|id| codec.is_stop(id),
        on_token: &mut on_token,
    };
    let stats = match session::generate_text(request) {
        Ok(s) => s,
        Err(r) => return refused(r),
    };
    let answers: Vec<String> = streams.iter().map(|s| codec.decode(s.ids())).collect();
    if a.prompts.is_some() {
        for ((text, answer), st) in texts.iter().zip(&answers).zip(&stats) {
            let line = serde_json::json!({
                "prompt": text, "output": answer, "tokens": st.generated, "stopped": st.stopped,
            });
            println!("{line}");
        }
        let generated: usize = stats.iter().map(|s| s.generated).sum();
        let seconds: f64 = stats
            .iter()
            .map(|s| s.prefill_seconds + s.decode_seconds)
            .sum();
        eprintln!(
            "{} prompts, {generated} tokens in {seconds:.1} s",
            stats.len()
        );
        return ExitCode::SUCCESS;
    }
    let (stats, answer) = (&stats[0], &answers[0]);
    match a.format {
        Format::Text => {
            println!();
            let _ = std::io::stdout().flush();
            eprintln!(
                "{} tokens after a prompt of {} ({:.2} s): {:.1} tokens/s{}",
                stats.generated,
                stats.prompt_tokens,
                stats.prefill_seconds,
                stats.tokens_per_second(),
                if stats.stopped {
                    ", stopped at end of text"
                } else {
                    ""
                }
            );
        }
        Format::Json => println!(
            "{}",
            common::to_json_text(&serde_json::json!({
                "spec": m.spec.source.name,
                "prompt": texts[0],
                "text": answer,
                "tokens": streams[0].ids(),
                "prompt_tokens": stats.prompt_tokens,
                "generated_tokens": stats.generated,
                "stopped": stats.stopped,
                "prefill_seconds": stats.prefill_seconds,
                "tokens_per_second": stats.tokens_per_second(),
            }))
        ),
    }
    ExitCode::SUCCESS
}
