"""pytest wiring for the TT-Lang kernel-family tests (run by tests/tt_sim.rs).

TT_CASES names a bundle written by tests/tt/cases.rs: kernels.py (generated kernels),
sim_support.py, cases.json and cases.safetensors. The generated kernels only `import ttl, ttnn`,
so the simulator must shadow both before kernels.py is imported: done here, at import time.
TTSIM_BF16=1 runs with real bf16 storage and math (the simulator's --no-float32-promotion).
"""

import importlib
import os
import sys
import warnings

import pytest

CASES = os.environ.get("TT_CASES")

if CASES:
    sys.path.insert(0, CASES)
    from ttl.sim.ttlang_sim import setup_simulator_imports

    setup_simulator_imports()
    import sim_support  # noqa: E402  (from the bundle)

    sim_support.install(no_float32_promotion=os.environ.get("TTSIM_BF16", "0") == "1")


@pytest.fixture(autouse=True)
def fresh_sim_context():
    if CASES:
        importlib.import_module("ttl.sim.context").reset_context()
    with warnings.catch_warnings():
        # The simulator reports L1 over-subscription and too many dataflow buffers as
        # warnings: make them failures, as the compile-time check promises they cannot happen.
        warnings.filterwarnings("error", message=".*L1.*")
        warnings.filterwarnings("error", message=".*dataflow buffer.*")
        yield
