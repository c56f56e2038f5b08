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
    assert_eq!(v["schema_version"], 2);
    // Numbers are JSON numbers, every one an integer where the quantity is whole.
    for path in [
        "/params/total",
        "/params/trainable",
        "/memory/train_bytes_bf16",
        "/memory/activation_bytes_per_sample_fp32",
        "/memory/activation_bytes_per_batch_fp32",
        "/flops/forward_per_token",
        "/flops/lax_gemm_per_sample",
        "/flops/lax_other_per_sample",
        "/sites/0/factorization/rank",
    ] {
        assert!(
            v.pointer(path).is_some_and(|x| x.is_u64()),
            "{path} is not a whole number"
        );
    }
    // Schema 2 dropped the display string and the single LaX figure.
    assert!(v.pointer("/sites/0/rank").is_none());
    assert!(v.pointer("/flops/lax_per_sample").is_none());
    // A language model's config has no image sizes; a ViT's has no vocabulary.
    assert!(v.pointer("/model/config/vocab").is_some());
    assert!(v.pointer("/model/config/image").is_none());
    let vit = laxc()
        .args(["check", "specs/tiny-vit-svd-lax.lax", "--format", "json"])
        .output()
        .unwrap();
    let vit: serde_json::Value = serde_json::from_slice(&vit.stdout).unwrap();
    assert!(vit
        .pointer("/model/config/image")
        .is_some_and(|x| x.is_u64()));
    assert!(vit.pointer("/model/config/vocab").is_none());
    // Activations at the spec's batch (8) are 8 times those of one sample.
    let per_sample = v["memory"]["activation_bytes_per_sample_fp32"]
        .as_u64()
        .unwrap();
    assert_eq!(
        v["memory"]["activation_bytes_per_batch_fp32"].as_u64(),
        Some(8 * per_sample)
    );
    assert!(v["warnings"].is_array());
}

#[test]
fn several_specs_are_compared_in_one_table_and_one_json_document() {
    let specs = [
        "specs/tiny-llama-svd.lax",
        "specs/tiny-llama-svd-lax.lax",
        "specs/tiny-llama-dense.lax",
    ];
    let out = laxc().arg("check").args(specs).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    for s in specs {
        assert_eq!(text.matches(s).count(), 1, "{text}");
    }
    assert!(
        text.contains("of dense") && text.contains("100.0%"),
        "{text}"
    );
    let out = laxc()
        .arg("check")
        .args(specs)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["specs"].as_array().unwrap().len(), 3);
    assert_eq!(v["specs"][2]["params"]["ratio_to_dense"], 1.0);
    // One bad spec among them: the others are still reported, and the exit code says 1.
    let dir = tempdir();
    let bad = dir.join("bad.lax");
    std::fs::write(&bad, "model m: llama {}\n").unwrap();
    let out = laxc()
        .arg("check")
        .arg(specs[0])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stdout).unwrap().contains(specs[0]));
}

