#!/usr/bin/env python3
"""What a LaX pathway costs in `laxc bench`: each spec with LaX against the same spec without it,
run in alternation; prints a Markdown table.

`bench/compare.py` measures every spec in turn and takes its LaX table from those medians, so a
pair's two specs are timed minutes apart and the machine's drift between them lands in the
ratio (±5 % seen). Here, for every pair and `rounds` times over, the two specs run back to back
(alternating which goes first), each a fresh `laxc bench` process; the ratio is taken per round
and its median printed with the middle half of the rounds' ratios (their quartiles: how far a
round's noise reaches), beside the extra training FLOPs the report counts.

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


def bench(binary, stem, steps, warmup):
    cmd = [binary, "bench", f"specs/bench/{stem}.lax", "--steps", str(steps), "--warmup", str(warmup),
           "--format", "json"]
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
            for r in range(args.rounds):
                order = [w, wo] if r % 2 == 0 else [wo, w]
                got = {stem: bench(args.laxc, stem, args.steps, args.warmup) for stem in order}
                for stem in order:
                    times[stem].append(got[stem]["median_step_seconds"])
                ratios.append(times[w][-1] / times[wo][-1])
                flops = got[w]["train_flops_per_step"] / got[wo]["train_flops_per_step"]
            print(f"| {w} | {wo} | {1e3 * statistics.median(times[w]):.1f} "
                  f"| {1e3 * statistics.median(times[wo]):.1f} | {statistics.median(ratios):.3f} "
                  f"| {middle_half(ratios)} | {flops:.3f} |", flush=True)


if __name__ == "__main__":
    main()
