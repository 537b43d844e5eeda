#!/usr/bin/env python3
"""Decode/prefill speed of llama.cpp (via llama-cpp-python) on a GGUF file, as JSON.

Usage: python bench/llama_bench.py MODEL.gguf THREADS PROMPT_TOKENS TOKENS

Feeds the same deterministic ids as `gemma4c bench` (i * 2654435761 + 12345 mod vocab), after a
warm-up pass; decode feeds one token per call (greedy choice does not change the cost).
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import llama_cpp_compat  # noqa: E402
from llama_cpp import Llama  # noqa: E402

if os.environ.get("GEMMA4C_LLAMA_NO_EXTRA_BUFTS") == "1":
    llama_cpp_compat.without_extra_bufts()


def main() -> None:
    path, threads, n_prompt, n_decode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    llm = Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=n_prompt + n_decode + 16,
                n_batch=n_prompt, n_ubatch=n_prompt, use_mmap=True, verbose=False)
    vocab = llm.n_vocab()
    prompt = [(i * 2654435761 + 12345) % vocab for i in range(n_prompt)]
    llm.eval(prompt)  # warm-up: page in the weights
    for t in prompt[:2]:
        llm.eval([t])
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    prefill = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n_decode):
        llm.eval([prompt[i % n_prompt]])
    decode = time.perf_counter() - start
    print(json.dumps({"prefill_tok_s": n_prompt / prefill, "decode_tok_s": n_decode / decode, "threads": threads}))


if __name__ == "__main__":
    main()
