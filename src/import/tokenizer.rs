//! A pretrained model's tokenizer: a HuggingFace directory's `tokenizer.json`, or the byte-level
//! BPE a GGUF file carries in its `tokenizer.ggml.*` metadata (vocabulary, merges, the control
//! tokens), rebuilt as the `tokenizers` crate's tokenizer with the pre-tokenizer llama.cpp uses
//! for the file's `tokenizer.ggml.pre`.

use super::gguf::{Gguf, MetaValue};
use super::Format;
use crate::options::DataSpec;
use serde_json::json;
use std::path::Path;
use tokenizers::Tokenizer;

/// A tokenizer and the ids of its special tokens.
pub struct PretrainedTokenizer {
    pub tokenizer: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// The chat template (Jinja), where the checkpoint has one.
    pub chat_template: Option<String>,
    /// Whether a text starts with the begin-of-sequence token (GGUF's
    /// `tokenizer.ggml.add_bos_token`; a tokenizer.json's post-processor says it itself).
    pub add_bos: bool,
}

impl PretrainedTokenizer {
    /// A tokenizer.json file, as a run's `text(..., tokenizer = ...)` names it.
    pub fn from_file(path: &Path) -> Result<PretrainedTokenizer, String> {
        let tokenizer = Tokenizer::from_file(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Ok(PretrainedTokenizer {
            tokenizer,
            bos: None,
            eos: None,
            chat_template: None,
            add_bos: false,
        })
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        // With special tokens: a tokenizer.json's post-processor adds what its model expects.
        let mut ids = self
            .tokenizer
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| format!("cannot tokenize the prompt: {e}"))?;
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.tokenizer.decode(ids, false).unwrap_or_default()
    }

    /// Whether `id` is a token that ends generation (the end-of-sequence token, or a control
    /// token of the chat format such as `<|im_end|>`).
    pub fn is_stop(&self, id: u32) -> bool {
        Some(id) == self.eos
            || self
                .tokenizer
                .id_to_token(id)
                .is_some_and(|t| t == "<|im_end|>" || t == "<|endoftext|>" || t == "</s>")
    }
}

/// The tokenizer of a GGUF file or HuggingFace directory.
pub fn read(path: &Path) -> Result<PretrainedTokenizer, String> {
    match Format::of(path) {
        Format::Gguf => from_gguf(&Gguf::open(path)?),
        Format::HfDir => from_hf_dir(path),
        Format::Laxc => Err(format!(
            "{} has no tokenizer (a laxc safetensors file)",
            path.display()
        )),
    }
}

fn from_hf_dir(dir: &Path) -> Result<PretrainedTokenizer, String> {
    let tokenizer = PretrainedTokenizer::from_file(&dir.join("tokenizer.json"))?.tokenizer;
    let config: serde_json::Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let id_of = |key: &str| {
        let token = match &config[key] {
            serde_json::Value::String(s) => Some(s.clone()),
            v => v["content"].as_str().map(String::from),
        };
        token.and_then(|t| tokenizer.token_to_id(&t))
    };
    Ok(PretrainedTokenizer {
        bos: id_of("bos_token"),
        eos: id_of("eos_token"),
        chat_template: config["chat_template"].as_str().map(String::from),
        add_bos: false,
        tokenizer,
    })
}

/// The pre-tokenizer llama.cpp applies for `tokenizer.ggml.pre` (llama-vocab.cpp): GPT-2's
/// regex, with digits split one by one first for the SmolLM family.
fn pre_tokenizer(pre: &str) -> Result<serde_json::Value, String> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                            "use_regex": true});
    match pre {
        "gpt2" | "default" | "mpt" | "olmo" => Ok(byte_level),
        "smollm" | "starcoder" | "refact" | "codeshell" => Ok(json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]
        })),
        other => Err(format!(
            "tokenizer.ggml.pre is `{other}`; laxc rebuilds the gpt2 and smollm pre-tokenizers \
             (use the model's HuggingFace directory, whose tokenizer.json says it exactly)"
        )),
    }
}

