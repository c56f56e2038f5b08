#!/usr/bin/env python3
"""`laxc check` wall time for every paper spec: median of --runs runs, each a fresh process.

    python3 bench/check_times.py --runs 7 > /tmp/check-times.md
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--laxc", default="target/release/laxc")
    ap.add_argument("--runs", type=int, default=7)
    a = ap.parse_args()
    rows = []
    for spec in sorted(glob.glob(os.path.join(ROOT, "specs/paper/*.lax"))):
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            out = subprocess.run([a.laxc, "check", "--format", "json", spec], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
            times.append(time.perf_counter() - t0)
        params = json.loads(out)["params"]["total"]
        rows.append((os.path.basename(spec)[:-4], params, statistics.median(times) * 1e3, max(times) * 1e3))
    print(f"| paper spec | params | median ms ({a.runs} runs) | slowest ms |")
    print("|---|---|---|---|")
    for name, params, med, worst in rows:
        print(f"| {name} | {params / 1e6:,.2f}M | {med:.1f} | {worst:.1f} |")
    meds = [r[2] for r in rows]
    print(f"\n{len(rows)} specs: median {statistics.median(meds):.1f} ms, slowest "
          f"{max(meds):.1f} ms ({rows[meds.index(max(meds))][0]}), all {sum(meds):.0f} ms in total")


if __name__ == "__main__":
    main()
