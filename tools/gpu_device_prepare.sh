#!/usr/bin/env bash
# Builds the bundle tools/gpu_device_check.sh runs on a machine with an NVIDIA GPU, its driver
# (R575 or newer: NVRTC 12.9 PTX is version 8.8), python3 with PyTorch and numpy, and nothing
# else (no Rust, no LLVM, no NVRTC needed there). Run here, after scripts/setup.sh (it needs
# the NVRTC wheels for kernels.ptx and the reference venv for the E2B-width config):
#
#   bash tools/gpu_device_prepare.sh OUT_DIR
#
# OUT_DIR then holds (about 40 MB, under the 64 MiB a borrowed GPU machine takes):
#   bin/gemma4c            cargo build --release --no-default-features --features cuda, stripped
#   fixtures/NAME/         the Gemma 4 fixtures' configs and weights
#   plans/NAME/            each compiled with --target cuda-sm90 (kernels.cu + kernels.ptx)
#   expected/NAME/         HF's prompt, 12 greedy ids and decode logits (reference.safetensors)
#   e2b/config.json        bench/make_e2b_like.py's 6-layer E2B-width config (bf16)
#   plans/e2b/             that config compiled for cuda-sm90 (weights made on the GPU machine
#                          by make_random_weights.py: 1.6 GB would not fit the bundle)
#   gpu_device_check.sh, make_random_weights.py
set -euo pipefail
out=${1:?usage: gpu_device_prepare.sh OUT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${GEMMA4C_REF_VENV:-$HOME/.cache/gemma4c/venv-ref}
cd "$root"
cargo build --release --no-default-features --features cuda
mkdir -p "$out"/{bin,fixtures,plans,expected,e2b}
strip -o "$out/bin/gemma4c" target/release/gemma4c
bin="$out/bin/gemma4c"
for dir in tests/fixtures/tiny_*/; do
    name=$(basename "$dir")
    grep -q '"gemma4' "$dir/config.json" || continue
    mkdir -p "$out/fixtures/$name" "$out/expected/$name"
    cp "$dir"/config.json "$dir"/generation_config.json "$dir"/model*.safetensors* "$out/fixtures/$name/"
    "$bin" compile --model "$out/fixtures/$name" --target cuda-sm90 --out "$out/plans/$name"
    test -f "$out/plans/$name/kernels.ptx" || { echo "no kernels.ptx for $name (NVRTC wheels?)"; exit 1; }
    "$venv/bin/python" - "$dir/reference.safetensors" "$out/expected/$name" <<'PY'
import sys, numpy as np
from safetensors.numpy import load_file
ref, out = load_file(sys.argv[1]), sys.argv[2]
open(f"{out}/prompt.txt", "w").write(",".join(str(int(x)) for x in ref["prompt_ids"]))
open(f"{out}/ids.txt", "w").write(" ".join(str(int(x)) for x in ref["generated_ids"][:12]))
np.save(f"{out}/decode_logits.npy", ref["decode_logits"][:12].astype(np.float32))
PY
done
"$venv/bin/python" - "$out/e2b" <<'PY'
import json, os, sys
sys.path.insert(0, "bench")
from make_e2b_like import text_config
from transformers import Gemma4TextConfig
cfg = Gemma4TextConfig(**text_config(6))
cfg.architectures = ["Gemma4ForCausalLM"]
cfg.dtype = "bfloat16"
cfg.save_pretrained(sys.argv[1])
PY
"$bin" compile --config "$out/e2b/config.json" --target cuda-sm90 --out "$out/plans/e2b" --max-context 1024
test -f "$out/plans/e2b/kernels.ptx"
cp tools/gpu_device_check.sh tools/make_random_weights.py "$out/"
du -sh "$out"
