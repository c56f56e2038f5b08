//! Pretrained weights: the frozen base a LoRA spec fine-tunes (the file its `lora(base = "...")`
//! names) and the model `laxc generate --base` samples from. A base is a laxc checkpoint's
//! `model.safetensors` of the spec with every site dense, a GGUF file, or a HuggingFace LLaMA
//! directory (crate::import); each is refused unless every tensor fits the spec.

use super::layers::RmsNorm;
use super::model::{lower, LaxModel};
use super::params::{Linear, NodeParams};
use crate::import::{Format, HostTensor, Pretrained, Weights};
use crate::ir::Factorization;
use crate::spec::Spec;
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use std::path::{Path, PathBuf};

/// The one base file the spec's LoRA sites name, if any.
pub fn base_file(spec: &Spec) -> Result<Option<PathBuf>, String> {
    let mut found: Option<&str> = None;
    for s in &spec.sites {
        if let Factorization::Lora {
            base: Some(path), ..
        } = &s.fact
        {
            match found {
                Some(p) if p != path => {
                    return Err(format!(
                        "LoRA sites name two base files ({p} and {path}); one model has one base"
                    ))
                }
                _ => found = Some(path),
            }
        }
    }
    Ok(found.map(PathBuf::from))
}

/// The node of the dense twin that holds the weights of `name`: a LoRA site's frozen `W0` is
/// the twin's `W`; every other node keeps its name.
fn twin_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.strip_suffix(".W0") {
        Some(site) => format!("{site}.W").into(),
        None => name.into(),
    }
}

/// Loads the base weights into a freshly lowered LoRA model: every frozen node (embeddings,
/// norms, head, dense sites, each LoRA site's W₀) takes the values of the node of the same name
/// in the file's dense model; adapters and LaX keep their init.
pub fn load_lora_base<B: Backend>(
    model: LaxModel<B>,
    spec: &Spec,
    file: &Path,
    device: &B::Device,
) -> Result<LaxModel<B>, String> {
    // A pretrained file's tensors go straight into the frozen nodes: no second copy of the model.
    if Format::of(file) != Format::Laxc {
        let weights = crate::import::read_weights(file)?;
        let m = load_pretrained(model, weights, Nodes::Frozen, device)?;
        return Ok(m.with_sequential_ids());
    }
    let twin = crate::dense_twin(spec);
    let dense = lower(&twin, 0, device).no_grad();
    let dense: LaxModel<B> = crate::lower::weights::load_safetensors(file, dense)?;
    let mut m = model;
    for (node, name) in m.program.names.clone().iter().enumerate() {
        let Some(index) = m.program.params[node] else {
            continue;
        };
        if !m.program.frozen[node] {
            continue;
        }
        if let Some(from) = dense.params_of(&twin_name(name)) {
            // Loading a record keeps the target's device and its frozen state.
            let target = m.nodes[index].clone();
            m.nodes[index] = target.load_record(from.clone().into_record());
        }
    }
    // Loading took the file's parameter ids; give back the ids by position.
    Ok(m.with_sequential_ids())
}

/// Loads a base file into a lowered dense model of its sizes, whatever the file's format.
pub fn load_dense<B: Backend>(
    model: LaxModel<B>,
    file: &Path,
    device: &B::Device,
) -> Result<LaxModel<B>, String> {
    match Format::of(file) {
        Format::Laxc => crate::lower::weights::load_safetensors(file, model),
        Format::Gguf | Format::HfDir => {
            let weights = crate::import::read_weights(file)?;
            Ok(load_pretrained(model, weights, Nodes::All, device)?.with_sequential_ids())
        }
    }
}

/// The sizes a spec must share with the checkpoint that tensor shapes do not show.
fn config_mismatches(m: &crate::family::ModelConfig, p: &Pretrained) -> Vec<String> {
    let mut bad = Vec::new();
    if m.family != crate::family::Family::Llama {
        bad.push(format!(
            "it is a llama model, the spec a {}",
            m.family.name()
        ));
        return bad;
    }
    let mut size = |key: &str, spec: usize, file: usize| {
        if spec != file {
            bad.push(format!(
                "`{key}` is {spec} in the spec and {file} in the file"
            ));
        }
    };
    size("vocab", m.vocab, p.vocab);
    size("hidden", m.hidden, p.hidden);
    size("ffn", m.ffn, p.ffn);
    size("heads", m.heads, p.heads);
    size("kv_heads", m.kv_heads, p.kv_heads);
    size("layers", m.layers, p.layers);
    if m.tie_embeddings != p.tie_embeddings {
        bad.push(format!(
            "`tie_embeddings` is {} in the spec and {} in the file",
            m.tie_embeddings, p.tie_embeddings
        ));
    }
    let mut real = |key: &str, spec: f64, file: f64| {
        // GGUF stores these as f32.
        if (spec - file).abs() > 1e-6 * file.abs() {
            bad.push(format!(
                "`{key}` is {spec:?} in the spec and {file:?} in the file"
            ));
        }
    };
    real("rope_theta", m.rope_theta, p.rope_theta);
    real("norm_eps", m.norm_eps, p.norm_eps);
    bad
}

