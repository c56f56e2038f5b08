#!/usr/bin/env python3
"""The paper's claims at small scale: trains the specs in specs/claims and tabulates the results.

    python3 bench/claims.py sweep      # learning-rate sweep of the Brown variants (short runs)
    python3 bench/claims.py brown      # 3 seeds × 5 variants at the best swept learning rate
    python3 bench/claims.py fulleval   # the Brown runs' final checkpoints on the whole valid.txt
    python3 bench/claims.py mnist      # 3 seeds × 4 ViT variants
    python3 bench/claims.py table      # Markdown tables of whatever has finished

Runs go to runs/claims/<spec>-lr<lr>-s<seed> (sweep) and runs/claims/<spec>-s<seed>; a run whose
summary.json exists is not run again, so an interrupted command can simply be restarted. Two runs
go at once (--lanes), each on one thread (RAYON_NUM_THREADS=1): on a two-core machine that gives
more runs per hour than one run on two threads. tokens/s is therefore per lane.
"""
import argparse
import concurrent.futures as cf
import json
import math
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = os.path.join(ROOT, "runs", "claims")
BROWN = ["brown-full", "brown-svd", "brown-svd-lax", "brown-svd-lax-dense", "brown-cola", "brown-cola-lax"]
MNIST = ["mnist-svd", "mnist-svd-lax", "mnist-svd-lax-nonorm", "mnist-tt", "mnist-tt-lax", "mnist-tt-lax-nonorm"]
# The rates the sweep of 2026-11 chose (BENCHMARKS.md), used where this machine has no sweep runs;
# brown-svd-lax-dense was not swept and trains at brown-svd-lax's rate.
CHOSEN = {"brown-full": 3e-3, "brown-svd": 3e-3, "brown-svd-lax": 3e-3, "brown-svd-lax-dense": 3e-3,
          "brown-cola": 1e-2, "brown-cola-lax": 1e-2}
# The paper (Appendix A.3) sweeps around 1e-3 for base models and 1e-2 for LaX variants, taking
# the largest rate that does not diverge; the grids bracket those.
SWEEP = {
    "brown-full": [1e-3, 3e-3, 1e-2],
    "brown-svd": [1e-3, 3e-3, 1e-2],
    "brown-svd-lax": [1e-3, 3e-3, 1e-2, 3e-2],
    "brown-cola": [3e-3, 1e-2, 3e-2],
    "brown-cola-lax": [3e-3, 1e-2, 3e-2],
}
SWEEP_STEPS = 150
SEEDS = [0, 1, 2]


def window_rate(run, unit):
    """The median of the per-log-window rates in metrics.jsonl: unlike the whole-run average in
    summary.json, it does not count validation, nor time the run spent paused."""
    rates = []
    with open(os.path.join(run, "metrics.jsonl")) as fh:
        for line in fh:
            r = json.loads(line)
            if f"{unit}_per_s" in r:
                rates.append(r[f"{unit}_per_s"])
    return statistics.median(rates) if rates else float("nan")


def read_json(run, name):
    path = os.path.join(run, name)
    if os.path.exists(path):
        with open(path) as fh:
            return json.load(fh)
    return None


def summary(run):
    return read_json(run, "summary.json")


