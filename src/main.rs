//! The `laxc` command line: read a spec, compile it, print what was asked for.

use clap::{Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::{ColorChoice, StandardStream};
use laxc::diagnostic::{render, Diagnostic};
use laxc::source::Source;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "laxc",
    version,
    about = "Declarative architecture compiler for low-rank training with Latent Crossing (LaX)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a spec and report shapes, parameters, FLOPs and memory.
    Check {
        /// The .lax spec (default: the embedded specs/tiny-llama-svd-lax.lax).
        spec: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Train a spec: its `train` section, overridden with `--set`.
    #[cfg(feature = "train")]
    Train(TrainArgs),
    /// Evaluate a checkpoint on the spec's validation data.
    #[cfg(feature = "train")]
    Eval {
        /// The .lax spec the checkpoint was trained from.
        spec: Option<PathBuf>,
        /// A run folder (its latest checkpoint) or a checkpoint folder.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Override a train key, e.g. `--set data=text(\"x.txt\")` or `--set eval_batches=50`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        #[arg(long, value_enum, default_value_t = CpuBackend::Flex)]
        backend: CpuBackend,
    },
    /// Time training steps on synthetic batches; print one JSON line (see BENCHMARKS.md).
    #[cfg(feature = "train")]
    Bench(BenchArgs),
    /// Draw one metric of several training runs on one chart, as PNG and SVG.
    Plot(PlotArgs),
    /// Print the spec's IR as a Graphviz DOT graph (render with `dot -Tsvg`).
    Graph {
        /// The .lax spec (default: the embedded specs/tiny-llama-svd-lax.lax).
        spec: Option<PathBuf>,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args)]
struct TrainArgs {
    /// The .lax spec (default: the embedded specs/tiny-llama-svd-lax.lax).
    spec: Option<PathBuf>,
    /// Override a train key, e.g. `--set steps=100 --set lr=3e-3` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The run folder (default: runs/<spec name>-<date>-<time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace an earlier laxc run in the --out folder (never a folder holding anything else).
    #[arg(long)]
    force: bool,
    /// With --force: replace the earlier run even though it has checkpoints.
    #[arg(long, requires = "force")]
    discard_checkpoints: bool,
    /// Continue the run in this folder from its latest checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out", "force"])]
    resume: Option<PathBuf>,
    /// `cpu` (default) or `cuda[:N]` (needs a build with `--features cuda`).
    #[arg(long)]
    device: Option<String>,
    /// CPU backend: flex (default, fastest here), ndarray or candle.
    #[arg(long, value_enum, default_value_t = CpuBackend::Flex)]
    backend: CpuBackend,
    /// Print a line per log step instead of a progress bar.
    #[arg(long)]
    plain: bool,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// The .lax spec (default: the embedded specs/tiny-llama-svd-lax.lax).
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
    /// CPU backend.
    #[arg(long, value_enum, default_value_t = CpuBackend::Flex)]
    backend: CpuBackend,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum CpuBackend {
    Flex,
    Ndarray,
    Candle,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Exit codes: 0 clean (warnings allowed), 1 errors in the spec, 2 usage or I/O error.
const SPEC_ERROR: u8 = 1;
const IO_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { spec, format } => run_check(spec, format),
        Command::Graph {
            spec,
            output,
            force,
        } => run_graph(spec, output, force),
        Command::Plot(args) => run_plot(args),
        #[cfg(feature = "train")]
        Command::Train(args) => training::run_train(args),
        #[cfg(feature = "train")]
        Command::Bench(args) => training::run_bench(args),
        #[cfg(feature = "train")]
        Command::Eval {
            spec,
            checkpoint,
            set,
            backend,
        } => training::run_eval(spec, checkpoint, set, backend),
    }
}

fn read_source(path: Option<PathBuf>) -> Result<Source, ExitCode> {
    match path {
        None => Ok(Source::new(laxc::DEFAULT_SPEC_NAME, laxc::DEFAULT_SPEC)),
        Some(p) => match std::fs::read_to_string(&p) {
            Ok(text) => Ok(Source::new(p.display().to_string(), text)),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", p.display());
                Err(ExitCode::from(IO_ERROR))
            }
        },
    }
}

