import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import diffdens as dd
from diffdens.testing import assert_agrees

SDES = [dd.VPSDE(), dd.SubVPSDE(), dd.VESDE()]


def scipy_log_prob(mix, sde, x, t):
    a, s = (float(v) for v in sde.marginal(jnp.float64(t)))
    dens = sum(
        w * multivariate_normal(a * m, a * a * c + s * s * np.eye(mix.dim)).pdf(x)
        for w, m, c in zip(mix.weights, mix.means, mix.covs)
    )
    return np.log(dens)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("D", [1, 3, 10])
def test_log_prob_matches_scipy(sde, D, x64):
    mix = dd.random_mixture(jax.random.key(D), 3, D)
    x = np.random.default_rng(D).normal(size=(7, D)) * 2
    for t in [1e-5, 0.05, 0.5, 1.0]:
        np.testing.assert_allclose(mix.diffuse(sde).log_prob(x, t), scipy_log_prob(mix, sde, x, t), rtol=0, atol=1e-6)
    np.testing.assert_allclose(mix.log_prob(x), scipy_log_prob(mix, sde, x, 0.0), atol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_score_matches_finite_differences(sde, x64):
    D = 4
    p = dd.random_mixture(jax.random.key(1), 3, D).diffuse(sde)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, D)))
    h = 1e-6
    for t in [1e-3, 0.3, 1.0]:
        eye = jnp.eye(D) * h
        fd = jnp.stack([(p.log_prob(x + e, t) - p.log_prob(x - e, t)) / (2 * h) for e in eye], -1)
        np.testing.assert_allclose(p.score(x, t), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_fokker_planck_residual(sde, x64):
    """d/dt log p_t = -D f - f x.s + g^2/2 (div s + |s|^2), all by autodiff of the closed form."""
    D = 3
    p = dd.random_mixture(jax.random.key(2), 2, D).diffuse(sde)

    def residual(x, t):
        lhs = jax.grad(p.log_prob, argnums=1)(x, t)
        s = p.score(x, t)
        div = jnp.trace(jax.jacfwd(lambda y: p.score(y, t))(x))
        rhs = -D * sde.f(t) - sde.f(t) * x @ s + 0.5 * sde.g2(t) * (div + s @ s)
        return (lhs - rhs) / (jnp.abs(lhs) + jnp.abs(0.5 * sde.g2(t) * (div + s @ s)) + 1)

    ts = jnp.array([1e-3, 0.1, 0.5, 0.9])
    xs = jnp.asarray(np.random.default_rng(1).normal(size=(4, D)))
    assert float(jnp.max(jnp.abs(jax.vmap(residual)(xs, ts)))) < 1e-10


def test_samples_match_density():
    """Monte Carlo check of sample(): mean log p of samples equals -entropy within 4 stderr of an independent estimate."""
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(dd.VPSDE())
    x = p.sample(jax.random.key(0), 50000, 0.2)
    # mean and covariance against the closed form of the mixture moments
    a, s = (float(v) for v in dd.VPSDE().marginal(0.2))
    mean = a * mix.weights @ mix.means
    second = sum(w * (a * a * (c + np.outer(m, m)) + s * s * np.eye(2)) for w, m, c in zip(mix.weights, mix.means, mix.covs))
    cov = second - np.outer(mean, mean)
    xs = np.asarray(x, dtype=np.float64)
    n = xs.shape[0]
    se = xs.std(0, ddof=1) / np.sqrt(n)
    assert_agrees(xs.mean(0), se, mean, dof=n - 1, what="sample mean")
    # each sample covariance entry is a mean of products c_ij = (x_i - m_i)(x_j - m_j): its stderr from their spread
    c = xs - xs.mean(0)
    prods = c[:, :, None] * c[:, None, :]
    assert_agrees(np.cov(xs.T), prods.std(0, ddof=1) / np.sqrt(n), cov, dof=n - 1, atol=1e-6,
                  what="sample covariance")


def test_standard_mixtures():
    assert dd.standard_mixture("9d").dim == 9 and dd.standard_mixture("9d").n_components == 6
    with pytest.raises(ValueError, match="name"):
        dd.standard_mixture("3d")


def test_bad_input():
    w, m, c = [0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2), np.eye(2)]
    with pytest.raises(ValueError, match="weights"):
        dd.GaussianMixture([0.5, 0.6], m, c)
    with pytest.raises(ValueError, match="weights"):
        dd.GaussianMixture([1.5, -0.5], m, c)
    with pytest.raises(ValueError, match="means"):
        dd.GaussianMixture(w, [[0.0, 0.0]], c)
    with pytest.raises(ValueError, match="covs"):
        dd.GaussianMixture(w, m, [np.eye(3), np.eye(3)])
    with pytest.raises(ValueError, match="symmetric"):
        dd.GaussianMixture(w, m, [np.eye(2), [[1.0, 0.5], [0.0, 1.0]]])
    with pytest.raises(ValueError, match="positive definite"):
        dd.GaussianMixture(w, m, [np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="NaN"):
        dd.GaussianMixture(w, [[np.nan, 0.0], [1.0, 1.0]], c)
    mix = dd.GaussianMixture(w, m, c)
    p = mix.diffuse(dd.VPSDE())
    with pytest.raises(ValueError, match="D=2"):
        p.log_prob(jnp.zeros(3), 0.5)
    with pytest.raises(ValueError, match="t must lie"):
        p.score(jnp.zeros(2), 1.5)
    with pytest.raises(ValueError, match="t must lie"):
        p.log_prob(jnp.zeros(2), -0.1)
    with pytest.raises(TypeError, match="sde"):
        mix.diffuse("VP")
