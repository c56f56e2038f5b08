//! The run folder: what laxc writes into it, and what a new run may remove when it reuses one.
//!
//! A folder counts as a laxc run only if it holds `resolved.json` and nothing that laxc did not
//! write. `--force` replaces such a run and nothing else, so a project folder, the working folder
//! or a run a user added notes to is never emptied; a run's checkpoints are removed only with a
//! second flag, because they are the one thing in a run that cannot be recomputed cheaply.

use std::path::{Path, PathBuf};

/// Every entry laxc writes at the top of a run folder.
pub const RUN_ENTRIES: [&str; 6] = [
    "spec.lax",
    "resolved.json",
    "resolved-resume.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
];

/// The file whose presence marks a folder as a laxc run.
const RUN_MARKER: &str = "resolved.json";

/// What an output folder holds before a new run starts in it.
#[derive(Debug, PartialEq, Eq)]
pub enum Occupant {
    /// Missing, or an empty folder.
    Nothing,
    /// A laxc run; `checkpoints` tells whether it has any saved checkpoint.
    Run { checkpoints: bool },
    /// Not a laxc run: the entries laxc did not write (sorted), or the marker is missing.
    Foreign { entries: Vec<String> },
    /// A file, not a folder.
    NotAFolder,
}

/// How `laxc train` was told to treat an occupied output folder.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replace {
    /// `--force`: replace an earlier run that has no checkpoints.
    pub run: bool,
    /// `--discard-checkpoints`: with `--force`, replace a run that has checkpoints as well.
    pub checkpoints: bool,
}

/// A run entry, or the temporary an atomic write of one leaves if it was killed midway.
fn is_run_entry(name: &str) -> bool {
    let target = crate::files::temporary_target(name).unwrap_or(name);
    RUN_ENTRIES.contains(&target)
}

/// Looks at `dir` without changing anything.
pub fn occupant(dir: &Path) -> std::io::Result<Occupant> {
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Occupant::Nothing),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return Ok(Occupant::NotAFolder);
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    if names.is_empty() {
        return Ok(Occupant::Nothing);
    }
    let mut foreign: Vec<String> = names.iter().filter(|n| !is_run_entry(n)).cloned().collect();
    foreign.extend(foreign_checkpoint_entries(dir)?);
    foreign.sort();
    if !foreign.is_empty() || !names.iter().any(|n| n == RUN_MARKER) {
        return Ok(Occupant::Foreign { entries: foreign });
    }
    Ok(Occupant::Run {
        checkpoints: has_checkpoints(dir),
    })
}

/// Whether a run folder has a checkpoint to resume from: `checkpoints/latest` exists. (A
/// `.partial` left by a save that was killed is not one.)
pub fn has_checkpoints(dir: &Path) -> bool {
    dir.join("checkpoints").join("latest").exists()
}

