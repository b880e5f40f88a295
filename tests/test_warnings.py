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
