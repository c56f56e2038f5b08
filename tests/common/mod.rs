//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Every folder of shipped specs.
pub const SPEC_DIRS: [&str; 5] = [
    "specs",
    "specs/paper",
    "specs/bench",
    "specs/claims",
    "specs/gpt2",
];

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.lax` file directly in `dir` (relative to the repo root), sorted.
pub fn lax_files(dir: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lax"))
        .collect();
    v.sort();
    v
}

pub fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// The source with a path relative to the repo root as its name, so snapshots do not depend
/// on where the checkout lives.
pub fn source(p: &Path) -> laxc::source::Source {
    let rel = p.strip_prefix(root()).unwrap_or(p);
    laxc::source::Source::new(
        rel.display().to_string(),
        std::fs::read_to_string(p).unwrap(),
    )
}
