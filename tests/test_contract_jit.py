"""Every public estimator and sampler under ``jax.jit`` (issue 22): the whole call jitted with the score and the points
as arguments equals the eager call, and a NaN score raises inside jit. The registry and helpers: tests/contract.py."""

import jax
import jax.numpy as jnp
import pytest

from contract import (MIX, REGISTERED as NAMES, REGISTRY, TK as K, XS, close_trees, mixture_score, run_registered,
                      tol_for)


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
    """The whole call jitted, with the score (a mixture: a pytree of arrays) and the points as arguments."""
    eager = run_registered(name, mixture_score(MIX))
    jitted = jax.jit(lambda mix, x, k: run_registered(name, mixture_score(mix), x, k))(MIX, XS, K)
    close_trees(jitted, eager, **tol_for(name))


# one function per module and kernel kind (the check is the same equinox.error_if of the front door's Front.finite
# or flow.checked in each)
NAN_SUBSET = ["ode_log_prob", "hd_ode", "elbo", "hvae_elbo", "path_integral_log_prob", "kl_divergence",
              "augmented_forward", "sample_with_log_prob", "reverse_sde_sample", "ode_sample"]


def _nan_score(x, t):
    return jnp.where(t < 0.5, jnp.nan, -x)


@pytest.mark.parametrize("name", NAN_SUBSET)
def test_nan_score_raises_under_jit(name):
    """A score that is NaN on part of [t0, T] raises inside jit (equinox.error_if), never a silent NaN."""
    with pytest.raises(Exception, match="non-finite|max_steps|NaN"):
        jax.block_until_ready(jax.jit(lambda x, k: run_registered(name, _nan_score, x, k))(XS, K))
