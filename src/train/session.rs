//! The training commands as library functions: what `laxc train`, `laxc eval` and `laxc bench`
//! do once their arguments are parsed (options, the device and memory checks, the run folder,
//! one dispatch to a backend), so that the command line and a Rust user of laxc share them.

use super::bench::{bench, bench_pair, BenchOptions, BenchResult, PairResult, Side};
use super::parallel::Topology;
use super::run::{self, already_there, Resumed, RunPlan, Summary};
use super::{checkpoint, cluster, data, record, run_dir};
use crate::lower::precision::compute_dtype;
use crate::options::{Device, Precision, TrainOptions};
use crate::source::Source;
use crate::spec::TrainValue;
use crate::Compiled;
use burn::tensor::backend::AutodiffBackend;
use std::path::{Path, PathBuf};

/// The CPU backends laxc can train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuBackend {
    Flex,
    Ndarray,
    Candle,
}

impl CpuBackend {
    pub fn name(self) -> &'static str {
        match self {
            CpuBackend::Flex => "flex",
            CpuBackend::Ndarray => "ndarray",
            CpuBackend::Candle => "candle",
        }
    }
}

/// Why a command could not run, and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Something about the spec or its settings (exit 1).
    Spec(String),
    /// A file, folder, device or other input (exit 2).
    Io(String),
}

impl Refusal {
    pub fn exit_code(&self) -> u8 {
        match self {
            Refusal::Spec(_) => 1,
            Refusal::Io(_) => 2,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Refusal::Spec(m) | Refusal::Io(m) => m,
        }
    }
}

/// The spec's `train` section, then the overrides.
pub fn options(
    source: &Source,
    c: &Compiled,
    overrides: &[(String, TrainValue)],
) -> Result<TrainOptions, Refusal> {
    let entries: Vec<_> = c
        .spec
        .train
        .iter()
        .flat_map(|t| t.entries.iter().map(|(k, (v, _))| (k.clone(), v.clone())))
        .collect();
    // The spec's own section passed its checks when it compiled: a conflict comes from --set.
    let mut o = TrainOptions::resolve(&entries, overrides)
        .map_err(|e| Refusal::Spec(format!("{} with --set: {e}", source.name)))?;
    // Examples without a tokenizer of their own are tokenized as the pretrained base reads.
    if let Some(crate::options::DataSpec::Jsonl { tokenizer, .. }) = &mut o.data {
        if tokenizer.is_none() {
            *tokenizer = crate::lower::base::base_file(&c.spec).map_err(Refusal::Spec)?;
        }
    }
    Ok(o)
}

/// The folder a spec's relative data paths start from: the spec's own folder, or for the
/// embedded default spec the repository's `specs/` (or, outside the repository, the cache
/// folder its embedded data is written to).
pub fn spec_dir(path: Option<&Path>) -> Result<PathBuf, Refusal> {
    match path {
        None => super::default_data::spec_dir().map_err(Refusal::Io),
        Some(p) => Ok(p.parent().map(Path::to_path_buf).unwrap_or_default()),
    }
}

/// What a command keeps in memory, by laxc check's estimate.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Training `replicas` replicas in this process, each with micro-batches of `batch`
    /// samples: fp32 weights, gradients and Adam state, and the activations the micro-batch
    /// keeps for the backward pass, for each replica.
    Train { batch: usize, replicas: usize },
    /// Evaluation: the fp32 weights (a forward pass without gradients keeps no activations
    /// beyond the few it is computing).
    Eval,
}

/// Refuses a command whose memory need (the report's estimate, which measured peaks have been
/// 0.91–1.07× of on the LLaMA bench specs and a LLaMA-60M) is clearly above this machine's free memory: even 90 % of it.
/// On a GPU the need is in the GPU's memory, which this check does not see: nothing is refused.
pub fn fits_in_memory(c: &Compiled, need: Need, device: Device) -> Result<(), Refusal> {
    if device != Device::Cpu {
        return Ok(());
    }
    let report = c.report();
    let m = &report.memory;
    let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
    let (total, what) = match need {
        Need::Train { batch, replicas } => {
            let activations = m.activation_bytes_per_sample_fp32 * batch as u128;
            let each = match replicas {
                1 => String::new(),
                n => format!(", for each of {n} replicas"),
            };
            let what = format!(
                "{:.2} GiB for fp32 weights, gradients and Adam state and {:.2} GiB for the \
                 activations of a batch of {batch}{each}",
                gib(m.train_bytes_fp32),
                gib(activations)
            );
            (replicas as u128 * train_bytes(m, batch), what)
        }
        Need::Eval => {
            let weights = 4 * report.params.total;
            (weights, "for its fp32 weights".to_string())
        }
    };
    match short_of(total) {
        Some(free) => Err(Refusal::Spec(format!(
            "this needs about {:.2} GiB ({what}; laxc check's estimate), but only {:.2} GiB is \
             free{}",
            gib(total),
            gib(free),
            match need {
                Need::Train { .. } =>
                    "; lower `batch` (and raise `accum` to keep the samples per step)",
                Need::Eval => "",
            }
        ))),
        _ => Ok(()),
    }
}

