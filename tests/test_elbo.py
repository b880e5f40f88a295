import jax
import jax.numpy as jnp
import pytest

import diffdens as dd


@pytest.mark.parametrize("sde", [dd.VPSDE(), dd.SubVPSDE(), dd.VESDE()], ids=lambda s: type(s).__name__)
def test_exact_score_elbo_is_tight_and_forms_agree(sde):
    """With the exact score and pi = p_T the bound is tight: both forms agree with log p(x) within their stderr."""
    mix = dd.random_mixture(jax.random.key(3), 3, 2)
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 3)
    truth = mix.log_prob(x)
    ests = {}
    for form in ("dsm", "ism"):
        e = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=8000, form=form, divergence="exact",
                    prior_log_prob=lambda y: p.log_prob(y, sde.T))
        pooled = float(jnp.sum(e.value - truth) / jnp.sqrt(jnp.sum(e.stderr**2)))
        assert abs(pooled) < 3, (form, pooled)
        ests[form] = e
    diff = ests["dsm"].value - ests["ism"].value
    assert jnp.all(jnp.abs(diff) < 3.5 * jnp.hypot(ests["dsm"].stderr, ests["ism"].stderr))


def test_prior_mismatch_lowers_the_bound():
    """With the standard prior instead of p_T the bound drops by E log p_T - E log pi >= 0 (in expectation)."""
    sde = dd.VPSDE()
    mix = dd.random_mixture(jax.random.key(4), 2, 2)
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 3)
    a = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=4000, prior_log_prob=lambda y: p.log_prob(y, sde.T))
    b = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=4000)
    assert jnp.all(b.value <= a.value + 3 * jnp.hypot(a.stderr, b.stderr))


def test_bad_input():
    sde = dd.VPSDE()
    p = dd.standard_mixture("2d").diffuse(sde)
    x = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="form"):
        dd.elbo(p.score, sde, x, key=jax.random.key(0), form="sliced")
    with pytest.raises(ValueError, match="n_times"):
        dd.elbo(p.score, sde, x, key=jax.random.key(0), n_times=0)
    with pytest.raises(ValueError, match="t0"):
        dd.elbo(p.score, sde, x, key=jax.random.key(0), t0=2.0)
    with pytest.raises(ValueError, match="NaN"):
        dd.elbo(p.score, sde, x.at[0, 0].set(jnp.nan), key=jax.random.key(0))
    with pytest.raises(ValueError, match="x must have shape"):
        dd.elbo(p.score, sde, x[0], key=jax.random.key(0))
