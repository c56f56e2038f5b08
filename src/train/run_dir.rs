//! The run folder: what laxc writes into it, and what a new run may remove when it reuses one.
//!
//! A folder counts as a laxc run only if it holds `resolved.json` and nothing that laxc did not
//! write. `--force` replaces such a run and nothing else, so a project folder, the working folder
//! or a run a user added notes to is never emptied; a run's checkpoints are removed only with a
//! second flag, because they are the one thing in a run that cannot be recomputed cheaply.

use std::path::{Path, PathBuf};

/// Every entry laxc writes at the top of a run folder.
pub const RUN_ENTRIES: [&str; 7] = [
    LOCK_FILE,
    "spec.lax",
    "resolved.json",
    "resolved-resume.json",
    "metrics.jsonl",
    "summary.json",
    "checkpoints",
];

/// The file whose presence marks a folder as a laxc run.
const RUN_MARKER: &str = "resolved.json";

/// The file a training process holds an exclusive lock on while it writes the run.
const LOCK_FILE: &str = "run.lock";

/// An exclusive claim on a run folder: while it lives, no other laxc process trains into the
/// folder. The operating system drops the lock when the process ends, however it ends, so a
/// killed run never leaves a folder locked.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// Locks `dir` (which must exist) for this process, or says which process holds it.
pub fn lock(dir: &Path) -> Result<RunLock, String> {
    use std::io::{Read, Seek, Write};
    let path = dir.join(LOCK_FILE);
    let cannot = |e: std::io::Error| format!("cannot lock {}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(cannot)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let pid = holder.trim();
            let who = if pid.is_empty() {
                "another laxc process".to_string()
            } else {
                format!("another laxc process (pid {pid})")
            };
            return Err(format!(
                "{} is being written by {who}; wait for it to finish, or use another --out",
                dir.display()
            ));
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(cannot(e)),
    }
    // Who holds it, for the message another process prints.
    let pid = std::process::id().to_string();
    file.set_len(0)
        .and_then(|()| file.seek(std::io::SeekFrom::Start(0)))
        .and_then(|_| file.write_all(pid.as_bytes()))
        .map_err(cannot)?;
    Ok(RunLock { _file: file })
}

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
    // A lock alone is what a run killed before its first record leaves.
    names.retain(|n| n != LOCK_FILE);
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

