"""Every generated TT-Lang kernel family against the IR's reference semantics.

The cases (random inputs in device layout, the kernel calls, and the expected outputs computed
by gemma4c_ir::eval in Rust) come from tests/tt/cases.rs via $TT_CASES; this file only uploads,
launches and compares. Tolerances: fp32 mode 2e-4 (plus 2e-4 of the output's largest
magnitude); real-bf16 mode 3 % of the output's largest magnitude (bf16 inputs, weights, storage
and math against an f32 reference).
"""

import json
import os

import numpy as np
import pytest

CASES = os.environ.get("TT_CASES")
if not CASES:
    pytest.skip("TT_CASES is not set: run through `cargo test --test tt_sim`", allow_module_level=True)

import torch  # noqa: E402
import ttnn  # noqa: E402

import kernels as K  # noqa: E402  (the bundle's generated kernels)

BF16 = os.environ.get("TTSIM_BF16", "0") == "1"
ATOL, RTOL = (0.03, 0.03) if BF16 else (2e-4, 2e-4)


def read_tensors(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[b:e], dtype="<f4").reshape(info["shape"]).copy())
    return out


TENSORS = read_tensors(os.path.join(CASES, "cases.safetensors"))
MANIFEST = json.load(open(os.path.join(CASES, "cases.json")))["cases"]


def up(t):
    if t.shape[0] % 32:
        t = torch.cat([t, torch.zeros(32 - t.shape[0] % 32, t.shape[1])], 0)
    return ttnn.from_torch(t.clone(), dtype=ttnn.bfloat16, layout=ttnn.TILE_LAYOUT, memory_config=ttnn.DRAM_MEMORY_CONFIG)


@pytest.mark.parametrize("case", MANIFEST, ids=[c["name"] for c in MANIFEST])
def test_kernel_case(case):
    name = case["name"]
    dev = {t: up(TENSORS[f"{name}/{t}"]) for t in case["tensors"]}
    for call in case["calls"]:
        fn = getattr(K, call["kernel"])
        if call["instance"] is not None:
            fn = fn(call["instance"])
        fn(*[dev[a] for a in call["args"]])
    for out in case["outputs"]:
        got = ttnn.to_torch(dev[out["tensor"]]).to(torch.float32)
        want = TENSORS[f"{name}/{out['expected']}"]
        rows = out["rows"] or want.shape[0]
        got, want = got[:rows], want[:rows]
        assert got.shape == want.shape, (got.shape, want.shape)
        err = (got - want).abs().max().item()
        scale = want.abs().max().item()
        assert err <= ATOL * (scale if BF16 else 1.0) + RTOL * scale, (
            f"{name}: {out['tensor']} max |err| {err:.3e} (largest |expected| {scale:.3e})"
        )
