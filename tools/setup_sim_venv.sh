#!/usr/bin/env bash
# Creates (or reuses) the Python environment of the Tenstorrent simulator tests
# and prints its directory on the last line of stdout.
#
# The venv lives outside the repository, keyed by a hash of the requirements
# file, so a changed pin gets a fresh environment and an unchanged one is
# reused across runs and clones:
#     ${GEMMA4C_CACHE:-~/.cache/gemma4c}/venv-sim-<hash>
# Usage: tools/setup_sim_venv.sh            (create if missing, print path)
#        GEMMA4C_SIM_VENV=DIR tests ...     (what the tests read; see tests/tt_sim.rs)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
req="$root/tests/tt/requirements-sim.txt"
cache="${GEMMA4C_CACHE:-$HOME/.cache/gemma4c}"
hash="$(sha256sum "$req" | cut -c1-12)"
venv="$cache/venv-sim-$hash"
py="${PYTHON:-python3}"

if [ ! -f "$venv/.complete" ]; then
    echo "setting up the simulator venv in $venv (one time)" >&2
    mkdir -p "$cache"
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet -r "$req" >&2
    # Smoke check: the simulator imports (it shadows ttl/ttnn when set up).
    "$venv/bin/python" -c "from ttl.sim.ttlang_sim import setup_simulator_imports" >&2
    touch "$venv/.complete"
fi
echo "$venv"
