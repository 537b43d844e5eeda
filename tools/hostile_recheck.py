#!/usr/bin/env python3
"""Re-checks the numbered items of the reliability issue (hostile plans, kernels, flags,
configs, special files, thread counts, concurrent compiles, many layers; GGUF files edited at
the offsets their header gives: truncated, huge counts and lengths, bad offsets, unknown types,
odd metadata; --quant flags and edited quantized plans) against a gemma4c binary on the tiny fixtures, in a scratch directory, under `ulimit -v 2 GB`.

Usage: python3 tools/hostile_recheck.py [GEMMA4C_BINARY]   (default target/release/gemma4c)

Each line: ok|FAIL, the case, the exit code, seconds, the last stderr line. A case fails when
gemma4c panics, is killed by a signal, hangs (60 s; 300 s for the 1000-layer compile) or exits
with the wrong status. The regression tests are tests/hostile_plan.rs and tests/hostile_input.rs;
this script is the quick whole-binary pass. Exits 1 if any case fails.
"""
import copy
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
B = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else f"{ROOT}/target/release/gemma4c"
T = tempfile.mkdtemp(prefix="gemma4c-hostile-")
FIX = f"{ROOT}/tests/fixtures/tiny_ple"
results = []
def run(name, args, env=None, expect_ok=False, timeout=60, stdin=None):
    e = dict(os.environ); e.update(env or {})
    t = time.time()
    try:
        p = subprocess.run(["sh", "-c", 'ulimit -v 2000000; exec "$0" "$@"', B] + args, capture_output=True, text=True,
                           timeout=timeout, env=e, input=stdin)
        code, err = p.returncode, p.stderr
    except subprocess.TimeoutExpired:
        code, err = "TIMEOUT", ""
    dt = time.time() - t
    bad = code == "TIMEOUT" or "panicked" in err or (isinstance(code, int) and code < 0) or code not in ((0,) if expect_ok else (1, 2))
    last = [l for l in err.strip().splitlines() if l.strip()][-1:] or [""]
    results.append((("FAIL" if bad else "ok"), name, code, round(dt, 1), last[0][:160]))
def plan_copy(edit, tag):
    d = f"{T}/{tag}"; shutil.rmtree(d, ignore_errors=True); shutil.copytree(f"{T}/plan", d)
    p = json.load(open(f"{d}/plan.json")); edit(p)
    open(f"{d}/plan.json", "w").write(json.dumps(p))
    m = json.load(open(f"{d}/manifest.json"))
    m["sha256"]["plan.json"] = hashlib.sha256(open(f"{d}/plan.json", "rb").read()).hexdigest()
    open(f"{d}/manifest.json", "w").write(json.dumps(m))
    return d
RUNP = lambda d, ex=[]: ["run", "--plan", d, "--model", FIX, "--prompt-ids", "2,17,30", "--max-new-tokens", "5", "--output", "ids"] + ex
subprocess.run([B, "compile", "--model", FIX, "--target", "cpu", "--out", f"{T}/plan"], check=True,
               capture_output=True)
# 1, 3, 4: plan edits, both executors
def st(p): p["state"][0]["bytes"] = 64
def st4(p): p["state"][4]["bytes"] = 64
def off(p):
    for b in p["programs"][0]["buffers"]:
        if b["kind"]["kind"] == "activation": b["kind"]["offset"] = p["programs"][0]["arena_bytes"] + 64; break
def widx(p): p["programs"][0]["buffers"][0]["kind"]["index"] = 10**6
def vocab(p): p["model"]["vocab_size"] = 2**62
def i32(p):
    for b in p["programs"][0]["buffers"]:
        if b["kind"]["kind"] == "activation": b["dtype"] = "i32"; break
def arena(p): p["programs"][0]["arena_bytes"] = 2**60
def rmstep(p): del p["programs"][0]["steps"][5]
def swap(p): s = p["programs"][0]["steps"]; s[3], s[4] = s[4], s[3]
def wswap(p): w = p["weights"]; w[0]["key"], w[1]["key"] = w[1]["key"], w[0]["key"]
def seq(p):
    for pr in p["programs"]:
        if pr["name"] == "prefill": pr["seq_len"] = pr["seq_len"] + 3
def ctx(p): p["model"]["max_context"] = 10**4
def target(p): p["target"] = "bogus"
def shape(p): p["programs"][0]["buffers"][0]["shape"] = [1024, 128]
for f in [st, st4, off, widx, vocab, i32, arena, rmstep, swap, wswap, seq, ctx, target, shape]:
    d = plan_copy(f, f.__name__)
    run(f"plan {f.__name__} jit", RUNP(d))
    run(f"plan {f.__name__} reference", RUNP(d, ["--executor", "reference"]))
