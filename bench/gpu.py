"""GPU figures in one JSON file: training runs with their loss curves, and `laxc bench` of the
paper's LLaMA-60M / 130M / 350M full, SVD and SVD+LaX specs, each with tokens/s, model FLOPs
utilization (the report's training FLOPs over the GPU's fp32 and TF32 peaks) and peak GPU memory.
Run through bench/gpu.sh, which builds laxc first.

On CUDA the kernels are compiled first, for every item at once (--compile-jobs processes): the
driver compiles each kernel's PTX on one thread of the process that asks, minutes for one spec on
a fresh machine, so the items' warm-up runs share the machine's cores, and the measured runs that
follow, one at a time, load what they compiled from cubecl's kernel cache and the driver's cache
instead. Their autotune starts afresh, so no choice made while the GPU was shared is reused.
--kernel-cache DIR keeps both caches in DIR rather than in a temporary folder, so that a later run
on the same GPU and driver, on a machine that keeps DIR, compiles only the kernels that changed
(about 1 GB for the full plan: too much to carry from one lease to the next).

--quick runs the tiny specs (the default spec and tiny-llama dense / SVD / SVD+LaX) for a few
steps: what a software device such as llvmpipe can do in minutes, to test this script.
"""
import argparse
import datetime
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BROWN = (f'text("{ROOT}/data/brown-excerpt-train.txt", '
         f'valid = "{ROOT}/data/brown-excerpt-valid.txt")')

# Dense peaks (TFLOP/s, no sparsity) from the vendors' data sheets, by a part of the name
# nvidia-smi prints, first match wins: fp32 on the CUDA cores, and TF32 on the tensor cores. laxc
# keeps f32 tensors, but Burn 0.21's CUDA matmul (cubek-matmul) stages f32 operands as TF32
# whenever it picks a tensor-core kernel, so a product may run at either rate: both MFUs are given.
# --peak-tflops and --peak-tflops-tf32 override.
PEAK_TFLOPS = [  # (name part, fp32, tf32 or None)
    ("H200", 66.9, 494.7), ("H100 80GB HBM3", 66.9, 494.7), ("H100 SXM", 66.9, 494.7),
    ("H100 NVL", 60.0, 417.5), ("H100", 51.2, 378.0), ("A100", 19.5, 156.0),
    ("L40S", 91.6, 183.0), ("L4", 30.3, 60.0), ("A10", 31.2, 62.5), ("RTX 4090", 82.6, 82.6),
    ("RTX 3090", 35.6, 35.6), ("V100", 15.7, None), ("T4", 8.1, None),
]

FULL = {
    # The 60M spec twice: f32, and bf16 activations and matmuls (f32 weights; CUDA only).
    "train": [("specs/tiny-llama-svd-lax.lax", 300, "f32"),
              ("specs/paper/llama-60m-svd-r128-lax-identity.lax", 300, "f32"),
              ("specs/paper/llama-60m-svd-r128-lax-identity.lax", 300, "bf16")],
    "bench": [f"specs/paper/llama-{size}-{kind}.lax" for size, r in (("60m", 128), ("130m", 256), ("350m", 256))
              for kind in ("full", f"svd-r{r}", f"svd-r{r}-lax-identity")],
    "bench_steps": (20, 3),
}
QUICK = {
    "train": [("specs/tiny-llama-svd-lax.lax", 10, "f32")],
    "bench": ["specs/tiny-llama-dense.lax", "specs/tiny-llama-svd.lax", "specs/tiny-llama-svd-lax.lax"],
    "bench_steps": (2, 1),
}


def gpu_name(device):
    if device.startswith("cuda") and shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i",
                              device.partition(":")[2] or "0"], capture_output=True, text=True)
        return out.stdout.strip() or None
    if shutil.which("vulkaninfo"):
        out = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True)
        for line in out.stdout.splitlines():
            if "deviceName" in line:
                return line.split("=", 1)[1].strip()
    return None


def peak_tflops(name, fp32, tf32):
    """The (fp32, tf32) peaks: given ones first, else the table's row for this name."""
    row = next((r for r in PEAK_TFLOPS if name and r[0] in name), (None, None, None))
    return fp32 or row[1], tf32 or row[2]


