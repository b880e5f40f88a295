import os
import sys

# Unit tests compile many small programs and run each briefly: on the CPU most of their time is XLA's LLVM
# optimisation, which they do not need. This process's backend starts without it; the variable is then restored, so
# the chapters that nbval executes in the same run (kernels started from this process) get XLA's defaults.
_XLA_FLAGS = os.environ.get("XLA_FLAGS")
os.environ["XLA_FLAGS"] = f"{_XLA_FLAGS or ''} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"

import jax  # noqa: E402
import pytest  # noqa: E402

jax.devices()  # the backend is initialised here, with the flags above
if _XLA_FLAGS is None:
    del os.environ["XLA_FLAGS"]
else:
    os.environ["XLA_FLAGS"] = _XLA_FLAGS

# tests/ on the path, whatever pytest's import mode: every test imports the shared contract as `from contract import ...`
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("DIFFDENS_PROFILE", "quick")
# Strict dtype promotion is not enabled: optax's schedules mix int32 step counts with Python floats internally.


@pytest.fixture
def x64():
    """Run a test with float64 enabled."""
    with jax.enable_x64(True):
        yield
