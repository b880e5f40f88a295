import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_agrees

SDES = [dd.VPSDE(), dd.SubVPSDE(), dd.VESDE()]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_variance_ode(sde, x64):
    """sigma_t^2 solves d v/dt = 2 f v + g^2 and alpha_t solves d alpha/dt = f alpha (autodiff vs coefficients)."""
    ts = jnp.linspace(1e-4, 1.0, 37, dtype=jnp.float64)
    v = lambda t: sde.marginal(t)[1] ** 2
    a = lambda t: sde.marginal(t)[0]
    dv = jax.vmap(jax.grad(v))(ts)
    da = jax.vmap(jax.grad(a))(ts)
    np.testing.assert_allclose(dv, 2 * sde.f(ts) * v(ts) + sde.g2(ts), rtol=1e-9)
    np.testing.assert_allclose(da, sde.f(ts) * a(ts), rtol=1e-9, atol=1e-14)
    assert float(sde.marginal(jnp.float64(0.0))[1]) == 0.0


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_log_snr(sde, x64):
    ts = jnp.linspace(1e-5, 1.0, 41, dtype=jnp.float64)
    a, s = sde.marginal(ts)
    np.testing.assert_allclose(sde.log_snr(ts), jnp.log(a**2 / s**2), rtol=1e-10)
    np.testing.assert_allclose(sde.log_snr_inverse(sde.log_snr(ts)), ts, rtol=1e-8)
    assert jnp.all(jnp.diff(sde.log_snr(ts)) < 0)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_float32_near_zero(sde):
    """expm1 forms keep full relative precision of sigma_t at t0 = 1e-5 in float32."""
    t = jnp.float32(1e-5)
    with jax.enable_x64(True):
        ref = float(sde.marginal(jnp.float64(1e-5))[1])
    assert abs(float(sde.marginal(t)[1]) / ref - 1) < 1e-5
    assert jnp.isfinite(sde.log_snr(t))


def test_prior():
    for sde in SDES:
        x = np.asarray(sde.prior_sample(jax.random.key(0), (20000, 3)), dtype=np.float64).ravel()
        # the sample second moment of a N(0, s^2) prior, with its stderr from the spread of x^2 (float32 draws)
        assert_agrees(np.mean(x ** 2), np.std(x ** 2, ddof=1) / np.sqrt(x.size), sde.prior_std ** 2,
                      dof=x.size - 1, rtol=1e-6, what=f"{type(sde).__name__} prior variance")
        x = sde.prior_sample(jax.random.key(0), (20000, 3))
        from scipy.stats import norm

        np.testing.assert_allclose(sde.prior_log_prob(x[:5]), norm(0, sde.prior_std).logpdf(np.asarray(x[:5])).sum(-1), rtol=1e-5)


def test_bad_params_and_times():
    with pytest.raises(ValueError, match="beta_min"):
        dd.VPSDE(beta_min=-1.0)
    with pytest.raises(ValueError, match="sigma_min"):
        dd.VESDE(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="t1"):
        dd.forward_sample(dd.VPSDE(), jax.random.key(0), jnp.zeros((2, 2)), 1.5)
    with pytest.raises(ValueError, match="x0"):
        dd.forward_sample(dd.VPSDE(), jax.random.key(0), jnp.zeros((2,)), 0.5)
    with pytest.raises(ValueError, match="n_steps"):
        dd.forward_sample(dd.VPSDE(), jax.random.key(0), jnp.zeros((2, 2)), 0.5, n_steps=0)


@pytest.mark.parametrize("sde", [dd.CosineVPSDE(), dd.EDMSDE(), dd.RectifiedFlowSDE()], ids=lambda s: type(s).__name__)
def test_new_schedules_float32_near_zero(sde):
    """The presets keep full relative precision of sigma_t, f, g^2 and the log-SNR inverse at t = 1e-5 T in float32."""
    t32 = jnp.float32(1e-5 * sde.T)
    with jax.enable_x64(True):
        t64 = jnp.float64(1e-5 * sde.T)
        ref = [float(v) for v in (sde.marginal(t64)[1], sde.g2(t64), sde.log_snr(t64))]
    got = [float(v) for v in (sde.marginal(t32)[1], sde.g2(t32), sde.log_snr(t32))]
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    assert abs(float(sde.log_snr_inverse(sde.log_snr(t32))) / float(t32) - 1) < 1e-4
    x = sde.prior_sample(jax.random.key(0), (20000, 2))
    assert abs(float(x.std()) / sde.prior_std - 1) < 0.02
