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
        "/memory/activation_bytes_per_sample_fp32",
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
    // With --format json the errors are on stdout as JSON too, located.
    let out = laxc()
        .args(["check", "--format", "json"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["errors"][0];
    assert_eq!(
        (e["line"].as_u64(), e["column"].as_u64()),
        (Some(2), Some(16))
    );
    assert_eq!(e["severity"], "error");
    assert!(e["code"].as_str().unwrap().starts_with('E'), "{e}");
    assert!(e["hint"].as_str().unwrap().contains("did you mean"), "{e}");
}

/// A spec with many errors prints the first 20 and a count of the rest (10 MB of broken lines
/// used to print for minutes).
#[test]
fn many_errors_are_capped_with_a_count() {
    let dir = tempdir();
    let spec = dir.join("many.lax");
    let mut text = String::from(
        "model m: llama { vocab = 256, hidden = 256, ffn = 768, heads = 4, layers = 2, seq = 64 }\n",
    );
    text.push_str(&"factorize attn.q as svd(rank = 0)\n".repeat(35));
    std::fs::write(&spec, text).unwrap();
    let out = laxc().arg("check").arg(&spec).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.matches("error[E0405]").count(), 20, "{err}");
    assert!(err.contains("note: 15 more diagnostics not shown"), "{err}");
    assert!(err.contains("has 35 errors"), "{err}");
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

/// A run folder with a metrics.jsonl like `laxc train` writes: training records every 10 steps,
/// validation every 50.
fn fake_run(dir: &std::path::Path, name: &str, scale: f64) -> std::path::PathBuf {
    let run = dir.join(name);
    std::fs::create_dir_all(&run).unwrap();
    let mut lines = Vec::new();
    for step in (10..=100).step_by(10) {
        let loss = scale * 3.0 / (step as f64).sqrt();
        lines.push(format!(
            r#"{{"step":{step},"loss":{loss},"lr":0.001,"grad_norm":1.0,"tokens_per_s":1000.0}}"#
        ));
        if step % 50 == 0 {
            lines.push(format!(
                r#"{{"step":{step},"val_loss":{},"val_perplexity":{}}}"#,
                loss + 0.1,
                (loss + 0.1f64).exp()
            ));
        }
    }
    std::fs::write(run.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
    run
}

#[test]
fn plot_writes_png_and_svg_with_every_run_labelled() {
    let dir = tempdir();
    let a = fake_run(&dir, "svd", 1.0);
    let b = fake_run(&dir, "svd-lax", 0.8);
    let prefix = dir.join("curves");
    let out = laxc()
        .args(["plot", "--metric", "loss", "-o"])
        .arg(&prefix)
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(dir.join("curves.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
    assert!(svg.starts_with("<svg"), "not an SVG");
    for label in ["svd", "svd-lax", "training loss"] {
        assert!(svg.contains(label), "the SVG lacks `{label}`");
    }
    // Each run is one polyline through its ten points, each point marked with a circle.
    let curves = svg
        .split("<polyline")
        .skip(1)
        .filter(|p| {
            let pts = p
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            pts.split_whitespace().count() == 10
        })
        .count();
    assert_eq!(curves, 2, "one ten-point curve per run");
    assert_eq!(svg.matches("<circle").count(), 20);
    // The last step's dot is drawn whole: inside the plot area, which ends 16 px (the margin)
    // before the 960-px edge.
    let right = svg
        .split("<circle")
        .skip(1)
        .map(|c| {
            let cx = c.split("cx=\"").nth(1).unwrap().split('"').next().unwrap();
            cx.parse::<f64>().unwrap()
        })
        .fold(0.0f64, f64::max);
    assert!(
        right + 3.0 < 944.0,
        "the last dot at x = {right} is cut at the edge"
    );
    // Two validation points: drawn, with a word that they are only two.
    let sparse = laxc()
        .args(["plot", "--metric", "val_loss", "-o"])
        .arg(dir.join("val"))
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(sparse.status.code(), Some(0));
    let err = String::from_utf8_lossy(&sparse.stderr);
    assert!(err.contains("has only 2 points of val_loss"), "{err}");

    // Never overwrites without --force; with it, does.
    let again = laxc()
        .args(["plot", "-o"])
        .arg(&prefix)
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = laxc()
        .args(["plot", "--force", "--label", "only one", "-o"])
        .arg(&prefix)
        .arg(&a)
        .output()
        .unwrap();
    assert_eq!(forced.status.code(), Some(0));
    assert!(std::fs::read_to_string(dir.join("curves.svg"))
        .unwrap()
        .contains("only one"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn plot_explains_a_folder_without_the_metric() {
    let dir = tempdir();
    let run = fake_run(&dir, "r", 1.0);
    let out = laxc()
        .args(["plot", "--metric", "val_accuracy", "-o"])
        .arg(dir.join("x"))
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no `val_accuracy` records"), "{err}");
    let missing = laxc()
        .args(["plot", "-o"])
        .arg(dir.join("y"))
        .arg(dir.join("no-such-run"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("is no-such-run a run folder")
            || String::from_utf8_lossy(&missing.stderr).contains("a run folder")
    );
    assert!(!dir.join("x.png").exists() && !dir.join("y.png").exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// `laxc check -` reads the spec from standard input.
#[test]
fn check_reads_a_spec_from_standard_input() {
    use std::io::Write;
    let mut child = laxc()
        .args(["check", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let spec = "model m: llama { vocab = 256, hidden = 64, ffn = 128, heads = 4, layers = 2, \
                seq = 16 }\nfactorize attn.qq as svd(rank = 8)\n";
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("<stdin>:2:"), "{err}");
}
