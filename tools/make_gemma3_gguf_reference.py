#!/usr/bin/env python3
"""Reference outputs of the real Gemma 3 270M Q4_K_M GGUF, from Hugging Face transformers.

Usage: python tools/make_gemma3_gguf_reference.py MODEL.gguf OUT.json

transformers loads the GGUF itself (`from_pretrained(dir, gguf_file=...)`: its tokenizer is rebuilt
from the `tokenizer.ggml.*` metadata and the weights are dequantized with gguf-py, then run in
float32). For each prompt we record the prompt ids (BOS added, as llama.cpp does for this file),
15 greedy tokens, their text, and the 8 largest first-step logits. For the tokenizer we record the
ids of a set of strings (no BOS). llama.cpp (measured separately, see the README) prints the same
15 tokens for "The capital of France is".
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The capital of France is",
    "Once upon a time",
    "def fibonacci(n):",
    "The three primary colors are",
]
TOKENIZER_CASES = [
    "Hello world",
    "  two leading spaces and trailing  ",
    "line one\nline two\n\n\ttabbed",
    "naïve café, 東京タワー and emoji 🙂!",
    "<start_of_turn>user\nHi<end_of_turn>\n",
    "x = [i**2 for i in range(10)]  # squares",
    "1234567890 3.14159",
]
NEW_TOKENS = 15


def main():
    gguf = Path(sys.argv[1]).resolve()
    out = Path(sys.argv[2])
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    prompts = []
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        ids = [tok.bos_token_id] + ids
        with torch.no_grad():
            first = model(torch.tensor([ids])).logits[0, -1]
            gen = model.generate(torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
        new = gen[0, len(ids):].tolist()
        top = torch.topk(first, 8)
        prompts.append({
            "prompt": text,
            "prompt_ids": ids,
            "greedy_ids": new,
            "greedy_text": tok.decode(new),
            "first_step_top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)],
        })
        print(text, "->", repr(tok.decode(new)))
    cases = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TOKENIZER_CASES]
    meta = {
        "source": "transformers GGUF loading (dequantized, float32), greedy",
        "transformers": __import__("transformers").__version__,
        "new_tokens": NEW_TOKENS,
    }
    out.write_text(json.dumps({"meta": meta, "prompts": prompts, "tokenizer": cases}, indent=1,
                              ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
