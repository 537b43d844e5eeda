#!/usr/bin/env python3
"""gemma4c vs llama.cpp, side by side in one run, on a random-weight Gemma 4 with E2B widths.

Usage (with the Python of tools/requirements-ref.txt, e.g. ~/.cache/gemma4c/venv-ref/bin/python;
bench/run.sh sets that up):

    python bench/compare.py [--layers 6] [--threads 2] [--tokens 32] [--prompt-tokens 64]
                            [--rounds 3] [--model-dir DIR] [--no-llama] [--gguf FILE] [--exe GEMMA4C]
                            [--quant q8_0 [--quant-embedding]]
                            [--baseline-exe GEMMA4C | --baseline-env NAME=VALUE]

With --gguf FILE (e.g. the real Gemma 3 270M Q4_K_M, tools/fetch_gemma3_270m.sh) both programs
read that same file (gemma4c dequantizes its block formats inside its kernels) and steps 1 and 3's
conversion are skipped. --exe uses that gemma4c binary instead of building a release one.
--baseline-exe alternates a second gemma4c binary (say, a build of the previous commit) in the same
rounds, and --baseline-env the same binary with an environment variable set (GEMMA4C_JIT_VARIANTS=0:
without the kernel variants for CPU extensions); both print the gemma4c / baseline ratios too.
With --quant q8_0 gemma4c quantizes the bf16 checkpoint at load (`bench --quant q8_0`) and llama.cpp
runs its own Q8_0 quantization of the same bf16 GGUF (`llama_model_quantize`, as `llama-quantize`
does; tools/llama_cpp_compat.py); gemma4c's Q8_0 blocks are byte-identical to llama.cpp's for the
tensors both quantize (tests/gguf_fixtures.rs), but gemma4c keeps the token embedding (also the
tied LM head, the largest matrix read per token) and the PLE path in bf16 where llama.cpp's Q8_0 file
quantizes them too; --quant-embedding quantizes gemma4c's token embedding as well (the PLE path
stays bf16), the closer comparison.

1. Builds the model with bench/make_e2b_like.py (bf16, cached in --model-dir).
2. Builds gemma4c (cargo build --release) and runs `gemma4c bench --json`: prefill/decode tok/s,
   weight bytes per token, effective GB/s and the streaming-read bandwidth measured in that run.
3. Where llama-cpp-python can be installed (a venv under ~/.cache/gemma4c/venv-llama; the first
   install compiles llama.cpp, several minutes), converts the same checkpoint to a bf16 GGUF with
   the converter of the same llama.cpp version and measures it with bench/llama_bench.py.
4. Alternates the two --rounds times (the machine may be shared: the best round of each counts)
   and prints decode tok/s, % of measured bandwidth and the gemma4c / llama.cpp ratio.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CACHE = os.path.expanduser("~/.cache/gemma4c")
LLAMA_VERSION = "0.3.36"
LLAMA_VENV = os.path.join(CACHE, "venv-llama")
LLAMA_SRC = os.path.join(CACHE, f"llama-cpp-python-{LLAMA_VERSION}-src")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def build_model(out: str, layers: int) -> None:
    if os.path.exists(os.path.join(out, "config.json")) and os.path.exists(os.path.join(out, "model.safetensors")):
        return
    log(f"building a random E2B-width model with {layers} layers in {out}")
    run([sys.executable, os.path.join(ROOT, "bench", "make_e2b_like.py"), out, "--layers", str(layers)])


def gemma4c_binary() -> str:
    log("cargo build --release")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release", "gemma4c")


def llama_python() -> str | None:
    """The Python of a venv with llama-cpp-python, installing it if needed (None if impossible)."""
    py = os.path.join(LLAMA_VENV, "bin", "python")
    ok = os.path.exists(py) and subprocess.run([py, "-c", "import llama_cpp"], capture_output=True).returncode == 0
    if ok:
        return py
    log(f"installing llama-cpp-python=={LLAMA_VERSION} into {LLAMA_VENV} (compiles llama.cpp)")
    try:
        if not os.path.exists(py):
            run([sys.executable, "-m", "venv", LLAMA_VENV])
        run([py, "-m", "pip", "install", "--quiet", f"llama-cpp-python=={LLAMA_VERSION}"])
        return py
    except (subprocess.CalledProcessError, OSError) as e:
        log(f"llama-cpp-python could not be installed ({e}); skipping llama.cpp")
        return None


def llama_source(py: str) -> str | None:
    """llama.cpp's converter and gguf-py, from the sdist of the same llama-cpp-python version."""
    src = os.path.join(LLAMA_SRC, "vendor", "llama.cpp")
    if os.path.exists(os.path.join(src, "convert_hf_to_gguf.py")):
        return src
    dl = os.path.join(CACHE, "llama-sdist")
    os.makedirs(dl, exist_ok=True)
    try:
        run([py, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", "llama-cpp-python",
             f"llama-cpp-python=={LLAMA_VERSION}", "-d", dl])
        tars = glob.glob(os.path.join(dl, f"llama_cpp_python-{LLAMA_VERSION}.tar.gz"))
        with tarfile.open(tars[0]) as t:
            t.extractall(CACHE, filter="data")
        os.rename(os.path.join(CACHE, f"llama_cpp_python-{LLAMA_VERSION}"), LLAMA_SRC)
        return src
    except (subprocess.CalledProcessError, OSError, IndexError) as e:
        log(f"could not get llama.cpp's converter ({e}); skipping llama.cpp")
        return None