fn print_diagnostics(source: &Source, d: &[Diagnostic]) {
    use std::io::IsTerminal;
    // Colour only for a person at a terminal; pipes and files get plain text.
    let choice = if std::io::stderr().is_terminal() {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let mut stderr = StandardStream::stderr(choice);
    if let Err(e) = render(source, d, &mut stderr) {
        eprintln!("error: cannot print diagnostics: {e}");
    }
}

/// Compiles, printing diagnostics; returns the compiled spec or the exit code.
fn compile(source: &Source) -> Result<laxc::Compiled, ExitCode> {
    match laxc::compile(source) {
        Ok(c) => {
            print_diagnostics(source, &c.warnings);
            Ok(c)
        }
        Err(d) => {
            print_diagnostics(source, &d);
            let errors = d.iter().filter(|d| d.is_error()).count();
            eprintln!(
                "error: {} has {errors} error{}",
                source.name,
                if errors == 1 { "" } else { "s" }
            );
            Err(ExitCode::from(SPEC_ERROR))
        }
    }
}

/// Reads and compiles a spec (the embedded default when `path` is None), printing diagnostics.
fn read_and_compile(path: Option<PathBuf>) -> Result<(Source, laxc::Compiled), ExitCode> {
    let source = read_source(path)?;
    let compiled = compile(&source)?;
    Ok((source, compiled))
}

fn run_check(path: Option<PathBuf>, format: Format) -> ExitCode {
    let (source, compiled) = match read_and_compile(path) {
        Ok(sc) => sc,
        Err(c) => return c,
    };
    let report = compiled.report();
    let text = match format {
        Format::Table => laxc::report::render_table(&report, compiled.warnings.len()),
        Format::Json => {
            let mut v = serde_json::to_value(&report).expect("the report serializes");
            v["warnings"] = serde_json::to_value(
                compiled
                    .warnings
                    .iter()
                    .map(|w| {
                        let (line, column) = source.line_col(w.span.start);
                        serde_json::json!({
                            "code": w.code, "message": w.message, "line": line, "column": column,
                            "hint": w.hint,
                        })
                    })
                    .collect::<Vec<_>>(),
            )
            .expect("warnings serialize");
            let mut s = serde_json::to_string_pretty(&v).expect("the report serializes");
            s.push('\n');
            s
        }
    };
    print!("{text}");
    ExitCode::SUCCESS
}

fn run_graph(path: Option<PathBuf>, output: Option<PathBuf>, force: bool) -> ExitCode {
    let (_, compiled) = match read_and_compile(path) {
        Ok(sc) => sc,
        Err(c) => return c,
    };
    let dot = laxc::dot::render_dot(&compiled.ir);
    match output {
        None => {
            print!("{dot}");
            ExitCode::SUCCESS
        }
        Some(p) => {
            if p.exists() && !force {
                eprintln!(
                    "error: {} exists; pass --force to overwrite it",
                    p.display()
                );
                return ExitCode::from(IO_ERROR);
            }
            match write_atomically(&p, dot.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: cannot write {}: {e}", p.display());
                    ExitCode::from(IO_ERROR)
                }
            }
        }
    }
}

#[derive(clap::Args)]
struct PlotArgs {
    /// Run folders written by `laxc train` (each has a metrics.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// What to draw.
    #[arg(long, default_value = "val_loss", value_parser = laxc::plot::METRICS)]
    metric: String,
    /// A legend label per run, in order (default: the folder names).
    #[arg(long)]
    label: Vec<String>,
    /// Writes <OUTPUT>.png and <OUTPUT>.svg.
    #[arg(short, long, default_value = "laxc-plot")]
    output: PathBuf,
    /// The chart's title (default: the metric).
    #[arg(long)]
    title: Option<String>,
    /// Logarithmic y axis.
    #[arg(long)]
    log_y: bool,
    /// Overwrite existing output files.
    #[arg(long)]
    force: bool,
}

