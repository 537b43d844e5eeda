#!/usr/bin/env python3
"""GGUF parity fixtures made the way users make GGUF files, with transformers references.

Usage: python tools/make_gguf_fixtures.py [OUT_DIR]    (default tests/fixtures/gguf)
       python tools/make_gguf_fixtures.py OUT_DIR --checkpoint HF_DIR [--checkpoint ...]
       (then GEMMA4C_GGUF_FIXTURES=OUT_DIR cargo test --test gguf_fixtures checks gemma4c on them)
Run with the reference venv (transformers 5.23, torch, sentencepiece); it also needs
llama-cpp-python (for llama.cpp's quantizer) in ~/.cache/gemma4c/venv-llama and the
llama-cpp-python sdist unpacked in ~/.cache/gemma4c (llama.cpp's convert_hf_to_gguf.py and
its gguf-py, which must match the converter); GEMMA4C_LLAMA_SRC / GEMMA4C_LLAMA_PY override.

Two tiny random checkpoints (transformers, float32) are built in a temporary directory:
- gemma4: Gemma 4 with Per-Layer Embeddings, KV sharing (2 of 4 layers), the double-wide MLP
  of sharing layers, per-layer head dims (16 sliding, 32 full), proportional RoPE, soft-cap;
  narrow (hidden 64), so llama.cpp stores its Q4_K_M rows as Q5_0/Q8_0 (rows under 256);
- gemma4_moe: Gemma 4 with routed experts (4, top 2) beside the dense MLP, K=V full layers with
  one global KV head against two sliding ones (f16 and Q4_K_M only, to keep the files small);
- gemma3: Gemma 3, wide enough (hidden 256) that Q4_K and Q6_K blocks really appear, with a
  SentencePiece tokenizer.model (as released Gemma 3 has), the period-6 layer pattern llama.cpp
  assumes, query_pre_attn_scalar = head_dim and linear RoPE scaling on the full layer.
Each is converted with llama.cpp's own convert_hf_to_gguf.py to f16, then quantized with
llama.cpp's quantizer (llama_cpp.llama_model_quantize, one thread) to Q8_0 and Q4_K_M.

For every GGUF, the reference is transformers run on the weights gguf-py dequantizes from that
file (names mapped back with gguf-py's own tensor map; Gemma 3 norms stored as 1 + w get the 1
removed): the prompt's greedy ids for 12 tokens and the logits of each step, written to
NAME.expected.json with the file's sha256 and the element types it holds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

CACHE = os.path.expanduser("~/.cache/gemma4c")
LLAMA_SRC = os.environ.get(
    "GEMMA4C_LLAMA_SRC", os.path.join(CACHE, "llama-cpp-python-0.3.36-src", "vendor", "llama.cpp"))
LLAMA_PY = os.environ.get("GEMMA4C_LLAMA_PY", os.path.join(CACHE, "venv-llama", "bin", "python"))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(LLAMA_SRC, "gguf-py"))  # the converter's gguf-py, not PyPI's
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import (AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig,  # noqa: E402
                          Gemma4ForCausalLM, Gemma4TextConfig)

import make_tiny_gemma4  # noqa: E402

NEW_TOKENS = 12
PROMPT = "The weather today is cold and grey"
QUANTS = {"q8_0": 7, "q4_k_m": 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q8_0 / _Q4_K_M
S, F = "sliding_attention", "full_attention"
GEMMA4_SEED = int(os.environ.get("G4_SEED", 13))
MOE_SEED = int(os.environ.get("G4_MOE_SEED", 6))


def gemma4_config() -> Gemma4TextConfig:
    return Gemma4TextConfig(
        vocab_size=512, hidden_size=64, intermediate_size=64, num_hidden_layers=4,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, global_head_dim=32,
        layer_types=[S, F, S, F], sliding_window=4, final_logit_softcapping=30.0,
        max_position_embeddings=256, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1,
        hidden_size_per_layer_input=8, vocab_size_per_layer_input=512, num_kv_shared_layers=2,
        use_double_wide_mlp=True, attention_k_eq_v=False, enable_moe_block=False,
        rope_parameters={
            S: {"rope_type": "default", "rope_theta": 10000.0},
            F: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
        attn_implementation="eager",
    )


def gemma4_moe_config() -> Gemma4TextConfig:
    """26B-A4B-like: routed experts next to the dense MLP on every layer, K=V full layers with
    fewer (global) KV heads than the sliding ones, no PLE."""
    return Gemma4TextConfig(
        vocab_size=512, hidden_size=64, intermediate_size=32, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=2, head_dim=16, global_head_dim=32,
        layer_types=[S, S, F], sliding_window=4, final_logit_softcapping=30.0,
        max_position_embeddings=256, rms_norm_eps=1e-6, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True, pad_token_id=0, bos_token_id=2, eos_token_id=1,
        hidden_size_per_layer_input=0, vocab_size_per_layer_input=512, num_kv_shared_layers=0,
        use_double_wide_mlp=False, attention_k_eq_v=True, num_global_key_value_heads=1,
        enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=16,
        rope_parameters={
            S: {"rope_type": "default", "rope_theta": 10000.0},
            F: {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
        attn_implementation="eager",
    )


def gemma3_config(vocab_size: int) -> Gemma3TextConfig:
    return Gemma3TextConfig(
        vocab_size=vocab_size, hidden_size=256, intermediate_size=32, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
        sliding_window=5, max_position_embeddings=256, layer_types=[S] * 5 + [F],
        rope_parameters={
            S: {"rope_type": "default", "rope_theta": 10_000.0},
            F: {"rope_type": "linear", "rope_theta": 1_000_000.0, "factor": 4.0},
        },
        attn_implementation="eager", tie_word_embeddings=False,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )


def make_gemma4(d: str, config=gemma4_config, seed: int = GEMMA4_SEED) -> None:
    model = Gemma4ForCausalLM(config()).eval()
    with torch.no_grad():
        make_tiny_gemma4.randomize_(model, seed=seed)
    model.save_pretrained(d)
    shutil.copy(os.path.join(ROOT, "tests", "fixtures", "tiny_ple", "tokenizer.json"), d)
    with open(os.path.join(ROOT, "tests", "fixtures", "tiny_ple", "tokenizer_config.json")) as f:
        tokenizer_config = json.load(f)
    # As released Gemma 4 tokenizers do, name the turn markers special, so that the converter
    # writes them as control tokens (otherwise it writes them as normal tokens, which llama.cpp
    # and gemma4c then spell in bytes while transformers keeps them whole).
    tokenizer_config["extra_special_tokens"] = ["<|turn>", "<turn|>"]
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tokenizer_config, f, indent=1)


def sentencepiece_model(d: str) -> int:
    """A Gemma-like SentencePiece BPE (byte fallback, no dummy prefix); returns its size."""
    import sentencepiece as spm

    lines = make_tiny_gemma4.TRAINING_TEXT.splitlines()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=os.path.join(d, "tokenizer"), model_type="bpe",
        vocab_size=400, byte_fallback=True, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        control_symbols=["<start_of_turn>", "<end_of_turn>"], hard_vocab_limit=False,
        num_threads=1, minloglevel=2,
    )
    os.remove(os.path.join(d, "tokenizer.vocab"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "tokenizer.model"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>",
                   "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}, f)
    return sp.get_piece_size()


@torch.no_grad()
def make_gemma3(d: str) -> None:
    vocab = sentencepiece_model(d)
    model = Gemma3ForCausalLM(gemma3_config(vocab)).eval()
    # Untied head (llama.cpp's `output.weight`): with a tied one this tiny model repeats its
    # last token. RMSNorm w ~ U(-0.5, 0.5) (Gemma 3 scales by 1 + w), final norm 1 + w in [4, 8].
    g = torch.Generator().manual_seed(12)
    for name, p in model.named_parameters():
        if name.endswith("embed_tokens.weight") or name == "lm_head.weight":
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        elif name == "model.norm.weight":
            p.copy_(3.0 + 4.0 * torch.rand(p.shape, generator=g))
        elif p.ndim == 1:
            p.copy_(torch.rand(p.shape, generator=g) - 0.5)
        else:
            p.copy_(torch.randn(p.shape, generator=g) * 2.0 * p.shape[1] ** -0.5)
    model.save_pretrained(d)


def run(cmd: list[str], **kw) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def convert(model_dir: str, out: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.path.join(LLAMA_SRC, "gguf-py"))
    run([sys.executable, os.path.join(LLAMA_SRC, "convert_hf_to_gguf.py"), model_dir,
         "--outtype", "f16", "--outfile", out], env=env)


def quantize(src: str, dst: str, kind: str) -> None:
    """llama.cpp's quantizer, one thread, in llama-cpp-python's venv (tools/llama_cpp_compat.py)."""
    run([LLAMA_PY, os.path.join(os.path.dirname(os.path.abspath(__file__)), "llama_cpp_compat.py"), "quantize",
         src, dst, kind, "1"])


def dequantized_state_dict(path: str, model, family: str) -> tuple[dict, list[str]]:
    """The model's state dict with every tensor the GGUF holds, dequantized by gguf-py."""
    reader = gguf.GGUFReader(path)
    arch = {"gemma3": gguf.MODEL_ARCH.GEMMA3, "gemma4": gguf.MODEL_ARCH.GEMMA4}[family]
    names = gguf.get_tensor_name_map(arch, model.config.num_hidden_layers)
    stored = {t.name: t for t in reader.tensors}
    used, not_in_file = {"rope_freqs.weight"}, []
    sd = model.state_dict()
    for key, value in sd.items():
        if key == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        base = key[: -len(".weight")] if key.endswith(".weight") else key
        name, suffix = names.get_name(base), ".weight"
        # The converter's own renames (Gemma4Model.modify_tensors), outside gguf-py's map.
        for hf_tail, gguf_tail in [(".router.scale", ".ffn_gate_inp"), (".router.per_expert_scale", ".ffn_down_exps")]:
            if key.endswith(hf_tail):
                name, suffix = "blk." + key.split(".")[2] + gguf_tail, ".scale"
        if name is None or name + suffix not in stored:
            not_in_file.append(key)
            continue
        t = stored[name + suffix]
        used.add(t.name)
        w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w = torch.from_numpy(w.reshape(tuple(reversed([int(x) for x in t.shape]))).copy())
        if family == "gemma3" and key.endswith("norm.weight"):
            w = w - 1.0  # the converter stored Gemma 3's `1 + w`
        if tuple(w.shape) != tuple(value.shape):
            sys.exit(f"{path}: {t.name} has shape {tuple(w.shape)}, {key} is {tuple(value.shape)}")
        sd[key] = w
    unused = sorted(set(stored) - used)
    if unused:
        sys.exit(f"{path}: tensors not mapped back to transformers: {unused}")
    return sd, not_in_file


