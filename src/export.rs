//! A trained LLaMA in the formats other tools read (`laxc export`): a PEFT LoRA adapter
//! (`adapter_config.json` + `adapter_model.safetensors`, names as HF PEFT writes them), or a
//! HuggingFace model directory with every LoRA and SVD site merged into a dense weight. LaX
//! pathways cannot be merged into weights; a run with them is refused, and its checkpoint (laxc's
//! format) is what it exports.

use crate::import::{tensor_names, HostTensor};
use crate::ir::Factorization;
use crate::lower::params::NodeParams;
use crate::lower::LaxModel;
use crate::Compiled;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use std::collections::BTreeMap;
use std::path::Path;

/// What a checkpoint's LLaMA cannot be exported as, if anything.
fn exportable(c: &Compiled, peft: bool) -> Result<(), String> {
    if c.ir.model.family != crate::family::Family::Llama {
        return Err(format!(
            "laxc exports llama models; this is a {}",
            c.ir.model.family.name()
        ));
    }
    if !c.spec.inter.is_empty() || !c.spec.intra.is_empty() {
        return Err(
            "this run has LaX pathways, which cannot be merged into weights nor written as a \
             PEFT adapter: its checkpoint (laxc's format) is its export, for `laxc generate` \
             and `laxc eval`"
                .into(),
        );
    }
    for s in &c.ir.sites {
        // A dense site of a LoRA spec is the base's, which the adapter leaves as it is.
        let fine = matches!(
            (&s.fact, peft),
            (Factorization::Lora { .. } | Factorization::Dense, _)
                | (Factorization::Svd { .. }, false)
        );
        if !fine {
            return Err(format!(
                "{} is {}: {}",
                s.name.clone(),
                s.fact.kind_name(),
                if peft {
                    "a PEFT adapter holds LoRA sites on a dense base only"
                } else {
                    "only dense, LoRA and SVD sites merge into a dense weight"
                }
            ));
        }
    }
    Ok(())
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("float tensors")
}

/// The `(in × out)` weight of a linear node.
fn weight<B: Backend>(m: &LaxModel<B>, node: &str) -> Result<Tensor<B, 2>, String> {
    match m.params_of(node) {
        Some(NodeParams::Linear(l)) => Ok(l.weight.val()),
        _ => Err(format!("the model has no linear node `{node}`")),
    }
}

/// An `(in × out)` laxc weight as PyTorch stores it, `out × in`.
fn torch_layout<B: Backend>(w: Tensor<B, 2>, file_name: &str) -> HostTensor {
    let t = w.transpose();
    HostTensor {
        file_name: file_name.into(),
        shape: t.dims().to_vec(),
        values: values(t),
    }
}

/// A site's weight as a dense `(in × out)` matrix: W, W₀ + (α/r)·A·B, or A·B.
fn merged_site<B: Backend>(
    m: &LaxModel<B>,
    site: &str,
    fact: &Factorization,
) -> Result<Tensor<B, 2>, String> {
    Ok(match fact {
        Factorization::Dense => weight(m, &format!("{site}.W"))?,
        Factorization::Lora { rank, alpha, .. } => {
            let a = weight(m, &format!("{site}.lora_A"))?;
            let b = weight(m, &format!("{site}.lora_B"))?;
            weight(m, &format!("{site}.W0"))? + a.matmul(b).mul_scalar(alpha / *rank as f64)
        }
        Factorization::Svd { .. } => {
            weight(m, &format!("{site}.A"))?.matmul(weight(m, &format!("{site}.B"))?)
        }
        other => return Err(format!("{site}: {} does not merge", other.kind_name())),
    })
}