# 2: kernels.ll edits (manifest stays: hash mismatch) and with the manifest rewritten
d = f"{T}/ll"; shutil.rmtree(d, ignore_errors=True); shutil.copytree(f"{T}/plan", d)
ll = open(f"{d}/kernels.ll").read()
open(f"{d}/kernels.ll", "w").write(ll.replace("define void", "define i32", 1))
run("kernels.ll edited, manifest stale", RUNP(d))
m = json.load(open(f"{d}/manifest.json")); m["sha256"]["kernels.ll"] = hashlib.sha256(open(f"{d}/kernels.ll","rb").read()).hexdigest(); open(f"{d}/manifest.json","w").write(json.dumps(m))
run("kernels.ll signature changed, manifest rewritten", RUNP(d))
open(f"{d}/kernels.ll", "w").write(ll + "\ndeclare void @evil_symbol()\ndefine void @gemma4c_x() {\n  call void @evil_symbol()\n  ret void\n}\n")
m["sha256"]["kernels.ll"] = hashlib.sha256(open(f"{d}/kernels.ll","rb").read()).hexdigest(); open(f"{d}/manifest.json","w").write(json.dumps(m))
run("kernels.ll undeclared external, manifest rewritten", RUNP(d))
# 5
RUNM = ["run", "--model", FIX, "--prompt-ids", "2,17", "--output", "ids"]
run("max-new-tokens u64 max", RUNM + ["--max-new-tokens", "18446744073709551615"])
run("max-new-tokens u64 max-2", RUNM + ["--max-new-tokens", "18446744073709551613"])
run("bench --tokens huge", ["bench", "--model", FIX, "--tokens", "18446744073709551615"])
run("bench --prompt-tokens huge", ["bench", "--model", FIX, "--prompt-tokens", "18446744073709551615"])
run("chat --max-new-tokens huge", ["chat", "--model", FIX, "--chat-template", f"{ROOT}/tests/fixtures/chat/gemma4_chat_template.jinja", "--max-new-tokens", "18446744073709551615", "--output", "ids", "--ctx-size", "18446744073709551615"], stdin="hi\n")
run("serve --ctx-size huge", ["serve", "--model", FIX, "--port", "0", "--ctx-size", "18446744073709551615"])
# 6
cfg = json.load(open(f"{FIX}/config.json"))
def cfgdir(tag, edit):
    d = f"{T}/{tag}"; shutil.rmtree(d, ignore_errors=True); os.makedirs(d)
    c = copy.deepcopy(cfg); edit(c); json.dump(c, open(f"{d}/config.json", "w")); return d
d = cfgdir("hd", lambda c: c.update(head_dim=2**31))
run("inspect head_dim 2^31", ["inspect", "--config", f"{d}/config.json"])
run("compile head_dim 2^31", ["compile", "--config", f"{d}/config.json", "--target", "cpu", "--out", f"{T}/o1"])
d = cfgdir("hd24", lambda c: c.update(head_dim=2**24))
run("ir head_dim 2^24", ["ir", "--config", f"{d}/config.json"])
d = cfgdir("vocab", lambda c: c.update(vocab_size=2**40))
run("inspect vocab 2^40", ["inspect", "--config", f"{d}/config.json"])
# 7: many layers
def layers(n):
    def e(c):
        c["num_hidden_layers"] = n
        if "layer_types" in c: c["layer_types"] = [c["layer_types"][i % len(c["layer_types"])] for i in range(n)]
        c.pop("num_kv_shared_layers", None)
    return e
for n in [250, 1000]:
    d = cfgdir(f"l{n}", layers(n))
    run(f"compile {n} layers (fused)", ["compile", "--config", f"{d}/config.json", "--target", "cpu", "--out", f"{T}/o{n}"], expect_ok=True, timeout=300)
# 8: FIFO and /dev/zero
for name in ["config.json", "generation_config.json", "tokenizer.json"]:
    d = f"{T}/fifo_{name}"; shutil.rmtree(d, ignore_errors=True); shutil.copytree(FIX, d)
    os.remove(f"{d}/{name}"); os.mkfifo(f"{d}/{name}")
    run(f"FIFO {name}", ["run", "--model", d, "--prompt", "hi", "--max-new-tokens", "2"])
    os.remove(f"{d}/{name}"); os.symlink("/dev/zero", f"{d}/{name}")
    run(f"/dev/zero {name}", ["run", "--model", d, "--prompt", "hi", "--max-new-tokens", "2"])
# 9
for v in ["abc", "-1", "0", "100000"]:
    run(f"GEMMA4C_THREADS={v}", RUNM + ["--max-new-tokens", "1"], env={"GEMMA4C_THREADS": v})
