//! Checkpoints: `checkpoints/step-NNNNNN/` holds the weights (safetensors), the AdamW state
//! (Burn's binary record) and `state.json` with the step, the losses and a SHA-256 of each of
//! the other two files; `checkpoints/latest` names the newest and `checkpoints/best` the one
//! with the lowest validation loss. A checkpoint is written into `.step-NNNNNN.partial` and
//! renamed into place, so a crash never leaves half of one, and a failed save removes what it
//! wrote. Each error is one line naming the file and the cause.

use super::digest;
use crate::lower::LaxModel;
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `state.json`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub step: u64,
    /// The training loss of the last step.
    pub loss: f64,
    /// The validation loss, when the run validated at this very step.
    #[serde(default)]
    pub val_loss: Option<f64>,
    /// SHA-256 of every other file of the checkpoint (absent in checkpoints of laxc before
    /// 2026-11-25, which are loaded unverified).
    #[serde(default)]
    pub sha256: BTreeMap<String, String>,
}

const WEIGHTS: &str = "model.safetensors";
const OPTIMIZER: &str = "optimizer.bin";
const STATE: &str = "state.json";

/// The files every checkpoint has.
const FILES: [&str; 3] = [WEIGHTS, OPTIMIZER, STATE];

type Settings = FullPrecisionSettings;

/// Saves a checkpoint of `step`, points `latest` (and `best`, if it is) at it, and prunes older
/// ones down to the newest `keep` plus the best (`keep = 0`: keep all).
pub fn save<B: AutodiffBackend, O: Optimizer<LaxModel<B>, B>>(
    run: &Path,
    (step, loss, val_loss): (u64, f64, Option<f64>),
    model: &LaxModel<B>,
    optim: &O,
    keep: u64,
) -> Result<PathBuf, String> {
    let dir = run.join("checkpoints");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = format!("step-{step:06}");
    let fin = dir.join(&name);
    // Saved already at this step (a periodic checkpoint, then a stop): no update happened in
    // between, so it holds this very state; never delete what `latest` may point to.
    if !complete(&fin) {
        let weights = safetensors_bytes(&model.valid())
            .map_err(|e| format!("cannot serialize the weights of step {step}: {e}"))?;
        let optimizer = BinBytesRecorder::<Settings>::new()
            .record(optim.to_record(), ())
            .map_err(|e| format!("cannot serialize the optimizer state of step {step}: {e}"))?;
        let state = Checkpoint {
            step,
            loss,
            val_loss,
            sha256: [(WEIGHTS, &weights), (OPTIMIZER, &optimizer)]
                .into_iter()
                .map(|(f, bytes)| (f.to_string(), digest::of_bytes(bytes)))
                .collect(),
        };
        let state = serde_json::to_string_pretty(&state).expect("serializes");
        let files = [
            (WEIGHTS, &weights[..]),
            (OPTIMIZER, &optimizer),
            (STATE, state.as_bytes()),
        ];
        write_folder(&dir, &name, &files)?;
    }
    point(&dir, "latest", &name)?;
    // The new checkpoint is safe: an old one that cannot be removed is no reason to stop.
    if let Err(e) = prune(&dir, keep) {
        eprintln!("warning: {e}");
    }
    Ok(fin)
}

/// The model's weights as safetensors bytes.
fn safetensors_bytes<B: burn::tensor::backend::Backend>(
    model: &LaxModel<B>,
) -> Result<Vec<u8>, String> {
    let mut store = SafetensorsStore::from_bytes(None);
    model.save_into(&mut store).map_err(|e| e.to_string())?;
    store.get_bytes().map_err(|e| e.to_string())
}

