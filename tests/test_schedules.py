"""Any noise schedule: LinearSDE.from_schedule and the presets (cosine, EDM, rectified flow), against their own
f and g, the exact mixture, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_agrees, count_compilations


def my_alpha(t):  # a schedule that is neither VP nor VE (module level, so a checkpoint can name it)
    return jnp.exp(-t)


def my_sigma(t):
    return t * (1 + t)


def custom():
    return dd.LinearSDE.from_schedule(my_alpha, my_sigma, T=3.0, name="exp-quadratic")


NEW = [dd.CosineVPSDE(), dd.EDMSDE(), dd.RectifiedFlowSDE(), custom()]
ALL = [dd.VPSDE(), dd.SubVPSDE(), dd.VESDE()] + NEW
ids = lambda s: type(s).__name__


@pytest.mark.parametrize("sde", ALL, ids=ids)
def test_marginal_solves_moment_odes(sde, x64):
    """d alpha/dt = f alpha and d sigma^2/dt = 2 f sigma^2 + g^2 (central differences, float64)."""
    ts = jnp.array([0.05, 0.3, 0.6, 0.9]) * sde.T
    h = 1e-5 * sde.T
    (ap, sp), (am, sm) = sde.marginal(ts + h), sde.marginal(ts - h)
    a, s = sde.marginal(ts)
    np.testing.assert_allclose((ap - am) / (2 * h), sde.f(ts) * a, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose((sp**2 - sm**2) / (2 * h), 2 * sde.f(ts) * s**2 + sde.g2(ts), rtol=1e-6)
    # the log-SNR, its slope -g^2/sigma^2 and its inverse
    lam = sde.log_snr(ts)
    np.testing.assert_allclose(lam, jnp.log(a**2 / s**2), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose((sde.log_snr(ts + h) - sde.log_snr(ts - h)) / (2 * h), -sde.g2(ts) / s**2, rtol=1e-6)
    np.testing.assert_allclose(sde.log_snr_inverse(lam), ts, rtol=1e-9)
    np.testing.assert_allclose(jax.jit(sde.log_snr_inverse)(lam), ts, rtol=1e-9)


@pytest.mark.parametrize("sde", NEW, ids=ids)
def test_exact_mixture_pf_ode_and_elbo(sde, x64):
    mix = dd.random_mixture(jax.random.key(11), 3, 2)
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(1), 3)
    prior = lambda y: p.log_prob(y, sde.T)
    t0 = 1e-5 * sde.T
    est = dd.ode_log_prob(p.score, sde, x, prior_log_prob=prior, solve=dd.SolveOptions(rtol=1e-8, atol=1e-8),
                          t0=t0)
    np.testing.assert_allclose(est.value, p.log_prob(x, t0), atol=1e-5)
    e = dd.elbo(p.score, sde, x, key=jax.random.key(2), n_times=2000, divergence="exact", prior_log_prob=prior, t0=t0)
    assert_agrees(e.value, e.stderr, mix.log_prob(x), dof=1999, atol=1e-3, what=f"elbo on {sde}")


def test_presets_hashable_comparable_and_reported():
    assert dd.CosineVPSDE() == dd.CosineVPSDE() and hash(dd.EDMSDE()) == hash(dd.EDMSDE())
    assert custom() == custom() and hash(custom()) == hash(custom())
    assert dd.CosineVPSDE() != dd.CosineVPSDE(s=0.01)
    other = dd.LinearSDE.from_schedule(lambda t: jnp.exp(-t), my_sigma, T=3.0, name="exp-quadratic")
    assert other != custom()
    edm = dd.EDMSDE()
    assert edm.T == 80.0 and edm.prior_std == 80.0
    rf = dd.RectifiedFlowSDE()
    assert rf.T < 1 and rf.prior_std == pytest.approx(rf.T)
    x0 = jnp.ones((4, 3))
    # KL(N(alpha_T x0, sigma_T^2) || N(0, sigma_T^2)) = alpha_T^2 |x0|^2 / (2 sigma_T^2)
    np.testing.assert_allclose(rf.prior_mismatch(x0), 0.5 * (1 - rf.T) ** 2 / rf.T**2 * 3, rtol=1e-5)
    assert float(dd.RectifiedFlowSDE(T=0.9).prior_mismatch(x0)[0]) > float(rf.prior_mismatch(x0)[0])


def test_bad_schedules_raise_naming_it():
    with pytest.raises(ValueError, match="alpha must be positive"):
        dd.LinearSDE.from_schedule(lambda t: 1 - t, lambda t: t, T=1.0)
    with pytest.raises(ValueError, match="sigma must be .*increasing"):
        dd.LinearSDE.from_schedule(lambda t: 1.0 + 0 * t, lambda t: 1 - t / 2, T=1.0)
    with pytest.raises(ValueError, match="log-SNR .* must be decreasing"):
        dd.LinearSDE.from_schedule(lambda t: jnp.exp(t), lambda t: 0.5 * t, T=3.0)
    with pytest.raises(ValueError, match="T must be positive"):
        dd.LinearSDE.from_schedule(my_alpha, my_sigma, T=-1.0)
    with pytest.raises(TypeError, match="alpha"):
        dd.LinearSDE.from_schedule(3.0, my_sigma)
    with pytest.raises(ValueError, match="RectifiedFlowSDE needs 0 < T < 1"):
        dd.RectifiedFlowSDE(T=1.0)
    with pytest.raises(ValueError, match="EDMSDE"):
        dd.EDMSDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="CosineVPSDE"):
        dd.CosineVPSDE(T=1.0)


def test_schedule_must_start_at_the_data_be_continuous_and_have_positive_g2():
    """validate(): alpha(0) = 1 and sigma(0) = 0 (else N(alpha_t x0, sigma_t^2) is not the transition from t = 0 and
    the ELBO can exceed log p), alpha and sigma without jumps, g^2 > 0 on (0, T]."""
    with pytest.raises(ValueError, match=r"alpha\(0\) = 1 and sigma\(0\) = 0.*alpha\(0\) = 2"):
        dd.LinearSDE.from_schedule(lambda t: 2 * jnp.exp(-t), lambda t: t, T=1.0, name="double")
    with pytest.raises(ValueError, match=r"'offset'.*sigma\(0\) = 0.5"):
        dd.LinearSDE.from_schedule(lambda t: jnp.exp(-t), lambda t: 0.5 + t, T=1.0, name="offset")
    with pytest.raises(ValueError, match=r"sigma\(t\) must be continuous.*jumps between t = 0.5"):
        dd.LinearSDE.from_schedule(lambda t: jnp.exp(-t), lambda t: t + 0.3 * (t > 0.5), T=1.0)
    with pytest.raises(ValueError, match=r"sigma\(t\) must be continuous.*jumps between t = 0.7"):  # off the grid
        dd.LinearSDE.from_schedule(lambda t: jnp.exp(-t), lambda t: t + 1e-2 * (t > 0.70021), T=1.0)
    with pytest.raises(ValueError, match=r"alpha\(t\) must be continuous"):
        dd.LinearSDE.from_schedule(lambda t: jnp.exp(-t) * (1 - 0.3 * (t > 0.25)), lambda t: t, T=1.0)
    with pytest.raises(ValueError, match=r"g\^2 .* must be positive.*g\^2\(0.5\) = 0"):  # sigma flat at t = 0.5
        dd.LinearSDE.from_schedule(lambda t: 1.0 + 0 * t, lambda t: (t - 0.5) ** 3 + 0.125, T=1.0)


@pytest.mark.parametrize("sde", NEW + [dd.CosineVPSDE(s=0.1, T=0.9), dd.EDMSDE(sigma_min=0.01, sigma_max=5.0),
                                       dd.RectifiedFlowSDE(T=0.5)], ids=ids)
def test_presets_validate(sde):
    sde.validate()


def test_sqrt_like_schedules_validate():
    """sigma ~ sqrt(t) near 0 (VP-like paths) and a slowly varying power are continuous, not jumps."""
    dd.LinearSDE.from_schedule(lambda t: jnp.exp(-2 * t), lambda t: jnp.sqrt(-jnp.expm1(-4 * t)), T=2.0)
    dd.LinearSDE.from_schedule(lambda t: 1.0 + 0 * t, lambda t: t**0.25, T=1.0)


@pytest.mark.parametrize("sde", [dd.VESDE(), dd.EDMSDE(), dd.RectifiedFlowSDE()], ids=ids)
def test_diffused_mixture_moments(sde):
    """p_t.sample matches the mixture's first two moments pushed through (alpha_t, sigma_t)."""
    mix = dd.standard_mixture("2d")
    t = 0.4 * sde.T
    y = mix.diffuse(sde).sample(jax.random.key(0), 4000, t)
    a, s = sde.marginal(jnp.asarray(t))
    mean = mix.weights @ mix.means
    np.testing.assert_allclose(jnp.mean(y, 0), a * mean, atol=5 * float(s + 1) / np.sqrt(4000))


