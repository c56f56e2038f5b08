#!/usr/bin/env python3
"""Two laxc binaries against each other on `laxc bench`, spec by spec; prints a Markdown table.

For every spec, `rounds` times over, it runs `A bench SPEC` and `B bench SPEC` (alternating which
goes first, so slow drift of the machine hits both alike), each a fresh process timing `--steps`
training steps after `--warmup` untimed ones. A side's figure is the median over rounds of its
per-run median step time; the ratio A/B is taken per round and its median printed (below 1: A is
faster), beside the middle half of the rounds' ratios (their quartiles): how far one round's
noise reaches. On the 2-core machine a binary against a copy of itself gave medians of
0.977–1.033 at nine rounds, so a change of a percent or two needs a control spec it cannot
touch in the same run. Both binaries must report the same final loss, or the table says so.
Build both with the same `.cargo/config.toml` (loops aligned to 64 bytes since attempt 111): a
base from before it, built without, differs by where its loops fall, up to 2 % of a step.

    git worktree add /tmp/base HEAD~1 && (cd /tmp/base && cargo build --release)
    python3 bench/ab.py /tmp/base/target/release/laxc target/release/laxc --rounds 3
"""
import argparse
import glob
import json
import os
import statistics
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def json_flag(binary):
    """`--format json` for a laxc that prints text by default; nothing for older ones."""
    helptext = subprocess.run([binary, "bench", "--help"], capture_output=True, text=True).stdout
    return ["--format", "json"] if "--format" in helptext else []


def bench(binary, spec, steps, warmup):
    cmd = [binary, "bench", spec, "--steps", str(steps), "--warmup", str(warmup)] + json_flag(binary)
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def middle_half(xs):
    """The first and third quartiles of `xs`, as text ("—" for fewer than two)."""
    if len(xs) < 2:
        return "—"
    q1, _, q3 = statistics.quantiles(xs, n=4)
    return f"{q1:.3f}–{q3:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", help="the laxc binary under test")
    ap.add_argument("b", help="the baseline laxc binary")
    ap.add_argument("--specs", nargs="*", default=sorted(glob.glob("specs/bench/*.lax", root_dir=ROOT)))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    print("| spec | A step (ms) | B step (ms) | A/B (median of rounds) | middle half of rounds | same loss |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for spec in args.specs:
        a_times, b_times, per_round, same = [], [], [], True
        for r in range(args.rounds):
            order = [("a", args.a), ("b", args.b)] if r % 2 == 0 else [("b", args.b), ("a", args.a)]
            got = {side: bench(binary, spec, args.steps, args.warmup) for side, binary in order}
            a_times.append(got["a"]["median_step_seconds"])
            b_times.append(got["b"]["median_step_seconds"])
            per_round.append(a_times[-1] / b_times[-1])
            same &= abs(got["a"]["final_loss"] - got["b"]["final_loss"]) <= 1e-5 * abs(got["b"]["final_loss"])
        ratio = statistics.median(per_round)
        ratios.append(ratio)
        print(f"| {os.path.basename(spec)} | {1e3 * statistics.median(a_times):.1f} "
              f"| {1e3 * statistics.median(b_times):.1f} | {ratio:.3f} | {middle_half(per_round)} "
              f"| {'yes' if same else 'NO'} |", flush=True)
    print(f"\nmedian A/B over {len(ratios)} specs: {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
