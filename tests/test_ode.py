import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_agrees

SDES = [dd.VPSDE(), dd.SubVPSDE(), dd.VESDE()]


def _setup(sde, D, n=4, seed=0):
    mix = dd.random_mixture(jax.random.key(D + seed), 3, D)
    p = mix.diffuse(sde)
    x = mix.sample(jax.random.key(1), n)
    return p, x, (lambda y: p.log_prob(y, sde.T))  # one point (D,) -> scalar


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("D", [1, 9, 50])
def test_exact_score_float64(sde, D, x64):
    p, x, prior = _setup(sde, D, n=2)
    est = dd.ode_log_prob(p.score, sde, x, prior_log_prob=prior,
                          solve=dd.SolveOptions(rtol=1e-9, atol=1e-9))
    assert float(jnp.max(jnp.abs(est.value - p.log_prob(x, 1e-5)))) < 1e-4
    assert est.stderr is None and est.nfe.shape == (2,)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("D", [2, 50])  # float32 accuracy at a small and the largest dimension
def test_exact_score_float32(sde, D):
    p, x, prior = _setup(sde, D, n=3)
    est = dd.ode_log_prob(p.score, sde, x, prior_log_prob=prior)
    assert est.value.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(est.value - p.log_prob(x, 1e-5)))) < 3e-3


def test_hutchinson_unbiased():
    sde = dd.VPSDE()
    p, x, prior = _setup(sde, 5, n=3)
    truth = p.log_prob(x, 1e-5)
    for probe in ("rademacher", "gaussian"):
        est = dd.ode_log_prob(p.score, sde, x, key=jax.random.key(2), divergence=dd.Hutchinson(n_probes=256, probe=probe),
                              prior_log_prob=prior)
        assert jnp.all(est.stderr > 0)
        # the PF-ODE itself is exact to solver tolerance (float32: a few 1e-3); the probes add honest noise
        assert_agrees(est.value, est.stderr, truth, dof=255, atol=5e-3, what=probe)


def test_sample_log_prob_matches_density(x64):
    sde = dd.VPSDE()
    mix = dd.random_mixture(jax.random.key(3), 2, 2)
    p = mix.diffuse(sde)
    s = dd.ode_sample(p.score, sde, jax.random.key(0), (4, 2), solve=dd.SolveOptions(rtol=1e-8, atol=1e-8))
    assert isinstance(s, dd.Samples) and s.nfe.shape == (4,)
    # sampled from the standard-normal prior, not p_T: compare with the change of variables, which ode_encode inverts
    enc = dd.ode_encode(p.score, sde, s.x, solve=dd.SolveOptions(rtol=1e-8, atol=1e-8))
    assert isinstance(enc, dd.Encoding)
    np.testing.assert_allclose(s.log_prob, sde.prior_log_prob(enc.x_T) + enc.delta, atol=1e-5)


def test_deterministic_given_key():
    sde = dd.VPSDE()
    p, x, prior = _setup(sde, 3, n=2)
    a = dd.ode_log_prob(p.score, sde, x, key=jax.random.key(5), divergence=dd.Hutchinson(n_probes=4))
    b = dd.ode_log_prob(p.score, sde, x, key=jax.random.key(5), divergence=dd.Hutchinson(n_probes=4))
    np.testing.assert_array_equal(a.value, b.value)


def test_max_steps_reported():
    sde = dd.VPSDE()
    p, x, _ = _setup(sde, 2, n=2)
    with pytest.raises(RuntimeError, match="max_steps"):
        dd.ode_log_prob(p.score, sde, x, solve=dd.SolveOptions(max_steps=3))


@pytest.mark.parametrize("solver, divergence", [
    (diffrax.Tsit5(), "exact"), (diffrax.Tsit5(), dd.Hutchinson(n_probes=3)), (diffrax.Heun(), dd.Hutchinson(n_probes=3)),
    (diffrax.Dopri5(), "exact")], ids=["Tsit5-exact", "Tsit5-hutchinson3", "Heun-hutchinson3", "Dopri5-exact"])
def test_nfe_counts_score_evaluations(solver, divergence):
    """The reported NFE equals the number of score evaluations the solve actually made, for any explicit solver
    (counted with a host callback inside the score; one point, so no vmap lanes are counted). The flow runs through
    the front door without its probe times, so only the solve's evaluations are counted."""
    from diffdens._engine import front_door
    from diffdens.options import check_divergence

    sde = dd.VPSDE()
    p, x, _ = _setup(sde, 2, n=1)
    calls = [0]

    def bump():
        calls[0] += 1

    def counted(y, t):
        jax.debug.callback(bump)
        return p.score(y, t)

    solve = dd.SolveOptions(rtol=1e-4, atol=1e-4, solver=solver)
    hutch = check_divergence(divergence)
    front = front_door(counted, sde, x, key=jax.random.key(0), times=None)
    keys = None if hutch is None else front.point_keys()
    res, nfe = dd.flow.run_flow(front, sde, front.x, keys, 1e-5, sde.T, solve, kind="pf", hutchinson=hutch)
    jax.effects_barrier()
    assert int(nfe[0]) == calls[0] > 0
    est = dd.ode_log_prob(p.score, sde, x, solve=solve, key=jax.random.key(0), divergence=divergence)
    np.testing.assert_array_equal(est.nfe, nfe)


