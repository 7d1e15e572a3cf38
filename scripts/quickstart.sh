#!/usr/bin/env bash
# The main job until `chatforge speedrun` exists: generate the built-in world, train a tokenizer,
# pretrain the `tiny` GPT, fine-tune it on the world's demonstrations, and print base-vs-SFT
# task accuracy. About 6 minutes on 2 cores. Re-running resumes where it stopped.
#   bash scripts/quickstart.sh [OUT_DIR]   (default: runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/quickstart}"
cargo build --release -p chatforge-cli
cf=target/release/chatforge

"$cf" world --seed 1 --out "$out/world"
"$cf" pretrain --train "$out/world/corpus/train.txt" --val "$out/world/corpus/val.txt" \
  --out "$out/base" --steps 600 --eval-every 100 --sample-every 300 --resume
"$cf" sample --model "$out/base" --prompt "The capital of" --max-tokens 40
"$cf" sft --model "$out/base" --train "$out/world/sft/train.jsonl" --val "$out/world/sft/val.jsonl" \
  --tasks "$out/world/sft/val_tasks.jsonl" --out "$out/sft" --steps 800 --eval-every 400 \
  --eval-tasks 300 --resume
echo "Chat with it:  $cf chat --model $out/sft"
