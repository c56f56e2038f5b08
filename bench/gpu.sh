#!/usr/bin/env bash
# GPU figures from a fresh clone, in one command: builds laxc for the device, compiles every
# item's kernels at once (CUDA: the driver compiles on one thread per process, minutes per spec
# on a fresh machine), runs `laxc bench` on the paper's LLaMA-60M / 130M / 350M full, SVD and
# SVD+LaX specs beside their PyTorch twins (where torch is installed), trains the default spec
# and the LLaMA-60M SVD+LaX spec for 300 steps (the latter in f32 and in bf16), and writes one
# JSON file (bench/results/gpu-<date>.json: tokens/s, speed against PyTorch, MFU, peak GPU
# memory, loss curves).
#
#   bench/gpu.sh                          # an NVIDIA GPU (builds with --features cuda)
#   bench/gpu.sh --peak-tflops 66.9       # the GPU's fp32 peak, if its name is not known
#   bench/gpu.sh --device wgpu --quick    # any Vulkan/Metal/DX12 adapter, tiny specs (tested)
#   bench/gpu.sh --laxc target/release/laxc ...   # skip the build
#   bench/gpu.sh --deadline-s 480 --timeout-s 100 # within a lease: start nothing after 480 s
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
laxc=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device="$2"; shift 2 ;;
        --laxc) laxc="$2"; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
[ "$device" = cuda ] || [ "${device%%:*}" = cuda ] || [ "$device" = wgpu ] || {
    echo "bench/gpu.sh: --device is cuda, cuda:N or wgpu, not $device" >&2; exit 2; }

if [ -z "$laxc" ]; then
    feature=$([ "$device" = wgpu ] && echo wgpu || echo cuda)
    cargo build --release --features "$feature"
    laxc=target/release/laxc
fi
exec python3 bench/gpu.py --laxc "$laxc" --device "$device" "${args[@]}"
