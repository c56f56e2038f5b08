//! Data-parallel training as a user runs it: replicas in one process (`--device cpu,cpu`) and
//! processes on loopback (`--nodes`) follow the one-process run; a killed node stops the others
//! with one line; nodes that differ, an absent coordinator and a busy port are refused before
//! training; a checkpoint of two replicas resumes on one.
#![cfg(feature = "train")]

mod common;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A short run of the default spec: 20 steps of 4 sequences, the loss logged at every step.
const SHORT: [&str; 12] = [
    "--set",
    "steps=20",
    "--set",
    "batch=4",
    "--set",
    "warmup=2",
    "--set",
    "log_every=1",
    "--set",
    "eval_every=20",
    "--threads",
    "1",
];

fn laxc() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_laxc"));
    c.current_dir(common::root());
    c
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("laxc-parallel-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `laxc train ARGS --plain --out RUN`.
fn train(args: &[&str], run: &Path) -> Command {
    let mut c = laxc();
    c.arg("train")
        .args(args)
        .arg("--plain")
        .arg("--out")
        .arg(run);
    c
}

fn finished(mut c: Command) -> Output {
    let out = c.output().unwrap();
    common::assert_success(&out);
    out
}

/// Each logged step's training loss, and the final validation loss.
fn curve(run: &Path) -> (Vec<f64>, f64) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let losses = records.iter().filter_map(|r| r["loss"].as_f64()).collect();
    let val = records
        .iter()
        .rev()
        .find_map(|r| r["val_loss"].as_f64())
        .unwrap();
    (losses, val)
}

/// Equal to 1e-5 relative at every step: only the order of the sums differs.
fn assert_same_curve(one: &(Vec<f64>, f64), other: &(Vec<f64>, f64), what: &str) {
    assert_eq!(one.0.len(), other.0.len(), "{what}");
    for (i, (a, b)) in one.0.iter().zip(&other.0).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 * a.abs(),
            "{what}: step {} loss {b} against {a}",
            i + 1
        );
    }
    let (a, b) = (one.1, other.1);
    assert!(
        (a - b).abs() <= 1e-5 * a,
        "{what}: validation {b} against {a}"
    );
}

/// The one-process run every test compares with.
fn reference(dir: &Path, extra: &[&str]) -> (Vec<f64>, f64) {
    let run = dir.join("one");
    finished(train(&[&SHORT[..], extra].concat(), &run));
    curve(&run)
}

/// One test of this file at a time. Run side by side (cargo's two test threads), two tests'
/// two-node runs met: a node "could not join the others: Global(DoubleRegister)" (another
/// test's node at the coordinator's port, it seems: `free_port` only finds a port free at the
/// time it asks). Also seen while the whole file ran side by side, twice in about 60 runs:
/// in-process replicas whose loss was off the one-process run's (by 2e-4 at step 10, by 1 % at
/// step 2); not reproduced in 40 runs of the two replica tests under load, cause unknown
/// (BENCHMARKS.md, "Data parallelism").
fn one_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A test that failed while holding it poisons it; the next one may still run.
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `laxc train` as node `rank` of `nodes`, coordinated at `at`.
fn node(args: &[&str], run: &Path, nodes: u16, rank: u16, at: &str) -> Command {
    node_waiting(args, run, (nodes, rank), at, 60)
}

/// The same, waiting `wait` seconds for the other nodes.
fn node_waiting(args: &[&str], run: &Path, place: (u16, u16), at: &str, wait: u32) -> Command {
    let (nodes, rank) = (place.0.to_string(), place.1.to_string());
    let mut c = train(args, run);
    c.args(["--nodes", &nodes, "--node-rank", &rank, "--coordinator", at])
        .args(["--node-wait", &wait.to_string()]);
    c
}

