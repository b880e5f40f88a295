"""Issue 27 items 9 and 10: a prior far from p_T and a one-sample stderr warn (they do not raise)."""

import warnings

import jax
import jax.numpy as jnp
import pytest

import diffdens as dd

RF = dd.RectifiedFlowSDE(T=0.5)  # stopped early: p_T is far from the prior (about 6 nats on standard data)
X = jnp.array([[0.3, -0.5], [1.0, 0.2]])


def _score(sde):
    return dd.standard_mixture("2d").diffuse(sde).score


CALLS = {
    "ode_log_prob": lambda s, sde, **kw: dd.ode_log_prob(s, sde, X, **kw),
    "elbo": lambda s, sde, **kw: dd.elbo(s, sde, X, key=jax.random.key(0), n_times=4, **kw),
    "path_integral_log_prob": lambda s, sde, **kw: dd.path_integral_log_prob(s, sde, X, key=jax.random.key(0),
                                                                             n_throws=4, **kw),
}


@pytest.mark.parametrize("name", list(CALLS))
def test_prior_mismatch_warns(name):
    assert float(jnp.mean(RF.prior_mismatch(X))) > 0.1
    with pytest.warns(dd.PriorMismatchWarning, match="prior_mismatch"):
        CALLS[name](_score(RF), RF)
    vp = dd.VPSDE()
    with warnings.catch_warnings():
        warnings.simplefilter("error", dd.PriorMismatchWarning)
        CALLS[name](_score(vp), vp)  # VP reaches its prior: silent
        p_T = dd.standard_mixture("2d").diffuse(RF)
        CALLS[name](_score(RF), RF, prior_log_prob=lambda y: p_T.log_prob(y, RF.T))  # prior given: silent


@pytest.mark.parametrize("call", [
    lambda s, vp: dd.elbo(s, vp, X, key=jax.random.key(0), n_times=1),
    lambda s, vp: dd.path_integral_log_prob(s, vp, X, key=jax.random.key(0), n_throws=1),
    lambda s, vp: dd.ode_log_prob(s, vp, X, key=jax.random.key(0), divergence=dd.Hutchinson(n_probes=1)),
], ids=["elbo_n_times", "path_integral_n_throws", "ode_n_probes"])
def test_one_sample_nan_stderr_warns(call):
    vp = dd.VPSDE()
    with pytest.warns(dd.SingleSampleWarning, match="stderr is NaN"):
        est = call(_score(vp), vp)
    assert bool(jnp.all(jnp.isnan(est.stderr))) and bool(jnp.all(jnp.isfinite(est.value)))


def test_sde_parameters_numpy_scalars_and_strings():
    import numpy as np

    sde = dd.LinearSDE.from_schedule(lambda t: jnp.exp(-t), lambda t: jnp.sqrt(1 - jnp.exp(-2 * t)),
                                     T=np.float32(1.0))
    assert sde.T == 1.0 and type(sde.T) is float
    assert dd.VPSDE(T=np.float32(1.0)) == dd.VPSDE() and hash(dd.VPSDE(beta_max=np.float64(20.0))) == hash(dd.VPSDE())
    for make, name in [(lambda: dd.VPSDE(beta_min="0.1"), "beta_min"), (lambda: dd.VESDE(sigma_max="50"), "sigma_max"),
                       (lambda: dd.CosineVPSDE(s="0.008"), "s"), (lambda: dd.RectifiedFlowSDE(T="0.5"), "T")]:
        with pytest.raises(TypeError, match=rf"\b{name} must be a real number"):
            make()


def test_event_shape_mismatch_is_plain():
    vp = dd.VPSDE()
    model = dd.init_model(3, vp, key=jax.random.key(0), hidden=8, depth=1, n_features=4)
    with pytest.raises(ValueError, match=r"x has event shape \(4,\), the score expects \(3,\)"):
        dd.ode_log_prob(model.score, vp, jnp.ones((2, 4)))