run("bench --threads 100000", ["bench", "--model", FIX, "--threads", "100000"])
run("serve --threads 0", ["serve", "--model", FIX, "--port", "0", "--threads", "0"])
# 12: concurrent compile --out same
outs = []
def comp(m):
    outs.append(subprocess.run([B, "compile", "--model", m, "--target", "cpu", "--out", f"{T}/same"], capture_output=True, text=True).returncode)
ths = [threading.Thread(target=comp, args=(f"{ROOT}/tests/fixtures/{m}",)) for m in ["tiny_ple", "tiny_moe", "tiny_dense_kv", "tiny_ple", "tiny_moe"]]
[t.start() for t in ths]; [t.join() for t in ths]
p = json.load(open(f"{T}/same/plan.json")); s = json.load(open(f"{T}/same/stats.json"))
m = json.load(open(f"{T}/same/manifest.json"))
ok = m["sha256"]["plan.json"] == hashlib.sha256(open(f"{T}/same/plan.json","rb").read()).hexdigest() and m["sha256"]["kernels.ll"] == hashlib.sha256(open(f"{T}/same/kernels.ll","rb").read()).hexdigest()
results.append(("ok" if ok else "FAIL", "5 concurrent compile --out same: consistent directory", outs, 0, ""))
run("run the concurrently written plan", ["run", "--plan", f"{T}/same", "--prompt-ids", "2,17", "--max-new-tokens", "2", "--output", "ids"], expect_ok=True)
# GGUF files and --quant: the Q8_0 tiny Gemma 4, edited at the byte offsets its header gives.
G = f"{ROOT}/tests/fixtures/gguf/tiny_gemma4.q8_0.gguf"
graw = open(G, "rb").read()
def gguf_layout(b):
    """Offsets of the count fields, each metadata entry (key, type, value) and each tensor info."""
    pos = 24; kvs = {}; tensors = []
    def string(p): n = struct.unpack_from("<Q", b, p)[0]; return b[p + 8 : p + 8 + n].decode(), p + 8 + n
    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    def skip(t, p):
        if t == 8: return string(p)[1]
        if t == 9:
            et, n = struct.unpack_from("<IQ", b, p); p += 12
            for _ in range(n): p = skip(et, p)
            return p
        return p + sizes[t]
    for _ in range(struct.unpack_from("<Q", b, 16)[0]):
        key, p = string(pos); t = struct.unpack_from("<I", b, p)[0]
        kvs[key] = (pos, p, t, p + 4); pos = skip(t, p + 4)
    for _ in range(struct.unpack_from("<Q", b, 8)[0]):
        name, p = string(pos); nd = struct.unpack_from("<I", b, p)[0]
        # name, n_dims u32, dims u64 x n_dims, type u32, offset u64
        tensors.append({"name": name, "ndims": p, "dims": p + 4, "type": p + 4 + 8 * nd, "offset": p + 8 + 8 * nd})
        pos = p + 16 + 8 * nd
    return kvs, tensors, pos
gkv, gt, gend = gguf_layout(graw)
def gguf_case(name, data, args=None, expect_ok=False):
    path = f"{T}/{name.replace(' ', '_')}.gguf"; open(path, "wb").write(data)
    run(f"gguf {name}", (args or ["run", "--model", path, "--prompt-ids", "2,17", "--max-new-tokens", "2", "--output", "ids"]), expect_ok=expect_ok)
    run(f"gguf {name} (inspect)", ["inspect", "--model", path], expect_ok=expect_ok)
def patch(b, off, fmt, *vals):
    b = bytearray(b); struct.pack_into(fmt, b, off, *vals); return bytes(b)
