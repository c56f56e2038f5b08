//! The commands that run a model: `train`, `eval` and `bench`. Each takes `--device` and
//! `--backend`, `--format text|json` and `-o/--out`.

use crate::common::{self, Format, OutFile, IO_ERROR, SPEC_ERROR};
use clap::ValueEnum;
use laxc::options::{parse_override, Device, TrainOptions};
use laxc::source::Source;
use laxc::train::session::{self, Folder, Launch, Refusal};
use laxc::train::{self, record, run_dir, Stop};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where a model runs: `--device` and `--backend`, the same on every command that runs one.
#[derive(clap::Args, Clone)]
pub struct Placement {
    /// `cpu` (default), `cuda[:N]` (a build with `--features cuda`) or `wgpu` (Vulkan, Metal or
    /// DX12; a build with `--features wgpu`); overrides the spec's `device` key. For `laxc
    /// train`, several of one kind (`cpu,cpu`, `cuda:0,cuda:1`) train a data-parallel replica
    /// on each.
    #[arg(long, visible_alias = "devices")]
    pub device: Option<String>,
    /// CPU backend: flex (default, fastest here), ndarray or candle.
    #[arg(long, value_enum, default_value_t = CpuBackend::Flex)]
    pub backend: CpuBackend,
    /// Threads of the CPU backend (default: one per core). Small models can run faster on fewer
    /// (BENCHMARKS.md). Only with the CPU device.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

impl Placement {
    /// Sizes the CPU backend's thread pool as `--threads` says, once the device is known (from
    /// `--device`, the spec or the run): refused on a GPU device, where it would be ignored.
    pub fn start_threads(&self, device: Device) -> Result<(), ExitCode> {
        if self.threads.is_some() && device != Device::Cpu {
            eprintln!(
                "error: --threads sizes the CPU backend's thread pool, but this model runs on \
                 {}: leave --threads out, or use --device cpu",
                session::device_label(device, self.backend.into())
            );
            return Err(ExitCode::from(IO_ERROR));
        }
        if device != Device::Cpu {
            return Ok(());
        }
        if let Some(n) = self.threads {
            // ndarray's matrix products run on matrixmultiply's own threads, which read this
            // variable at their first product.
            std::env::set_var("MATMUL_NUM_THREADS", n.to_string());
        }
        // Flex's GEMM and loops, candle's GEMM and laxc's kernels run their parallel work on
        // rayon's global pool, built here before the first tensor op: `--threads` of them (0:
        // one per core). A one-replica CPU job runs on one of them (`session::dispatch`), with
        // the main thread's stack, not a pool thread's default 2 MiB.
        let built = rayon::ThreadPoolBuilder::new()
            .num_threads(self.threads.map_or(0, usize::from))
            .stack_size(MAIN_THREAD_STACK)
            .build_global();
        match (built, self.threads) {
            (Ok(()), _) => Ok(()),
            // Without --threads, a pool built before (by an earlier op) serves as it is.
            (Err(_), None) => Ok(()),
            (Err(e), Some(n)) => {
                eprintln!("error: cannot start {n} threads: {e}");
                Err(ExitCode::from(IO_ERROR))
            }
        }
    }
}

/// The stack of the thread a job runs on: Linux's default for a main thread.
const MAIN_THREAD_STACK: usize = 8 << 20;

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CpuBackend {
    Flex,
    Ndarray,
    Candle,
}

impl From<CpuBackend> for session::CpuBackend {
    fn from(b: CpuBackend) -> Self {
        match b {
            CpuBackend::Flex => session::CpuBackend::Flex,
            CpuBackend::Ndarray => session::CpuBackend::Ndarray,
            CpuBackend::Candle => session::CpuBackend::Candle,
        }
    }
}

#[derive(clap::Args, Clone)]
pub struct TrainArgs {
    /// The .lax spec, or `-` to read it from standard input (default: the embedded
    /// specs/tiny-llama-svd-lax.lax).
    spec: Option<PathBuf>,
    /// Override a train key, e.g. `--set steps=100 --set lr=3e-3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The run folder (default: runs/<spec name>-<date>-<time>).
    #[arg(short = 'o', long)]
    out: Option<PathBuf>,
    /// Replace an earlier laxc run in the --out folder (never a folder holding anything else).
    #[arg(long)]
    force: bool,
    /// With --force: replace the earlier run even though it has checkpoints.
    #[arg(long, requires = "force")]
    discard_checkpoints: bool,
    /// Continue the run in this folder from its latest checkpoint, with the spec and options it
    /// recorded; `--set` may change the keys the docs mark as changeable on resume.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out", "force"])]
    resume: Option<PathBuf>,
    #[command(flatten)]
    placement: Placement,
    #[command(flatten)]
    nodes: NodeArgs,
    /// Print a line per log step instead of a progress bar.
    #[arg(long)]
    plain: bool,
    /// How the summary at the end is printed (the run folder has every figure either way).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Training on several machines (as torchrun's `--nnodes`, `--node-rank`, `--master-addr`):
/// the same command on every node, with its own `--node-rank`.
#[derive(clap::Args, Clone)]
pub struct NodeArgs {
    /// How many machines train together (each with the replicas its `--device` lists).
    #[arg(long, requires_all = ["node_rank", "coordinator"], value_parser = clap::value_parser!(u16).range(2..))]
    nodes: Option<u16>,
    /// This machine's rank, 0 to nodes − 1. Node rank 0 is the coordinator: it listens at
    /// `--coordinator` and writes the run folder.
    #[arg(long, requires = "nodes")]
    node_rank: Option<u16>,
    /// HOST:PORT where node rank 0 listens and every node reaches it.
    #[arg(long, requires = "nodes", value_name = "HOST:PORT")]
    coordinator: Option<String>,
    /// Seconds the nodes wait for each other to start and register.
    #[arg(
        long,
        default_value_t = 300,
        value_name = "SECONDS",
        requires = "nodes"
    )]
    node_wait: u64,
}

