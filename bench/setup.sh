#!/usr/bin/env bash
# Installs PyTorch (the default PyPI wheel, which runs on the CPU) and numpy into a virtual
# environment for bench/twin.py and bench/compare.py, and builds laxc in release mode.
set -euo pipefail
venv="${LAXC_BENCH_VENV:-$HOME/.cache/laxc-bench-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet torch numpy
cd "$(dirname "$0")/.."
cargo build --release
echo "ready: $venv/bin/python bench/compare.py"