/// Writes `tensors` (PyTorch layout, f32) as a safetensors file.
fn write_safetensors(path: &Path, tensors: &BTreeMap<String, HostTensor>) -> Result<(), String> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let b = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), b, t.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(n, b, s)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| format!("{n}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let data = safetensors::serialize(views, meta).map_err(|e| e.to_string())?;
    crate::files::write_atomically(path, &data)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(v).expect("JSON") + "\n";
    crate::files::write_atomically(path, text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// HF's module path of a laxc site (`blocks[3].attn.q` → `model.layers.3.self_attn.q_proj`).
fn hf_module(c: &Compiled, site: &str) -> String {
    tensor_names(c.ir.model.layers, c.ir.model.tie_embeddings)
        .into_iter()
        .find(|(laxc, _, _)| laxc == site)
        .map(|(_, hf, _)| hf.trim_end_matches(".weight").to_string())
        .expect("every llama site has an HF name")
}

/// The PEFT adapter of a LoRA model: `lora_A` (`r × in`) and `lora_B` (`out × r`) of every LoRA
/// site under PEFT's names, and a config with its rank, alpha and target modules.
pub fn write_peft<B: Backend>(
    c: &Compiled,
    m: &LaxModel<B>,
    dir: &Path,
    base: &str,
) -> Result<(), String> {
    exportable(c, true)?;
    let mut tensors = BTreeMap::new();
    let mut targets = Vec::new();
    let mut shape: Option<(usize, f64, f64)> = None;
    for s in &c.ir.sites {
        let Factorization::Lora {
            rank,
            alpha,
            dropout,
            ..
        } = s.fact
        else {
            continue;
        };
        if shape.is_some_and(|x| x != (rank, alpha, dropout)) {
            return Err(
                "the LoRA sites have different ranks, alphas or dropouts; a PEFT config holds one"
                    .into(),
            );
        }
        shape = Some((rank, alpha, dropout));
        let site = s.name.clone();
        let module = hf_module(c, &site);
        for part in ["lora_A", "lora_B"] {
            let name = format!("base_model.model.{module}.{part}.weight");
            let w = weight(m, &format!("{site}.{part}"))?;
            tensors.insert(name.clone(), torch_layout(w, &name));
        }
        targets.push(module);
    }
    let Some((rank, alpha, dropout)) = shape else {
        return Err("the spec has no LoRA sites: there is no adapter to export".into());
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_safetensors(&dir.join("adapter_model.safetensors"), &tensors)?;
    write_json(
        &dir.join("adapter_config.json"),
        &serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base,
            "r": rank,
            "lora_alpha": alpha,
            "lora_dropout": dropout,
            "target_modules": targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "use_rslora": false,
            "use_dora": false,
            "init_lora_weights": true,
            "modules_to_save": null,
        }),
    )
}

/// A HuggingFace `LlamaForCausalLM` directory of the model, every LoRA and SVD site merged.
pub fn write_hf<B: Backend>(c: &Compiled, m: &LaxModel<B>, dir: &Path) -> Result<(), String> {
    exportable(c, false)?;
    let cfg = &c.ir.model;
    let facts: BTreeMap<String, &Factorization> =
        c.ir.sites
            .iter()
            .map(|s| (s.name.clone(), &s.fact))
            .collect();
    let mut tensors = BTreeMap::new();
    for (laxc, hf, _) in tensor_names(cfg.layers, cfg.tie_embeddings) {
        let t = match (facts.get(&laxc), m.params_of(&laxc)) {
            (Some(fact), _) => torch_layout(merged_site(m, &laxc, fact)?, &hf),
            (None, Some(NodeParams::Table(p))) => HostTensor {
                file_name: hf.clone(),
                shape: p.val().dims().to_vec(),
                values: values(p.val()),
            },
            (None, Some(NodeParams::RmsNorm(n))) => HostTensor {
                file_name: hf.clone(),
                shape: n.gamma.val().dims().to_vec(),
                values: values(n.gamma.val()),
            },
            (None, Some(NodeParams::Linear(l))) => torch_layout(l.weight.val(), &hf),
            _ => return Err(format!("the model has no `{laxc}` to write as {hf}")),
        };
        tensors.insert(hf, t);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    write_json(
        &dir.join("config.json"),
        &serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": cfg.vocab,
            "hidden_size": cfg.hidden,
            "intermediate_size": cfg.ffn,
            "num_attention_heads": cfg.heads,
            "num_key_value_heads": cfg.kv_heads,
            "num_hidden_layers": cfg.layers,
            "max_position_embeddings": cfg.tokens,
            "rms_norm_eps": cfg.norm_eps,
            "rope_theta": cfg.rope_theta,
            "tie_word_embeddings": cfg.tie_embeddings,
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
            "torch_dtype": "float32",
        }),
    )
}