/// What training at `batch` needs by the report's fp32 estimate: weights, gradients and Adam
/// state, and the activations a batch keeps.
fn train_bytes(m: &crate::report::Memory, batch: usize) -> u128 {
    m.train_bytes_fp32 + m.activation_bytes_per_sample_fp32 * batch as u128
}

/// The free memory, where a need of `total` bytes is clearly above it: even 90 % of the need
/// is more (the estimate has been within 0.91–1.07× of measured peaks).
fn short_of(total: u128) -> Option<u128> {
    available_memory().filter(|&free| total / 10 * 9 > free)
}

/// MemAvailable of /proc/meminfo, where there is one.
fn available_memory() -> Option<u128> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb = m
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u128>()
        .ok()?;
    Some(kb * 1024)
}

/// Refuses a device this build or machine cannot use, before anything is written.
pub fn usable(device: Device) -> Result<(), Refusal> {
    match device {
        Device::Cpu => Ok(()),
        Device::Cuda(_) => cuda_usable(),
        Device::Wgpu => wgpu_usable(),
    }
}

/// bf16 (the `dtype` key) runs where Burn 0.21 computes it: on the CPU with Flex, and on CUDA.
/// wgpu's WGSL has no bf16; ndarray and candle do not take it. Refused before anything is written rather than failing inside a kernel.
pub fn precision_usable(options: &TrainOptions, backend: CpuBackend) -> Result<(), Refusal> {
    let device = options.device();
    let computes = match device {
        _ if options.dtype == Precision::F32 => true,
        Device::Cpu => backend == CpuBackend::Flex,
        Device::Cuda(_) => true,
        Device::Wgpu => false,
    };
    if computes {
        return Ok(());
    }
    Err(Refusal::Io(format!(
        "dtype = {} runs on the CPU with the flex backend or on CUDA, not on {}: use dtype = f32 \
         there",
        options.dtype.name(),
        device_label(device, backend)
    )))
}

#[cfg(not(feature = "wgpu"))]
const WGPU_NOT_BUILT: &str = "--device wgpu needs laxc built with `--features wgpu`";

#[cfg(not(feature = "wgpu"))]
fn wgpu_usable() -> Result<(), Refusal> {
    Err(Refusal::Io(WGPU_NOT_BUILT.into()))
}

/// wgpu panics when no adapter exists (no Vulkan, Metal or DX12 driver): one small tensor is
/// made on the default adapter first, with the panic caught and said in one line.
#[cfg(feature = "wgpu")]
fn wgpu_usable() -> Result<(), Refusal> {
    use burn::backend::wgpu::{Wgpu, WgpuDevice};
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let probe = std::panic::catch_unwind(|| {
        burn::tensor::Tensor::<Wgpu, 1>::ones([1], &WgpuDevice::DefaultDevice).into_data()
    });
    std::panic::set_hook(quiet);
    probe.map(|_| ()).map_err(|_| {
        Refusal::Io(
            "--device wgpu: no Vulkan, Metal or DX12 adapter on this machine (on Debian or \
             Ubuntu, `apt-get install mesa-vulkan-drivers libvulkan1` gives a software one)"
                .into(),
        )
    })
}

fn cuda_usable() -> Result<(), Refusal> {
    if !cfg!(feature = "cuda") {
        return Err(Refusal::Io(
            "--device cuda needs laxc built with `--features cuda`".into(),
        ));
    }
    #[cfg(feature = "cuda")]
    {
        // cudarc loads libcuda at run time and panics without it: look first.
        // SAFETY: loading the system CUDA driver library runs only its initializers.
        if unsafe { libloading::Library::new("libcuda.so.1") }.is_err() {
            return Err(Refusal::Io(
                "--device cuda: no CUDA driver on this machine (libcuda.so.1 not found)".into(),
            ));
        }
    }
    Ok(())
}

