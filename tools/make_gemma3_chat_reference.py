#!/usr/bin/env python3
"""A greedy three-turn chat on the real Gemma 3 270M Q4_K_M GGUF, from Hugging Face transformers.

Usage: python tools/make_gemma3_chat_reference.py MODEL.gguf [OUT_JSON]
       (default tests/fixtures/gemma3_270m/chat_reference.json)

The GGUF has no `tokenizer.chat_template`, so the Gemma 3 test template
(tests/fixtures/chat/gemma3_chat_template.jinja) is used, as `gemma4c chat --chat-template` does.
transformers loads the GGUF itself (tokenizer from `tokenizer.ggml.*`, weights dequantized with
gguf-py, float32). The conversation follows tools/make_chat_reference.py: each turn feeds only the
tokens that are new after those already in the cache, stops at eos ids [1, 106] (`<eos>`,
`<end_of_turn>`) or after MAX_NEW tokens.
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_chat_reference import conversation  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EOS = [1, 106]
MAX_NEW = 8
SYSTEM = "Answer in one short sentence."
USERS = ["What is the capital of France?", "And of Italy?", "Thanks! Which one is bigger?"]


def main():
    gguf = Path(sys.argv[1]).resolve()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "tests/fixtures/gemma3_270m/chat_reference.json"
    if transformers.__version__ != "5.23.0":
        sys.exit(f"transformers {transformers.__version__}: the reference is defined by 5.23.0")
    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.eval()
    conv = conversation(tok, model, name="gemma3", eos=EOS, max_new=MAX_NEW, system=SYSTEM, users=USERS)
    conv["fixture"] = "gemma-3-270m-Q4_K_M.gguf"
    conv["transformers"] = transformers.__version__
    out.write_text(json.dumps(conv, indent=1, ensure_ascii=False) + "\n")
    for t in conv["turns"]:
        print(f"fed {len(t['new_ids'])} generated {t['generated']} {t['reply']!r} margin {t['min_top1_top2_margin']}")


if __name__ == "__main__":
    main()
