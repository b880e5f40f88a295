"""The contract (issues 14 and 16) for the SDE samplers: sample_with_log_prob, reverse_sde_sample, augmented_forward,
sde_bias_diagnostics. Types and shapes, determinism, chunking, one compilation per architecture, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import count_compilations
from contract import MIX, P, SDE, X, assert_chunked_close, assert_same, check_samples, compiles_once, raises_naming, two_models

KEY = jax.random.key(0)
N, D, STEPS = 5, 2, 20


def _swlp(score=P.score, **kw):
    return dd.sample_with_log_prob(score, SDE, KEY, (N, D), n_steps=STEPS, **kw)


def _rev(score=P.score, **kw):
    return dd.reverse_sde_sample(score, SDE, KEY, (N, D), n_steps=STEPS, **kw)


def _fwd(score=P.score, **kw):
    return dd.augmented_forward(score, SDE, X, key=KEY, n_steps=STEPS, **kw)


SAMPLERS = {
    "euler": lambda **kw: _swlp(**kw),
    "milstein": lambda **kw: _swlp(scheme="milstein", **kw),
    "save_at": lambda **kw: _swlp(save_at=jnp.linspace(1.0, 0.1, 4), **kw),
    "reverse": lambda **kw: _rev(**kw),
    "reverse_lam": lambda **kw: _rev(lam=0.5, **kw),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_samples_fields_determinism_and_chunking(name):
    s = SAMPLERS[name]()
    check_samples(s, N, D)
    assert s.x.dtype == jnp.float32 and s.nfe.dtype.kind == "i"
    if name.startswith("reverse"):
        assert s.log_prob is None
        np.testing.assert_array_equal(np.asarray(s.nfe), STEPS)
    else:
        assert s.log_prob.shape == (N,) and s.log_prob.dtype == jnp.float32
        np.testing.assert_array_equal(np.asarray(s.nfe), STEPS * (D + 2 if name == "milstein" else 1))
    if name == "save_at":
        assert s.path.ts.shape == (4,) and s.path.x.shape == (N, 4, D) and s.path.log_prob.shape == (N, 4)
    else:
        assert s.path is None
    assert_same(s, SAMPLERS[name]())  # same key, same samples
    assert_chunked_close(s, SAMPLERS[name](batch_size=2))  # chunks of 2, 2 and 1 point
    assert_chunked_close(s, SAMPLERS[name](batch_size=None))


def test_augmented_forward_fields_determinism_and_chunking():
    out = _fwd()
    assert isinstance(out, dd.ForwardAugmented)
    assert out.x_T.shape == (N, D) and out.omega.shape == (N,) and out.log_prob.shape == (N,)
    np.testing.assert_allclose(out.log_prob, SDE.prior_log_prob(out.x_T) - out.omega, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(out.nfe), STEPS * (1 + D))
    assert_same(out, _fwd())
    assert_chunked_close(out, _fwd(batch_size=2))
    np.testing.assert_array_equal(np.asarray(_fwd(divergence="hutchinson").nfe), STEPS * 2)


def test_bias_diagnostics_fields():
    bd = dd.sde_bias_diagnostics(P.score, SDE, KEY, (4, D), n_steps=STEPS, n_times=8)
    assert isinstance(bd, dd.BiasDiagnostics)
    for e in bd[:3]:
        assert isinstance(e, dd.Estimate) and e.value.shape == () and e.stderr.shape == ()
        assert np.isfinite(float(e.value)) and float(e.stderr) > 0
    assert isinstance(bd.samples, dd.Samples) and bd.samples.x.shape == (4, D)
    assert bd.elbo.shape == (4,) and bd.log_prob_ode.shape == (4,)
    np.testing.assert_allclose(float(bd.R_lower.value), float(jnp.mean(bd.elbo - bd.log_prob_ode)), rtol=1e-5,
                               atol=1e-6)
    m = dd.sde_bias_diagnostics(P.score, SDE, KEY, (4, D), n_steps=STEPS, n_times=8, scheme="milstein")
    np.testing.assert_array_equal(np.asarray(m.samples.nfe), STEPS * (D + 2))
    with pytest.raises(ValueError, match="scheme"):
        dd.sde_bias_diagnostics(P.score, SDE, KEY, (4, D), n_steps=STEPS, n_times=8, scheme="heun")


@pytest.mark.parametrize("which", ["sample_with_log_prob", "milstein", "reverse_sde_sample", "augmented_forward"])
def test_one_compilation_per_architecture(which):
    m1, m2 = two_models(D, SDE)
    calls = {
        "sample_with_log_prob": lambda s: dd.sample_with_log_prob(s, SDE, KEY, (N, D), n_steps=STEPS),
        "milstein": lambda s: dd.sample_with_log_prob(s, SDE, KEY, (N, D), n_steps=STEPS, scheme="milstein"),
        "reverse_sde_sample": lambda s: dd.reverse_sde_sample(s, SDE, KEY, (N, D), n_steps=STEPS),
        "augmented_forward": lambda s: dd.augmented_forward(s, SDE, X, key=KEY, n_steps=STEPS),
    }
    compiles_once(calls[which], m1, m2)


def test_traced_arguments_do_not_recompile():
    """t0 and lam are traced: new values reuse the compilation."""
    _rev(lam=0.3, t0=1e-3)
    _swlp(t0=1e-3)
    with count_compilations() as c:
        _rev(lam=-0.5, t0=2e-3)
        _swlp(t0=2e-3)
    assert c.n == 0


def _scalar_score(x, t):
    return jnp.sum(x)


def _wrong_d_score(x, t):
    return jnp.zeros(3)


def _nan_score(x, t):
    return jnp.where(t < 0.5, jnp.nan, 1.0) * x


def _nan_far_score(x, t):  # finite at the probe point x = 0, NaN away from it
    return jnp.where(jnp.sum(x * x) > 0.5, jnp.nan, -x)


def _bad_calls():
    swlp = dd.sample_with_log_prob
    rev = dd.reverse_sde_sample
    fwd = dd.augmented_forward
    bias = dd.sde_bias_diagnostics
    s, k = P.score, KEY
    nan_x = X.at[0, 0].set(jnp.nan)
    cases = []
    for name, f in (("swlp", swlp), ("rev", rev), ("bias", bias)):
        cases += [
            (f"{name}-sde", TypeError, "sde", f, (s, "VP", k, (4, 2)), {}),
            (f"{name}-key", ValueError, "key", f, (s, SDE, None, (4, 2)), {}),
            (f"{name}-keytype", TypeError, "key", f, (s, SDE, 3, (4, 2)), {}),
            (f"{name}-shape0", ValueError, "shape", f, (s, SDE, k, (0, 2)), {}),
            (f"{name}-shape1", ValueError, "shape", f, (s, SDE, k, (4,)), {}),
            (f"{name}-shapeNone", ValueError, "shape", f, (s, SDE, k, None), {}),
            (f"{name}-steps0", ValueError, "n_steps", f, (s, SDE, k, (4, 2)), {"n_steps": 0}),
            (f"{name}-steps2.5", ValueError, "n_steps", f, (s, SDE, k, (4, 2)), {"n_steps": 2.5}),
            (f"{name}-stepsnan", ValueError, "n_steps", f, (s, SDE, k, (4, 2)), {"n_steps": float("nan")}),
            (f"{name}-stepsNone", TypeError, "n_steps", f, (s, SDE, k, (4, 2)), {"n_steps": None}),
            (f"{name}-t0zero", ValueError, "t0", f, (s, SDE, k, (4, 2)), {"t0": 0.0}),
            (f"{name}-t0T", ValueError, "t0", f, (s, SDE, k, (4, 2)), {"t0": 2.0}),
            (f"{name}-t0nan", ValueError, "t0", f, (s, SDE, k, (4, 2)), {"t0": float("nan")}),
            (f"{name}-batch", ValueError, "batch_size", f, (s, SDE, k, (4, 2)), {"batch_size": 0}),
            (f"{name}-scorescalar", ValueError, "score", f, (_scalar_score, SDE, k, (4, 2)), {}),
            (f"{name}-scoreD", ValueError, "score", f, (_wrong_d_score, SDE, k, (4, 2)), {}),
            (f"{name}-scorenone", TypeError, "score", f, (None, SDE, k, (4, 2)), {}),
        ]
    cases += [
        ("swlp-scheme", ValueError, "scheme", swlp, (s, SDE, k, (4, 2)), {"scheme": "heun"}),
        ("swlp-save_at-range", ValueError, "save_at", swlp, (s, SDE, k, (4, 2)), {"save_at": jnp.array([0.5, 2.0])}),
        ("swlp-save_at-order", ValueError, "save_at", swlp, (s, SDE, k, (4, 2)), {"save_at": jnp.array([0.1, 0.5])}),
        ("swlp-save_at-milstein", ValueError, "save_at", swlp, (s, SDE, k, (4, 2)),
         {"save_at": jnp.array([0.5]), "scheme": "milstein"}),
        ("swlp-prior", ValueError, "prior_log_prob", swlp, (s, SDE, k, (4, 2)), {"prior_log_prob": lambda x: x}),
        ("swlp-priortype", TypeError, "prior_log_prob", swlp, (s, SDE, k, (4, 2)), {"prior_log_prob": 1.0}),
        ("rev-laminf", ValueError, "lam", rev, (s, SDE, k, (4, 2)), {"lam": -float("inf")}),
        ("rev-lamnan", ValueError, "lam", rev, (s, SDE, k, (4, 2)), {"lam": float("nan")}),
        ("rev-lam2", ValueError, "lam", rev, (s, SDE, k, (4, 2)), {"lam": 2.0}),
        ("rev-lamstr", TypeError, "lam", rev, (s, SDE, k, (4, 2)), {"lam": "0"}),
        ("rev-xTnan", ValueError, "x_T", rev, (s, SDE, k, (5, 2)), {"x_T": nan_x}),
        ("rev-xTshape", ValueError, "x_T", rev, (s, SDE, k, (4, 2)), {"x_T": X}),
        ("rev-xTdim", ValueError, "x_T", rev, (s, SDE, k, (5, 2)), {"x_T": jnp.zeros((5, 3))}),
        ("bias-n1", ValueError, "shape", bias, (s, SDE, k, (1, 2)), {}),
        ("bias-ntimes", ValueError, "n_times", bias, (s, SDE, k, (4, 2)), {"n_times": 0}),
        ("bias-odekw", TypeError, "ode_kwargs", bias, (s, SDE, k, (4, 2)), {"ode_kwargs": 3}),
        ("bias-odekw-key", ValueError, "key", bias, (s, SDE, k, (4, 2)), {"ode_kwargs": {"key": k}}),
        ("fwd-sde", TypeError, "sde", fwd, (s, "VP", X), {"key": k}),
        ("fwd-key", ValueError, "key", fwd, (s, SDE, X), {}),
        ("fwd-xnan", ValueError, "x", fwd, (s, SDE, nan_x), {"key": k}),
        ("fwd-xinf", ValueError, "x", fwd, (s, SDE, X.at[1, 1].set(jnp.inf)), {"key": k}),
        ("fwd-xrank", ValueError, "x", fwd, (s, SDE, X[0]), {"key": k}),
        ("fwd-xempty", ValueError, "x", fwd, (s, SDE, X[:0]), {"key": k}),
        ("fwd-xcomplex", TypeError, "x", fwd, (s, SDE, X.astype(jnp.complex64)), {"key": k}),
        ("fwd-xD", ValueError, "score", fwd, (s, SDE, jnp.zeros((4, 3))), {"key": k}),
        ("fwd-div", ValueError, "divergence", fwd, (s, SDE, X), {"key": k, "divergence": "none"}),
        ("fwd-steps", ValueError, "n_steps", fwd, (s, SDE, X), {"key": k, "n_steps": -1}),
        ("fwd-t0", ValueError, "t0", fwd, (s, SDE, X), {"key": k, "t0": 1.0}),
        ("fwd-scorescalar", ValueError, "score", fwd, (_scalar_score, SDE, X), {"key": k}),
    ]
    return cases


BAD = _bad_calls()


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_raises_naming_the_argument_before_compiling(case, monkeypatch):
    """Each bad argument raises naming it, before the score probe or any kernel runs."""
    import diffdens._engine
    import diffdens.augmented
    import diffdens.reverse

    def no_compiled_work(*a, **k):
        raise AssertionError("compiled work ran before the bad argument was reported")

    for mod, attr in ((diffdens._engine, "_probe"), (diffdens.augmented, "_augmented_kernel"),
                      (diffdens.augmented, "_forward_kernel"), (diffdens.reverse, "_kernel")):
        monkeypatch.setattr(mod, attr, no_compiled_work)
    _, exc, name, fn, args, kw = case
    raises_naming(exc, name, fn, *args, **kw)


@pytest.mark.parametrize("which", ["swlp", "milstein", "rev", "fwd", "bias"])
@pytest.mark.parametrize("score", [_nan_score, _nan_far_score], ids=["nan_at_small_t", "nan_away_from_0"])
def test_nonfinite_score_is_an_error_naming_score(which, score):
    call = {
        "swlp": lambda: dd.sample_with_log_prob(score, SDE, KEY, (N, D), n_steps=STEPS),
        "milstein": lambda: dd.sample_with_log_prob(score, SDE, KEY, (N, D), n_steps=STEPS, scheme="milstein"),
        "rev": lambda: dd.reverse_sde_sample(score, SDE, KEY, (N, D), n_steps=STEPS),
        "fwd": lambda: dd.augmented_forward(score, SDE, 2.0 * X, key=KEY, n_steps=STEPS),
        "bias": lambda: dd.sde_bias_diagnostics(score, SDE, KEY, (N, D), n_steps=STEPS, n_times=8),
    }[which]
    with pytest.raises(ValueError) as info:
        call()
    msg = str(info.value)
    assert "score" in msg and "x contains" not in msg, msg
    if score is _nan_score:
        assert "t=" in msg, msg


def test_nonfinite_prior_log_prob_is_named():
    with pytest.raises(ValueError, match="prior_log_prob"):
        dd.sample_with_log_prob(P.score, SDE, KEY, (N, D), n_steps=STEPS, prior_log_prob=lambda x: jnp.log(x[0]))


def test_lam_one_is_the_ode_and_x_T_is_used():
    """lam = 1 has no noise: two keys give the same samples from the same x_T."""
    x_T = MIX.sample(jax.random.key(3), N)
    a = dd.reverse_sde_sample(P.score, SDE, jax.random.key(1), (N, D), lam=1.0, n_steps=STEPS, x_T=x_T)
    b = dd.reverse_sde_sample(P.score, SDE, jax.random.key(2), (N, D), lam=1.0, n_steps=STEPS, x_T=x_T)
    assert_same(a.x, b.x)
