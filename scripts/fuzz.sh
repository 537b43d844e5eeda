#!/usr/bin/env bash
# Runs the cargo-fuzz targets (fuzz/fuzz_targets/) for SECONDS each, one after another.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#   (default: 60 s; checkpoint config plan gguf gguf_model plan_quant)
# Seed corpora are made from the test fixtures (tools/fuzz_seeds.py, plus plan.json files
# compiled here: f32 plans of the tiny checkpoints, block-quantized ones from the GGUF fixtures
# and with --quant). Built with optimizations, debug assertions and overflow checks. The corpus grown by each run and any crash inputs stay under
# ~/.cache/gemma4c/fuzz/ (crash inputs also in fuzz/artifacts/TARGET/). Needs the nightly
# toolchain and cargo-fuzz (scripts/setup.sh installs cargo-fuzz into ~/.cache/gemma4c/);
# without them it says so and exits 0, so CI skips rather than fails.
# Exit status: 1 if any target found a crash, else 0.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(checkpoint config plan gguf gguf_model plan_quant)

cache=${GEMMA4C_CACHE:-$HOME/.cache/gemma4c}
export PATH="$cache/cargo-fuzz/bin:$PATH"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz: skipped (no nightly toolchain: rustup toolchain install nightly)"
    exit 0
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: skipped (cargo-fuzz not installed: run scripts/setup.sh)"
    exit 0
fi

# Seeds: fixtures' configs and small re-packed safetensors, and compiled tiny plans.
seeds="$cache/fuzz/seeds"
rm -rf "$seeds"
python3 tools/fuzz_seeds.py "$seeds"
cargo build -q --bin gemma4c
for fx in tiny_ple tiny_moe tiny_dense_kv; do
    out=$(mktemp -d)
    ./target/debug/gemma4c compile --model "tests/fixtures/$fx" --target cpu --out "$out" \
        --max-context 16 --prefill-chunk 4 >/dev/null
    cp "$out/plan.json" "$seeds/plan/$fx.json"
    rm -rf "$out"
done
# Block-quantized plans: GGUF files as stored, and a checkpoint quantized at load.
quant_plan() {  # NAME MODEL [FLAGS...]
    local name=$1 model=$2 out
    shift 2
    out=$(mktemp -d)
    ./target/debug/gemma4c compile --model "$model" --target cpu --out "$out" --max-context 16 "$@" \
        >/dev/null 2>&1
    cp "$out/plan.json" "$seeds/plan_quant/$name.json"
    rm -rf "$out"
}
quant_plan gemma4_q8_0 tests/fixtures/gguf/tiny_gemma4.q8_0.gguf --prefill-chunk 4
quant_plan gemma3_q4_k_m tests/fixtures/gguf/tiny_gemma3.q4_k_m.gguf --prefill-chunk 1
quant_plan gemma4_moe_q4_k_m tests/fixtures/gguf/tiny_gemma4_moe.q4_k_m.gguf --prefill-chunk 1
quant_plan ple_quant_q8_0 tests/fixtures/tiny_ple --prefill-chunk 1 --quant q8_0
quant_plan gemma3_quant_q4_0 tests/fixtures/tiny_gemma3 --prefill-chunk 4 --quant q4_0

# The fuzz crate keeps its own target dir in the cache, so CI reuses the sanitizer build.
export CARGO_TARGET_DIR="${GEMMA4C_FUZZ_TARGET:-$cache/fuzz/target}"
cargo +nightly fuzz build -O -a >/dev/null 2>&1 || cargo +nightly fuzz build -O -a

status=0
for t in "${targets[@]}"; do
    corpus="$cache/fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    log=$(mktemp)
    # -rss_limit_mb: every input is small, so 2 GB of memory is a bug (a missing size bound).
    dict=()
    case $t in plan | plan_quant) dict=(-dict=fuzz/plan.dict) ;; esac
    if cargo +nightly fuzz run -O -a "$t" "$corpus" "$seeds/$t" -- "${dict[@]}" \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -max_len=400000 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
        echo "fuzz $t: ${secs} s, $runs runs, 0 crashes"
    else
        status=1
        echo "fuzz $t: CRASH (input saved under fuzz/artifacts/$t/)"
        tail -40 "$log"
    fi
    rm -f "$log"
done
exit $status
