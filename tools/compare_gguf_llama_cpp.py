#!/usr/bin/env python3
"""How close llama.cpp comes to gemma4c and transformers on the GGUF parity fixtures.

Usage: ~/.cache/gemma4c/venv-llama/bin/python tools/compare_gguf_llama_cpp.py [--gemma4c BIN] [DIR]
(DIR defaults to tests/fixtures/gguf; BIN, e.g. target/release/gemma4c, adds gemma4c's own ids.)

For every NAME.expected.json (tools/make_gguf_fixtures.py: transformers on the weights gguf-py
dequantizes from NAME's GGUF), llama.cpp (llama-cpp-python, CPU, 1 thread) runs the same file:
- tokenization: llama.cpp's ids for the prompt text against transformers';
- free-running greedy: llama.cpp's 12 ids from the reference prompt ids, and how many leading
  ids equal the reference's (and gemma4c's);
- teacher-forced: the prompt plus the reference's greedy ids fed in one batch, so every step's
  logits compare with the reference at the same context: max |logit difference| over all steps
  and the vocabulary (and at the first step), and at how many steps llama.cpp's argmax is the
  reference's id;
- for scale: how many leading greedy ids transformers on the checkpoint's own f32 weights shares
  with the reference (these tiny random models are sensitive: rounding the weights alone can
  change the first token).
llama.cpp runs without its extra CPU buffer types (repacked weights, AMX): with them it crashes on
these tiny Q4_K_M files here. llama.cpp quantizes activations to the weights' block type (Q8_0/Q8_K) in its quantized matmuls
and stores its KV cache in f16, so exact agreement is not expected on quantized files.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def llama(path: str):
    import llama_cpp
    import llama_cpp_compat

    # llama.cpp's extra CPU buffer types (weight repacking, AMX) crash (SIGSEGV) on these tiny
    # quantized tensors on this CPU; the plain CPU buffers run them.
    llama_cpp_compat.without_extra_bufts()
    return llama_cpp.Llama(model_path=path, n_ctx=64, n_batch=64, n_threads=1, logits_all=True,
                           verbose=False, seed=0)


def greedy(llm, prompt: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(prompt)
    out = []
    for _ in range(n):
        t = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(t)
        llm.eval([t])
    return out


def teacher_forced(llm, prompt: list[int], ids: list[int]) -> np.ndarray:
    """Logits at the last prompt position and after each reference id but the last: [n, vocab]."""
    llm.reset()
    llm.eval(prompt + ids[:-1])
    return np.array(llm.scores[len(prompt) - 1: len(prompt) - 1 + len(ids)], dtype=np.float32)


def leading_equal(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def gemma4c_ids(binary: str, path: str, prompt: list[int], n: int) -> list[int]:
    r = subprocess.run([binary, "run", "--model", path, "--prompt-ids", ",".join(map(str, prompt)),
                        "--max-new-tokens", str(n), "--output", "ids", "--quiet"],
                       capture_output=True, text=True, check=True)
    return [int(t) for t in r.stdout.split()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", nargs="?", default=os.path.join(ROOT, "tests", "fixtures", "gguf"))
    ap.add_argument("--gemma4c", help="a gemma4c binary, to compare its greedy ids too")
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.dir, "*.expected.json")))
    if not files:
        sys.exit(f"no *.expected.json in {args.dir}")
    header = (f"{'file':26} {'tokens':>6} {'greedy=ref':>10} {'forced argmax=ref':>17} {'step-1 |dlogit|':>15} "
              f"{'max |dlogit|':>12} {'unquantized=ref':>15}")
    if args.gemma4c:
        header += f" {'gemma4c=ref':>11} {'gemma4c=llama':>13}"
    print(header)
    for f in files:
        with open(f) as fh:
            e = json.load(fh)
        path = os.path.join(os.path.dirname(f), e["file"])
        prompt, ref = e["prompt_ids"], e["greedy_ids"]
        llm = llama(path)
        tok = llm.tokenize(e["prompt"].encode(), add_bos=True, special=True)
        ids = greedy(llm, prompt, len(ref))
        forced = teacher_forced(llm, prompt, ref)
        want = np.array(e["logits"], dtype=np.float32)
        diff = float(np.max(np.abs(forced - want)))
        first = float(np.max(np.abs(forced[0] - want[0])))
        # How far the reference itself moved from the checkpoint's own (unquantized f32) weights.
        orig = leading_equal(e["original_weights_greedy_ids"], ref)
        hits = int(np.sum(np.argmax(forced, axis=1) == np.array(ref)))
        row = (f"{e['file']:26} {'same' if tok == prompt else 'differ':>6} "
               f"{leading_equal(ids, ref):>7}/{len(ref):<2} {hits:>14}/{len(ref):<2} {first:>15.2e} "
               f"{diff:>12.2e} {orig:>12}/{len(ref):<2}")
        if args.gemma4c:
            g = gemma4c_ids(args.gemma4c, path, prompt, len(ref))
            row += f" {leading_equal(g, ref):>8}/{len(ref):<2} {leading_equal(g, ids):>10}/{len(ref):<2}"
        print(row)
        if tok != prompt:
            print(f"  llama.cpp tokens {tok} vs transformers {prompt}")
        if ids != ref:
            print(f"  llama.cpp greedy {ids}\n  reference        {ref}")


if __name__ == "__main__":
    main()
