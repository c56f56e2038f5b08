#!/usr/bin/env python3
"""laxc against its PyTorch twin, spec by spec, in one command; prints Markdown tables.

For every spec, `rounds` times over, it runs `laxc bench` and then `bench/twin.py` (alternating
which goes first, so slow drift of the machine hits both sides alike), each a fresh process
timing `--steps` training steps after `--warmup` untimed ones. A side's figure is the median over
rounds of its per-run median step time. Ratios are taken from those medians.

    bench/setup.sh                               # once: torch into ~/.cache/laxc-bench-venv
    ~/.cache/laxc-bench-venv/bin/python bench/compare.py --rounds 3 --steps 15 > /tmp/compare.md

Also prints, from the same runs: the LaX overhead per gate (step time with LaX over step time
without), the low-rank speed-up (dense step time over SVD step time), and peak memory against
the report's fp32 estimate, and what dropout costs (the `-dropout` specs against the same spec
without). The twin drops out at the rate `laxc bench` reports for the spec, where laxc does.
Raw results go to --json (default /tmp/laxc-compare.json).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAMILIES = ["llama", "vit", "gpt2"]
VARIANTS = ["dense", "svd", "svd-lax-identity", "svd-lax-identity-nonorm", "svd-lax-linear", "svd-lax-tensor", "svd-lax-dense",
            "cola", "cola-lax-dense", "tt", "tt-lax", "svd-dropout"]
# GPT-2 shares LLaMA's sizes and kernels but for its own ops (learned positions, biases, LayerNorm,
# tanh GELU, a tied head): the variants that time those.
GPT2_VARIANTS = ["dense", "svd", "svd-lax-identity", "svd-dropout"]
ALL_STEMS = [f"{f}-{v}" for f in FAMILIES for v in (GPT2_VARIANTS if f == "gpt2" else VARIANTS)]


def run_json(cmd):
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laxc", default="target/release/laxc")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch threads")
    ap.add_argument("--only", nargs="*", help="spec stems, e.g. llama-svd vit-tt")
    ap.add_argument("--no-twin", action="store_true", help="laxc only")
    ap.add_argument("--json", default="/tmp/laxc-compare.json")
    ap.add_argument("--peak", type=float, help="the machine's GEMM peak in GFLOP/s (the `peak:` "
                    "line of `cargo bench --bench kernels` at 2 threads): adds each side's share of it")
    ap.add_argument("--reuse", help="a --json file of an earlier run: its specs that are not "
                    "measured now are tabulated from it")
    ap.add_argument("--tabulate", action="store_true", help="measure nothing: the tables of --reuse's "
                    "file (with --peak, say)")
    a = ap.parse_args()
    if a.tabulate and not a.reuse:
        ap.error("--tabulate takes the results of --reuse FILE")
    stems = [] if a.tabulate else a.only or ALL_STEMS
    common = ["--steps", str(a.steps), "--warmup", str(a.warmup)]
    results = {}
    for stem in stems:
        spec = f"specs/bench/{stem}.lax"
        laxc_cmd = [a.laxc, "bench", spec, "--format", "json"] + common
        twin_cmd = [sys.executable, os.path.join(HERE, "twin.py"), spec, "--laxc", a.laxc,
                    "--threads", str(a.threads)] + common
        runs = {"laxc": [], "pytorch": []}
        for r in range(a.rounds):
            order = ["laxc", "pytorch"]
            if a.no_twin:
                order = order[:1]
            elif r % 2:
                order.reverse()
            for side in order:
                # Round 0 runs laxc first: its result gives the twin the spec's dropout rate.
                cmd = laxc_cmd if side == "laxc" else twin_cmd + ["--dropout", str(runs["laxc"][0]["dropout"])]
                runs[side].append(run_json(cmd))
        results[stem] = runs
        print(f"measured {stem}", file=sys.stderr)
    if a.reuse:
        with open(a.reuse) as fh:
            earlier = json.load(fh)
        for stem in ALL_STEMS:
            if stem not in results and stem in earlier:
                results[stem] = earlier[stem]
        stems = [s for s in ALL_STEMS if s in results]
    with open(a.json, "w") as fh:
        json.dump(results, fh)

    def med(stem, side, key="median_step_seconds"):
        return statistics.median(x[key] for x in results[stem][side])

    def spread(stem, side):
        xs = [x["median_step_seconds"] for x in results[stem][side]]
        return f"{min(xs) * 1e3:.0f}–{max(xs) * 1e3:.0f}"

    first = results[stems[0]]["laxc"]
    print(f"{len(first)} rounds × {first[0]['steps']} timed steps (+{first[0]['warmup']} warm-up) per side "
          f"and spec" + (f", tabulated from {a.reuse}" if a.tabulate else "") + "\n")
    share_head = " share of peak laxc | share of peak PyTorch |" if a.peak else ""
    print("| spec | params | unit/s laxc | unit/s PyTorch | laxc / PyTorch | GFLOP/s laxc | GFLOP/s PyTorch "
          "| step ms laxc (range) | step ms PyTorch (range) |" + share_head)
    print("|---|---|---|---|---|---|---|---|---|" + ("---|---|" if a.peak else ""))
    for stem in stems:
        lx = results[stem]["laxc"][0]
        unit = "tok" if lx["unit"] == "tokens" else "img"
        items = lambda side: lx["batch"] * (lx["tokens_per_sample"] if unit == "tok" else 1) / med(stem, side)
        gf = lambda side: lx["train_flops_per_step"] / med(stem, side) / 1e9
        if a.no_twin:
            print(f"| {stem} | {lx['params']:,} | {items('laxc'):,.0f} {unit} | | | {gf('laxc'):.1f} | "
                  f"| {med(stem, 'laxc') * 1e3:.0f} ({spread(stem, 'laxc')}) | |"
                  + (f" {gf('laxc') / a.peak:.0%} | |" if a.peak else ""))
            continue
        print(f"| {stem} | {lx['params']:,} | {items('laxc'):,.0f} {unit} | {items('pytorch'):,.0f} {unit} "
              f"| {med(stem, 'pytorch') / med(stem, 'laxc'):.2f} | {gf('laxc'):.1f} | {gf('pytorch'):.1f} "
              f"| {med(stem, 'laxc') * 1e3:.0f} ({spread(stem, 'laxc')}) "
              f"| {med(stem, 'pytorch') * 1e3:.0f} ({spread(stem, 'pytorch')}) |"
              + (f" {gf('laxc') / a.peak:.0%} | {gf('pytorch') / a.peak:.0%} |" if a.peak else ""))

    sides = ["laxc"] + ([] if a.no_twin else ["pytorch"])
    print("\nLaX overhead: step time with LaX / the same model without it (1.00 = free)\n")
    print("| with LaX | without | " + " | ".join(sides) + " | extra train FLOPs |")
    print("|---|---|" + "---|" * len(sides) + "---|")
    for f in FAMILIES:
        for v, base in [("svd-lax-identity", "svd"), ("svd-lax-identity-nonorm", "svd"), ("svd-lax-linear", "svd"), ("svd-lax-tensor", "svd"),
                        ("svd-lax-dense", "svd"), ("cola-lax-dense", "cola"), ("tt-lax", "tt")]:
            w, wo = f"{f}-{v}", f"{f}-{base}"
            if w in results and wo in results:
                ratios = " | ".join(f"{med(w, s) / med(wo, s):.3f}" for s in sides)
                fl = results[w]["laxc"][0]["train_flops_per_step"] / results[wo]["laxc"][0]["train_flops_per_step"]
                print(f"| {w} | {wo} | {ratios} | {fl:.3f} |")

    print("\nLow-rank speed-up: dense step time / low-rank step time\n")
    print("| low-rank | " + " | ".join(sides) + " | train FLOPs ratio |")
    print("|---|" + "---|" * len(sides) + "---|")
    for f in FAMILIES:
        d = f"{f}-dense"
        for v in ["svd", "cola", "tt"]:
            s = f"{f}-{v}"
            if d in results and s in results:
                ratios = " | ".join(f"{med(d, x) / med(s, x):.2f}" for x in sides)
                fl = results[d]["laxc"][0]["train_flops_per_step"] / results[s]["laxc"][0]["train_flops_per_step"]
                print(f"| {s} | {ratios} | {fl:.2f} |")

    print("\nDropout: step time with dropout 0.1 / the same model without it\n")
    print("| with dropout | without | " + " | ".join(sides) + " |")
    print("|---|---|" + "---|" * len(sides))
    for f in FAMILIES:
        w, wo = f"{f}-svd-dropout", f"{f}-svd"
        if w in results and wo in results:
            print(f"| {w} | {wo} | " + " | ".join(f"{med(w, s) / med(wo, s):.3f}" for s in sides) + " |")

    print("\nPeak memory (resident set of the whole process) against the report's fp32 estimate "
          "(weights, gradients, two Adam moments; activations not counted)\n")
    print("| spec | report fp32 estimate | laxc peak RSS | PyTorch peak RSS |")
    print("|---|---|---|---|")
    mib = lambda b: f"{b / 2**20:.0f} MiB" if b else "—"
    for stem in stems:
        lx = results[stem]["laxc"]
        py = results[stem].get("pytorch") or [{}]
        print(f"| {stem} | {lx[0]['report_train_bytes_fp32'] / 2**20:.1f} MiB "
              f"| {mib(statistics.median(x['peak_rss_bytes'] for x in lx))} "
              f"| {mib(py[0].get('peak_rss_bytes'))} |")


if __name__ == "__main__":
    main()
