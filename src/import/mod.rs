//! Pretrained checkpoints made outside laxc: GGUF files (llama.cpp) and HuggingFace
//! directories (`config.json` + `model.safetensors` or a sharded index) of LLaMA models. This
//! module reads what a checkpoint says of its model ([`Pretrained`]: the sizes of a `llama`
//! spec), writes the spec (`laxc import`), and reads its tensors under laxc's names in
//! PyTorch's layout ([`Weights`]); `lower::base` puts them into a lowered model.

pub mod gguf;
pub mod hf;
#[cfg(feature = "train")]
pub mod tokenizer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a checkpoint says of its model: everything a `llama` spec's sizes hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Pretrained {
    /// A name for the model, from the file's metadata (a spec name: letters, digits, `_`).
    pub name: String,
    pub vocab: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub layers: usize,
    /// The context the model was trained for.
    pub context: usize,
    pub tie_embeddings: bool,
    pub rope_theta: f64,
    pub norm_eps: f64,
}

/// The kinds of file a base may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Gguf,
    /// A HuggingFace model directory.
    HfDir,
    /// A laxc checkpoint's `model.safetensors` of the dense twin.
    Laxc,
}

impl Format {
    /// A directory is a HuggingFace model; a file starting with `GGUF` is GGUF; anything else
    /// a laxc safetensors file.
    pub fn of(path: &Path) -> Format {
        if path.is_dir() {
            return Format::HfDir;
        }
        let mut magic = [0u8; 4];
        let is_gguf = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|_| &magic == b"GGUF");
        if is_gguf {
            Format::Gguf
        } else {
            Format::Laxc
        }
    }
}

/// Reads what a GGUF file or HuggingFace directory says of its model.
pub fn read_pretrained(path: &Path) -> Result<Pretrained, String> {
    match Format::of(path) {
        Format::Gguf => gguf_pretrained(&gguf::Gguf::open(path)?),
        Format::HfDir => hf::read_config(path),
        Format::Laxc => Err(format!(
            "{} is neither a GGUF file nor a HuggingFace model directory (config.json and \
             model.safetensors)",
            path.display()
        )),
    }
}

/// Where a tensor is in a LLaMA checkpoint and where it goes in laxc: per block (`{i}` is the
/// block) and outside the blocks. Names are laxc's IR names of the dense model (a site's
/// weight node is the site's name + `.W`).
pub struct TensorName {
    pub laxc: &'static str,
    pub hf: &'static str,
    pub gguf: &'static str,
}

const fn name(laxc: &'static str, hf: &'static str, gguf: &'static str) -> TensorName {
    TensorName { laxc, hf, gguf }
}

pub const BLOCK_TENSORS: &[TensorName] = &[
    name(
        "blocks[{i}].attn_norm",
        "model.layers.{i}.input_layernorm.weight",
        "blk.{i}.attn_norm.weight",
    ),
    name(
        "blocks[{i}].attn.q",
        "model.layers.{i}.self_attn.q_proj.weight",
        "blk.{i}.attn_q.weight",
    ),
    name(
        "blocks[{i}].attn.k",
        "model.layers.{i}.self_attn.k_proj.weight",
        "blk.{i}.attn_k.weight",
    ),
    name(
        "blocks[{i}].attn.v",
        "model.layers.{i}.self_attn.v_proj.weight",
        "blk.{i}.attn_v.weight",
    ),
    name(
        "blocks[{i}].attn.o",
        "model.layers.{i}.self_attn.o_proj.weight",
        "blk.{i}.attn_output.weight",
    ),
    name(
        "blocks[{i}].mlp_norm",
        "model.layers.{i}.post_attention_layernorm.weight",
        "blk.{i}.ffn_norm.weight",
    ),
    name(
        "blocks[{i}].mlp.gate",
        "model.layers.{i}.mlp.gate_proj.weight",
        "blk.{i}.ffn_gate.weight",
    ),
    name(
        "blocks[{i}].mlp.up",
        "model.layers.{i}.mlp.up_proj.weight",
        "blk.{i}.ffn_up.weight",
    ),
    name(
        "blocks[{i}].mlp.down",
        "model.layers.{i}.mlp.down_proj.weight",
        "blk.{i}.ffn_down.weight",
    ),
];

pub const OUTER_TENSORS: &[TensorName] = &[
    name("embed", "model.embed_tokens.weight", "token_embd.weight"),
    name("final_norm", "model.norm.weight", "output_norm.weight"),
    name("head", "lm_head.weight", "output.weight"),
];

