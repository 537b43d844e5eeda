#!/usr/bin/env bash
# The main job: compile the bundled tiny Gemma 4 for this CPU and generate from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release
model=tests/fixtures/tiny_ple
./target/release/gemma4c inspect --model "$model"
./target/release/gemma4c compile --model "$model" --target cpu --out out/tiny_ple --stats
echo "--- greedy ids (Hugging Face gives the same):"
./target/release/gemma4c run --plan out/tiny_ple --prompt-ids 2,17,301,45,99,123,7,480,256,64,33,401 \
    --max-new-tokens 12 --output ids
echo "--- text (random weights, so the words are random too):"
./target/release/gemma4c run --plan out/tiny_ple --prompt "The capital of France is" --max-new-tokens 24 \
    --temperature 0.8 --top-p 0.95 --seed 1
