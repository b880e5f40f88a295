"""Mode tracking (Thm. 5), the HD-ODE (Remark 1, Lemma 1) and high-density sampling (Alg. 1) of
``004_720dbaeb92b913c7.txt``, checked against exact mixture densities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_agrees


SDE = dd.VPSDE()
FOUR = dd.standard_mixture("four")
P4 = FOUR.diffuse(SDE)  # one object, so its score's compiled solves are shared between tests


def _app_j():
    """App. J: weights 0.274, 0.274, 0.45 (normalised; the mode of p(x_s|x_t) does not depend on the scale of p_0),
    means -2.5, -1.5, 1, variance 0.1; x_t = -2.5 at lambda_t = -8 under a VP-SDE."""
    w = np.array([0.274, 0.274, 0.45])
    return dd.GaussianMixture(w / w.sum(), [[-2.5], [-1.5], [1.0]], [[[0.1]]] * 3)


def _grid_argmax(p, sde, xt, t, s_values, lo, hi, n_grid):
    """Brute-force argmax of p(x_s | x_t) over a fine 1-D grid, refined by a parabola through the top 3 points."""
    xs = jnp.linspace(lo, hi, n_grid)
    h = xs[1] - xs[0]
    L = jax.jit(jax.vmap(lambda s: dd.denoising_log_prob(p.log_prob, sde, xs[:, None], s, xt, t)))(s_values)
    i = jnp.clip(jnp.argmax(L, axis=1), 1, n_grid - 2)
    r = jnp.arange(L.shape[0])
    a, b, c = L[r, i - 1], L[r, i], L[r, i + 1]
    return xs[i] + 0.5 * h * (a - c) / (a - 2 * b + c), L


def test_mode_curve_matches_grid_argmax():
    """Thm. 5: where the mode curve is smooth, eq. 16 lands on the brute-force argmax of p(x_s|x_t) within 1e-3."""
    with jax.enable_x64(True):
        sde = dd.VPSDE()
        p = _app_j().diffuse(sde)
        for lam_t, x_t, lam_hi in ((-8.0, -2.5, 1.1), (-2.0, 0.3, 8.0)):
            t = float(sde.log_snr_inverse(lam_t))
            lams = jnp.linspace(lam_t + 0.1, lam_hi, 60)
            s_values = sde.log_snr_inverse(lams)
            ts, ys, _ = dd.mode_tracking_ode(p.score, sde, jnp.array([[x_t]]), t, save_at=s_values,
                                             t0=float(s_values.min()))
            ys = ys[0]
            ref, _ = _grid_argmax(p, sde, jnp.array([x_t]), t, ts, -4.0, 3.5, 15001)
            # smooth where the grid argmax moves continuously between neighbouring s
            assert float(jnp.max(jnp.abs(jnp.diff(ref)))) < 0.3
            err = jnp.abs(ys[:, 0] - ref)
            assert float(err.max()) < 1e-3, (lam_t, float(err.max()))


def test_app_j_jump_location():
    """App. J: the global mode of p(x_s|x_t) jumps at lambda_{s*} ~ 1.28 from ~ -1.81 to ~ 0.86 while eq. 16
    follows the left branch, whose conditional density falls below the global maximum at the same s*."""
    with jax.enable_x64(True):
        sde = dd.VPSDE()
        p = _app_j().diffuse(sde)
        t = float(sde.log_snr_inverse(-8.0))
        x_t = jnp.array([-2.5])
        lams = jnp.linspace(-7.9, 6.1, 701)  # spacing 0.02
        s_values = sde.log_snr_inverse(lams)
        ref, L = _grid_argmax(p, sde, x_t, t, s_values, -4.0, 3.5, 7501)
        k = int(jnp.argmax(jnp.abs(jnp.diff(ref))))
        lam_jump = float(0.5 * (lams[k] + lams[k + 1]))
        assert abs(lam_jump - 1.28) < 0.1, lam_jump
        assert float(ref[k]) < -1.5 and float(ref[k + 1]) > 0.5  # left branch before, right branch after
        path = dd.mode_tracking_ode(p.score, sde, x_t[None], t, save_at=s_values, t0=float(s_values.min()))
        ts, ys = path.ts, path.x[0]
        lp_ode = jax.vmap(lambda y, s: dd.denoising_log_prob(p.log_prob, sde, y, s, x_t, t))(ys, ts)
        below = np.flatnonzero(np.asarray(lp_ode < L.max(axis=1) - 1e-6))
        assert abs(float(lams[below[0]]) - lam_jump) <= 0.04, (float(lams[below[0]]), lam_jump)
        assert float(ys[-1, 0]) < -2.0  # the tracked branch ends near the left data modes


def _gaussian(D=3):
    A = np.array([[1.0, 0.3, 0.0], [0.3, 0.5, -0.2], [0.0, -0.2, 0.8]])[:D, :D]
    return dd.GaussianMixture([1.0], [np.arange(1.0, D + 1.0)], [A])


@pytest.mark.parametrize("t_end", [1e-5, 0.05])
def test_hd_ode_gaussian_closed_form(t_end):  # t_end: the HD-ODE's end time, argument t0
    """App. I, eq. 118: for Gaussian data y = alpha_e (E[x_0|x_t] - e^{-lambda_e} alpha_t score_t(x_t)), which is
    also the exact mode of p(x_e | x_t) (Thm. 5, the third-order term vanishing); Lemma 1 gives log p_e(y) exactly."""
    with jax.enable_x64(True):
        sde = dd.VPSDE()
        mix = _gaussian()
        p = mix.diffuse(sde)
        t = 0.4
        x_t = p.sample(jax.random.key(0), 5, t)
        out = dd.hd_ode(p.score, sde, x_t, t, t0=t_end, solve=dd.SolveOptions(rtol=1e-10, atol=1e-10))
        y, change = out.x, out.log_prob_change
        assert isinstance(out, dd.Samples) and change.stderr is None and out.start is not None
        a_t, s_t = sde.marginal(t)
        a_e = sde.marginal(t_end)[0]
        C, m = mix.covs[0], mix.means[0]
        post_mean = m + (a_t * C @ np.linalg.inv(a_t**2 * C + s_t**2 * np.eye(3)) @ (np.asarray(x_t) - a_t * m).T).T
        sc = p.score(x_t, t)
        closed = a_e * (post_mean - jnp.exp(-sde.log_snr(t_end)) * a_t * sc)
        np.testing.assert_allclose(y, closed, atol=1e-7)
        np.testing.assert_allclose(change.value, p.log_prob(y, t_end) - p.log_prob(x_t, t), atol=1e-7)
        # the mode of the Gaussian p(x_e | x_t), by linear algebra
        ft, gt2 = dd.modes.transition_coefficients(sde, t_end, t)
        Se_inv = np.linalg.inv(a_e**2 * C + sde.marginal(t_end)[1] ** 2 * np.eye(3))
        mode = np.linalg.solve(ft**2 / gt2 * np.eye(3) + Se_inv, (ft / gt2 * np.asarray(x_t) + Se_inv @ (a_e * m)).T).T
        np.testing.assert_allclose(y, mode, atol=1e-7)
        _, ym, _ = dd.mode_tracking_ode(p.score, sde, x_t, t, t0=t_end,
                                         solve=dd.SolveOptions(rtol=1e-10, atol=1e-10))
        np.testing.assert_allclose(ym[:, -1], mode, atol=1e-7)
        if t_end == 0.05:  # the O(e^{-lambda_max}) term is visible: y is not the posterior mean
            assert float(jnp.min(jnp.abs(y - post_mean).max(axis=1))) > 1e-3


def test_hd_ode_hutchinson_matches_exact():
    sde, p = SDE, P4
    x_t = p.sample(jax.random.key(1), 128, 0.5)
    a = dd.hd_ode(p.score, sde, x_t, 0.5)
    b = dd.hd_ode(p.score, sde, x_t, 0.5, key=jax.random.key(2), divergence=dd.Hutchinson(n_probes=16))
    y, ex, y2, hu = a.x, a.log_prob_change, b.x, b.log_prob_change
    np.testing.assert_allclose(y, y2, atol=1e-4)
    assert_agrees(hu.value, hu.stderr, ex.value, dof=15, atol=1e-3, what="Hutchinson HD-ODE change")
    np.testing.assert_allclose(ex.value, p.log_prob(y, 1e-5) - p.log_prob(x_t, 0.5), atol=2e-2)


def test_high_density_samples_have_lower_nll():
    """Fig. 6: at every threshold t, the HD sample y (HD-ODE from x_t) has lower NLL under the exact p_0 than the
    regular sample x_0 ~ p_0 it was noised from (paired: x_t = alpha_t x_0 + sigma_t eps), and the gap grows with t."""
    sde, mix, p = SDE, FOUR, P4
    n = 128
    x0 = mix.sample(jax.random.key(3), n)
    nll_reg = -mix.log_prob(x0)
    gaps = []
    for i, t in enumerate([0.1, 0.3, 0.5, 0.8]):
        x_t, _ = sde.perturb(jax.random.key(10 + i), x0, t)
        y = dd.hd_ode(p.score, sde, x_t, t).x
        diff = nll_reg + mix.log_prob(y)
        gap, se = float(diff.mean()), float(diff.std() / np.sqrt(n))
        assert gap > 3 * se, (t, gap, se)
        gaps.append(gap)
    assert gaps[-1] > gaps[0]


@pytest.mark.parametrize("sampler", ["ode", "sde"])
def test_hd_sample(sampler):
    sde, mix, p = SDE, FOUR, P4
    n = 128
    out = dd.hd_sample(p.score, sde, jax.random.key(4), (n, 2), t_threshold=0.5, sampler=sampler, n_steps=200)
    assert isinstance(out, dd.Samples) and out.x.shape == (n, 2) and out.start.shape == (n, 2)
    np.testing.assert_allclose(out.log_prob_change.value, p.log_prob(out.x, 1e-5) - p.log_prob(out.start, 0.5),
                               atol=2e-2)
    if sampler == "ode":  # log p_t(x_t) carried by the PF-ODE from the N(0, I) prior (not exactly p_T)
        np.testing.assert_allclose(out.log_prob, p.log_prob(out.x, 1e-5), atol=5e-2)
        assert out.nfe.shape == (n,) and int(out.nfe.min()) > 0
    else:
        assert out.log_prob is None
    nll_reg = -mix.log_prob(mix.sample(jax.random.key(5), n))
    assert float((-mix.log_prob(out.x)).mean()) < float(nll_reg.mean())


def test_bad_input():
    sde = dd.VPSDE()
    p = dd.standard_mixture("2d").diffuse(sde)
    x = jnp.zeros((1, 2))
    with pytest.raises(ValueError, match="max_dim.*hd_ode"):
        dd.mode_tracking_ode(lambda z, s: -z, sde, jnp.zeros((1, 65)), 0.5)
    with pytest.raises(ValueError, match="t must be"):
        dd.mode_tracking_ode(p.score, sde, x, 1.5)
    with pytest.raises(ValueError, match="t must be"):
        dd.mode_tracking_ode(p.score, sde, x, 0.0)
    with pytest.raises(ValueError, match="t0"):
        dd.mode_tracking_ode(p.score, sde, x, 0.3, t0=0.5)
    with pytest.raises(ValueError, match="x contains NaN"):
        dd.mode_tracking_ode(p.score, sde, jnp.array([[0.0, jnp.nan]]), 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        dd.mode_tracking_ode(p.score, sde, jnp.zeros(2), 0.5)
    with pytest.raises(ValueError, match="save_at"):
        dd.mode_tracking_ode(p.score, sde, x, 0.5, save_at=[0.7])
    with pytest.raises(TypeError, match="sde"):
        dd.mode_tracking_ode(p.score, "vp", x, 0.5)
    with pytest.raises(ValueError, match="x must have shape"):
        dd.hd_ode(p.score, sde, x[0], 0.5)
    with pytest.raises(ValueError, match="x contains NaN"):
        dd.hd_ode(p.score, sde, jnp.full((2, 2), jnp.nan), 0.5)
    with pytest.raises(ValueError, match="divergence"):
        dd.hd_ode(p.score, sde, x, 0.5, divergence="trace")
    with pytest.raises(ValueError, match="key"):
        dd.hd_ode(p.score, sde, x, 0.5, divergence="hutchinson")
    with pytest.raises(ValueError, match="t must be"):
        dd.hd_ode(p.score, sde, x, float("nan"))
    with pytest.raises(ValueError, match="sampler"):
        dd.hd_sample(p.score, sde, jax.random.key(0), (4, 2), t_threshold=0.5, sampler="langevin")
    with pytest.raises(ValueError, match="t_threshold"):
        dd.hd_sample(p.score, sde, jax.random.key(0), (4, 2), t_threshold=2.0)
    with pytest.raises(ValueError, match="shape"):
        dd.hd_sample(p.score, sde, jax.random.key(0), (4,), t_threshold=0.5)
    with pytest.raises(ValueError, match="n_steps"):  # checked whichever sampler is used
        dd.hd_sample(p.score, sde, jax.random.key(0), (4, 2), t_threshold=0.5, sampler="ode", n_steps=0)
    with pytest.raises(ValueError, match="s must be smaller than t"):
        dd.denoising_log_prob(p.log_prob, sde, jnp.zeros((3, 2)), 0.6, jnp.zeros(2), 0.5)
