"""Every public estimator and sampler composes with JAX's transformations (issue 22): the whole call under
``jax.jit`` (the score an argument), ``jax.vmap`` over keys, points and models of one architecture, and ``jax.grad``
with respect to the points and to the arrays inside the score, each compared with the eager call. The registry of
functions is ``tests/contract.py``'s ``REGISTRY``; add a new estimator there."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from contract import MIX, REGISTRY, SDE, X

K = jax.random.key(7)
XS = X[:3]
NAMES = list(REGISTRY)


def _close(a, b, rtol=2e-4, atol=2e-4):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def _run(name, score, x=XS, key=K):
    fn, kind, _ = REGISTRY[name]
    return fn(score, x, key) if kind == "points" else fn(score, key)


def _mixture_score(mix):
    return mix.diffuse(SDE).score


@pytest.mark.parametrize("name", NAMES)
def test_jit_equals_eager(name):
    """The whole call jitted, with the score (a mixture: a pytree of arrays) and the points as arguments."""
    eager = _run(name, _mixture_score(MIX))
    jitted = jax.jit(lambda mix, x, k: _run(name, _mixture_score(mix), x, k))(MIX, XS, K)
    _close(jitted, eager)


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_keys_or_points(name):
    """vmap over keys (random estimators and samplers) or over sets of points equals the eager loop."""
    fn, kind, random = REGISTRY[name]
    s = _mixture_score(MIX)
    if random:
        keys = jax.random.split(K, 2)
        batched = jax.vmap(lambda k: _run(name, s, XS, k))(keys)
        loop = [_run(name, s, XS, k) for k in keys]
    else:
        xs = jnp.stack([XS, XS[::-1] + 0.1])
        batched = jax.vmap(lambda x: _run(name, s, x, K))(xs)
        loop = [_run(name, s, x, K) for x in xs]
    _close(batched, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *loop))


@pytest.mark.parametrize("name", NAMES)
def test_vmap_over_models(name):
    """Two mixtures of one architecture stacked leaf by leaf: vmap over the model equals one call per model."""
    other = jax.tree_util.tree_map(lambda a: a, MIX)
    other = jax.tree_util.tree_map(lambda a, b: a, MIX, other)
    means2 = MIX.means + 0.3
    mixes = [MIX, jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(MIX),
                                               [means2 if l is MIX.means else l for l in jax.tree_util.tree_leaves(MIX)])]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *mixes)
    batched = jax.vmap(lambda mix: _run(name, _mixture_score(mix)))(stacked)
    loop = [_run(name, _mixture_score(m)) for m in mixes]
    _close(batched, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *loop))


def _scalar(out):
    return sum(jnp.sum(jnp.where(jnp.isfinite(leaf), leaf, 0.0)) for leaf in jax.tree_util.tree_leaves(out)
               if jnp.issubdtype(leaf.dtype, jnp.floating))


@pytest.mark.parametrize("name", NAMES)
def test_grad_wrt_points_and_model(name):
    """grad with respect to the points (estimators) and to the mixture's means (all) is finite, and a directional
    derivative agrees with a central finite difference of the eager call (float32: a loose tolerance)."""
    fn, kind, _ = REGISTRY[name]
    f_mix = lambda means: _scalar(_run(name, _mixture_score(_with_means(means))))  # noqa: E731
    g = jax.grad(f_mix)(MIX.means)
    assert g.shape == MIX.means.shape and bool(jnp.all(jnp.isfinite(g)))
    v = jax.random.normal(jax.random.key(3), MIX.means.shape)
    h = 1e-2
    fd = (f_mix(MIX.means + h * v) - f_mix(MIX.means - h * v)) / (2 * h)
    np.testing.assert_allclose(float(jnp.sum(g * v)), float(fd), rtol=5e-2, atol=5e-2)
    if kind == "points":
        gx = jax.grad(lambda x: _scalar(_run(name, _mixture_score(MIX), x)))(XS)
        assert gx.shape == XS.shape and bool(jnp.all(jnp.isfinite(gx)))


def _with_means(means):
    leaves, tree = jax.tree_util.tree_flatten(MIX)
    return jax.tree_util.tree_unflatten(tree, [means if l is MIX.means else l for l in leaves])


def _nan_score(x, t):
    return jnp.where(t < 0.5, jnp.nan, -x)


@pytest.mark.parametrize("name", NAMES)
def test_nan_score_raises_under_jit(name):
    """A score that is NaN on part of [t0, T] raises inside jit (equinox.error_if), never a silent NaN."""
    with pytest.raises(Exception, match="non-finite|max_steps|NaN"):
        jax.block_until_ready(jax.jit(lambda x, k: _run(name, _nan_score, x, k))(XS, K))