gguf_case("unchanged", graw, expect_ok=True)
for cut in [3, 20, 100, gend - 5, gend + 100, len(graw) // 2, len(graw) - 1]:
    gguf_case(f"truncated at {cut}", graw[:cut])
gguf_case("tensor count 2^63", patch(graw, 8, "<Q", 2**63))
gguf_case("tensor count +1", patch(graw, 8, "<Q", len(gt) + 1))
gguf_case("metadata count 2^40", patch(graw, 16, "<Q", 2**40))
gguf_case("version 7", patch(graw, 4, "<I", 7))
arr = next(v for v in gkv.values() if v[2] == 9)
gguf_case("array length 2^60", patch(graw, arr[3] + 4, "<Q", 2**60))
gguf_case("array element type 99", patch(graw, arr[3], "<I", 99))
gguf_case("string length 2^62", patch(graw, gkv["general.architecture"][3], "<Q", 2**62))
gguf_case("key length 2^62", patch(graw, gkv["general.architecture"][0], "<Q", 2**62))
gguf_case("metadata type 99", patch(graw, gkv["general.architecture"][1], "<I", 99))
a = gkv["general.architecture"][3] + 8
gguf_case("architecture llama", graw[:a] + b"llama\0" + graw[a + 6 :])
for key, v in [("gemma4.block_count", 2**31), ("gemma4.block_count", 0), ("gemma4.embedding_length", 0),
               ("gemma4.attention.head_count", 0), ("gemma4.context_length", 0), ("gemma4.attention.sliding_window", 0),
               ("gemma4.embedding_length", 2**31)]:
    if key in gkv and gkv[key][2] in (4, 5):
        gguf_case(f"{key} = {v}", patch(graw, gkv[key][3], "<I", v))
t0 = gt[-1]
gguf_case("tensor offset past the end", patch(graw, t0["offset"], "<Q", 2**40))
gguf_case("tensor offset misaligned", patch(graw, t0["offset"], "<Q", struct.unpack_from("<Q", graw, t0["offset"])[0] + 1))
gguf_case("tensor type 99", patch(graw, t0["type"], "<I", 99))
gguf_case("tensor type i32", patch(graw, t0["type"], "<I", 26))
gguf_case("tensor dims 2^62", patch(graw, t0["dims"], "<Q", 2**62))
gguf_case("tensor n_dims 100", patch(graw, t0["ndims"], "<I", 100))
gguf_case("tensor renamed", graw.replace(t0["name"].encode(), b"x" * len(t0["name"]), 1))
run("gguf --quant q8_0", ["run", "--model", G, "--quant", "q8_0", "--prompt-ids", "2,17", "--max-new-tokens", "2"])
os.mkfifo(f"{T}/fifo.gguf")
run("gguf FIFO", ["run", "--model", f"{T}/fifo.gguf", "--prompt-ids", "2", "--max-new-tokens", "1"])
os.symlink("/dev/zero", f"{T}/zero.gguf")
run("gguf /dev/zero", ["run", "--model", f"{T}/zero.gguf", "--prompt-ids", "2", "--max-new-tokens", "1"])
# --quant flags and quantized plans.
run("--quant q5_k (no quantizer)", RUNM + ["--quant", "q5_k", "--max-new-tokens", "1"])
run("--quant bogus", RUNM + ["--quant", "bogus", "--max-new-tokens", "1"])
run("compile --quant q8_0 --target wgpu", ["compile", "--model", FIX, "--quant", "q8_0", "--target", "wgpu", "--out", f"{T}/qw"])
run("compile --quant q8_0 --config", ["compile", "--config", f"{FIX}/config.json", "--quant", "q8_0", "--target", "cpu", "--out", f"{T}/qc"])
run("run --quant q8_0", RUNM + ["--quant", "q8_0", "--max-new-tokens", "2"], expect_ok=True)
for src, extra in [(G, []), (FIX, ["--quant", "q8_0"])]:
    qp = f"{T}/qplan"; shutil.rmtree(qp, ignore_errors=True)
    subprocess.run([B, "compile", "--model", src, "--target", "cpu", "--out", qp] + extra, check=True, capture_output=True)
    tag = "gguf" if src == G else "--quant"
    RUNQ = lambda d: ["run", "--plan", d, "--model", src, "--prompt-ids", "2,17", "--max-new-tokens", "2", "--output", "ids"]
    run(f"{tag} plan unchanged", RUNQ(qp), expect_ok=True)
    def first_q(p): return next(w for w in p["weights"] if w["dtype"].startswith("q"))
    def first_qbuf(p): return next(b for b in p["programs"][0]["buffers"] if b["dtype"].startswith("q"))
    def q4k(p): first_q(p)["dtype"] = "q4_K"; first_qbuf(p)["dtype"] = "q4_K"
    def q40(p): first_q(p)["dtype"] = "q4_0"; first_qbuf(p)["dtype"] = "q4_0"
    def cols(p): w = first_q(p); w["shape"][-1] -= 1; b = first_qbuf(p); b["shape"][-1] -= 1
    def qbytes(p): first_qbuf(p)["bytes"] //= 2
    def unknown(p): first_q(p)["dtype"] = "q3_K"
    for f in [q4k, q40, cols, qbytes, unknown]:
        shutil.rmtree(f"{T}/plan", ignore_errors=True); shutil.copytree(qp, f"{T}/plan")
        d = plan_copy(f, f"q_{f.__name__}")
        run(f"{tag} plan {f.__name__} jit", RUNQ(d))
        run(f"{tag} plan {f.__name__} reference", RUNQ(d) + ["--executor", "reference"])
shutil.rmtree(T, ignore_errors=True)
for r in results:
    print(*r, sep=" | ")
failures = sum(r[0] == "FAIL" for r in results)
print("failures:", failures, "of", len(results))
sys.exit(1 if failures else 0)