def train(job):
    spec, run, sets = job
    if summary(run):
        return run
    cmd = [os.path.join(ROOT, "target/release/laxc"), "train", f"specs/claims/{spec}.lax", "--plain",
           "--force", "--out", run]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    with open(run + ".log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    print(f"finished {os.path.basename(run)}", file=sys.stderr, flush=True)
    return run


def full_eval(run_and_spec):
    """Evaluates a finished Brown run's final checkpoint on the whole of valid.txt (the runs
    themselves validate on its first 41k bytes, to keep training fast)."""
    spec, run = run_and_spec
    out = os.path.join(run, "full-eval.json")
    if os.path.exists(out) or not summary(run):
        return
    cmd = [os.path.join(ROOT, "target/release/laxc"), "eval", f"specs/claims/{spec}.lax", "--checkpoint", run,
           "--set", "eval_batches=100000"]
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    text = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout
    loss = float(text.split("validation loss")[1].split()[0])
    with open(out, "w") as fh:
        json.dump({"val_loss": loss, "val_perplexity": math.exp(loss)}, fh)
    print(f"evaluated {os.path.basename(run)}", file=sys.stderr, flush=True)


def full(run):
    return read_json(run, "full-eval.json")


def run_all(jobs, lanes):
    os.makedirs(RUNS, exist_ok=True)
    with cf.ThreadPoolExecutor(lanes) as pool:
        list(pool.map(train, jobs))


def sweep_run(spec, lr):
    return os.path.join(RUNS, f"{spec}-lr{lr:g}-s0")


def best_lr(spec):
    """The swept rate with the lowest validation loss (a diverged run has none), or the rate
    chosen before where there are no sweep runs."""
    scored = []
    for lr in SWEEP.get(spec, []):
        s = summary(sweep_run(spec, lr))
        if s and s.get("val_loss") is not None and math.isfinite(s["val_loss"]) and not s.get("stopped"):
            scored.append((s["val_loss"], lr))
    if not scored:
        return CHOSEN[spec]
    return min(scored)[1]


def sweep_jobs():
    warmup = SWEEP_STEPS // 5
    return [(spec, sweep_run(spec, lr), [f"lr={lr:g}", f"steps={SWEEP_STEPS}", f"warmup={warmup}",
                                         f"eval_every={SWEEP_STEPS}", "checkpoint_every=0"])
            for spec in SWEEP for lr in SWEEP[spec]]


def brown_jobs(only):
    return [(spec, os.path.join(RUNS, f"{spec}-s{seed}"), [f"lr={best_lr(spec):g}", f"seed={seed}"])
            for seed in SEEDS for spec in BROWN if not only or spec in only]


def mnist_jobs(only):
    return [(spec, os.path.join(RUNS, f"{spec}-s{seed}"), [f"seed={seed}"])
            for seed in SEEDS for spec in MNIST if not only or spec in only]


def mean_std(xs):
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{xs[0]:.3f} (1 run)"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def table():
    print("Learning-rate sweep (150 steps, 0.31M tokens, seed 0): validation loss\n")
    print("| spec | learning rate: validation loss | chosen |")
    print("|---|---|---|")
    for spec in SWEEP:
        cells = []
        for lr in SWEEP[spec]:
            s = summary(sweep_run(spec, lr))
            v = s.get("val_loss") if s else None
            cells.append(f"{lr:g}: " + (f"{v:.3f}" if v is not None else (s or {}).get("stopped") or "—"))
        chosen = best_lr(spec) if any(summary(sweep_run(spec, lr)) for lr in SWEEP[spec]) else "—"
        print(f"| {spec} | " + "; ".join(cells) + f" | {chosen} |")
    print("\nBrown corpus, byte-level, 1,000 steps × 2,048 tokens (2.05M tokens), 3 seeds\n")
    print("| spec | params | lr | validation loss | validation perplexity | perplexity, whole valid.txt "
          "| tokens/s (one thread, median of log windows) | runs |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in BROWN:
        ss = [summary(os.path.join(RUNS, f"{spec}-s{seed}")) for seed in SEEDS]
        ss = [s for s in ss if s and s.get("val_loss") is not None]
        if not ss:
            continue
        lr = best_lr(spec)
        print(f"| {spec} | {ss[0]['params']:,} | {lr:g} | {mean_std([s['val_loss'] for s in ss])} "
              f"| {mean_std([s['val_perplexity'] for s in ss])} "
              f"| {mean_std([f['val_perplexity'] for f in map(full, [s['run_dir'] for s in ss]) if f])} "
              f"| {statistics.mean(window_rate(s['run_dir'], 'tokens') for s in ss):,.0f} | {len(ss)} |")
    print("\nPaired by seed: validation perplexity of the first minus the second (negative: the first is better)\n")
    paired([("brown-svd-lax", "brown-svd"), ("brown-svd-lax-dense", "brown-svd"), ("brown-cola-lax", "brown-cola"),
            ("brown-svd", "brown-full"), ("brown-svd-lax", "brown-full"), ("brown-cola-lax", "brown-full")],
           "val_perplexity")
    print("\nThe same on the whole of valid.txt (`claims.py fulleval`)\n")
    paired([("brown-svd-lax", "brown-svd"), ("brown-svd-lax-dense", "brown-svd"), ("brown-cola-lax", "brown-cola"),
            ("brown-svd", "brown-full"), ("brown-svd-lax", "brown-full"), ("brown-cola-lax", "brown-full")],
           "val_perplexity", source=full)
    print("\nMNIST (8,000 training digits, 2,000 test digits), 5 epochs, 3 seeds\n")
    print("| spec | params | test accuracy % | test loss | images/s (one thread, median of log windows) | runs |")
    print("|---|---|---|---|---|---|")
    for spec in MNIST:
        ss = [summary(os.path.join(RUNS, f"{spec}-s{seed}")) for seed in SEEDS]
        ss = [s for s in ss if s and s.get("val_accuracy") is not None]
        if not ss:
            continue
        print(f"| {spec} | {ss[0]['params']:,} | {mean_std([100 * s['val_accuracy'] for s in ss])} "
              f"| {mean_std([s['val_loss'] for s in ss])} "
              f"| {statistics.mean(window_rate(s['run_dir'], 'images') for s in ss):,.0f} | {len(ss)} |")
    print("\nPaired by seed: test accuracy of the first minus the second, in points (positive: the first is better)\n")
    paired([("mnist-svd-lax", "mnist-svd"), ("mnist-svd-lax-nonorm", "mnist-svd"), ("mnist-svd-lax", "mnist-svd-lax-nonorm"),
            ("mnist-tt-lax", "mnist-tt"), ("mnist-tt-lax-nonorm", "mnist-tt"), ("mnist-tt-lax", "mnist-tt-lax-nonorm")],
           "val_accuracy", 100.0, "{:+.2f}")


def paired(pairs, key, scale=1.0, fmt="{:+.3f}", source=None):
    """Per-seed differences `key(a) − key(b)`: the same seed gives both runs the same batches."""
    print("| comparison | per-seed differences | mean ± std |")
    print("|---|---|---|")
    for a, b in pairs:
        diffs = []
        for seed in SEEDS:
            get = source or summary
            sa = get(os.path.join(RUNS, f"{a}-s{seed}"))
            sb = get(os.path.join(RUNS, f"{b}-s{seed}"))
            if sa and sb and sa.get(key) is not None and sb.get(key) is not None:
                diffs.append(scale * (sa[key] - sb[key]))
        if diffs:
            cells = ", ".join(fmt.format(d) for d in diffs)
            ms = fmt.format(statistics.mean(diffs)) + (f" ± {statistics.stdev(diffs):.3f}" if len(diffs) > 1 else "")
            print(f"| {a} − {b} | {cells} | {ms} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=["sweep", "brown", "fulleval", "mnist", "table"])
    ap.add_argument("--lanes", type=int, default=2)
    ap.add_argument("--specs", nargs="*", default=[], help="only these specs (brown, mnist)")
    a = ap.parse_args()
    if a.what == "table":
        table()
        return
    if a.what == "fulleval":
        runs = [(spec, os.path.join(RUNS, f"{spec}-s{seed}")) for seed in SEEDS for spec in BROWN
                if not a.specs or spec in a.specs]
        with cf.ThreadPoolExecutor(a.lanes) as pool:
            list(pool.map(full_eval, runs))
        return
    jobs = {"sweep": sweep_jobs, "brown": lambda: brown_jobs(a.specs), "mnist": lambda: mnist_jobs(a.specs)}[a.what]()
    run_all(jobs, a.lanes)


if __name__ == "__main__":
    main()
