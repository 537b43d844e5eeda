#!/usr/bin/env python3
"""llama-cpp-python helpers shared by bench/ and tools/ (run with the Python of its venv,
~/.cache/gemma4c/venv-llama).

- `without_extra_bufts()`: llama.cpp's extra CPU buffer types (weights repacked for its AMX /
  AVX-512 kernels) crash llama-cpp-python 0.3.36 here (a SIGSEGV in the first eval, on a CPU that
  reports AMX, on the tiny quantized fixtures and on real models alike); after this call every
  model loads with `use_extra_bufts = False`, i.e. llama.cpp's plain CPU kernels.
- `quantize(src, dst, kind)`: llama.cpp's own quantizer (`llama_model_quantize`, as
  `llama-quantize` without an importance matrix) from a GGUF file to Q8_0 or Q4_K_M.

As a script: `python tools/llama_cpp_compat.py quantize SRC.gguf DST.gguf q8_0|q4_k_m [THREADS]`.
"""
from __future__ import annotations

import ctypes
import sys

import llama_cpp
import llama_cpp.llama_cpp as capi

# llama_ftype values (llama.h): LLAMA_FTYPE_MOSTLY_Q8_0, LLAMA_FTYPE_MOSTLY_Q4_K_M.
FTYPES = {"q8_0": 7, "q4_k_m": 15}


def without_extra_bufts() -> None:
    default_params = capi.llama_model_default_params
    if getattr(default_params, "without_extra_bufts", False):
        return

    def params():
        p = default_params()
        p.use_extra_bufts = False
        return p

    params.without_extra_bufts = True
    # `Llama` reads the function through the llama_cpp.llama_cpp module; the package re-exports it.
    capi.llama_model_default_params = params
    llama_cpp.llama_model_default_params = params


def quantize(src: str, dst: str, kind: str, threads: int = 1) -> None:
    p = capi.llama_model_quantize_default_params()
    p.ftype = FTYPES[kind]
    p.nthread = threads
    rc = capi.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {src} -> {dst} ({kind}) failed: {rc}")


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6) or sys.argv[1] != "quantize" or sys.argv[4] not in FTYPES:
        sys.exit(__doc__)
    quantize(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) == 6 else 1)
