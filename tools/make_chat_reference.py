#!/usr/bin/env python3
"""Expected chat-template renderings and a greedy multi-turn conversation, from transformers.

Usage:
    python tools/make_chat_reference.py [OUT_JSON]     (default tests/fixtures/chat/reference.json)

Needs tools/requirements-ref.txt (transformers 5.23.0). Reads the test templates in
tests/fixtures/chat/*.jinja and the tiny_ple fixture (its tokenizer has the Gemma 4 turn markers
<|turn> = 105, <turn|> = 106, <|channel> = 5, <channel|> = 6 as special tokens).

renders: for several message lists, `tokenizer.apply_chat_template(..., tokenize=False)` and the ids
    of that text (`add_special_tokens=False`: the template writes <bos> itself), for the Gemma 4 and
    Gemma 3 test templates, with and without `enable_thinking` / `add_generation_prompt`.

conversation: three user turns on tiny_ple with a system prompt, greedy decoding (float32, eager
    attention), stopping at eos ids [1, 106] or after `max_new_tokens`. Each turn feeds only new
    tokens after those already in the cache (the way `gemma4c chat` keeps one KV cache):
      turn 1: the whole rendering of [system, user1] with the generation prompt;
      turn k: the last sampled token of the previous reply (sampled but not yet fed), then the text
              that closes the model turn (what the template writes after a model message's content,
              without the end-of-turn marker when the reply ended with it), then the part of
              render(history + [user_k], generation prompt) after render(history).
    `all_ids` is every token the model has seen plus the last reply, i.e. what greedy `generate` on
    the concatenation gives; each turn's `generated` comes from `generate` on all ids so far.
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
CHAT = ROOT / "tests" / "fixtures" / "chat"
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_ple"
EOS = [1, 106]
MAX_NEW = 6
# Marks where a model message's content lands in a rendering (a private-use character).
SENTINEL = "\ue000"

SYSTEM = "You are a helpful assistant."
USERS = ["What is the weather today?", "And tomorrow? Say it in one line.", "Thanks! €5 for the rain café."]


def template(name):
    return (CHAT / f"{name}_chat_template.jinja").read_text()


def render(tok, tpl, messages, add_generation_prompt, **kw):
    return tok.apply_chat_template(messages, chat_template=tpl, tokenize=False,
                                   add_generation_prompt=add_generation_prompt, **kw)


def ids_of(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def renders(tok):
    sys_msg = {"role": "system", "content": SYSTEM}
    u1 = {"role": "user", "content": "  Hello there!\n"}
    a1 = {"role": "assistant", "content": "<|channel>thought\nhmm<channel|>Hi, how can I help?"}
    u2 = {"role": "user", "content": "Tell me about the rain."}
    cases = []
    for name in ["gemma4", "gemma3"]:
        tpl = template(name)
        for messages, gen, think in [
            ([u1], True, False),
            ([sys_msg, u1], True, False),
            ([sys_msg, u1], True, True),
            ([u1], True, True),
            ([sys_msg, u1, a1, u2], True, False),
            ([sys_msg, u1, a1], False, False),
        ]:
            if name == "gemma3" and think:
                continue
            text = render(tok, tpl, messages, gen, enable_thinking=think)
            cases.append({"template": name, "messages": messages, "add_generation_prompt": gen,
                          "enable_thinking": think, "text": text, "ids": ids_of(tok, text)})
    return cases


def closing_text(tok, tpl, history):
    """What the template writes after the last (model) message's content."""
    marked = history[:-1] + [{"role": "assistant", "content": SENTINEL}]
    text = render(tok, tpl, marked, False)
    return text[text.rindex(SENTINEL) + len(SENTINEL):]


def conversation(tok, model, name="gemma4", eos=EOS, max_new=MAX_NEW, system=SYSTEM, users=USERS):
    tpl = template(name)
    markers = [m for m in ["<turn|>", "<end_of_turn>"] if m in tpl]
    eot = {tok.convert_tokens_to_ids(m): m for m in markers}
    history = [{"role": "system", "content": system}]
    seen = []  # ids fed to the model or sampled
    turns = []
    for k, user in enumerate(users):
        full = render(tok, tpl, history + [{"role": "user", "content": user}], True)
        if k == 0:
            new_text = full
        else:
            past = render(tok, tpl, history, False)
            assert full.startswith(past), "the template is not prefix-stable"
            closing = closing_text(tok, tpl, history)
            marker = eot.get(seen[-1])
            if marker is not None and closing.startswith(marker):
                closing = closing[len(marker):]
            new_text = closing + full[len(past):]
        new_ids = ids_of(tok, new_text)
        seen += new_ids
        inp = torch.tensor([seen])
        out = model.generate(inp, attention_mask=torch.ones_like(inp), max_new_tokens=max_new,
                             do_sample=False, eos_token_id=eos, pad_token_id=0)
        generated = out[0, len(seen):].tolist()
        # Greedy margins of every step, to show the tokens are not a near-tie.
        with torch.no_grad():
            logits = model(torch.tensor([seen + generated])).logits[0, len(seen) - 1:-1]
        top2 = logits.topk(2, dim=-1).values
        margin = float((top2[:, 0] - top2[:, 1]).min())
        seen += generated
        reply_ids = generated[:-1] if generated[-1] in eos else generated
        reply = tok.decode(reply_ids, skip_special_tokens=True)
        history += [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        turns.append({"user": user, "new_text": new_text, "new_ids": new_ids, "generated": generated,
                      "reply": reply, "min_top1_top2_margin": round(margin, 4)})
    return {"fixture": "tiny_ple", "template": name, "system": system, "max_new_tokens": max_new,
            "eos_token_ids": eos, "turns": turns, "all_ids": seen}


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else CHAT / "reference.json"
    if transformers.__version__ != "5.23.0":
        sys.exit(f"transformers {transformers.__version__}: the reference is defined by 5.23.0")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(FIXTURE)
    model = AutoModelForCausalLM.from_pretrained(FIXTURE, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    doc = {"transformers": transformers.__version__, "renders": renders(tok), "conversation": conversation(tok, model)}
    out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    for t in doc["conversation"]["turns"]:
        print(f"fed {len(t['new_ids'])} generated {t['generated']} margin {t['min_top1_top2_margin']}")


if __name__ == "__main__":
    main()
