//! HuggingFace model directories of `LlamaForCausalLM`: `config.json` for the sizes, and the
//! weights in `model.safetensors` or in the shards a `model.safetensors.index.json` lists
//! (F32, F16, BF16 and F64 tensors, read as f32).

use super::Pretrained;
use serde_json::Value;
use std::path::Path;

fn config_json(dir: &Path) -> Result<Value, String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))
}

/// The sizes `config.json` gives, with LlamaConfig's defaults for the keys it may leave out.
pub fn read_config(dir: &Path) -> Result<Pretrained, String> {
    let c = config_json(dir)?;
    let path = dir.join("config.json");
    let at = |what: String| format!("{}: {what}", path.display());
    let model_type = c["model_type"].as_str().unwrap_or("");
    if model_type != "llama" {
        return Err(at(format!(
            "model_type is `{model_type}`; laxc imports `llama` models (LlamaForCausalLM)"
        )));
    }
    let size = |key: &str| -> Result<usize, String> {
        match c[key].as_u64() {
            Some(v) if v > 0 && v <= 1 << 24 => Ok(v as usize),
            _ => Err(at(format!(
                "`{key}` is {}, not a size from 1 to 2^24",
                c[key]
            ))),
        }
    };
    let real = |key: &str, default: f64| -> Result<f64, String> {
        match &c[key] {
            Value::Null => Ok(default),
            v => v
                .as_f64()
                .filter(|x| *x > 0.0 && x.is_finite())
                .ok_or_else(|| at(format!("`{key}` is {v}, not a positive number"))),
        }
    };
    // What laxc's llama does not have is refused rather than ignored.
    let refuse = |key: &str, why: &str| -> Result<(), String> {
        match &c[key] {
            Value::Null | Value::Bool(false) => Ok(()),
            v => Err(at(format!("`{key}` is {v}; {why}"))),
        }
    };
    refuse("rope_scaling", "laxc's RoPE has no scaling")?;
    // transformers 5 keeps RoPE's settings in `rope_parameters`.
    let rope = &c["rope_parameters"];
    if let Some(kind) = rope["rope_type"].as_str().filter(|k| *k != "default") {
        return Err(at(format!(
            "rope_parameters.rope_type is `{kind}`; laxc's RoPE has no scaling"
        )));
    }
    refuse("attention_bias", "laxc's llama has no biases")?;
    refuse("mlp_bias", "laxc's llama has no biases")?;
    if let Some(act) = c["hidden_act"].as_str().filter(|a| *a != "silu") {
        return Err(at(format!(
            "hidden_act is `{act}`; laxc's llama MLP is SwiGLU (silu)"
        )));
    }
    let (hidden, heads) = (size("hidden_size")?, size("num_attention_heads")?);
    if let Some(d) = c["head_dim"].as_u64() {
        if d as usize * heads != hidden {
            return Err(at(format!(
                "head_dim is {d}, not hidden_size / num_attention_heads = {}",
                hidden / heads
            )));
        }
    }
    let kv_heads = match c["num_key_value_heads"] {
        Value::Null => heads,
        _ => size("num_key_value_heads")?,
    };
    let context = match c["max_position_embeddings"] {
        Value::Null => 2048,
        _ => size("max_position_embeddings")?,
    };
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Ok(Pretrained {
        name: super::spec_name(&name),
        vocab: size("vocab_size")?,
        hidden,
        ffn: size("intermediate_size")?,
        heads,
        kv_heads,
        layers: size("num_hidden_layers")?,
        context,
        tie_embeddings: c["tie_word_embeddings"].as_bool().unwrap_or(false),
        rope_theta: match rope["rope_theta"].as_f64() {
            Some(theta) if theta > 0.0 => theta,
            _ => real("rope_theta", 10000.0)?,
        },
        norm_eps: real("rms_norm_eps", 1e-6)?,
    })
}

/// The safetensors files of the directory: the shards the index lists, or `model.safetensors`.
fn weight_files(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index)
            .map_err(|e| format!("cannot read {}: {e}", index.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", index.display()))?;
        let Some(map) = v["weight_map"].as_object() else {
            return Err(format!("{}: no `weight_map`", index.display()));
        };
        let mut files: Vec<_> = map
            .values()
            .filter_map(Value::as_str)
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    Err(format!(
        "{} has neither model.safetensors nor model.safetensors.index.json (laxc does not read \
         pytorch_model.bin)",
        dir.display()
    ))
}

/// A safetensors tensor's values as f32, from F32, F64, F16 or BF16; any other dtype is
/// returned as the error.
pub(crate) fn float_values(
    view: &safetensors::tensor::TensorView,
) -> Result<Vec<f32>, safetensors::Dtype> {
    use safetensors::Dtype;
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| super::gguf::f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        other => return Err(other),
    })
}

/// Every tensor of the model, by laxc's names.
pub fn read_weights(dir: &Path) -> Result<super::Weights, String> {
    use safetensors::SafeTensors;
    let config = read_config(dir)?;
    let wanted = super::tensor_names(config.layers, config.tie_embeddings);
    let mut tensors = std::collections::BTreeMap::new();
    for file in weight_files(dir)? {
        let bytes =
            std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| format!("{}: not a safetensors file: {e}", file.display()))?;
        for (laxc, hf, _) in &wanted {
            let Ok(view) = st.tensor(hf) else { continue };
            let values = float_values(&view).map_err(|other| {
                format!(
                    "{}: tensor `{hf}` is {other:?}; laxc reads F32, F16, BF16 and F64",
                    file.display()
                )
            })?;
            tensors.insert(
                laxc.clone(),
                super::HostTensor {
                    file_name: hf.clone(),
                    shape: view.shape().to_vec(),
                    values,
                },
            );
        }
    }
    if let Some((laxc, hf, _)) = wanted.iter().find(|(l, _, _)| !tensors.contains_key(l)) {
        return Err(format!(
            "{}: no tensor `{hf}` (laxc's {laxc}) in its safetensors files",
            dir.display()
        ));
    }
    Ok(super::Weights {
        source: dir.to_path_buf(),
        config,
        tensors,
    })
}