/// How a device and backend are named in messages.
pub fn device_label(device: Device, backend: CpuBackend) -> String {
    match device {
        Device::Cpu => {
            // rayon's global pool: one thread per core, or `--threads`.
            let threads = rayon::current_num_threads();
            let s = if threads == 1 { "" } else { "s" };
            format!("cpu ({}, {threads} thread{s})", backend.name())
        }
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Wgpu => "wgpu".into(),
    }
}

/// Work that runs on whichever backend the user chose.
pub trait OnBackend {
    type Output;
    /// Runs on `devices` (one, unless the job trains replicas).
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output;

    /// Whether the job computes alone: no replica or other node whose tensor work it waits
    /// for (an all-reduce), which could not run while the job holds a thread of the pool. No
    /// default: a job that gets this wrong can hang with `--threads 1`.
    fn alone(&self) -> bool;
}

/// The first of a job's devices: where a job that is not training runs.
fn first<D>(devices: Vec<D>) -> D {
    devices.into_iter().next().expect("one device at least")
}

/// The one dispatch from devices (of one kind: `Device::parse_list`) and a CPU backend to a
/// Burn backend type.
// Candle is deprecated in Burn 0.21 but kept selectable: the CPU backends are compared side by
// side in BENCHMARKS.md.
#[allow(deprecated)]
pub fn dispatch<J: OnBackend + Send>(
    devices: &[Device],
    backend: CpuBackend,
    job: J,
) -> Result<J::Output, Refusal>
where
    J::Output: Send,
{
    use burn::backend::{Autodiff, Candle, Flex, NdArray};
    let n = devices.len();
    Ok(match (devices[0], backend) {
        (Device::Cuda(_), _) => return cuda(devices, job),
        (Device::Wgpu, _) => return wgpu(job),
        (Device::Cpu, CpuBackend::Flex) => on_pool(job, |j| j.run::<Autodiff<Flex>>(cpus(n))),
        (Device::Cpu, CpuBackend::Ndarray) => on_pool(job, |j| j.run::<Autodiff<NdArray>>(cpus(n))),
        (Device::Cpu, CpuBackend::Candle) => on_pool(job, |j| j.run::<Autodiff<Candle>>(cpus(n))),
    })
}

/// Runs a one-replica CPU job on a thread of rayon's global pool, the pool that Flex's loops,
/// gemm and laxc's kernels fork their parallel work into. Forked from a thread outside the
/// pool, each parallel op is a round trip through the pool's queue, a wake-up and a sleep
/// (12 µs on this project's 2-core machine, hundreds of times a step); forked from inside, it
/// is a push onto the thread's own deque (0.3 µs), and with one thread it runs in place
/// (BENCHMARKS.md, attempt 24). A job that waits for other replicas or nodes stays outside:
/// their all-reduces fork into the same pool, and with `--threads 1` the job would hold its
/// only thread while waiting for them. The pool's other threads are held awake for the job
/// (`pool::run_awake`). The job runs on the pool's stack: `laxc` builds the
/// pool with a main thread's 8 MiB; a library caller that never built it gets rayon's 2 MiB.
fn on_pool<J: OnBackend + Send, R: Send>(job: J, run: impl FnOnce(J) -> R + Send) -> R {
    if job.alone() {
        super::pool::run_awake(|| run(job))
    } else {
        run(job)
    }
}

/// `n` replicas on the CPU: the CPU backends have one device, which they share.
fn cpus<D: Default + Clone>(n: usize) -> Vec<D> {
    vec![D::default(); n]
}

#[cfg(feature = "cuda")]
fn cuda<J: OnBackend>(devices: &[Device], job: J) -> Result<J::Output, Refusal> {
    use burn::backend::cuda::{Cuda, CudaDevice};
    let gpus = devices
        .iter()
        .map(|d| match d {
            Device::Cuda(i) => CudaDevice::new(*i),
            _ => unreachable!("devices of one kind"),
        })
        .collect();
    Ok(job.run::<burn::backend::Autodiff<Cuda>>(gpus))
}

#[cfg(not(feature = "cuda"))]
fn cuda<J: OnBackend>(_devices: &[Device], _job: J) -> Result<J::Output, Refusal> {
    Err(Refusal::Io(
        "--device cuda needs laxc built with `--features cuda`".into(),
    ))
}