/// Every tensor of a model with `layers` blocks: (laxc name, its TensorName).
pub fn tensor_names(layers: usize, tied: bool) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for t in OUTER_TENSORS {
        if tied && t.laxc == "head" {
            continue;
        }
        out.push((t.laxc.into(), t.hf.into(), t.gguf.into()));
    }
    for i in 0..layers {
        for t in BLOCK_TENSORS {
            let at = |s: &str| s.replace("{i}", &i.to_string());
            out.push((at(t.laxc), at(t.hf), at(t.gguf)));
        }
    }
    out
}

/// One tensor of a checkpoint, as f32 in PyTorch's layout (a weight is `out × in`).
#[derive(Debug, Clone)]
pub struct HostTensor {
    /// Its name in the file, for messages.
    pub file_name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// A checkpoint's tensors by laxc's names, with the file they came from.
pub struct Weights {
    pub source: PathBuf,
    pub config: Pretrained,
    pub tensors: BTreeMap<String, HostTensor>,
}

/// Reads every tensor a LLaMA checkpoint has. GGUF's q and k rows are put back in the order
/// HF's rotate-half RoPE (laxc's) expects: llama.cpp's converter interleaves each head's two
/// halves for its pairwise RoPE.
pub fn read_weights(path: &Path) -> Result<Weights, String> {
    match Format::of(path) {
        Format::Gguf => gguf_weights(path),
        Format::HfDir => hf::read_weights(path),
        Format::Laxc => Err(format!(
            "{} is not a GGUF file or a HuggingFace directory",
            path.display()
        )),
    }
}

fn gguf_weights(path: &Path) -> Result<Weights, String> {
    let file = gguf::Gguf::open(path)?;
    let config = gguf_pretrained(&file)?;
    let head_dim = config.hidden / config.heads;
    let mut tensors = BTreeMap::new();
    for (laxc, _, name) in tensor_names(config.layers, config.tie_embeddings) {
        let Some(info) = file.tensor(&name) else {
            return Err(format!(
                "{}: no tensor `{name}` (laxc's {laxc}); is it a LLaMA model?",
                path.display()
            ));
        };
        let shape = info.shape();
        let mut values = file.read_f32(info)?;
        let heads = if laxc.ends_with("attn.q") {
            Some(config.heads)
        } else if laxc.ends_with("attn.k") {
            Some(config.kv_heads)
        } else {
            None
        };
        if let Some(heads) = heads {
            values = rotate_half_rows(&values, heads, head_dim, shape[1]);
        }
        tensors.insert(
            laxc,
            HostTensor {
                file_name: name,
                shape,
                values,
            },
        );
    }
    Ok(Weights {
        source: path.to_path_buf(),
        config,
        tensors,
    })
}

/// Undoes llama.cpp's permutation of a q or k weight (`heads · head_dim` rows of `cols`): in
/// each head, GGUF row `2i + j` is HF row `j · head_dim/2 + i` (j = 0, 1).
pub fn rotate_half_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = (h * head_dim + 2 * i + j) * cols;
                let to = (h * head_dim + j * half + i) * cols;
                out[to..to + cols].copy_from_slice(&w[from..from + cols]);
            }
        }
    }
    out
}

