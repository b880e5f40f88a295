"""score_from_eps / score_from_denoiser / score_from_velocity give back the exact mixture's score from its exact
eps, x0 and velocity (computed here independently, from the Gaussian posterior of each component), for every SDE."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from tests.test_schedules import ALL, ids  # noqa: F401  (one list of SDEs for both files)


def exact_x0_mean(mix, sde, x, t):
    """E[x_0 | x_t = x] = sum_k r_k (m_k + alpha C_k (alpha^2 C_k + sigma^2 I)^-1 (x - alpha m_k)) (numpy, float64)."""
    a, s = (float(v) for v in sde.marginal(jnp.asarray(t, jnp.float64)))
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    logs = []
    means = []
    for w, m, C in zip(mix.weights, mix.means, mix.covs):
        S = a**2 * C + s**2 * np.eye(len(m))
        d = x - a * m
        Si = np.linalg.inv(S)
        logs.append(np.log(w) - 0.5 * np.einsum("nd,de,ne->n", d, Si, d) - 0.5 * np.linalg.slogdet(S)[1])
        means.append(m + a * (d @ Si) @ C)
    logs = np.stack(logs, -1)
    r = np.exp(logs - logs.max(-1, keepdims=True))
    r /= r.sum(-1, keepdims=True)
    return np.einsum("nk,knd->nd", r, np.stack(means))


@pytest.mark.parametrize("sde", ALL, ids=ids)
def test_adapters_recover_exact_score(sde, x64):
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    x = np.asarray(p.sample(jax.random.key(0), 6, 0.5 * sde.T), np.float64)
    for frac in (0.02, 0.3, 0.8):
        t = frac * sde.T
        a, s = (float(v) for v in sde.marginal(jnp.asarray(t)))
        f, g2 = float(sde.f(jnp.asarray(t))), float(sde.g2(jnp.asarray(t)))
        x0 = exact_x0_mean(mix, sde, x, t)
        eps = (x - a * x0) / s
        da, ds = f * a, (g2 + 2 * f * s**2) / (2 * s)  # alpha', sigma'
        tables = {"x0": x0, "eps": eps, "flow": da * x0 + ds * eps, "v": a * eps - s * x0}
        lookup = lambda name: (lambda y, tt: jnp.asarray(tables[name])[jnp.argmin(jnp.sum((x - y) ** 2, -1))])
        scores = {
            "eps": dd.score_from_eps(lookup("eps"), sde, dim=2),
            "x0": dd.score_from_denoiser(lookup("x0"), sde),
            "flow": dd.score_from_velocity(lookup("flow"), sde),
            "v": dd.score_from_velocity(lookup("v"), sde, kind="v"),
        }
        truth = np.asarray(p.score(jnp.asarray(x), t))
        for name, sc in scores.items():
            got = np.asarray(jax.vmap(sc, (0, None))(jnp.asarray(x), t))
            np.testing.assert_allclose(got, truth, rtol=1e-8, atol=1e-8 * np.abs(truth).max(), err_msg=f"{name} {t}")


def test_edm_denoiser_of_sigma(x64):
    """EDM's D(x; sigma) on any SDE: called as D(x / alpha, sigma / alpha); on EDMSDE that is D(x, t)."""
    mix = dd.standard_mixture("2d")
    for sde in (dd.EDMSDE(), dd.CosineVPSDE()):
        p = mix.diffuse(sde)
        edm = mix.diffuse(dd.EDMSDE(sigma_max=1e4))
        D = lambda y, sig: y + sig**2 * edm.score(y, sig)  # Tweedie at noise level sig, alpha = 1
        sc = dd.score_from_denoiser(D, sde, sigma_input=True)
        x = p.sample(jax.random.key(1), 4, 0.3 * sde.T)
        np.testing.assert_allclose(jax.vmap(sc, (0, None))(x, 0.3 * sde.T), p.score(x, 0.3 * sde.T), rtol=1e-8)