@torch.no_grad()
def greedy(model, prompt_ids: list[int]) -> tuple[list[int], list[list[float]], float]:
    ids, steps, margin = list(prompt_ids), [], float("inf")
    for _ in range(NEW_TOKENS):
        logits = model(torch.tensor([ids])).logits[0, -1].float()
        top2 = torch.topk(logits, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        steps.append(logits.tolist())
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt_ids):], steps, margin


def element_types(path: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(path).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return dict(sorted(counts.items()))


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def fixture(name: str, family: str, ckpt: str, cls, quants: dict[str, int], out_dir: str) -> None:
    """NAME.{f16,QUANT}.gguf from the checkpoint, each with NAME.KIND.expected.json."""
    files = {"f16": os.path.join(out_dir, f"{name}.f16.gguf")}
    convert(ckpt, files["f16"])
    for q in quants:
        files[q] = os.path.join(out_dir, f"{name}.{q}.gguf")
        quantize(files["f16"], files[q], q)
    original = cls.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager").eval()
    if family == "gemma4":
        tok = AutoTokenizer.from_pretrained(ckpt)
    else:  # transformers' tokenizer built from the GGUF metadata, as gemma4c builds it
        tok = AutoTokenizer.from_pretrained(out_dir, gguf_file=os.path.basename(files["f16"]))
    prompt_ids = tok(PROMPT).input_ids
    if prompt_ids[0] != 2:
        prompt_ids = [2] + prompt_ids
    # The tokenizer on harder text too: spaces, tabs and newlines, byte fallback, control tokens.
    tokenizer_cases = [[t, tok(t, add_special_tokens=False).input_ids] for t in make_tiny_gemma4.ROUNDTRIP_SAMPLES]
    original_ids, _, _ = greedy(original, prompt_ids)
    vocab = [str(t) for t in gguf.GGUFReader(files["f16"]).fields["tokenizer.ggml.tokens"].contents()]
    eos = [1] + [vocab.index(t) for t in ("<turn|>", "<end_of_turn>", "<|tool_response>") if t in vocab]
    for kind, path in files.items():
        model = cls(original.config).eval()
        sd, not_in_file = dequantized_state_dict(path, model, family)
        model.load_state_dict(sd)
        ids, logits, margin = greedy(model, prompt_ids)
        if any(i in eos for i in ids):
            sys.exit(f"{path}: greedy ids {ids} hit an end-of-generation id {eos}; change the seed")
        expected = {
            "file": os.path.basename(path),
            "sha256": sha256(path),
            "family": family,
            "kind": kind,
            "element_types": element_types(path),
            "not_in_file": not_in_file,
            "prompt": PROMPT,
            "prompt_ids": prompt_ids,
            "tokenizer_cases": tokenizer_cases,
            "greedy_ids": ids,
            "original_weights_greedy_ids": original_ids,
            "min_top1_top2_margin": margin,
            "logits": [[round(x, 5) for x in step] for step in logits],
        }
        with open(os.path.join(out_dir, f"{name}.{kind}.expected.json"), "w") as f:
            json.dump(expected, f, separators=(",", ":"))
            f.write("\n")
        print(f"{os.path.basename(path)}: {os.path.getsize(path)} bytes, types {expected['element_types']}, "
              f"ids {ids} (original weights {original_ids}), margin {margin:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default=os.path.join(ROOT, "tests", "fixtures", "gguf"))
    ap.add_argument("--checkpoint", action="append", default=[], metavar="DIR",
                    help="instead of the built-in tiny models: convert this Hugging Face text checkpoint "
                         "(gemma4_text or gemma3_text with a tokenizer llama.cpp's converter accepts); repeatable")
    args = ap.parse_args()
    out_dir = os.path.abspath(args.out_dir)
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for ckpt in args.checkpoint:
        with open(os.path.join(ckpt, "config.json")) as f:
            model_type = json.load(f).get("model_type")
        classes = {"gemma4_text": ("gemma4", Gemma4ForCausalLM), "gemma3_text": ("gemma3", Gemma3ForCausalLM)}
        if model_type not in classes:
            sys.exit(f"{ckpt}: model_type {model_type!r}; expected one of {sorted(classes)}")
        family, cls = classes[model_type]
        fixture(os.path.basename(os.path.normpath(ckpt)), family, ckpt, cls, QUANTS, out_dir)
    if args.checkpoint:
        return
    built = [
        ("tiny_gemma4", "gemma4", make_gemma4, Gemma4ForCausalLM, QUANTS),
        ("tiny_gemma4_moe", "gemma4", lambda d: make_gemma4(d, gemma4_moe_config, seed=MOE_SEED),
         Gemma4ForCausalLM, {"q4_k_m": QUANTS["q4_k_m"]}),
        ("tiny_gemma3", "gemma3", make_gemma3, Gemma3ForCausalLM, QUANTS),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, family, make, cls, quants in built:
            ckpt = os.path.join(tmp, name)
            os.makedirs(ckpt)
            make(ckpt)
            fixture(name, family, ckpt, cls, quants, out_dir)


if __name__ == "__main__":
    main()