#[cfg(feature = "wgpu")]
fn wgpu<J: OnBackend>(job: J) -> Result<J::Output, Refusal> {
    use burn::backend::wgpu::{Wgpu, WgpuDevice};
    Ok(job.run::<burn::backend::Autodiff<Wgpu>>(vec![WgpuDevice::DefaultDevice]))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu<J: OnBackend>(_job: J) -> Result<J::Output, Refusal> {
    Err(Refusal::Io(WGPU_NOT_BUILT.into()))
}

/// Where a training run writes.
pub enum Folder {
    /// A new run in `out` (default `runs/<spec>-<time>`), replacing an earlier run as allowed.
    New {
        out: Option<PathBuf>,
        replace: run_dir::Replace,
    },
    /// Go on with a run from its latest checkpoint.
    Resume(Box<record::StoredRun>),
}

/// Everything `laxc train` needs once its arguments are read.
pub struct Launch<'a> {
    pub source: &'a Source,
    pub compiled: &'a Compiled,
    pub spec_dir: PathBuf,
    pub options: TrainOptions,
    pub folder: Folder,
    pub backend: CpuBackend,
    /// A line per log step instead of a progress bar.
    pub plain: bool,
    /// This node's place among several (`--nodes`); None for one machine.
    pub cluster: Option<cluster::NodePlan>,
}

struct TrainJob<'a>(&'a RunPlan<'a>);

impl OnBackend for TrainJob<'_> {
    type Output = Result<Summary, String>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        run::train::<B>(self.0, devices)
    }

    fn alone(&self) -> bool {
        self.0.topology.world() == 1
    }
}