def test_nfe_none_for_implicit_solver():
    sde = dd.VPSDE()
    p, x, _ = _setup(sde, 2, n=1)
    est = dd.ode_log_prob(p.score, sde, x, solve=dd.SolveOptions(rtol=1e-3, atol=1e-3, solver=diffrax.Kvaerno3()))
    assert est.nfe is None
    np.testing.assert_allclose(est.value, p.log_prob(x, 1e-5), atol=3e-2)


def test_nan_score_blames_the_score_not_max_steps():
    sde = dd.VPSDE()
    p, x, _ = _setup(sde, 2, n=2)
    nan_late = lambda y, t: jnp.where(t > 0.37, jnp.nan, 1.0) * p.score(y, t)
    nan_region = lambda y, t: jnp.where(jnp.abs(y[0]) > 2.0, jnp.nan, 1.0) * p.score(y, t)
    for score in (nan_late, nan_region):
        with pytest.raises(ValueError, match="score returned a non-finite value at t="):
            dd.ode_log_prob(score, sde, jnp.array([[2.5, 0.0], [1.9, 0.0]]))
    with pytest.raises(ValueError, match="score returned a non-finite value"):
        dd.ode_sample(nan_late, sde, jax.random.key(0), (2, 2))


def test_bad_input():
    sde = dd.VPSDE()
    p, x, _ = _setup(sde, 2, n=2)
    with pytest.raises(ValueError, match="x must have shape"):
        dd.ode_log_prob(p.score, sde, x[0])
    with pytest.raises(ValueError, match="NaN"):
        dd.ode_log_prob(p.score, sde, x.at[0, 0].set(jnp.nan))
    with pytest.raises(ValueError, match="t0"):
        dd.ode_log_prob(p.score, sde, x, t0=0.0)
    with pytest.raises(ValueError, match="t0"):
        dd.ode_log_prob(p.score, sde, x, t0=1.5)
    with pytest.raises(ValueError, match="divergence"):
        dd.ode_log_prob(p.score, sde, x, divergence="skilling")
    with pytest.raises(ValueError, match="divergence.probe"):
        dd.ode_log_prob(p.score, sde, x, key=jax.random.key(0), divergence=dd.Hutchinson(probe="sphere"))
    with pytest.raises(ValueError, match="divergence.n_probes"):
        dd.ode_log_prob(p.score, sde, x, key=jax.random.key(0), divergence=dd.Hutchinson(n_probes=0))
    with pytest.raises(ValueError, match="solve.rtol"):
        dd.ode_log_prob(p.score, sde, x, solve=dd.SolveOptions(rtol=0.0))
    with pytest.raises(ValueError, match="solve.atol"):
        dd.ode_log_prob(p.score, sde, x, solve=dd.SolveOptions(atol=-1.0))
    with pytest.raises(ValueError, match="solve.max_steps"):
        dd.ode_log_prob(p.score, sde, x, solve=dd.SolveOptions(max_steps=0))
    with pytest.raises(TypeError, match="solve.solver"):
        dd.ode_log_prob(p.score, sde, x, solve=dd.SolveOptions(solver=diffrax.Euler()))
    with pytest.raises(TypeError, match="solve"):
        dd.ode_log_prob(p.score, sde, x, solve={"rtol": 1e-3})
    with pytest.raises(TypeError):
        dd.ode_log_prob(p.score, sde, x, rtol=1e-3)  # the old keyword is gone
    with pytest.raises(ValueError, match="prior_log_prob"):
        dd.ode_log_prob(p.score, sde, x, prior_log_prob=lambda y: jnp.zeros(3))
    with pytest.raises(ValueError, match="key"):
        dd.ode_log_prob(p.score, sde, x, divergence="hutchinson")
    with pytest.raises(ValueError, match="shape"):
        dd.ode_sample(p.score, sde, jax.random.key(0), (3,))


def test_bits_per_dim():
    # a uniform density on [0, 1]^D has log p = 0; with 256 levels each bin has mass 1/256: 8 bits/dim exactly
    assert float(dd.bits_per_dim(jnp.zeros(()), 3, levels=256)) == pytest.approx(8.0)
    # 17 levels on (0, 16): bin width 16/17; log p = -D log 16 (uniform on [0, 16]^D) gives log2(17) bits/dim
    assert float(dd.bits_per_dim(jnp.array(-4 * np.log(16.0)), 4, levels=17, data_range=(0, 16))) == pytest.approx(np.log2(17), rel=1e-6)
    k = jnp.array([[0, 16], [3, 5]])
    y = dd.uniform_dequantize(jax.random.key(0), k, levels=17, data_range=(0, 17))
    kf = k.astype(y.dtype)
    assert jnp.all((y >= kf) & (y < kf + 1))
    with pytest.raises(ValueError, match="k must lie"):
        dd.uniform_dequantize(jax.random.key(0), k + 1, levels=17)
    with pytest.raises(ValueError, match="data_range"):
        dd.bits_per_dim(0.0, 2, data_range=(1, 0))
    kd, labels, levels = dd.datasets.load_digits()
    assert kd.shape == (1797, 64) and levels == 17 and kd.max() == 16
