//! Weights from a safetensors file into a lowered model, refused unless they are exactly the
//! model's: every tensor present with its shape, and none left over.

use super::LaxModel;
use burn::tensor::backend::Backend;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use std::path::Path;

/// Loads every tensor of `model` from a safetensors file, or says in one line what does not fit.
pub fn load_safetensors<B: Backend>(
    file: &Path,
    model: LaxModel<B>,
) -> Result<LaxModel<B>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    load_safetensors_bytes(bytes, file, model)
}

/// [`load_safetensors`] of bytes already read from `file` (named in messages).
pub fn load_safetensors_bytes<B: Backend>(
    bytes: Vec<u8>,
    file: &Path,
    mut model: LaxModel<B>,
) -> Result<LaxModel<B>, String> {
    // Burn's own checks stop at the first kind of problem with a dump of all of them; take the
    // whole result and say it in one line.
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .validate(false)
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| format!("cannot load {}: {e}", file.display()))?;
    let mut problems = Vec::new();
    if let Some((first, _)) = result.missing.first() {
        problems.push(format!(
            "{} tensors missing (first {first})",
            result.missing.len()
        ));
    }
    if let Some(first) = result.unused.first() {
        problems.push(format!(
            "{} tensors this spec does not have (first {first})",
            result.unused.len()
        ));
    }
    if let Some(first) = result.errors.first() {
        problems.push(format!(
            "{} of another shape (first: {first})",
            result.errors.len()
        ));
    }
    if problems.is_empty() {
        return Ok(model);
    }
    Err(format!(
        "{} does not fit this spec: {}; was it saved from another spec, or by a laxc from \
         before 2026-11-25?",
        file.display(),
        problems.join(", ")
    ))
}