/// Trains a spec: checks the devices and memory, meets the other nodes (if any), claims (and
/// locks) the run folder, records the spec and its resolved options, trains, and returns the
/// summary. A new run that fails before its first checkpoint leaves nothing behind. Only node
/// rank 0 writes; the other nodes read the run folder only to resume.
pub fn train_spec(l: Launch) -> Result<Summary, Refusal> {
    let devices = l.options.devices();
    for d in &devices {
        usable(*d)?;
    }
    precision_usable(&l.options, l.backend)?;
    let nodes = l.cluster.as_ref().map_or(1, |c| c.nodes);
    replicas_possible(&l, devices.len(), nodes)?;
    let world = devices.len() * nodes;
    let need = Need::Train {
        batch: l.options.batch.div_ceil(world),
        replicas: devices.len(),
    };
    fits_in_memory(l.compiled, need, devices[0])?;
    let mut options = l.options.clone();
    // Recorded absolute, so that a resume or an evaluation from anywhere finds the same files;
    // hashed once, before anything is written.
    options.data = options.data.map(|d| data::absolute(&d, &l.spec_dir));
    let sums = record::data_sums(&options.data)?;
    let Some(plan) = &l.cluster else {
        let topology = Topology::local(devices.len());
        return train_here(&l, options, &sums, topology);
    };
    let identity = cluster::Identity {
        nodes,
        replicas: devices.len(),
        fingerprint: fingerprint(&l, &sums),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let joined = cluster::join(plan, identity).map_err(Refusal::Io)?;
    let topology = Topology {
        node_rank: plan.rank,
        nodes,
        per_node: devices.len(),
        collective: Some(joined.link.config().map_err(Refusal::Io)?),
        link: Some(joined.link.clone()),
    };
    let result = train_here(&l, options, &sums, topology);
    match &result {
        Ok(_) => joined.done(),
        Err(r) => joined.failed(r.message()),
    }
    result
}

/// Refuses replicas this run cannot have: several per node across nodes, dropout with several
/// in one process, more of them than the batch has samples.
fn replicas_possible(l: &Launch, replicas: usize, nodes: usize) -> Result<(), Refusal> {
    if nodes > 1 && replicas > 1 {
        // Each all-reduce between nodes is a registration of its own (cluster::Link); with
        // several replicas on a node they would have to leave and rejoin together.
        return Err(Refusal::Io(format!(
            "with --nodes, each node trains one replica (--device {} names {}): run one node \
             (process) per device, each with its own --node-rank",
            l.options.device, replicas
        )));
    }
    if replicas > 1 && l.compiled.ir.has_dropout(l.options.dropout) {
        // Burn's backends draw dropout masks from one generator per process: replicas in one
        // process would take turns on it in whatever order their threads run.
        return Err(Refusal::Spec(format!(
            "dropout with {} replicas in one process would make their masks depend on thread \
             timing (Burn draws them from one generator per process): set dropout = 0, or run \
             one process per replica with --nodes",
            replicas
        )));
    }
    let world = replicas * nodes;
    if l.options.batch < world {
        return Err(Refusal::Spec(format!(
            "batch = {} cannot be split over {world} replicas (each computes at least one sample \
             of every batch): raise `batch` or use fewer devices",
            l.options.batch
        )));
    }
    Ok(())
}

/// What must be the same on every node: the spec, its options as given (devices aside: each
/// node names its own; data paths as written, relative to each node's spec), the data files'
/// contents and the CPU backend (backends round differently).
fn fingerprint(l: &Launch, sums: &record::DataSums) -> String {
    let mut options = l.options.clone();
    options.device = String::new();
    let options = serde_json::to_string(&options).expect("serializes");
    let contents: Vec<&str> = sums.iter().map(|(_, sum)| sum.as_str()).collect();
    let all = format!(
        "{}\n{options}\n{contents:?}\n{}",
        l.source.text,
        l.backend.name()
    );
    super::digest::of_bytes(all.as_bytes())
}

/// This node's part of a run: the folder (written by node rank 0 only), then its replicas.
fn train_here(
    l: &Launch,
    options: TrainOptions,
    sums: &record::DataSums,
    topology: Topology,
) -> Result<Summary, Refusal> {
    let writes = topology.node_rank == 0;
    let (out, resume, created, _lock) =
        claim_folder(&l.folder, &l.source.name, options.steps, sums, writes)?;
    let is_new = resume.is_none();
    let cleanup = |e: String| {
        if writes && is_new {
            run_dir::remove_unless_checkpointed(&out, created);
        }
        Refusal::Io(e)
    };
    if writes {
        record::write(&out, l.source, l.compiled, &options, sums, is_new).map_err(cleanup)?;
        if is_new {
            run_dir::remove_on_abrupt_exit(Some((&out, created)));
        }
    }
    let params = &l.compiled.report().params;
    let frozen = match params.frozen {
        0 => String::new(),
        n => format!(", {} frozen", crate::report::thousands(n)),
    };
    let devices = options.devices();
    eprintln!(
        "training {} ({} trainable params{frozen}) on {}{} → {}",
        l.source.name,
        crate::report::thousands(params.trainable),
        devices_label(&devices, l.backend),
        replicas_label(&topology, options.batch),
        out.display()
    );
    let plan = RunPlan {
        compiled: l.compiled,
        spec_dir: l.spec_dir.clone(),
        options,
        out: out.clone(),
        resume,
        plain: l.plain,
        topology,
    };
    note_gpu_compilation(&devices);
    let trained = dispatch(&devices, l.backend, TrainJob(&plan));
    run_dir::remove_on_abrupt_exit(None);
    trained?.map_err(cleanup)
}

/// Said before the first steps on a GPU, which compile its kernels, so that minutes of
/// compilation on a fresh machine are not taken for a hang (BENCHMARKS.md, "On a GPU").
fn note_gpu_compilation(devices: &[Device]) {
    if devices.iter().any(|d| *d != Device::Cpu) {
        eprintln!(
            "note: the first steps compile the GPU kernels: minutes on a fresh machine (200 s \
             for the default spec on an H100), much less once the driver's cache holds them"
        );
    }
}

/// The run folder: a new one claimed, or the run resumed (locked) with its checkpoint. A node
/// that does not write claims nothing and locks nothing: it reads the checkpoint to resume.
fn claim_folder(
    folder: &Folder,
    spec_name: &str,
    steps: Option<u64>,
    sums: &record::DataSums,
    writes: bool,
) -> Result<(PathBuf, Option<Resumed>, bool, Option<run_dir::RunLock>), Refusal> {
    match folder {
        Folder::Resume(run) => {
            if !run_dir::has_checkpoints(&run.dir) {
                let why = format!("{} has no checkpoint to resume from", run.dir.display());
                return Err(Refusal::Io(why));
            }
            let lock = match writes {
                true => Some(run_dir::lock(&run.dir).map_err(Refusal::Io)?),
                false => None,
            };
            run.same_data(sums)?;
            let checkpoint = resumable_checkpoint(&run.dir, steps)?;
            let resumed = Resumed {
                first: run.first.clone(),
                checkpoint,
            };
            Ok((run.dir.clone(), Some(resumed), false, lock))
        }
        Folder::New { out, .. } if !writes => {
            let out = out.clone().unwrap_or_else(|| PathBuf::from("runs"));
            Ok((out, None, false, None))
        }
        Folder::New {
            out: Some(out),
            replace,
        } => {
            let claimed = run_dir::claim(out, *replace).map_err(Refusal::Io)?;
            Ok((out.clone(), None, claimed.created, Some(claimed.lock)))
        }
        Folder::New { out: None, replace } => {
            let out = new_default_run_dir(spec_name).map_err(Refusal::Io)?;
            let claimed = run_dir::claim(&out, *replace).map_err(Refusal::Io)?;
            Ok((out, None, true, Some(claimed.lock)))
        }
    }
}

/// How the devices are named in the banner: `cpu (flex, 2 threads)`, `cpu (flex, …) × 2`,
/// `cuda:0, cuda:1`.
fn devices_label(devices: &[Device], backend: CpuBackend) -> String {
    let one = device_label(devices[0], backend);
    match devices {
        [_] => one,
        [Device::Cpu, ..] => format!("{one} × {}", devices.len()),
        _ => {
            let names: Vec<String> = devices.iter().map(|d| device_label(*d, backend)).collect();
            names.join(", ")
        }
    }
}

/// ", replicas 0–1 of 4 (node rank 0 of 2), 4 samples each" where there are several.
fn replicas_label(t: &Topology, batch: usize) -> String {
    let world = t.world();
    if world == 1 {
        return String::new();
    }
    let first = t.node_rank * t.per_node;
    let last = first + t.per_node - 1;
    let mine = match first == last {
        true => format!("replica {first}"),
        false => format!("replicas {first}–{last}"),
    };
    let node = match t.nodes {
        1 => String::new(),
        n => format!(" (node rank {} of {n})", t.node_rank),
    };
    let each = match batch % world {
        0 => format!("{} samples each", batch / world),
        _ => format!("{}–{} samples each", batch / world, batch / world + 1),
    };
    format!(", {mine} of {world}{node}, {each}")
}

/// The checkpoint a resume goes on from (the newest intact one, found once, so that its
/// files are verified and a fallback is said once), refused where the run has reached the
/// resume's `steps` already: before the resume records its options, which the next resume would
/// start from. With `epochs`, the run checks once the data says how many steps that is.
fn resumable_checkpoint(run: &Path, steps: Option<u64>) -> Result<PathBuf, Refusal> {
    let ck = checkpoint::newest_intact(run)
        .map_err(Refusal::Io)?
        .ok_or_else(|| {
            Refusal::Io(format!(
                "{} has no checkpoint to resume from",
                run.display()
            ))
        })?;
    let at = checkpoint::read_state(&ck).map_err(Refusal::Io)?.step;
    match steps {
        Some(end) if at >= end => Err(Refusal::Io(already_there(at, end))),
        _ => Ok(ck),
    }
}

/// Makes `runs/<spec name>-<unix seconds>`, with a suffix if that exists already. The folder is
/// created exclusively, so two runs started in the same second get two folders.
fn new_default_run_dir(spec_name: &str) -> Result<PathBuf, String> {
    let stem = Path::new(spec_name)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let runs = PathBuf::from("runs");
    std::fs::create_dir_all(&runs).map_err(|e| format!("cannot create {}: {e}", runs.display()))?;
    for n in 0.. {
        let name = match n {
            0 => format!("{stem}-{secs}"),
            n => format!("{stem}-{secs}-{n}"),
        };
        let dir = runs.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    unreachable!("the loop returns")
}

struct EvalJob<'a> {
    compiled: &'a Compiled,
    options: &'a TrainOptions,
    spec_dir: &'a Path,
    checkpoint: &'a Path,
    batches: usize,
}

impl OnBackend for EvalJob<'_> {
    type Output = Result<(f64, Option<f64>), String>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let device = first(devices);
        // Evaluation needs no gradients: the backend without autodiff.
        let (c, o) = (self.compiled, self.options);
        let ck = checkpoint::latest(self.checkpoint)?
            .ok_or_else(|| format!("{} holds no checkpoint", self.checkpoint.display()))?;
        let fresh = crate::lower::lower::<B::InnerBackend>(&c.ir, o.seed, &device);
        let model = checkpoint::load_weights(&ck, fresh)?
            .with_compute(compute_dtype::<B::InnerBackend>(o.dtype));
        let data_spec = o
            .data
            .as_ref()
            .ok_or("the spec has no `data`; pass --set data=...")?;
        let data = data::load(data_spec, self.spec_dir)?;
        run::check_data(&data, c)?;
        let seq = c.ir.model.tokens;
        Ok(run::evaluate(&model, &data, o, seq, &device, self.batches))
    }

    /// One model on one device.
    fn alone(&self) -> bool {
        true
    }
}

