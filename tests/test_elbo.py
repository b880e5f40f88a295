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


def test_importance_sampling_reduces_variance_on_narrow_data():
    """Log-SNR-uniform t (Song et al. eq. 12) cancels the 1/sigma^2 growth of the integrand that narrow data gives
    the VP bound; measured per point, the variance ratio uniform / IS is well above 1."""
    sde = dd.VPSDE()
    mix = dd.random_mixture(jax.random.key(3), 3, 2, scale=0.05)
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 64)
    var = {is_: jnp.mean(dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=1000,
                                 importance_sampling=is_).stderr ** 2) for is_ in (False, True)}
    assert float(var[False] / var[True]) > 2.0


def test_hvae_elbo_approaches_the_truth_as_layers_grow():
    """Thm. 5 of Huang et al.: with the exact score the DT-ELBO gap log p - E^L shrinks as L grows, toward 0."""
    sde = dd.VPSDE()
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 8)
    truth = mix.log_prob(x)
    gaps, ses = [], []
    for L in (16, 64, 256, 1024):
        e = dd.hvae_elbo(p.score, sde, x, key=jax.random.key(2), n_layers=L, n_paths=128)
        gaps.append(float(jnp.mean(truth - e.value)))
        ses.append(float(jnp.sqrt(jnp.sum(e.stderr**2)) / x.shape[0]))
    for a, b, sa, sb in zip(gaps, gaps[1:], ses, ses[1:]):
        assert b < a - 3 * (sa**2 + sb**2) ** 0.5, gaps
    assert gaps[-1] > -3 * ses[-1] and gaps[-1] < 0.3, gaps


def test_variational_gap_formula_with_a_perturbed_inference_drift():
    """Thm. 4 of Huang et al.: perturbing the inference drift lowers the ELBO by 1/2 int E|a - a*|^2 (at equal L,
    the discretisation error of the unperturbed bound cancels in the difference)."""
    with jax.enable_x64(True):
        sde = dd.VPSDE()
        mix = dd.standard_mixture("2d")
        p = mix.diffuse(sde)
        x = mix.sample(jax.random.key(0), 8)

        def drift(y, t):
            return sde.f(t) * y + 0.5 * sde.g2(t) * jnp.tanh(y[::-1])

        for lam in (0.0, 0.5):
            kw = dict(key=jax.random.key(3), n_layers=512, n_paths=256, lam=lam)
            e0 = dd.hvae_elbo(p.score, sde, x, **kw)
            e1 = dd.hvae_elbo(p.score, sde, x, inference_drift=drift, **kw)
            g = dd.variational_gap(p.score, sde, x, inference_drift=drift, **kw)
            drop = jnp.mean(e0.value - e1.value)
            se = jnp.sqrt(jnp.sum(e0.stderr**2 + e1.stderr**2 + g.stderr**2)) / x.shape[0]
            assert float(jnp.mean(g.value)) > 0.5
            assert abs(float(drop - jnp.mean(g.value))) < 3 * float(se) + 0.02, (lam, float(drop), float(jnp.mean(g.value)))


def test_hvae_bad_input():
    sde = dd.VPSDE()
    s = dd.standard_mixture("2d").diffuse(sde).score
    x = jnp.zeros((2, 2))
    with pytest.raises(ValueError, match="lam"):
        dd.hvae_elbo(s, sde, x, key=jax.random.key(0), n_layers=4, lam=1.0)
    with pytest.raises(ValueError, match="n_layers"):
        dd.hvae_elbo(s, sde, x, key=jax.random.key(0), n_layers=0)
    with pytest.raises(ValueError, match="inference_drift"):
        dd.variational_gap(s, sde, x, key=jax.random.key(0), n_layers=4, inference_drift=3.0)