impl NodeArgs {
    fn plan(&self) -> Result<Option<train::cluster::NodePlan>, ExitCode> {
        let (Some(nodes), Some(rank), Some(at)) = (self.nodes, self.node_rank, &self.coordinator)
        else {
            return Ok(None);
        };
        if rank >= nodes {
            eprintln!(
                "error: --node-rank {rank} is not below --nodes {nodes} (ranks count from 0)"
            );
            return Err(ExitCode::from(IO_ERROR));
        }
        Ok(Some(train::cluster::NodePlan {
            nodes: nodes.into(),
            rank: rank.into(),
            coordinator: at.clone(),
            wait: std::time::Duration::from_secs(self.node_wait),
        }))
    }
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The .lax spec the checkpoint was trained from (default: the spec and options its run
    /// recorded).
    spec: Option<PathBuf>,
    /// A run folder (its latest checkpoint) or a checkpoint folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Override a train key, e.g. `--set data=text(\"x.txt\")` or `--set eval_batches=50`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    #[command(flatten)]
    placement: Placement,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    out: OutFile,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// The .lax spec, or `-` to read it from standard input (default: the embedded
    /// specs/tiny-llama-svd-lax.lax).
    spec: Option<PathBuf>,
    /// Timed training steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed steps before them.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Samples per step (default: the spec's `batch`).
    #[arg(long)]
    batch: Option<usize>,
    /// Also time every matrix product of the timed steps, and list them by shape: calls a
    /// step, time a call, GFLOP/s and how each ran (the CPU backend flex's products only).
    #[arg(long)]
    products: bool,
    /// Time the spec against another in the same process, a step of each in turn, and print
    /// what it costs against it: the median of the rounds' step-time ratios (each at its own
    /// spec's batch unless `--batch` sets both).
    #[arg(long, value_name = "OTHER")]
    against: Option<PathBuf>,
    #[command(flatten)]
    placement: Placement,
    /// `json`: one line with every figure and each step's time (what bench/ scripts read).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    out: OutFile,
}

pub(crate) fn refused(r: Refusal) -> ExitCode {
    eprintln!("error: {}", r.message());
    ExitCode::from(r.exit_code())
}

/// Train keys given with `--set`, in order.
type Overrides = Vec<(String, laxc::spec::TrainValue)>;

/// Every `--set`, each rendered against its own text when it is wrong.
fn overrides(set: &[String]) -> Result<Overrides, ExitCode> {
    let mut overrides = Vec::new();
    for s in set {
        match parse_override(s) {
            Ok(kv) => overrides.push(kv),
            Err(e) => {
                common::print_diagnostics(&e.source, &[e.diagnostic]);
                return Err(ExitCode::from(IO_ERROR));
            }
        }
    }
    Ok(overrides)
}

/// `--device`, checked, over the options' own.
fn place(opts: &mut TrainOptions, device: Option<&str>) -> Result<(), ExitCode> {
    let Some(d) = device else {
        return Ok(());
    };
    if let Err(why) = Device::parse_list(d) {
        eprintln!("error: {why}: use {}", Device::NAMES);
        return Err(ExitCode::from(IO_ERROR));
    }
    opts.device = d.to_string();
    Ok(())
}

/// The spec's train section, then every `--set`, then `--device`.
pub(crate) fn options(
    source: &Source,
    c: &laxc::Compiled,
    set: &[String],
    device: Option<&str>,
) -> Result<TrainOptions, ExitCode> {
    let overrides = overrides(set)?;
    let mut opts = session::options(source, c, &overrides).map_err(refused)?;
    place(&mut opts, device)?;
    Ok(opts)
}

pub fn run_train(args: TrainArgs) -> ExitCode {
    let ToTrain {
        source,
        compiled,
        options,
        folder,
        spec_dir,
    } = match what_to_train(args.clone()) {
        Ok(w) => w,
        Err(c) => return c,
    };
    if let Err(c) = args.placement.start_threads(options.device()) {
        return c;
    }
    let cluster = match args.nodes.plan() {
        Ok(c) => c,
        Err(c) => return c,
    };
    let _ = ctrlc::set_handler(|| {
        // Said once, at once: a long step may take a while to finish. At a terminal the
        // progress bar's line is cleared first, so the message does not end up inside it. A
        // second signal stops at once (the latest checkpoint stays the latest).
        let clear = match std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            true => "\r\x1b[2K",
            false => "",
        };
        if train::run::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("{clear}stopped at once (a second signal); no checkpoint of this step");
            run_dir::clean_up_before_abrupt_exit();
            std::process::exit(130);
        }
        eprintln!("{clear}stopping after this step; a checkpoint will be written");
    });
    let launch = Launch {
        source: &source,
        compiled: &compiled,
        spec_dir,
        options,
        folder,
        backend: args.placement.backend.into(),
        plain: args.plain || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
        cluster,
    };
    match session::train_spec(launch) {
        Ok(s) => {
            match args.format {
                Format::Text => print!("{}", summary_text(&s)),
                Format::Json => print!("{}", common::to_json_text(&serde_json::json!(s))),
            }
            match s.stopped {
                None => ExitCode::SUCCESS,
                Some(Stop::Diverged { .. }) => ExitCode::from(SPEC_ERROR),
                Some(Stop::Interrupted) => ExitCode::from(130),
            }
        }
        Err(r) => refused(r),
    }
}

