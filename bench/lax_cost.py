#!/usr/bin/env python3
"""What a LaX pathway costs in `laxc bench`: each spec with LaX against the same spec without it,
timed in alternation; prints a Markdown table.

`bench/compare.py` measures every spec in turn and takes its LaX table from those medians, so a
pair's two specs are timed minutes apart and the machine's drift between them lands in the
ratio (±5 % seen). Here each round is one `laxc bench WITH --against WITHOUT` process, which
times a step of each in turn, so that a round's two steps are milliseconds apart; its ratio is
the median of its steps' ratios. The table prints the median of the rounds' ratios with their
middle half (their quartiles: how far a round's noise reaches), beside the extra training FLOPs
the report counts. (Until session 33 each round ran the two specs as two processes back to
back; on a noisy machine a round's ratio then moved by ±10 %, where it moves by ±2 % now.)

    python3 bench/lax_cost.py --rounds 3
    python3 bench/lax_cost.py --train --rounds 5 --steps 120   # the same in `laxc train`

`--train` times `laxc train` instead: the default spec (identity gates, LayerNorm) against
`specs/tiny-llama-svd.lax` (the same model and train section without LaX), in alternating runs
(which one goes first alternates by round), each run's step time the median of its steps'
times from `metrics.jsonl` (logged every step, no validation), the first ten left out.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

from ab import middle_half

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (with LaX, without), per family: the pairs of compare.py's LaX table.
PAIRS = [("svd-lax-identity", "svd"), ("svd-lax-identity-nonorm", "svd"), ("svd-lax-linear", "svd"),
         ("svd-lax-tensor", "svd"), ("svd-lax-dense", "svd"), ("cola-lax-dense", "cola"), ("tt-lax", "tt")]


def bench_pair(binary, with_lax, without, steps, warmup):
    cmd = [binary, "bench", f"specs/bench/{with_lax}.lax", "--against", f"specs/bench/{without}.lax",
           "--steps", str(steps), "--warmup", str(warmup), "--format", "json"]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


TRAIN_PAIR = ("specs/tiny-llama-svd-lax.lax", "specs/tiny-llama-svd.lax")


def train_step_seconds(binary, spec, steps):
    """The median step time of one `laxc train` run of `spec`, from its metrics.jsonl."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        cmd = [binary, "train", spec, "--out", out, "--plain", "--set", f"steps={steps}",
               "--set", "log_every=1", "--set", "eval_every=0"]
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    elapsed = [r["elapsed_s"] for r in rows if "elapsed_s" in r and "loss" in r]
    steps_s = [b - a for a, b in zip(elapsed, elapsed[1:])][10:]
    return statistics.median(steps_s)


def train_pair(args):
    with_lax, without = TRAIN_PAIR
    times = {with_lax: [], without: []}
    ratios = []
    for r in range(args.rounds):
        order = [with_lax, without] if r % 2 == 0 else [without, with_lax]
        for spec in order:
            times[spec].append(train_step_seconds(args.laxc, spec, args.steps))
        ratios.append(times[with_lax][-1] / times[without][-1])
    print("| `laxc train` with LaX | without | step ms with | step ms without "
          "| with / without (median of rounds) | middle half of rounds |")
    print("|---|---|---|---|---|---|")
    print(f"| {with_lax} | {without} | {1e3 * statistics.median(times[with_lax]):.1f} "
          f"| {1e3 * statistics.median(times[without]):.1f} | {statistics.median(ratios):.3f} "
          f"| {middle_half(ratios)} |", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laxc", default="target/release/laxc")
    ap.add_argument("--families", nargs="*", default=["llama", "vit", "gpt2"])
    ap.add_argument("--pairs", nargs="*", default=[w for w, _ in PAIRS],
                    help="the LaX variants to time (default: all), e.g. svd-lax-identity")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--train", action="store_true",
                    help="time `laxc train` runs of the default spec against tiny-llama-svd instead")
    args = ap.parse_args()
    if args.train:
        return train_pair(args)
    print("| with LaX | without | step ms with | step ms without | with / without (median of rounds) "
          "| middle half of rounds | extra train FLOPs |")
    print("|---|---|---|---|---|---|---|")
    for family in args.families:
        for with_lax, without in [p for p in PAIRS if p[0] in args.pairs]:
            w, wo = f"{family}-{with_lax}", f"{family}-{without}"
            if not all(os.path.exists(os.path.join(ROOT, f"specs/bench/{s}.lax")) for s in (w, wo)):
                continue  # the bench set has GPT-2's identity pair only
            times = {w: [], wo: []}
            ratios, flops = [], None
            for _ in range(args.rounds):
                got = bench_pair(args.laxc, w, wo, args.steps, args.warmup)
                times[w].append(got["spec"]["median_step_seconds"])
                times[wo].append(got["against"]["median_step_seconds"])
                ratios.append(got["ratio"])
                flops = got["flops_ratio"]
            print(f"| {w} | {wo} | {1e3 * statistics.median(times[w]):.1f} "
                  f"| {1e3 * statistics.median(times[wo]):.1f} | {statistics.median(ratios):.3f} "
                  f"| {middle_half(ratios)} | {flops:.3f} |", flush=True)


if __name__ == "__main__":
    main()
