//! Checkpoints: `checkpoints/step-NNNNNN/` holds the weights (safetensors), the AdamW state
//! (Burn's binary record) and `state.json`; `checkpoints/latest` names the newest. Every file is
//! written beside its target and renamed into place, so a crash never leaves half a checkpoint.

use crate::lower::LaxModel;
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn_store::{ModuleSnapshot, SafetensorsStore};

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub step: u64,
    pub loss: f64,
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Saves a checkpoint and points `latest` at it.
pub fn save<B: AutodiffBackend, O: Optimizer<LaxModel<B>, B>>(
    run: &Path,
    step: u64,
    loss: f64,
    model: &LaxModel<B>,
    optim: &O,
) -> Result<PathBuf, String> {
    let state = &Checkpoint { step, loss };
    let dir = run.join("checkpoints");
    std::fs::create_dir_all(&dir).map_err(|e| err("cannot create the checkpoint folder", e))?;
    let name = format!("step-{:06}", state.step);
    let fin = dir.join(&name);
    let tmp = dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| err("cannot create the checkpoint", e))?;
    let mut store = SafetensorsStore::from_file(tmp.join("model.safetensors"));
    model
        .valid()
        .save_into(&mut store)
        .map_err(|e| err("cannot save the weights", e))?;
    BinFileRecorder::<FullPrecisionSettings>::new()
        .record(optim.to_record(), tmp.join("optimizer"))
        .map_err(|e| err("cannot save the optimizer state", e))?;
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_string_pretty(state).expect("serializes"),
    )
    .map_err(|e| err("cannot save the step", e))?;
    if fin.exists() {
        std::fs::remove_dir_all(&fin).map_err(|e| err("cannot replace an old checkpoint", e))?;
    }
    std::fs::rename(&tmp, &fin).map_err(|e| err("cannot finish the checkpoint", e))?;
    crate::files::write_atomically(&dir.join("latest"), name.as_bytes())
        .map_err(|e| err("cannot update checkpoints/latest", e))?;
    Ok(fin)
}

/// The newest checkpoint of a run folder (or the folder itself if it is a checkpoint).
pub fn latest(path: &Path) -> Result<Option<PathBuf>, String> {
    if path.join("model.safetensors").exists() {
        return Ok(Some(path.to_path_buf()));
    }
    let pointer = path.join("checkpoints").join("latest");
    match std::fs::read_to_string(&pointer) {
        Ok(name) => Ok(Some(path.join("checkpoints").join(name.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(&format!("cannot read {}", pointer.display()), e)),
    }
}

/// Loads weights into a freshly lowered model of the same spec.
pub fn load_weights<B: burn::tensor::backend::Backend>(
    ck: &Path,
    model: LaxModel<B>,
) -> Result<LaxModel<B>, String> {
    crate::lower::weights::load_safetensors(&ck.join("model.safetensors"), model)
}

pub fn load<B: AutodiffBackend, O: Optimizer<LaxModel<B>, B>>(
    ck: &Path,
    model: LaxModel<B>,
    optim: O,
    device: &B::Device,
) -> Result<(LaxModel<B>, O, Checkpoint), String> {
    let model = load_weights(ck, model)?;
    let record = BinFileRecorder::<FullPrecisionSettings>::new()
        .load(ck.join("optimizer"), device)
        .map_err(|e| err("cannot load the optimizer state", e))?;
    let optim = optim.load_record(record);
    let state: Checkpoint = serde_json::from_str(
        &std::fs::read_to_string(ck.join("state.json"))
            .map_err(|e| err("cannot read state.json", e))?,
    )
    .map_err(|e| err("state.json is malformed", e))?;
    Ok((model, optim, state))
}
