"""Data-parallel training on this machine: the same run (a spec's `batch`, `steps` steps) as one
process on all its threads, as replicas in one process (`--device cpu,cpu`), and as processes of
one thread each (`--nodes N` on loopback), alternating, `--rounds` times. Prints each setup's
tokens/s (from the steps after the first log window, so start-up is left out), its ratio to the
one-process run, and the all-reduce time per step and its share of the step from metrics.jsonl
(BENCHMARKS.md, "Data parallelism").

    python3 bench/data_parallel.py                       # the default spec, 2 cores
    python3 bench/data_parallel.py specs/tiny-vit-svd-lax.lax --replicas 2 --steps 60
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def window_rates(run):
    """tokens (or images) per second and all-reduce figures of each logged window but the
    first (which holds start-up)."""
    records = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if '"loss"' in l]
    records = records[1:]
    rate_key = next(k for k in records[0] if k.endswith("_per_s"))
    rates = [r[rate_key] for r in records]
    exchange = [r["allreduce_s_per_step"] for r in records if "allreduce_s_per_step" in r]
    share = [r["allreduce_share"] for r in records if "allreduce_share" in r]
    return statistics.median(rates), exchange, share


def run_setup(name, laxc, spec, args, replicas, tmp):
    run = os.path.join(tmp, name)
    shutil.rmtree(run, ignore_errors=True)
    base = [laxc, "train", "--plain", "--out", run, *args]
    if spec:
        base.insert(2, spec)
    if name == "1 process":
        subprocess.run(base + ["--threads", str(replicas)], cwd=ROOT, check=True,
                       capture_output=True)
    elif name == "replicas in 1 process":
        devices = ",".join(["cpu"] * replicas)
        subprocess.run(base + ["--device", devices, "--threads", str(replicas)], cwd=ROOT,
                       check=True, capture_output=True)
    else:
        at = f"127.0.0.1:{free_port()}"
        procs = [subprocess.Popen(base + ["--threads", "1", "--nodes", str(replicas),
                                          "--node-rank", str(r), "--coordinator", at],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for r in range(replicas)]
        for p in procs:
            _, err = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"{name}: exit {p.returncode}: {err.decode()[-2000:]}")
    return window_rates(run)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("spec", nargs="?", help="default: laxc's embedded default spec")
    ap.add_argument("--laxc", default=os.path.join(ROOT, "target/release/laxc"))
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    args = ["--set", f"steps={a.steps}", "--set", "warmup=2", "--set", "log_every=10",
            "--set", f"eval_every={a.steps}", "--set", "eval_batches=1"]
    setups = ["1 process", "replicas in 1 process", "processes of 1 thread"]
    results = {s: [] for s in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.rounds):
            for s in setups:
                results[s].append(run_setup(s, a.laxc, a.spec, args, a.replicas, tmp))
    reference = statistics.median(r[0] for r in results["1 process"])
    print(f"{'setup':28s} {'tokens/s':>9s} {'ratio':>6s} {'all-reduce ms/step':>19s} "
          f"{'share of step':>14s}")
    for s in setups:
        rate = statistics.median(r[0] for r in results[s])
        exchange = [x for r in results[s] for x in r[1]]
        share = [x for r in results[s] for x in r[2]]
        ms = f"{1e3 * statistics.median(exchange):.1f}" if exchange else "-"
        pct = f"{100 * statistics.median(share):.1f} %" if share else "-"
        print(f"{s:28s} {rate:9.0f} {rate / reference:6.2f} {ms:>19s} {pct:>14s}")


if __name__ == "__main__":
    main()
