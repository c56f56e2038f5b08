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
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kind(line):
    """A kernel's kind: its name, and for the plain element-wise kernels the op as well."""
    parts = line.removeprefix("Executing ").strip().split(" | ")
    return parts[0] if len(parts) < 3 or parts[0].startswith("Matmul") else f"{parts[0]} {parts[1]}"


def launched(laxc, device, spec, steps, warmup, batch, folder):
    """The kinds of the kernels one `laxc bench` run launches, counted."""
    log = os.path.join(folder, "kernels.log")
    tuned = os.path.join(folder, "autotune")
    with open(os.path.join(folder, "cubecl.toml"), "w") as f:  # JSON strings are TOML strings
        f.write(f'[profiling.logger]\nlevel = "minimal"\nfile = {json.dumps(log)}\nappend = false\n\n'
                f'[autotune]\ncache = {{ file = {json.dumps(tuned)} }}\n')
    if os.path.exists(log):
        os.remove(log)
    cmd = [laxc, "bench", os.path.abspath(spec), "--device", device, "--steps", str(steps),
           "--warmup", str(warmup), "--batch", str(batch), "--format", "json"]
    done = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    if not os.path.exists(log):
        sys.exit(f"{' '.join(cmd)} logged no kernels: is {laxc} built with --features {device}?")
    with open(log) as f:
        return collections.Counter(kind(line) for line in f if line.startswith("Executing"))


def per_step(laxc, device, spec, steps, warmup, batch):
    with tempfile.TemporaryDirectory() as folder:
        launched(laxc, device, spec, 1, warmup, batch, folder)  # autotune's run
        once = launched(laxc, device, spec, steps, warmup, batch, folder)
        twice = launched(laxc, device, spec, 2 * steps, warmup, batch, folder)
    by_kind = {k: (twice[k] - once[k]) / steps for k in twice | once if twice[k] != once[k]}
    return {"spec": spec, "per_step": sum(by_kind.values()), "by_kind": by_kind}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--laxc", default=os.path.join(ROOT, "target", "release", "laxc"))
    ap.add_argument("--device", default="wgpu", help="wgpu, or cuda on a machine with one")
    ap.add_argument("--steps", type=int, default=3, help="timed steps of the shorter run")
    ap.add_argument("--warmup", type=int, default=6, help="untimed steps first (autotune's)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--json", help="write the counts here")
    a = ap.parse_args()
    laxc = os.path.abspath(a.laxc)  # the runs start in folders of their own
    rows = [per_step(laxc, a.device, spec, a.steps, a.warmup, a.batch) for spec in a.specs]
    first = rows[0]["by_kind"]
    differ = sorted({k for r in rows for k, n in r["by_kind"].items() if n != first.get(k, 0)}
                    or set(first), key=lambda k: -max(r["by_kind"].get(k, 0) for r in rows))
    print("| spec | kernels / step | " + " | ".join(differ) + " |")
    print("|---|---:|" + "---:|" * len(differ))
    for r in rows:
        counts = " | ".join(f"{r['by_kind'].get(k, 0):g}" for k in differ)
        print(f"| {os.path.basename(r['spec'])} | {r['per_step']:g} | {counts} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": a.device, "batch": a.batch, "steps": a.steps, "warmup": a.warmup,
                       "specs": rows}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
