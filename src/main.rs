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
        /// The .lax spec, or `-` to read it from standard input (default: the embedded
        /// specs/tiny-llama-svd-lax.lax).
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
        /// The .lax spec the checkpoint was trained from (default: the spec and options its run
        /// recorded).
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
        /// The .lax spec, or `-` to read it from standard input (default: the embedded
        /// specs/tiny-llama-svd-lax.lax).
        spec: Option<PathBuf>,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Overwrite the output file if it exists.
        #[arg(long)]
        force: bool,
    },
}

#[derive(clap::Args, Clone)]
struct TrainArgs {
    /// The .lax spec, or `-` to read it from standard input (default: the embedded
    /// specs/tiny-llama-svd-lax.lax).
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
    /// Continue the run in this folder from its latest checkpoint, with the spec and options it
    /// recorded; `--set` may change the keys the docs mark as changeable on resume.
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
        // `-`: the spec from standard input, as most command-line tools take it.
        Some(p) if p.as_os_str() == "-" => {
            let mut text = String::new();
            match std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
                Ok(_) => Ok(Source::new("<stdin>", text)),
                Err(e) => {
                    eprintln!("error: cannot read the spec from standard input: {e}");
                    Err(ExitCode::from(IO_ERROR))
                }
            }
        }
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
    // A file of many broken lines would otherwise scroll its first, most useful errors away.
    let shown = &d[..d.len().min(SHOWN_DIAGNOSTICS)];
    if let Err(e) = render(source, shown, &mut stderr) {
        eprintln!("error: cannot print diagnostics: {e}");
    }
    if d.len() > shown.len() {
        eprintln!(
            "note: {} more diagnostics not shown (the first {SHOWN_DIAGNOSTICS} are above)",
            d.len() - shown.len()
        );
    }
}

/// How many diagnostics a command prints at most.
const SHOWN_DIAGNOSTICS: usize = 20;

/// Compiles, printing diagnostics; returns the compiled spec or the exit code.
fn compile(source: &Source) -> Result<laxc::Compiled, ExitCode> {
    match laxc::compile(source) {
        Ok(c) => {
            print_diagnostics(source, &c.warnings);
            Ok(c)
        }
        Err(d) => Err(refuse_spec(source, &d)),
    }
}

/// Prints a spec's diagnostics and how many errors it has; the exit code of a bad spec.
fn refuse_spec(source: &Source, d: &[Diagnostic]) -> ExitCode {
    print_diagnostics(source, d);
    let errors = d.iter().filter(|d| d.is_error()).count();
    eprintln!(
        "error: {} has {errors} error{}",
        source.name,
        if errors == 1 { "" } else { "s" }
    );
    ExitCode::from(SPEC_ERROR)
}

/// Reads and compiles a spec (the embedded default when `path` is None), printing diagnostics.
fn read_and_compile(path: Option<PathBuf>) -> Result<(Source, laxc::Compiled), ExitCode> {
    let source = read_source(path)?;
    let compiled = compile(&source)?;
    Ok((source, compiled))
}

fn run_check(path: Option<PathBuf>, format: Format) -> ExitCode {
    let source = match read_source(path) {
        Ok(s) => s,
        Err(c) => return c,
    };
    let compiled = match laxc::compile(&source) {
        Ok(c) => {
            print_diagnostics(&source, &c.warnings);
            c
        }
        Err(d) => {
            // A tool reading JSON gets the errors there too (stderr has them for people).
            if matches!(format, Format::Json) {
                print!("{}", diagnostics_json(&source, &d));
            }
            return refuse_spec(&source, &d);
        }
    };
    let report = compiled.report();
    let text = match format {
        Format::Table => laxc::report::render_table(&report, compiled.warnings.len()),
        Format::Json => laxc::report::render_json(&report, &compiled.warnings, &source),
    };
    print!("{text}");
    ExitCode::SUCCESS
}

