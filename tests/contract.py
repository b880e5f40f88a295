"""Shared helpers for the contract tests (tests/test_contract_*.py): every public estimator and sampler is called
through these, so the contract (types, shapes, determinism, chunking, compilations, bad input) is checked one way."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import count_compilations

SDE = dd.VPSDE()
MIX = dd.standard_mixture("2d")
P = MIX.diffuse(SDE)
X = MIX.sample(jax.random.key(0), 5)


def two_models(dim: int = 2, sde=SDE):
    """Two untrained-but-nonzero ScoreModels of one architecture (different weights)."""
    from flax import nnx

    out = []
    for seed in (1, 2):
        m = dd.init_model(dim, sde, key=jax.random.key(seed), hidden=16, depth=2, n_features=4)
        w = m.net.out.kernel
        w.value = 0.1 * jax.random.normal(jax.random.key(10 + seed), w.value.shape)
        out.append(m)
    return out


def check_estimate(est, n: int, *, exact: bool, dtype=jnp.float32):
    assert isinstance(est, dd.Estimate)
    assert est.value.shape == (n,) and est.value.dtype == dtype
    if exact:
        assert est.stderr is None
    else:
        assert est.stderr is not None and est.stderr.shape == (n,)
    if est.nfe is not None:
        assert est.nfe.shape == (n,)
    assert np.all(np.isfinite(np.asarray(est.value)))


def check_samples(s, n: int, d: int):
    assert isinstance(s, dd.Samples)
    assert s.x.shape == (n, d)
    if s.log_prob is not None:
        assert s.log_prob.shape == (n,)
    if s.nfe is not None:
        assert s.nfe.shape == (n,)


def assert_same(a, b):
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def compiles_once(call, m1, m2):
    """``call(score)`` for two models of one architecture: the second call compiles nothing."""
    call(m1.score)
    with count_compilations() as c:
        call(m2.score)
    assert c.n == 0, f"{c.n} compilations for a second model of the same architecture"


def raises_naming(exc, name, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert name in str(info.value), f"error does not name {name!r}: {info.value}"


def assert_chunked_close(a, b, rtol: float = 2e-5, atol: float = 2e-6):
    """Chunked against unchunked: equal up to float32 rounding (XLA may order reductions differently for another
    batch shape, and an SDE solve accumulates that over its steps)."""
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)
