"""Every public estimator and sampler under ``jax.vmap`` (over keys, points and models) and ``jax.grad`` (with respect to the
points and to the arrays inside the score), compared with eager calls (issue 22)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contract import (MIX, REGISTERED as NAMES, REGISTRY, TK as K, XS, close_trees, mixture_score, run_registered,
                      tol_for)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_or_points(name):
    """vmap over keys (random estimators and samplers) or over sets of points equals the eager loop."""
    fn, kind, random = REGISTRY[name]
    s = mixture_score(MIX)
    if random:
        keys = jax.random.split(K, 2)
        batched = jax.vmap(lambda k: run_registered(name, s, XS, k))(keys)
        loop = [run_registered(name, s, XS, k) for k in keys]
    else:
        xs = jnp.stack([XS, XS[::-1] + 0.1])
        batched = jax.vmap(lambda x: run_registered(name, s, x, K))(xs)
        loop = [run_registered(name, s, x, K) for x in xs]
    close_trees(batched, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *loop), **tol_for(name))


MODEL_SUBSET = ["ode_log_prob", "elbo", "path_integral_log_prob", "sample_with_log_prob", "hd_sample"]


@pytest.mark.parametrize("name", MODEL_SUBSET)
def test_vmap_over_models(name):
    """Two mixtures of one architecture stacked leaf by leaf: vmap over the model equals one call per model."""
    other = jax.tree_util.tree_map(lambda a: a, MIX)
    other = jax.tree_util.tree_map(lambda a, b: a, MIX, other)
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
    """grad with respect to the points (estimators) and to the mixture's means (all) is finite, and a directional
    derivative agrees with a central finite difference of the eager call (float32: a loose tolerance)."""
    fn, kind, _ = REGISTRY[name]
    f_mix = lambda means: _scalar(run_registered(name, mixture_score(_with_means(means))))  # noqa: E731
    g = jax.grad(f_mix)(MIX.means)
    assert g.shape == MIX.means.shape and bool(jnp.all(jnp.isfinite(g)))
    v = jax.random.normal(jax.random.key(3), MIX.means.shape)
    h = 1e-2
    fd = (f_mix(MIX.means + h * v) - f_mix(MIX.means - h * v)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(g * v)), float(fd), rtol=5e-2, atol=5e-2)
    if kind == "points":
        gx = jax.grad(lambda x: _scalar(run_registered(name, mixture_score(MIX), x)))(XS)
        assert gx.shape == XS.shape and bool(jnp.all(jnp.isfinite(gx)))


def _with_means(means):
    leaves, tree = jax.tree_util.tree_flatten(MIX)
    return jax.tree_util.tree_unflatten(tree, [means if l is MIX.means else l for l in leaves])


