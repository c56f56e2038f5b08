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
"""
import argparse
import json
import os
import statistics
import subprocess

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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laxc", default="target/release/laxc")
    ap.add_argument("--families", nargs="*", default=["llama", "vit", "gpt2"])
    ap.add_argument("--pairs", nargs="*", default=[w for w, _ in PAIRS],
                    help="the LaX variants to time (default: all), e.g. svd-lax-identity")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
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
