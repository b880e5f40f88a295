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


# --- the registry of every public estimator and sampler, for the transformation tests ---------------------------
# name -> (call(score, x, key) for estimators on points, or call(score, key) for samplers; "points" | "sampler";
#          random: True when the result depends on the key). Sizes are tiny: these run under jit, vmap and grad.
def _drift(y, t):
    return SDE.f(t) * y + 0.1 * jnp.tanh(y)


_FAST = dd.SolveOptions(rtol=1e-4, atol=1e-4)
_S = (3, 2)  # sample shape (run_registered's ``shape`` replaces it, e.g. with an image shape)


def _reshaped(score, y, t):
    return score(y.reshape(-1), t).reshape(y.shape)


def as_event_score(score, event_shape):
    """A flat score (D,) -> (D,) seen as a score on points of ``event_shape`` (reshape in and out; one function
    object, so two calls share a compilation)."""
    if tuple(event_shape) == (2,):
        return score
    return jax.tree_util.Partial(_reshaped, score)


def _p_like(x):
    """The exact mixture score P.score on x's event shape (the second score of kl_divergence and friends)."""
    return as_event_score(P.score, x.shape[1:])
REGISTRY = {
    "ode_log_prob": (lambda s, x, k: dd.ode_log_prob(s, SDE, x, solve=_FAST).value, "points", False),
    "ode_log_prob_hutchinson": (lambda s, x, k: dd.ode_log_prob(s, SDE, x, key=k, solve=_FAST,
                                                                divergence=dd.Hutchinson(2)).value, "points", True),
    "ode_encode": (lambda s, x, k: dd.ode_encode(s, SDE, x, solve=_FAST)[:2], "points", False),
    "hd_ode": (lambda s, x, k: dd.hd_ode(s, SDE, x, 0.5, solve=_FAST).x, "points", False),
    "mode_tracking_ode": (lambda s, x, k: dd.mode_tracking_ode(s, SDE, x, 0.3, solve=_FAST).x, "points", False),
    "elbo": (lambda s, x, k: dd.elbo(s, SDE, x, key=k, n_times=16, n_correction=4)[:2], "points", True),
    "elbo_ism": (lambda s, x, k: dd.elbo(s, SDE, x, key=k, n_times=8, form="ism").value, "points", True),
    "hvae_elbo": (lambda s, x, k: dd.hvae_elbo(s, SDE, x, key=k, n_layers=4, n_paths=3).value, "points", True),
    "variational_gap": (lambda s, x, k: dd.variational_gap(s, SDE, x, key=k, n_layers=4, n_paths=3,
                                                           inference_drift=_drift).value, "points", True),
    "path_integral_log_prob": (lambda s, x, k: dd.path_integral_log_prob(s, SDE, x, key=k, n_throws=32)[:2],
                               "points", True),
    "kl_divergence": (lambda s, x, k: dd.kl_divergence(s, _p_like(x), SDE, x, key=k, n_times=4).value, "points", True),
    "entropy": (lambda s, x, k: dd.entropy(s, SDE, x, key=k, n_times=4).value, "points", True),
    "weighted_score_error": (lambda s, x, k: dd.weighted_score_error(s, _p_like(x), SDE, x, key=k, n_times=4).value,
                             "points", True),
    "augmented_forward": (lambda s, x, k: dd.augmented_forward(s, SDE, x, key=k, n_steps=8).log_prob, "points",
                          True),
    "ode_sample": (lambda s, k, shape=_S: dd.ode_sample(s, SDE, k, shape, solve=_FAST)[:2], "sampler", True),
    "hd_sample": (lambda s, k, shape=_S: dd.hd_sample(s, SDE, k, shape, t_threshold=0.5, solve=_FAST)[:2], "sampler", True),
    "sample_with_log_prob": (lambda s, k, shape=_S: dd.sample_with_log_prob(s, SDE, k, shape, n_steps=8)[:2], "sampler", True),
    "reverse_sde_sample": (lambda s, k, shape=_S: dd.reverse_sde_sample(s, SDE, k, shape, n_steps=8).x, "sampler", True),
    "sde_bias_diagnostics": (lambda s, k, shape=_S: dd.sde_bias_diagnostics(s, SDE, k, shape, n_steps=8, n_times=8,
                                                                  ode_kwargs=dict(solve=_FAST)).R[:2],
                             "sampler", True),
}


TK = jax.random.key(7)
XS = X[:3]
REGISTERED = list(REGISTRY)


# adaptive ODE solves at rtol = atol = 1e-4: another fusion of the same arithmetic can flip an accepted step, which
# moves the result by up to the solver's error (see diffdens.flow); everything else agrees to float32 rounding
ADAPTIVE = {"ode_log_prob", "ode_log_prob_hutchinson", "ode_encode", "hd_ode", "mode_tracking_ode", "ode_sample",
            "hd_sample", "sde_bias_diagnostics"}


def tol_for(name):
    return dict(rtol=5e-3, atol=5e-3) if name in ADAPTIVE else dict(rtol=2e-4, atol=2e-4)


def close_trees(a, b, rtol=2e-4, atol=2e-4):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def run_registered(name, score, x=XS, key=TK, shape=None):
    """Call a registered estimator on points ``x`` or a registered sampler (with sample ``shape``, default (3, 2))."""
    fn, kind, _ = REGISTRY[name]
    if kind == "points":
        return fn(score, x, key)
    return fn(score, key) if shape is None else fn(score, key, shape)


def mixture_score(mix):
    return mix.diffuse(SDE).score


