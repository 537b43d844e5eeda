#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, made from the test fixtures (stdlib only).

checkpoint: small valid safetensors files (a few tensors of each fixture, re-packed)
            and a shard index; config: every fixture and released config.json;
            gguf: a minimal header and the GGUF fixtures; gguf_model: the GGUF fixtures
            up to 400 000 bytes (the fuzzer's -max_len);
            plan, plan_quant: plan.json files compiled from the fixtures (by scripts/fuzz.sh).
Usage: tools/fuzz_seeds.py OUT_DIR
"""
import json
import pathlib
import struct
import sys

root = pathlib.Path(__file__).resolve().parent.parent
out = pathlib.Path(sys.argv[1])
for target in ("checkpoint", "config", "plan", "gguf", "gguf_model", "plan_quant"):
    (out / target).mkdir(parents=True, exist_ok=True)

fixtures = sorted(p for p in (root / "tests/fixtures").iterdir() if (p / "config.json").exists())
for fx in fixtures:
    (out / "config" / f"{fx.name}.json").write_bytes((fx / "config.json").read_bytes())
for cfg in sorted((root / "tests/configs").glob("*.json")):
    (out / "config" / cfg.name).write_bytes(cfg.read_bytes())

for fx in fixtures:
    if not (fx / "model.safetensors").exists():
        continue  # sharded fixtures: their shards are seeded like single files
    raw = (fx / "model.safetensors").read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    # The smallest tensors, re-packed with fresh offsets: a seed of a few KB.
    names = sorted(
        (k for k in header if k != "__metadata__"),
        key=lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0],
    )[:6]
    new_header, body = {}, b""
    for k in names:
        b, e = header[k]["data_offsets"]
        new_header[k] = {"dtype": header[k]["dtype"], "shape": header[k]["shape"],
                         "data_offsets": [len(body), len(body) + e - b]}
        body += data[b:e]
    text = json.dumps(new_header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    (out / "checkpoint" / f"{fx.name}.safetensors").write_bytes(struct.pack("<Q", len(text)) + text + body)

# An index for the fuzz target's two fixed shards (see fuzz/fuzz_targets/checkpoint.rs).
index = {"metadata": {"total_size": 32}, "weight_map": {
    "model.norm.weight": "model-00001-of-00002.safetensors",
    "model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}
(out / "checkpoint" / "index.json").write_text(json.dumps(index))

# GGUF: a version-3 header with one string and one u32 metadata entry and no tensors, and any
# committed .gguf fixtures.
def gguf_str(t):
    b = t.encode()
    return struct.pack("<Q", len(b)) + b
kv = gguf_str("general.architecture") + struct.pack("<I", 8) + gguf_str("gemma3")
kv += gguf_str("gemma3.block_count") + struct.pack("<I", 4) + struct.pack("<I", 2)
(out / "gguf" / "minimal.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv)
for g in sorted((root / "tests").rglob("*.gguf")):
    if g.stat().st_size <= 1 << 20:
        (out / "gguf" / g.name).write_bytes(g.read_bytes())
for g in sorted((root / "tests/fixtures/gguf").glob("*.gguf")):
    if g.stat().st_size <= 400_000:
        (out / "gguf_model" / g.name).write_bytes(g.read_bytes())