fn run_plot(a: PlotArgs) -> ExitCode {
    if !a.label.is_empty() && a.label.len() != a.runs.len() {
        eprintln!(
            "error: {} labels for {} runs: give one --label per run, in order, or none",
            a.label.len(),
            a.runs.len()
        );
        return ExitCode::from(IO_ERROR);
    }
    let files = laxc::plot::output_files(&a.output);
    if !a.force {
        if let Some(f) = files.iter().find(|f| f.exists()) {
            eprintln!(
                "error: {} exists; pass --force to replace it, or choose another --output",
                f.display()
            );
            return ExitCode::from(IO_ERROR);
        }
    }
    let mut curves = Vec::with_capacity(a.runs.len());
    for (i, run) in a.runs.iter().enumerate() {
        match laxc::plot::read_curve(run, &a.metric, a.label.get(i).map(String::as_str)) {
            Ok(c) => curves.push(c),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(IO_ERROR);
            }
        }
    }
    let title = a.title.unwrap_or_else(|| a.metric.replace('_', " "));
    match laxc::plot::plot(&curves, &a.metric, &title, a.log_y, &a.output, (960, 600)) {
        Ok(written) => {
            for f in written {
                println!("wrote {}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(IO_ERROR)
        }
    }
}

/// Writes to a temporary file beside the target, then renames: a reader never sees half a file.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let tmp = match dir {
        Some(d) => d.join(format!(".{}.tmp", std::process::id())),
        None => PathBuf::from(format!(".{}.tmp", std::process::id())),
    };
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(feature = "train")]
// Candle is deprecated in Burn 0.21 but kept selectable: the CPU backends are compared side by
// side in BENCHMARKS.md.
#[allow(deprecated)]
mod training {
    use super::*;
    use burn::backend::{Autodiff, Candle, Flex, NdArray};
    use laxc::options::{parse_override, Device, TrainOptions};
    use laxc::train::{self, run_dir, RunPlan};

    /// Resolves the options: the spec's train section, then every `--set`.
    fn options(
        source: &Source,
        c: &laxc::Compiled,
        set: &[String],
    ) -> Result<TrainOptions, ExitCode> {
        let mut overrides = Vec::new();
        for s in set {
            match parse_override(s) {
                Ok(kv) => overrides.push(kv),
                Err(e) => {
                    print_diagnostics(&e.source, &[e.diagnostic]);
                    return Err(ExitCode::from(IO_ERROR));
                }
            }
        }
        let entries: Vec<_> = c
            .spec
            .train
            .as_ref()
            .map(|t| {
                t.entries
                    .iter()
                    .map(|(k, (v, _))| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        TrainOptions::resolve(&entries, &overrides).map_err(|e| {
            eprintln!("error: {}: {e}", source.name);
            ExitCode::from(SPEC_ERROR)
        })
    }

    fn spec_dir(path: &Option<PathBuf>) -> PathBuf {
        match path {
            // The embedded default is specs/tiny-llama-svd-lax.lax: its data paths are relative
            // to specs/ in the repository.
            None => PathBuf::from("specs"),
            Some(p) => p.parent().map(|d| d.to_path_buf()).unwrap_or_default(),
        }
    }

    /// Refuses a model whose fp32 training state cannot fit in this machine's free memory.
    fn fits_in_memory(c: &laxc::Compiled) -> Result<(), String> {
        let need = c.report().memory.train_bytes_fp32;
        let avail = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u128>().ok())
                .map(|kb| kb * 1024)
        });
        match avail {
            Some(a) if need > a => Err(format!(
                "this model needs {:.2} GiB for fp32 weights, gradients and Adam state (laxc check's \
                 estimate, before activations), but only {:.2} GiB is free",
                need as f64 / (1u64 << 30) as f64,
                a as f64 / (1u64 << 30) as f64
            )),
            _ => Ok(()),
        }
    }

