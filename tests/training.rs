//! `laxc train` as a user runs it: it learns, it resumes exactly, it never overwrites a run,
//! it stops cleanly on a NaN, and the ViT learns MNIST.
#![cfg(feature = "train")]

mod common;
use std::process::Command;

fn laxc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_laxc"));
    c.current_dir(common::root());
    c
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("laxc-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `laxc train ARGS --plain --out RUN`.
fn train(args: &[&str], run: &std::path::Path) -> std::process::Output {
    laxc()
        .arg("train")
        .args(args)
        .arg("--plain")
        .arg("--out")
        .arg(run)
        .output()
        .unwrap()
}

fn summary(run: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap()
}

fn byte_unigram_entropy(path: &str) -> f64 {
    let bytes = std::fs::read(common::root().join(path)).unwrap();
    let mut counts = [0usize; 256];
    for b in &bytes {
        counts[*b as usize] += 1;
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| -(c as f64 / n) * (c as f64 / n).ln())
        .sum()
}

#[test]
fn default_spec_learns_below_the_unigram_entropy() {
    let run = tempdir("learn");
    learns_below_the_unigram_entropy(&[], &run);
    // The run folder holds the spec, the metrics and a checkpoint.
    assert!(run.join("spec.lax").exists());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(metrics.lines().next().unwrap()).unwrap();
    for key in ["step", "loss", "lr", "tokens_per_s"] {
        assert!(first.get(key).is_some(), "metrics lack {key}");
    }
    assert!(run
        .join("checkpoints/step-000060/model.safetensors")
        .exists());

    // laxc eval on the checkpoint gives the same validation loss.
    let ev = laxc()
        .args(["eval", "--checkpoint"])
        .arg(&run)
        .args(["--set", "eval_batches=8"])
        .output()
        .unwrap();
    common::assert_success(&ev);
    let text = String::from_utf8(ev.stdout).unwrap();
    assert!(text.contains("perplexity"), "{text}");

    // An existing run is never overwritten without --force.
    let again = laxc()
        .args([
            "train", "--plain", "--set", "steps=1", "--set", "warmup=0", "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(run.join("checkpoints/step-000060").exists());
    let _ = std::fs::remove_dir_all(&run);
}

/// With dropout on: its masks are drawn per step, so a resumed run draws the same ones.
#[test]
fn resuming_gives_the_same_run() {
    let straight = tempdir("straight");
    let split = tempdir("split");
    let common_args = [
        "--plain",
        "--set",
        "warmup=2",
        "--set",
        "eval_every=0",
        "--set",
        "log_every=1",
        "--set",
        "batch=2",
        "--set",
        "dropout=0.2",
    ];
    let run = |dir: &std::path::Path, steps: &str, resume: bool| {
        let mut c = laxc();
        c.arg("train");
        // A resume takes the options the run recorded.
        if resume {
            c.args(["--plain", "--set", steps, "--resume"]).arg(dir);
        } else {
            c.args(common_args).args(["--set", steps, "--out"]).arg(dir);
        }
        let out = c.output().unwrap();
        common::assert_success(&out);
    };
    run(&straight, "steps=6", false);
    run(&split, "steps=3", false);
    // The schedule depends on the total, so the first leg must plan for 6 steps as well.
    let _ = std::fs::remove_dir_all(&split);
    run(&split, "steps=6", false);
    let a = summary(&straight)["final_loss"].as_f64().unwrap();
    let b = summary(&split)["final_loss"].as_f64().unwrap();
    assert!((a - b).abs() < 1e-6, "same seed, same run: {a} vs {b}");

    // Now interrupt at 3 by checkpointing, and resume to 6.
    let leg = tempdir("leg");
    let out = laxc()
        .arg("train")
        .args(common_args)
        .args(["--set", "steps=6", "--set", "checkpoint_every=3", "--out"])
        .arg(&leg)
        .output()
        .unwrap();
    assert!(out.status.success());
    // Drop the final checkpoint so the newest is step 3, as after a crash at step 4.
    std::fs::remove_dir_all(leg.join("checkpoints/step-000006")).unwrap();
    std::fs::write(leg.join("checkpoints/latest"), "step-000003").unwrap();
    run(&leg, "steps=6", true);
    let c = summary(&leg)["final_loss"].as_f64().unwrap();
    assert!((a - c).abs() < 1e-4, "resumed run: {a} vs {c}");
    // Steps 4 to 6 were logged before the "crash" and again after it: each is recorded once.
    let metrics = std::fs::read_to_string(leg.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r.get("loss").is_some())
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6]);
    for d in [straight, split, leg] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn a_nan_loss_stops_cleanly() {
    let run = tempdir("nan");
    let out = train(
        &[
            "--set",
            "steps=50",
            "--set",
            "lr=1e12",
            "--set",
            "warmup=0",
            "--set",
            "clip=0",
            "--set",
            "eval_every=0",
        ],
        &run,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("stopped early"), "{stdout}");
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn vit_learns_mnist_well_above_chance() {
    let run = tempdir("vit");
    let out = train(
        &[
            "specs/tiny-vit-svd-lax.lax",
            "--set",
            "epochs=3",
            "--set",
            "eval_batches=8",
            "--set",
            "seed=0",
        ],
        &run,
    );
    common::assert_success(&out);
    let acc = summary(&run)["val_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.4,
        "accuracy {acc} after three epochs (chance is 0.1)"
    );
    let _ = std::fs::remove_dir_all(&run);
}

#[test]
fn bad_data_and_devices_fail_with_one_clear_line() {
    let out = laxc()
        .args(["train", "--plain", "--set", "data=text(\"no/such.txt\")"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("specs/no/such.txt"),
        "{err}"
    );
    let out = laxc()
        .args(["train", "--plain", "--device", "cuda"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cuda"));
}

#[test]
fn ctrl_c_and_sigterm_checkpoint_and_stop() {
    for signal in ["-INT", "-TERM"] {
        interrupted_run_checkpoints_and_stops(signal);
    }
}

fn interrupted_run_checkpoints_and_stops(signal: &str) {
    use std::io::{BufRead, BufReader};
    let run = tempdir(&format!("signal{signal}"));
    let mut child = laxc()
        .args([
            "train",
            "--plain",
            "--set",
            "steps=100000",
            "--set",
            "log_every=1",
            "--set",
            "checkpoint_every=2",
        ])
        .args(["--set", "eval_every=0", "--set", "batch=2", "--out"])
        .arg(&run)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    // Wait until it is really training.
    for line in lines.by_ref() {
        if line.unwrap().starts_with("step 3/") {
            break;
        }
    }
    // A second process never trains into the folder of a running run.
    let second = laxc()
        .args(["train", "--plain", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(2));
    let err = String::from_utf8_lossy(&second.stderr);
    let pid = child.id().to_string();
    assert!(
        err.contains("being written by another laxc process") && err.contains(&pid),
        "{err}"
    );
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let said: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        said.iter().any(|l| l.contains("stopping after this step")),
        "{signal}: {said:?}"
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{signal}");
    let s = summary(&run);
    assert!(s["stopped"].as_str().unwrap().contains("Ctrl-C"));
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    assert!(run
        .join("checkpoints")
        .join(latest.trim())
        .join("model.safetensors")
        .exists());
    let _ = std::fs::remove_dir_all(&run);
}

/// A HuggingFace tokenizer.json (here a tiny word-level one) tokenizes text data.
#[test]
fn huggingface_tokenizer_json_is_used_for_text() {
    let dir = tempdir("tok");
    std::fs::create_dir_all(&dir).unwrap();
    let words = [
        "[UNK]", "the", "of", "and", "to", "a", "in", "is", "that", "was", "he", "for",
    ];
    let vocab: Vec<String> = words
        .iter()
        .enumerate()
        .map(|(i, w)| format!("\"{w}\": {i}"))
        .collect();
    let tokenizer = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": {{"type": "Lowercase"}}, "pre_tokenizer": {{"type": "Whitespace"}},
        "post_processor": null, "decoder": null,
        "model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "[UNK]"}}}}"#,
        vocab.join(", ")
    );
    let tok_path = dir.join("tokenizer.json");
    std::fs::write(&tok_path, tokenizer).unwrap();
    let data = |name: &str| common::root().join("data").join(name).display().to_string();
    let set = format!(
        "data=text(\"{}\", valid = \"{}\", tokenizer = \"{}\")",
        data("brown-excerpt-train.txt"),
        data("brown-excerpt-valid.txt"),
        tok_path.display()
    );
    let run = dir.join("run");
    let out = train(
        &[
            "--set",
            &set,
            "--set",
            "steps=3",
            "--set",
            "warmup=1",
            "--set",
            "eval_every=0",
        ],
        &run,
    );
    common::assert_success(&out);
    let resolved = std::fs::read_to_string(run.join("resolved.json")).unwrap();
    assert!(resolved.contains("tokenizer.json"), "{resolved}");
    // A file that is not a tokenizer fails with one line naming it.
    std::fs::write(&tok_path, "{ not json").unwrap();
    let out = train(
        &["--set", &set, "--set", "steps=3", "--set", "warmup=1"],
        &dir.join("run2"),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokenizer.json"));
    assert!(
        !dir.join("run2").exists(),
        "a failed start leaves no run folder"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// llm.c / nanoGPT token shards: a 256 × int32 header (magic 20240520, version 1, count),
/// then uint16 tokens.
fn write_shard(path: &std::path::Path, tokens: &[u16], magic: i32) {
    let mut bytes = Vec::new();
    let mut header = [0i32; 256];
    header[0] = magic;
    header[1] = 1;
    header[2] = tokens.len() as i32;
    for h in header {
        bytes.extend_from_slice(&h.to_le_bytes());
    }
    for t in tokens {
        bytes.extend_from_slice(&t.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn token_shards_train_and_bad_shards_are_refused() {
    let dir = tempdir("shards");
    std::fs::create_dir_all(&dir).unwrap();
    let tokens: Vec<u16> = (0..5000u32)
        .map(|i| ((i * 7 + i / 13) % 200) as u16)
        .collect();
    write_shard(&dir.join("data_train_000.bin"), &tokens, 20240520);
    write_shard(&dir.join("data_val_000.bin"), &tokens[..1000], 20240520);
    let set = format!("data=tokens(\"{}\")", dir.display());
    let out = train(
        &[
            "--set",
            &set,
            "--set",
            "steps=2",
            "--set",
            "warmup=1",
            "--set",
            "eval_every=0",
        ],
        &dir.join("run"),
    );
    common::assert_success(&out);
    write_shard(&dir.join("data_val_000.bin"), &tokens[..1000], 12345);
    let out = train(
        &["--set", &set, "--set", "steps=2", "--set", "warmup=1"],
        &dir.join("run2"),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data_val_000.bin is not an llm.c token shard"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cifar10_binary_batches_train_a_vit() {
    let dir = tempdir("cifar");
    std::fs::create_dir_all(&dir).unwrap();
    let record = |label: u8, shade: u8| {
        let mut r = vec![label];
        r.extend(std::iter::repeat_n(shade, 3072));
        r
    };
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ] {
        let bytes: Vec<u8> = (0..8u8).flat_map(|i| record(i % 10, i * 30)).collect();
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
    let spec = dir.join("cifar.lax");
    std::fs::write(
        &spec,
        "model c: vit { image = 32, patch = 8, channels = 3, classes = 10, hidden = 32, mlp = 64, heads = 2, layers = 2 }\n\
         factorize * as svd(rank = 8)\n\
         lax inter * { gate = tensor }\n\
         train { data = cifar10(\".\"), steps = 2, batch = 4, eval_every = 0 }\n",
    )
    .unwrap();
    let out = laxc()
        .arg("train")
        .arg(&spec)
        .arg("--plain")
        .arg("--out")
        .arg(dir.join("run"))
        .output()
        .unwrap();
    common::assert_success(&out);
    assert!(summary(&dir.join("run"))["val_accuracy"].is_number());
    // A truncated batch file is refused by name.
    std::fs::write(dir.join("test_batch.bin"), vec![0u8; 100]).unwrap();
    let out = laxc()
        .arg("train")
        .arg(&spec)
        .arg("--plain")
        .arg("--out")
        .arg(dir.join("run2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("test_batch.bin"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_too_large_for_memory_is_refused_quoting_the_estimate() {
    // LLaMA-13B with LoRA: about 50 GiB of fp32 state, more than any machine this runs on has.
    let out = laxc()
        .args(["train", "specs/paper/llama-13b-lora-r32.lax", "--plain"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("GiB for fp32 weights, gradients and Adam state"),
        "{err}"
    );
}

/// A batch whose activations cannot fit is refused before a folder is made (it used to abort
/// after seconds and leave a run without a checkpoint), and so is evaluating a model whose
/// weights cannot fit.
#[test]
fn a_batch_or_an_evaluation_that_cannot_fit_is_refused_up_front() {
    let run = tempdir("huge-batch");
    let out = train(&["--set", "batch=50000"], &run);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("activations of a batch of 50000"), "{err}");
    assert!(err.contains("lower `batch`"), "{err}");
    assert!(!run.exists(), "nothing was written");
    let out = laxc()
        .args(["eval", "specs/paper/llama-13b-lora-r32.lax", "--checkpoint"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("for its fp32 weights"), "{err}");
}

/// Gradient accumulation: batch 4 in one micro-batch and batch 2 in two micro-batches see the
/// same samples and take the same step (the loss is the mean over all tokens either way).
#[test]
fn accumulation_equals_the_larger_batch() {
    let one = tempdir("accum1");
    let two = tempdir("accum2");
    let common = [
        "--set",
        "steps=2",
        "--set",
        "warmup=0",
        "--set",
        "eval_every=2",
    ];
    // Validation reads `eval_batches` batches of `batch` windows: 1 × 4 and 2 × 2 are the same
    // four windows.
    let a = train(
        &[
            &common[..],
            &["--set", "batch=4", "--set", "eval_batches=1"],
        ]
        .concat(),
        &one,
    );
    let b = train(
        &[
            &common[..],
            &[
                "--set",
                "batch=2",
                "--set",
                "accum=2",
                "--set",
                "eval_batches=2",
            ],
        ]
        .concat(),
        &two,
    );
    assert!(a.status.success() && b.status.success());
    let (la, lb) = (summary(&one), summary(&two));
    for key in ["final_loss", "val_loss"] {
        let (x, y) = (la[key].as_f64().unwrap(), lb[key].as_f64().unwrap());
        assert!(
            (x - y).abs() < 1e-4,
            "{key}: batch 4 gives {x}, 2 × 2 gives {y}"
        );
    }
    for d in [one, two] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `laxc bench` times the steps it was asked for and reports the lowered model, the report's
/// FLOPs and its memory estimate.
#[test]
fn bench_prints_one_json_line_about_the_spec() {
    let spec = "specs/bench/vit-svd-lax-tensor.lax";
    let out = laxc()
        .args([
            "bench", spec, "--steps", "2", "--warmup", "1", "--batch", "4", "--format", "json",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = laxc::compile(&common::source(&common::root().join(spec)))
        .unwrap()
        .report();
    assert_eq!(v["params"].as_u64().unwrap() as u128, report.params.total);
    assert_eq!(v["step_seconds"].as_array().unwrap().len(), 2);
    assert_eq!(v["warmup_step_seconds"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["train_flops_per_step"].as_u64().unwrap() as u128,
        4 * report.flops.train_per_sample
    );
    let med = v["median_step_seconds"].as_f64().unwrap();
    let gflops = v["gflops_per_second"].as_f64().unwrap();
    assert!((gflops - 4.0 * report.flops.train_per_sample as f64 / med / 1e9).abs() < 1e-6);
    assert!((v["items_per_second"].as_f64().unwrap() - 4.0 / med).abs() < 1e-6);
    assert!(v["final_loss"].as_f64().unwrap().is_finite());
    assert_eq!(
        v["report_train_bytes_fp32"].as_u64().unwrap() as u128,
        report.memory.train_bytes_fp32
    );
    let bad = laxc()
        .args(["bench", spec, "--steps", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `laxc bench SPEC --against OTHER` times both in one process, a step of each in turn: each
/// side's figures as `laxc bench` gives them (the other side's steps in between change none of
/// its numbers: its final loss is the one of a run of its own, bit for bit), each at its own
/// spec's batch unless `--batch` sets both, and the ratio is the median of the rounds' ratios,
/// recomputed here from the two sides' step times.
#[test]
fn bench_against_alternates_two_specs_and_gives_their_ratio() {
    let (spec, other) = (
        "specs/bench/vit-svd-lax-identity.lax",
        "specs/bench/vit-svd.lax",
    );
    let common_args = [
        "--steps", "3", "--warmup", "1", "--batch", "4", "--format", "json",
    ];
    let run = |args: &[&str]| {
        let out = laxc().args(args).args(common_args).output().unwrap();
        common::assert_success(&out);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let pair = run(&["bench", spec, "--against", other]);
    let alone = run(&["bench", other]);
    let (a, b) = (&pair["spec"], &pair["against"]);
    assert!(a["spec"]
        .as_str()
        .unwrap()
        .ends_with("vit-svd-lax-identity.lax"));
    assert!(b["spec"].as_str().unwrap().ends_with("vit-svd.lax"));
    assert_eq!(b["final_loss"], alone["final_loss"]);
    assert_eq!(b["params"], alone["params"]);
    assert!(a["peak_rss_bytes"].is_null() && pair["peak_rss_bytes"].as_u64().unwrap() > 0);
    let times = |side: &serde_json::Value| -> Vec<f64> {
        let steps = side["step_seconds"].as_array().unwrap();
        steps.iter().map(|t| t.as_f64().unwrap()).collect()
    };
    let (ta, tb) = (times(a), times(b));
    assert_eq!((ta.len(), tb.len()), (3, 3));
    let mut ratios: Vec<f64> = ta.iter().zip(&tb).map(|(x, y)| x / y).collect();
    ratios.sort_by(f64::total_cmp);
    // serde_json's parser (without its `float_roundtrip` feature) may land a decimal an ulp
    // from the f64 laxc printed, so the figures read here are compared to 1e-12, not bits.
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * y;
    assert!(close(pair["ratio"].as_f64().unwrap(), ratios[1]));
    // Three ratios: the quartiles lie halfway between the first two and the last two.
    let q = pair["ratio_quartiles"].as_array().unwrap();
    assert!(close(q[0].as_f64().unwrap(), (ratios[0] + ratios[1]) / 2.0));
    assert!(close(q[1].as_f64().unwrap(), (ratios[1] + ratios[2]) / 2.0));
    let flops = |side: &serde_json::Value| side["train_flops_per_step"].as_f64().unwrap();
    assert!(close(
        pair["flops_ratio"].as_f64().unwrap(),
        flops(a) / flops(b)
    ));

    // Without `--batch`, each side at its own spec's batch (the ViT's 64 images, the LLaMA's 8
    // sequences), and the FLOP ratio at those batches.
    let out = laxc()
        .args(["bench", other, "--against", "specs/bench/llama-svd.lax"])
        .args(["--steps", "1", "--warmup", "0", "--format", "json"])
        .output()
        .unwrap();
    common::assert_success(&out);
    let mixed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(mixed["spec"]["batch"], 64);
    assert_eq!(mixed["against"]["batch"], 8);
    let per_sample = |spec: &str| {
        let c = laxc::compile(&common::source(&common::root().join(spec))).unwrap();
        c.report().flops.train_per_sample as f64
    };
    let want = 64.0 * per_sample(other) / (8.0 * per_sample("specs/bench/llama-svd.lax"));
    assert!((mixed["flops_ratio"].as_f64().unwrap() - want).abs() <= 1e-12 * want);

    let refused = |args: &[&str], why: &str| {
        let out = laxc().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    };
    refused(
        &["bench", spec, "--against", other, "--products"],
        "--products",
    );
    refused(&["bench", "-", "--against", "-"], "standard input");
}

/// `laxc bench --products` times every matrix product of the timed steps and lists them by
/// shape, the most time a step first: in the tiny ViT, a weight's gradient `xᵀ · g` of a rank-32
/// factor, (128 × 1,088) by (1,088 × 32) at 64 images, twenty a step (five factors of the
/// hidden width in each of four blocks) in blocks of columns (column-major with AVX-512). Their
/// FLOPs, from each row's sizes and calls, are the report's training FLOPs (which count the
/// products: forward, input gradient, weight gradient) less the one product a step does not
/// run, the images' gradient through the patch embedding: 2 · 64 images · 16 patches · 49
/// pixels · 128 channels. Without the flag the JSON has no `products`.
#[test]
fn bench_products_lists_the_steps_products_by_shape() {
    let spec = "specs/bench/vit-svd.lax";
    let run = |extra: &[&str]| {
        let out = laxc()
            .args([
                "bench", spec, "--steps", "2", "--warmup", "1", "--format", "json",
            ])
            .args(extra)
            .output()
            .unwrap();
        common::assert_success(&out);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run(&["--products"]);
    let rows = v["products"].as_array().expect("a products list");
    let field = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    let gradient = rows
        .iter()
        .find(|r| {
            (field(r, "m"), field(r, "k"), field(r, "n")) == (128.0, 1088.0, 32.0)
                && r["a_transposed"] == true
        })
        .expect("the rank-32 factors' weight gradient");
    assert_eq!(field(gradient, "calls_per_step"), 20.0);
    // Column-major where gemm's lanes (64 with AVX-512) are wider than a block of 16 columns.
    #[cfg(target_arch = "x86_64")]
    let wide_lanes = std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    let wide_lanes = false;
    let path = if wide_lanes {
        "columns (column-major)"
    } else {
        "columns"
    };
    assert_eq!(gradient["path"], path);
    let per_step: Vec<f64> = rows.iter().map(|r| field(r, "seconds_per_step")).collect();
    assert!(per_step.windows(2).all(|w| w[0] >= w[1]), "{per_step:?}");
    assert!(per_step.iter().sum::<f64>() < field(&v, "median_step_seconds") * 1.5);
    let product_flops: f64 = rows
        .iter()
        .map(|r| {
            let size = ["batch", "m", "k", "n"]
                .iter()
                .map(|k| field(r, k))
                .product::<f64>();
            2.0 * size * field(r, "calls_per_step")
        })
        .sum();
    let images_gradient = 2.0 * 64.0 * 16.0 * 49.0 * 128.0;
    assert_eq!(
        product_flops,
        field(&v, "train_flops_per_step") - images_gradient
    );
    assert!(run(&[]).get("products").is_none());
}

/// The report's memory (fp32 training state + activations at the batch) is an estimate that
/// the measured peak stays close to (BENCHMARKS.md, "The report's estimate at the spec's batch
/// against the measured peak"): on a LLaMA-60M, where the tensors are nearly all of it, within
/// [0.8, 1.3] of it (0.95 measured); on the tiny default spec and the tiny ViT, whose estimates
/// (160 and 66 MiB) are not much above the process's own share (its code, thread stacks, the
/// allocator's reserve: the tiny ViTs' peaks are 45–65 MiB above their estimates with
/// mimalloc), at least 0.8 of it and at most 1.6 of it plus 64 MiB. The text form says the same
/// in words.
#[test]
fn bench_peak_memory_is_within_a_stated_factor_of_the_report() {
    const FIXED_MIB: f64 = 64.0;
    for (spec, batch, within, fixed) in [
        ("specs/tiny-llama-svd-lax.lax", "8", 0.8..=1.6, FIXED_MIB),
        ("specs/tiny-vit-svd-lax.lax", "64", 0.8..=1.6, FIXED_MIB),
        (
            "specs/paper/llama-60m-svd-r128-lax-identity.lax",
            "2",
            0.8..=1.3,
            0.0,
        ),
    ] {
        let out = laxc()
            .args([
                "bench", spec, "--steps", "1", "--warmup", "1", "--batch", batch,
            ])
            .output()
            .unwrap();
        common::assert_success(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("memory estimate") && text.contains("median step"),
            "{text}"
        );
        let mib = |line: &str| -> Option<f64> {
            let l = text.lines().find(|l| l.starts_with(line))?;
            l[line.len()..].split_whitespace().next()?.parse().ok()
        };
        let (Some(peak), Some(estimate)) = (mib("peak RSS"), mib("memory estimate")) else {
            continue; // no /proc (not Linux): nothing measured
        };
        assert!(
            peak >= within.start() * estimate && peak <= within.end() * estimate + fixed,
            "{spec}: peak RSS {peak} MiB against an estimate of {estimate} MiB"
        );
    }
}

/// A project folder: the spec, its data and a note, as a user keeps them.
fn project(name: &str) -> std::path::PathBuf {
    let dir = tempdir(name);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = std::fs::read_to_string(common::root().join("specs/tiny-llama-svd-lax.lax"))
        .unwrap()
        .replace("../data/", "");
    std::fs::write(dir.join("spec.lax"), spec).unwrap();
    for f in ["brown-excerpt-train.txt", "brown-excerpt-valid.txt"] {
        std::fs::copy(common::root().join("data").join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("notes.md"), "keep me").unwrap();
    dir
}

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

const ONE_STEP: [&str; 6] = [
    "--set",
    "steps=1",
    "--set",
    "warmup=0",
    "--set",
    "eval_every=0",
];

#[test]
fn force_never_deletes_a_folder_that_is_not_a_run() {
    let proj = project("force-project");
    let before = entries(&proj);
    // `--out proj --force`, and `--out . --force` from inside it.
    let spec = proj.join("spec.lax");
    let mut args = vec![spec.to_str().unwrap(), "--force"];
    args.extend(ONE_STEP);
    let out = train(&args, &proj);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a laxc run folder") && err.contains("notes.md"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_laxc"))
        .current_dir(&proj)
        .args(["train", "spec.lax", "--plain", "--out", ".", "--force"])
        .args(ONE_STEP)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(entries(&proj), before, "nothing of the project was touched");
    assert_eq!(
        std::fs::read_to_string(proj.join("notes.md")).unwrap(),
        "keep me"
    );
    std::fs::remove_dir_all(proj).unwrap();
}

#[test]
fn force_replaces_a_run_and_its_checkpoints_only_when_told_twice() {
    let run = tempdir("force-run");
    assert!(train(&ONE_STEP, &run).status.success());
    assert!(run.join("checkpoints/latest").exists());
    let again = |extra: &[&str]| {
        let mut args = ONE_STEP.to_vec();
        args.extend_from_slice(extra);
        train(&args, &run)
    };
    let out = again(&[]);
    assert_eq!(out.status.code(), Some(2));
    let out = again(&["--force"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--discard-checkpoints"), "{err}");
    assert!(run.join("checkpoints/latest").exists());
    let out = again(&["--force", "--discard-checkpoints"]);
    common::assert_success(&out);
    // A note the user added makes the folder theirs: not even both flags remove it.
    std::fs::write(run.join("notes.md"), "mine").unwrap();
    let out = again(&["--force", "--discard-checkpoints"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(run.join("notes.md").exists() && run.join("checkpoints/latest").exists());
    std::fs::remove_dir_all(run).unwrap();
}

/// The third family trains as the other two do: a tiny GPT-2 (tied head, learned positions,
/// SVD with LaX) learns the Brown excerpt.
#[test]
fn tiny_gpt2_learns_below_the_unigram_entropy() {
    let run = tempdir("gpt2");
    learns_below_the_unigram_entropy(&["specs/tiny-gpt2-svd-lax.lax"], &run);
    let _ = std::fs::remove_dir_all(run);
}

/// Trains a spec (the default without one) for 60 steps and checks that its validation loss
/// is below the byte-unigram entropy of the validation text.
fn learns_below_the_unigram_entropy(spec: &[&str], run: &std::path::Path) {
    let mut args = spec.to_vec();
    args.extend([
        "--set",
        "steps=60",
        "--set",
        "warmup=10",
        "--set",
        "eval_every=60",
        "--set",
        "eval_batches=8",
        "--set",
        "seed=1",
    ]);
    let out = train(&args, run);
    common::assert_success(&out);
    let val = summary(run)["val_loss"].as_f64().unwrap();
    let entropy = byte_unigram_entropy("data/brown-excerpt-valid.txt");
    assert!(
        val < entropy,
        "validation loss {val} is not below the byte-unigram entropy {entropy}"
    );
}

/// `--set dropout=...` reaches the model (it used to be parsed and ignored), and a value out of
/// range is refused before anything runs.
#[test]
fn the_dropout_key_changes_training_and_bad_values_are_refused() {
    let loss_with = |p: &str| {
        let run = tempdir(&format!("dropout-{p}"));
        let out = train(
            &[
                "--set",
                "steps=3",
                "--set",
                "warmup=1",
                "--set",
                "eval_every=0",
                "--set",
                &format!("dropout={p}"),
            ],
            &run,
        );
        common::assert_success(&out);
        let loss = summary(&run)["final_loss"].as_f64().unwrap();
        let _ = std::fs::remove_dir_all(run);
        loss
    };
    assert_ne!(loss_with("0"), loss_with("0.3"));
    for bad in [
        "dropout=1",
        "batch=0",
        "steps=0",
        "beta2=1",
        "schedule=cosine(warmpu=3)",
    ] {
        let run = tempdir("refused");
        let out = train(&["--set", bad], &run);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(!run.exists(), "{bad}: a refused run leaves no folder");
    }
}

/// `laxc eval` refuses a checkpoint of another spec (it used to print a loss and exit 0) and
/// applies `--set eval_batches` (it used to ignore it and read the whole validation text).
#[test]
fn eval_refuses_another_specs_checkpoint_and_takes_eval_batches() {
    let run = tempdir("eval");
    assert!(train(&ONE_STEP, &run).status.success());
    let eval = |spec: &str, extra: &[&str]| {
        laxc()
            .args(["eval", spec, "--checkpoint"])
            .arg(&run)
            .args(extra)
            .output()
            .unwrap()
    };
    let other = eval("specs/tiny-llama-svd.lax", &[]);
    assert_eq!(other.status.code(), Some(2));
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("does not fit this spec"), "{err}");
    let loss = |out: std::process::Output| {
        common::assert_success(&out);
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("validation loss"))
            .map(|v| v.trim().parse::<f64>().unwrap())
            .unwrap()
    };
    let spec = "specs/tiny-llama-svd-lax.lax";
    let one_batch = loss(eval(spec, &["--set", "eval_batches=1"]));
    let whole = loss(eval(spec, &[]));
    assert_ne!(
        one_batch, whole,
        "eval_batches=1 reads one batch, not the whole text"
    );
    let _ = std::fs::remove_dir_all(run);
}

/// A warm-up longer than a run whose length comes from `epochs` is refused once the data says
/// how many steps that is; and a run that fails at once leaves the empty folder the user made.
#[test]
fn an_epochs_run_shorter_than_its_warmup_is_refused_and_a_users_folder_stays() {
    let mine = tempdir("mine");
    std::fs::create_dir_all(&mine).unwrap();
    let out = train(
        &["specs/tiny-vit-svd-lax.lax", "--set", "warmup=100000"],
        &mine,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("longer than the run"), "{err}");
    assert!(mine.is_dir(), "the folder the user made is still there");
    assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 0, "and empty");
    std::fs::remove_dir_all(mine).unwrap();
}

/// The `lr` of every step record in a run's metrics.
fn logged_lr(run: &std::path::Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("lr")?.as_f64()?)))
        .collect()
}

/// `--resume RUN` trains the run's own spec with its own options (the `--set`s of the first
/// leg included) on its own data, from any working folder; a resume changes only the keys that
/// may change, and a longer run does not re-stretch the schedule.
#[test]
fn a_resume_goes_on_with_the_runs_spec_options_and_data() {
    let proj = project("resume-project");
    let run = proj.join("run");
    let first = Command::new(env!("CARGO_BIN_EXE_laxc"))
        .current_dir(&proj)
        .args([
            "train", "spec.lax", "--plain", "--out", "run", "--set", "steps=4",
        ])
        .args([
            "--set",
            "lr=1e-2",
            "--set",
            "min_lr=1e-4",
            "--set",
            "batch=2",
        ])
        .args([
            "--set",
            "warmup=0",
            "--set",
            "eval_every=0",
            "--set",
            "log_every=1",
        ])
        .output()
        .unwrap();
    common::assert_success(&first);
    // From another folder, without the spec: the data paths were recorded absolute.
    let elsewhere = tempdir("resume-elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let resume = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_laxc"))
            .current_dir(&elsewhere)
            .args(["train", "--plain", "--resume"])
            .arg(&run)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = resume(&["--set", "steps=6", "--set", "lr=1"]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("`lr` cannot change when a run resumes"),
        "{err}"
    );
    let with_spec = Command::new(env!("CARGO_BIN_EXE_laxc"))
        .current_dir(&proj)
        .args(["train", "spec.lax", "--plain", "--resume", "run"])
        .output()
        .unwrap();
    assert_eq!(with_spec.status.code(), Some(2));
    let out = resume(&["--set", "steps=6"]);
    common::assert_success(&out);
    let resumed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("resolved-resume.json")).unwrap())
            .unwrap();
    assert_eq!(resumed["train"]["lr"], 1e-2);
    assert_eq!(resumed["train"]["batch"], 2);
    assert_eq!(resumed["train"]["steps"], 6);
    // The cosine schedule ended at step 4: steps 5 and 6 run at min_lr, not at a schedule
    // stretched to 6 steps (which would put step 5 at 2.6e-3).
    let lr = logged_lr(&run);
    assert_eq!(lr.len(), 6, "{lr:?}");
    for (step, lr) in &lr[4..] {
        assert!((lr - 1e-4).abs() < 1e-12, "step {step}: lr {lr}");
    }
    // A resume that would end before where the run is is refused, and records nothing: the next
    // resume still starts from the options of the last one that ran.
    let short = resume(&["--set", "steps=5"]);
    assert_eq!(short.status.code(), Some(2));
    let err = String::from_utf8_lossy(&short.stderr);
    assert!(err.contains("at step 6 already"), "{err}");
    let after: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("resolved-resume.json")).unwrap())
            .unwrap();
    assert_eq!(after["train"]["steps"], 6);
    // Changed data is refused by its checksum.
    let train_txt = proj.join("brown-excerpt-train.txt");
    let mut text = std::fs::read(&train_txt).unwrap();
    text[100] ^= 1;
    std::fs::write(&train_txt, text).unwrap();
    let out = resume(&["--set", "steps=8"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("brown-excerpt-train.txt differs from the data"),
        "{err}"
    );
    // `eval --checkpoint RUN` alone evaluates with the run's spec and data.
    let eval = Command::new(env!("CARGO_BIN_EXE_laxc"))
        .current_dir(&elsewhere)
        .args(["eval", "--set", "eval_batches=1", "--checkpoint"])
        .arg(&run)
        .output()
        .unwrap();
    common::assert_success(&eval);
    for d in [proj, elsewhere] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// A checkpoint of another model, or a checkpoint file with changed bytes, is refused by name
/// before anything loads it (they used to panic inside Burn, or resume and train into NaN).
#[test]
fn a_damaged_checkpoint_is_refused_naming_the_file() {
    let run = tempdir("damaged");
    assert!(train(&ONE_STEP, &run).status.success());
    // A run whose spec was edited to another model: one line, not a panic inside Burn.
    let spec = std::fs::read_to_string(run.join("spec.lax")).unwrap();
    let edited = spec.replace("let r = hidden / 4", "let r = hidden / 8");
    assert_ne!(spec, edited);
    std::fs::write(run.join("spec.lax"), &edited).unwrap();
    let other = laxc()
        .args(["train", "--plain", "--set", "steps=2", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("does not fit this spec"), "{err}");
    std::fs::write(run.join("spec.lax"), spec).unwrap();
    let weights = run.join("checkpoints/step-000001/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n - 8..] {
        *b ^= 0xff;
    }
    std::fs::write(&weights, bytes).unwrap();
    let resume = laxc()
        .args(["train", "--plain", "--set", "steps=2", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    let eval = laxc()
        .args(["eval", "--checkpoint"])
        .arg(&run)
        .output()
        .unwrap();
    for out in [resume, eval] {
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("model.safetensors is damaged"), "{err}");
        // One line, not a dump of the decoder's state.
        let error = err.lines().find(|l| l.starts_with("error:")).unwrap();
        assert!(
            error.contains("damaged") && err.ends_with("saved\n"),
            "{err}"
        );
    }
    std::fs::remove_dir_all(run).unwrap();
}

/// `keep = 2` with a checkpoint every step leaves the newest two and the best by validation
/// loss, which `checkpoints/best` names.
#[test]
fn keep_prunes_to_the_newest_and_the_best() {
    let run = tempdir("keep");
    let out = train(
        &[
            "--set",
            "steps=6",
            "--set",
            "checkpoint_every=1",
            "--set",
            "keep=2",
            "--set",
            "eval_every=3",
            "--set",
            "eval_batches=2",
            "--set",
            "warmup=0",
        ],
        &run,
    );
    common::assert_success(&out);
    let vals: Vec<(u64, f64)> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter_map(|r| Some((r["step"].as_u64()?, r.get("val_loss")?.as_f64()?)))
        .collect();
    assert_eq!(vals.iter().map(|v| v.0).collect::<Vec<_>>(), [3, 6]);
    let best = vals.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
    let best_name = format!("step-{best:06}");
    let mut want = vec![
        "step-000005".to_string(),
        "step-000006".to_string(),
        best_name.clone(),
    ];
    want.sort();
    want.dedup();
    let mut kept: Vec<String> = entries(&run.join("checkpoints"))
        .into_iter()
        .filter(|e| e.starts_with("step-"))
        .collect();
    kept.sort();
    assert_eq!(kept, want);
    let named = std::fs::read_to_string(run.join("checkpoints/best")).unwrap();
    assert_eq!(named, best_name);
    std::fs::remove_dir_all(run).unwrap();
}

/// Whether every f32 in a safetensors file is finite (all of laxc's tensors are f32).
fn safetensors_all_finite(path: &std::path::Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header..]
        .chunks_exact(4)
        .all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite())
}

/// A diverging run keeps, as `latest`, a checkpoint whose weights are all finite.
#[test]
fn after_a_divergence_latest_holds_finite_weights() {
    let run = tempdir("diverged");
    let out = train(
        &[
            "--set",
            "steps=50",
            "--set",
            "lr=1e12",
            "--set",
            "warmup=0",
            "--set",
            "clip=0",
            "--set",
            "eval_every=0",
            "--set",
            "checkpoint_every=1",
            "--set",
            "keep=0",
        ],
        &run,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("became"), "{stdout}");
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let weights = run
        .join("checkpoints")
        .join(latest.trim())
        .join("model.safetensors");
    assert!(safetensors_all_finite(&weights), "{latest}");
    std::fs::remove_dir_all(run).unwrap();
}

/// kill -9 at arbitrary moments of a run that checkpoints every step: each time a resume finds
/// a complete checkpoint (or falls back to one) and the lock died with the process.
#[test]
fn a_run_killed_with_sigkill_resumes() {
    use std::io::{BufRead, BufReader};
    let run = tempdir("sigkill");
    let args = [
        "--set",
        "steps=100000",
        "--set",
        "log_every=1",
        "--set",
        "eval_every=0",
    ];
    let extra = [
        "--set",
        "batch=2",
        "--set",
        "checkpoint_every=1",
        "--set",
        "keep=2",
    ];
    for (round, at) in [3u64, 5, 8].into_iter().enumerate() {
        let mut c = laxc();
        c.args(["train", "--plain"]);
        if round == 0 {
            c.args(args).args(extra).arg("--out").arg(&run);
        } else {
            c.arg("--resume").arg(&run);
        }
        let mut child = c
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        for line in stderr.lines() {
            let line = line.unwrap();
            let step = line
                .strip_prefix("step ")
                .and_then(|s| s.split('/').next())
                .and_then(|n| n.parse::<u64>().ok());
            if step.is_some_and(|s| s >= at) {
                break;
            }
            assert!(!line.starts_with("error"), "round {round}: {line}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let state = run
        .join("checkpoints")
        .join(latest.trim())
        .join("state.json");
    assert!(state.exists(), "{latest}");
    std::fs::remove_dir_all(run).unwrap();
}

/// `laxc train` with no spec works from any folder: outside the repository the default spec's
/// embedded data is written to the cache and trained on.
#[test]
fn the_default_spec_trains_outside_the_repository() {
    let outside = tempdir("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_laxc"))
        .current_dir(&outside)
        .env("XDG_CACHE_HOME", outside.join("cache"))
        .args([
            "train", "--plain", "--out", "run", "--set", "steps=2", "--set", "warmup=0",
        ])
        .args([
            "--set",
            "eval_every=0",
            "--set",
            "eval_batches=1",
            "--set",
            "batch=2",
        ])
        .output()
        .unwrap();
    common::assert_success(&out);
    let cached = outside.join("cache/laxc/default-spec/data/brown-excerpt-train.txt");
    let shipped = common::root().join("data/brown-excerpt-train.txt");
    assert_eq!(
        std::fs::read(cached).unwrap(),
        std::fs::read(shipped).unwrap()
    );
    assert!(outside.join("run/checkpoints/latest").exists());
    std::fs::remove_dir_all(outside).unwrap();
}

/// A LoRA spec without a base says that its frozen weights start random, and the banner counts
/// trainable parameters apart from frozen ones.
#[test]
fn lora_without_a_base_is_said_and_the_banner_counts_trainable_params() {
    let run = tempdir("lora-nobase");
    let mut args = vec!["specs/tiny-llama-lora-lax.lax"];
    args.extend(ONE_STEP);
    let out = train(&args, &run);
    common::assert_success(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning[W0703]"), "{err}");
    assert!(
        err.contains("trainable params,") && err.contains("frozen)"),
        "{err}"
    );
    std::fs::remove_dir_all(run).unwrap();
}

/// `jsonl(...)` examples: the default spec learns to answer (its loss is on the response only:
/// the answer is a function of the prompt, so the validation loss falls well below that of
/// the answers' bytes alone), and a broken record or an example longer than `seq` is refused
/// with its file and line.
#[test]
fn jsonl_examples_train_on_their_responses() {
    let dir = tempdir("jsonl");
    std::fs::create_dir_all(&dir).unwrap();
    // "a+b=" → the sum, reversed digits: learnable, and only from the prompt.
    let mut lines = String::new();
    for i in 0..400u32 {
        let (a, b) = (i % 20, (i * 7) % 20);
        lines += &format!("{{\"q\": \"{a}+{b}=\", \"a\": \"{}\"}}\n", a + b);
    }
    let file = dir.join("sums.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let set = format!(
        "data=jsonl(\"{}\", prompt = \"q\", response = \"a\")",
        file.display()
    );
    let run = dir.join("run");
    let args = [
        "--set",
        &set,
        "--set",
        "steps=150",
        "--set",
        "warmup=10",
        "--set",
        "eval_every=150",
        "--set",
        "batch=16",
        "--set",
        "lr=3e-3",
    ];
    let out = train(&args, &run);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let s = summary(&run);
    let val = s["val_loss"].as_f64().unwrap();
    // A response is one or two digit bytes: ln(10) ≈ 2.3 nats a byte for guessed digits.
    assert!(val < 1.5, "validation loss {val} on the responses");
    std::fs::write(&file, "{\"q\": \"1+1=\", \"a\": \"2\"}\n{\"q\": 5}\n").unwrap();
    let out = train(&args, &dir.join("bad"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("sums.jsonl line 2") && err.contains("`q`"),
        "{err}"
    );
    let long = format!("{{\"q\": \"{}\", \"a\": \"2\"}}\n", "x".repeat(200));
    std::fs::write(&file, lines.clone() + &long).unwrap();
    let out = train(&args, &dir.join("long"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 401") && err.contains("seq"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
