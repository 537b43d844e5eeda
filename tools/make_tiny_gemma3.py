#!/usr/bin/env python3
"""Build a tiny random Gemma 3 text model and its Hugging Face greedy reference.

Usage: python tools/make_tiny_gemma3.py OUT_DIR [--seed 0] [--config-form flat|multimodal]

Made like tools/make_tiny_gemma4.py (same tokenizer, same reference.safetensors keys, so the same
parity tests read it), with `Gemma3ForCausalLM` (transformers 5.23) as ground truth:
vocab 512, hidden 128, 6 layers S S F S S F, 4 query heads : 2 kv heads, head_dim 32, MLP 256,
sliding_window 5 (< the 12-token prompt), query_pre_attn_scalar 24 (so the score scale is not
1/sqrt(head_dim)), RoPE bases 10000 (sliding) and 1e6 with linear scaling factor 4 (full).
Every RMSNorm weight w ~ U(-0.5, 0.5) (Gemma 3 scales by 1 + w, so using w alone is caught), the final
norm's w ~ U(3, 7) for O(10) logits; embed_tokens (= tied
lm_head) ~ N(0, 0.03^2) and Linear weights ~ N(0, 4/fan_in) (so greedy decoding does not just repeat one token). Deterministic for a given --seed.

--config-form multimodal writes the released `gemma3` form: {"model_type": "gemma3",
"text_config": {..., "model_type": "gemma3_text"}} with tensors under `model.language_model.`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import Gemma3ForCausalLM, Gemma3TextConfig
from transformers.cache_utils import DynamicCache

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tiny_gemma4 import (  # noqa: E402  the shared tiny tokenizer
    DEFAULT_PROMPT, TOKENIZER_CONFIG, build_tokenizer, dump_json, tokenizer_json_text)

NEW_TOKENS = 12


def config() -> Gemma3TextConfig:
    return Gemma3TextConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, query_pre_attn_scalar=24,
        sliding_window=5, max_position_embeddings=256,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
            "full_attention": {"rope_type": "linear", "rope_theta": 1_000_000.0, "factor": 4.0},
        },
        attn_implementation="eager", tie_word_embeddings=True,
    )


@torch.no_grad()
def randomize_(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("embed_tokens.weight"):
            p.copy_(torch.randn(p.shape, generator=g) * 0.03)
        elif name == "model.norm.weight":
            p.copy_(3.0 + 4.0 * torch.rand(p.shape, generator=g))
        elif p.ndim == 1:
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)
        elif p.ndim == 2:
            p.copy_(torch.randn(p.shape, generator=g) * 2.0 * p.shape[1] ** -0.5)
        else:
            raise RuntimeError(f"unhandled parameter {name}")


@torch.no_grad()
def reference(model, cfg, prompt):
    captured = {}

    def save(name):
        def hook(_m, _inp, out):
            t = out[0] if isinstance(out, tuple) else out
            captured[name] = t.detach()[0].float().clone()
        return hook

    tm = model.model
    hooks = [tm.embed_tokens.register_forward_hook(save("prefill.inputs_embeds"))]
    hooks += [layer.register_forward_hook(save(f"prefill.layer_out.{i}")) for i, layer in enumerate(tm.layers)]
    hooks.append(tm.norm.register_forward_hook(save("prefill.final_norm")))
    hooks.append(model.lm_head.register_forward_hook(save("prefill.pre_softcap_logits")))
    cache = DynamicCache(config=cfg)
    out = model(input_ids=torch.tensor([prompt]), past_key_values=cache, use_cache=True, logits_to_keep=0)
    for h in hooks:
        h.remove()
    prefill = out.logits[0].float()
    steps, gen = [prefill[-1]], [int(prefill[-1].argmax())]
    for _ in range(NEW_TOKENS - 1):
        out = model(input_ids=torch.tensor([[gen[-1]]]), past_key_values=cache, use_cache=True)
        steps.append(out.logits[0, -1].float())
        gen.append(int(steps[-1].argmax()))
    # Cross-check: generate() agrees with the manual loop.
    full = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                          eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert full == gen, (full, gen)
    res = dict(prompt_ids=torch.tensor(prompt), generated_ids=torch.tensor(gen),
               prefill_logits=prefill.contiguous(), decode_logits=torch.stack(steps).contiguous())
    res.update({k: v.contiguous() for k, v in captured.items()})
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config-form", choices=["flat", "multimodal"], default="flat")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    cfg = config()
    model = Gemma3ForCausalLM(cfg).eval()
    randomize_(model, args.seed)
    model.save_pretrained(args.out_dir)
    path = os.path.join(args.out_dir, "config.json")
    cj = json.load(open(path))
    cj["dtype"] = "float32"
    if args.config_form == "multimodal":
        from safetensors.torch import load_file
        st = os.path.join(args.out_dir, "model.safetensors")
        tensors = {k.replace("model.", "model.language_model.", 1): v for k, v in load_file(st).items()}
        save_file(tensors, st, metadata={"format": "pt"})
        cj = {"model_type": "gemma3", "architectures": ["Gemma3ForConditionalGeneration"],
              "text_config": cj, "dtype": "float32", "bos_token_id": 2, "eos_token_id": [1, 106],
              "pad_token_id": 0, "image_token_index": 262144, "tie_word_embeddings": True}
    dump_json(path, cj)
    tok = build_tokenizer()
    with open(os.path.join(args.out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tokenizer_json_text(tok))
    dump_json(os.path.join(args.out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG)
    ref = reference(model, cfg, list(DEFAULT_PROMPT))
    save_file(ref, os.path.join(args.out_dir, "reference.safetensors"))
    dump_json(os.path.join(args.out_dir, "reference_meta.json"), {
        "model": "Gemma3ForCausalLM", "transformers": __import__("transformers").__version__,
        "seed": args.seed, "config_form": args.config_form, "prompt_ids": list(DEFAULT_PROMPT),
        "generated_ids": ref["generated_ids"].tolist()})
    print("generated", ref["generated_ids"].tolist())


if __name__ == "__main__":
    main()