    pub fn run_train(args: TrainArgs) -> ExitCode {
        let (source, compiled) = match read_and_compile(args.spec.clone()) {
            Ok(sc) => sc,
            Err(c) => return c,
        };
        let mut opts = match options(&source, &compiled, &args.set) {
            Ok(o) => o,
            Err(c) => return c,
        };
        if let Some(d) = &args.device {
            opts.device = d.clone();
        }
        let device = match check_device(&opts.device) {
            Ok(d) => d,
            Err(code) => return code,
        };
        if let Err(e) = fits_in_memory(&compiled) {
            eprintln!("error: {e}");
            return ExitCode::from(SPEC_ERROR);
        }
        let (out, resume) = match &args.resume {
            Some(dir) => {
                if !dir.join("checkpoints").join("latest").exists() {
                    eprintln!("error: {} has no checkpoint to resume from", dir.display());
                    return ExitCode::from(IO_ERROR);
                }
                (dir.clone(), true)
            }
            None => {
                let out = args
                    .out
                    .clone()
                    .unwrap_or_else(|| default_run_dir(&source.name));
                let replace = run_dir::Replace {
                    run: args.force,
                    checkpoints: args.discard_checkpoints,
                };
                if let Err(e) = run_dir::claim(&out, replace) {
                    eprintln!("error: {e}");
                    return ExitCode::from(IO_ERROR);
                }
                (out, false)
            }
        };
        if let Err(e) = prepare_run_dir(&out, &source, &compiled, &opts, resume) {
            eprintln!("error: {e}");
            return ExitCode::from(IO_ERROR);
        }
        let _ = ctrlc::set_handler(|| {
            train::run::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let plan = RunPlan {
            compiled: &compiled,
            spec_dir: spec_dir(&args.spec),
            options: opts.clone(),
            out: out.clone(),
            resume,
            plain: args.plain || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        eprintln!(
            "training {} ({} params) on {} → {}",
            source.name,
            laxc::report::thousands(compiled.report().params.total),
            device_label(&opts.device, args.backend),
            out.display()
        );
        let result = match dispatch(device, args.backend, &plan) {
            Ok(r) => r,
            Err(code) => return code,
        };
        match result {
            Ok(s) => {
                print_summary(&s);
                if s.stopped
                    .as_deref()
                    .is_some_and(|r| r.starts_with("the loss"))
                {
                    ExitCode::from(SPEC_ERROR)
                } else if s.stopped.is_some() {
                    ExitCode::from(130)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                // A new run that failed before its first checkpoint leaves nothing behind.
                if !resume && !out.join("checkpoints").exists() {
                    let _ = run_dir::remove_run_entries(&out);
                }
                eprintln!("error: {e}");
                ExitCode::from(IO_ERROR)
            }
        }
    }

    pub fn run_bench(args: BenchArgs) -> ExitCode {
        use laxc::train::bench::{bench, BenchOptions};
        let (source, compiled) = match read_and_compile(args.spec.clone()) {
            Ok(sc) => sc,
            Err(c) => return c,
        };
        // The spec's optimizer settings (weight decay, clipping, betas) apply; its data does not.
        let opts = match options(&source, &compiled, &[]) {
            Ok(o) => o,
            Err(c) => return c,
        };
        if args.steps == 0 {
            eprintln!("error: --steps must be at least 1");
            return ExitCode::from(IO_ERROR);
        }
        let bench_opts = BenchOptions {
            steps: args.steps,
            warmup: args.warmup,
            batch: args.batch.unwrap_or(opts.batch),
            seed: opts.seed,
        };
        if bench_opts.batch == 0 {
            eprintln!("error: --batch must be at least 1");
            return ExitCode::from(IO_ERROR);
        }
        if let Err(e) = fits_in_memory(&compiled) {
            eprintln!("error: {}: {e}", source.name);
            return ExitCode::from(IO_ERROR);
        }
        let name = &source.name;
        let mut result = match args.backend {
            CpuBackend::Flex => {
                bench::<Autodiff<Flex>>(&compiled, name, &opts, &bench_opts, Default::default())
            }
            CpuBackend::Ndarray => {
                bench::<Autodiff<NdArray>>(&compiled, name, &opts, &bench_opts, Default::default())
            }
            CpuBackend::Candle => {
                bench::<Autodiff<Candle>>(&compiled, name, &opts, &bench_opts, Default::default())
            }
        };
        result.implementation = format!("laxc ({})", device_label("cpu", args.backend));
        println!("{}", serde_json::to_string(&result).expect("serializable"));
        ExitCode::SUCCESS
    }

    /// Refuses a device this build or machine cannot use, before anything is written.
    fn check_device(device: &str) -> Result<Device, ExitCode> {
        let Some(parsed) = Device::parse(device) else {
            eprintln!("error: unknown device `{device}`: use cpu, cuda or cuda:N");
            return Err(ExitCode::from(IO_ERROR));
        };
        if parsed == Device::Cpu {
            return Ok(parsed);
        }
        if !cfg!(feature = "cuda") {
            eprintln!("error: --device cuda needs laxc built with `--features cuda`");
            return Err(ExitCode::from(IO_ERROR));
        }
        #[cfg(feature = "cuda")]
        {
            // cudarc loads libcuda at run time and panics without it: look first.
            // SAFETY: loading the system CUDA driver library runs only its initializers.
            if unsafe { libloading::Library::new("libcuda.so.1") }.is_err() {
                eprintln!(
                    "error: --device cuda: no CUDA driver on this machine (libcuda.so.1 not found)"
                );
                return Err(ExitCode::from(IO_ERROR));
            }
        }
        Ok(parsed)
    }

    fn device_label(device: &str, backend: CpuBackend) -> String {
        if device.starts_with("cuda") {
            device.to_string()
        } else {
            let b = match backend {
                CpuBackend::Flex => "flex",
                CpuBackend::Ndarray => "ndarray",
                CpuBackend::Candle => "candle",
            };
            format!("cpu ({b})")
        }
    }

    type TrainResult = Result<train::Summary, String>;

    fn dispatch(
        device: Device,
        backend: CpuBackend,
        plan: &RunPlan,
    ) -> Result<TrainResult, ExitCode> {
        Ok(match (device, backend) {
            (Device::Cuda(index), _) => return cuda(index, plan),
            (Device::Cpu, CpuBackend::Flex) => {
                train::train::<Autodiff<Flex>>(plan, Default::default())
            }
            (Device::Cpu, CpuBackend::Ndarray) => {
                train::train::<Autodiff<NdArray>>(plan, Default::default())
            }
            (Device::Cpu, CpuBackend::Candle) => {
                train::train::<Autodiff<Candle>>(plan, Default::default())
            }
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda(index: usize, plan: &RunPlan) -> Result<TrainResult, ExitCode> {
        use burn::backend::cuda::{Cuda, CudaDevice};
        Ok(train::train::<Autodiff<Cuda>>(plan, CudaDevice::new(index)))
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda(_index: usize, _plan: &RunPlan) -> Result<TrainResult, ExitCode> {
        eprintln!("error: --device cuda needs laxc built with `--features cuda`");
        Err(ExitCode::from(IO_ERROR))
    }

    fn default_run_dir(spec_name: &str) -> PathBuf {
        let stem = std::path::Path::new(spec_name)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut dir = PathBuf::from("runs").join(format!("{stem}-{secs}"));
        let mut n = 1;
        while dir.exists() {
            dir = PathBuf::from("runs").join(format!("{stem}-{secs}-{n}"));
            n += 1;
        }
        dir
    }

    /// The run folder keeps what reproduces the run: the spec as written, the resolved options
    /// and the report.
    fn prepare_run_dir(
        out: &std::path::Path,
        source: &Source,
        c: &laxc::Compiled,
        opts: &TrainOptions,
        resume: bool,
    ) -> Result<(), String> {
        std::fs::create_dir_all(out)
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let w = |name: &str, bytes: &[u8]| {
            train::checkpoint::write_atomically(&out.join(name), bytes)
                .map_err(|e| format!("cannot write {}: {e}", out.join(name).display()))
        };
        if !resume {
            w("spec.lax", source.text.as_bytes())?;
        }
        let resolved =
            serde_json::json!({ "spec": source.name, "train": opts, "report": c.report() });
        w(
            if resume {
                "resolved-resume.json"
            } else {
                "resolved.json"
            },
            serde_json::to_string_pretty(&resolved)
                .expect("serializes")
                .as_bytes(),
        )
    }

    fn print_summary(s: &train::Summary) {
        println!("steps             {}", s.steps);
        println!("final train loss  {:.4}", s.final_loss);
        if let Some(v) = s.val_loss {
            println!("validation loss   {v:.4}");
        }
        if let Some(p) = s.val_perplexity {
            println!("perplexity        {p:.2}");
        }
        if let Some(a) = s.val_accuracy {
            println!("accuracy          {:.2}%", 100.0 * a);
        }
        println!("throughput        {:.0} {}/s", s.items_per_second, s.unit);
        println!("time              {:.1} s", s.seconds);
        println!("run folder        {}", s.run_dir.display());
        if let Some(r) = &s.stopped {
            println!("stopped early     {r}");
        }
    }

    pub fn run_eval(
        spec: Option<PathBuf>,
        checkpoint: PathBuf,
        set: Vec<String>,
        backend: CpuBackend,
    ) -> ExitCode {
        let (source, compiled) = match read_and_compile(spec.clone()) {
            Ok(sc) => sc,
            Err(c) => return c,
        };
        let opts = match options(&source, &compiled, &set) {
            Ok(o) => o,
            Err(c) => return c,
        };
        let r = match backend {
            CpuBackend::Flex => eval::<Flex>(&compiled, &opts, &spec, &checkpoint),
            CpuBackend::Ndarray => eval::<NdArray>(&compiled, &opts, &spec, &checkpoint),
            CpuBackend::Candle => eval::<Candle>(&compiled, &opts, &spec, &checkpoint),
        };
        match r {
            Ok((loss, acc)) => {
                println!("validation loss   {loss:.4}");
                match acc {
                    Some(a) => println!("accuracy          {:.2}%", 100.0 * a),
                    None => println!("perplexity        {:.2}", loss.exp()),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(IO_ERROR)
            }
        }
    }

    fn eval<B: burn::tensor::backend::Backend>(
        c: &laxc::Compiled,
        o: &TrainOptions,
        spec: &Option<PathBuf>,
        checkpoint: &std::path::Path,
    ) -> Result<(f64, Option<f64>), String> {
        let device = B::Device::default();
        let ck = train::checkpoint::latest(checkpoint)?
            .ok_or_else(|| format!("{} holds no checkpoint", checkpoint.display()))?;
        let model =
            train::checkpoint::load_weights(&ck, laxc::lower::lower::<B>(&c.ir, o.seed, &device))?;
        let data_spec = o
            .data
            .as_ref()
            .ok_or("the spec has no `data`; pass --set data=...")?;
        let data = train::data::load(data_spec, &spec_dir(spec))?;
        train::run::check_data(&data, c)?;
        Ok(train::run::evaluate(
            &model,
            &data,
            o,
            c.ir.model.tokens,
            &device,
            usize::MAX,
        ))
    }
}
