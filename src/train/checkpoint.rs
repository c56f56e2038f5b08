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
    // Saved already at this step (a periodic checkpoint, then a stop): no update happened in
    // between, so it holds this very state; never delete what `latest` may point to.
    if complete(&fin) {
        crate::files::write_atomically(&dir.join("latest"), name.as_bytes())
            .map_err(|e| err("cannot update checkpoints/latest", e))?;
        return Ok(fin);
    }
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
    // An incomplete folder of this name (a save killed midway) is not a checkpoint.
    let _ = std::fs::remove_dir_all(&fin);
    std::fs::rename(&tmp, &fin).map_err(|e| err("cannot finish the checkpoint", e))?;
    crate::files::write_atomically(&dir.join("latest"), name.as_bytes())
        .map_err(|e| err("cannot update checkpoints/latest", e))?;
    Ok(fin)
}

/// The files every checkpoint has.
const FILES: [&str; 3] = ["model.safetensors", "optimizer.bin", "state.json"];

/// Whether a checkpoint folder has all its files.
fn complete(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

/// The newest checkpoint of a run folder (or the folder itself if it is a checkpoint). Where
/// `latest` names a folder that is missing or incomplete (a kill at the wrong moment), the
/// newest complete `step-N` is taken instead, and said.
pub fn latest(path: &Path) -> Result<Option<PathBuf>, String> {
    if path.join("model.safetensors").exists() {
        return Ok(Some(path.to_path_buf()));
    }
    let dir = path.join("checkpoints");
    let pointer = dir.join("latest");
    let named = match std::fs::read_to_string(&pointer) {
        Ok(name) => dir.join(name.trim()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(&format!("cannot read {}", pointer.display()), e)),
    };
    if complete(&named) {
        return Ok(Some(named));
    }
    let newest = newest_complete(&dir);
    match &newest {
        Some(n) => eprintln!(
            "warning: {} names {}, which is incomplete; using {}",
            pointer.display(),
            named.display(),
            n.display()
        ),
        None => {
            return Err(format!(
                "{} names {}, which is incomplete, and no other checkpoint is complete",
                pointer.display(),
                named.display()
            ))
        }
    }
    Ok(newest)
}

/// The complete `step-N` folder with the largest N.
fn newest_complete(dir: &Path) -> Option<PathBuf> {
    let mut steps: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| complete(p))
        .filter_map(|p| {
            let n = p
                .file_name()?
                .to_str()?
                .strip_prefix("step-")?
                .parse()
                .ok()?;
            Some((n, p))
        })
        .collect();
    steps.sort();
    steps.pop().map(|(_, p)| p)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A kill between removing and renaming used to leave `latest` naming a folder with only
    /// part of a checkpoint; the newest complete one is taken instead.
    #[test]
    fn a_broken_latest_falls_back_to_the_newest_complete_checkpoint() {
        let run = std::env::temp_dir().join(format!("laxc-ck-{}", std::process::id()));
        let dir = run.join("checkpoints");
        for step in ["step-000003", "step-000006"] {
            std::fs::create_dir_all(dir.join(step)).unwrap();
        }
        for f in FILES {
            std::fs::write(dir.join("step-000003").join(f), "x").unwrap();
        }
        std::fs::write(dir.join("step-000006/optimizer.bin"), "x").unwrap();
        std::fs::write(dir.join("latest"), "step-000006").unwrap();
        assert_eq!(latest(&run).unwrap(), Some(dir.join("step-000003")));
        std::fs::remove_dir_all(dir.join("step-000003")).unwrap();
        assert!(latest(&run).unwrap_err().contains("no other checkpoint"));
        std::fs::remove_dir_all(run).unwrap();
    }
}
