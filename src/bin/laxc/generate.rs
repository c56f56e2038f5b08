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
    /// The text to continue (with --chat: the user's message).
    #[arg(long)]
    prompt: String,
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
            let text = laxc::import::spec_text(&pretrained, &base.display().to_string());
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
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::from(IO_ERROR)
    };
    let codec = match TextCodec::for_model(
        &m.spec.compiled,
        m.spec.options.data.as_ref(),
        m.base.as_deref(),
    ) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let text = match a.chat {
        true => match codec.chat(&a.prompt) {
            Ok(t) => t,
            Err(e) => return fail(e),
        },
        false => a.prompt.clone(),
    };
    let prompt = match codec.encode(&text) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
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
    let streaming = a.format == Format::Text;
    if streaming && !a.chat {
        print!("{}", a.prompt);
    }
    let mut stream = Stream::new();
    let mut on_token = |id: u32| {
        let new = stream.push(&codec, id);
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
        prompt: &prompt,
        sampling: &sampling,
        is_stop: &|id| codec.is_stop(id),
        on_token: &mut on_token,
    };
    let stats = match session::generate_text(request) {
        Ok(s) => s,
        Err(r) => return refused(r),
    };
    let answer = codec.decode(stream.ids());
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
                "prompt": a.prompt,
                "text": answer,
                "tokens": stream.ids(),
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
