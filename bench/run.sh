#!/usr/bin/env bash
# gemma4c vs llama.cpp on a random-weight Gemma 4 with E2B widths (see bench/compare.py).
# Creates the reference Python venv (tools/requirements-ref.txt) if it is missing, then runs
# bench/compare.py with any arguments given here, e.g. `bench/run.sh --threads 2 --rounds 5`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${GEMMA4C_REF_VENV:-$HOME/.cache/gemma4c/venv-ref}"
if ! "$VENV/bin/python" -c "import torch, transformers" >/dev/null 2>&1; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet -r tools/requirements-ref.txt
fi
exec "$VENV/bin/python" bench/compare.py "$@"