/// A GGUF file's model, from its `llama.*` metadata.
fn gguf_pretrained(file: &gguf::Gguf) -> Result<Pretrained, String> {
    let at = |what: &str| format!("{}: {what}", file.path.display());
    let arch = file.require("general.architecture")?.as_str().unwrap_or("");
    if arch != "llama" {
        return Err(at(&format!(
            "general.architecture is `{arch}`; laxc imports `llama` models"
        )));
    }
    let size = |key: &str| -> Result<usize, String> {
        match file.require(key)?.as_int() {
            Some(v) if v > 0 && v <= (1 << 24) => Ok(v as usize),
            _ => Err(at(&format!(
                "`{key}` is not a size from 1 to 2^24: {:?}",
                file.meta[key]
            ))),
        }
    };
    let real = |key: &str, default: f64| -> Result<f64, String> {
        match file.meta.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| *x > 0.0 && x.is_finite())
                .ok_or_else(|| at(&format!("`{key}` is not a positive number: {v:?}"))),
        }
    };
    let heads = size("llama.attention.head_count")?;
    let hidden = size("llama.embedding_length")?;
    let kv_heads = match file.meta.get("llama.attention.head_count_kv") {
        Some(_) => size("llama.attention.head_count_kv")?,
        None => heads,
    };
    if let Some(kind) = file.meta.get("llama.rope.scaling.type") {
        if kind.as_str() != Some("none") {
            return Err(at(&format!(
                "llama.rope.scaling.type is {kind:?}; laxc's RoPE has no scaling"
            )));
        }
    }
    if let Some(d) = file
        .meta
        .get("llama.rope.dimension_count")
        .and_then(gguf::MetaValue::as_int)
    {
        if d as usize != hidden / heads.max(1) {
            return Err(at(&format!(
                "RoPE rotates {d} of each head's {} channels; laxc rotates all of them",
                hidden / heads.max(1)
            )));
        }
    }
    let embed = file
        .tensor("token_embd.weight")
        .ok_or_else(|| at("no tensor `token_embd.weight`; is it a LLaMA model?"))?;
    let vocab = match file.meta.get("llama.vocab_size") {
        Some(_) => size("llama.vocab_size")?,
        None => embed.shape()[0],
    };
    // `smollm2` + `135M` reads better than a release's long `general.name`.
    let meta = |key: &str| file.meta.get(key).and_then(gguf::MetaValue::as_str);
    let name = match (meta("general.basename"), meta("general.size_label")) {
        (Some(base), Some(size)) => format!("{base}_{size}"),
        _ => meta("general.name").unwrap_or("pretrained").to_string(),
    };
    Ok(Pretrained {
        name: spec_name(&name),
        vocab,
        hidden,
        ffn: size("llama.feed_forward_length")?,
        heads,
        kv_heads,
        layers: size("llama.block_count")?,
        context: size("llama.context_length")?,
        tie_embeddings: file.tensor("output.weight").is_none(),
        rope_theta: real("llama.rope.freq_base", 10000.0)?,
        norm_eps: real("llama.attention.layer_norm_rms_epsilon", 1e-6)?,
    })
}

/// A model name as a spec may write it: letters, digits and `_`, not starting with a digit.
pub fn spec_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    while s.contains("__") {
        s = s.replace("__", "_");
    }
    let s = s.trim_matches('_').to_string();
    match s.chars().next() {
        None => "pretrained".into(),
        Some(c) if c.is_ascii_digit() => format!("m_{s}"),
        // `model model: llama` would not parse.
        Some(_) if crate::syntax::KEYWORDS.contains(&s.as_str()) => format!("{s}_pretrained"),
        Some(_) => s,
    }
}

/// A number as a spec writes it: `100000`, `1e-5`.
fn real_text(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let text = format!("{x:e}");
        // f32 metadata (GGUF) reads back as 9.999999747378752e-6: shortest f32 text instead.
        let short = format!("{:e}", x as f32);
        if (short.parse::<f64>().unwrap_or(x) - x).abs() <= x.abs() * 1e-7 {
            short
        } else {
            text
        }
    }
}

/// The spec of a pretrained model, as `laxc import` writes it: its sizes, and the LoRA rule
/// that names it as the base (commented, to adapt).
pub fn spec_text(p: &Pretrained, base: &str) -> String {
    let mut s = format!(
        "# {name}: a LLaMA model read from {base} by `laxc import`.\n\
         # `laxc generate` samples from it: laxc generate THIS.lax --base {base} --prompt \"...\"\n\
         model {name}: llama {{\n\
         \x20   vocab = {vocab}\n\
         \x20   hidden = {hidden}\n\
         \x20   ffn = {ffn}\n\
         \x20   heads = {heads}\n\
         \x20   kv_heads = {kv}\n\
         \x20   layers = {layers}\n\
         \x20   seq = {seq}    # the context it was trained for; fine-tuning runs on sequences this long\n\
         \x20   tie_embeddings = {tie}\n\
         \x20   rope_theta = {theta}\n\
         \x20   norm_eps = {eps}\n\
         }}\n",
        name = p.name,
        vocab = p.vocab,
        hidden = p.hidden,
        ffn = p.ffn,
        heads = p.heads,
        kv = p.kv_heads,
        layers = p.layers,
        seq = p.context,
        tie = p.tie_embeddings,
        theta = real_text(p.rope_theta),
        eps = real_text(p.norm_eps),
    );
    s.push_str(&format!(
        "\n# To fine-tune with LoRA (and LaX), uncomment and adapt:\n\
         # factorize attn.{{q,v}} as lora(rank = 8, alpha = 16, base = {base:?})\n\
         # lax inter attn.{{q,v}} {{ gate = identity, norm = none }}\n"
    ));
    s
}

