"""The report's memory against the measured peak: for each spec, `laxc check` gives the fp32
training state (weights, gradients, Adam moments) and the activations a batch keeps for the
backward pass; `laxc bench` at the spec's batch measures the process's peak resident memory.
Prints one row per spec with the ratio measured / estimate (BENCHMARKS.md, "Memory").

    python3 bench/memory.py specs/bench/*.lax
"""
import argparse
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--laxc", default=os.path.join(ROOT, "target/release/laxc"))
    a = ap.parse_args()
    print(f"{'spec':48s} {'batch':>5s} {'estimate MiB':>13s} {'peak RSS MiB':>13s} {'ratio':>6s}")
    for spec in a.specs:
        check = subprocess.run([a.laxc, "check", "--format", "json", spec], cwd=ROOT,
                               capture_output=True, text=True, check=True)
        r = json.loads(check.stdout)
        batch = r["flops"]["samples_per_step"] or 8
        estimate = r["memory"]["train_bytes_fp32"] + batch * r["memory"]["activation_bytes_per_sample_fp32"]
        bench = subprocess.run([a.laxc, "bench", spec, "--steps", "2", "--warmup", "1", "--batch",
                                str(batch), "--format", "json"], cwd=ROOT, capture_output=True,
                               text=True, check=True)
        peak = json.loads(bench.stdout)["peak_rss_bytes"]
        print(f"{spec:48s} {batch:5d} {estimate / 2**20:13.1f} {peak / 2**20:13.1f} "
              f"{peak / estimate:6.2f}", flush=True)


if __name__ == "__main__":
    main()
