import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_agrees


@pytest.mark.parametrize("sde", [dd.VPSDE(), dd.SubVPSDE(), dd.VESDE()], ids=lambda s: type(s).__name__)
def test_time_sampling_integrates(sde, x64):
    """Both samplers integrate h over [t0, T]; the IS sampler is unbiased and has lower variance for an integrand shaped like g^2/sigma^2."""
    h = lambda t: sde.g2(t) / sde.marginal(t)[1] ** 2 * (1 + jnp.sin(3 * t) ** 2)
    ts = jnp.geomspace(1e-5, 1.0, 400001, dtype=jnp.float64)
    exact = float(jnp.trapezoid(h(ts), ts)) if hasattr(jnp, "trapezoid") else float(jnp.trapz(h(ts), ts))
    out = {}
    for is_ in (False, True):
        t, w = dd.sample_times(sde, jax.random.key(0), (100000,), t0=1e-5, importance_sampling=is_)
        assert float(t.min()) >= 1e-5 and float(t.max()) <= 1.0
        vals = w * h(t)
        est, se = float(vals.mean()), float(vals.std(ddof=1) / np.sqrt(vals.size))
        # rtol: the trapezoid reference on a geometric grid
        assert_agrees(est, se, exact, dof=vals.size - 1, rtol=1e-3, what=f"importance_sampling={is_}")
        out[is_] = se
    assert out[True] < out[False]


def test_divergence_exact_and_hutchinson(x64):
    A = jax.random.normal(jax.random.key(0), (5, 5))
    fn = lambda x: jnp.tanh(A @ x)
    x = jnp.linspace(-1, 1, 5)
    y, div = dd.value_and_divergence(fn, x)
    np.testing.assert_allclose(y, fn(x))
    np.testing.assert_allclose(div, jnp.trace(jax.jacfwd(fn)(x)), rtol=1e-12)
    for probe in ("rademacher", "gaussian"):
        v = dd.make_probes(jax.random.key(1), 20000, 5, probe)
        _, est = dd.value_and_divergence(fn, x, v)
        e = dd.Estimate.from_samples(est)
        assert_agrees(e.value, e.stderr, div, dof=v.shape[0] - 1, what=f"Hutchinson ({probe})")
    with pytest.raises(ValueError, match="probe"):
        dd.make_probes(jax.random.key(1), 2, 5, "uniform")


def test_estimate_from_samples():
    s = jnp.arange(12.0).reshape(3, 4)
    e = dd.Estimate.from_samples(s, nfe=jnp.array([1, 2, 3]))
    np.testing.assert_allclose(e.value, s.mean(1))
    np.testing.assert_allclose(e.stderr, s.std(1, ddof=1) / 2)
    assert e.nfe.shape == (3,)
    # an Estimate is a pytree and goes through jit
    assert jax.jit(lambda e: e)(e).value.shape == (3,)


def test_profile(monkeypatch):
    monkeypatch.setenv("DIFFDENS_PROFILE", "full")
    assert dd.book.profile() == "full" and dd.book.pick(quick=1, full=2) == 2
    monkeypatch.setenv("DIFFDENS_PROFILE", "quick")
    assert dd.book.pick(quick=1, full=2) == 1
    monkeypatch.setenv("DIFFDENS_PROFILE", "fast")
    with pytest.raises(ValueError, match="DIFFDENS_PROFILE"):
        dd.book.profile()
