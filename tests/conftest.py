import os
import sys

import jax
import pytest

# tests/ on the path, whatever pytest's import mode: every test imports the shared contract as `from contract import ...`
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("DIFFDENS_PROFILE", "quick")
# Strict dtype promotion is not enabled: optax's schedules mix int32 step counts with Python floats internally.


@pytest.fixture
def x64():
    """Run a test with float64 enabled."""
    with jax.enable_x64(True):
        yield
