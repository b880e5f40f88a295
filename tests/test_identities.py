import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_agrees

SDES = [dd.VPSDE(), dd.VESDE()]


def _pair(dim):
    """Two overlapping mixtures: q has p's covariances with shifted means and other weights (KL of order 1)."""
    p = dd.random_mixture(jax.random.key(dim), 3, dim, spread=1.0, scale=0.6)
    shift = 0.4 * jax.random.normal(jax.random.key(100 + dim), p.means.shape)
    q = dd.GaussianMixture(weights=p.weights[::-1], means=p.means + shift, covs=p.covs)
    return p, q


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_kl_identity_matches_monte_carlo(sde, dim):
    """Thm. 1: KL(p||q) = 1/2 int g^2 E_p_t |grad log p_t - grad log q_t|^2 dt, against E_p[log p - log q]."""
    p, q = _pair(dim)
    x = p.sample(jax.random.key(1), 20_000)
    est = dd.kl_divergence(p.diffuse(sde).score, q.diffuse(sde).score, sde, x, key=jax.random.key(2), n_times=8)
    ratio = p.log_prob(x) - q.log_prob(x)
    truth, se = jnp.mean(ratio), jnp.std(ratio) / jnp.sqrt(x.shape[0])
    assert 0.1 < truth  # the two mixtures really differ
    assert est.value.shape == () and est.stderr.shape == ()  # a population estimate
    # the same samples enter both, so the two errors are correlated: hypot is conservative; rtol is the t0 cut
    assert_agrees(est.value, jnp.hypot(est.stderr, se), truth, rtol=0.02, what="KL")


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_entropy_identity_matches_monte_carlo(sde, dim):
    """Thm. 4: H(p) from the score alone, against -E_p log p."""
    p, _ = _pair(dim)
    x = p.sample(jax.random.key(3), 20_000)
    est = dd.entropy(p.diffuse(sde).score, sde, x, key=jax.random.key(4), n_times=8)
    lp = p.log_prob(x)
    truth, se = -jnp.mean(lp), jnp.std(lp) / jnp.sqrt(x.shape[0])
    assert_agrees(est.value, jnp.hypot(est.stderr, se), truth, rtol=0.02, what="entropy")


def test_kl_of_a_distribution_with_itself_is_zero_and_wrong_score_is_not():
    sde = dd.VPSDE()
    p, q = _pair(2)
    x = p.sample(jax.random.key(5), 2000)
    s = p.diffuse(sde).score
    assert float(dd.kl_divergence(s, s, sde, x, key=jax.random.key(6)).value) == 0.0
    assert float(dd.kl_divergence(s, q.diffuse(sde).score, sde, x, key=jax.random.key(6)).value) > 0.1


def test_weighted_score_error_is_the_kl_integrand():
    """weighted_score_error (moved from train) is the Thm. 1 integrand with importance-sampled t: it equals
    kl_divergence(..., importance_sampling=True) for the same key, and vanishes for the exact score."""
    sde = dd.VPSDE()
    p, q = _pair(2)
    x = p.sample(jax.random.key(5), 500)
    sp, sq = p.diffuse(sde).score, q.diffuse(sde).score
    w = dd.weighted_score_error(sq, sp, sde, x, key=jax.random.key(6), n_times=8)
    k = dd.kl_divergence(sp, sq, sde, x, key=jax.random.key(6), n_times=8, importance_sampling=True)
    np.testing.assert_allclose(np.asarray(w.value), np.asarray(k.value), rtol=1e-6)
    assert float(dd.weighted_score_error(sp, sp, sde, x, key=jax.random.key(6)).value) == 0.0


def test_bad_input():
    sde = dd.VPSDE()
    s = dd.standard_mixture("2d").diffuse(sde).score
    with pytest.raises(ValueError, match="x must have shape"):
        dd.kl_divergence(s, s, sde, jnp.zeros((3,)), key=jax.random.key(0))
    with pytest.raises(ValueError, match="x contains NaN"):
        dd.entropy(s, sde, jnp.full((3, 2), jnp.nan), key=jax.random.key(0))
    with pytest.raises(ValueError, match="at least 2"):
        dd.entropy(s, sde, jnp.zeros((1, 2)), key=jax.random.key(0))