#[test]
fn check_set_tries_a_constant_a_size_and_a_train_key_without_editing_the_file() {
    let json = |extra: &[&str]| -> serde_json::Value {
        let out = laxc()
            .args(["check", "specs/tiny-llama-svd-lax.lax", "--format", "json"])
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let base = json(&[]);
    assert_eq!(base["sites"][0]["factorization"]["rank"], 64);
    let r32 = json(&["--set", "r=32"]);
    assert_eq!(r32["sites"][0]["factorization"]["rank"], 32);
    let deeper = json(&["--set", "layers=8"]);
    assert_eq!(deeper["model"]["layers"], 8);
    // `r = hidden / 4` follows a new hidden.
    let wider = json(&["--set", "hidden=512"]);
    assert_eq!(wider["sites"][0]["factorization"]["rank"], 128);
    let batch = json(&["--set", "batch=16"]);
    assert_eq!(batch["flops"]["samples_per_step"], 16);
    let out = laxc()
        .args([
            "check",
            "specs/tiny-llama-svd-lax.lax",
            "--set",
            "hiden=512",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("E0102") && err.contains("did you mean `hidden`?"),
        "{err}"
    );
    // A value that breaks the spec is reported against the spec's text, with its line.
    let out = laxc()
        .args(["check", "specs/tiny-llama-svd-lax.lax", "--set", "r=1000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("E0703") && err.contains("rank 1000"), "{err}");
}

#[test]
fn a_byte_order_mark_is_not_a_syntax_error() {
    let dir = tempdir();
    let spec = dir.join("bom.lax");
    let text =
        std::fs::read_to_string(common::root().join("specs/tiny-llama-svd-lax.lax")).unwrap();
    std::fs::write(&spec, format!("\u{feff}{text}")).unwrap();
    let out = laxc().arg("check").arg(&spec).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = laxc().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let text = String::from_utf8(out.stdout).unwrap();
        let train = cfg!(feature = "train").then_some("train");
        for sub in ["check", "explain", "new", "format"]
            .into_iter()
            .chain(train)
        {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
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

/// `laxc graph`'s DOT for a spec and extra arguments.
fn dot_of(spec: &str, extra: &[&str]) -> String {
    let out = laxc().args(["graph", spec]).args(extra).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn graph_draws_one_representative_block_by_default_and_every_block_on_request() {
    let spec = "specs/paper/vit-b-svd-r256-lax-tensor.lax";
    let clusters = |dot: &str| dot.matches("subgraph cluster_block").count();
    let dot = dot_of(spec, &[]);
    assert_eq!(clusters(&dot), 1);
    assert!(
        dot.contains("label=\"blocks[1], × 11 (every later block alike)\""),
        "{dot}"
    );
    assert!(
        dot.contains("blocks[2..12]: 10 blocks, each like blocks[1]"),
        "{dot}"
    );
    // One node per linear site: six sites in a ViT block, each with its pathway from the
    // previous block drawn as a loop.
    let site_nodes = dot
        .lines()
        .filter(|l| l.trim_start().starts_with("site") && !l.contains("->"))
        .count();
    assert_eq!(site_nodes, 6, "{dot}");
    assert_eq!(dot.matches("from the previous block").count(), 6, "{dot}");
    assert!(
        !dot.contains("dropout"),
        "dropout is left out of the readable picture"
    );
    let all = dot_of(spec, &["--blocks", ".."]);
    assert_eq!(clusters(&all), 12);
    let some = dot_of(spec, &["--blocks", "3..=5"]);
    assert_eq!(clusters(&some), 3);
    assert!(some.contains("blocks[0..3]: 3 blocks, not drawn"), "{some}");
    let full = dot_of(spec, &["--full", "--blocks", ".."]);
    assert!(full.contains("dropout"), "--full draws every node");
    let out = laxc()
        .args(["graph", spec, "--blocks", "4..40"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("blocks 0..12"));
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

#[cfg(feature = "train")]
/// The README's first-session commands, run as written (`laxc` is this build) in a folder
/// outside the repository with an empty cache: every one exits 0 and leaves what it says.
#[test]
fn the_readme_first_session_works_from_a_folder_outside_the_repository() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let block = readme
        .split("<!-- any-folder -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has the any-folder block");
    let dir = tempdir();
    assert!(!dir.starts_with(common::root()));
    for line in block.lines() {
        let command = line.split('#').next().unwrap().trim();
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[0], "laxc", "{line}");
        let out = Command::new(env!("CARGO_BIN_EXE_laxc"))
            .args(&words[1..])
            .current_dir(&dir)
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "`{command}` in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for made in [
        "first-run/metrics.jsonl",
        "first-run-loss.png",
        "my-model.lax",
        "my-model.dot",
    ] {
        assert!(dir.join(made).exists(), "{made} was not written");
    }
}

#[cfg(feature = "train")]
/// `laxc new FAMILY`: a starter that checks clean (no error, no warning), trains two steps on
/// data put where its comments say, and is never written over an existing file.
#[test]
fn every_starter_checks_clean_and_trains() {
    let root = common::root();
    for family in ["llama", "gpt2", "vit"] {
        let dir = tempdir();
        let spec = dir.join("my.lax");
        let out = laxc()
            .args(["new", family, "-o"])
            .arg(&spec)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{family}");
        let out = laxc().arg("check").arg(&spec).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{family}: {err}");
        assert!(!err.contains("warning"), "{family}: {err}");
        // The data the starter names, in the starter's folder.
        let text = std::fs::read_to_string(&spec).unwrap();
        for (name, from) in [
            ("train.txt", "data/brown-excerpt-train.txt"),
            ("valid.txt", "data/brown-excerpt-valid.txt"),
        ] {
            if text.contains(&format!("\"{name}\"")) {
                std::fs::copy(root.join(from), dir.join(name)).unwrap();
            }
        }
        if family == "vit" {
            copy_dir(
                &root.join("data/mnist-excerpt"),
                &dir.join(mnist_folder(&text)),
            );
        }
        let out = laxc()
            .arg("train")
            .arg(&spec)
            .args([
                "--plain",
                "--set",
                "steps=2",
                "--set",
                "warmup=0",
                "--set",
                "eval_every=2",
            ])
            .args(["--set", "eval_batches=1", "--out"])
            .arg(dir.join("run"))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{family}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let again = laxc()
            .args(["new", family, "-o"])
            .arg(&spec)
            .output()
            .unwrap();
        assert_eq!(
            again.status.code(),
            Some(2),
            "an existing spec is never overwritten"
        );
    }
}

/// The folder a starter's `mnist("...")` names.
#[cfg(feature = "train")]
fn mnist_folder(spec: &str) -> String {
    let at = spec.find("mnist(\"").expect("the vit starter reads MNIST") + "mnist(\"".len();
    spec[at..].split('"').next().unwrap().to_string()
}

#[cfg(feature = "train")]
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// A build without the wgpu back end says how to get it, in one line.
#[cfg(all(feature = "train", not(feature = "wgpu")))]
#[test]
fn wgpu_without_the_feature_is_one_line() {
    let out = laxc()
        .args(["bench", "--device", "wgpu", "--steps", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--features wgpu"), "{err}");
}

/// `--threads` sizes the CPU backend's pool (the implementation line says how many threads ran),
/// is refused at 0, and is refused on a GPU device instead of being ignored there.
#[cfg(feature = "train")]
#[test]
fn threads_are_applied_or_refused() {
    let bench = |extra: &[&str]| {
        laxc()
            .args(["bench", "--steps", "1", "--warmup", "0", "--batch", "1"])
            .args(["--format", "json"])
            .args(extra)
            .output()
            .unwrap()
    };
    for (threads, label) in [("1", "1 thread)"), ("3", "3 threads)")] {
        let out = bench(&["--threads", threads]);
        common::assert_success(&out);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let implementation = json["implementation"].as_str().unwrap();
        assert!(implementation.contains(label), "{implementation}");
    }
    let out = bench(&["--threads", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let out = bench(&["--threads", "1", "--device", "cuda:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--threads") && err.contains("cuda:0"), "{err}");
}

/// `dtype = bf16` trains on Flex (recorded in the run) and is refused, before anything is
/// written, where it cannot run (ndarray; wgpu and candle likewise).
#[cfg(feature = "train")]
#[test]
fn bf16_trains_on_flex_and_is_refused_where_it_cannot_run() {
    let dir = tempdir();
    let train = |run: &str, extra: &[&str]| {
        laxc()
            .args(["train", "--plain", "--set", "steps=3", "--set", "warmup=0"])
            .args(["--set", "eval_every=0", "--set", "dtype=bf16", "--out"])
            .arg(dir.join(run))
            .args(extra)
            .output()
            .unwrap()
    };
    common::assert_success(&train("flex", &[]));
    let resolved = std::fs::read_to_string(dir.join("flex/resolved.json")).unwrap();
    assert!(resolved.contains("\"dtype\": \"bf16\""), "{resolved}");
    let out = train("ndarray", &["--backend", "ndarray"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("dtype = bf16") && err.contains("ndarray"),
        "{err}"
    );
    assert!(!dir.join("ndarray").exists());
    // wgpu and candle the same way (checked on the options: the device needs its own build).
    use laxc::options::{Precision, TrainOptions};
    use laxc::train::session::{precision_usable, CpuBackend};
    let on = |device: &str, dtype: Precision, backend: CpuBackend| {
        let options = TrainOptions {
            device: device.into(),
            dtype,
            ..TrainOptions::default()
        };
        precision_usable(&options, backend).map_err(|r| r.message().to_string())
    };
    let refused = on("wgpu", Precision::Bf16, CpuBackend::Flex).unwrap_err();
    assert!(refused.contains("wgpu"), "{refused}");
    assert!(on("cpu", Precision::Bf16, CpuBackend::Candle).is_err());
    assert!(on("cuda:0", Precision::Bf16, CpuBackend::Flex).is_ok());
    assert!(on("wgpu", Precision::F32, CpuBackend::Flex).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `laxc import`, `laxc generate` and `laxc export` as a user runs them: a HuggingFace
/// directory with its own tokenizer.json generates text with the spec imported on the fly; a
/// byte-level run generates from its checkpoint; exporting a run with LaX pathways is refused in
/// one line; a file that is not a model is refused by name.
#[cfg(feature = "train")]
#[test]
fn pretrained_models_import_generate_and_export_from_the_command_line() {
    let dir = tempdir();
    let model = dir.join("model");
    copy_dir(
        &common::root().join("tests/data/llama-reference/untied"),
        &model,
    );
    // A word-level tokenizer of the fixture's 80 ids, "</s>" its end of text.
    let words: Vec<String> = (0..80)
        .map(|i| match i {
            2 => "\"</s>\": 2".to_string(),
            i => format!("\"w{i}\": {i}"),
        })
        .collect();
    let tokenizer = format!(
        r###"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {{"type": "Whitespace"}}, "post_processor": null,
        "decoder": {{"type": "WordPiece", "prefix": "##", "cleanup": true}},
        "model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "w0"}}}}"###,
        words.join(", ")
    );
    std::fs::write(model.join("tokenizer.json"), tokenizer).unwrap();
    std::fs::write(
        model.join("tokenizer_config.json"),
        r#"{"eos_token": "</s>"}"#,
    )
    .unwrap();
    // Six tokens after a three-word prompt, as JSON, from the directory (and `extra`).
    let generate = |extra: &[&std::ffi::OsStr]| {
        laxc()
            .args(["generate", "--base"])
            .arg(&model)
            .args(extra)
            .args([
                "--prompt",
                "w5 w17 w3",
                "--max-tokens",
                "6",
                "--format",
                "json",
            ])
            .output()
            .unwrap()
    };
    let out = generate(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["prompt_tokens"], 3);
    assert!(v["generated_tokens"].as_u64().unwrap() >= 1, "{v}");
    // The fixture itself has no tokenizer: refused by name, unless --tokenizer names one.
    let bare = common::root().join("tests/data/llama-reference/untied");
    let ask = |extra: &[&std::ffi::OsStr]| {
        laxc()
            .args([
                "generate",
                "--prompt",
                "w5 w17",
                "--max-tokens",
                "2",
                "--base",
            ])
            .arg(&bare)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = ask(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("tokenizer.json"), "{stderr}");
    let out = ask(&[
        "--tokenizer".as_ref(),
        model.join("tokenizer.json").as_os_str(),
    ]);
    common::assert_success(&out);
    // With a PEFT adapter over it, its LoRA sites taken from the adapter's config.
    let adapter = common::root().join("tests/data/llama-reference/untied-peft");
    let out = generate(&["--adapter".as_ref(), adapter.as_os_str()]);
    common::assert_success(&out);
    let adapted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        adapted["spec"].as_str().unwrap().contains("imported"),
        "{adapted}"
    );
    // The import writes a spec that checks clean.
    let spec = dir.join("model.lax");
    let out = laxc()
        .arg("import")
        .arg(&model)
        .arg("-o")
        .arg(&spec)
        .output()
        .unwrap();
    common::assert_success(&out);
    let out = laxc().arg("check").arg(&spec).output().unwrap();
    common::assert_success(&out);
    // Not a model: one line naming the file.
    let out = laxc()
        .args(["import", "data/brown-excerpt-train.txt"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("brown-excerpt-train.txt"), "{stderr}");
    // A byte-level run of the default spec generates from its checkpoint.
    let run = dir.join("run");
    let out = laxc()
        .args([
            "train", "--plain", "--set", "steps=2", "--set", "warmup=0", "--set",
        ])
        .args(["eval_every=0", "--out"])
        .arg(&run)
        .output()
        .unwrap();
    common::assert_success(&out);
    let out = laxc()
        .args(["generate", "--checkpoint"])
        .arg(&run)
        .args([
            "--prompt",
            "The ",
            "--max-tokens",
            "5",
            "--temperature",
            "1",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("The "));
    // The default spec has no LoRA: there is no adapter to export.
    let out = laxc()
        .arg("export")
        .arg(&run)
        .args(["--format", "peft", "-o"])
        .arg(dir.join("adapter"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("LaX pathways") || stderr.contains("LoRA"),
        "{stderr}"
    );
    // A folder that holds anything is never written into without --force; with it, only the
    // export's own files are replaced.
    let dense = dir.join("dense-run");
    let out = laxc()
        .args([
            "train",
            "specs/tiny-llama-dense.lax",
            "--plain",
            "--set",
            "steps=1",
        ])
        .args(["--set", "warmup=0", "--set", "eval_every=0", "--out"])
        .arg(&dense)
        .output()
        .unwrap();
    common::assert_success(&out);
    let occupied = dir.join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("notes.txt"), "mine").unwrap();
    let export = |force: bool| {
        let mut cmd = laxc();
        cmd.arg("export")
            .arg(&dense)
            .args(["--format", "hf", "-o"])
            .arg(&occupied);
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let out = export(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is not empty") && stderr.contains("--force"),
        "{stderr}"
    );
    assert!(!occupied.join("config.json").exists());
    common::assert_success(&export(true));
    assert!(occupied.join("config.json").exists());
    assert_eq!(
        std::fs::read_to_string(occupied.join("notes.txt")).unwrap(),
        "mine"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