fn spawn(mut c: Command) -> Child {
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for `child` at most `limit`; None if it is still running then (it is killed).
fn wait_at_most(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

fn stderr_of(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn replicas_in_one_process_follow_the_one_process_run() {
    let _serial = one_test_at_a_time();
    let dir = tempdir("local");
    let one = reference(&dir, &[]);
    // Two replicas of two sequences, then three of one, one and two (the shares differ).
    for devices in ["cpu,cpu", "cpu,cpu,cpu"] {
        let run = dir.join(devices.replace(',', "-"));
        let out = finished(train(&[&SHORT[..], &["--device", devices]].concat(), &run));
        let err = String::from_utf8_lossy(&out.stderr);
        let n = devices.split(',').count();
        assert!(
            err.contains(&format!("of {n}")),
            "the banner names the replicas: {err}"
        );
        assert_same_curve(&one, &curve(&run), devices);
    }
    // Dropout masks come from one generator per process: refused with replicas in one.
    let run = dir.join("dropout");
    let out = train(
        &[&SHORT[..], &["--device", "cpu,cpu", "--set", "dropout=0.1"]].concat(),
        &run,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("run one process per replica with --nodes"),
        "{err}"
    );
    assert!(!run.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The examples' loss is on their responses only, so each replica's slice (and each
/// micro-batch of an accumulated step) scores a different number of tokens: every part's loss
/// is its sum over the whole step's scored tokens. Images go through their own sampler, and
/// accumulation splits each micro-batch. (At lr 1e-3: at 3e-3 this tiny set is learnt so fast
/// that rounding differences of 1e-7 grow to 1e-5 by step 19, in either comparison.)
#[test]
fn replicas_follow_the_one_process_run_on_examples_and_images() {
    let _serial = one_test_at_a_time();
    let dir = tempdir("kinds");
    let mut lines = String::new();
    for i in 0..200u32 {
        let (a, b) = (i % 20, (i * 7) % 20);
        let answer = "9".repeat((i % 5) as usize + 1);
        lines += &format!("{{\"q\": \"{a}+{b}=\", \"a\": \"{}{answer}\"}}\n", a + b);
    }
    let file = dir.join("sums.jsonl");
    std::fs::write(&file, lines).unwrap();
    let data = format!(
        "data=jsonl(\"{}\", prompt = \"q\", response = \"a\")",
        file.display()
    );
    let examples = ["--set", data.as_str(), "--set", "lr=1e-3"];
    let one = reference(&dir, &examples);
    let run = dir.join("examples-2");
    finished(train(
        &[&SHORT[..], &examples, &["--device", "cpu,cpu"]].concat(),
        &run,
    ));
    assert_same_curve(&one, &curve(&run), "examples, 2 replicas");
    let run = dir.join("examples-accum");
    let accum = ["--set", "batch=2", "--set", "accum=2"];
    finished(train(&[&SHORT[..], &examples, &accum].concat(), &run));
    assert_same_curve(&one, &curve(&run), "examples, 2 accumulated micro-batches");

    let vit = "specs/tiny-vit-svd-lax.lax";
    // Without dropout: each replica draws the masks of its own rows.
    let images = [vit, "--set", "accum=2", "--set", "steps=10"];
    let images = [
        &images[..],
        &["--set", "eval_every=10", "--set", "dropout=0"],
    ]
    .concat();
    let one = dir.join("vit-1");
    finished(train(&[&SHORT[..], &images].concat(), &one));
    let two = dir.join("vit-2");
    finished(train(
        &[&SHORT[..], &images, &["--device", "cpu,cpu"]].concat(),
        &two,
    ));
    assert_same_curve(&curve(&one), &curve(&two), "images");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_processes_follow_the_one_process_run() {
    let _serial = one_test_at_a_time();
    let dir = tempdir("nodes");
    let one = reference(&dir, &[]);
    let at = format!("127.0.0.1:{}", free_port());
    let run = dir.join("nodes");
    let member = spawn(node(&SHORT, &run, 2, 1, &at));
    let out = node(&SHORT, &run, 2, 0, &at).output().unwrap();
    common::assert_success(&out);
    let member = member.wait_with_output().unwrap();
    common::assert_success(&member);
    assert_same_curve(&one, &curve(&run), "2 processes");
    // Node rank 0 writes the run; the other node's summary is printed, not written.
    assert!(run.join("summary.json").exists());
    let printed = String::from_utf8_lossy(&member.stdout);
    assert!(printed.contains("final train loss"), "{printed}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two nodes on loopback training a long run into `run`, returned once training has begun (the
/// first step is logged).
fn two_training_nodes(run: &Path) -> (Child, Child) {
    let long = [
        "--set",
        "steps=100000",
        "--set",
        "warmup=2",
        "--threads",
        "1",
    ];
    let at = format!("127.0.0.1:{}", free_port());
    let mut zero = spawn(node(&long, run, 2, 0, &at));
    let mut one = spawn(node(&long, run, 2, 1, &at));
    let until = Instant::now() + Duration::from_secs(120);
    while !run.join("metrics.jsonl").exists() {
        if Instant::now() > until {
            let _ = (zero.kill(), one.kill());
            let (zero, one) = (stderr_of(zero), stderr_of(one));
            panic!("the nodes did not start training\nnode 0: {zero}\nnode 1: {one}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (zero, one)
}

#[test]
fn a_killed_node_stops_the_other_within_30_s() {
    let _serial = one_test_at_a_time();
    let dir = tempdir("killed");
    for killed in [1u16, 0] {
        let run = dir.join(format!("run-{killed}"));
        let (mut zero, mut one) = two_training_nodes(&run);
        let (victim, survivor) = match killed {
            1 => (&mut one, zero),
            _ => (&mut zero, one),
        };
        victim.kill().unwrap();
        victim.wait().unwrap();
        let mut survivor = survivor;
        let status = wait_at_most(&mut survivor, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("node rank {} still ran 30 s after", 1 - killed));
        assert!(!status.success());
        let err = stderr_of(survivor);
        let said = match killed {
            1 => "error: node rank 1 (127.0.0.1:",
            _ => "error: the coordinator, node rank 0 (127.0.0.1:",
        };
        assert!(err.contains(said) && err.contains("stopped"), "{err}");
        if killed == 1 {
            // Lost before its first checkpoint, node rank 0's new run leaves nothing behind.
            assert!(!run.exists(), "{} is left", run.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nodes_that_differ_are_refused_before_training() {
    let _serial = one_test_at_a_time();
    let dir = tempdir("differ");
    let cases: [(&[&str], &str); 2] = [
        (
            &["--set", "lr=1e-3"],
            "trains a different spec, options or data than node rank 0",
        ),
        (
            &["--nodes", "3"],
            "was started with --nodes 3 but node rank 0 with --nodes 2",
        ),
    ];
    for (i, (theirs, said)) in cases.iter().enumerate() {
        let at = format!("127.0.0.1:{}", free_port());
        let run = dir.join(format!("run-{i}"));
        let zero = spawn(node(&SHORT, &run, 2, 0, &at));
        let mut other = train(&SHORT, &run);
        let nodes = match theirs[0] {
            "--nodes" => theirs[1],
            _ => "2",
        };
        other.args(["--nodes", nodes, "--node-rank", "1", "--coordinator", &at]);
        if theirs[0] == "--set" {
            other.args(*theirs);
        }
        let one = other.output().unwrap();
        let zero = zero.wait_with_output().unwrap();
        for out in [&zero, &one] {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(err.contains(said), "{err}");
        }
        assert!(!run.exists(), "nothing is written");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_absent_coordinator_and_a_busy_port_are_clear_errors() {
    let _serial = one_test_at_a_time();
    let dir = tempdir("absent");
    let at = format!("127.0.0.1:{}", free_port());
    let mut alone = node_waiting(&SHORT, &dir.join("run"), (2, 1), &at, 2);
    let began = Instant::now();
    let out = alone.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot reach the coordinator at {at} within 2 s")),
        "{err}"
    );
    assert!(began.elapsed() < Duration::from_secs(20));

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = busy.local_addr().unwrap().to_string();
    let out = node(&SHORT, &dir.join("run"), 2, 0, &at).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {at}: the port is in use")),
        "{err}"
    );

    let out = node(&SHORT, &dir.join("run"), 2, 2, &at).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--node-rank 2 is not below --nodes 2"),
        "{err}"
    );
    assert!(!dir.join("run").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run of two replicas checkpoints like any other: resumed on one device it goes on as the
/// one-process run would have (constant learning rate, so the first leg's length does not
/// shape the schedule).
#[test]
fn a_two_replica_checkpoint_resumes_on_one() {
    let _serial = one_test_at_a_time();
    let dir = tempdir("resume");
    let constant = ["--set", "schedule=constant"];
    let one = reference(&dir, &constant);
    let run = dir.join("two-then-one");
    let first = [
        &SHORT[..],
        &constant,
        &["--set", "steps=10", "--device", "cpu,cpu"],
    ]
    .concat();
    finished(train(&first, &run));
    let mut resume = laxc();
    resume
        .args(["train", "--plain", "--resume"])
        .arg(&run)
        .args(["--set", "steps=20", "--device", "cpu", "--threads", "1"]);
    finished(resume);
    assert_same_curve(&one, &curve(&run), "two replicas, then one");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGTERM (a scheduler's stop) on node rank 0: every node stops after the same step, node
/// rank 0 writes a checkpoint of it, both exit 130. (Burn's orchestrator, which stops on that
/// signal, runs in a process group of its own.)
#[test]
fn a_signal_on_one_node_stops_every_node_with_a_checkpoint() {
    let _serial = one_test_at_a_time();
    let dir = tempdir("signal");
    let run = dir.join("run");
    let (mut zero, mut one) = two_training_nodes(&run);
    let term = Command::new("kill")
        .args(["-TERM", &zero.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    for (rank, child) in [(0, &mut zero), (1, &mut one)] {
        let status = wait_at_most(child, Duration::from_secs(30))
            .unwrap_or_else(|| panic!("node rank {rank} still ran 30 s after SIGTERM"));
        assert_eq!(status.code(), Some(130), "node rank {rank}");
    }
    let latest = std::fs::read_to_string(run.join("checkpoints/latest")).unwrap();
    let state = run
        .join("checkpoints")
        .join(latest.trim())
        .join("state.json");
    let state = std::fs::read_to_string(state).unwrap();
    assert!(state.contains("\"step\""), "{state}");
    let _ = std::fs::remove_dir_all(&dir);
}