def test_from_discrete_timesteps(x64):
    sde0 = dd.VPSDE()
    p = dd.standard_mixture("2d").diffuse(sde0)
    seen = []

    def eps_int(x, i):  # an "integer timestep" network: i = t (N - 1)
        seen.append(i)
        t = i / 999.0
        return -sde0.marginal(t)[1] * p.score(x, t)

    score, sde = dd.from_discrete_timesteps(eps_int, dim=2)
    assert sde == dd.VPSDE(beta_min=0.1, beta_max=20.0)
    x = jnp.array([0.3, -0.4])
    np.testing.assert_allclose(score(x, 0.25), p.score(x, 0.25), rtol=1e-9)
    r, _ = dd.from_discrete_timesteps(eps_int, round_t=True)
    r(x, 0.25001)
    assert float(seen[-1]) == 250.0


def test_adapter_is_traced_and_estimators_accept_it():
    sde = dd.CosineVPSDE()
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    sc = dd.score_from_eps(lambda y, t: -sde.marginal(t)[1] * p.score(y, t), sde)
    assert isinstance(sc, dd.adapters.EpsScore)
    x = mix.sample(jax.random.key(0), 2)
    est = dd.ode_log_prob(sc, sde, x, prior_log_prob=lambda y: p.log_prob(y, sde.T))
    np.testing.assert_allclose(est.value, p.log_prob(x, 1e-5), atol=5e-3)


def test_wrong_output_shape_names_argument():
    sde = dd.VPSDE()
    with pytest.raises(ValueError, match="eps_fn"):
        dd.score_from_eps(lambda x, t: x[0], sde, dim=3)
    with pytest.raises(ValueError, match="denoiser_fn"):
        dd.score_from_denoiser(lambda x, t: jnp.zeros(4), sde, dim=3)
    with pytest.raises(ValueError, match="v_fn"):
        dd.score_from_velocity(lambda x, t: jnp.zeros((3, 3)), sde, dim=3)
    sc = dd.score_from_velocity(lambda x, t: x[:1], sde)  # no dim: the estimators' shape check catches it
    with pytest.raises(ValueError, match="v_fn"):
        dd.ode_log_prob(sc, sde, jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="kind"):
        dd.score_from_velocity(lambda x, t: x, sde, kind="velocity")
    with pytest.raises(TypeError, match="eps_fn"):
        dd.score_from_eps(None, sde)
    with pytest.raises(TypeError, match="sde"):
        dd.score_from_eps(lambda x, t: x, "VP")
    with pytest.raises(ValueError, match="beta_end"):
        dd.from_discrete_timesteps(lambda x, i: x, beta_start=0.1, beta_end=0.01)


def test_two_networks_of_one_architecture_compile_once():
    """An adapter is a pytree holding the network: its weights are traced, so a second network of the same
    architecture reuses the compiled function."""
    import equinox as eqx
    from diffdens.testing import count_compilations

    sde = dd.RectifiedFlowSDE()
    nets = [dd.init_model(3, sde, key=jax.random.key(i), hidden=8, depth=1).net for i in (0, 1)]

    @eqx.filter_jit
    def apply(score, x):
        return jax.vmap(score, (0, None))(x, 0.5)

    x = jnp.ones((2, 3))
    apply(dd.score_from_velocity(nets[0], sde), x)
    with count_compilations() as c:
        apply(dd.score_from_velocity(nets[1], sde), x)
        apply(dd.score_from_eps(nets[1], sde), x)  # another adapter type: its own compilation
    assert c.n == 1


@pytest.mark.parametrize("call", [
    lambda s, sde, x, k: dd.ode_log_prob(s, sde, x),
    lambda s, sde, x, k: dd.elbo(s, sde, x, key=k, n_times=8),
    lambda s, sde, x, k: dd.path_integral_log_prob(s, sde, x, key=k, n_throws=8),
    lambda s, sde, x, k: dd.sample_with_log_prob(s, sde, k, (2, 3), n_steps=4),
], ids=["ode_log_prob", "elbo", "path_integral_log_prob", "sample_with_log_prob"])
def test_score_built_for_another_sde_raises(call):
    """Issue 27 item 3: an eps-model of VP under CosineVPSDE raises naming sde; the matching SDE runs; wrapping the
    score opts out."""
    vp, cos = dd.VPSDE(), dd.CosineVPSDE()
    s = dd.score_from_eps(lambda x, t: 0.5 * x, vp)
    x, k = jnp.ones((2, 3)) * 0.3, jax.random.key(0)
    with pytest.raises(ValueError, match="sde"):
        call(s, cos, x, k)
    call(s, vp, x, k)
    call(lambda y, t: s(y, t), cos, x, k)
