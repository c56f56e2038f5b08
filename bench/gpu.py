"""GPU figures in one JSON file: training runs with their loss curves, and `laxc bench` of the
paper's LLaMA-60M / 130M / 350M full, SVD and SVD+LaX specs, each with tokens/s, model FLOPs
utilization (the report's training FLOPs over the GPU's fp32 and TF32 peaks) and peak GPU memory.
Run through bench/gpu.sh, which builds laxc first.

--quick runs the tiny specs (the default spec and tiny-llama dense / SVD / SVD+LaX) for a few
steps: what a software device such as llvmpipe can do in minutes, to test this script.
"""
import argparse
import datetime
import json
import os
import shutil
import subprocess
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


class Failed(Exception):
    """A laxc command that failed or ran out of time: recorded in the JSON, the others go on."""


def run(cmd, timeout):
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise Failed(f"{' '.join(cmd)}: still running after {timeout} s, stopped")
    if done.returncode:
        raise Failed(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def train(laxc, device, spec, steps, dtype, workdir, timeout):
    out = os.path.join(workdir, f"{os.path.basename(spec)[:-4]}-{dtype}")
    cmd = [laxc, "train", spec, "--plain", "--device", device, "--format", "json", "--out", out,
           "--set", f"steps={steps}", "--set", f"warmup={max(1, steps // 10)}", "--set", f"dtype={dtype}",
           "--set", f"eval_every={steps}", "--set", "log_every=1", "--set", f"data={BROWN}"]
    with GpuMemory(device) as mem:
        summary = json.loads(run(cmd, timeout))
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    curve = [[r["step"], r["loss"]] for r in records if "loss" in r]
    # The first step's end, from the start: on a GPU mostly the compilation of its kernels.
    first = next((r["elapsed_s"] for r in records if r.get("step") == 1 and "elapsed_s" in r), None)
    return {"spec": spec, "dtype": dtype, "steps": summary["steps"], "tokens_per_s": summary["items_per_second"],
            "seconds": summary["seconds"], "val_loss": summary["val_loss"],
            "first_step_s": first, "peak_gpu_mib": mem.peak, "loss_curve": curve}


def bench(laxc, device, spec, steps, warmup, peaks, batch, timeout):
    cmd = [laxc, "bench", spec, "--device", device, "--format", "json", "--steps", str(steps),
           "--warmup", str(warmup)] + (["--batch", str(batch)] if batch else [])
    with GpuMemory(device) as mem:
        r = json.loads(run(cmd, timeout))
    achieved = r["gflops_per_second"] * 1e9
    mfu = {f"mfu_{kind}": achieved / (peak * 1e12) if peak else None
           for kind, peak in zip(("fp32", "tf32"), peaks)}
    return {"spec": spec, "params": r["params"], "batch": r["batch"],
            "unit": r["unit"], "per_s": r["items_per_second"],
            "median_step_s": r["median_step_seconds"], "warmup_step_s": r["warmup_step_seconds"],
            "gflops_per_s": r["gflops_per_second"], **mfu,
            "peak_gpu_mib": mem.peak, "peak_rss_mib": (r["peak_rss_bytes"] or 0) / 2**20,
            "final_loss": r["final_loss"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laxc", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's fp32 peak, TFLOP/s")
    ap.add_argument("--peak-tflops-tf32", type=float, help="its dense TF32 tensor-core peak")
    ap.add_argument("--batch", type=int, help="`laxc bench`'s batch (default: each spec's own)")
    ap.add_argument("--timeout-s", type=float, help="stop any one laxc command after this long")
    ap.add_argument("--deadline-s", type=float,
                    help="start no command after this long; the rest are recorded as skipped")
    ap.add_argument("--out", help="the JSON file (default bench/results/gpu-<date>.json)")
    a = ap.parse_args()
    started = time.monotonic()
    plan = QUICK if a.quick else FULL
    name = gpu_name(a.device)
    peaks = peak_tflops(name, a.peak_tflops, a.peak_tflops_tf32)
    out = a.out or os.path.join(ROOT, "bench", "results", f"gpu-{datetime.date.today()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": a.device,
              "adapter": name, "peak_tflops_fp32": peaks[0],
              "peak_tflops_tf32": peaks[1], "quick": a.quick, "bench_batch": a.batch,
              "train": [], "bench": []}

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
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")

    with tempfile.TemporaryDirectory() as work:
        for spec, steps, dtype in plan["train"]:
            record("train", {"spec": spec, "dtype": dtype},
                   lambda: train(a.laxc, a.device, spec, steps, dtype, work, a.timeout_s),
                   lambda r: f"trained {r['spec']} ({r['dtype']}): {r['tokens_per_s']:.0f} tokens/s")
    steps, warmup = plan["bench_steps"]
    for spec in plan["bench"]:
        def describe(r):
            mfu = " / ".join(f"{100 * r[k]:.1f}%" if r[k] is not None else "unknown peak"
                             for k in ("mfu_fp32", "mfu_tf32"))
            return f"bench {r['spec']}: {r['per_s']:.0f} {r['unit']}/s, MFU fp32 / tf32 {mfu}"
        record("bench", {"spec": spec},
               lambda: bench(a.laxc, a.device, spec, steps, warmup, peaks, a.batch, a.timeout_s),
               describe)
    print(f"wrote {out}")
    failed = [e["spec"] for part in ("train", "bench") for e in result[part] if "error" in e]
    if failed:
        raise SystemExit(f"{len(failed)} failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
