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


def test_bias_16000_steps_and_d5():
    sde = dd.VPSDE()
    for D, n_steps, n, slack in ((2, 16000, 48, 0.01), (5, 1000, 96, 0.05)):
        mix = dd.random_mixture(jax.random.key(D), 3, D)
        p = mix.diffuse(sde)
        x0, r0 = dd.sample_with_log_prob(p.score, sde, jax.random.key(1), (n, D), n_steps=n_steps,
                                         prior_log_prob=lambda y: p.log_prob(y, sde.T))
        err = r0 - mix.log_prob(x0)
        se = float(jnp.std(err) / jnp.sqrt(n))
        assert abs(float(jnp.mean(err))) < 3 * se + slack, (D, n_steps, float(jnp.mean(err)), se)


def test_augmented_forward_exact_score():
    """With the true score, log p_T(x_T) - omega_T is unbiased for log p_0(x_0) (Thm. 4 with Y of mean zero)."""
    sde = dd.VPSDE()
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    x0 = mix.sample(jax.random.key(0), 128)
    for div in ("exact", "hutchinson"):
        xT, w = dd.augmented_forward(p.score, sde, x0, jax.random.key(1), n_steps=1000, divergence=div)
        err = p.log_prob(xT, sde.T) - w - mix.log_prob(x0)
        assert abs(float(jnp.mean(err))) < 3 * float(jnp.std(err) / jnp.sqrt(128)) + 0.05
    with pytest.raises(ValueError, match="NaN"):
        dd.augmented_forward(p.score, sde, x0.at[0, 0].set(jnp.nan), jax.random.key(1))
    with pytest.raises(ValueError, match="divergence"):
        dd.augmented_forward(p.score, sde, x0, jax.random.key(1), divergence="none")


def test_bias_diagnostics():
    sde = dd.VPSDE()
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    pert = lambda x, t: 1.2 * p.score(x, t) + 0.3
    bd = dd.sde_bias_diagnostics(pert, sde, jax.random.key(2), (64, 2), n_steps=500, n_times=400)
    for e in (bd.R, bd.R_upper):
        assert float(e.value) > -3 * float(e.stderr) and float(e.stderr) > 0
    assert float(bd.R.value) > 3 * float(bd.R.stderr)  # a wrong score shows a bias
    exact = dd.sde_bias_diagnostics(p.score, sde, jax.random.key(2), (64, 2), n_steps=500, n_times=400)
    for e in exact:
        assert abs(float(e.value)) < 3 * float(e.stderr) + 0.05
    with pytest.raises(ValueError, match="2 samples"):
        dd.sde_bias_diagnostics(p.score, sde, jax.random.key(2), (1, 2))


def test_milstein_scheme_has_strong_order_one():
    """The Milstein term g^2 h (z^T H z - tr H)/2 removes Euler-Maruyama's O(sqrt h) pathwise error in r: the spread of
    r0 - log p0(x0) halves with each halving of h, and is far below Euler's at equal steps."""
    sde = dd.VPSDE()
    mix = dd.random_mixture(jax.random.key(5), 4, 5)
    p = mix.diffuse(sde)
    spread = {}
    for scheme in ("euler", "milstein"):
        for k in (250, 1000):
            x0, r0 = dd.sample_with_log_prob(p.score, sde, jax.random.key(1), (128, 5), n_steps=k, scheme=scheme,
                                             prior_log_prob=lambda y: p.log_prob(y, sde.T))
            spread[scheme, k] = float(jnp.std(r0 - mix.log_prob(x0)))
    order = jnp.log(spread["milstein", 250] / spread["milstein", 1000]) / jnp.log(4.0)
    assert 0.8 < float(order) < 1.3, spread
    assert spread["milstein", 1000] < 0.25 * spread["euler", 1000], spread


def test_save_at_returns_the_trajectory_and_its_log_density():
    """The saved path ends at the sample, and along it r_t tracks log p_t(x_t) (exact score)."""
    sde = dd.VPSDE()
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    ts = jnp.linspace(1.0, 1e-5, 6)
    x0, r0, (xs, rs) = dd.sample_with_log_prob(p.score, sde, jax.random.key(2), (64, 2), n_steps=2000, save_at=ts,
                                               prior_log_prob=lambda y: p.log_prob(y, sde.T))
    assert xs.shape == (64, 6, 2) and rs.shape == (64, 6)
    assert jnp.allclose(xs[:, -1], x0) and jnp.allclose(rs[:, -1], r0)
    truth = jnp.stack([p.log_prob(xs[:, i], t) for i, t in enumerate(ts)], axis=1)
    err = rs - truth
    assert jnp.all(jnp.abs(err.mean(0)) < 3 * err.std(0) / 8 + 0.05)
    with pytest.raises(ValueError, match="save_at"):
        dd.sample_with_log_prob(p.score, sde, jax.random.key(2), (4, 2), save_at=jnp.array([0.1, 0.5]))
    with pytest.raises(ValueError, match="scheme"):
        dd.sample_with_log_prob(p.score, sde, jax.random.key(2), (4, 2), scheme="heun")
