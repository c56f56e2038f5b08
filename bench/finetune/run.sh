#!/usr/bin/env bash
# The fine-tuning experiment of BENCHMARKS.md ("Fine-tuning SmolLM2-135M-Instruct"): LoRA and
# LaX-LoRA (identity gates, as the paper's fine-tuning) on arithmetic word problems, the same
# budget and 3 seeds each, on the CPU; exact-match accuracy on 200 held-out problems, for the
# base model too. Writes everything under $OUT (default /tmp/laxc-finetune) and prints a table.
#   bench/finetune/run.sh [STEPS]          (default 80 optimizer steps of 8 examples)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
laxc="${LAXC:-$here/../../target/release/laxc}"
out="${OUT:-/tmp/laxc-finetune}"
steps="${1:-80}"
gguf="$("$here/../fetch-smollm2.sh")"
mkdir -p "$out"
python3 "$here/arithmetic.py" "$out"
"$laxc" import "$gguf" -o "$out/base.lax" --force 2>/dev/null
# The sequence: the chat template's prompt and the answer fit in 64 tokens.
sed -i 's/^    seq = [0-9]*/    seq = 64/' "$out/base.lax"
lora="factorize attn.{q,k,v}, mlp.{up,down} as lora(rank = 8, alpha = 16, base = \"$gguf\")"
train="train {
    data = jsonl(\"train.jsonl\", prompt = \"question\", response = \"answer\", chat = true)
    steps = $steps, batch = 8, lr = 1e-3, schedule = linear, warmup = 10
    eval_every = $steps, eval_batches = 4, checkpoint_every = $steps, keep = 1
}"
{ cat "$out/base.lax"; echo "$lora"; echo "$train"; } > "$out/lora.lax"
{ cat "$out/base.lax"; echo "$lora"
  echo "lax inter attn.{q,k,v}, mlp.{up,down} { gate = identity, norm = none }"; echo "$train"; } > "$out/lax-lora.lax"

score() {  # exact match of the answers in $1 against test.jsonl
    python3 - "$1" "$out/test.jsonl" <<'PY'
import json, sys
got = [json.loads(l)["output"].strip() for l in open(sys.argv[1])]
want = [json.loads(l)["answer"] for l in open(sys.argv[2])]
print(f"{100.0 * sum(g == w for g, w in zip(got, want)) / len(want):.1f}")
PY
}
ask() {  # ask() OUT_FILE ARGS...: greedy answers to every test question
    local file="$1"; shift
    "$laxc" generate "$@" --prompts "$out/test.jsonl" --field question --chat --max-tokens 6 > "$file"
}

ask "$out/base-answers.jsonl" "$out/base.lax" --base "$gguf"
echo "base: $(score "$out/base-answers.jsonl")% exact match"
for seed in 0 1 2; do
    for kind in lora lax-lora; do
        run="$out/runs/$kind-$seed"
        /usr/bin/time -f "%M" -o "$out/$kind-$seed.peak_kib" \
            "$laxc" train "$out/$kind.lax" --plain --set seed=$seed --out "$run" --force \
            --format json > "$out/$kind-$seed.summary.json"
        ask "$out/$kind-$seed-answers.jsonl" "$out/$kind.lax" --checkpoint "$run"
        echo "$kind seed $seed: $(score "$out/$kind-$seed-answers.jsonl")% exact match," \
            "$(python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print(f\"val loss {s['val_loss']:.4f}, {s['seconds']:.0f} s\")" "$out/$kind-$seed.summary.json")," \
            "peak $(( $(cat "$out/$kind-$seed.peak_kib") / 1024 )) MiB"
    done
done
