//! The command line as a user meets it: exit codes, streams, files.

mod common;
use std::process::Command;

fn laxc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_laxc"));
    c.current_dir(common::root());
    c
}

#[test]
fn default_spec_checks_clean() {
    let out = laxc().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("params total"));
    assert!(text.contains("conventions:"));
}

#[test]
fn json_has_the_documented_fields() {
    let out = laxc()
        .args(["check", "specs/tiny-llama-svd-lax.lax", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema_version"], 1);
    for path in [
        "/params/total",
        "/params/trainable",
        "/memory/train_bytes_bf16",
        "/flops/forward_per_token",
    ] {
        assert!(v.pointer(path).is_some(), "missing {path}");
    }
    assert!(v["warnings"].is_array());
}

#[test]
fn spec_errors_exit_1_with_file_line_column() {
    let dir = tempdir();
    let spec = dir.join("bad.lax");
    std::fs::write(
        &spec,
        "model m: llama { vocab = 256, hidden = 256, ffn = 768, heads = 4, layers = 2, seq = 64 }\nfactorize attn.qq as svd(rank = 8)\n",
    )
    .unwrap();
    let out = laxc().arg("check").arg(&spec).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("bad.lax:2:16"), "{err}");
    assert!(
        err.contains("did you mean `attn.q`?") || err.contains("did you mean `q`?"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn missing_file_exits_2() {
    let out = laxc().args(["check", "no/such/file.lax"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn usage_error_exits_2() {
    let out = laxc().args(["check", "--format", "xml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn graph_is_dot_with_distinct_lax_edges() {
    let out = laxc().arg("graph").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph"));
    assert!(
        dot.contains("style=\"bold,dashed\""),
        "LaX edges are drawn distinctly"
    );
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn graph_never_overwrites_without_force() {
    let dir = tempdir();
    let out_file = dir.join("g.dot");
    std::fs::write(&out_file, "precious").unwrap();
    let out = laxc()
        .arg("graph")
        .arg("-o")
        .arg(&out_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), "precious");
    let out = laxc()
        .arg("graph")
        .arg("-o")
        .arg(&out_file)
        .arg("--force")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(std::fs::read_to_string(&out_file)
        .unwrap()
        .starts_with("digraph"));
}

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "laxc-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
