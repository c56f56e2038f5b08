//! LoRA bases: the frozen weights a LoRA spec fine-tunes, loaded from the safetensors file its
//! `lora(base = "...")` names. The file is what a dense model of the same sizes saves: a laxc
//! checkpoint's `model.safetensors` of the spec with every site dense qualifies.

use super::layers::{DenseLayer, Norm, SiteLayer};
use super::model::{lower, LaxModel};
use crate::spec::{Factorization, Spec};
use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor};
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

/// Replaces a parameter's value, keeping its id (so checkpoints and optimizer state still fit).
fn replace<B: Backend, const D: usize>(
    target: &Param<Tensor<B, D>>,
    value: Tensor<B, D>,
) -> Param<Tensor<B, D>> {
    // Every transplanted tensor is part of the frozen base.
    Param::initialized(target.id, value.detach().set_require_grad(false))
}

fn replace_opt<B: Backend, const D: usize>(
    target: &Option<Param<Tensor<B, D>>>,
    value: &Option<Param<Tensor<B, D>>>,
) -> Option<Param<Tensor<B, D>>> {
    match (target, value) {
        (Some(t), Some(v)) => Some(replace(t, v.val())),
        (t, _) => t.clone(),
    }
}

fn copy_norm<B: Backend>(target: Norm<B>, from: &Norm<B>) -> Norm<B> {
    // Norms are small modules; take the source's values under the target's ids.
    let layer = match (&target.layer, &from.layer) {
        (Some(t), Some(f)) => {
            let mut t = t.clone();
            t.gamma = replace(&t.gamma, f.gamma.val());
            t.beta = replace_opt(&t.beta, &f.beta);
            Some(t)
        }
        (t, _) => t.clone(),
    };
    let rms = match (&target.rms, &from.rms) {
        (Some(t), Some(f)) => {
            let mut t = t.clone();
            t.gamma = replace(&t.gamma, f.gamma.val());
            Some(t)
        }
        (t, _) => t.clone(),
    };
    Norm { layer, rms }
}

/// Loads the base weights into a freshly lowered LoRA model: embeddings, norms, head, dense
/// sites and every LoRA site's frozen W₀ come from the file; adapters and LaX keep their init.
pub fn load_lora_base<B: Backend>(
    model: LaxModel<B>,
    spec: &Spec,
    file: &Path,
    device: &B::Device,
) -> Result<LaxModel<B>, String> {
    let twin = crate::dense_twin(spec);
    let dense: LaxModel<B> = lower(&twin, 0, device);
    let dense = crate::train_support::load_safetensors(file, dense)?;
    let mut m = model;
    let s = &mut m.stem;
    s.embed = replace_opt(&s.embed, &dense.stem.embed);
    s.patch_weight = replace_opt(&s.patch_weight, &dense.stem.patch_weight);
    s.patch_bias = replace_opt(&s.patch_bias, &dense.stem.patch_bias);
    s.cls = replace_opt(&s.cls, &dense.stem.cls);
    s.pos = replace_opt(&s.pos, &dense.stem.pos);
    for (block, from) in m.blocks.iter_mut().zip(&dense.blocks) {
        block.norm1 = copy_norm(block.norm1.clone(), &from.norm1);
        block.norm2 = copy_norm(block.norm2.clone(), &from.norm2);
        if let (Some(t), Some(f)) = (&block.mlp_norm, &from.mlp_norm) {
            block.mlp_norm = Some(copy_norm(t.clone(), f));
        }
        for (site, src) in block.sites.iter_mut().zip(&from.sites) {
            let SiteLayer::Dense(d) = src else {
                unreachable!("the dense twin has only dense sites")
            };
            match site {
                SiteLayer::Lora(l) => {
                    l.base = replace(&l.base, d.weight.val());
                    l.base_bias = replace_opt(&l.base_bias, &d.bias);
                }
                SiteLayer::Dense(t) => {
                    *t = DenseLayer {
                        weight: replace(&t.weight, d.weight.val()),
                        bias: replace_opt(&t.bias, &d.bias),
                    };
                }
                // A spec that mixes LoRA with other factorizations keeps their own init.
                _ => {}
            }
        }
    }
    m.final_norm = copy_norm(m.final_norm.clone(), &dense.final_norm);
    m.head = replace(&m.head, dense.head.val());
    m.head_bias = replace_opt(&m.head_bias, &dense.head_bias);
    let _ = m.num_params();
    Ok(m)
}
