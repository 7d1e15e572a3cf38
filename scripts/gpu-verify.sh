#!/usr/bin/env bash
# Checks a CUDA build of chatforge on a machine with an NVIDIA GPU, in one go, and writes what it
# measured under OUT:
#
#   scripts/gpu-verify.sh BIN OUT [SECONDS]
#
# BIN holds `chatforge`, `device_parity` and (optionally) `step_profile`, built on any x86-64
# machine (no GPU needed) with
#
#   scripts/build-cuda.sh
#   scripts/build-cuda.sh test --release -p chatforge-train --features cuda --test device_parity --no-run
#   scripts/build-cuda.sh build --release -p chatforge-train --features cuda --example step_profile
#   # then copy target-cuda/release/{chatforge,examples/step_profile} and
#   # target-cuda/release/deps/device_parity-<hash> (as device_parity)
#
# Steps (each bounded so that the whole run stays inside SECONDS, default 540):
#   1. CPU ≡ CUDA parity (tests/device_parity.rs): logits, loss, gradients, AdamW steps, greedy
#      generation, checkpoint bytes, for tiny, llama-tiny and gpt2-bench -> OUT/parity.jsonl;
#   2. `pretrain --device cuda` on the built-in world, a resume, then `sample --device cuda`
#      (and the same greedy sample on the CPU, which must print the same text);
#   3. `bench train` and `bench generate` with `--device cuda`, PyTorch's peer on the same GPU
#      (python3 with torch) -> OUT/bench.md, and where a training step's time goes
#      (`step_profile`) -> OUT/profile.txt;
#   4. `speedrun --preset tiny --device cuda` with whatever time is left (every stage on the GPU).
#
# The CUDA libraries are taken from LD_LIBRARY_PATH, or else from PyTorch's nvidia wheels.
set -uo pipefail

BIN=$(cd "${1:?usage: gpu-verify.sh BIN OUT [SECONDS]}" && pwd)
OUT=${2:?usage: gpu-verify.sh BIN OUT [SECONDS]}
BUDGET=${3:-540}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/log.txt
WORK=$(mktemp -d)
START=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - START))); }
say() { echo "== $* (t=$(($(date +%s) - START))s)" | tee -a "$LOG"; }
run() { # run LIMIT CMD...: bounded, output to the log
  local limit=$1
  shift
  timeout --signal=INT --kill-after=10 "$limit" "$@" >>"$LOG" 2>&1
  local rc=$?
  echo "-- exit $rc: $*" >>"$LOG"
  return $rc
}

if ! ldconfig -p 2>/dev/null | grep -q 'libcublas\.so'; then
  site=$(python3 -c 'import site; print(site.getsitepackages()[0])' 2>/dev/null)
  for lib in libcublas.so.13 libcurand.so.10 libcudart.so.13; do
    dir=$(find "$site/nvidia" -name "$lib" -printf '%h\n' 2>/dev/null | head -n1)
    [[ -n $dir ]] && LD_LIBRARY_PATH=$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export LD_LIBRARY_PATH
fi
CF=$BIN/chatforge
say "machine"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  nproc
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  ldd "$CF" | grep -Ei 'cuda|cublas|curand|not found'
  python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'
} >>"$LOG" 2>&1

say "1. parity"
CHATFORGE_REQUIRE_CUDA=1 CHATFORGE_PARITY_JSON=$OUT/parity.jsonl \
  run 180 "$BIN"/device_parity --test-threads=1 --nocapture

say "2. pretrain on the GPU"
run 200 "$CF" pretrain --world 1 --world-bytes 2000000 --out "$WORK/base" --preset default \
  --steps 300 --eval-every 100 --sample-every 300 --checkpoint-every 150 --device cuda
run 60 "$CF" pretrain --world 1 --world-bytes 2000000 --out "$WORK/base" --preset default \
  --steps 320 --eval-every 100 --sample-every 300 --checkpoint-every 150 --device cuda --resume
cp "$WORK/base/metrics.jsonl" "$OUT/pretrain-metrics.jsonl" 2>/dev/null
for dev in cuda cpu; do
  say "sample --device $dev"
  run 60 "$CF" sample --model "$WORK/base" --prompt "The capital of" --temperature 0 \
    --max-tokens 40 --device $dev
  "$CF" sample --model "$WORK/base" --prompt "The capital of" --temperature 0 --max-tokens 40 \
    --device $dev >"$WORK/greedy-$dev.txt" 2>/dev/null
done
if cmp -s "$WORK/greedy-cuda.txt" "$WORK/greedy-cpu.txt"; then
  say "greedy sample: CUDA and CPU print the same text"
else
  say "greedy sample: CUDA and CPU DIFFER"
fi
run 60 "$CF" sample --model "$WORK/base" --prompt "The capital of" --temperature 0.8 \
  --top-k 40 --seed 1 --max-tokens 60 --n 2 --device cuda

say "3. benchmarks"
{
  echo "## bench train, gpt2-bench, batch 8"
  timeout 150 "$CF" bench train --device cuda --steps 10 --warmup 3 2>>"$LOG"
  echo
  echo "## bench train, gpt2-bench, batch 32"
  timeout 120 "$CF" bench train --device cuda --batch 32 --steps 10 --warmup 3 --no-bf16 \
    --matmul 0 2>>"$LOG"
  echo
  echo "## bench generate, gpt2-bench"
  timeout 120 "$CF" bench generate --device cuda --preset gpt2-bench --repeats 3 2>>"$LOG"
} >"$OUT/bench.md"

if [[ -x $BIN/step_profile ]]; then
  for args in "gpt2-bench f32 cuda" "tiny f32 cuda"; do
    echo "== step_profile $args"
    # shellcheck disable=SC2086
    timeout 60 "$BIN"/step_profile $args 2>&1
  done >"$OUT/profile.txt"
fi

say "4. speedrun --preset tiny on the GPU ($(left) s left)"
if [[ $(left) -gt 60 ]]; then
  run $(($(left) - 20)) "$CF" speedrun --preset tiny --out "$WORK/speedrun" --device cuda
  cp "$WORK/speedrun/report.md" "$OUT/speedrun-report.md" 2>/dev/null
fi
say "done"
rm -rf "$WORK"
