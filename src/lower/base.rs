//! LoRA bases: the frozen weights a LoRA spec fine-tunes, loaded from the safetensors file its
//! `lora(base = "...")` names. The file is what a dense model of the same sizes saves: a laxc
//! checkpoint's `model.safetensors` of the spec with every site dense qualifies.

use super::model::{lower, LaxModel};
use crate::ir::Factorization;
use crate::spec::Spec;
use burn::module::Module;
use burn::tensor::backend::Backend;
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
    let twin = crate::dense_twin(spec);
    let dense: LaxModel<B> = lower(&twin, 0, device).no_grad();
    let dense = crate::lower::weights::load_safetensors(file, dense)?;
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
