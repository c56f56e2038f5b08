#!/usr/bin/env python3
"""GPU kernels launched per training step, spec by spec, by kind: what a GPU step costs the host.

On an H100 the paper's LLaMA specs are host-bound (BENCHMARKS.md, "GPU": a 60M SVD step of
0.35 TFLOP takes 84 ms), so a step's time follows the number of kernels it launches more than its
FLOPs. Every cubecl back end runs the same kernel code (which kernels autotune and fusion pick
is the device's choice, so CUDA's counts may differ somewhat: not yet compared), so it can be
counted here, on the wgpu back end over a software Vulkan device (llvmpipe), with no GPU: cubecl
logs each kernel it runs
when its `cubecl.toml` asks (`[profiling.logger] level = "minimal"`). Each spec is run three
times in a folder of its own: once to tune (autotune runs kernels of its own, and keeps its
choices in the folder), then with `steps` and with `2 × steps` timed steps after the same
warm-up, which tune nothing; the difference of the last two, divided by `steps`, is a step's.

    cargo build --release --features wgpu
    python3 bench/kernels.py specs/bench/llama-svd.lax specs/bench/llama-svd-lax-identity.lax

Prints a Markdown table (kernels per step, and by kind for the kinds that differ between the
specs) and, with --json, writes the counts.

--time asks cubecl for each kernel's time as well (`level = "basic"`: cubecl then launches each
kernel alone, waits for it and times it with the device's events) and gives the milliseconds a step
by kind, the most first: the times of the longer run's last `steps` steps (not a difference of two
runs' times, which other work on the machine can skew either way). Each time then holds the kernel's
launch and the wait around it too (20-35 us a kernel on an H200: a fill of a few kilobytes showed 36
us), so a small kernel shows more than its work, and a kind whose launches cost the host more shows
it: what a step's launches cost, kind by kind, more than the GPU's own work. --kernel-cache DIR
reuses the kernels that bench/gpu.py's --kernel-cache compiled into DIR (cubecl's and the CUDA
driver's caches), so that a fresh GPU machine need not compile them again.
"""
import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kind(name):
    """A kernel's kind: its name, and for the plain element-wise kernels the op as well."""
    parts = name.strip().split(" | ")
    return parts[0] if len(parts) < 3 or parts[0].startswith("Matmul") else f"{parts[0]} {parts[1]}"


# Rust's Debug form of a Duration, as cubecl writes a profiled kernel's time: "1.5ms", "12.3µs".
DURATION = re.compile(r"([0-9.]+)(ns|µs|ms|s)$")
MILLISECONDS = {"ns": 1e-6, "µs": 1e-3, "ms": 1.0, "s": 1e3}


def parse(line):
    """(kind, milliseconds) of one line of cubecl's profiling log, None for other lines: minimal's
    `Executing NAME` has no time (0), basic's `| DURATION | NAME` has the kernel's."""
    if line.startswith("Executing "):
        return kind(line.removeprefix("Executing ")), 0.0
    if line.startswith("| "):
        duration, _, name = line[2:].partition(" | ")
        m = DURATION.match(duration.strip())
        if m and name:
            return kind(name), float(m.group(1)) * MILLISECONDS[m.group(2)]
    return None


def launched(laxc, device, spec, steps, warmup, batch, folder, timed, kernel_cache):
    """The kernels one `laxc bench` run launches, in order, as (kind, GPU milliseconds: zero
    unless `timed`), and the run's median step in seconds."""
    log = os.path.join(folder, "kernels.log")
    tuned = os.path.join(folder, "autotune")
    level = "basic" if timed else "minimal"
    compiled = (f'[compilation]\ncache = {{ file = {json.dumps(os.path.join(kernel_cache, "kernels"))} }}\n\n'
                if kernel_cache else "")
    with open(os.path.join(folder, "cubecl.toml"), "w") as f:  # JSON strings are TOML strings
        f.write(f'[profiling.logger]\nlevel = "{level}"\nfile = {json.dumps(log)}\nappend = false\n\n'
                f'{compiled}[autotune]\ncache = {{ file = {json.dumps(tuned)} }}\n')
    env = dict(os.environ)
    if kernel_cache:
        env.update(CUDA_CACHE_PATH=os.path.join(kernel_cache, "driver"), CUDA_CACHE_MAXSIZE=str(4 << 30))
    if os.path.exists(log):
        os.remove(log)
    cmd = [laxc, "bench", os.path.abspath(spec), "--device", device, "--steps", str(steps),
           "--warmup", str(warmup), "--batch", str(batch), "--format", "json"]
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    if not os.path.exists(log):
        sys.exit(f"{' '.join(cmd)} logged no kernels: is {laxc} built with --features {device}?")
    with open(log) as f:
        kernels = list(filter(None, map(parse, f)))
    return kernels, json.loads(done.stdout)["median_step_seconds"]