class GpuMemory:
    """The most GPU memory used while a command runs, sampled from nvidia-smi (CUDA only)."""

    def __init__(self, device):
        self.index = device.partition(":")[2] or "0"
        self.on = device.startswith("cuda") and shutil.which("nvidia-smi") is not None
        self.peak = None

    def _used(self):
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
                              "-i", self.index], capture_output=True, text=True)
        return int(out.stdout.strip() or 0)

    def __enter__(self):
        if self.on:
            self.base, self.peak, self.running = self._used(), 0, True
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self._used() - self.base)
            time.sleep(0.2)

    def __exit__(self, *exc):
        if self.on:
            self.running = False
            self.thread.join()


class Workspace:
    """The folder laxc runs in: cubecl reads `cubecl.toml` from the working directory, which here
    keeps compiled kernels in `kernels/` (of this folder, or of --kernel-cache's, whose sizes then
    include what earlier runs left) and autotune results in a folder named by `tune()`; the
    environment points the CUDA driver's own cache of compiled PTX at `driver/` beside `kernels/`,
    raised to its 4 GiB maximum so that no kernel of the plan is evicted. (On wgpu cubecl keeps compiled kernels only
    with its SPIR-V compiler, which Burn's `wgpu` feature does not use: there only autotune's
    folder fills.)"""

    def __init__(self, path, kernel_cache=None, persistent_memory=None):
        self.path = path
        self.persistent_memory = persistent_memory
        caches = os.path.abspath(kernel_cache) if kernel_cache else path
        self.kernels = os.path.join(caches, "kernels")
        self.env = dict(os.environ, CUDA_CACHE_PATH=os.path.join(caches, "driver"),
                        CUDA_CACHE_MAXSIZE=str(4 << 30))

    def tune(self, name):
        # A JSON string is a TOML basic string, quotes and backslashes escaped alike.
        kernels, tuned = json.dumps(self.kernels), json.dumps(os.path.join(self.path, name))
        with open(os.path.join(self.path, "cubecl.toml"), "w") as f:
            f.write(f"[compilation]\ncache = {{ file = {kernels} }}\n\n[autotune]\ncache = {{ file = {tuned} }}\n")
            if self.persistent_memory:
                f.write(f"\n[memory]\npersistent_memory = {json.dumps(self.persistent_memory)}\n")

    def cache_mib(self, tuned):
        """The size of each cache in MiB: cubecl's compiled kernels, the driver's, and the
        autotune results in `tuned` (where files appear only if cubecl read `cubecl.toml`)."""
        def size(folder):
            return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(folder) for f in files)
        return {"kernels": size(self.kernels) / 2**20,
                "driver": size(self.env["CUDA_CACHE_PATH"]) / 2**20,
                "autotune": size(os.path.join(self.path, tuned)) / 2**20}


class Failed(Exception):
    """A laxc command that failed or ran out of time: recorded in the JSON, the others go on."""