/// Reads a PEFT adapter (as [`write_peft`] writes it, or HF PEFT) into the LoRA sites of a
/// lowered LoRA model: each site's `lora_A` and `lora_B` take the file's tensors.
pub fn load_peft<B: Backend>(
    c: &Compiled,
    mut m: LaxModel<B>,
    dir: &Path,
    device: &B::Device,
) -> Result<LaxModel<B>, String> {
    use crate::lower::params::Linear;
    use burn::module::Param;
    use burn::tensor::TensorData;
    let file = dir.join("adapter_model.safetensors");
    let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format!("{}: not a safetensors file: {e}", file.display()))?;
    for s in &c.ir.sites {
        if !matches!(s.fact, Factorization::Lora { .. }) {
            continue;
        }
        let site = s.name.clone();
        let module = hf_module(c, &site);
        for part in ["lora_A", "lora_B"] {
            let name = format!("base_model.model.{module}.{part}.weight");
            let view = st
                .tensor(&name)
                .map_err(|_| format!("{}: no tensor `{name}`", file.display()))?;
            let node = format!("{site}.{part}");
            let [inp, out] = weight(&m, &node)?.dims();
            if view.dtype() != safetensors::Dtype::F32 || view.shape() != [out, inp] {
                return Err(format!(
                    "{}: `{name}` is {:?} {:?}, but the spec's {node} needs F32 [{out}, {inp}]",
                    file.display(),
                    view.dtype(),
                    view.shape()
                ));
            }
            let v = crate::import::hf::float_values(&view).expect("F32, checked above");
            let w = Tensor::<B, 2>::from_data(TensorData::new(v, [out, inp]), device).transpose();
            let index = m
                .program
                .node(&node)
                .and_then(|n| m.program.params[n])
                .expect("a LoRA factor has parameters");
            m.nodes[index] = NodeParams::Linear(Linear {
                weight: Param::from_tensor(w),
                bias: None,
            });
        }
    }
    Ok(m.with_sequential_ids())
}

/// What `laxc export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportKind {
    Peft,
    Hf,
}

/// Exports a run's latest checkpoint into `out`, a new or empty folder (any folder with
/// `replace`, whose files of the same names are then replaced).
pub fn export_run(run: &Path, kind: ExportKind, out: &Path, replace: bool) -> Result<(), String> {
    let stored = crate::train::record::stored_run(run).map_err(|r| r.message().to_string())?;
    let c = crate::compile(&stored.source).map_err(|_| {
        format!(
            "{}: the run's spec no longer compiles with this laxc",
            run.display()
        )
    })?;
    exportable(&c, kind == ExportKind::Peft)?;
    let occupied = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if occupied && !replace {
        return Err(format!(
            "{} exists and is not empty; choose another folder, or --force to replace the \
             files of the same names in it",
            out.display()
        ));
    }
    let ck = crate::train::checkpoint::latest(run)?
        .ok_or_else(|| format!("{} holds no checkpoint", run.display()))?;
    type Cpu = burn::backend::NdArray;
    let device = Default::default();
    let fresh = crate::lower::lower::<Cpu>(&c.ir, 0, &device);
    let model = crate::train::checkpoint::load_weights(&ck, fresh)?;
    match kind {
        ExportKind::Peft => {
            let base = crate::lower::base::base_file(&c.spec)?
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            write_peft(&c, &model, out, &base)
        }
        ExportKind::Hf => write_hf(&c, &model, out),
    }
}
