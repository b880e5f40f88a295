import os

import jax
import pytest

os.environ.setdefault("DIFFDENS_PROFILE", "quick")
# Strict dtype promotion is not enabled: optax's schedules mix int32 step counts with Python floats internally.


@pytest.fixture
def x64():
    """Run a test with float64 enabled."""
    with jax.enable_x64(True):
        yield
