#!/usr/bin/env python3
"""llama.cpp's own Q4_K and Q6_K quantization of generated data, the reference for `--quant q4_k|q6_k`.

Usage: python tools/make_kquant_reference.py OUT_DIR   (normally tests/fixtures/quant)

Run it with the Python that has llama-cpp-python (bench/compare.py's venv): it loads the libggml-base
shipped in the llama_cpp package and calls `ggml_quantize_chunk` without an importance matrix, which is
what `llama_model_quantize` does for a Q4_K_M file made without `--imatrix` (it runs
`quantize_row_q4_K_ref` / `quantize_row_q6_K_ref`; the script checks both entry points agree).

Writes OUT_DIR/<name>.input.f32 (little-endian float32 rows of 256 values) and OUT_DIR/<name>.quantized
(the blocks llama.cpp writes) for q4_K and q6_K; ir/tests/quant_gguf_py.rs compares gemma4c's
quantizers with them byte for byte. The rows cover random normal values at several scales, sub-blocks
of very different magnitudes (so the 6-bit/8-bit sub-block scales round), a zero row, constant rows,
all-positive and all-negative rows, a single outlier, values far below ggml's 1e-15 "all zero"
threshold and rounding ties. Deterministic for the fixed seed.
"""
import ctypes
import sys
from pathlib import Path

import numpy as np
import llama_cpp

QK_K = 256
# ggml_type enum values and block sizes (ggml.h).
FORMATS = {"q4_K": (12, 144, "quantize_row_q4_K_ref"), "q6_K": (14, 210, "quantize_row_q6_K_ref")}


def ggml_base():
    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    lib = ctypes.CDLL(str(lib_dir / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    for _, _, ref in FORMATS.values():
        getattr(lib, ref).argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    return lib


def rows(rng):
    r = [rng.normal(0.0, s, QK_K) for s in (0.02, 0.05, 1.0, 30.0)]
    r.append(rng.normal(0.0, 0.05, QK_K) * np.repeat(10.0 ** rng.uniform(-3, 1, QK_K // 16), 16))
    r.append(np.zeros(QK_K))
    r.append(np.full(QK_K, 0.75))
    r.append(np.full(QK_K, -0.125))
    r.append(np.abs(rng.normal(0.0, 0.1, QK_K)) + 0.01)  # min > 0: the min is clamped to 0
    r.append(-np.abs(rng.normal(0.0, 0.1, QK_K)))
    outlier = rng.normal(0.0, 0.01, QK_K)
    outlier[37] = 4.0
    r.append(outlier)
    r.append(rng.normal(0.0, 1.0, QK_K) * 1e-18)  # below GROUP_MAX_EPS
    r.append(rng.normal(0.0, 1.0, QK_K) * 1e-6)
    r.append(rng.integers(-8, 8, QK_K) / 2.0)  # many exact ties
    mixed = rng.normal(0.0, 0.05, QK_K)
    mixed[:32] = 0.0  # one zero sub-block among live ones
    mixed[64:96] = 0.3
    r.append(mixed)
    r.extend(rng.standard_t(3, (3, QK_K)) * 0.02)  # heavy tails, like trained weights
    return np.stack(r).astype(np.float32)


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    lib = ggml_base()
    rng = np.random.default_rng(13)
    for name, (ggml_type, block_bytes, ref) in FORMATS.items():
        data = np.ascontiguousarray(rows(rng))
        n_rows = data.shape[0]
        chunk = np.zeros(n_rows * block_bytes, dtype=np.uint8)
        size = lib.ggml_quantize_chunk(ggml_type, data.ctypes.data, chunk.ctypes.data, 0, n_rows, QK_K, None)
        assert size == chunk.size, (name, size)
        direct = np.zeros_like(chunk)
        getattr(lib, ref)(data.ctypes.data, direct.ctypes.data, data.size)
        assert (direct == chunk).all(), f"{name}: ggml_quantize_chunk and {ref} differ"
        (out / f"{name}.input.f32").write_bytes(data.astype("<f4").tobytes())
        (out / f"{name}.quantized").write_bytes(chunk.tobytes())
        print(f"{name}: quantized {n_rows} rows of {QK_K} with llama.cpp {llama_cpp.__version__}")


if __name__ == "__main__":
    main()
