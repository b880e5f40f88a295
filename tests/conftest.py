import os

import jax
import pytest

os.environ.setdefault("DIFFDENS_PROFILE", "quick")
# Strict dtype promotion catches silent float64/float32 mixing in the package.
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def x64():
    """Run a test with float64 enabled."""
    with jax.enable_x64(True):
        yield