/// Which nodes take a checkpoint's tensors.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nodes {
    /// Every node with parameters: a dense model.
    All,
    /// The frozen ones (a LoRA model's base); adapters and LaX keep their init.
    Frozen,
}

/// Puts a checkpoint's tensors into the nodes of a lowered model (a site's weight node `.W`,
/// or a LoRA site's frozen `.W0`, takes the site's tensor), after checking that the spec's
/// sizes are the checkpoint's and that every tensor has the node's shape. A node keeps its
/// parameter ids and frozen state. Each tensor moves into its node: no copy of the values.
fn load_pretrained<B: Backend>(
    mut model: LaxModel<B>,
    mut w: Weights,
    which: Nodes,
    device: &B::Device,
) -> Result<LaxModel<B>, String> {
    let mut loaded = vec![false; model.nodes.len()];
    for node in 0..model.program.names.len() {
        // A tied head reads the embedding's parameters: loaded once, as the embedding.
        let Some(index) = model.program.params[node].filter(|&i| !loaded[i]) else {
            continue;
        };
        loaded[index] = true;
        if which == Nodes::Frozen && !model.program.frozen[node] {
            continue;
        }
        let name = model.program.names[node].clone();
        let key = name
            .strip_suffix(".W")
            .or_else(|| name.strip_suffix(".W0"))
            .unwrap_or(&name);
        let Some(t) = w.tensors.remove(key) else {
            return Err(format!(
                "{} has no tensor for the spec's `{name}` (the file's model has {} blocks{})",
                w.source.display(),
                w.config.layers,
                if w.config.tie_embeddings {
                    " and a tied head"
                } else {
                    ""
                }
            ));
        };
        let values = node_params(&model.nodes[index], t, &name, &w.source, device)?;
        model.nodes[index] = model.nodes[index].clone().load_record(values.into_record());
    }
    // What the shapes do not show: the depth, the heads, the tie, RoPE and the norms.
    let bad = config_mismatches(&model.program.model, &w.config);
    if !bad.is_empty() {
        return Err(format!(
            "{} does not fit this spec: {} (`laxc import {}` writes the spec that fits)",
            w.source.display(),
            bad.join("; "),
            w.source.display()
        ));
    }
    Ok(model)
}

/// The node's parameters with the checkpoint's values: a table as stored, a norm's scale, a
/// linear weight transposed (PyTorch stores `out × in`, laxc `in × out`).
fn node_params<B: Backend>(
    current: &NodeParams<B>,
    t: HostTensor,
    name: &str,
    source: &Path,
    device: &B::Device,
) -> Result<NodeParams<B>, String> {
    let fits = |want: &[usize]| {
        if t.shape == want {
            Ok(())
        } else {
            Err(format!(
                "{}: tensor `{}` is {}, but the spec's `{name}` needs {}",
                source.display(),
                t.file_name,
                shape_text(&t.shape),
                shape_text(want)
            ))
        }
    };
    Ok(match current {
        NodeParams::Table(p) => {
            let [rows, cols] = p.val().dims();
            fits(&[rows, cols])?;
            let table = TensorData::new(t.values, [rows, cols]);
            NodeParams::Table(Param::from_tensor(Tensor::from_data(table, device)))
        }
        NodeParams::Linear(l) if l.bias.is_none() => {
            let [inp, out] = l.weight.val().dims();
            fits(&[out, inp])?;
            let torch = Tensor::<B, 2>::from_data(TensorData::new(t.values, [out, inp]), device);
            NodeParams::Linear(Linear {
                weight: Param::from_tensor(torch.transpose()),
                bias: None,
            })
        }
        NodeParams::RmsNorm(n) => {
            let [width] = n.gamma.val().dims();
            fits(&[width])?;
            let gamma = Tensor::<B, 1>::from_data(TensorData::new(t.values, [width]), device);
            NodeParams::RmsNorm(RmsNorm {
                gamma: Param::from_tensor(gamma),
                epsilon: n.epsilon,
            })
        }
        _ => {
            return Err(format!(
                "the spec's `{name}` is not a part of a LLaMA checkpoint ({} holds only dense \
                 llama weights)",
                source.display()
            ))
        }
    })
}

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    dims.join(" × ")
}
