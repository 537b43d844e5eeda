#!/usr/bin/env python3
"""Build a tiny random Gemma 4 text model, a tiny tokenizer, and a greedy-decoding reference.

Usage:
    python make_tiny_gemma4.py OUT_DIR [--variant ple|moe|ple_long|dense_kv] [--seed 0]
        [--new-tokens N] [--prompt 2,17,301,...] [--dtype float32|bfloat16]
        [--config-form flat|multimodal] [--shards N] [--no-hub-style-keys] [--set KEY=JSON ...]

Adapted from the team's shared tools/make_tiny_gemma4.py (same randomization and reference format).
Uses the Hugging Face `transformers` implementation (5.23, `Gemma4ForCausalLM`, the text-only causal
LM: `Gemma4TextModel` + tied `lm_head`) as ground truth; `tools/requirements-ref.txt` pins the versions.

Variants (all: vocab 512, hidden 128, 4 query heads, head_dim 32 on sliding / 64 on full layers,
proportional partial RoPE (0.25) on full layers, final logit soft-capping 30)
--------
ple (default, "E2B-like"): 6 layers S S F S S F, PLE (per-layer embeddings, 16 per layer), KV sharing
    (last 2 layers: layer 4 (sliding) reuses layer 3's K/V, layer 5 (full) reuses layer 2's K/V),
    use_double_wide_mlp (layers 4,5 have 2x MLP width 512), GQA 4 q-heads : 2 kv-heads,
    sliding_window 8 (< prompt length, so the window is really exercised), 12-token prompt.
moe ("26B-A4B-like"): 6 layers S S S S S F, no PLE, no KV sharing, attention_k_eq_v (full layer has
    no v_proj; V = v_norm(raw k_proj output)), num_global_key_value_heads 1 (full) vs 2 (sliding),
    MoE block on every layer (dense MLP 64 + 8 experts of width 32, top-2, with router).
ple_long (E2B-like, long prompt): 8 layers S S S F S S S F, PLE, num_kv_shared_layers 3 (layers 5,6
    (sliding) reuse layer 4's K/V, layer 7 (full) reuses layer 3's K/V), no double-wide MLP, MLP width
    128, sliding_window 6 with a 24-token prompt (the prompt text of PLE_LONG_TEXT tokenized by the
    fixture tokenizer, after <bos>) and 16 new tokens: prefill is 4x the window, the sliding cache
    wraps many times during prefill and decode.
dense_kv ("31B-like"): 5 layers S S F S F, no PLE (hidden_size_per_layer_input 0), no MoE, no KV
    sharing, attention_k_eq_v with num_global_key_value_heads 1 (full) vs num_key_value_heads 2
    (sliding), MLP width 128, sliding_window 5.

Weights are random but NOT the library default init: RMSNorm weights, router scale and
per_expert_scale ~ U(0.5, 1.5), layer_scalar ~ U(0.5, 1.0) (so an `x*(1+w)` vs `x*w` RMSNorm
bug or a forgotten layer_scalar changes the result); Linear / expert weights ~ N(0, 1/fan_in);
embed_tokens (= tied lm_head) ~ N(0, 0.1^2); embed_tokens_per_layer ~ N(0, 0.25^2); final norm
weight ~ U(4, 8) so pre-cap logits reach ~±25 and the tanh soft-cap (30) is non-linear (see
`pre_softcap_abs_max` in reference_meta.json). Everything is deterministic for a given --seed
(and the output files are byte-identical from run to run).

--dtype bfloat16: the randomized weights are rounded to bfloat16 in place (every parameter and the
    persistent `layer_scalar` buffers), the checkpoint is saved in bfloat16 (config `dtype:
    "bfloat16"`), and the reference is computed in float32 on those bf16-representable weights
    (equivalent to loading the bf16 checkpoint and calling `model.float()`, but with the
    non-persistent buffers (RoPE inv_freq, embed scales) computed in float32 as from_pretrained does).
--config-form multimodal: config.json is rewritten into the released hub form:
    {"model_type": "gemma4", "architectures": ["Gemma4ForConditionalGeneration"], "text_config": {...,
    "model_type": "gemma4_text"}, ...} where text_config carries the hub keys `global_head_dim` /
    `num_global_key_value_heads` and NO `per_layer_config` (so the geometry must be resolved from the
    hub keys); the top level carries bos/pad ids, `eos_token_id: [1, 106]` (like instruction-tuned
    exports; also in generation_config.json), `dtype`, and the image/audio token ids and null
    vision/audio configs that transformers' `Gemma4Config` writes. Every tensor is renamed from
    `model.` to `model.language_model.`. The reference comes from the in-memory model; the
    cross-checks reload the rewritten files with `Gemma4ForConditionalGeneration`.
--shards N (N > 1): the weights are split into `model-0000i-of-0000N.safetensors` (contiguous runs of
    tensors in model order, roughly equal bytes) plus `model.safetensors.index.json`
    ({"metadata": {"total_size": bytes of tensor data}, "weight_map": {name: file}}).

Outputs in OUT_DIR
------------------
config.json, model.safetensors (or shards + index), generation_config.json   (save_pretrained;
    `lm_head.weight` is not stored (tied). A flat config.json additionally gets the hub-style keys
    `global_head_dim` / `num_global_key_value_heads` next to transformers-5.23's
    `per_layer_config`, unless --no-hub-style-keys)
tokenizer.json, tokenizer_config.json   a 512-entry Gemma-style tokenizer (BPE with byte fallback,
    ' ' -> '▁' normalizer, Replace/ByteFallback/Fuse decoder, no post-processor: BOS is added by the
    runtime). Ids: 0 <pad>, 1 <eos>, 2 <bos>, 3 <unk>, 4 <mask>, 5 <|channel>, 6 <channel|>,
    105 <|turn>, 106 <turn|> (the Gemma ids of the turn markers), the 256 byte tokens <0x00>..<0xFF>
    on the next free ids, then BPE tokens trained on TRAINING_TEXT. Identical in every fixture.
reference.safetensors   (float32 model, eager attention; see `reference_meta.json`)
    prompt_ids            int64 [P]
    generated_ids         int64 [N]       greedy tokens (argmax of decode_logits rows)
    prefill_logits        f32 [P, V]      soft-capped logits for every prompt position
    decode_logits         f32 [N, V]      row t = logits that produced generated_ids[t]
                                          (row 0 == prefill_logits[P-1]; rows 1.. come
                                          from single-token decode steps with KV cache)
    prefill.inputs_embeds f32 [P, H]      embed_tokens(ids) * f32(sqrt(H))
    prefill.per_layer_inputs f32 [P, L, Dple]  (PLE variants only) combined PLE input per layer
    prefill.layer_out.{i} f32 [P, H]      output of decoder layer i (after layer_scalar)
    prefill.final_norm    f32 [P, H]      after model.norm
    prefill.pre_softcap_logits f32 [P, V] lm_head output before soft-capping
    prefill.router_topk_index.{i} int64 [P, K]  (moe only)
    prefill.router_topk_weight.{i} f32 [P, K]   (moe only, after renorm * per_expert_scale)
reference_meta.json     prompt ids (+ `prompt_text` when the prompt is <bos> + a canonical tokenization),
    generated ids (+ `generated_text`, the lossy tokenizer decode of random ids), resolved per-layer
    table, weight files, cross-checks, and for bf16 weights `hf_bf16_compute` (HF run in bf16; for
    information only: on these random models bf16 compute diverges from the f32 reference).

Cross-checks (reference_meta.json "checks"; the script exits 1 if one in `hard_fail` fails):
    generate() == manual cache loop; decode-with-cache vs one no-cache forward (< 5e-3); the files hold
    exactly the in-memory weights; transformers re-resolves the written config.json to the same layer
    table; sdpa vs eager (< 5e-3) and reload-from-the-final-files vs reference (< 1e-3), both with the
    class matching the config form; no eos id (generation_config) among the greedy tokens (a runtime
    would stop early); tokenizer round-trip / no <unk> / AutoTokenizer agreement. Informational:
    pre/post soft-cap range, min top-1/top-2 margin over the decode steps, and `f32_vs_f64_*`: the
    distance of the f32 reference from the same model in float64 (the f32 noise floor; a warning is
    printed above NOISE_LOGIT_WARN / NOISE_REL_WARN, meaning: pick another seed).
Torch runs single-threaded on the CPU so the outputs are byte-identical wherever they are regenerated
(the MoE expert kernels round differently with other thread counts).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import re
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import transformers
from transformers import AutoConfig, AutoTokenizer, Gemma4ForCausalLM, Gemma4TextConfig
from transformers.cache_utils import DynamicCache

DEFAULT_PROMPT = [2, 17, 301, 45, 99, 123, 7, 480, 256, 64, 33, 401]  # starts with <bos>=2
EMBED_STD = float(os.environ.get("G4_EMBED_STD", 0.1))  # scaled embedding rms ~ 0.1*sqrt(128) ~ 1.1
PLE_EMBED_STD = float(os.environ.get("G4_PLE_EMBED_STD", 0.25))  # * sqrt(16) -> rms ~ 1
FINAL_NORM_RANGE = (float(os.environ.get("G4_FN_LO", 4.0)), float(os.environ.get("G4_FN_HI", 8.0)))

VARIANTS = ["ple", "moe", "ple_long", "dense_kv"]
DEFAULT_NEW_TOKENS = {"ple": 12, "moe": 12, "ple_long": 16, "dense_kv": 12}
# The ple_long prompt is <bos> + the tokenization of this text (23 tokens with the fixture tokenizer;
# asserted below), so a `--prompt` text path can be checked against the same reference.
PLE_LONG_TEXT = "The weather today is cold and grey, with some rain at night."
PLE_LONG_PROMPT_LEN = 24

# Conditioning warnings (see f64_noise): f32-vs-f64 distance above these makes a 5e-3 logit / 1e-4 relative
# intermediate tolerance between two independent f32 implementations unreliable.
NOISE_LOGIT_WARN = 1.5e-3
NOISE_REL_WARN = 4e-5

# Instruction-tuned Gemma 4 exports stop on <eos> and <turn|> (id 106); used for the multimodal form.
IT_EOS_IDS = [1, 106]


def variant_config(name: str) -> dict:
    common = dict(
        vocab_size=512,
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        global_head_dim=64,  # consumed by Gemma4TextConfig.__post_init__ -> per_layer_config
        sliding_window=8,
        final_logit_softcapping=30.0,
        max_position_embeddings=256,
        rms_norm_eps=1e-6,
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1000000.0},
        },
    )
    S, F = "sliding_attention", "full_attention"
    if name == "ple":
        return dict(
            common,
            intermediate_size=256,
            layer_types=[S, S, F] * 2,
            hidden_size_per_layer_input=16,
            vocab_size_per_layer_input=512,
            num_kv_shared_layers=2,
            use_double_wide_mlp=True,
            attention_k_eq_v=False,
            num_global_key_value_heads=None,
            enable_moe_block=False,
        )
    if name == "moe":
        return dict(
            common,
            intermediate_size=64,  # the dense ("shared") MLP next to the experts
            layer_types=[S] * 5 + [F],
            hidden_size_per_layer_input=0,
            vocab_size_per_layer_input=512,
            num_kv_shared_layers=0,
            use_double_wide_mlp=False,
            attention_k_eq_v=True,
            num_global_key_value_heads=1,
            enable_moe_block=True,
            num_experts=8,
            top_k_experts=2,
            moe_intermediate_size=32,
        )
    if name == "ple_long":
        return dict(
            common,
            num_hidden_layers=8,
            intermediate_size=128,  # smaller than `ple` to keep the committed fixture small
            layer_types=[S, S, S, F] * 2,
            sliding_window=6,
            hidden_size_per_layer_input=16,
            vocab_size_per_layer_input=512,
            num_kv_shared_layers=3,
            use_double_wide_mlp=False,
            attention_k_eq_v=False,
            num_global_key_value_heads=None,
            enable_moe_block=False,
        )
    if name == "dense_kv":
        return dict(
            common,
            num_hidden_layers=5,
            intermediate_size=128,
            layer_types=[S, S, F, S, F],
            sliding_window=5,
            hidden_size_per_layer_input=0,
            vocab_size_per_layer_input=512,
            num_kv_shared_layers=0,
            use_double_wide_mlp=False,
            attention_k_eq_v=True,
            num_global_key_value_heads=1,
            enable_moe_block=False,
        )
    raise ValueError(name)


# ----------------------------------------------------------------------------------------- tokenizer
# Small original English text the tiny BPE is trained on (not a corpus; just enough for ~190 merges).
TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. The dog does not mind; it is asleep in the sun.
A small model can still be a good test. When the numbers agree, we trust the code a little more.
This is a tiny tokenizer for a tiny model. It knows the most common English words and pieces of words,
and everything else falls back to single bytes, so any text can be written and read back again.
Once upon a time there was a little house on a hill. In the house there lived an old man and his cat.
Every morning the man made tea, and every morning the cat sat by the window and watched the birds.
"What are you looking at?" asked the man. The cat did not answer. Cats rarely do.
The weather today is cold and grey, with some rain in the afternoon and a clear sky at night.
Tomorrow it should be warmer: about 18 degrees, maybe 20, and there will be less wind.
She said that she would come back on Monday, but then she called and said Tuesday would be better.
We have three apples, two oranges and one banana. How many pieces of fruit do we have in total?
The answer is six. If we eat one apple, we have five pieces of fruit left.
Learning to read takes time. First you learn the letters, then the sounds, then whole words.
People who write programs often test them with small examples before they run the big ones.
The model reads the prompt, computes the next token, and then reads that token as well.
There are many ways to say the same thing, and there are many things that are hard to say at all.
He walked to the station, bought a ticket and waited for the train, which was late again.
The children played in the garden until it was dark, and then they went inside for dinner.
Is this the right way to the river? Yes, keep walking straight on and turn left at the bridge.
I think that the best time to plant a tree was twenty years ago; the second best time is now.
They were not sure what to do next, so they sat down, made a plan and wrote it on a piece of paper.
Numbers like 1, 2, 3, 10, 42 and 100 appear in text as well, together with dates such as 2024-05-01.
Questions, answers, lists and notes: all of them are made of the same small set of letters.
"""

