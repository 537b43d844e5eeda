#!/usr/bin/env python3
"""Build a random-weight Gemma 4 with the real E2B widths and a few layers (for benchmarks).

Usage:
    python bench/make_e2b_like.py OUT_DIR [--layers 6] [--dtype bfloat16|float32] [--seed 0]

The configuration is tests/configs/gemma-4-e2b.json's text config (hidden 1536, 8 query heads,
1 KV head, head_dim 256 / 512 on full layers, MLP 6144 (double-wide on KV-shared layers), PLE 256
per layer, vocabulary 262144, tied LM head, soft-cap 30) with `num_hidden_layers` cut to --layers:
like E2B, the last round(20 * N / 35) layers reuse K/V (with the double-wide MLP) and the
layers that own K/V and those that reuse it each end with a full-attention layer (6 layers:
S S F S S F). Weights are random (torch seed) with the library's
initialisation, then cast to --dtype and written with `save_pretrained` (safetensors).

A tokenizer.json is written too (llama.cpp's converter needs one): a byte-fallback BPE with the
262144-entry vocabulary of real Gemma id layout (<pad> <eos> <bos> <unk> ..., byte tokens, then
synthetic pieces). Its text is meaningless; benchmarks feed token ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from transformers import Gemma4ForCausalLM, Gemma4TextConfig

HERE = os.path.dirname(os.path.abspath(__file__))
E2B = os.path.join(HERE, "..", "tests", "configs", "gemma-4-e2b.json")


def text_config(layers: int) -> dict:
    with open(E2B) as f:
        full = json.load(f)
    tc = dict(full.get("text_config", full))
    pattern = tc["layer_types"]
    # E2B: 15 layers own K/V and the last 20 reuse it, each group a run of sliding layers
    # closed by a full one (S S S S F). Keep that shape: both groups end with a full layer.
    shared = round(tc["num_kv_shared_layers"] * layers / len(pattern))
    shared = 0 if layers < 4 else max(shared, 2)
    own = layers - shared
    S, F = "sliding_attention", "full_attention"
    tc["num_hidden_layers"] = layers
    tc["layer_types"] = [S] * (own - 1) + [F] + ([S] * (shared - 1) + [F] if shared else [])
    tc["num_kv_shared_layers"] = shared
    tc["max_position_embeddings"] = 4096
    for k in ["architectures", "model_type", "dtype", "torch_dtype", "transformers_version"]:
        tc.pop(k, None)
    return tc


def write_tokenizer(out_dir: str, vocab_size: int) -> None:
    """A byte-fallback BPE tokenizer with `vocab_size` entries and Gemma's special ids."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    # A few real merges (llama.cpp's BPE loader wants some), then filler pieces.
    merges = ["\u2581 t", "\u2581t o", "\u2581to k"]
    for piece in ["\u2581", "t", "o", "k", "\u2581t", "\u2581to", "\u2581tok"]:
        vocab[piece] = len(vocab)
    i = 0
    while len(vocab) < vocab_size:
        vocab[f"\u2581tok{i}"] = len(vocab)
        i += 1
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for i, t in enumerate(specials)
        ],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "ignore_merges": False, "vocab": vocab, "merges": merges},
    }
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GemmaTokenizer", "bos_token": "<bos>", "eos_token": "<eos>",
                   "pad_token": "<pad>", "unk_token": "<unk>", "add_bos_token": True,
                   "model_max_length": 4096}, f, indent=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    torch.manual_seed(args.seed)
    cfg = Gemma4TextConfig(**text_config(args.layers), attn_implementation="eager")
    with torch.no_grad():
        model = Gemma4ForCausalLM(cfg).eval()
        # The default init leaves norm weights at 1 and layer scalars at 1; fine for speed.
        model = model.to(getattr(torch, args.dtype))
    model.save_pretrained(args.out_dir)
    write_tokenizer(args.out_dir, cfg.vocab_size)
    total = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out_dir}: {args.layers} layers, {total / 1e6:.0f}M parameters, {args.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
