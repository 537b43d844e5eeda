#!/usr/bin/env python3
"""Expected dequantized values for every GGUF block format gemma4c reads.

Usage: python tools/make_quant_fixtures.py OUT_DIR   (normally tests/fixtures/quant)

For each format writes OUT_DIR/<name>.blocks (raw GGUF blocks) and OUT_DIR/<name>.f32 (what
gguf-py's `gguf.quants.dequantize` makes of them, little-endian float32). The blocks are random
bytes (every bit pattern of the packed integers and 6-bit scales occurs) with the f16 scale fields
replaced by random finite values; q8_0 and q4_0/q5_0 additionally get blocks from gguf-py's own
`quantize` of random data. Deterministic for a fixed seed. Needs the `gguf` package
(tools/requirements-ref.txt).

For the formats `--quant` writes (q8_0, q4_0) also OUT_DIR/<name>.input.f32 (random values with
a zero block, a block with a repeated extreme and values on rounding ties) and
OUT_DIR/<name>.quantized (gguf-py's `quantize` of them), from a separate seed so the files above
do not change.
"""
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

# name -> (type, byte offsets of its f16 scale fields inside one block)
FORMATS = {
    "q4_0": (T.Q4_0, [0]),
    "q4_1": (T.Q4_1, [0, 2]),
    "q5_0": (T.Q5_0, [0]),
    "q5_1": (T.Q5_1, [0, 2]),
    "q8_0": (T.Q8_0, [0]),
    "q4_K": (T.Q4_K, [0, 2]),
    "q5_K": (T.Q5_K, [0, 2]),
    "q6_K": (T.Q6_K, [208]),
}
BLOCKS = 6


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for name, (qtype, scale_at) in FORMATS.items():
        block_elems, block_bytes = quants.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(BLOCKS, block_bytes), dtype=np.uint8)
        for at in scale_at:
            scales = rng.uniform(-2.0, 2.0, size=BLOCKS).astype(np.float16)
            raw[:, at:at + 2] = scales.view(np.uint8).reshape(BLOCKS, 2)
        try:
            data = rng.normal(0.0, 1.0, size=(2, block_elems)).astype(np.float32)
            raw = np.concatenate([raw, quants.quantize(data, qtype).reshape(-1, block_bytes)])
        except NotImplementedError:
            pass
        values = quants.dequantize(raw.reshape(-1), qtype).astype("<f4")
        assert values.size == raw.shape[0] * block_elems and np.isfinite(values).all()
        (out / f"{name}.blocks").write_bytes(raw.tobytes())
        (out / f"{name}.f32").write_bytes(values.tobytes())
        print(f"{name}: {raw.shape[0]} blocks, {values.size} values")
    quantizer_fixtures(out)


def quantizer_fixtures(out: Path):
    rng = np.random.default_rng(12)
    for name, qtype in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0)]:
        block_elems, _ = quants.GGML_QUANT_SIZES[qtype]
        data = rng.normal(0.0, 0.05, size=(16, block_elems)).astype(np.float32)
        data[1] = 0.0
        data[2, :4] = [-1.0, 1.0, -1.0, 0.25]  # first extreme wins the Q4_0 tie
        # Values on x/d = n + 0.5 ties (d = 127/254 = 0.5 when max|x| = 63.5).
        data[3] = (np.arange(block_elems) - block_elems // 2 + 0.5).astype(np.float32)
        data[3, 0] = 63.5
        data[4] = rng.normal(0.0, 1.0, size=block_elems).astype(np.float32) * 1e-30  # tiny scales
        q = quants.quantize(data, qtype)
        (out / f"{name}.input.f32").write_bytes(data.astype("<f4").tobytes())
        (out / f"{name}.quantized").write_bytes(np.ascontiguousarray(q).tobytes())
        print(f"{name}: quantized {data.size} values")


if __name__ == "__main__":
    main()