def convert(model_dir: str, src: str) -> str | None:
    gguf = os.path.join(model_dir, "model-bf16.gguf")
    if os.path.exists(gguf):
        return gguf
    log("converting to GGUF (bf16)")
    env = dict(os.environ, PYTHONPATH=os.path.join(src, "gguf-py"))
    r = subprocess.run([sys.executable, os.path.join(src, "convert_hf_to_gguf.py"), model_dir, "--outtype", "bf16",
                        "--outfile", gguf], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        log(f"conversion failed; skipping llama.cpp:\n{r.stderr[-2000:]}")
        return None
    return gguf


def quantize(py: str, gguf: str, kind: str, threads: int) -> str | None:
    """llama.cpp's quantization of `gguf` to `kind`, next to it (cached)."""
    out = gguf.replace("-bf16.gguf", f"-{kind}.gguf")
    if os.path.exists(out):
        return out
    log(f"quantizing the GGUF to {kind} with llama.cpp")
    r = subprocess.run([py, os.path.join(ROOT, "tools", "llama_cpp_compat.py"), "quantize", gguf, out + ".tmp", kind,
                        str(threads)], capture_output=True, text=True)
    if r.returncode != 0:
        log(f"llama.cpp's quantization failed; skipping llama.cpp:\n{r.stderr[-2000:]}")
        return None
    os.rename(out + ".tmp", out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model-dir", default=None)
    ap.add_argument("--no-llama", action="store_true")
    ap.add_argument("--gguf", default=None, help="bench this GGUF file with both programs")
    ap.add_argument("--exe", default=None, help="gemma4c binary to use (default: cargo build --release)")
    ap.add_argument("--baseline-exe", default=None,
                    help="another gemma4c binary (e.g. a build of the previous commit) alternated in the same rounds")
    ap.add_argument("--baseline-env", default=None,
                    help="NAME=VALUE: alternate the same gemma4c binary with this variable set as the baseline "
                         "(e.g. GEMMA4C_JIT_VARIANTS=0)")
    ap.add_argument("--quant", choices=["q8_0"], default=None,
                    help="gemma4c --quant FORMAT against llama.cpp's FORMAT file of the same weights")
    ap.add_argument("--quant-embedding", action="store_true", help="gemma4c quantizes the token embedding too")
    args = ap.parse_args()
    if args.quant and args.gguf:
        ap.error("--quant applies to the bf16 checkpoint, not to --gguf (a GGUF file runs in its own formats)")
    if args.gguf:
        model_dir = os.path.abspath(args.gguf)
        what = f"{os.path.basename(model_dir)} (the same file for both)"
    else:
        model_dir = args.model_dir or os.path.join(CACHE, f"bench-e2b-{args.layers}l")
        build_model(model_dir, args.layers)
        what = f"{model_dir} (bf16, {args.layers} layers, E2B widths)"
        if args.quant:
            emb = " --quant-embedding" if args.quant_embedding else ""
            what += f"; gemma4c --quant {args.quant}{emb} at load vs llama.cpp's {args.quant} GGUF of it"
    exe = args.exe or gemma4c_binary()

    llama = None
    if not args.no_llama:
        py = llama_python()
        if args.gguf:
            gguf = model_dir if py else None
        else:
            src = llama_source(py) if py else None
            gguf = convert(model_dir, src) if src else None
            if gguf and args.quant:
                gguf = quantize(py, gguf, args.quant, args.threads)
        if py and gguf:
            llama = (py, gguf)

    ours, base, theirs = [], [], []
    llama_env = dict(os.environ)
    baseline = None
    if args.baseline_exe:
        baseline = (args.baseline_exe, dict(os.environ), f"baseline {args.baseline_exe}")
    elif args.baseline_env:
        name, _, value = args.baseline_env.partition("=")
        baseline = (exe, dict(os.environ, **{name: value}), f"baseline {args.baseline_env}")
    for r in range(args.rounds):
        quant = ["--quant", args.quant] if args.quant else []
        quant += ["--quant-embedding"] if args.quant and args.quant_embedding else []
        cmd = ["bench", "--model", model_dir, "--threads", str(args.threads), "--tokens", str(args.tokens),
               "--prompt-tokens", str(args.prompt_tokens), "--json"] + quant
        out = run([exe] + cmd)
        ours.append(json.loads(out.stdout))
        log(f"round {r + 1}: gemma4c decode {ours[-1]['decode_tok_s']:.2f} tok/s, "
            f"prefill {ours[-1]['prefill_tok_s']:.1f} tok/s "
            f"({100 * ours[-1]['bandwidth_fraction']:.0f}% of {ours[-1]['measured_bandwidth_gb_s']:.1f} GB/s)")
        if baseline:
            out = run([baseline[0]] + cmd, env=baseline[1])
            base.append(json.loads(out.stdout))
            log(f"round {r + 1}: {baseline[2]}: decode {base[-1]['decode_tok_s']:.2f} tok/s, "
                f"prefill {base[-1]['prefill_tok_s']:.1f} tok/s")
        if llama:
            cmd = [llama[0], os.path.join(ROOT, "bench", "llama_bench.py"), llama[1], str(args.threads),
                   str(args.prompt_tokens), str(args.tokens)]
            try:
                out = run(cmd, env=llama_env)
            except subprocess.CalledProcessError as e:
                if "GEMMA4C_LLAMA_NO_EXTRA_BUFTS" in llama_env:
                    # A broken llama-cpp-python build must not hide gemma4c's figures.
                    log(f"llama.cpp failed ({e}); continuing without it")
                    llama = None
                    continue
                log(f"llama.cpp failed ({e}); retrying without its extra (repacked/AMX) buffer types")
                llama_env = dict(os.environ, GEMMA4C_LLAMA_NO_EXTRA_BUFTS="1")
                out = run(cmd, env=llama_env)
            theirs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            log(f"round {r + 1}: llama.cpp decode {theirs[-1]['decode_tok_s']:.2f} tok/s, "
                f"prefill {theirs[-1]['prefill_tok_s']:.1f} tok/s")

    best = max(ours, key=lambda o: o["decode_tok_s"])
    print(f"model: {what}, {args.threads} threads, best of {args.rounds} alternating rounds")
    print(f"gemma4c:   prefill {max(o['prefill_tok_s'] for o in ours):8.1f} tok/s   "
          f"decode {best['decode_tok_s']:6.2f} tok/s   {best['weight_bytes_per_token'] / 1e6:.0f} MB/token   "
          f"{best['effective_gb_s']:.1f} GB/s = {100 * best['bandwidth_fraction']:.0f}% of the "
          f"{best['measured_bandwidth_gb_s']:.1f} GB/s measured in that run")
    if base:
        bb = max(base, key=lambda o: o["decode_tok_s"])
        bp = max(o["prefill_tok_s"] for o in base)
        print(f"{baseline[2]}: prefill {bp:8.1f} tok/s   decode {bb['decode_tok_s']:6.2f} tok/s")
        print(f"gemma4c / baseline: decode {best['decode_tok_s'] / bb['decode_tok_s']:.2f}, "
              f"prefill {max(o['prefill_tok_s'] for o in ours) / bp:.2f}")
    if theirs:
        tb = max(theirs, key=lambda o: o["decode_tok_s"])
        fmt = "same GGUF" if args.gguf else f"{args.quant or 'bf16'} GGUF"
        if "GEMMA4C_LLAMA_NO_EXTRA_BUFTS" in llama_env:
            fmt += ", without its extra (repacked/AMX) buffer types: its default crashed here"
        print(f"llama.cpp: prefill {max(o['prefill_tok_s'] for o in theirs):8.1f} tok/s   "
              f"decode {tb['decode_tok_s']:6.2f} tok/s   (llama-cpp-python {LLAMA_VERSION}, {fmt})")
        print(f"decode ratio gemma4c / llama.cpp: {best['decode_tok_s'] / tb['decode_tok_s']:.2f}")
        prefill_ratio = max(o["prefill_tok_s"] for o in ours) / max(o["prefill_tok_s"] for o in theirs)
        print(f"prefill ratio gemma4c / llama.cpp: {prefill_ratio:.2f}")
    else:
        print("llama.cpp: not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
