"""The estimator contract (issues 14 and 16) for the Monte Carlo estimators: elbo, hvae_elbo, variational_gap,
path_integral_log_prob (per point) and kl_divergence, entropy, weighted_score_error (population, 0-d)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from contract import MIX, P, SDE, X, assert_same, check_estimate, compiles_once, raises_naming, two_models

S = P.score
S2 = dd.random_mixture(jax.random.key(5), 3, 2).diffuse(SDE).score  # another exact score


def _drift(y, t):
    return SDE.f(t) * y + 0.1 * jnp.tanh(y)


# name -> (call(score, x, **kw), per-point?, kwargs that make it cheap, count arguments)
CALLS = {
    "elbo": (lambda s, x, **kw: dd.elbo(s, SDE, x, **kw), True, dict(n_times=64), ("n_times", "n_correction")),
    "elbo_ism": (lambda s, x, **kw: dd.elbo(s, SDE, x, form="ism", **kw), True, dict(n_times=32), ("n_times",)),
    "hvae_elbo": (lambda s, x, **kw: dd.hvae_elbo(s, SDE, x, **kw), True, dict(n_layers=8, n_paths=4),
                  ("n_layers", "n_paths")),
    "variational_gap": (lambda s, x, **kw: dd.variational_gap(s, SDE, x, inference_drift=_drift, **kw), True,
                        dict(n_layers=8, n_paths=4), ("n_layers", "n_paths")),
    "path_integral_log_prob": (lambda s, x, **kw: dd.path_integral_log_prob(s, SDE, x, **kw), True,
                               dict(n_throws=256), ("n_throws", "chunk_size")),
    "kl_divergence": (lambda s, x, **kw: dd.kl_divergence(s, S2, SDE, x, **kw), False, dict(n_times=4), ("n_times",)),
    "entropy": (lambda s, x, **kw: dd.entropy(s, SDE, x, **kw), False, dict(n_times=4), ("n_times",)),
    "weighted_score_error": (lambda s, x, **kw: dd.weighted_score_error(s, S2, SDE, x, **kw), False,
                             dict(n_times=4), ("n_times",)),
}
NAMES = list(CALLS)


def _call(name, score=S, x=X, **kw):
    fn, _, cheap, _ = CALLS[name]
    args = dict(cheap, key=jax.random.key(0))
    args.update(kw)
    return fn(score, x, **args)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_determinism(name):
    a = _call(name)
    b = _call(name)
    if CALLS[name][1]:
        check_estimate(a, X.shape[0], exact=False)
    else:
        assert isinstance(a, dd.Estimate) and a.value.shape == () and a.stderr.shape == () and a.nfe is None
        assert np.isfinite(float(a.value)) and float(a.stderr) >= 0
    assert_same(a, b)
    c = _call(name, key=jax.random.key(1))
    assert not np.array_equal(np.asarray(a.value), np.asarray(c.value))


@pytest.mark.parametrize("name", NAMES)
def test_chunked_equals_unchunked(name):
    """Same key, same draws: batches of 2 points give the unchunked result (up to float32 rounding of reductions,
    which XLA may order differently for another batch shape)."""
    a, b = _call(name, batch_size=2), _call(name)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=2e-6, atol=1e-6)


def test_path_integral_independent_of_throw_chunks():
    """Issue 27 item 8: each throw's key is the point key folded with the throw's global index, so the throw chunk
    (and the point batch) is a memory setting only: same key, same value up to float rounding."""
    ref = _call("path_integral_log_prob", n_throws=96, chunk_size=96)
    for chunk, batch in [(32, None), (40, None), (7, 2), (1000, 3)]:
        e = _call("path_integral_log_prob", n_throws=96, chunk_size=chunk, batch_size=batch)
        np.testing.assert_allclose(np.asarray(e.value), np.asarray(ref.value), rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(np.asarray(e.stderr), np.asarray(ref.stderr), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["elbo", "path_integral_log_prob", "hvae_elbo", "kl_divergence"])
def test_one_compilation_per_architecture(name):
    m1, m2 = two_models()
    compiles_once(lambda s: jax.block_until_ready(_call(name, score=s)), m1, m2)


def test_t0_is_traced_not_static():
    _call("elbo", t0=1e-4)
    from diffdens.testing import count_compilations

    with count_compilations() as c:
        _call("elbo", t0=2e-4)
        _call("path_integral_log_prob", t0=2e-4)
        _call("path_integral_log_prob", t0=3e-4)
    assert c.n <= 2  # path_integral compiled once (t0 traced); elbo none


BAD_X = {
    "nan": X.at[0, 0].set(jnp.nan),
    "inf": X.at[1, 1].set(jnp.inf),
    "rank": X[0],
    "empty": X[:0],
}


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", list(BAD_X))
def test_bad_x(name, bad):
    raises_naming(ValueError, "x", _call, name, x=BAD_X[bad])


@pytest.mark.parametrize("name", NAMES)
def test_bad_score(name):
    raises_naming(ValueError, "score", _call, name, x=jnp.zeros((3, 3)))  # wrong D for a 2-d score
    raises_naming(ValueError, "score", _call, name, score=lambda x, t: jnp.sum(x))  # scalar output
    raises_naming(ValueError, "score", _call, name, score=lambda x, t: x * jnp.nan)  # non-finite output
    raises_naming(TypeError, "score", _call, name, score=3.0)


@pytest.mark.parametrize("name", NAMES)
def test_bad_key_counts_t0_sde(name):
    fn, _, cheap, counts = CALLS[name]
    raises_naming(ValueError, "key", _call, name, key=None)
    raises_naming(TypeError, "key", _call, name, key=3)
    for c in counts:
        for v in (0, -1, 2.5, float("nan")):
            raises_naming(ValueError, c, _call, name, **{c: v})
        if c not in ("n_correction", "chunk_size"):  # None is their default
            raises_naming(TypeError, c, _call, name, **{c: None})
    for t0 in (-0.1, 1.0, 2.0, float("nan")):
        raises_naming(ValueError, "t0", _call, name, t0=t0)
    with pytest.raises(TypeError, match="sde"):
        if name == "kl_divergence":
            dd.kl_divergence(S, S, "VP", X, key=jax.random.key(0))
        elif name == "weighted_score_error":
            dd.weighted_score_error(S, S, "VP", X, key=jax.random.key(0))
        elif name in ("entropy",):
            dd.entropy(S, "VP", X, key=jax.random.key(0))
        elif name.startswith("elbo"):
            dd.elbo(S, "VP", X, key=jax.random.key(0))
        elif name == "path_integral_log_prob":
            dd.path_integral_log_prob(S, "VP", X, key=jax.random.key(0))
        else:
            getattr(dd, name)(S, "VP", X, key=jax.random.key(0), n_layers=4, inference_drift=_drift)


def test_options():
    raises_naming(ValueError, "form", _call, "elbo", form="sliced")
    raises_naming(ValueError, "divergence", _call, "elbo", divergence="hutch")
    raises_naming(TypeError, "importance_sampling", _call, "elbo", importance_sampling="no")
    raises_naming(TypeError, "eps_correction", _call, "elbo", eps_correction="yes")
    raises_naming(ValueError, "control", _call, "path_integral_log_prob", control="drift")
    raises_naming(ValueError, "linear_term", _call, "path_integral_log_prob", linear_term="exact")
    raises_naming(TypeError, "importance_sampling", _call, "path_integral_log_prob", importance_sampling=1)
    raises_naming(TypeError, "importance_sampling", _call, "entropy", importance_sampling="no")
    raises_naming(ValueError, "batch_size", _call, "elbo", batch_size=0)
    raises_naming(ValueError, "lam", _call, "hvae_elbo", lam=1.0)
    raises_naming(ValueError, "lam", _call, "hvae_elbo", lam=float("-inf"))
    raises_naming(TypeError, "inference_drift", _call, "hvae_elbo", inference_drift=3.0)
    raises_naming(ValueError, "prior_log_prob", _call, "elbo", prior_log_prob=lambda y: y)
    raises_naming(ValueError, "t0", dd.hvae_elbo, S, dd.SubVPSDE(), X, key=jax.random.key(0), n_layers=4)
    raises_naming(ValueError, "x", _call, "entropy", x=X[:1])  # a population stderr needs two samples