/// The laxc site of a HF LLaMA module name (`q_proj`, or a full `model.layers.3.mlp.up_proj`):
/// the site's group and name, and its block when the name has one.
fn site_of_module(module: &str) -> Option<(&'static str, Option<usize>)> {
    let short = module.rsplit('.').next()?;
    let site = BLOCK_TENSORS
        .iter()
        .find(|t| t.hf.split('.').nth(4) == Some(short))?
        .laxc
        .trim_start_matches("blocks[{i}].");
    let block = module
        .split('.')
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[0] == "layers")
        .and_then(|w| w[1].parse().ok());
    Some((site, block))
}

/// The `factorize ... as lora(...)` rule of a PEFT adapter's `adapter_config.json` (rank, alpha,
/// dropout, target modules), on `base`: what makes a LoRA spec of an imported one.
pub fn peft_rule(adapter: &Path, base: &str) -> Result<String, String> {
    let path = adapter.join("adapter_config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let c: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let at = |what: String| format!("{}: {what}", path.display());
    if c["peft_type"].as_str() != Some("LORA") {
        return Err(at(format!(
            "peft_type is {}; laxc reads LORA adapters",
            c["peft_type"]
        )));
    }
    for key in ["rank_pattern", "alpha_pattern"] {
        if c[key].as_object().is_some_and(|m| !m.is_empty()) {
            return Err(at(format!(
                "`{key}` is set; laxc reads one rank and alpha for all"
            )));
        }
    }
    for (key, why) in [
        ("use_dora", "DoRA is not LoRA"),
        ("use_rslora", "rsLoRA scales by α/√r"),
        ("layers_to_transform", "name the modules instead"),
    ] {
        if !matches!(
            c[key],
            serde_json::Value::Null | serde_json::Value::Bool(false)
        ) {
            return Err(at(format!("`{key}` is {}: {why}", c[key])));
        }
    }
    let rank = c["r"].as_u64().ok_or_else(|| at("no `r`".into()))?;
    let alpha = c["lora_alpha"].as_f64().unwrap_or(rank as f64);
    let dropout = c["lora_dropout"].as_f64().unwrap_or(0.0);
    let modules: Vec<&str> = match &c["target_modules"] {
        serde_json::Value::Array(a) => a.iter().filter_map(|v| v.as_str()).collect(),
        serde_json::Value::String(s) => vec![s.as_str()],
        _ => return Err(at("no `target_modules` list".into())),
    };
    let mut sites = Vec::new();
    for m in &modules {
        let (site, block) = site_of_module(m)
            .ok_or_else(|| at(format!("`{m}` is not a linear layer of a LLaMA block")))?;
        sites.push(match block {
            Some(b) => format!("blocks[{b}].{site}"),
            None => site.to_string(),
        });
    }
    sites.sort();
    sites.dedup();
    Ok(format!(
        "factorize {} as lora(rank = {rank}, alpha = {}, dropout = {}, base = {base:?})\n",
        sites.join(", "),
        real_text(alpha),
        real_text(dropout)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_cpp_permutation_is_undone() {
        // One head of width 4 over one column: HF rows [a0, a1, b0, b1] (two halves) are
        // stored by llama.cpp as pairs [a0, b0, a1, b1].
        let gguf = [10.0, 20.0, 11.0, 21.0];
        assert_eq!(
            rotate_half_rows(&gguf, 1, 4, 1),
            vec![10.0, 11.0, 20.0, 21.0]
        );
        // Two heads, two columns: each head on its own, rows whole.
        let gguf: Vec<f32> = (0..16).map(|x| x as f32).collect();
        let hf = rotate_half_rows(&gguf, 2, 4, 2);
        assert_eq!(&hf[0..8], &[0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(&hf[8..16], &[8.0, 9.0, 12.0, 13.0, 10.0, 11.0, 14.0, 15.0]);
    }

    #[test]
    fn names_and_numbers_are_written_as_a_spec_reads_them() {
        assert_eq!(spec_name("Smollm2 135M 8k"), "smollm2_135m_8k");
        assert_eq!(spec_name("135M"), "m_135m");
        assert_eq!(spec_name("--"), "pretrained");
        assert_eq!(spec_name("Model"), "model_pretrained");
        assert_eq!(real_text(100000.0), "100000");
        assert_eq!(real_text(9.999999747378752e-6), "1e-5");
        assert_eq!(real_text(1e-6), "1e-6");
    }

    #[test]
    fn peft_module_names_map_to_sites() {
        assert_eq!(site_of_module("q_proj"), Some(("attn.q", None)));
        assert_eq!(site_of_module("down_proj"), Some(("mlp.down", None)));
        assert_eq!(
            site_of_module("model.layers.3.self_attn.o_proj"),
            Some(("attn.o", Some(3)))
        );
        assert_eq!(site_of_module("lm_head"), None);
    }
}