/// A spec that does not compile, as JSON: every diagnostic (none left out), errors first.
fn diagnostics_json(source: &Source, d: &[Diagnostic]) -> String {
    let of = |errors: bool| -> Vec<serde_json::Value> {
        d.iter()
            .filter(|x| x.is_error() == errors)
            .map(|x| laxc::diagnostic::to_json(x, source))
            .collect()
    };
    let v = serde_json::json!({
        "schema_version": laxc::report::SCHEMA_VERSION,
        "file": source.name,
        "errors": of(true),
        "warnings": of(false),
    });
    let mut s = serde_json::to_string_pretty(&v).expect("serializes");
    s.push('\n');
    s
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
            match laxc::files::write_atomically(&p, dot.as_bytes()) {
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
    for w in laxc::plot::sparse_warnings(&curves, &a.metric) {
        eprintln!("warning: {w}");
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

#[cfg(feature = "train")]
mod training {
    use super::*;
    use laxc::options::{parse_override, Device, TrainOptions};
    use laxc::train::session::{self, Folder, Launch, Refusal};
    use laxc::train::{self, record, run_dir, Stop};

    impl From<CpuBackend> for session::CpuBackend {
        fn from(b: CpuBackend) -> Self {
            match b {
                CpuBackend::Flex => session::CpuBackend::Flex,
                CpuBackend::Ndarray => session::CpuBackend::Ndarray,
                CpuBackend::Candle => session::CpuBackend::Candle,
            }
        }
    }

    fn refused(r: Refusal) -> ExitCode {
        eprintln!("error: {}", r.message());
        ExitCode::from(r.exit_code())
    }

    /// Every `--set`, each rendered against its own text when it is wrong.
    fn overrides(set: &[String]) -> Result<Vec<(String, laxc::spec::TrainValue)>, ExitCode> {
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
        Ok(overrides)
    }

    /// `--device`, checked.
    fn device(d: &str) -> Result<String, ExitCode> {
        if Device::parse(d).is_none() {
            eprintln!("error: unknown device `{d}`: use cpu, cuda or cuda:N");
            return Err(ExitCode::from(IO_ERROR));
        }
        Ok(d.to_string())
    }

    /// The spec's train section, then every `--set`, then `--device`.
    fn options(
        source: &Source,
        c: &laxc::Compiled,
        set: &[String],
        device: Option<&str>,
    ) -> Result<TrainOptions, ExitCode> {
        let overrides = overrides(set)?;
        let mut opts = session::options(source, c, &overrides).map_err(refused)?;
        if let Some(d) = device {
            opts.device = self::device(d)?;
        }
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
        let _ = ctrlc::set_handler(|| {
            // Said once, at once: a long step may take a while to finish.
            if !train::run::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
                eprintln!("\nstopping after this step; a checkpoint will be written");
            }
        });
        let launch = Launch {
            source: &source,
            compiled: &compiled,
            spec_dir,
            options,
            folder,
            backend: args.backend.into(),
            plain: args.plain || !std::io::IsTerminal::is_terminal(&std::io::stderr()),
        };
        match session::train_spec(launch) {
            Ok(s) => {
                print_summary(&s);
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
        let Some(dir) = args.resume else {
            let (source, compiled) = read_and_compile(args.spec.clone())?;
            let options = options(&source, &compiled, &args.set, args.device.as_deref())?;
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
        let run = record::stored_run(&dir).map_err(refused)?;
        let compiled = compile(&run.source)?;
        let overrides = overrides(&args.set)?;
        if !overrides.iter().any(|(key, _)| key == "data") {
            run.data_paths_known().map_err(refused)?;
        }
        let mut options = run.last.resume_with(&overrides).map_err(|e| {
            eprintln!("error: --resume {} with --set: {e}", dir.display());
            ExitCode::from(SPEC_ERROR)
        })?;
        if let Some(d) = args.device.as_deref() {
            options.device = device(d)?;
        }
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

    pub fn run_bench(args: BenchArgs) -> ExitCode {
        use laxc::train::bench::BenchOptions;
        let (source, compiled) = match read_and_compile(args.spec.clone()) {
            Ok(sc) => sc,
            Err(c) => return c,
        };
        // The spec's optimizer settings (weight decay, clipping, betas) apply; its data does not.
        let opts = match options(&source, &compiled, &[], None) {
            Ok(o) => o,
            Err(c) => return c,
        };
        let bench_opts = BenchOptions {
            steps: args.steps,
            warmup: args.warmup,
            batch: args.batch.unwrap_or(opts.batch),
            seed: opts.seed,
        };
        let backend = args.backend.into();
        match session::bench_spec(&compiled, &source.name, &opts, &bench_opts, backend) {
            Ok(result) => {
                println!("{}", serde_json::to_string(&result).expect("serializable"));
                ExitCode::SUCCESS
            }
            Err(r) => refused(r),
        }
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
        let ToEvaluate {
            source,
            compiled,
            options: opts,
            spec_dir: dir,
        } = match what_to_evaluate(spec, &checkpoint, &set) {
            Ok(w) => w,
            Err(c) => return c,
        };
        // The whole validation set, unless this command says how many batches.
        let batches = set
            .iter()
            .filter_map(|s| parse_override(s).ok())
            .any(|(key, _)| key == "eval_batches")
            .then_some(opts.eval_batches);
        let backend = backend.into();
        eprintln!("evaluating {} with {}", checkpoint.display(), source.name);
        match session::eval_checkpoint(&compiled, &opts, &dir, &checkpoint, backend, batches) {
            Ok((loss, acc)) => {
                println!("validation loss   {loss:.4}");
                match acc {
                    Some(a) => println!("accuracy          {:.2}%", 100.0 * a),
                    None => println!("perplexity        {:.2}", loss.exp()),
                }
                ExitCode::SUCCESS
            }
            Err(r) => refused(r),
        }
    }

    /// What `laxc eval` evaluates with: the spec, its options and the folder its relative data
    /// paths start from.
    struct ToEvaluate {
        source: Source,
        compiled: laxc::Compiled,
        options: TrainOptions,
        spec_dir: PathBuf,
    }

    /// The spec given, with its options and the `--set`s; without one, the spec and options the
    /// checkpoint's run recorded (else the embedded spec).
    fn what_to_evaluate(
        spec: Option<PathBuf>,
        checkpoint: &std::path::Path,
        set: &[String],
    ) -> Result<ToEvaluate, ExitCode> {
        let run = match &spec {
            None => record::run_folder_of(checkpoint),
            Some(_) => None,
        };
        let Some(run) = run else {
            let (source, compiled) = read_and_compile(spec.clone())?;
            let opts = options(&source, &compiled, set, None)?;
            let spec_dir = session::spec_dir(spec.as_deref()).map_err(refused)?;
            return Ok(ToEvaluate {
                source,
                compiled,
                options: opts,
                spec_dir,
            });
        };
        let run = record::stored_run(&run).map_err(refused)?;
        let compiled = compile(&run.source)?;
        let overrides = overrides(set)?;
        if !overrides.iter().any(|(key, _)| key == "data") {
            run.data_paths_known().map_err(refused)?;
        }
        let opts = run.last.with(&overrides).map_err(|e| {
            eprintln!("error: --set: {e}");
            ExitCode::from(SPEC_ERROR)
        })?;
        Ok(ToEvaluate {
            source: run.source,
            compiled,
            options: opts,
            spec_dir: PathBuf::new(),
        })
    }
}