/// What `laxc train` trains: the spec, its options, where, and the folder its relative
/// data paths start from.
struct ToTrain {
    source: Source,
    compiled: laxc::Compiled,
    options: TrainOptions,
    folder: Folder,
    spec_dir: PathBuf,
}

/// A new run: the spec given (or the embedded one) with its options and the `--set`s. A
/// resume: the run's own spec and options, with the `--set`s that may change on resume.
fn what_to_train(args: TrainArgs) -> Result<ToTrain, ExitCode> {
    let device = args.placement.device.as_deref();
    let Some(dir) = args.resume else {
        let (source, compiled) = common::read_and_compile(args.spec.as_deref(), args.format)?;
        let options = options(&source, &compiled, &args.set, device)?;
        let replace = run_dir::Replace {
            run: args.force,
            checkpoints: args.discard_checkpoints,
        };
        let folder = Folder::New {
            out: args.out,
            replace,
        };
        let spec_dir = session::spec_dir(args.spec.as_deref()).map_err(refused)?;
        return Ok(ToTrain {
            source,
            compiled,
            options,
            folder,
            spec_dir,
        });
    };
    if let Some(spec) = &args.spec {
        eprintln!(
            "error: --resume {} trains the run's own spec ({}) with the options it recorded; \
             leave out {}, and change what may change with --set",
            dir.display(),
            dir.join("spec.lax").display(),
            spec.display()
        );
        return Err(ExitCode::from(IO_ERROR));
    }
    let (run, compiled, overrides) = recorded_run(&dir, args.format, &args.set)?;
    let mut options = run.last.resume_with(&overrides).map_err(|e| {
        eprintln!("error: --resume {} with --set: {e}", dir.display());
        ExitCode::from(SPEC_ERROR)
    })?;
    place(&mut options, device)?;
    let source = run.source.clone();
    // A `--set data=...` of the resume is relative to the working folder.
    Ok(ToTrain {
        source,
        compiled,
        options,
        folder: Folder::Resume(Box::new(run)),
        spec_dir: PathBuf::new(),
    })
}

