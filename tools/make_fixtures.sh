#!/usr/bin/env bash
# Regenerate every committed tiny Gemma 4 fixture under tests/fixtures/ (fixed seeds; the outputs are
# byte-identical from run to run on the same torch build).
#
#   tools/make_fixtures.sh [PYTHON]          # or: PYTHON=/path/to/python tools/make_fixtures.sh
#   UNSEEN_DIR=/tmp/unseen tools/make_fixtures.sh [PYTHON]
#       additionally writes extra (never committed) checkpoints with other seeds into $UNSEEN_DIR.
#
# PYTHON must have tools/requirements-ref.txt installed (transformers 5.23.0 exactly).
# Each run of make_tiny_gemma4.py exits non-zero if one of its cross-checks fails.
set -euo pipefail

PY="${1:-${PYTHON:-python3}}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GEN="$ROOT/tools/make_tiny_gemma4.py"
FIX="$ROOT/tests/fixtures"
export OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1

"$PY" - <<'PYEOF'
import sys
import transformers
if transformers.__version__ != "5.23.0":
    sys.exit(f"transformers {transformers.__version__} found; the fixtures are defined by 5.23.0 "
             "(see tools/requirements-ref.txt)")
PYEOF

LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

gen() {  # gen OUT_DIR ARGS...
    local out="$1"
    shift
    printf '== %s  (%s)\n' "${out#"$ROOT"/}" "$*"
    if ! "$PY" "$GEN" "$out" "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        echo "FAILED: $out" >&2
        exit 1
    fi
    grep -h "WARNING" "$LOG" >&2 || true
    "$PY" - "$out/reference_meta.json" <<'PYEOF'
import json, sys
m = json.load(open(sys.argv[1]))
c = m["checks"]
print(f"   generated {m['generated_ids']}")
print(f"   margin {c['decode_min_top1_top2_margin']:.4f}  nocache {c['nocache_vs_decode_max_abs_diff']:.2e}  "
      f"sdpa {c['sdpa_vs_eager_prefill_max_abs_diff']:.2e}  f32-vs-f64 logits "
      f"{max(c['f32_vs_f64_prefill_logits_max_abs_diff'], c['f32_vs_f64_decode_logits_max_abs_diff']):.2e}")
PYEOF
}

# Committed fixtures (tests/fixtures/README.md describes them).
gen "$FIX/tiny_ple"         --variant ple      --seed 0
gen "$FIX/tiny_moe"         --variant moe      --seed 0
gen "$FIX/tiny_ple_long"    --variant ple_long --seed 10
gen "$FIX/tiny_dense_kv"    --variant dense_kv --seed 2
gen "$FIX/tiny_ple_bf16_mm" --variant ple      --seed 3 --dtype bfloat16 --config-form multimodal --shards 2

# Geometries that are not whole tiles (head dims 16/48/40 with full-attention 48/80/72, windows 7/3/9,
# hidden 80/112/100, MLP widths 72/40/100, vocabularies 520/530): the Tenstorrent backend zero-pads
# them. Under odd_dims/ so that only the tests that name them (tests/tt_sim.rs) run them.
gen "$FIX/odd_dims/ple_hd16"   --variant ple      --seed 4 --set head_dim=16 --set global_head_dim=48 \
    --set sliding_window=7 --set hidden_size=80 --set intermediate_size=72 --set vocab_size=520 \
    --set vocab_size_per_layer_input=520
gen "$FIX/odd_dims/moe_hd48"   --variant moe      --seed 5 --set head_dim=48 --set global_head_dim=80 \
    --set sliding_window=3 --set hidden_size=112 --set intermediate_size=40 --set moe_intermediate_size=24 \
    --set vocab_size=530 --set vocab_size_per_layer_input=530
gen "$FIX/odd_dims/dense_hd40" --variant dense_kv --seed 6 --set head_dim=40 --set global_head_dim=72 \
    --set sliding_window=9 --set hidden_size=100 --set intermediate_size=100 --config-form multimodal

# HF greedy ids with the matmul weights rounded as `compile --weights bfp8` stores them (reference_bfp8.json).
printf '== reference_bfp8.json of every Gemma 4 fixture\n'
"$PY" "$ROOT/tools/make_bfp8_reference.py" "$FIX"/tiny_ple "$FIX"/tiny_moe "$FIX"/tiny_ple_long "$FIX"/tiny_dense_kv \
    "$FIX"/tiny_ple_bf16_mm "$FIX"/odd_dims/ple_hd16 "$FIX"/odd_dims/moe_hd48 "$FIX"/odd_dims/dense_hd40 2>/dev/null

# Chat-template renderings and a three-turn greedy conversation on tiny_ple (tests/fixtures/chat/).
printf '== tests/fixtures/chat/reference.json\n'
"$PY" "$ROOT/tools/make_chat_reference.py" "$FIX/chat/reference.json" 2>/dev/null

# Extra checkpoints that tests never saw (not committed).
if [[ -n "${UNSEEN_DIR:-}" ]]; then
    gen "$UNSEEN_DIR/ple_s7"      --variant ple      --seed 7
    gen "$UNSEEN_DIR/moe_s9"      --variant moe      --seed 9 --config-form multimodal --shards 3
    gen "$UNSEEN_DIR/ple_long_s6" --variant ple_long --seed 6 --dtype bfloat16 --shards 2
    gen "$UNSEEN_DIR/dense_kv_s9" --variant dense_kv --seed 9 --config-form multimodal
fi

du -sh "$FIX"
