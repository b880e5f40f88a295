import jax
import jax.numpy as jnp
import pytest

import diffdens as dd


def _setup():
    sde = dd.VPSDE()
    dm = dd.standard_mixture("2d").diffuse(sde)
    return sde, dm


def test_bias_1000_steps():
    sde, dm = _setup()
    n = 200
    x, r = dd.sample_with_log_prob(dm.score, sde, jax.random.key(0), (n, 2), n_steps=1000,
                                   prior_log_prob=lambda x: dm.log_prob(x, sde.T))
    e = r - dm.log_prob(x, 1e-5)
    assert abs(float(e.mean())) < 3 * float(e.std() / jnp.sqrt(n)) + 0.05


@pytest.mark.parametrize("shape", [(0, 2), (3,), (2, 2.5), None])
def test_bad_shape(shape):
    sde, dm = _setup()
    with pytest.raises(ValueError, match="shape"):
        dd.sample_with_log_prob(dm.score, sde, jax.random.key(0), shape)


def test_bad_n_steps():
    sde, dm = _setup()
    with pytest.raises(ValueError, match="n_steps"):
        dd.sample_with_log_prob(dm.score, sde, jax.random.key(0), (2, 2), n_steps=0)


def test_strong_order_half():
    sde, dm = _setup()
    steps = jnp.array([50, 200, 800])
    rms = []
    for ns in steps.tolist():
        x, r = dd.sample_with_log_prob(dm.score, sde, jax.random.key(1), (100, 2), n_steps=ns,
                                       prior_log_prob=lambda x: dm.log_prob(x, sde.T))
        rms.append(jnp.sqrt(jnp.mean((r - dm.log_prob(x, 1e-5)) ** 2)))
    slope = -jnp.polyfit(jnp.log(steps.astype(float)), jnp.log(jnp.array(rms)), 1)[0]
    assert 0.35 < float(slope) < 0.65, slope
