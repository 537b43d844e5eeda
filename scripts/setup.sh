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
