"""Bad input for the public functions outside the estimator and sampler modules: each raises naming the argument."""

import jax
import jax.numpy as jnp
import pytest

import diffdens as dd
from contract import raises_naming

SDE = dd.VPSDE()
MIX = dd.standard_mixture("2d")


@pytest.mark.parametrize("make, name", [
    (lambda: dd.VESDE(sigma_max=float("inf")), "sigma_max"),
    (lambda: dd.VPSDE(beta_max=float("inf")), "beta_min"),
    (lambda: dd.SubVPSDE(beta_min=float("nan")), "beta_min"),
])
def test_sde_parameters_must_be_finite(make, name):
    raises_naming(ValueError, name, make)


def test_missing_keys_are_named():
    x = jnp.ones((3, 2))
    raises_naming(ValueError, "key", dd.fit_score, x, SDE, key=None, epochs=1, cache=False, progress=False)
    raises_naming(ValueError, "key", dd.forward_sample, SDE, None, x, 0.5)
    raises_naming(ValueError, "key", MIX.sample, None, 3)
    raises_naming(ValueError, "key", MIX.diffuse(SDE).sample, None, 3, 0.5)
    raises_naming(TypeError, "key", MIX.sample, jax.random.split(jax.random.key(0), 2), 3)


def test_non_sde_and_complex_points():
    raises_naming(TypeError, "sde", dd.fit_score, jnp.ones((3, 2)), "VP", key=jax.random.key(0), epochs=1,
                  cache=False, progress=False)
    raises_naming(TypeError, "x", dd.ode_log_prob, MIX.diffuse(SDE).score, SDE, jnp.ones((3, 2)) + 1j)