def run(cmd, ws, timeout):
    try:
        done = subprocess.run(cmd, cwd=ws.path, env=ws.env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"{' '.join(cmd)}: still running after {timeout} s, stopped")
    if done.returncode:
        raise Failed(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def train_cmd(laxc, device, spec, steps, dtype, out):
    return [laxc, "train", os.path.join(ROOT, spec), "--plain", "--device", device, "--format", "json",
            "--out", out, "--set", f"steps={steps}", "--set", f"warmup={max(1, steps // 10)}",
            "--set", f"dtype={dtype}", "--set", f"eval_every={steps}", "--set", "log_every=1",
            "--set", f"data={BROWN}"]


def bench_cmd(laxc, device, spec, steps, warmup, batch):
    return ([laxc, "bench", os.path.join(ROOT, spec), "--device", device, "--format", "json",
             "--steps", str(steps), "--warmup", str(warmup)] + (["--batch", str(batch)] if batch else []))


def train(laxc, device, spec, steps, dtype, ws, timeout):
    out = os.path.join(ws.path, f"{os.path.basename(spec)[:-4]}-{dtype}")
    with GpuMemory(device) as mem:
        summary = json.loads(run(train_cmd(laxc, device, spec, steps, dtype, out), ws, timeout))
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    curve = [[r["step"], r["loss"]] for r in records if "loss" in r]
    # The first step's end, from the start: on a GPU mostly the compilation of its kernels.
    first = next((r["elapsed_s"] for r in records if r.get("step") == 1 and "elapsed_s" in r), None)
    return {"spec": spec, "dtype": dtype, "steps": summary["steps"], "tokens_per_s": summary["items_per_second"],
            "seconds": summary["seconds"], "val_loss": summary["val_loss"],
            "first_step_s": first, "peak_gpu_mib": mem.peak, "loss_curve": curve}


def twin(laxc, device, spec, steps, warmup, laxc_run, ws, timeout):
    """The same spec's PyTorch twin (bench/twin.py): the same steps at the batch and dropout rate
    `laxc bench` reported."""
    cmd = [sys.executable, os.path.join(ROOT, "bench", "twin.py"), os.path.join(ROOT, spec),
           "--laxc", laxc, "--device", device, "--steps", str(steps), "--warmup", str(warmup),
           "--batch", str(laxc_run["batch"]), "--dropout", str(laxc_run["dropout"])]
    try:
        lines = run(cmd, ws, timeout).strip().splitlines()
        if not lines:
            raise Failed(f"{' '.join(cmd)} printed nothing")
        r = json.loads(lines[-1])
    except Failed as failure:
        print(f"FAILED the twin of {spec}: {failure}", flush=True)
        return {"error": str(failure)}
    return {"implementation": r["implementation"], "per_s": r["items_per_second"],
            "median_step_s": r["median_step_seconds"], "peak_gpu_mib": (r["peak_gpu_bytes"] or 0) / 2**20,
            "final_loss": r["final_loss"]}


def bench(laxc, a, spec, steps, warmup, peaks, ws):
    """`laxc bench` of one spec (the plan's steps, `--batch` or the spec's), and its twin's run
    when `--twin`: laxc's speed over PyTorch's (above 1: laxc faster) beside the twin's figures."""
    with GpuMemory(a.device) as mem:
        r = json.loads(run(bench_cmd(laxc, a.device, spec, steps, warmup, a.batch), ws, a.timeout_s))
    achieved = r["gflops_per_second"] * 1e9
    mfu = {f"mfu_{kind}": achieved / (peak * 1e12) if peak else None
           for kind, peak in zip(("fp32", "tf32"), peaks)}
    entry = {"spec": spec, "params": r["params"], "batch": r["batch"],
             "unit": r["unit"], "per_s": r["items_per_second"],
             "median_step_s": r["median_step_seconds"], "warmup_step_s": r["warmup_step_seconds"],
             "median_phase_s": r["median_phase_seconds"], "gflops_per_s": r["gflops_per_second"], **mfu,
             "peak_gpu_mib": mem.peak, "peak_rss_mib": (r["peak_rss_bytes"] or 0) / 2**20,
             "final_loss": r["final_loss"]}
    if a.twin:
        reference = twin(laxc, a.device, spec, steps, warmup, r, ws, a.timeout_s)
        entry["pytorch"] = reference
        entry["speed_vs_pytorch"] = (reference["median_step_s"] / r["median_step_seconds"]
                                     if "median_step_s" in reference else None)
    return entry


def compile_first(items, ws, jobs, timeout):
    """Runs each item's warm-up command (label, command), `jobs` at a time, so that the kernels of
    the whole plan are compiled in parallel processes and cached; stops any still running after
    `timeout` seconds. Returns what the JSON records: each item's time or failure."""
    ws.tune("autotune-compile")
    pending, running, done = list(enumerate(items)), {}, []
    started = time.monotonic()
    try:
        while pending or running:
            late = time.monotonic() - started > timeout
            while pending and len(running) < jobs and not late:
                i, (label, cmd) = pending.pop(0)
                log = open(os.path.join(ws.path, f"compile-{i}.log"), "w+")
                proc = subprocess.Popen(cmd, cwd=ws.path, env=ws.env, stdout=subprocess.DEVNULL, stderr=log)
                running[proc] = (label, time.monotonic(), log)
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None or late]:
                done.append(reap(proc, *running.pop(proc), timeout))
            if late:
                for _, (label, _) in pending:
                    done.append(dict(label, skipped=f"not started within {timeout:g} s"))
                    print(f"not compiled {label}: past the {timeout:g} s limit", flush=True)
                pending = []
    finally:  # an exception or Ctrl-C leaves no warm-up run on the GPU
        for proc in running:
            proc.kill()
            proc.wait()
    return {"jobs": jobs, "seconds": round(time.monotonic() - started, 1),
            "cache_mib": ws.cache_mib("autotune-compile"), "items": done}