def per_step(laxc, device, spec, steps, warmup, batch, timed=False, kernel_cache=None):
    with tempfile.TemporaryDirectory() as folder:
        run = lambda n: launched(laxc, device, spec, n, warmup, batch, folder, timed, kernel_cache)
        run(1)  # autotune's run
        (once, _), (twice, step_s) = run(steps), run(2 * steps)
    once_n = collections.Counter(k for k, _ in once)
    twice_n = collections.Counter(k for k, _ in twice)
    by_kind = {k: (twice_n[k] - once_n[k]) / steps for k in twice_n | once_n if twice_n[k] != once_n[k]}
    row = {"spec": spec, "per_step": sum(by_kind.values()), "by_kind": by_kind}
    if timed:
        row.update(last_steps_ms(spec, twice, by_kind, steps), profiled_step_s=step_s)
    return row


def last_steps_ms(spec, kernels, by_kind, steps):
    """The GPU milliseconds a step by kind, from the last `steps` steps of one run: the run's
    last `steps × per step` kernels, which are those steps' when nothing runs after the last
    step, as checked here by their kinds. Not the difference of two runs' times, which timing
    noise between the runs (other work on a shared machine) can make any size or sign."""
    last = kernels[len(kernels) - round(steps * sum(by_kind.values())):]
    counted = collections.Counter(k for k, _ in last)
    if any(counted[k] != round(steps * n) for k, n in by_kind.items()):
        sys.exit(f"{spec}: the run's last {len(last)} kernels are not its last {steps} steps' "
                 f"(by kind {dict(counted)}, expected {by_kind} a step): did laxc launch some "
                 "after its steps?")
    ms = collections.Counter()
    for k, duration in last:
        ms[k] += duration / steps
    return {"gpu_ms_per_step": sum(ms.values()),
            "gpu_ms_by_kind": dict(sorted(ms.items(), key=lambda kv: -kv[1]))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--laxc", default=os.path.join(ROOT, "target", "release", "laxc"))
    ap.add_argument("--device", default="wgpu", help="wgpu, or cuda on a machine with one")
    ap.add_argument("--steps", type=int, default=3, help="timed steps of the shorter run")
    ap.add_argument("--warmup", type=int, default=6, help="untimed steps first (autotune's)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", help="write the counts here")
    ap.add_argument("--time", action="store_true", help="time each kernel on the GPU as well")
    ap.add_argument("--kernel-cache", metavar="DIR", help="bench/gpu.py's --kernel-cache folder to reuse")
    a = ap.parse_args()
    laxc = os.path.abspath(a.laxc)  # the runs start in folders of their own
    cache = os.path.abspath(a.kernel_cache) if a.kernel_cache else None
    rows = [per_step(laxc, a.device, spec, a.steps, a.warmup, a.batch, a.time, cache) for spec in a.specs]
    first = rows[0]["by_kind"]
    differ = sorted({k for r in rows for k, n in r["by_kind"].items() if n != first.get(k, 0)}
                    or set(first), key=lambda k: -max(r["by_kind"].get(k, 0) for r in rows))
    print("| spec | kernels / step | " + " | ".join(differ) + " |")
    print("|---|---:|" + "---:|" * len(differ))
    for r in rows:
        counts = " | ".join(f"{r['by_kind'].get(k, 0):g}" for k in differ)
        print(f"| {os.path.basename(r['spec'])} | {r['per_step']:g} | {counts} |")
    for r in rows if a.time else []:
        print(f"\n{os.path.basename(r['spec'])}: {r['gpu_ms_per_step']:.2f} GPU ms a step "
              f"(profiled step {1e3 * r['profiled_step_s']:.1f} ms), by kind:")
        for k, ms in list(r["gpu_ms_by_kind"].items())[:25]:
            print(f"  {ms:9.3f} ms  {r['by_kind'].get(k, 0):6g} x  {k}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": a.device, "batch": a.batch, "steps": a.steps, "warmup": a.warmup,
                       "timed": a.time, "specs": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
