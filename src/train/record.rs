//! What a run folder records so that the run can be reproduced and resumed, and reading it
//! back: `spec.lax` as written, `resolved.json` (the options with absolute data paths, the
//! SHA-256 of each data file, the report) and `resolved-resume.json` (the options of the last
//! resume).

use super::data;
use super::session::Refusal;
use crate::options::{DataSpec, TrainOptions};
use crate::source::Source;
use crate::Compiled;
use std::path::{Path, PathBuf};

/// The record a new run writes.
const RESOLVED: &str = "resolved.json";
/// The record of a run's last resume.
const RESUMED: &str = "resolved-resume.json";

/// Each data file a run reads, with its SHA-256.
pub type DataSums = Vec<(PathBuf, String)>;

/// The data files of `data` and their SHA-256, read once before anything is written.
pub fn data_sums(data: &Option<DataSpec>) -> Result<DataSums, Refusal> {
    match data {
        Some(d) => data::fingerprint(d).map_err(Refusal::Io),
        None => Ok(Vec::new()),
    }
}

/// What a run folder recorded: its spec as written, the options it started with (data paths
/// absolute), the options of its last resume, and the SHA-256 of each data file.
pub struct StoredRun {
    pub dir: PathBuf,
    pub source: Source,
    pub first: TrainOptions,
    pub last: TrainOptions,
    pub data_sha256: Vec<String>,
}

/// The run folder holding `path`: `path` itself, or the run of a `RUN/checkpoints/step-N` folder.
pub fn run_folder_of(path: &Path) -> Option<PathBuf> {
    let path = std::path::absolute(path).ok()?;
    let grandparent = path.parent().and_then(Path::parent);
    let run = [Some(path.as_path()), grandparent]
        .into_iter()
        .flatten()
        .find(|d| d.join(RESOLVED).is_file() && d.join("spec.lax").is_file())
        .map(Path::to_path_buf);
    run
}

/// Reads what `dir` recorded, or says in one line why it is not a run that can go on.
pub fn stored_run(dir: &Path) -> Result<StoredRun, Refusal> {
    let shown = dir.display();
    if run_folder_of(dir).is_none_or(|run| Some(run) != std::path::absolute(dir).ok()) {
        return Err(Refusal::Io(format!(
            "{shown} is not a laxc run folder (it needs spec.lax and {RESOLVED})"
        )));
    }
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map_err(|e| Refusal::Io(format!("cannot read {}: {e}", path.display())))
    };
    let source = Source::new(
        dir.join("spec.lax").display().to_string(),
        read("spec.lax")?,
    );
    let options = |name: &str| -> Result<(TrainOptions, Vec<String>), Refusal> {
        let malformed = |e: serde_json::Error| {
            Refusal::Io(format!("{} is malformed: {e}", dir.join(name).display()))
        };
        let v: serde_json::Value = serde_json::from_str(&read(name)?).map_err(malformed)?;
        let mut train: TrainOptions =
            serde_json::from_value(v["train"].clone()).map_err(malformed)?;
        // A run of a laxc without `keep` kept every checkpoint: a resume must not prune them.
        if v["train"].get("keep").is_none() {
            train.keep = 0;
        }
        let sums = serde_json::from_value(v["data_sha256"].clone()).unwrap_or_default();
        Ok((train, sums))
    };
    let (first, data_sha256) = options(RESOLVED)?;
    let last = if dir.join(RESUMED).is_file() {
        options(RESUMED)?.0
    } else {
        first.clone()
    };
    Ok(StoredRun {
        dir: dir.to_path_buf(),
        source,
        first,
        last,
        data_sha256,
    })
}

impl StoredRun {
    /// Refuses recorded data paths that are relative: a laxc before 2026-11-25 recorded them
    /// relative to the spec's folder, which the run does not say, so they cannot be found
    /// again with certainty.
    pub fn data_paths_known(&self) -> Result<(), Refusal> {
        let Some(data) = &self.last.data else {
            return Ok(());
        };
        match data::relative_path(data) {
            Some(p) => Err(Refusal::Io(format!(
                "{} recorded its data path {} relative to a folder it does not name (a run of \
                 laxc before 2026-11-25); give the data again with --set data=..., with \
                 absolute paths",
                self.dir.display(),
                p.display()
            ))),
            None => Ok(()),
        }
    }

    /// Refuses to go on with data other than the run's: each file's SHA-256 must be the
    /// recorded one (a run of a laxc that recorded none is not checked).
    pub fn same_data(&self, sums: &DataSums) -> Result<(), Refusal> {
        if self.data_sha256.is_empty() {
            return Ok(());
        }
        let other = |what: String| {
            Refusal::Io(format!(
                "{what}: {} resumes only on the data it trained on",
                self.dir.display()
            ))
        };
        if sums.len() != self.data_sha256.len() {
            let what = format!(
                "the run read {} data files, these data are {}",
                self.data_sha256.len(),
                sums.len()
            );
            return Err(other(what));
        }
        for ((file, now), then) in sums.iter().zip(&self.data_sha256) {
            if now != then {
                let short = |s: &str| s.get(..12).unwrap_or(s).to_string();
                let what = format!(
                    "{} differs from the data the run trained on (SHA-256 {}…, then {}…)",
                    file.display(),
                    short(now),
                    short(then)
                );
                return Err(other(what));
            }
        }
        Ok(())
    }
}

/// Writes the record of a new run (the spec as written and `resolved.json`) or of a resume
/// (`resolved-resume.json`).
pub fn write(
    out: &Path,
    source: &Source,
    c: &Compiled,
    opts: &TrainOptions,
    sums: &DataSums,
    is_new: bool,
) -> Result<(), String> {
    let write = |name: &str, bytes: &[u8]| {
        crate::files::write_atomically(&out.join(name), bytes)
            .map_err(|e| format!("cannot write {}: {e}", out.join(name).display()))
    };
    if is_new {
        write("spec.lax", source.text.as_bytes())?;
    }
    let data_sha256: Vec<&str> = sums.iter().map(|(_, sum)| sum.as_str()).collect();
    let resolved = serde_json::json!({
        "spec": source.name,
        "train": opts,
        "data_sha256": data_sha256,
        "report": c.report(),
    });
    let name = if is_new { RESOLVED } else { RESUMED };
    write(
        name,
        serde_json::to_string_pretty(&resolved)
            .expect("serializes")
            .as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run recorded by a laxc before 2026-11-25: no `keep` (it kept every checkpoint), no
    /// data checksums, data paths relative to a folder it does not name.
    #[test]
    fn an_older_runs_record_keeps_its_checkpoints_and_asks_for_its_data() {
        let dir = std::env::temp_dir().join(format!("laxc-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("spec.lax"), "model m: llama {}\n").unwrap();
        let old = serde_json::json!({
            "spec": "specs/x.lax",
            "train": {"data": {"kind": "text", "train": "../data/t.txt", "valid": null,
                               "tokenizer": null}, "steps": 10, "lr": 0.01},
        });
        std::fs::write(dir.join(RESOLVED), old.to_string()).unwrap();
        let run = stored_run(&dir)
            .map_err(|r| r.message().to_string())
            .unwrap();
        assert_eq!(run.first.keep, 0);
        assert_eq!((run.last.steps, run.last.lr), (Some(10), 0.01));
        let err = run.data_paths_known().unwrap_err();
        assert!(err.message().contains("../data/t.txt"), "{}", err.message());
        assert!(
            run.same_data(&Vec::new()).is_ok(),
            "nothing recorded, nothing to compare"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
