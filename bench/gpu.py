"""GPU figures in one JSON file: training runs with their loss curves, and `laxc bench` of the
paper's LLaMA-60M / 130M / 350M full, SVD and SVD+LaX specs, each with tokens/s, model FLOPs
utilization (the report's training FLOPs over the GPU's fp32 peak) and peak GPU memory.
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

# Dense fp32 peaks (TFLOP/s, no tensor cores: laxc trains in fp32), from the vendors' data
# sheets, by a part of the name nvidia-smi prints. --peak-tflops overrides.
FP32_PEAK_TFLOPS = [
    ("H200", 66.9), ("H100 SXM", 66.9), ("H100 NVL", 60.0), ("H100 PCIe", 51.2), ("H100", 51.2),
    ("A100", 19.5), ("L40S", 91.6), ("L4", 30.3), ("A10", 31.2), ("RTX 4090", 82.6),
    ("RTX 3090", 35.6), ("V100", 15.7), ("T4", 8.1),
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


def peak_tflops(name, given):
    if given:
        return given
    for part, tflops in FP32_PEAK_TFLOPS:
        if name and part in name:
            return tflops
    return None


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


def run(cmd):
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def train(laxc, device, spec, steps, dtype, workdir):
    out = os.path.join(workdir, f"{os.path.basename(spec)[:-4]}-{dtype}")
    cmd = [laxc, "train", spec, "--plain", "--device", device, "--format", "json", "--out", out,
           "--set", f"steps={steps}", "--set", f"warmup={max(1, steps // 10)}", "--set", f"dtype={dtype}",
           "--set", f"eval_every={steps}", "--set", "log_every=1", "--set", f"data={BROWN}"]
    with GpuMemory(device) as mem:
        summary = json.loads(run(cmd))
    curve = [[r["step"], r["loss"]] for r in map(json.loads, open(os.path.join(out, "metrics.jsonl")))
             if "loss" in r]
    return {"spec": spec, "dtype": dtype, "steps": summary["steps"], "tokens_per_s": summary["items_per_second"],
            "seconds": summary["seconds"], "val_loss": summary["val_loss"],
            "peak_gpu_mib": mem.peak, "loss_curve": curve}


def bench(laxc, device, spec, steps, warmup, peak):
    cmd = [laxc, "bench", spec, "--device", device, "--format", "json", "--steps", str(steps),
           "--warmup", str(warmup)]
    with GpuMemory(device) as mem:
        r = json.loads(run(cmd))
    achieved = r["gflops_per_second"] * 1e9
    return {"spec": spec, "params": r["params"], "batch": r["batch"],
            "unit": r["unit"], "per_s": r["items_per_second"],
            "median_step_s": r["median_step_seconds"], "gflops_per_s": r["gflops_per_second"],
            "mfu": achieved / (peak * 1e12) if peak else None,
            "peak_gpu_mib": mem.peak, "peak_rss_mib": (r["peak_rss_bytes"] or 0) / 2**20,
            "final_loss": r["final_loss"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laxc", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's fp32 peak, TFLOP/s")
    ap.add_argument("--out", help="the JSON file (default bench/results/gpu-<date>.json)")
    a = ap.parse_args()
    plan = QUICK if a.quick else FULL
    name = gpu_name(a.device)
    peak = peak_tflops(name, a.peak_tflops)
    result = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "device": a.device,
              "adapter": name, "peak_tflops_fp32": peak, "quick": a.quick,
              "train": [], "bench": []}
    with tempfile.TemporaryDirectory() as work:
        for spec, steps, dtype in plan["train"]:
            result["train"].append(train(a.laxc, a.device, spec, steps, dtype, work))
            print(f"trained {spec} ({dtype}): {result['train'][-1]['tokens_per_s']:.0f} tokens/s",
                  flush=True)
    steps, warmup = plan["bench_steps"]
    for spec in plan["bench"]:
        result["bench"].append(bench(a.laxc, a.device, spec, steps, warmup, peak))
        r = result["bench"][-1]
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "unknown peak"
        print(f"bench {spec}: {r['per_s']:.0f} {r['unit']}/s, MFU {mfu}", flush=True)
    out = a.out or os.path.join(ROOT, "bench", "results", f"gpu-{datetime.date.today()}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