/// A run folder's recorded spec (compiled) and options, and the `--set`s given with it. Its
/// data must still be where it was recorded, unless a `--set data=...` names other data.
fn recorded_run(
    dir: &Path,
    format: Format,
    set: &[String],
) -> Result<(record::StoredRun, laxc::Compiled, Overrides), ExitCode> {
    let run = record::stored_run(dir).map_err(refused)?;
    let compiled = common::compile(&run.source, format)?;
    let overrides = overrides(set)?;
    if !overrides.iter().any(|(key, _)| key == "data") {
        run.data_paths_known().map_err(refused)?;
    }
    Ok((run, compiled, overrides))
}

pub fn run_bench(args: BenchArgs) -> ExitCode {
    if let Err(c) = args.out.refuse_existing() {
        return c;
    }
    let from_stdin = |p: Option<&PathBuf>| p.is_some_and(|p| p.as_os_str() == "-");
    if from_stdin(args.spec.as_ref()) && from_stdin(args.against.as_ref()) {
        eprintln!("error: only one of the two specs can be read from standard input (`-`)");
        return ExitCode::from(IO_ERROR);
    }
    let spec = match BenchSide::read(&args, args.spec.as_deref()) {
        Ok(side) => side,
        Err(c) => return c,
    };
    if let Err(c) = args.placement.start_threads(spec.options.device()) {
        return c;
    }
    let backend = args.placement.backend.into();
    let text = match &args.against {
        None => session::bench_spec(
            &spec.compiled,
            &spec.source.name,
            &spec.options,
            &spec.bench,
            backend,
        )
        .map(|r| match args.format {
            Format::Json => json_line(&r),
            Format::Text => bench_text(&r),
        }),
        Some(path) => {
            let other = match BenchSide::read(&args, Some(path)) {
                Ok(side) => side,
                Err(c) => return c,
            };
            session::bench_pair_spec([spec.side(), other.side()], backend).map(|r| {
                match args.format {
                    Format::Json => json_line(&r),
                    Format::Text => pair_text(&r),
                }
            })
        }
    };
    match text {
        Ok(text) => args.out.emit(&text),
        Err(r) => refused(r),
    }
}

/// One spec `laxc bench` times: its source, compiled form, train options (the spec's
/// optimizer settings apply; its data does not) and bench options.
struct BenchSide {
    source: Source,
    compiled: laxc::Compiled,
    options: TrainOptions,
    bench: laxc::train::bench::BenchOptions,
}

impl BenchSide {
    fn read(args: &BenchArgs, path: Option<&Path>) -> Result<BenchSide, ExitCode> {
        let (source, compiled) = common::read_and_compile(path, args.format)?;
        let options = options(&source, &compiled, &[], args.placement.device.as_deref())?;
        let bench = laxc::train::bench::BenchOptions {
            steps: args.steps,
            warmup: args.warmup,
            batch: args.batch.unwrap_or(options.batch),
            seed: options.seed,
            products: args.products,
        };
        Ok(BenchSide {
            source,
            compiled,
            options,
            bench,
        })
    }

    fn side(&self) -> train::bench::Side<'_> {
        train::bench::Side {
            compiled: &self.compiled,
            name: &self.source.name,
            train: &self.options,
            bench: &self.bench,
        }
    }
}

fn json_line(value: &impl serde::Serialize) -> String {
    format!("{}\n", serde_json::to_string(value).expect("serializes"))
}

