"""Every public estimator and sampler under ``jax.jit`` and ``jax.vmap`` (issue 22): the whole call vmapped and jitted,
with the score and the points as arguments, equals the eager calls, and a NaN score raises inside jit. The registry and helpers: tests/contract.py."""

import jax
import jax.numpy as jnp
import pytest

from contract import (MIX, REGISTERED as NAMES, REGISTRY, TK as K, XS, close_trees, mixture_score, run_registered,
                      tol_for)


@pytest.mark.parametrize("name", NAMES)
def test_jit_of_vmap_equals_eager(name):
    """The whole call vmapped over keys (random estimators and samplers) or over sets of points, and jitted with the
    score (a mixture: a pytree of arrays) as an argument, equals the eager calls one by one (one compilation checks
    both transformations)."""
    fn, kind, random = REGISTRY[name]
    if random:
        batch = jax.random.split(K, 2)
        one = lambda mix, k: run_registered(name, mixture_score(mix), XS, k)  # noqa: E731
    else:
        batch = jnp.stack([XS, XS[::-1] + 0.1])
        one = lambda mix, x: run_registered(name, mixture_score(mix), x, K)  # noqa: E731
    batched = jax.jit(jax.vmap(one, in_axes=(None, 0)))(MIX, batch)
    loop = [one(MIX, b) for b in batch]
    close_trees(batched, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *loop), **tol_for(name))


# one function per module and kernel kind (the check is the same equinox.error_if of the front door's Front.finite
# or flow.checked in each)
NAN_SUBSET = ["ode_log_prob", "elbo", "path_integral_log_prob", "kl_divergence", "augmented_forward",
              "reverse_sde_sample"]


def _nan_score(x, t):
    return jnp.where(t < 0.5, jnp.nan, -x)


@pytest.mark.parametrize("name", NAN_SUBSET)
def test_nan_score_raises_under_jit(name):
    """A score that is NaN on part of [t0, T] raises inside jit (equinox.error_if), never a silent NaN."""
    with pytest.raises(Exception, match="non-finite|max_steps|NaN"):
        jax.block_until_ready(jax.jit(lambda x, k: run_registered(name, _nan_score, x, k))(XS, K))