fn from_gguf(file: &Gguf) -> Result<PretrainedTokenizer, String> {
    let at = |what: String| format!("{}: {what}", file.path.display());
    let model = file.require("tokenizer.ggml.model")?.as_str().unwrap_or("");
    if model != "gpt2" {
        return Err(at(format!(
            "tokenizer.ggml.model is `{model}`; laxc reads byte-level BPE (`gpt2`) tokenizers"
        )));
    }
    let strings = |key: &str| -> Result<Vec<String>, String> {
        file.require(key)?
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect())
            .ok_or_else(|| at(format!("`{key}` is not a list of strings")))
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i128> = file
        .meta
        .get("tokenizer.ggml.token_type")
        .and_then(MetaValue::as_array)
        .map(|a| a.iter().filter_map(MetaValue::as_int).collect())
        .unwrap_or_default();
    let pre = file
        .meta
        .get("tokenizer.ggml.pre")
        .and_then(MetaValue::as_str)
        .unwrap_or("gpt2");
    let vocab: serde_json::Map<String, serde_json::Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    // Control tokens (type 3) and user-defined ones (type 4) are matched whole, never split.
    let added: Vec<serde_json::Value> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(i, t)| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": *t == 3})
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(pre).map_err(at)?,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    let tokenizer = Tokenizer::from_bytes(spec.to_string().as_bytes())
        .map_err(|e| at(format!("its tokenizer does not build: {e}")))?;
    let id = |key: &str| {
        file.meta
            .get(key)
            .and_then(MetaValue::as_int)
            .map(|v| v as u32)
    };
    Ok(PretrainedTokenizer {
        tokenizer,
        bos: id("tokenizer.ggml.bos_token_id"),
        eos: id("tokenizer.ggml.eos_token_id"),
        chat_template: file
            .meta
            .get("tokenizer.chat_template")
            .and_then(MetaValue::as_str)
            .map(String::from),
        add_bos: matches!(
            file.meta.get("tokenizer.ggml.add_bos_token"),
            Some(MetaValue::Bool(true))
        ),
    })
}

/// How text becomes a model's token ids and back.
pub enum TextCodec {
    /// One token per byte (a `text(...)` run without a tokenizer; vocab 256).
    Bytes,
    Tokenizer(Box<PretrainedTokenizer>),
}

impl TextCodec {
    /// The tokenizer of a pretrained base (GGUF or HuggingFace directory) where there is one,
    /// otherwise that of the run's data: a tokenizer.json, or bytes.
    pub fn for_model(
        c: &crate::Compiled,
        data: Option<&DataSpec>,
        base: Option<&Path>,
    ) -> Result<TextCodec, String> {
        if let Some(base) = base.filter(|b| Format::of(b) != Format::Laxc) {
            return Ok(TextCodec::Tokenizer(Box::new(
                crate::import::tokenizer::read(base)?,
            )));
        }
        match data {
            Some(DataSpec::Text {
                tokenizer: Some(t), ..
            }) => Ok(TextCodec::Tokenizer(Box::new(
                PretrainedTokenizer::from_file(t)?,
            ))),
            Some(DataSpec::Text {
                tokenizer: None, ..
            }) => Ok(TextCodec::Bytes),
            None if c.ir.model.vocab == 256 => Ok(TextCodec::Bytes),
            _ => Err(format!(
                "laxc does not know this model's tokenizer (vocab {}): name it with \
                 --tokenizer (a tokenizer.json, GGUF file or HuggingFace directory)",
                c.ir.model.vocab
            )),
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        match self {
            TextCodec::Bytes => Ok(text.bytes().map(u32::from).collect()),
            TextCodec::Tokenizer(t) => t.encode(text),
        }
    }

    /// Text that continues a sequence: no begin-of-sequence token.
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>, String> {
        match self {
            TextCodec::Bytes => self.encode(text),
            TextCodec::Tokenizer(t) => t
                .tokenizer
                .encode(text, false)
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| format!("cannot tokenize: {e}")),
        }
    }

    /// The token that ends a text, where the tokenizer has one.
    pub fn eos(&self) -> Option<u32> {
        match self {
            TextCodec::Bytes => None,
            TextCodec::Tokenizer(t) => t.eos,
        }
    }

    /// A tokenizer.json file, a GGUF file or a HuggingFace directory.
    pub fn from_path(path: &Path) -> Result<TextCodec, String> {
        Ok(TextCodec::Tokenizer(Box::new(match Format::of(path) {
            Format::Laxc => PretrainedTokenizer::from_file(path)?,
            _ => read(path)?,
        })))
    }

    /// How the tokens were made, for a run's record.
    pub fn describe(&self) -> String {
        match self {
            TextCodec::Bytes => "bytes".into(),
            TextCodec::Tokenizer(t) => {
                format!("BPE of {} tokens", t.tokenizer.get_vocab_size(true))
            }
        }
    }

    /// The text of `ids`; bytes that do not (yet) form UTF-8 are shown as U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            TextCodec::Bytes => {
                let bytes: Vec<u8> = ids.iter().map(|&i| i as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            }
            TextCodec::Tokenizer(t) => t.decode(ids),
        }
    }

    pub fn is_stop(&self, id: u32) -> bool {
        match self {
            TextCodec::Bytes => false,
            TextCodec::Tokenizer(t) => t.is_stop(id),
        }
    }

    /// The prompt laid out by the model's chat template, or why there is none.
    pub fn chat(&self, user: &str) -> Result<String, String> {
        let TextCodec::Tokenizer(t) = self else {
            return Err("--chat: this model reads bytes and has no chat template".into());
        };
        let template = t
            .chat_template
            .as_deref()
            .ok_or("--chat: this model's tokenizer has no chat template")?;
        let name = |id: Option<u32>| id.and_then(|i| t.tokenizer.id_to_token(i));
        crate::generate::chat_prompt(
            template,
            user,
            name(t.bos).as_deref(),
            name(t.eos).as_deref(),
        )
    }
}
