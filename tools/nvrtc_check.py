#!/usr/bin/env python3
"""Compiles CUDA C files with NVRTC (the pip wheel's libnvrtc, loaded with ctypes) to PTX.

usage: nvrtc_check.py WHEEL_DIR ARCH FILE.cu...   (ARCH e.g. compute_90)
Writes FILE.ARCH.ptx next to each source; prints the NVRTC log and exits 1 on the first failure.
ctypes keeps this free of any CUDA Python package: the wheels alone suffice.
"""
import ctypes
import glob
import sys

wheel, arch, files = sys.argv[1], sys.argv[2], sys.argv[3:]
lib = ctypes.CDLL(glob.glob(f"{wheel}/nvidia/cuda_nvrtc/lib/libnvrtc.so.12")[0])
include = f"{wheel}/nvidia/cuda_runtime/include"
for path in files:
    src = open(path, "rb").read()
    prog = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(prog), src, path.encode(), 0, None, None) == 0
    opts = [f"--gpu-architecture={arch}".encode(), f"-I{include}".encode(), b"-default-device"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if rc != 0:
        print(f"{path}: NVRTC {arch} failed:\n{log.value.decode()}")
        sys.exit(1)
    lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetPTX(prog, ptx)
    out = path.rsplit(".", 1)[0] + f".{arch}.ptx"
    open(out, "wb").write(ptx.value)
    print(f"{path}: {arch} ok, {len(ptx.value)} bytes of PTX")
