import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_agrees, assert_below, assert_bound, assert_unbiased


@pytest.mark.parametrize("sde", [dd.VPSDE(), dd.SubVPSDE(), dd.VESDE()], ids=lambda s: type(s).__name__)
def test_exact_score_elbo_is_tight_and_forms_agree(sde):
    """With the exact score and pi = p_T the bound is tight: both forms agree with log p(x) within their stderr
    (per point, and pooled), and with each other."""
    mix = dd.random_mixture(jax.random.key(3), 3, 2)
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 4)
    truth = mix.log_prob(x)
    prior = jax.tree_util.Partial(p.log_prob, t=sde.T)
    ests = {}
    for form in ("dsm", "ism"):
        e = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=8000, form=form, divergence="exact",
                    prior_log_prob=prior)
        assert_agrees(e.value, e.stderr, truth, dof=7999, what=form)
        assert_unbiased(e.value, e.stderr, truth, what=form)
        ests[form] = e
    a, b = ests["dsm"], ests["ism"]
    assert_agrees(a.value - b.value, jnp.hypot(a.stderr, b.stderr), 0.0, what="dsm - ism")


@pytest.mark.parametrize("t0", [1e-5, 1e-6, 1e-7])
def test_eps_correction_float32_subvp(t0):
    """Issue 16 (1): with the defaults in float32 on sub-VP, sigma_t0 ~ 0.1 t0 lies below the resolution of x, and
    forming x' then x - mean cancelled catastrophically (mean z of -2.5 at t0 = 1e-6). Expanded analytically, the
    bound with the exact score is unbiased for log p, per point and pooled over the points."""
    sde = dd.SubVPSDE()
    mix = dd.random_mixture(jax.random.key(7), 5, 3)
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(1), 8)
    assert x.dtype == jnp.float32
    e = dd.elbo(p.score, sde, x, key=jax.random.key(0), n_times=4000, t0=t0)
    truth = mix.log_prob(x)
    assert_agrees(e.value, e.stderr, truth, dof=3999, what=f"elbo at t0={t0}")
    assert_unbiased(e.value, e.stderr, truth, dof=3999, what=f"elbo at t0={t0}, pooled")


def test_dsm_and_ism_agree_on_subvp_with_the_correction():
    """Chapter 4's sub-VP DSM vs ISM disagreement was the float32 cancellation: both now agree per point."""
    sde = dd.SubVPSDE()
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 16)
    a = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=2000, form="dsm")
    b = dd.elbo(p.score, sde, x, key=jax.random.key(2), n_times=2000, form="ism", divergence="exact")
    assert_agrees(a.value - b.value, jnp.hypot(a.stderr, b.stderr), 0.0, dof=1999, what="dsm - ism")


def test_eps_correction_draws_and_single_draw_stderr():
    """The correction averages n_correction draws (default min(n_times, 32)); n_times = 1 gives a NaN stderr."""
    sde = dd.VPSDE()
    p = dd.standard_mixture("2d").diffuse(sde)
    x = dd.standard_mixture("2d").sample(jax.random.key(0), 3)
    e = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=1)
    assert np.all(np.isnan(np.asarray(e.stderr))) and np.all(np.isfinite(np.asarray(e.value)))
    a = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=500, n_correction=500)
    b = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=500)
    # the correction varies little: 32 draws or 500 change the bound by far less than its stderr
    assert np.all(np.abs(np.asarray(a.value - b.value)) < 0.01 * np.asarray(b.stderr))


def test_prior_mismatch_lowers_the_bound():
    """With the standard prior instead of p_T the bound drops by E log p_T - E log pi >= 0 (in expectation)."""
    sde = dd.VPSDE()
    mix = dd.random_mixture(jax.random.key(4), 2, 2)
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(0), 8)
    a = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=4000, prior_log_prob=lambda y: p.log_prob(y, sde.T))
    b = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=4000)
    assert_bound(b.value, a.value, jnp.hypot(a.stderr, b.stderr))


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
    gaps, ses = np.array(gaps), np.array(ses)
    # each refinement shrinks the gap, with confidence (the pooled stderrs of the two bounds combined)
    assert_below(gaps[1:] - gaps[:-1], np.hypot(ses[1:], ses[:-1]), 0.0, what=f"gap change as L grows {gaps}")
    # at L = 1024 still a lower bound (gap >= 0 within noise), and close to the truth
    assert_bound(e.value, truth, e.stderr, what="DT-ELBO at L=1024")
    assert_below(gaps[-1], ses[-1], 0.3, what="DT-ELBO gap at L=1024")


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

        drops, gap_means, ses = [], [], []
        for lam in (0.0, 0.5):
            kw = dict(key=jax.random.key(3), n_layers=512, n_paths=256, lam=lam)
            e0 = dd.hvae_elbo(p.score, sde, x, **kw)
            e1 = dd.hvae_elbo(p.score, sde, x, inference_drift=drift, **kw)
            g = dd.variational_gap(p.score, sde, x, inference_drift=drift, **kw)
            drops.append(float(jnp.mean(e0.value - e1.value)))
            gap_means.append(float(jnp.mean(g.value)))
            ses.append(float(jnp.sqrt(jnp.sum(e0.stderr**2 + e1.stderr**2 + g.stderr**2)) / x.shape[0]))
        assert min(gap_means) > 0.5, gap_means
        # the drop of the bound equals the gap formula (up to the discretisation of both at L = 512: atol)
        assert_agrees(drops, ses, gap_means, atol=0.02, what="ELBO drop vs variational_gap, lam = 0 and 0.5")


