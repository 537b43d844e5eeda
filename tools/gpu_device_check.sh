#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, inside a bundle made by tools/gpu_device_prepare.sh:
#
#   bash gpu_device_check.sh
#
# 1. Every fixture's cuda-sm90 plan through `gemma4c run --plan` on the GPU: the 12 greedy ids
#    must equal Hugging Face's, and the logits of every step must be within 5e-3 of HF f32
#    (as tests/wgpu_run.rs on lavapipe); then again without --logits-out (argmax on the device,
#    decode replayed as a CUDA graph), same ids.
# 2. Random bf16 weights for the 6-layer E2B-width plan (PyTorch), then `gemma4c bench --plan`:
#    decode tok/s, weight bytes per token, effective GB/s and the fraction of the
#    device-to-device copy bandwidth measured in the same run.
# Ends with one PASS/FAIL line per check; exit status 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")"
work=${TMPDIR:-/tmp}/gemma4c-gpu-check
mkdir -p "$work"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
results=()
fail=0
for plan in plans/*/; do
    name=$(basename "$plan")
    [ "$name" = e2b ] && continue
    prompt=$(cat "expected/$name/prompt.txt")
    want=$(cat "expected/$name/ids.txt")
    got=$(timeout 120 bin/gemma4c run --plan "$plan" --model "fixtures/$name" --prompt-ids "$prompt" \
        --max-new-tokens 12 --output ids --logits-out "$work/$name.npy" 2>"$work/$name.err")
    rc=$?
    if [ $rc -ne 0 ] || [ "$got" != "$want" ]; then
        results+=("FAIL $name host-argmax: rc=$rc got [$got] want [$want]: $(tail -3 "$work/$name.err")")
        fail=1
        continue
    fi
    diff=$(python3 -c "import numpy as np,sys; a=np.load(sys.argv[1]); b=np.load(sys.argv[2]); print(float(np.abs(a-b).max()))" \
        "$work/$name.npy" "expected/$name/decode_logits.npy")
    if ! python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 5e-3 else 1)" "$diff"; then
        results+=("FAIL $name logits: max |dlogit| = $diff > 5e-3")
        fail=1
        continue
    fi
    got=$(timeout 120 bin/gemma4c run --plan "$plan" --model "fixtures/$name" --prompt-ids "$prompt" \
        --max-new-tokens 12 --output ids 2>"$work/$name.err2")
    rc=$?
    if [ $rc -ne 0 ] || [ "$got" != "$want" ] || ! grep -q "greedy ids picked on the device" "$work/$name.err2"; then
        results+=("FAIL $name device-argmax: rc=$rc got [$got] want [$want]: $(tail -3 "$work/$name.err2")")
        fail=1
        continue
    fi
    results+=("PASS $name: 12 ids = HF (host and device argmax), max |dlogit| = $diff ($(grep 'CUDA device' "$work/$name.err"))")
done
if timeout 300 python3 make_random_weights.py plans/e2b e2b/config.json "$work/e2b_model"; then
    timeout 300 bin/gemma4c bench --plan plans/e2b --model "$work/e2b_model" --prompt-tokens 128 --tokens 256
    if timeout 300 bin/gemma4c bench --plan plans/e2b --model "$work/e2b_model" --prompt-tokens 128 --tokens 256 --json >"$work/bench.json"; then
        results+=("PASS bench: $(python3 -c "import json,sys; b=json.load(open(sys.argv[1])); print(f\"{b['decode_tok_s']:.1f} tok/s decode, {b['weight_bytes_per_token']/1e6:.0f} MB/token, {b['effective_gb_s']:.0f} GB/s = {100*b['bandwidth_fraction']:.1f}% of {b['copy_bandwidth_gb_s']:.0f} GB/s copy; prefill {b['prefill_tok_s']:.0f} tok/s\")" "$work/bench.json")")
    else
        results+=("FAIL bench: see above")
        fail=1
    fi
else
    results+=("FAIL bench: random weights not written")
    fail=1
fi
printf '%s\n' "${results[@]}"
exit $fail
