#!/usr/bin/env python3
"""Re-checks the numbered items of the reliability issue (hostile plans, kernels, flags,
configs, special files, thread counts, concurrent compiles, many layers) against a gemma4c
binary on the tiny fixtures, in a scratch directory, under `ulimit -v 2 GB`.

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
shutil.rmtree(T, ignore_errors=True)
for r in results:
    print(*r, sep=" | ")
failures = sum(r[0] == "FAIL" for r in results)
print("failures:", failures, "of", len(results))
sys.exit(1 if failures else 0)
