import jax
import jax.numpy as jnp
import pytest

import diffdens as dd

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
    err = abs(float(est.value - truth))
    assert err < max(0.02 * float(truth), 3 * float(jnp.hypot(est.stderr, se))), (float(est.value), float(truth))


@pytest.mark.parametrize("dim", [2, 5])
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_entropy_identity_matches_monte_carlo(sde, dim):
    """Thm. 4: H(p) from the score alone, against -E_p log p."""
    p, _ = _pair(dim)
    x = p.sample(jax.random.key(3), 20_000)
    est = dd.entropy(p.diffuse(sde).score, sde, x, key=jax.random.key(4), n_times=8)
    lp = p.log_prob(x)
    truth, se = -jnp.mean(lp), jnp.std(lp) / jnp.sqrt(x.shape[0])
    err = abs(float(est.value - truth))
    assert err < max(0.02 * abs(float(truth)), 3 * float(jnp.hypot(est.stderr, se))), (float(est.value), float(truth))


def test_kl_of_a_distribution_with_itself_is_zero_and_wrong_score_is_not():
    sde = dd.VPSDE()
    p, q = _pair(2)
    x = p.sample(jax.random.key(5), 2000)
    s = p.diffuse(sde).score
    assert float(dd.kl_divergence(s, s, sde, x, key=jax.random.key(6)).value) == 0.0
    assert float(dd.kl_divergence(s, q.diffuse(sde).score, sde, x, key=jax.random.key(6)).value) > 0.1


def test_bad_input():
    sde = dd.VPSDE()
    s = dd.standard_mixture("2d").diffuse(sde).score
    with pytest.raises(ValueError, match="samples_p"):
        dd.kl_divergence(s, s, sde, jnp.zeros((3,)), key=jax.random.key(0))
    with pytest.raises(ValueError, match="samples"):
        dd.entropy(s, sde, jnp.full((3, 2), jnp.nan), key=jax.random.key(0))
    with pytest.raises(ValueError, match="n_times"):
        dd.entropy(s, sde, jnp.zeros((3, 2)), key=jax.random.key(0), n_times=0)
    with pytest.raises(ValueError, match="t0"):
        dd.entropy(s, sde, jnp.zeros((3, 2)), key=jax.random.key(0), t0=2.0)
    with pytest.raises(ValueError, match="at least 2"):
        dd.entropy(s, sde, jnp.zeros((1, 2)), key=jax.random.key(0))