def test_forward_sample_compiles_once_and_moments():
    sde = dd.RectifiedFlowSDE()
    x0 = jnp.ones((2000, 1))
    dd.forward_sample(sde, jax.random.key(0), x0, 0.3, n_steps=100)
    with count_compilations() as c:
        y = dd.forward_sample(dd.RectifiedFlowSDE(), jax.random.key(1), x0, 0.5, n_steps=100, t0=0.0)
    assert c.n == 0
    a, s = sde.marginal(jnp.asarray(0.5))
    assert abs(float(jnp.mean(y)) - float(a)) < 5 * float(s) / np.sqrt(2000) + 0.01  # + Euler bias
    assert abs(float(jnp.std(y)) - float(s)) < 0.04


@pytest.mark.parametrize("sde", NEW + [dd.VPSDE()], ids=ids)
def test_sde_config_round_trip(sde):
    from diffdens.sde import sde_config, sde_from_config

    assert sde_from_config(sde_config(sde), trust_code=True) == sde


def test_lambda_schedule_not_serializable():
    from diffdens.sde import sde_config

    sde = dd.LinearSDE.from_schedule(lambda t: jnp.exp(-t), my_sigma, T=1.0)
    with pytest.raises(ValueError, match="sde"):
        sde_config(sde)


def test_custom_sde_config_imports_nothing_without_trust_code(tmp_path, monkeypatch):
    """A stored CustomSDE names functions to import: rebuilding it without trust_code raises before any import."""
    from diffdens.sde import sde_from_config

    marker = tmp_path / "imported"
    (tmp_path / "evil_schedule.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef a(t):\n    return t\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = {"class": "CustomSDE", "alpha": "evil_schedule:a", "sigma": "evil_schedule:a", "T": 1.0, "name": "x",
           "prior_std": 1.0}
    with pytest.raises(ValueError, match="trust_code"):
        sde_from_config(cfg)
    assert not marker.exists()
    with pytest.raises(ValueError, match="module:qualname"):
        sde_from_config({**cfg, "alpha": "os.system"}, trust_code=True)