/// Validation loss (and accuracy, for images) of a checkpoint on the spec's validation data:
/// the first `batches` batches, or all of it.
pub fn eval_checkpoint(
    c: &Compiled,
    options: &TrainOptions,
    spec_dir: &Path,
    checkpoint: &Path,
    backend: CpuBackend,
    batches: Option<usize>,
) -> Result<(f64, Option<f64>), Refusal> {
    let device = options.device();
    usable(device)?;
    precision_usable(options, backend)?;
    fits_in_memory(c, Need::Eval, device)?;
    let job = EvalJob {
        compiled: c,
        options,
        spec_dir,
        checkpoint,
        batches: batches.unwrap_or(usize::MAX),
    };
    dispatch(&[device], backend, job)?.map_err(Refusal::Io)
}

struct BenchJob<'a> {
    compiled: &'a Compiled,
    name: &'a str,
    train: &'a TrainOptions,
    bench: &'a BenchOptions,
}

impl OnBackend for BenchJob<'_> {
    type Output = BenchResult;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> BenchResult {
        bench::<B>(
            self.compiled,
            self.name,
            self.train,
            self.bench,
            first(devices),
        )
    }

    /// One model on one device.
    fn alone(&self) -> bool {
        true
    }
}

/// Refuses a bench of no steps, or a side of no samples.
fn steps_and_batches<const N: usize>(options: [&BenchOptions; N]) -> Result<(), Refusal> {
    match options.iter().any(|o| o.steps == 0 || o.batch == 0) {
        true => Err(Refusal::Io("--steps and --batch must be at least 1".into())),
        false => Ok(()),
    }
}