def reap(proc, label, began, log, timeout):
    """A warm-up run's entry: its time, and why it ended if not by itself (stopped, or failed with
    the end of its log); stops it if it is still running."""
    entry = dict(label, seconds=round(time.monotonic() - began, 1))
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        entry["stopped"] = f"still compiling after {timeout:g} s"
    elif proc.returncode:
        log.seek(0)
        entry["error"] = log.read()[-2000:]
    log.close()
    print(f"compiled {entry}", flush=True)
    return entry


def select(plan, only, no_train=False):
    """The plan's items that `--only` names (all of them without it), without its training runs
    if `no_train`; refuses a selection of none."""
    if no_train:
        plan = dict(plan, train=[])
    if not only:
        return plan
    def named(label):
        return any(text in label for text in only)
    chosen = dict(plan, bench=[spec for spec in plan["bench"] if named(spec)],
                  train=[item for item in plan["train"] if named(f"{item[0]} {item[2]}")])
    if not chosen["bench"] and not chosen["train"]:
        raise SystemExit(f"bench/gpu.py: --only {' '.join(only)} names no item of the plan")
    return chosen


def parse_args():
    """The command line, with the defaults that depend on the device resolved."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laxc", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's fp32 peak, TFLOP/s")
    ap.add_argument("--peak-tflops-tf32", type=float, help="its dense TF32 tensor-core peak")
    ap.add_argument("--batch", type=int, help="`laxc bench`'s batch (default: each spec's own)")
    ap.add_argument("--timeout-s", type=float, help="stop any one laxc command after this long")
    ap.add_argument("--deadline-s", type=float,
                    help="start no item after this long (the last may run on for --timeout-s, twice "
                         "with its twin); the rest are recorded as skipped")
    ap.add_argument("--compile-first", action=argparse.BooleanOptionalAction,
                    help="compile every item's kernels at once first (default: on CUDA)")
    ap.add_argument("--compile-jobs", type=int,
                    help="warm-up processes at a time (default: one per item, at most the CPUs)")
    ap.add_argument("--compile-timeout-s", type=float,
                    help="stop the compile phase after this long (default 900 s, or half of --deadline-s)")
    ap.add_argument("--kernel-cache", metavar="DIR",
                    help="keep the compiled kernels (cubecl's and the driver's caches) in DIR, and "
                         "reuse what an earlier run left there (default: a temporary folder)")
    ap.add_argument("--twin", action=argparse.BooleanOptionalAction,
                    help="time each bench spec's PyTorch twin too (default: on CUDA, where torch is installed)")
    ap.add_argument("--only", nargs="+", metavar="TEXT",
                    help="run only the items whose spec path (a training run's: followed by a space "
                         "and its dtype) contains one of these, e.g. 350m-svd-r256-lax 'lax-identity.lax bf16'")
    ap.add_argument("--no-train", action="store_true",
                    help="run the plan's benches only, none of its training runs")
    ap.add_argument("--persistent-memory", choices=["enabled", "disabled", "enforced"],
                    help="cubecl's `[memory] persistent_memory` for every laxc run (default: cubecl's, "
                         "enabled); enforced keeps every buffer in the pool of exact sizes, whose "
                         "reservation does not walk the live buffers (BENCHMARKS.md, attempt 93)")
    ap.add_argument("--out", help="the JSON file (default bench/results/gpu-<date>.json)")
    a = ap.parse_args()
    if a.compile_first is None:
        a.compile_first = a.device.startswith("cuda")
    if a.compile_timeout_s is None:
        a.compile_timeout_s = 900 if a.deadline_s is None else a.deadline_s / 2
    if a.twin is None:
        a.twin = a.device.startswith("cuda") and importlib.util.find_spec("torch") is not None
    return a


def warm_up(plan, laxc, a, ws):
    """The compile phase: each item's own command, shortened (the same shapes, so the same
    kernels), all at once; returns what the JSON records of it."""
    items = ([({"spec": spec}, bench_cmd(laxc, a.device, spec, 1, 1, a.batch)) for spec in plan["bench"]]
             + [({"spec": spec, "dtype": dtype},
                 train_cmd(laxc, a.device, spec, 2, dtype, os.path.join(ws.path, f"warm-{i}")))
                for i, (spec, _, dtype) in enumerate(plan["train"])])
    jobs = a.compile_jobs or min(len(items), os.cpu_count() or 1)
    phase = compile_first(items, ws, jobs, a.compile_timeout_s)
    cache = phase["cache_mib"]
    print(f"compile phase: {phase['seconds']} s, caches: kernels {cache['kernels']:.1f} MiB, "
          f"driver {cache['driver']:.1f} MiB, autotune {cache['autotune']:.2f} MiB", flush=True)
    return phase


def main():
    a = parse_args()
    laxc = os.path.abspath(a.laxc)
    started = time.monotonic()
    plan = select(QUICK if a.quick else FULL, a.only, a.no_train)
    name = gpu_name(a.device)
    peaks = peak_tflops(name, a.peak_tflops, a.peak_tflops_tf32)
    out = a.out or os.path.join(ROOT, "bench", "results", f"gpu-{datetime.date.today()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": a.device,
              "adapter": name, "peak_tflops_fp32": peaks[0],
              "peak_tflops_tf32": peaks[1], "quick": a.quick, "bench_batch": a.batch,
              "bench_steps": plan["bench_steps"][0], "bench_warmup": plan["bench_steps"][1],
              "only": a.only, "persistent_memory": a.persistent_memory, "train": [], "bench": []}

    def save():
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")

    def record(part, what, measure, describe):
        """Runs one item unless past the deadline; a failure is recorded and the rest go on. The
        file is rewritten after each item, so a run cut short keeps what it measured."""
        if a.deadline_s is not None and time.monotonic() - started > a.deadline_s:
            entry = dict(what, skipped=f"past the {a.deadline_s:.0f} s deadline")
        else:
            try:
                entry = measure()
                print(describe(entry), flush=True)
            except Failed as failure:
                entry = dict(what, error=str(failure))
                print(f"FAILED {what}: {failure}", flush=True)
        result[part].append(entry)
        save()

    def describe_bench(r):
        mfu = " / ".join(f"{100 * r[k]:.1f}%" if r[k] is not None else "unknown peak"
                         for k in ("mfu_fp32", "mfu_tf32"))
        vs = f", {r['speed_vs_pytorch']:.2f}x PyTorch" if r.get("speed_vs_pytorch") else ""
        return f"bench {r['spec']}: {r['per_s']:.0f} {r['unit']}/s, MFU fp32 / tf32 {mfu}{vs}"

    steps, warmup = plan["bench_steps"]
    with tempfile.TemporaryDirectory() as work:
        ws = Workspace(work, a.kernel_cache, a.persistent_memory)
        if a.compile_first:
            result["compile"] = warm_up(plan, laxc, a, ws)
            save()
        ws.tune("autotune")
        for spec in plan["bench"]:
            record("bench", {"spec": spec},
                   lambda: bench(laxc, a, spec, steps, warmup, peaks, ws),
                   describe_bench)
        for spec, train_steps, dtype in plan["train"]:
            record("train", {"spec": spec, "dtype": dtype},
                   lambda: train(laxc, a.device, spec, train_steps, dtype, ws, a.timeout_s),
                   lambda r: f"trained {r['spec']} ({r['dtype']}): {r['tokens_per_s']:.0f} tokens/s")
    print(f"wrote {out}")
    # A compile-phase failure (out of GPU memory with every item at once, say) costs only time:
    # the measured run of the item decides.
    failed = [e["spec"] for part in ("train", "bench") for e in result[part] if "error" in e]
    failed += [f"the twin of {e['spec']}" for e in result["bench"] if "error" in e.get("pytorch", {})]
    if failed:
        raise SystemExit(f"{len(failed)} failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