/// `laxc bench SPEC --against OTHER`: each side as `laxc bench` prints it, then the ratio.
fn pair_text(r: &train::bench::PairResult) -> String {
    let mut s = bench_text(&r.spec);
    s.push_str("against:\n");
    s.push_str(&bench_text(&r.against));
    let [q1, q3] = r.ratio_quartiles;
    s.push_str(&common::field(
        "step ratio",
        &format!(
            "{:.3} (the median of {} rounds' ratios, a step of each in turn; middle half {q1:.3}–{q3:.3})",
            r.ratio, r.spec.steps
        ),
    ));
    s.push_str(&common::field(
        "train FLOPs ratio",
        &format!("{:.3} (the report's, at the two batches)", r.flops_ratio),
    ));
    if let Some(b) = r.peak_rss_bytes {
        let mib = b as f64 / (1u64 << 20) as f64;
        s.push_str(&common::field(
            "peak RSS",
            &format!("{mib:.1} MiB (both models)"),
        ));
    }
    s
}

fn bench_text(r: &train::bench::BenchResult) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| s.push_str(&common::field(k, &v));
    line("spec", r.spec.clone());
    line("implementation", r.implementation.clone());
    line("params", laxc::report::thousands(r.params as u128));
    line(
        "batch",
        format!("{} × {} {}", r.batch, r.tokens_per_sample, r.unit),
    );
    line(
        "steps",
        format!("{} timed after {} warm-up", r.steps, r.warmup),
    );
    line(
        "median step",
        format!("{:.2} ms", 1e3 * r.median_step_seconds),
    );
    let p = &r.median_phase_seconds;
    line(
        "phases",
        format!(
            "forward {:.2} ms, backward {:.2} ms, optimizer {:.2} ms (medians)",
            1e3 * p.forward,
            1e3 * p.backward,
            1e3 * p.optimizer
        ),
    );
    line(
        "throughput",
        format!("{:.0} {}/s", r.items_per_second, r.unit),
    );
    line("GFLOP/s", format!("{:.2}", r.gflops_per_second));
    let mib = |b: f64| b / (1u64 << 20) as f64;
    let estimate = (r.report_train_bytes_fp32 + r.report_activation_bytes_fp32) as f64;
    line(
        "memory estimate",
        format!(
            "{:.1} MiB (the report's fp32 training state + activations at this batch)",
            mib(estimate)
        ),
    );
    if let Some(b) = r.peak_rss_bytes {
        line(
            "peak RSS",
            format!(
                "{:.1} MiB ({:.2}× the estimate)",
                mib(b as f64),
                b as f64 / estimate
            ),
        );
    }
    line("final loss", format!("{:.4}", r.final_loss));
    if let Some(rows) = &r.products {
        s.push_str(&products_text(rows, r.median_step_seconds));
    }
    s
}

/// The `--products` table: each product shape's time in a step, the most first.
fn products_text(rows: &[train::bench::ProductRow], step_seconds: f64) -> String {
    if rows.is_empty() {
        return "products: none timed (only the flex backend's products are)\n".into();
    }
    let total: f64 = rows.iter().map(|r| r.seconds_per_step).sum();
    let mut s = format!(
        "products: {:.2} ms a step ({:.0} % of the median step), by shape:\n",
        1e3 * total,
        100.0 * total / step_seconds
    );
    s.push_str("  ms/step  calls  µs/call  GFLOP/s  product  (how it ran)\n");
    for r in rows {
        let p = &r.shape;
        let batch = match p.batch {
            1 => String::new(),
            b => format!("{b} × "),
        };
        let how = [
            (p.a_transposed, "a transposed"),
            (p.b_transposed, "b transposed"),
            (p.adds_into, "added in"),
            (true, p.path),
        ]
        .into_iter()
        .filter_map(|(on, note)| on.then_some(note))
        .collect::<Vec<_>>()
        .join(", ");
        s.push_str(&format!(
            "  {:7.3}  {:5.1}  {:7.1}  {:7.0}  {batch}({} × {}) by ({} × {})  ({how})\n",
            1e3 * r.seconds_per_step,
            r.calls_per_step,
            1e6 * r.median_seconds,
            r.gflops_per_second,
            p.m,
            p.k,
            p.k,
            p.n,
        ));
    }
    s
}

