#!/usr/bin/env python3
"""Hugging Face greedy ids of a fixture whose matmul weights are rounded as `--weights bfp8` stores them.

Usage:
    python tools/make_bfp8_reference.py FIXTURE_DIR [FIXTURE_DIR ...]

For each fixture, writes FIXTURE_DIR/reference_bfp8.json:
    {"prompt_ids": [...], "generated_ids": [...], "matches_f32_reference": bool, "rounded": [names]}

The Tenstorrent backend with `--weights bfp8` stores every matmul weight as tt-metal's bfloat8_b
(backends/src/tt/bfp8.rs), except the per-layer-input (PLE) path and the MoE router; embeddings and
norms stay as they are. This script applies the same rounding to the same weights of the transformers
model (float32 compute, eager attention, as the fixture reference) and runs the same greedy decode, so
the simulator's ids under bfp8 can be compared with what bfp8 rounding alone does to the model.

The rounding groups 16 consecutive columns of a row of the device tensor W^T ([in, out], each segment of
`out` zero padded to whole 32-column tiles): for a Linear weight [out, in] that is, per input column,
runs of 16 output features inside one segment. Segments are the heads of q/k/v projections whose head_dim
is not a multiple of 32, the gate and up halves of each MoE expert, and otherwise the whole output row.
The LM head is the tied embedding read as a matmul: it is rounded as its own copy (the embedding lookup
keeps the original values), as on the device.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from transformers import AutoConfig, Gemma4ForCausalLM


def bfp8_round_rows(x: torch.Tensor) -> torch.Tensor:
    """Rounds [..., 16] blocks (float32) to bfloat8_b values: shared = max biased exponent of the
    block, 7-bit mantissa of the 24-bit significand shifted by (shared - own), ties to even, saturated
    at 127 (tt-metal's convert_u32_to_bfp<Bfp8_b, false>)."""
    bits = x.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    exp = (bits >> 23) & 0xFF
    shared = exp.max(dim=-1, keepdim=True).values
    zero = (bits & 0x7FFFFFFF) == 0
    sig = (1 << 23) | (bits & 0x7FFFFF)
    diff = (shared - exp).clamp(max=40)
    sig = torch.where(diff > 31, torch.zeros_like(sig), sig >> diff.clamp(max=31))
    rnd = sig & ((1 << 17) - 1)
    m = sig >> 17
    up = (rnd > (1 << 16)) | ((rnd == (1 << 16)) & ((m & 1) == 1))
    m = (m + up.to(torch.int64)).clamp(max=127)
    m = torch.where(zero, torch.zeros_like(m), m)
    val = m.to(torch.float64) * torch.pow(2.0, (shared - 127 - 6).to(torch.float64))
    sign = torch.where((bits >> 31) == 1, -1.0, 1.0).to(torch.float64)
    return (val * sign).to(torch.float32)


def round_linear(w: torch.Tensor, seg: int) -> torch.Tensor:
    """w [out, in]: per input column, blocks of 16 output features within segments of `seg`."""
    out, inp = w.shape
    assert out % seg == 0
    wt = w.detach().to(torch.float32).t().reshape(inp, out // seg, seg)
    pad = (-seg) % 16
    wt = torch.nn.functional.pad(wt, (0, pad))
    blocks = wt.reshape(inp, out // seg, (seg + pad) // 16, 16)
    r = bfp8_round_rows(blocks).reshape(inp, out // seg, seg + pad)[:, :, :seg]
    return r.reshape(inp, out).t().contiguous()


def main():
    for fixture in sys.argv[1:]:
        meta = json.load(open(os.path.join(fixture, "reference_meta.json")))
        cfg = AutoConfig.from_pretrained(fixture)
        multimodal = getattr(cfg, "text_config", None) is not None and cfg.model_type == "gemma4"
        if multimodal:
            from transformers import Gemma4ForConditionalGeneration as LoadClass
        else:
            LoadClass = Gemma4ForCausalLM
        model = LoadClass.from_pretrained(
            fixture, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32
        ).eval()
        rounded = []
        with torch.no_grad():
            for name, mod in model.named_modules():
                leaf = name.rsplit(".", 1)[-1]
                if isinstance(mod, torch.nn.Linear) and leaf != "lm_head":
                    if "per_layer" in name or "router" in name or "vision" in name or "audio" in name:
                        continue
                    seg = mod.weight.shape[0]
                    if leaf in ("q_proj", "k_proj", "v_proj"):
                        heads = mod.weight.shape[0]
                        attn = model.get_submodule(name.rsplit(".", 1)[0])
                        seg = attn.head_dim if hasattr(attn, "head_dim") else heads
                    mod.weight.copy_(round_linear(mod.weight, seg))
                    rounded.append(name)
                elif leaf == "experts" and hasattr(mod, "gate_up_proj"):
                    gu, down = mod.gate_up_proj, mod.down_proj  # [e, 2i, h], [e, h, i]
                    i = gu.shape[1] // 2
                    gu.copy_(torch.stack([round_linear(gu[e], i) for e in range(gu.shape[0])]))
                    down.copy_(torch.stack([round_linear(down[e], down.shape[1]) for e in range(down.shape[0])]))
                    rounded.append(name)
            # The LM head: its own rounded copy of the tied embedding.
            emb = model.get_input_embeddings().weight
            head = torch.nn.Linear(emb.shape[1], emb.shape[0], bias=False)
            head.weight = torch.nn.Parameter(round_linear(emb, emb.shape[0]))
            model.lm_head = head
            rounded.append("lm_head")
            prompt = meta["prompt_ids"]
            n_new = len(meta["generated_ids"])
            gen = model.generate(
                torch.tensor([prompt]), do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new, pad_token_id=0
            )[0, len(prompt):].tolist()
        out = {
            "prompt_ids": prompt,
            "generated_ids": gen,
            "matches_f32_reference": gen == meta["generated_ids"],
            "rounded": rounded,
        }
        with open(os.path.join(fixture, "reference_bfp8.json"), "w") as f:
            json.dump(out, f, indent=1)
            f.write("\n")
        print(f"{fixture}: {gen} (same as the f32 reference: {out['matches_f32_reference']})")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
