#!/usr/bin/env python3
"""Expected dequantized values for every GGUF block format gemma4c reads.

Usage: python tools/make_quant_fixtures.py OUT_DIR   (normally tests/fixtures/quant)

For each format writes OUT_DIR/<name>.blocks (raw GGUF blocks) and OUT_DIR/<name>.f32 (what
gguf-py's `gguf.quants.dequantize` makes of them, little-endian float32). The blocks are random
bytes (every bit pattern of the packed integers and 6-bit scales occurs) with the f16 scale fields
replaced by random finite values; q8_0 and q4_0/q5_0 additionally get blocks from gguf-py's own
`quantize` of random data. Deterministic for a fixed seed. Needs the `gguf` package
(tools/requirements-ref.txt).
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


if __name__ == "__main__":
    main()
