"""Every public estimator and sampler under ``jax.grad`` (with respect to the points and to the arrays inside the score),
and a subset under ``jax.vmap`` over models of one architecture, compared with eager calls (issue 22)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contract import (MIX, REGISTERED as NAMES, REGISTRY, TK as K, XS, close_trees, mixture_score, run_registered,
                      tol_for)


MODEL_SUBSET = ["ode_log_prob", "elbo", "path_integral_log_prob", "sample_with_log_prob", "hd_sample"]


@pytest.mark.parametrize("name", MODEL_SUBSET)
def test_vmap_over_models(name):
    """Two mixtures of one architecture stacked leaf by leaf: vmap over the model equals one call per model."""
    means2 = MIX.means + 0.3
    mixes = [MIX, jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(MIX),
                                               [means2 if l is MIX.means else l for l in jax.tree_util.tree_leaves(MIX)])]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *mixes)
    batched = jax.vmap(lambda mix: run_registered(name, mixture_score(mix)))(stacked)
    loop = [run_registered(name, mixture_score(m)) for m in mixes]
    close_trees(batched, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *loop), **tol_for(name))


def _scalar(out):
    return sum(jnp.sum(jnp.where(jnp.isfinite(leaf), leaf, 0.0)) for leaf in jax.tree_util.tree_leaves(out)
               if jnp.issubdtype(leaf.dtype, jnp.floating))


@pytest.mark.parametrize("name", NAMES)
def test_grad_wrt_points_and_model(name):
    """grad with respect to the mixture's means (all) and the points (estimators), in one compiled gradient: finite,
    and the directional derivative in the means agrees with a central finite difference of the eager call (float32:
    a loose tolerance)."""
    fn, kind, _ = REGISTRY[name]
    f = lambda means, x: _scalar(run_registered(name, mixture_score(_with_means(means)), x))  # noqa: E731
    if kind == "points":
        g, gx = jax.grad(f, argnums=(0, 1))(MIX.means, XS)
        assert gx.shape == XS.shape and bool(jnp.all(jnp.isfinite(gx)))
    else:
        g = jax.grad(f)(MIX.means, XS)
    assert g.shape == MIX.means.shape and bool(jnp.all(jnp.isfinite(g)))
    v = jax.random.normal(jax.random.key(3), MIX.means.shape)
    h = 1e-2
    fd = (f(MIX.means + h * v, XS) - f(MIX.means - h * v, XS)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(g * v)), float(fd), rtol=5e-2, atol=5e-2)


def _with_means(means):
    leaves, tree = jax.tree_util.tree_flatten(MIX)
    return jax.tree_util.tree_unflatten(tree, [means if l is MIX.means else l for l in leaves])


