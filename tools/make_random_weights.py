#!/usr/bin/env python3
"""Random weights for a compiled gemma4c plan, written as a safetensors checkpoint.

usage: make_random_weights.py PLAN_DIR CONFIG_JSON OUT_DIR [--seed 0] [--device cuda|cpu]

For benchmarks on a machine with PyTorch only (no transformers, no safetensors package):
every tensor the plan binds (plan.json `weights`: key, shape, dtype) gets normal(0, 0.02)
values (norm weights 1 + that), stored under `model.<key>`, and CONFIG_JSON is copied beside
them, so `gemma4c run/bench --plan PLAN_DIR --model OUT_DIR` accepts the checkpoint (same
config fingerprint, every tensor with the planned shape and dtype). The values mean nothing;
decode reads every weight once per token whatever they are.
"""
import argparse
import json
import os
import shutil
import struct

import torch

DTYPES = {"bf16": (torch.bfloat16, "BF16"), "f16": (torch.float16, "F16"), "f32": (torch.float32, "F32")}

ap = argparse.ArgumentParser()
ap.add_argument("plan_dir")
ap.add_argument("config")
ap.add_argument("out_dir")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
args = ap.parse_args()

with open(os.path.join(args.plan_dir, "plan.json")) as f:
    weights = json.load(f)["weights"]
os.makedirs(args.out_dir, exist_ok=True)
shutil.copy(args.config, os.path.join(args.out_dir, "config.json"))
gen = torch.Generator(device=args.device).manual_seed(args.seed)
header, offset, blobs = {}, 0, []
for w in weights:
    dtype, st_name = DTYPES[w["dtype"]]
    t = torch.randn(w["shape"], generator=gen, device=args.device, dtype=torch.float32) * 0.02
    if "norm" in w["key"]:
        t += 1.0
    data = t.to(dtype).contiguous().view(torch.uint8).cpu().numpy().tobytes()
    header["model." + w["key"]] = {"dtype": st_name, "shape": w["shape"], "data_offsets": [offset, offset + len(data)]}
    offset += len(data)
    blobs.append(data)
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open(os.path.join(args.out_dir, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for b in blobs:
        f.write(b)
print(f"wrote {args.out_dir}: {len(weights)} tensors, {offset / 1e9:.2f} GB")