fn summary_text(s: &train::Summary) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&common::field(k, &v));
    line("steps", s.steps.to_string());
    line("final train loss", format!("{:.4}", s.final_loss));
    if let Some(v) = s.val_loss {
        line("validation loss", format!("{v:.4}"));
    }
    if let Some(p) = s.val_perplexity {
        line("perplexity", format!("{p:.2}"));
    }
    if let Some(a) = s.val_accuracy {
        line("accuracy", format!("{:.2}%", 100.0 * a));
    }
    line(
        "throughput",
        format!("{:.0} {}/s", s.items_per_second, s.unit),
    );
    line("time", format!("{:.1} s", s.seconds));
    line("run folder", s.run_dir.display().to_string());
    if let Some(r) = &s.stopped {
        line("stopped early", r.to_string());
    }
    out
}

pub fn run_eval(a: EvalArgs) -> ExitCode {
    if let Err(c) = a.out.refuse_existing() {
        return c;
    }
    let ToEvaluate {
        source,
        compiled,
        options: opts,
        spec_dir: dir,
    } = match what_to_evaluate(&a) {
        Ok(w) => w,
        Err(c) => return c,
    };
    if let Err(c) = a.placement.start_threads(opts.device()) {
        return c;
    }
    // The whole validation set, unless this command says how many batches.
    let batches = a
        .set
        .iter()
        .filter_map(|s| parse_override(s).ok())
        .any(|(key, _)| key == "eval_batches")
        .then_some(opts.eval_batches);
    let backend = a.placement.backend.into();
    eprintln!("evaluating {} with {}", a.checkpoint.display(), source.name);
    match session::eval_checkpoint(&compiled, &opts, &dir, &a.checkpoint, backend, batches) {
        Ok((loss, acc)) => a.out.emit(&match a.format {
            Format::Json => common::to_json_text(&serde_json::json!({
                "checkpoint": a.checkpoint,
                "spec": source.name,
                "val_loss": loss,
                "val_perplexity": acc.is_none().then(|| loss.exp()),
                "val_accuracy": acc,
            })),
            Format::Text => {
                let last = match acc {
                    Some(a) => common::field("accuracy", &format!("{:.2}%", 100.0 * a)),
                    None => common::field("perplexity", &format!("{:.2}", loss.exp())),
                };
                common::field("validation loss", &format!("{loss:.4}")) + &last
            }
        }),
        Err(r) => refused(r),
    }
}

/// What `laxc eval` evaluates with: the spec, its options and the folder its relative data
/// paths start from.
pub(crate) struct ToEvaluate {
    pub source: Source,
    pub compiled: laxc::Compiled,
    pub options: TrainOptions,
    pub spec_dir: PathBuf,
}

/// The spec given, with its options and the `--set`s; without one, the spec and options the
/// checkpoint's run recorded (else the embedded spec).
fn what_to_evaluate(a: &EvalArgs) -> Result<ToEvaluate, ExitCode> {
    let device = a.placement.device.as_deref();
    spec_of_checkpoint(a.spec.as_deref(), &a.checkpoint, &a.set, device, a.format)
}

/// The spec, options and spec folder of a checkpoint: the spec given, or the one its run
/// recorded (with the options the run last used).
pub(crate) fn spec_of_checkpoint(
    spec: Option<&Path>,
    checkpoint: &Path,
    set: &[String],
    device: Option<&str>,
    format: Format,
) -> Result<ToEvaluate, ExitCode> {
    let run = match spec {
        None => record::run_folder_of(checkpoint),
        Some(_) => None,
    };
    let Some(run) = run else {
        let (source, compiled) = common::read_and_compile(spec, format)?;
        let opts = options(&source, &compiled, set, device)?;
        let spec_dir = session::spec_dir(spec).map_err(refused)?;
        return Ok(ToEvaluate {
            source,
            compiled,
            options: opts,
            spec_dir,
        });
    };
    let (run, compiled, overrides) = recorded_run(&run, format, set)?;
    let mut opts = run.last.with(&overrides).map_err(|e| {
        eprintln!("error: --set: {e}");
        ExitCode::from(SPEC_ERROR)
    })?;
    place(&mut opts, device)?;
    Ok(ToEvaluate {
        source: run.source,
        compiled,
        options: opts,
        spec_dir: PathBuf::new(),
    })
}
