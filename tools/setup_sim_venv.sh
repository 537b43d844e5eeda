#!/usr/bin/env bash
# Creates (or reuses) the Python environment of the Tenstorrent simulator tests
# and prints its directory on the last line of stdout.
#
# The venv lives outside the repository, keyed by a hash of the requirements
# file, so a changed pin gets a fresh environment and an unchanged one is
# reused across runs and clones:
#     ${GEMMA4C_CACHE:-~/.cache/gemma4c}/venv-sim-<hash>
# Usage: tools/setup_sim_venv.sh            create if missing, print its path
#        tools/setup_sim_venv.sh --check    print its path if it is complete, else exit 1
# The tests (tests/tt_sim.rs) use $GEMMA4C_SIM_VENV, else the --check path, else skip.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
req="$root/tests/tt/requirements-sim.txt"
cache="${GEMMA4C_CACHE:-$HOME/.cache/gemma4c}"
hash="$(sha256sum "$req" | cut -c1-12)"
venv="$cache/venv-sim-$hash"
py="${PYTHON:-python3}"

if [ "${1:-}" = "--check" ]; then
    [ -f "$venv/.complete" ] || exit 1
    echo "$venv"
    exit 0
fi
if [ ! -f "$venv/.complete" ]; then
    echo "setting up the simulator venv in $venv (one time)" >&2
    mkdir -p "$cache"
    if ! "$py" -c "import venv, ensurepip" 2>/dev/null && command -v apt-get >/dev/null; then
        apt-get update -qq && apt-get install -y -qq python3-venv >&2
    fi
    rm -rf "$venv"
    "$py" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip >&2
    "$venv/bin/pip" install --quiet -r "$req" >&2
    # Smoke check: the simulator imports (it shadows ttl/ttnn when set up).
    "$venv/bin/python" -c "from ttl.sim.ttlang_sim import setup_simulator_imports" >&2
    touch "$venv/.complete"
fi
echo "$venv"
