#!/usr/bin/env python3
"""Hugging Face greedy ids of a fixture for prompts of several lengths (the prefill checks).

Usage:
    python tools/make_prompt_length_reference.py FIXTURE_DIR [FIXTURE_DIR ...]

For each fixture, writes FIXTURE_DIR/reference_prompts.json:
    {"prompts": [{"prompt_ids": [...], "generated_ids": [...], "min_top1_top2_margin": float}, ...]}

Prompt lengths: 32 (exactly one Tenstorrent prefill chunk, a whole tile row) and 70 (two whole
chunks and a padded one; longer than every fixture's sliding window and than the 64-slot rings
of the Tenstorrent caches, so the ring wraps during prefill). The ids are BOS followed by ids drawn
from a fixed-seed generator below the vocabulary size. Greedy decoding of 8 new tokens with
float32 weights and eager attention, as the fixtures' own reference (tools/make_tiny_gemma4.py).
The smallest top-1/top-2 logit margin over the generated steps is recorded: a margin far above
the executors' float error means the expected ids are not a coin toss.
"""

from __future__ import annotations

import json
import os
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

LENGTHS = (32, 70)
NEW_TOKENS = 8


def load(fixture):
    cfg = AutoConfig.from_pretrained(fixture)
    if getattr(cfg, "text_config", None) is not None and cfg.model_type == "gemma4":
        from transformers import Gemma4ForConditionalGeneration as LoadClass
    else:
        LoadClass = AutoModelForCausalLM
    model = LoadClass.from_pretrained(
        fixture, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32
    ).eval()
    text = getattr(cfg, "text_config", None) or cfg
    return model, text.vocab_size, getattr(text, "bos_token_id", 2) or 2


def main():
    for fixture in sys.argv[1:]:
        model, vocab, bos = load(fixture)
        g = torch.Generator().manual_seed(1234)
        prompts = []
        with torch.no_grad():
            for n in LENGTHS:
                ids = [bos] + torch.randint(3, vocab, (n - 1,), generator=g).tolist()
                out = model.generate(
                    torch.tensor([ids]),
                    do_sample=False,
                    max_new_tokens=NEW_TOKENS,
                    min_new_tokens=NEW_TOKENS,
                    pad_token_id=0,
                    output_scores=True,
                    return_dict_in_generate=True,
                )
                gen = out.sequences[0, n:].tolist()
                margin = min(float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores)
                prompts.append({"prompt_ids": ids, "generated_ids": gen, "min_top1_top2_margin": margin})
                print(f"{fixture}: {n} prompt ids -> {gen} (margin {margin:.3g})")
        with open(os.path.join(fixture, "reference_prompts.json"), "w") as f:
            json.dump({"prompts": prompts}, f)
            f.write("\n")


if __name__ == "__main__":
    main()