/// Writes `files` into `dir/.NAME.partial`, then renames that to `dir/NAME`. On failure (a full
/// disk) the partial folder is removed.
fn write_folder(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> Result<(), String> {
    let tmp = dir.join(format!(".{name}.partial"));
    let fin = dir.join(name);
    let _ = std::fs::remove_dir_all(&tmp);
    let written = (|| {
        std::fs::create_dir(&tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        for (file, bytes) in files {
            let path = tmp.join(file);
            write_durably(&path, bytes)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        // An incomplete folder of this name (a save killed midway) is not a checkpoint.
        let _ = std::fs::remove_dir_all(&fin);
        std::fs::rename(&tmp, &fin)
            .map_err(|e| format!("cannot rename {} to {}: {e}", tmp.display(), fin.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
}

/// Writes a file and flushes it to the disk, so that a power loss after the rename that
/// publishes the checkpoint cannot leave it truncated.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Points `dir/POINTER` (`latest` or `best`) at checkpoint `name`.
fn point(dir: &Path, pointer: &str, name: &str) -> Result<(), String> {
    let path = dir.join(pointer);
    crate::files::write_atomically(&path, name.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Keeps the newest `keep` complete checkpoints, the best one (lowest validation loss among
/// those validated at their own step) and the one `latest` names; removes the other complete
/// ones and points `best` at the best. `keep = 0` keeps all.
fn prune(dir: &Path, keep: u64) -> Result<(), String> {
    let all = complete_checkpoints(dir);
    let best = all
        .iter()
        .filter_map(|(_, p)| Some((read_state(p).ok()?.val_loss?, p)))
        .filter(|(v, _)| v.is_finite())
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, p)| p.clone());
    if let Some(b) = &best {
        point(
            dir,
            "best",
            &b.file_name().expect("a step folder").to_string_lossy(),
        )?;
    }
    if keep == 0 {
        return Ok(());
    }
    let latest = std::fs::read_to_string(dir.join("latest")).unwrap_or_default();
    let newest = all.len().saturating_sub(keep as usize);
    for (i, (_, path)) in all.iter().enumerate() {
        let named_latest = path.file_name().is_some_and(|n| n == latest.trim());
        if i >= newest || Some(path) == best.as_ref() || named_latest {
            continue;
        }
        std::fs::remove_dir_all(path)
            .map_err(|e| format!("cannot remove the old checkpoint {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Whether a checkpoint folder has all its files.
fn complete(dir: &Path) -> bool {
    FILES.iter().all(|f| dir.join(f).is_file())
}

/// The newest checkpoint of a run folder (or the folder itself if it is a checkpoint). Where
/// `latest` names a folder that is missing or incomplete (a kill at the wrong moment), the
/// newest complete `step-N` is taken instead, and said.
pub fn latest(path: &Path) -> Result<Option<PathBuf>, String> {
    if path.join(WEIGHTS).exists() {
        return Ok(Some(path.to_path_buf()));
    }
    let dir = path.join("checkpoints");
    let pointer = dir.join("latest");
    let named = match std::fs::read_to_string(&pointer) {
        Ok(name) => dir.join(name.trim()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", pointer.display())),
    };
    if complete(&named) {
        return Ok(Some(named));
    }
    let Some((_, newest)) = complete_checkpoints(&dir).pop() else {
        return Err(format!(
            "{} names {}, which is incomplete, and no other checkpoint is complete",
            pointer.display(),
            named.display()
        ));
    };
    eprintln!(
        "warning: {} names {}, which is incomplete; using {}",
        pointer.display(),
        named.display(),
        newest.display()
    );
    Ok(Some(newest))
}

/// The newest checkpoint of a run whose files all match their SHA-256: `latest`, or, where that
/// is damaged (a disk error, a power loss), the newest older one that is intact, said with a
/// warning. Resuming from a damaged file would train on garbage.
pub fn newest_intact(run: &Path) -> Result<Option<PathBuf>, String> {
    let Some(latest) = latest(run)? else {
        return Ok(None);
    };
    let damage = match verify(&latest) {
        Ok(()) => return Ok(Some(latest)),
        Err(e) => e,
    };
    let older = complete_checkpoints(&run.join("checkpoints"));
    for (_, ck) in older.iter().rev().filter(|(_, ck)| *ck != latest) {
        if verify(ck).is_ok() {
            eprintln!("warning: {damage}; resuming from {} instead", ck.display());
            return Ok(Some(ck.clone()));
        }
    }
    Err(damage)
}

/// Checks every file of a checkpoint against the SHA-256 its `state.json` recorded.
fn verify(ck: &Path) -> Result<(), String> {
    let state = read_state(ck)?;
    for file in [WEIGHTS, OPTIMIZER] {
        read_verified(ck, &state, file)?;
    }
    Ok(())
}

/// The complete `step-N` folders of `dir`, oldest first.
fn complete_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut steps: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| complete(p))
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let n = name.strip_prefix("step-")?.parse().ok()?;
            Some((n, p))
        })
        .collect();
    steps.sort();
    steps
}

/// A checkpoint's `state.json`.
pub fn read_state(ck: &Path) -> Result<Checkpoint, String> {
    let path = ck.join(STATE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is malformed: {e}", path.display()))
}

/// Reads one file of a checkpoint and checks it against the SHA-256 `state.json` recorded.
fn read_verified(ck: &Path, state: &Checkpoint, file: &str) -> Result<Vec<u8>, String> {
    let path = ck.join(file);
    let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if let Some(expected) = state.sha256.get(file) {
        if digest::of_bytes(&bytes) != *expected {
            return Err(format!(
                "{} is damaged: its SHA-256 differs from the one {} recorded when it was saved",
                path.display(),
                ck.join(STATE).display()
            ));
        }
    }
    Ok(bytes)
}

/// Loads verified weights into a freshly lowered model of the same spec.
pub fn load_weights<B: burn::tensor::backend::Backend>(
    ck: &Path,
    model: LaxModel<B>,
) -> Result<LaxModel<B>, String> {
    let state = read_state(ck)?;
    let bytes = read_verified(ck, &state, WEIGHTS)?;
    crate::lower::weights::load_safetensors_bytes(bytes, &ck.join(WEIGHTS), model)
}

/// Loads a verified checkpoint: the weights (which must be this spec's), the optimizer state
/// and the step.
pub fn load<B: AutodiffBackend, O: Optimizer<LaxModel<B>, B>>(
    ck: &Path,
    model: LaxModel<B>,
    optim: O,
    device: &B::Device,
) -> Result<(LaxModel<B>, O, Checkpoint), String> {
    let state = read_state(ck)?;
    let weights = read_verified(ck, &state, WEIGHTS)?;
    let model = crate::lower::weights::load_safetensors_bytes(weights, &ck.join(WEIGHTS), model)?;
    let optimizer = read_verified(ck, &state, OPTIMIZER)?;
    let record = BinBytesRecorder::<Settings>::new()
        .load(optimizer, device)
        .map_err(|e| {
            format!(
                "{} is not an optimizer state laxc can read: {e}",
                ck.join(OPTIMIZER).display()
            )
        })?;
    Ok((model, optim.load_record(record), state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_folder(name: &str) -> PathBuf {
        let run = std::env::temp_dir().join(format!("laxc-ck-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(run.join("checkpoints")).unwrap();
        run
    }

    /// A complete checkpoint folder with only a state.json that matters.
    fn fake(dir: &Path, step: u64, val_loss: Option<f64>) {
        let ck = dir.join(format!("step-{step:06}"));
        std::fs::create_dir_all(&ck).unwrap();
        for f in [WEIGHTS, OPTIMIZER] {
            std::fs::write(ck.join(f), "x").unwrap();
        }
        let state = Checkpoint {
            step,
            loss: 1.0,
            val_loss,
            sha256: BTreeMap::new(),
        };
        std::fs::write(ck.join(STATE), serde_json::to_string(&state).unwrap()).unwrap();
    }

    /// A kill between removing and renaming used to leave `latest` naming a folder with only
    /// part of a checkpoint; the newest complete one is taken instead.
    #[test]
    fn a_broken_latest_falls_back_to_the_newest_complete_checkpoint() {
        let run = run_folder("latest");
        let dir = run.join("checkpoints");
        fake(&dir, 3, None);
        std::fs::create_dir_all(dir.join("step-000006")).unwrap();
        std::fs::write(dir.join("step-000006").join(OPTIMIZER), "x").unwrap();
        std::fs::write(dir.join("latest"), "step-000006").unwrap();
        assert_eq!(latest(&run).unwrap(), Some(dir.join("step-000003")));
        std::fs::remove_dir_all(dir.join("step-000003")).unwrap();
        assert!(latest(&run).unwrap_err().contains("no other checkpoint"));
        std::fs::remove_dir_all(run).unwrap();
    }

    #[test]
    fn pruning_keeps_the_newest_the_best_and_latest() {
        let run = run_folder("prune");
        let dir = run.join("checkpoints");
        let losses = [None, Some(2.0), Some(0.5), Some(1.0), None, Some(0.9), None];
        for (i, v) in losses.iter().enumerate() {
            fake(&dir, i as u64 + 1, *v);
        }
        std::fs::write(dir.join("latest"), "step-000001").unwrap();
        prune(&dir, 2).unwrap();
        let left: Vec<u64> = complete_checkpoints(&dir).iter().map(|(n, _)| *n).collect();
        // 6 and 7 the newest, 3 the best, 1 what `latest` names.
        assert_eq!(left, [1, 3, 6, 7]);
        assert_eq!(
            std::fs::read_to_string(dir.join("best")).unwrap(),
            "step-000003"
        );
        prune(&dir, 0).unwrap();
        assert_eq!(complete_checkpoints(&dir).len(), 4, "keep = 0 keeps all");
        std::fs::remove_dir_all(run).unwrap();
    }

    #[test]
    fn a_failed_save_leaves_no_partial_folder() {
        let run = run_folder("partial");
        let dir = run.join("checkpoints");
        // A file inside a missing sub-folder cannot be written: the save fails midway, as it
        // does on a full disk.
        let err = write_folder(&dir, "step-000001", &[("no/such/folder", b"x")]).unwrap_err();
        assert!(err.contains("cannot write"), "{err}");
        assert!(!dir.join(".step-000001.partial").exists());
        assert!(!dir.join("step-000001").exists());
        std::fs::remove_dir_all(run).unwrap();
    }

    /// A checkpoint with its two files and their recorded SHA-256.
    fn with_sums(dir: &Path, step: u64) -> PathBuf {
        let ck = dir.join(format!("step-{step:06}"));
        std::fs::create_dir_all(&ck).unwrap();
        let mut sha256 = BTreeMap::new();
        for f in [WEIGHTS, OPTIMIZER] {
            let bytes = format!("{f} of step {step}");
            std::fs::write(ck.join(f), &bytes).unwrap();
            sha256.insert(f.to_string(), digest::of_bytes(bytes.as_bytes()));
        }
        let state = Checkpoint {
            step,
            loss: 1.0,
            val_loss: None,
            sha256,
        };
        std::fs::write(ck.join(STATE), serde_json::to_string(&state).unwrap()).unwrap();
        ck
    }

    #[test]
    fn a_damaged_latest_resumes_from_the_newest_intact_checkpoint() {
        let run = run_folder("intact");
        let dir = run.join("checkpoints");
        for step in [1, 2, 3] {
            with_sums(&dir, step);
        }
        std::fs::write(dir.join("latest"), "step-000003").unwrap();
        assert_eq!(newest_intact(&run).unwrap(), Some(dir.join("step-000003")));
        std::fs::write(dir.join("step-000003").join(OPTIMIZER), "flipped").unwrap();
        assert_eq!(newest_intact(&run).unwrap(), Some(dir.join("step-000002")));
        for step in ["step-000001", "step-000002"] {
            std::fs::write(dir.join(step).join(WEIGHTS), "flipped").unwrap();
        }
        let err = newest_intact(&run).unwrap_err();
        assert!(
            err.contains("step-000003/optimizer.bin is damaged"),
            "{err}"
        );
        std::fs::remove_dir_all(run).unwrap();
    }

    #[test]
    fn a_changed_byte_is_found_by_its_checksum() {
        let run = run_folder("sum");
        let ck = run.join("checkpoints/step-000001");
        std::fs::create_dir_all(&ck).unwrap();
        let weights = b"weights".to_vec();
        let state = Checkpoint {
            step: 1,
            loss: 1.0,
            val_loss: None,
            sha256: [(WEIGHTS.to_string(), digest::of_bytes(&weights))].into(),
        };
        std::fs::write(ck.join(WEIGHTS), &weights).unwrap();
        assert_eq!(read_verified(&ck, &state, WEIGHTS).unwrap(), weights);
        std::fs::write(ck.join(WEIGHTS), b"weighTs").unwrap();
        let err = read_verified(&ck, &state, WEIGHTS).unwrap_err();
        assert!(err.contains("model.safetensors is damaged"), "{err}");
        std::fs::remove_dir_all(run).unwrap();
    }
}