/// What laxc writes inside `checkpoints/`: `latest`, `best`, `step-NNNNNN`, a save in progress
/// (`.step-NNNNNN.partial`) and the pointers' atomic-write temporaries.
fn is_checkpoint_entry(name: &str) -> bool {
    let step = |s: &str| {
        s.strip_prefix("step-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let pointer = |n: &str| n == "latest" || n == "best";
    pointer(name)
        || step(name)
        || crate::files::temporary_target(name).is_some_and(pointer)
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

/// A run folder claimed for a new run.
#[derive(Debug)]
pub struct Claimed {
    /// Whether laxc made the folder (so that a run failing at once removes only a folder it made).
    pub created: bool,
    pub lock: RunLock,
}

/// Makes `dir` ready for a new run: creates it, or clears an earlier run in it as far as
/// `replace` allows, and locks it. Nothing is written into a folder that is not a run. An error
/// is one line that says why not and what to do instead.
pub fn claim(dir: &Path, replace: Replace) -> Result<Claimed, String> {
    let shown = dir.display();
    // Looked at twice: once before anything is written (a foreign folder gets no lock file),
    // and again under the lock, so that a run another process started in between is seen.
    allowed(dir, replace)?;
    let created = !dir.exists();
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {shown}: {e}"))?;
    let lock = lock(dir)?;
    if allowed(dir, replace)? {
        remove_entries(dir, Some(LOCK_FILE))?;
    }
    Ok(Claimed { created, lock })
}

/// Whether a new run may start in `dir` under `replace`, and whether an earlier run must be
/// cleared first.
fn allowed(dir: &Path, replace: Replace) -> Result<bool, String> {
    let shown = dir.display();
    let occupant = occupant(dir).map_err(|e| format!("cannot read {shown}: {e}"))?;
    match occupant {
        Occupant::NotAFolder => Err(format!(
            "{shown} is a file, not a folder; choose another --out"
        )),
        Occupant::Foreign { entries } => {
            let what = if entries.is_empty() {
                "it has no resolved.json".to_string()
            } else {
                format!("it holds {} that laxc did not write", some_names(&entries))
            };
            Err(format!(
                "{shown} is not a laxc run folder ({what}); laxc never deletes it, even with \
                 --force: choose another --out"
            ))
        }
        Occupant::Run { .. } if !replace.run => Err(format!(
            "{shown} already holds a run; pass --force to replace it, or --resume {shown} to \
             continue it"
        )),
        Occupant::Run { checkpoints: true } if !replace.checkpoints => Err(format!(
            "{shown} holds a run with checkpoints; --force replaces it only together with \
             --discard-checkpoints, or --resume {shown} continues it"
        )),
        Occupant::Run { .. } => Ok(true),
        Occupant::Nothing => Ok(false),
    }
}

/// Removes what laxc wrote into `dir`, and with `and_folder` `dir` itself if that leaves it
/// empty. Anything else in it stays.
/// A new run this process trains, to be removed if the process must end at once before the
/// run's first checkpoint (a node of a data-parallel run lost, a second Ctrl-C): a new run that
/// fails before its first checkpoint leaves nothing behind.
static NEW_RUN: std::sync::Mutex<Option<(std::path::PathBuf, bool)>> = std::sync::Mutex::new(None);

/// Marks `dir` as this process's new run (`created`: laxc made the folder), or, with None,
/// no longer.
pub fn remove_on_abrupt_exit(run: Option<(&Path, bool)>) {
    let mut slot = NEW_RUN.lock().unwrap_or_else(|e| e.into_inner());
    *slot = run.map(|(dir, created)| (dir.to_path_buf(), created));
}

/// Removes the marked new run if it has no checkpoint yet; called just before the process
/// exits without returning.
pub fn clean_up_before_abrupt_exit() {
    let run = NEW_RUN.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some((dir, created)) = run {
        remove_unless_checkpointed(&dir, created);
    }
}

/// Removes a new run that failed before its first checkpoint (and its folder, if laxc
/// `created` it and nothing else is in it): it leaves nothing behind.
pub fn remove_unless_checkpointed(dir: &Path, created: bool) {
    if !has_checkpoints(dir) {
        let _ = remove_run_entries(dir, created);
    }
}

pub fn remove_run_entries(dir: &Path, and_folder: bool) -> Result<(), String> {
    remove_entries(dir, None)?;
    if and_folder {
        // Fails harmlessly when something else is still in the folder.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// Removes laxc's entries from `dir` but `keep`.
fn remove_entries(dir: &Path, keep: Option<&str>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_run_entry(&name) || keep == Some(name.as_str()) {
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
            "best",
            ".best.8.tmp",
        ] {
            assert!(is_checkpoint_entry(ours), "{ours}");
        }
        for theirs in ["model.pt", "step-", "step-1a", ".latest.tmp", "best.pt"] {
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
        let claimed = claim(&run, both).unwrap();
        assert!(!claimed.created, "the folder was there already");
        assert_eq!(occupant(&run).unwrap(), Occupant::Nothing);
        assert!(run.is_dir());
        drop(claimed);
        std::fs::remove_dir_all(run).unwrap();
    }

    /// Two processes (here: two open files, which the operating system locks apart just the
    /// same) never write into one run folder.
    #[test]
    fn a_locked_run_folder_is_refused_until_it_is_released() {
        let run = folder("lock", &["spec.lax", "resolved.json"]);
        let held = lock(&run).unwrap();
        let err = lock(&run).unwrap_err();
        let pid = std::process::id().to_string();
        assert!(
            err.contains("being written by another laxc process"),
            "{err}"
        );
        assert!(err.contains(&pid), "{err}");
        let force = Replace {
            run: true,
            checkpoints: true,
        };
        assert!(claim(&run, force).unwrap_err().contains("being written"));
        assert!(
            run.join("spec.lax").exists(),
            "a refused claim removes nothing"
        );
        drop(held);
        let claimed = claim(&run, force).unwrap();
        assert!(!run.join("spec.lax").exists());
        // A folder holding only the lock file is as good as empty.
        assert_eq!(occupant(&run).unwrap(), Occupant::Nothing);
        drop(claimed);
        std::fs::remove_dir_all(run).unwrap();
    }
}