# Special tokens: (id, content). 105/106 are the ids of the turn markers in the real Gemma vocabulary.
SPECIAL_TOKENS = [
    (0, "<pad>"), (1, "<eos>"), (2, "<bos>"), (3, "<unk>"), (4, "<mask>"),
    (5, "<|channel>"), (6, "<channel|>"), (105, "<|turn>"), (106, "<turn|>"),
]
TOKENIZER_VOCAB = 512
ROUNDTRIP_SAMPLES = [
    "Hello world, this is a test.",
    "The quick brown fox jumps over the lazy dog!",
    "  two  spaces\nnew line\ttab  ",
    "Numbers 3.14159 and 2024-05-01; symbols #@$%^&*() ~",
    "héllo — naïve café, 日本語, emoji 🙂",
    "<|turn>user\nWhat is the weather?<turn|>\n<|turn>model\n",
]


def build_tokenizer():
    """A 512-entry Gemma-style BPE tokenizer (byte fallback), deterministic."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    n_train = TOKENIZER_VOCAB - len(SPECIAL_TOKENS) - 256
    # Train on '▁'-prefixed words (SentencePiece style; merges never cross a word start).
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.normalizer = normalizers.Replace(" ", "▁")
    t.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=n_train, min_frequency=2, show_progress=False, special_tokens=[])
    t.train_from_iterator(TRAINING_TEXT.splitlines(keepends=True), trainer=trainer)
    trained = json.loads(t.to_str())["model"]
    trained_tokens = [tok for tok, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1])]
    if len(trained_tokens) != n_train:
        raise RuntimeError(f"BPE training produced {len(trained_tokens)} tokens, want {n_train}")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    special_ids = {i for i, _ in SPECIAL_TOKENS}
    free = (i for i in range(TOKENIZER_VOCAB) if i not in special_ids)
    vocab = {content: i for i, content in SPECIAL_TOKENS}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = next(free)
    for tok in trained_tokens:
        if tok in vocab:
            raise RuntimeError(f"trained token {tok!r} collides")
        vocab[tok] = next(free)
    assert len(vocab) == TOKENIZER_VOCAB and sorted(vocab.values()) == list(range(TOKENIZER_VOCAB))

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.pre_tokenizer = None
    tok.post_processor = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(c, special=True, normalized=False) for _, c in SPECIAL_TOKENS])
    for i, c in SPECIAL_TOKENS:
        assert tok.token_to_id(c) == i, (c, tok.token_to_id(c))
    assert tok.get_vocab_size(with_added_tokens=True) == TOKENIZER_VOCAB
    return tok


def tokenizer_json_text(tok) -> str:
    # Canonical form: the library serialization re-dumped with stable formatting.
    return json.dumps(json.loads(tok.to_str()), indent=1, ensure_ascii=False) + "\n"


TOKENIZER_CONFIG = {
    "add_bos_token": True,
    "add_eos_token": False,
    "bos_token": "<bos>",
    "eos_token": "<eos>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
    "clean_up_tokenization_spaces": False,
    "model_max_length": 256,
    "padding_side": "left",
    "tokenizer_class": "PreTrainedTokenizerFast",
}


def tokenizer_checks(tok, out_dir: str) -> dict:
    res = {}
    rt = []
    for s in ROUNDTRIP_SAMPLES:
        ids = tok.encode(s, add_special_tokens=False).ids
        back = tok.decode(ids, skip_special_tokens=False)
        rt.append(back == s)
    res["tokenizer_roundtrip_exact"] = all(rt)
    res["tokenizer_no_unk"] = all(3 not in tok.encode(s, add_special_tokens=False).ids for s in ROUNDTRIP_SAMPLES)
    # transformers loads the files we wrote and agrees with the raw tokenizer.
    hf = AutoTokenizer.from_pretrained(out_dir)
    agree = all(
        hf.encode(s, add_special_tokens=False) == tok.encode(s, add_special_tokens=False).ids for s in ROUNDTRIP_SAMPLES
    )
    res["tokenizer_hf_autotokenizer_agrees"] = bool(agree)
    return res


# --------------------------------------------------------------------------------------- weights
@torch.no_grad()
def randomize_(model: Gemma4ForCausalLM, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)

    def normal(t, std):
        t.copy_(torch.randn(t.shape, generator=g, dtype=torch.float32) * std)

    def uniform(t, lo, hi):
        t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=g, dtype=torch.float32))

    for name, p in model.named_parameters():  # tied lm_head.weight is deduplicated here
        if name.endswith("embed_tokens.weight"):  # also the tied lm_head
            normal(p, EMBED_STD)
        elif name.endswith("embed_tokens_per_layer.weight"):
            normal(p, PLE_EMBED_STD)
        elif name == "model.norm.weight":  # final norm: large gain -> O(10) logits, soft-cap is non-linear
            uniform(p, *FINAL_NORM_RANGE)
        elif p.ndim == 1:  # every other RMSNorm weight, router.scale, router.per_expert_scale
            uniform(p, 0.5, 1.5)
        elif name.endswith("experts.gate_up_proj"):  # [E, 2I, H]
            normal(p, p.shape[-1] ** -0.5)
        elif name.endswith("experts.down_proj"):  # [E, H, I]
            normal(p, p.shape[-1] ** -0.5)
        elif p.ndim == 2:  # nn.Linear weight [out, in]
            normal(p, p.shape[1] ** -0.5)
        else:
            raise RuntimeError(f"unhandled parameter {name} {tuple(p.shape)}")
    for name, b in model.named_buffers():
        if name.endswith("layer_scalar"):
            uniform(b, 0.5, 1.0)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "lm_head must be tied"


@torch.no_grad()
def round_to_bf16_(model) -> None:
    """Round every saved tensor (parameters + persistent buffers) to a bf16-representable f32 value."""
    for _name, t in model.state_dict().items():
        t.copy_(t.to(torch.bfloat16).to(torch.float32))


def layer_table(cfg: Gemma4TextConfig) -> list[dict]:
    modes = cfg.kv_sharing_modes
    first_shared = cfg.num_hidden_layers - cfg.num_kv_shared_layers
    rows = []
    for i, lt in enumerate(cfg.layer_types):
        lc = cfg.per_layer_config[i]
        src = i
        if modes[i] == "reuse":
            src = max(j for j in range(first_shared) if cfg.layer_types[j] == lt)
        double = cfg.use_double_wide_mlp and modes[i] == "reuse"
        rows.append(
            dict(
                layer=i,
                layer_type=lt,
                head_dim=lc.head_dim,
                num_key_value_heads=lc.num_key_value_heads,
                k_eq_v=bool(cfg.attention_k_eq_v and lt == "full_attention"),
                kv_sharing_mode=modes[i],
                kv_source_layer=src,
                mlp_intermediate=cfg.intermediate_size * (2 if double else 1),
                rope=cfg.rope_parameters[lt],
            )
        )
    return rows


def run_reference(model, cfg, prompt, n_new, capture: bool):
    """Greedy decode with a DynamicCache; returns dict of tensors + info."""
    dev = next(model.parameters()).device
    ids = torch.tensor([prompt], dtype=torch.long, device=dev)
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    if capture:
        tm = model.model

        def save(name):
            def hook(_m, _inp, out):
                t = out[0] if isinstance(out, tuple) else out
                captured[name] = t.detach()[0].float().cpu().clone()

            return hook

        hooks.append(tm.embed_tokens.register_forward_hook(save("prefill.inputs_embeds")))
        for i, layer in enumerate(tm.layers):
            hooks.append(layer.register_forward_hook(save(f"prefill.layer_out.{i}")))
            if cfg.enable_moe_block:

                def rhook(_m, _inp, out, i=i):
                    _, w, idx = out
                    captured[f"prefill.router_topk_weight.{i}"] = w.detach().float().cpu().clone()
                    captured[f"prefill.router_topk_index.{i}"] = idx.detach().long().cpu().clone()

                hooks.append(layer.router.register_forward_hook(rhook))
        hooks.append(tm.norm.register_forward_hook(save("prefill.final_norm")))
        hooks.append(model.lm_head.register_forward_hook(save("prefill.pre_softcap_logits")))
        if cfg.hidden_size_per_layer_input:
            orig = tm.project_per_layer_inputs

            def wrapped(*a, **k):
                out = orig(*a, **k)
                captured["prefill.per_layer_inputs"] = out.detach()[0].float().cpu().clone()
                return out

            tm.project_per_layer_inputs = wrapped
    cache = DynamicCache(config=cfg)
    out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=0)
    for h in hooks:
        h.remove()
    if capture and cfg.hidden_size_per_layer_input:
        del model.model.project_per_layer_inputs  # restore the bound method
    prefill_logits = out.logits[0].float().cpu()
    step_logits = [prefill_logits[-1]]
    gen = [int(prefill_logits[-1].argmax())]
    for _ in range(n_new - 1):
        nxt = torch.tensor([[gen[-1]]], dtype=torch.long, device=dev)
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        lg = out.logits[0, -1].float().cpu()
        step_logits.append(lg)
        gen.append(int(lg.argmax()))
    res = dict(
        prompt_ids=torch.tensor(prompt, dtype=torch.long),
        generated_ids=torch.tensor(gen, dtype=torch.long),
        prefill_logits=prefill_logits.contiguous(),
        decode_logits=torch.stack(step_logits).contiguous(),
    )
    res.update(captured)
    return res


@torch.no_grad()
def f64_noise(model, cfg, prompt, gen, ref) -> dict:
    """How far the float32 reference is from the same model computed in float64: the f32 noise floor
    that any other f32 implementation will also see (random deep models amplify rounding ~2-5x/layer)."""
    m64 = copy.deepcopy(model).double()
    cap: dict[str, torch.Tensor] = {}
    hooks = []

    def save(name):
        def hook(_m, _inp, out):
            t = out[0] if isinstance(out, tuple) else out
            cap[name] = t.detach()[0, : len(prompt)].clone()

        return hook

    tm = m64.model
    hooks.append(tm.embed_tokens.register_forward_hook(save("prefill.inputs_embeds")))
    for i, layer in enumerate(tm.layers):
        hooks.append(layer.register_forward_hook(save(f"prefill.layer_out.{i}")))
    hooks.append(tm.norm.register_forward_hook(save("prefill.final_norm")))
    hooks.append(m64.lm_head.register_forward_hook(save("prefill.pre_softcap_logits")))
    lg = m64(input_ids=torch.tensor([prompt + gen[:-1]]), use_cache=False).logits[0]
    for h in hooks:
        h.remove()
    P = len(prompt)
    worst_name, worst = None, 0.0
    for name, t in cap.items():
        want = ref[name].double()
        rel = float((t - want).abs().max()) / max(1.0, float(t.abs().max()))
        if rel > worst:
            worst_name, worst = name, rel
    return {
        "f32_vs_f64_prefill_logits_max_abs_diff": float((lg[:P] - ref["prefill_logits"].double()).abs().max()),
        "f32_vs_f64_decode_logits_max_abs_diff": float((lg[P - 1:] - ref["decode_logits"].double()).abs().max()),
        # max |f32 - f64| / max(1, max|f64|) over the recorded prefill intermediates, and where
        "f32_vs_f64_intermediate_max_rel": worst,
        "f32_vs_f64_intermediate_worst": worst_name,
    }


# ------------------------------------------------------------------------------------ checkpoint files
OWNED_FILE = re.compile(
    r"^(model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json|config\.json|generation_config\.json"
    r"|tokenizer\.json|tokenizer_config\.json|reference\.safetensors|reference_meta\.json)$"
)


def dump_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def layer_sort_key(name: str):
    # model order: embeddings, layers 0.. (numeric), then the rest; alphabetical within a group
    m = re.search(r"\.layers\.(\d+)\.", name)
    if m:
        return (1, int(m.group(1)), name)
    return (0 if "embed" in name or "per_layer_model_projection" in name or "per_layer_projection_norm" in name
            else 2, 0, name)


def read_checkpoint_tensors(out_dir: str) -> dict[str, torch.Tensor]:
    idx = os.path.join(out_dir, "model.safetensors.index.json")
    files = sorted(set(load_json(idx)["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for fn in files:
        with safe_open(os.path.join(out_dir, fn), framework="pt") as f:
            for k in f.keys():
                assert k not in out, k
                out[k] = f.get_tensor(k)
    return out


def write_weights(out_dir: str, tensors: dict[str, torch.Tensor], shards: int) -> list[str]:
    """Write tensors as model.safetensors (shards == 1) or N HF-style shards + index."""
    for fn in os.listdir(out_dir):
        if re.fullmatch(r"model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json", fn):
            os.remove(os.path.join(out_dir, fn))
    names = sorted(tensors, key=layer_sort_key)
    meta = {"format": "pt"}
    if shards <= 1:
        save_file({k: tensors[k].contiguous() for k in names}, os.path.join(out_dir, "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    sizes = [tensors[k].numel() * tensors[k].element_size() for k in names]
    total = sum(sizes)
    if len(names) < shards:
        raise ValueError(f"cannot split {len(names)} tensors into {shards} shards")
    groups: list[list[str]] = [[] for _ in range(shards)]
    acc = 0
    for i, (k, sz) in enumerate(zip(names, sizes)):
        s = min(shards - 1, acc * shards // total)
        # never leave a later shard empty: the last (shards - s - 1) tensors are reserved
        s = max(s, shards - (len(names) - i))
        groups[s].append(k)
        acc += sz
    assert all(groups), "empty shard"
    files = []
    weight_map = {}
    for s, group in enumerate(groups):
        fn = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: tensors[k].contiguous() for k in group}, os.path.join(out_dir, fn), metadata=meta)
        files.append(fn)
        for k in group:
            weight_map[k] = fn
    index = {"metadata": {"total_size": total, "total_parameters": sum(tensors[k].numel() for k in names)},
             "weight_map": dict(sorted(weight_map.items()))}
    dump_json(os.path.join(out_dir, "model.safetensors.index.json"), index)
    return files + ["model.safetensors.index.json"]


def multimodal_config(flat: dict, vc: dict, dtype: str) -> dict:
    """Released-hub-style Gemma4ForConditionalGeneration config around the text config."""
    from transformers import Gemma4Config

    text = {k: v for k, v in flat.items() if k not in ("architectures", "transformers_version", "per_layer_config")}
    text["model_type"] = "gemma4_text"
    text["global_head_dim"] = vc["global_head_dim"]
    text["num_global_key_value_heads"] = vc["num_global_key_value_heads"]
    text["dtype"] = dtype
    # Top-level keys exactly as transformers' Gemma4Config serializes them (vision/audio absent).
    top = Gemma4Config(text_config=Gemma4TextConfig(**vc)).to_diff_dict()
    top.pop("text_config")
    top.update(
        architectures=["Gemma4ForConditionalGeneration"],
        model_type="gemma4",
        text_config=text,
        bos_token_id=flat["bos_token_id"],
        pad_token_id=flat["pad_token_id"],
        eos_token_id=IT_EOS_IDS,
        dtype=dtype,
    )
    return top


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------- main
def parse_prompt(s: str) -> list[int]:
    return [int(x) for x in s.replace(" ", "").split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--variant", choices=VARIANTS, default="ple")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--new-tokens", type=int, default=None, help="default: 16 for ple_long, else 12")
    ap.add_argument("--prompt", type=parse_prompt, default=None,
                    help="comma-separated token ids (should start with <bos>=2); default depends on --variant")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                    help="weight dtype of the saved checkpoint (the reference is always computed in float32)")
    ap.add_argument("--config-form", choices=["flat", "multimodal"], default="flat")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="override one entry of the variant's config (JSON value), e.g. --set head_dim=16 "
        "--set sliding_window=7 --set vocab_size=520: geometries the fixtures do not cover "
        "(head dims, windows and widths that are not multiples of 32)",
    )
    ap.add_argument(
        "--no-hub-style-keys",
        action="store_true",
        help="(flat form) do not add global_head_dim / num_global_key_value_heads to config.json "
        "(the released hub configs carry them; transformers 5.23 itself writes per_layer_config)",
    )
    args = ap.parse_args()
    # Single-threaded CPU math: some kernels (the MoE expert path) round differently with other thread
    # counts, and the reference files must be byte-identical wherever they are regenerated.
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    for fn in os.listdir(args.out_dir):  # stale outputs of an earlier run (e.g. other shard count)
        if OWNED_FILE.fullmatch(fn):
            os.remove(os.path.join(args.out_dir, fn))
    n_new = args.new_tokens or DEFAULT_NEW_TOKENS[args.variant]

    # ---- tokenizer (identical for every variant) ----
    tok = build_tokenizer()
    if args.prompt is not None:
        prompt = args.prompt
    elif args.variant == "ple_long":
        prompt = [2] + tok.encode(PLE_LONG_TEXT, add_special_tokens=False).ids
        assert len(prompt) == PLE_LONG_PROMPT_LEN, f"ple_long prompt has {len(prompt)} tokens"
    else:
        prompt = list(DEFAULT_PROMPT)
    vc = variant_config(args.variant)
    for kv in args.set:
        key, eq, val = kv.partition("=")
        if not eq or key not in vc:
            raise SystemExit(f"--set {kv}: expected KEY=JSON with KEY one of {sorted(vc)}")
        vc[key] = json.loads(val)
    if not all(0 <= t < vc["vocab_size"] for t in prompt) or not prompt:
        raise SystemExit(f"prompt ids must be in [0, {vc['vocab_size']})")

    cfg = Gemma4TextConfig(**vc, attn_implementation="eager", experts_implementation="eager")
    model = Gemma4ForCausalLM(cfg).eval()
    randomize_(model, args.seed)
    if args.dtype == "bfloat16":
        round_to_bf16_(model)

    # ---- checkpoint: save_pretrained (flat form), then the requested rewrites ----
    to_save = model if args.dtype == "float32" else copy.deepcopy(model).to(torch.bfloat16)
    to_save.save_pretrained(args.out_dir)
    del to_save
    cfg_path = os.path.join(args.out_dir, "config.json")
    gen_path = os.path.join(args.out_dir, "generation_config.json")
    saved_cfg = load_json(cfg_path)
    written_dtype = saved_cfg.get("dtype")
    cj = dict(saved_cfg)
    cj["dtype"] = args.dtype
    if args.config_form == "flat":
        if not args.no_hub_style_keys:
            # Released checkpoints describe full-attention geometry with these two keys; this transformers
            # version converts them into `per_layer_config` and drops them on save. Keep both forms so a
            # loader can be tested against either (transformers ignores these when per_layer_config exists).
            cj["global_head_dim"] = vc["global_head_dim"]
            cj["num_global_key_value_heads"] = vc["num_global_key_value_heads"]
        dump_json(cfg_path, cj)
        rename = lambda k: k  # noqa: E731
    else:
        dump_json(cfg_path, multimodal_config(cj, vc, args.dtype))
        gj = load_json(gen_path)
        gj["eos_token_id"] = IT_EOS_IDS
        dump_json(gen_path, gj)
        rename = lambda k: "model.language_model." + k[len("model."):] if k.startswith("model.") else k  # noqa: E731
    gj = load_json(gen_path)
    assert "eos_token_id" in gj, "generation_config.json lacks eos_token_id"
    eos_ids = gj["eos_token_id"] if isinstance(gj["eos_token_id"], list) else [gj["eos_token_id"]]
    if args.config_form != "flat" or args.shards > 1:
        tensors = {rename(k): v for k, v in read_checkpoint_tensors(args.out_dir).items()}
        weight_files = write_weights(args.out_dir, tensors, args.shards)
    else:
        weight_files = ["model.safetensors"]
    with open(os.path.join(args.out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        f.write(tokenizer_json_text(tok))
    dump_json(os.path.join(args.out_dir, "tokenizer_config.json"), TOKENIZER_CONFIG)

    # ---- reference (float32, eager attention, in-memory model) ----
    ref = run_reference(model, cfg, prompt, n_new, capture=True)
    save_file(ref, os.path.join(args.out_dir, "reference.safetensors"))
    gen = ref["generated_ids"].tolist()

    # ---- cross-checks ----
    checks = {}
    multimodal = args.config_form == "multimodal"
    if multimodal:
        from transformers import Gemma4ForConditionalGeneration as LoadClass
    else:
        LoadClass = Gemma4ForCausalLM
    with torch.no_grad():
        # (a) generate() agrees with the manual cache loop
        g = model.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=n_new,
            min_new_tokens=n_new, pad_token_id=0,
        )[0, len(prompt):].tolist()
        checks["generate_matches_manual_loop"] = g == gen
        # (b) one full no-cache forward over prompt+generated reproduces every decode-step logit row
        full = torch.tensor([prompt + gen[:-1]])
        lf = model(input_ids=full, use_cache=False).logits[0]
        nocache = lf[len(prompt) - 1:]
        checks["nocache_vs_decode_max_abs_diff"] = float((nocache - ref["decode_logits"]).abs().max())
        # (c) the files on disk hold exactly the in-memory weights (renamed, in the saved dtype; the tied
        #     lm_head is not stored)
        want = {rename(k): v for k, v in model.state_dict().items() if k != "lm_head.weight"}
        disk = read_checkpoint_tensors(args.out_dir)
        wdt = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
        checks["files_match_model_weights"] = set(disk) == set(want) and all(
            disk[k].dtype == wdt and disk[k].shape == want[k].shape and torch.equal(disk[k], want[k].to(wdt))
            for k in want
        )
        # (d) transformers resolves the written config.json to the same per-layer geometry
        loaded_cfg = AutoConfig.from_pretrained(args.out_dir)
        loaded_text = loaded_cfg.text_config if multimodal else loaded_cfg
        checks["config_reload_same_layer_table"] = layer_table(loaded_text) == layer_table(cfg)
        # (e) sdpa attention agrees with eager (model reloaded from the final files, computed in f32)
        model_sdpa = LoadClass.from_pretrained(
            args.out_dir, attn_implementation="sdpa", experts_implementation="eager", dtype=torch.float32).eval()
        ls = model_sdpa(input_ids=torch.tensor([prompt])).logits[0]
        checks["sdpa_vs_eager_prefill_max_abs_diff"] = float((ls - ref["prefill_logits"]).abs().max())
        del model_sdpa
        # (f) reload of the final files (f32 compute) reproduces the logits (bit-exact for the dense
        #     variants; ~1e-4 for `moe`, where the reloaded expert tensors take a different f32 matmul path)
        reloaded = LoadClass.from_pretrained(
            args.out_dir, attn_implementation="eager", experts_implementation="eager", dtype=torch.float32).eval()
        lr = reloaded(input_ids=torch.tensor([prompt])).logits[0]
        checks["reload_vs_ref_prefill_max_abs_diff"] = float((lr - ref["prefill_logits"]).abs().max())
        checks["reload_class"] = LoadClass.__name__
        del reloaded
        bf16_info = None
        if args.dtype == "bfloat16":
            # Informational: what HF computes when the bf16 checkpoint is run in bf16 (not the reference).
            mb = LoadClass.from_pretrained(
                args.out_dir, attn_implementation="eager", experts_implementation="eager", dtype=torch.bfloat16).eval()
            gb = mb.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=n_new, min_new_tokens=n_new,
                             pad_token_id=0)[0, len(prompt):].tolist()
            lb = mb(input_ids=full, use_cache=False).logits[0].float()
            bf16_info = dict(
                generated_ids=gb,
                greedy_matches_f32_reference=gb == gen,
                teacher_forced_logits_max_abs_diff_vs_f32=float((lb[len(prompt) - 1:] - ref["decode_logits"]).abs().max()),
            )
            del mb
        pre = ref["prefill.pre_softcap_logits"]
        checks["pre_softcap_abs_max"] = float(pre.abs().max())
        checks["post_softcap_abs_max"] = float(ref["prefill_logits"].abs().max())
        top2 = ref["decode_logits"].topk(2, dim=-1).values
        margins = top2[:, 0] - top2[:, 1]
        checks["decode_min_top1_top2_margin"] = float(margins.min())
        checks["decode_min_margin_step"] = int(margins.argmin())
        checks["generated_hits_eos"] = any(t in eos_ids for t in gen)
        checks.update(f64_noise(model, cfg, prompt, gen, ref))

        # bf16 rounding of the embedding scale (what a bf16 checkpoint run would use)
        checks["bf16_embed_scale"] = float(torch.tensor(cfg.hidden_size ** 0.5).to(torch.bfloat16))
        checks["f32_embed_scale"] = float(model.model.embed_tokens.embed_scale)
    checks.update(tokenizer_checks(tok, args.out_dir))

    def txt(ids):
        return tok.decode(ids, skip_special_tokens=False)

    canonical = tok.encode(txt(prompt[1:]), add_special_tokens=False).ids == prompt[1:]
    meta = dict(
        variant=args.variant,
        seed=args.seed,
        transformers_version=transformers.__version__,
        torch_version=torch.__version__,
        model_class="Gemma4ForCausalLM",
        dtype="float32",  # compute dtype of the reference
        weights_dtype=args.dtype,
        config_form=args.config_form,
        weight_files=weight_files,
        tensor_prefix="model.language_model." if multimodal else "model.",
        save_pretrained_config_dtype=written_dtype,
        attn_implementation="eager",
        prompt_ids=prompt,
        # the prompt is <bos> + tokenizer.encode(prompt_text) when prompt_text is not null
        prompt_text=txt(prompt[1:]) if (prompt[:1] == [2] and canonical) else None,
        generated_ids=gen,
        generated_text=txt(gen),
        new_tokens=n_new,
        eos_token_ids=eos_ids,
        hf_bf16_compute=bf16_info,  # bf16 weights only: HF run in bf16 (informational, not the reference)
        kv_sharing_modes=cfg.kv_sharing_modes,
        layers=layer_table(cfg),
        tokenizer_sha256=sha256(os.path.join(args.out_dir, "tokenizer.json")),
        reference_tensors={k: [str(v.dtype).replace("torch.", ""), list(v.shape)] for k, v in ref.items()},
        checks=checks,
    )
    dump_json(os.path.join(args.out_dir, "reference_meta.json"), meta)

    hard_fail = {
        "generate_matches_manual_loop": not checks["generate_matches_manual_loop"],
        "nocache_vs_decode_max_abs_diff": checks["nocache_vs_decode_max_abs_diff"] >= 5e-3,
        "files_match_model_weights": not checks["files_match_model_weights"],
        "config_reload_same_layer_table": not checks["config_reload_same_layer_table"],
        "sdpa_vs_eager_prefill_max_abs_diff": checks["sdpa_vs_eager_prefill_max_abs_diff"] >= 5e-3,
        "reload_vs_ref_prefill_max_abs_diff": checks["reload_vs_ref_prefill_max_abs_diff"] >= 1e-3,
        "generated_hits_eos": checks["generated_hits_eos"],
        "tokenizer_roundtrip_exact": not checks["tokenizer_roundtrip_exact"],
        "tokenizer_no_unk": not checks["tokenizer_no_unk"],
        "tokenizer_hf_autotokenizer_agrees": not checks["tokenizer_hf_autotokenizer_agrees"],
    }
    print(json.dumps(dict(variant=args.variant, seed=args.seed, dtype=args.dtype, form=args.config_form,
                          shards=args.shards, prompt=prompt, generated=gen, checks=checks), indent=2))
    if checks["decode_min_top1_top2_margin"] < 0.01:
        print(f"WARNING: small greedy margin {checks['decode_min_top1_top2_margin']:.4g}", file=sys.stderr)
    noisy = max(checks["f32_vs_f64_prefill_logits_max_abs_diff"], checks["f32_vs_f64_decode_logits_max_abs_diff"])
    if noisy > NOISE_LOGIT_WARN or checks["f32_vs_f64_intermediate_max_rel"] > NOISE_REL_WARN:
        print(f"WARNING: ill-conditioned weights: f32 reference is {noisy:.3g} (logits) / "
              f"{checks['f32_vs_f64_intermediate_max_rel']:.3g} (rel. intermediates) away from float64; "
              "another f32 implementation may miss 5e-3 / 1e-4 tolerances. Try another --seed.", file=sys.stderr)
    failed = [k for k, bad in hard_fail.items() if bad]
    if failed:
        print(f"CROSS-CHECK FAILED: {failed}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
