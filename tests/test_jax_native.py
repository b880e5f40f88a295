"""Issue 22's acceptance checks: a warm call traces nothing; gradients of the PF-ODE log-likelihood match the exact
gradients of log p_t0; image-shaped points equal their flattened twin; bad input raises before compiled work."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import count_compilations, count_traces

SDE = dd.VPSDE()
MIX = dd.standard_mixture("2d")
P = MIX.diffuse(SDE)
X = MIX.sample(jax.random.key(0), 4)
K = jax.random.key(1)


@pytest.mark.parametrize("call", [
    lambda: dd.ode_log_prob(P.score, SDE, X),
    lambda: dd.elbo(P.score, SDE, X, key=K, n_times=32),
    lambda: dd.path_integral_log_prob(P.score, SDE, X, key=K, n_throws=32),
    lambda: dd.sample_with_log_prob(P.score, SDE, K, (4, 2), n_steps=8),
], ids=["ode_log_prob", "elbo", "path_integral_log_prob", "sample_with_log_prob"])
def test_warm_call_traces_nothing(call):
    jax.block_until_ready(call())
    with count_traces() as c:
        jax.block_until_ready(call())
    assert c.n == 0, f"{c.n} jaxpr traces on a warm call"


def test_grad_of_ode_log_prob_matches_exact(x64):
    """float64, a held-out random mixture: d/dx and d/dmeans of log p_t0 through the PF-ODE (diffrax's adjoint)
    against jax.grad of the closed-form log p_t0."""
    mix = dd.random_mixture(jax.random.key(11), 3, 2)
    x = mix.sample(jax.random.key(12), 3)
    t0 = 1e-3
    solve = dd.SolveOptions(rtol=1e-8, atol=1e-8)

    def leaves_with(means):
        leaves, tree = jax.tree_util.tree_flatten(mix)
        return jax.tree_util.tree_unflatten(tree, [means if l is mix.means else l for l in leaves])

    def ode(means, x):  # with the exact log p_T as the prior (a bound method of the mixture: its means traced too)
        p = leaves_with(means).diffuse(SDE)
        prior = jax.tree_util.Partial(lambda p, y: p.log_prob(y, SDE.T), p)
        return dd.ode_log_prob(p.score, SDE, x, t0=t0, solve=solve, prior_log_prob=prior).value.sum()

    def exact(means, x):
        return leaves_with(means).diffuse(SDE).log_prob(x, t0).sum()

    gm, gx = jax.grad(ode, argnums=(0, 1))(mix.means, x)
    em, ex = jax.grad(exact, argnums=(0, 1))(mix.means, x)
    np.testing.assert_allclose(np.asarray(gx), np.asarray(ex), atol=2e-3, rtol=2e-3)
    np.testing.assert_allclose(np.asarray(gm), np.asarray(em), atol=2e-3, rtol=2e-3)


def test_grad_with_backsolve_adjoint(x64):
    """The continuous adjoint (diffrax.BacksolveAdjoint) gives the same gradient w.r.t. x."""
    x = X[:2].astype(jnp.float64)
    f = lambda adj: jax.grad(lambda y: dd.ode_log_prob(P.score, SDE, y, solve=dd.SolveOptions(  # noqa: E731
        rtol=1e-7, atol=1e-7, adjoint=adj)).value.sum())(x)
    np.testing.assert_allclose(np.asarray(f(diffrax.BacksolveAdjoint())),
                               np.asarray(f(diffrax.RecursiveCheckpointAdjoint())), atol=1e-5, rtol=1e-5)


def test_monte_carlo_estimators_differentiable_with_fixed_key():
    for f in (lambda y: dd.elbo(P.score, SDE, y, key=K, n_times=16).value.sum(),
              lambda y: dd.path_integral_log_prob(P.score, SDE, y, key=K, n_throws=16).value.sum()):
        g = jax.grad(f)(X)
        assert g.shape == X.shape and bool(jnp.all(jnp.isfinite(g)))
        h, v = 1e-2, jnp.ones_like(X) / 4
        fd = (f(X + h * v) - f(X - h * v)) / (2 * h)
        np.testing.assert_allclose(float(jnp.sum(g * v)), float(fd), rtol=2e-2, atol=2e-2)


# --- image-shaped points ------------------------------------------------------------------------------------------
# Image-shaped points equal their flattened twin for every registered estimator and sampler:
# tests/test_contract_images.py.


def test_image_score_of_wrong_shape_names_score():
    x = jnp.zeros((2, 4, 4, 1))
    with pytest.raises(ValueError, match="score"):
        dd.ode_log_prob(lambda y, t: y.reshape(-1), SDE, x)


# --- eager bad input: raised before any compiled work ------------------------------------------------------------
@pytest.mark.parametrize("kw", [dict(x=X.at[0, 0].set(jnp.nan)), dict(t0=0.0), dict(solve="fast"),
                                dict(divergence=dd.Hutchinson(2))])
def test_bad_input_before_compiled_work(kw):
    args = dict(x=X)
    args.update(kw)
    x = args.pop("x")
    dd.ode_log_prob(P.score, SDE, X)  # warm
    with count_compilations() as c:
        with pytest.raises((ValueError, TypeError)):
            dd.ode_log_prob(P.score, SDE, x, **args)
    assert c.n == 0


def test_options_validate_their_fields():
    with pytest.raises(ValueError, match="solve.rtol"):
        dd.SolveOptions(rtol=0.0)
    with pytest.raises(ValueError, match="solve.max_steps"):
        dd.SolveOptions(max_steps=2.5)
    with pytest.raises(TypeError, match="solve.solver"):
        dd.SolveOptions(solver="tsit5")
    with pytest.raises(ValueError, match="divergence.n_probes"):
        dd.Hutchinson(0)
    with pytest.raises(ValueError, match="divergence.probe"):
        dd.Hutchinson(2, "sphere")
    assert hash(dd.SolveOptions()) == hash(dd.SolveOptions())