/// Times training steps of a spec on synthetic batches (`laxc bench`).
pub fn bench_spec(
    c: &Compiled,
    name: &str,
    train: &TrainOptions,
    bench_options: &BenchOptions,
    backend: CpuBackend,
) -> Result<BenchResult, Refusal> {
    steps_and_batches([bench_options])?;
    let device = train.device();
    usable(device)?;
    precision_usable(train, backend)?;
    let need = Need::Train {
        batch: bench_options.batch,
        replicas: 1,
    };
    fits_in_memory(c, need, device)?;
    let job = BenchJob {
        compiled: c,
        name,
        train,
        bench: bench_options,
    };
    note_gpu_compilation(&[device]);
    let mut result = dispatch(&[device], backend, job)?;
    result.implementation = format!("laxc ({})", device_label(device, backend));
    Ok(result)
}

struct PairJob<'a>([Side<'a>; 2]);

impl OnBackend for PairJob<'_> {
    type Output = PairResult;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> PairResult {
        bench_pair::<B>(self.0, first(devices))
    }

    /// Two models on one device, one after the other.
    fn alone(&self) -> bool {
        true
    }
}

/// Times two specs' training steps in alternation in one process (`laxc bench SPEC --against
/// OTHER`): both on the first side's device, each at its own batch, with the same number of
/// steps. Both must fit in memory together.
pub fn bench_pair_spec(sides: [Side<'_>; 2], backend: CpuBackend) -> Result<PairResult, Refusal> {
    let [spec, against] = &sides;
    steps_and_batches([spec.bench, against.bench])?;
    if spec.bench.products {
        return Err(Refusal::Io(
            "--products times one spec's products: run it without --against".into(),
        ));
    }
    let device = spec.train.device();
    usable(device)?;
    for side in &sides {
        precision_usable(side.train, backend)?;
    }
    fits_together(&sides, device)?;
    note_gpu_compilation(&[device]);
    let mut result = dispatch(&[device], backend, PairJob(sides))?;
    let label = format!("laxc ({})", device_label(device, backend));
    result.spec.implementation = label.clone();
    result.against.implementation = label;
    Ok(result)
}

/// Refuses two specs whose training states, at their batches, do not fit in memory side by
/// side: each alone ([`fits_in_memory`]), then the two estimates added, by the same rule.
fn fits_together(sides: &[Side<'_>; 2], device: Device) -> Result<(), Refusal> {
    for side in sides {
        let need = Need::Train {
            batch: side.bench.batch,
            replicas: 1,
        };
        fits_in_memory(side.compiled, need, device)?;
    }
    let need = |s: &Side<'_>| train_bytes(&s.compiled.report().memory, s.bench.batch);
    let both = need(&sides[0]) + need(&sides[1]);
    let gib = |b: u128| b as f64 / (1u64 << 30) as f64;
    match short_of(both).filter(|_| device == Device::Cpu) {
        Some(free) => Err(Refusal::Spec(format!(
            "the two specs need about {:.2} GiB together (laxc check's estimates at their \
             batches), but only {:.2} GiB is free; time them apart, or at a lower --batch",
            gib(both),
            gib(free)
        ))),
        _ => Ok(()),
    }
}

/// Where `laxc generate` takes its model's weights from.
pub enum WeightsFrom<'a> {
    /// A run folder or checkpoint folder of this spec.
    Checkpoint(&'a Path),
    /// A pretrained file (GGUF, HuggingFace directory, a dense laxc `model.safetensors`): the
    /// dense spec's weights, or a LoRA spec's base.
    Base(&'a Path),
    /// The base the spec's LoRA sites name.
    SpecBase,
}

/// Everything one generation needs once the prompt is token ids.
pub struct GenerateRequest<'a> {
    pub compiled: &'a Compiled,
    pub device: Device,
    pub backend: CpuBackend,
    pub spec_dir: &'a Path,
    pub weights: WeightsFrom<'a>,
    /// A PEFT adapter for the spec's LoRA sites, loaded over the weights.
    pub adapter: Option<&'a Path>,
    /// One generation per prompt, from one loaded model.
    pub prompts: &'a [Vec<u32>],
    pub sampling: &'a crate::generate::Sampling,
    pub is_stop: &'a (dyn Fn(u32) -> bool + Sync),
    /// Called with the prompt's index and each token as it is chosen (streaming).
    pub on_token: &'a mut (dyn FnMut(usize, u32) + Send),
}

struct GenerateJob<'a>(GenerateRequest<'a>);

impl OnBackend for GenerateJob<'_> {
    type Output = Result<Vec<crate::generate::Stats>, String>;
    fn run<B: AutodiffBackend>(self, devices: Vec<B::Device>) -> Self::Output {
        let device = first(devices);
        // Generation needs no gradients: the backend without autodiff.
        let r = self.0;
        let spec = &r.compiled.spec;
        let fresh = crate::lower::lower::<B::InnerBackend>(&r.compiled.ir, 0, &device);
        let lora_base = crate::lower::base::base_file(spec)?;
        let model = match r.weights {
            WeightsFrom::Checkpoint(run) => {
                let ck = checkpoint::latest(run)?
                    .ok_or_else(|| format!("{} holds no checkpoint", run.display()))?;
                checkpoint::load_weights(&ck, fresh)?
            }
            WeightsFrom::Base(file) if lora_base.is_some() => {
                crate::lower::base::load_lora_base(fresh, spec, file, &device)?
            }
            WeightsFrom::Base(file) => crate::lower::base::load_dense(fresh, file, &device)?,
            WeightsFrom::SpecBase => {
                let base = lora_base.ok_or(
                    "the spec names no base and no --checkpoint or --base was given: its \
                     weights would be random",
                )?;
                let file = data::locate(&base, r.spec_dir);
                crate::lower::base::load_lora_base(fresh, spec, &file, &device)?
            }
        };
        let model = match r.adapter {
            Some(dir) => crate::export::load_peft(r.compiled, model, dir, &device)?,
            None => model,
        };
        let mut stats = Vec::with_capacity(r.prompts.len());
        for (i, prompt) in r.prompts.iter().enumerate() {
            let on_token = |t| (r.on_token)(i, t);
            stats.push(crate::generate::generate(
                &model, prompt, r.sampling, r.is_stop, on_token, &device,
            )?);
        }
        Ok(stats)
    }

    /// One model on one device.
    fn alone(&self) -> bool {
        true
    }
}

/// Generates text from a language model (`laxc generate`), after the device and memory checks.
pub fn generate_text(r: GenerateRequest) -> Result<Vec<crate::generate::Stats>, Refusal> {
    usable(r.device)?;
    fits_in_memory(r.compiled, Need::Eval, r.device)?;
    if r.compiled.ir.model.def().input != crate::family::Input::Tokens {
        return Err(Refusal::Io(format!(
            "{} is an image classifier: there is no text to generate",
            r.compiled.ir.model.family.name()
        )));
    }
    let (device, backend) = (r.device, r.backend);
    dispatch(&[device], backend, GenerateJob(r))?.map_err(Refusal::Io)
}
