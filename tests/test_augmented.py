"""The augmented SDEs against the exact mixture density (statistical checks through diffdens.testing)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_agrees, assert_rate, critical_value

SDE = dd.VPSDE()


def _mean_and_se(err):
    e = np.asarray(err, dtype=np.float64)
    return e.mean(), e.std(ddof=1) / np.sqrt(e.size)


@pytest.fixture(scope="module")
def mix5():
    mix = dd.random_mixture(jax.random.key(5), 4, 5)
    p = mix.diffuse(SDE)
    return mix, p, (lambda y: p.log_prob(y, SDE.T))


def test_weak_order_one(mix5):
    """The bias of r0 (its mean error) is O(h): a log-log slope of 1 in the step. Milstein's r0 has the same bias as
    Euler's (both share the drift's weak error) with a far smaller spread, so it resolves the bias cheaply."""
    mix, p, prior = mix5
    steps, bias, se = [60, 120, 240], [], []
    for k in steps:
        s = dd.sample_with_log_prob(p.score, SDE, jax.random.key(1), (128, 5), n_steps=k, scheme="milstein",
                                    prior_log_prob=prior)
        m, e = _mean_and_se(s.log_prob - mix.log_prob(s.x))
        assert m > critical_value(1e-3) * e  # resolved: a positive bias
        bias.append(m)
        se.append(e)
    h = (SDE.T - 1e-5) / np.array(steps)
    assert_rate(h, bias, 1.0, errors_stderr=se, slack=0.1, what="weak error of r0")


def test_euler_strong_order_half_and_milstein_one(mix5):
    """The spread of r0 - log p0(x0) (the pathwise error with the bias removed) shrinks like h^(1/2) for Euler and
    like h for Milstein, which is far smaller at equal steps."""
    mix, p, prior = mix5
    n, steps = 128, [100, 400]
    spread = {}
    for scheme in ("euler", "milstein"):
        for k in steps:
            s = dd.sample_with_log_prob(p.score, SDE, jax.random.key(2), (n, 5), n_steps=k, scheme=scheme,
                                        prior_log_prob=prior)
            spread[scheme, k] = float(np.std(np.asarray(s.log_prob - mix.log_prob(s.x)), ddof=1))
    h = (SDE.T - 1e-5) / np.array(steps)
    for scheme, rate in (("euler", 0.5), ("milstein", 1.0)):
        sp = [spread[scheme, k] for k in steps]
        # two points: the slope's uncertainty from the spreads' own standard errors (delta method)
        assert_rate(h, sp, rate, errors_stderr=np.array(sp) / np.sqrt(2 * (n - 1)), slack=0.1,
                    what=f"{scheme} pathwise error")
    assert spread["milstein", 400] < 0.25 * spread["euler", 400], spread


def test_r0_tracks_the_exact_density_on_average():
    """At fine steps the bias is small: the pooled mean error agrees with 0 within its stderr plus the O(h) bias
    bound 30 h (30 h = 0.015 at 2000 steps; the weak-order test above measures about 120 h at D = 5, 2 D = 5 here)."""
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(SDE)
    s = dd.sample_with_log_prob(p.score, SDE, jax.random.key(0), (200, 2), n_steps=2000,
                                prior_log_prob=lambda y: p.log_prob(y, SDE.T))
    m, se = _mean_and_se(s.log_prob - mix.log_prob(s.x))
    assert_agrees(m, se, 0.0, dof=199, atol=30 / 2000, what="mean of r0 - log p0(x0)")


def test_augmented_forward_exact_score():
    """With the true score, log p_T(x_T) - omega_T is unbiased for log p_0(x_0) (Thm. 4 with Y of mean zero), up to
    the O(h) discretisation bias (atol)."""
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(SDE)
    x0 = mix.sample(jax.random.key(0), 128)
    for div in ("exact", "hutchinson"):
        out = dd.augmented_forward(p.score, SDE, x0, key=jax.random.key(1), n_steps=1000, divergence=div,
                                   prior_log_prob=lambda y: p.log_prob(y, SDE.T))
        m, se = _mean_and_se(out.log_prob - mix.log_prob(x0))
        assert_agrees(m, se, 0.0, dof=127, atol=0.05, what=f"forward augmented SDE ({div})")


def test_bias_diagnostics():
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(SDE)
    c = critical_value(1e-3, 1, 63)

    def pert(x, t):
        return 1.2 * p.score(x, t) + 0.3

    bd = dd.sde_bias_diagnostics(pert, SDE, jax.random.key(2), (64, 2), n_steps=500, n_times=400)
    assert float(bd.R.value) > c * float(bd.R.stderr)  # a wrong score shows a bias, R >= 0
    assert float(bd.R_upper.value) > -c * float(bd.R_upper.stderr)  # R^U >= 0
    exact = dd.sde_bias_diagnostics(p.score, SDE, jax.random.key(2), (64, 2), n_steps=500, n_times=400)
    for name, e in zip(exact._fields[:3], exact[:3]):
        assert_agrees(e.value, e.stderr, 0.0, dof=63, atol=0.05, what=f"{name} with the exact score")


def test_bias_diagnostics_milstein_and_richardson():
    """Milstein's diagnostics with the exact score: R^U's per-sample Richardson combination over 500 and 250 steps
    (the same key pairs sample i of both calls) agrees with zero, while the plain R^U at 250 steps holds the O(h)
    bias of r0 (Karczewski et al. 2025, eq. 15)."""
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(SDE)
    runs = {k: dd.sde_bias_diagnostics(p.score, SDE, jax.random.key(3), (128, 2), n_steps=k, n_times=64,
                                       scheme="milstein") for k in (250, 500)}
    np.testing.assert_array_equal(np.asarray(runs[500].samples.nfe), 500 * 4)
    ru = {k: np.asarray(r.samples.log_prob - r.log_prob_ode, dtype=np.float64) for k, r in runs.items()}
    np.testing.assert_allclose(ru[500].mean(), float(runs[500].R_upper.value), rtol=1e-5, atol=1e-6)
    rich = 2 * ru[500] - ru[250]
    m, se = _mean_and_se(rich)
    assert_agrees(m, se, 0.0, dof=127, atol=0.02, what="Richardson-extrapolated R^U, exact score")


def test_save_at_returns_the_trajectory_and_its_log_density():
    """The saved path ends at the sample, and along it r_t tracks log p_t(x_t) (exact score), on average at every
    saved time within the pooled stderr and the O(h) bias."""
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(SDE)
    ts = jnp.linspace(1.0, 1e-5, 6)
    s = dd.sample_with_log_prob(p.score, SDE, jax.random.key(2), (64, 2), n_steps=2000, save_at=ts,
                                prior_log_prob=lambda y: p.log_prob(y, SDE.T))
    path = s.path
    assert path.x.shape == (64, 6, 2) and path.log_prob.shape == (64, 6)
    np.testing.assert_allclose(path.x[:, -1], s.x, atol=1e-6)
    np.testing.assert_allclose(path.log_prob[:, -1], s.log_prob, atol=1e-5)
    truth = jnp.stack([p.log_prob(path.x[:, i], t) for i, t in enumerate(path.ts)], axis=1)
    err = np.asarray(path.log_prob - truth, dtype=np.float64)
    assert_agrees(err.mean(0), err.std(0, ddof=1) / 8, 0.0, dof=63, atol=0.05, what="r_t - log p_t(x_t)")


def test_reverse_sde_family_has_the_right_marginal():
    """Every member of the family (eta = lam in code) samples p_0 with the true score: the mean log p_0 of the samples
    agrees with its exact expectation E_p0[log p0] (the negative entropy), estimated from exact draws."""
    mix = dd.standard_mixture("2d")
    p = mix.diffuse(SDE)
    ref = np.asarray(mix.log_prob(mix.sample(jax.random.key(9), 4000)), dtype=np.float64)
    for lam in (-1.0, 0.0, 0.5, 1.0):
        s = dd.reverse_sde_sample(p.score, SDE, jax.random.key(3), (400, 2), lam=lam, n_steps=400, t0=1e-3)
        v = np.asarray(mix.log_prob(s.x), dtype=np.float64)
        se = np.sqrt(v.var(ddof=1) / v.size + ref.var(ddof=1) / ref.size)
        assert_agrees(v.mean(), se, ref.mean(), atol=0.05, what=f"E[log p0] of reverse-SDE samples, lam={lam}")