/// What laxc writes inside `checkpoints/`: `latest`, `step-NNNNNN`, a save in progress
/// (`.step-NNNNNN.partial`) and `latest`'s atomic-write temporary.
fn is_checkpoint_entry(name: &str) -> bool {
    let step = |s: &str| {
        s.strip_prefix("step-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    name == "latest"
        || step(name)
        || crate::files::temporary_target(name) == Some("latest")
        || name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
            .is_some_and(step)
}

/// Entries of `dir/checkpoints` that laxc did not write, as `checkpoints/NAME`.
fn foreign_checkpoint_entries(dir: &Path) -> std::io::Result<Vec<String>> {
    let Ok(entries) = std::fs::read_dir(dir.join("checkpoints")) else {
        return Ok(Vec::new());
    };
    let mut foreign = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !is_checkpoint_entry(&name) {
            foreign.push(format!("checkpoints/{name}"));
        }
    }
    Ok(foreign)
}

/// A short list of names for a message: the first few, then how many more.
fn some_names(entries: &[String]) -> String {
    const SHOWN: usize = 3;
    let mut s = entries
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if entries.len() > SHOWN {
        s.push_str(&format!(" and {} more", entries.len() - SHOWN));
    }
    s
}

/// Makes `dir` ready for a new run: creates it, or clears an earlier run in it as far as
/// `replace` allows. Returns whether the folder is new (so that a run failing at once removes
/// only a folder it made), or a one-line error that says why not and what to do instead.
pub fn claim(dir: &Path, replace: Replace) -> Result<bool, String> {
    let shown = dir.display();
    let occupant = occupant(dir).map_err(|e| format!("cannot read {shown}: {e}"))?;
    match occupant {
        Occupant::Nothing => {}
        Occupant::NotAFolder => {
            return Err(format!(
                "{shown} is a file, not a folder; choose another --out"
            ))
        }
        Occupant::Foreign { entries } => {
            let what = if entries.is_empty() {
                "it has no resolved.json".to_string()
            } else {
                format!("it holds {} that laxc did not write", some_names(&entries))
            };
            return Err(format!(
                "{shown} is not a laxc run folder ({what}); laxc never deletes it, even with \
                 --force: choose another --out"
            ));
        }
        Occupant::Run { .. } if !replace.run => {
            return Err(format!(
                "{shown} already holds a run; pass --force to replace it, or --resume {shown} to \
                 continue it"
            ))
        }
        Occupant::Run { checkpoints: true } if !replace.checkpoints => {
            return Err(format!(
                "{shown} holds a run with checkpoints; --force replaces it only together with \
                 --discard-checkpoints, or --resume {shown} continues it"
            ))
        }
        Occupant::Run { .. } => remove_run_entries(dir, false)?,
    }
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {shown}: {e}"))?;
    Ok(created)
}

/// Removes what laxc wrote into `dir`, and with `and_folder` `dir` itself if that leaves it
/// empty. Anything else in it stays.
pub fn remove_run_entries(dir: &Path, and_folder: bool) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_run_entry(&name) {
            continue;
        }
        let path: PathBuf = entry.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    }
    if and_folder {
        // Fails harmlessly when something else is still in the folder.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, files: &[&str]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("laxc-run-dir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for f in files {
            if let Some(dir) = f.strip_suffix('/') {
                std::fs::create_dir_all(d.join(dir)).unwrap();
            } else {
                std::fs::write(d.join(f), "x").unwrap();
            }
        }
        d
    }

    #[test]
    fn a_folder_is_a_run_only_with_the_marker_and_nothing_foreign() {
        let run = folder(
            "run",
            &[
                "spec.lax",
                "resolved.json",
                "metrics.jsonl",
                ".summary.json.42.tmp",
            ],
        );
        assert_eq!(
            occupant(&run).unwrap(),
            Occupant::Run { checkpoints: false }
        );
        let no_marker = folder("nomarker", &["spec.lax", "metrics.jsonl"]);
        assert_eq!(
            occupant(&no_marker).unwrap(),
            Occupant::Foreign { entries: vec![] }
        );
        let project = folder(
            "project",
            &["resolved.json", "spec.lax", "train.txt", "notes.md"],
        );
        assert_eq!(
            occupant(&project).unwrap(),
            Occupant::Foreign {
                entries: vec!["notes.md".into(), "train.txt".into()]
            }
        );
        // A temporary name is laxc's only with a process id and a known stem.
        assert!(!is_run_entry("data.tmp"));
        assert!(!is_run_entry(".notes.md.12.tmp"));
        assert!(!is_run_entry(".summary.json.tmp"));
        assert!(is_run_entry(".resolved.json.123.tmp"));
        // Inside checkpoints/, only what laxc writes there.
        for ours in [
            "latest",
            "step-000010",
            ".step-000010.partial",
            ".latest.77.tmp",
        ] {
            assert!(is_checkpoint_entry(ours), "{ours}");
        }
        for theirs in ["model.pt", "step-", "step-1a", ".latest.tmp", "best"] {
            assert!(!is_checkpoint_entry(theirs), "{theirs}");
        }
        let mine = folder("mine", &["resolved.json", "checkpoints/"]);
        std::fs::write(mine.join("checkpoints/model.pt"), "weights").unwrap();
        assert_eq!(
            occupant(&mine).unwrap(),
            Occupant::Foreign {
                entries: vec!["checkpoints/model.pt".into()]
            }
        );
        std::fs::remove_dir_all(mine).unwrap();
        for d in [run, no_marker, project] {
            std::fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn claiming_clears_a_run_only_as_far_as_allowed() {
        let files = ["spec.lax", "resolved.json", "checkpoints/"];
        let run = folder("claim", &files);
        std::fs::write(run.join("checkpoints/latest"), "step-000001").unwrap();
        assert!(claim(&run, Replace::default())
            .unwrap_err()
            .contains("--force"));
        let only_force = Replace {
            run: true,
            checkpoints: false,
        };
        assert!(claim(&run, only_force)
            .unwrap_err()
            .contains("--discard-checkpoints"));
        assert!(run.join("checkpoints/latest").exists());
        let both = Replace {
            run: true,
            checkpoints: true,
        };
        assert!(!claim(&run, both).unwrap(), "the folder was there already");
        assert_eq!(occupant(&run).unwrap(), Occupant::Nothing);
        assert!(run.is_dir());
        std::fs::remove_dir_all(run).unwrap();
    }
}
