"""The contract (issues 14 and 16) for the ODE side: ode_log_prob, ode_encode, ode_sample, hd_ode, hd_sample,
mode_tracking_ode. Types and shapes, determinism, chunked == unchunked, one compilation per architecture, and every
bad input raising an error that names the argument."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from contract import P, SDE, X, assert_same, check_estimate, check_samples, compiles_once, raises_naming, \
    two_models

S = P.score
K = jax.random.key(3)
FAST = dict(solve=dd.SolveOptions(rtol=1e-4, atol=1e-4))
N, D = X.shape


# --- the functions, each as call(**overrides) --------------------------------------------------------------------
def _points(fn, *extra):
    def call(score=S, sde=SDE, x=X, **kw):
        return fn(score, sde, x, *extra, **{**FAST, **kw})

    return call


def _sampler(fn, **fixed):
    def call(score=S, sde=SDE, key=K, shape=(4, 2), **kw):
        return fn(score, sde, key, shape, **{**FAST, **fixed, **kw})

    return call


POINTS = {
    "ode_log_prob": _points(dd.ode_log_prob),
    "ode_encode": _points(dd.ode_encode),
    "hd_ode": _points(dd.hd_ode, 0.5),
    "mode_tracking_ode": _points(dd.mode_tracking_ode, 0.5),
}
SAMPLERS = {
    "ode_sample": _sampler(dd.ode_sample),
    "hd_sample": _sampler(dd.hd_sample, t_threshold=0.5),
}
ALL = {**POINTS, **SAMPLERS}
HUTCH = dict(divergence=dd.Hutchinson(3), key=K)


# --- types, shapes, dtypes ---------------------------------------------------------------------------------------
def test_ode_log_prob_fields():
    check_estimate(POINTS["ode_log_prob"](), N, exact=True)
    est = POINTS["ode_log_prob"](**HUTCH)
    check_estimate(est, N, exact=False)
    assert est.nfe.dtype.kind == "i" and bool(jnp.all(est.nfe > 0))


def test_ode_encode_fields():
    enc = POINTS["ode_encode"]()
    assert isinstance(enc, dd.Encoding) and enc.x_T.shape == (N, D) and enc.delta.shape == (N,)
    assert enc.nfe.shape == (N,)
    assert POINTS["ode_encode"](**HUTCH).delta.shape == (N, 3)


def test_hd_ode_fields():
    out = POINTS["hd_ode"]()
    check_samples(out, N, D)
    assert out.log_prob is None and out.start.shape == (N, D)
    check_estimate(out.log_prob_change, N, exact=True)
    check_estimate(POINTS["hd_ode"](**HUTCH).log_prob_change, N, exact=False)


def test_mode_tracking_fields():
    path = POINTS["mode_tracking_ode"](save_at=[0.1, 0.3])
    assert isinstance(path, dd.SamplePath) and path.x.shape == (N, 2, D) and path.log_prob is None
    np.testing.assert_allclose(path.ts, [0.3, 0.1])


@pytest.mark.parametrize("name", ["ode_sample", "hd_sample"])
def test_sampler_fields(name):
    s = SAMPLERS[name]()
    check_samples(s, 4, 2)
    assert s.log_prob.dtype == jnp.float32 and s.nfe.shape == (4,)
    if name == "hd_sample":
        assert s.start.shape == (4, 2)
        check_estimate(s.log_prob_change, 4, exact=True)


# --- determinism and chunking ------------------------------------------------------------------------------------
CHUNKED = [("ode_log_prob", {}), ("ode_log_prob", HUTCH), ("ode_encode", HUTCH), ("hd_ode", HUTCH),
           ("mode_tracking_ode", {}), ("ode_sample", {}), ("hd_sample", HUTCH)]


@pytest.mark.parametrize("name,kw", CHUNKED, ids=[f"{n}-{'hutch' if k else 'exact'}" for n, k in CHUNKED])
def test_deterministic_and_chunked(name, kw):
    """Same key, same result (bit for bit); chunks of 2 points agree with the unchunked run to within the
    solver tolerance (the batch layout changes float rounding, which can flip an adaptive step; see diffdens.flow)."""
    kw = dict(kw, solve=dd.SolveOptions(rtol=1e-6, atol=1e-6))
    if name in SAMPLERS:
        kw.pop("key", None)
    a = ALL[name](**kw)
    assert_same(a, ALL[name](**kw))
    for bs in (2,):  # 5 points: chunks of 2, 2 and 1
        b = ALL[name](batch_size=bs, **kw)
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            if jnp.issubdtype(u.dtype, jnp.floating):
                np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-4, atol=1e-4)


# --- one compilation per architecture ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
    return two_models(2)


@pytest.mark.parametrize("name", ["ode_log_prob", "hd_ode", "ode_sample"])
def test_compiles_once(models, name):
    compiles_once(lambda score: ALL[name](score=score), *models)


def test_new_t0_and_tolerances_do_not_recompile():
    from diffdens.testing import count_compilations

    dd.ode_log_prob(S, SDE, X, t0=1e-4, **FAST)
    with count_compilations() as c:
        dd.ode_log_prob(S, SDE, X, t0=1e-3, solve=dd.SolveOptions(rtol=3e-4, atol=2e-4))
    assert c.n == 0


# --- bad input (issue 16) ----------------------------------------------------------------------------------------
def _scalar_score(x, t):
    return jnp.sum(x)


def _wide_score(x, t):
    return jnp.concatenate([x, x])


def _nan_score(x, t):
    return jnp.full_like(x, jnp.nan)


def _inf_score(x, t):
    return jnp.where(t > 0.2, jnp.inf, -x)


COMMON_BAD = [
    ("sde", TypeError, dict(sde="VP")),
    ("score", ValueError, dict(score=_scalar_score)),
    ("score", ValueError, dict(score=_wide_score)),
    ("score", ValueError, dict(score=_nan_score)),
    ("score", ValueError, dict(score=_inf_score)),
    ("score", TypeError, dict(score=None)),
    ("t0", ValueError, dict(t0=0.0)),
    ("t0", ValueError, dict(t0=-1e-3)),
    ("t0", ValueError, dict(t0=float("nan"))),
    ("solve", TypeError, dict(solve="fast")),
    ("solve", TypeError, dict(solve=dict(rtol=1e-4))),
    ("batch_size", ValueError, dict(batch_size=0)),
    ("bogus", TypeError, dict(bogus=1)),
]
X_BAD = [
    ("x", ValueError, X.at[0, 0].set(jnp.nan)),
    ("x", ValueError, X.at[1, 1].set(jnp.inf)),
    ("x", ValueError, X[0]),
    ("x", ValueError, X[:0]),
    ("x", TypeError, X.astype(jnp.complex64)),
    ("score", ValueError, jnp.zeros((3, 3))),  # D = 3 against a score of D = 2
]
DIV_BAD = [
    ("divergence", ValueError, dict(divergence="trace")),
    ("divergence", ValueError, dict(divergence=True)),
    ("key", ValueError, dict(divergence="hutchinson")),
    ("key", TypeError, dict(divergence=dd.Hutchinson(2), key=3)),
    ("divergence", ValueError, dict(divergence="Hutchinson", key=K)),
]
SAMPLER_BAD = [
    ("key", ValueError, dict(key=None)),
    ("key", TypeError, dict(key=7)),
    ("shape", ValueError, dict(shape=(0, 2))),
    ("shape", ValueError, dict(shape=(4,))),
    ("shape", ValueError, dict(shape=(4, 0))),
    ("shape", ValueError, dict(shape=(4, 2.5))),
    ("score", ValueError, dict(shape=(4, 3))),
]


def _cases():
    for name in ALL:
        for arg, exc, kw in COMMON_BAD:
            yield name, arg, exc, kw
        if name in POINTS:
            for arg, exc, x in X_BAD:
                yield name, arg, exc, dict(x=x)
        else:
            for arg, exc, kw in SAMPLER_BAD:
                yield name, arg, exc, kw
        if name not in ("mode_tracking_ode", "ode_sample"):  # those two have no divergence option
            for arg, exc, kw in DIV_BAD:
                if name in SAMPLERS:
                    if arg == "key":
                        continue  # the sampler's own key is used for the probes
                    kw = {k: v for k, v in kw.items() if k != "key"}
                yield name, arg, exc, kw
    for t in (0.0, -0.1, 1.5, float("nan")):
        yield "hd_ode", "t", ValueError, dict(_t=t)
        yield "mode_tracking_ode", "t", ValueError, dict(_t=t)
        yield "hd_sample", "t_threshold", ValueError, dict(t_threshold=t)
    for name in ("ode_log_prob", "ode_encode", "ode_sample"):
        yield name, "t0", ValueError, dict(t0=1.0)  # t0 must lie strictly inside (0, T)
    for name in ("hd_ode", "mode_tracking_ode", "hd_sample"):
        yield name, "t0", ValueError, dict(t0=0.7)  # the end time must come before the start time 0.5
    yield "hd_sample", "sampler", ValueError, dict(sampler="langevin")
    for n_steps in (0, -1, 2.5, None):
        for sampler in ("ode", "sde"):
            yield "hd_sample", "n_steps", (ValueError, TypeError), dict(sampler=sampler, n_steps=n_steps)
    yield "mode_tracking_ode", "max_dim", ValueError, dict(max_dim=0)
    yield "mode_tracking_ode", "save_at", ValueError, dict(save_at=[0.7])
    yield "ode_log_prob", "prior_log_prob", ValueError, dict(prior_log_prob=lambda y: y)
    yield "ode_log_prob", "prior_log_prob", TypeError, dict(prior_log_prob=3)


CASES = list(_cases())


@pytest.mark.parametrize("name,arg,exc,kw", CASES,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_names_the_argument(name, arg, exc, kw):
    kw = dict(kw)
    if "_t" in kw:  # the start time of hd_ode / mode_tracking_ode is positional
        fn = {"hd_ode": dd.hd_ode, "mode_tracking_ode": dd.mode_tracking_ode}[name]
        raises_naming(exc, arg, fn, S, SDE, X, kw.pop("_t"))
        return
    raises_naming(exc, arg, ALL[name], **kw)


def test_denoising_log_prob_needs_s_before_t():
    raises_naming(ValueError, "s must be smaller than t", dd.denoising_log_prob, P.log_prob, SDE, X, 0.6, X[0], 0.5)
    raises_naming(ValueError, "s must be smaller than t", dd.denoising_log_prob, P.log_prob, SDE, X, 0.5, X[0], 0.5)
    raises_naming(TypeError, "sde", dd.denoising_log_prob, P.log_prob, "VP", X, 0.1, X[0], 0.5)
    v = dd.denoising_log_prob(P.log_prob, SDE, X, 0.1, X[0], 0.5)
    assert v.shape == (N,) and bool(jnp.all(jnp.isfinite(v)))
