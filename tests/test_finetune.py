"""dd.fit_ode_likelihood: Adam on the PF-ODE negative log-likelihood (Song et al. 2021b, eqs. 6-7)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_above, count_compilations

SDE = dd.VPSDE()
MIX = dd.standard_mixture("2d")
DATA = MIX.sample(jax.random.key(0), 256)
SOLVE = dd.SolveOptions(rtol=1e-3, atol=1e-3)
KW = dict(key=jax.random.key(2), steps=6, batch_size=32, lr=1e-2, solve=SOLVE, progress=False)


def tiny(seed=1):
    return dd.init_model(2, SDE, key=jax.random.key(seed), hidden=16, depth=2, n_features=8)


def leaves(model):
    return [np.array(leaf) for leaf in jax.tree_util.tree_leaves(model)]


@pytest.fixture(scope="module")
def fitted():
    model = tiny()
    before = leaves(model)
    new, hist = dd.fit_ode_likelihood(model, SDE, DATA, **KW)
    return model, before, new, hist


def test_nll_on_training_points_falls(fitted):
    """Paired on 64 training points: log p^ODE after - before is positive, by more than its standard error."""
    model, _, new, hist = fitted
    x = DATA[:64]
    d = np.asarray(dd.ode_log_prob(new.score, SDE, x, solve=SOLVE).value
                   - dd.ode_log_prob(model.score, SDE, x, solve=SOLVE).value)
    assert_above(d.mean(), d.std(ddof=1) / np.sqrt(d.size), 0.0, dof=d.size - 1, what="mean log-likelihood gain")
    assert hist["loss"].shape == hist["nfe"].shape == (KW["steps"],) and hist["steps"] == KW["steps"]
    assert np.all(np.isfinite(hist["loss"])) and np.all(hist["nfe"] > 0)


def test_caller_model_unchanged_new_model_returned(fitted):
    model, before, new, _ = fitted
    for a, b in zip(before, leaves(model)):
        np.testing.assert_array_equal(a, b)
    assert isinstance(new, dd.ScoreModel) and new is not model and new.sde == model.sde
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(model), leaves(new)))
    np.testing.assert_array_equal(model.net.bx.value, new.net.bx.value)  # the Fourier features are not trained


def test_same_key_bit_identical_and_one_compilation(fitted):
    """A second call (same shapes and options; another model of the architecture, another lr) compiles nothing,
    and the same key reproduces the first fit bit for bit."""
    model, _, new, hist = fitted
    with count_compilations() as c:
        again, hist2 = dd.fit_ode_likelihood(model, SDE, DATA, **KW)
        dd.fit_ode_likelihood(tiny(7), SDE, DATA, **{**KW, "lr": 3e-3, "steps": 2, "key": jax.random.key(5)})
    assert c.n == 0, f"{c.n} compilations in calls with the shapes of the first"
    np.testing.assert_array_equal(hist["loss"], hist2["loss"])
    for a, b in zip(leaves(new), leaves(again)):
        np.testing.assert_array_equal(a, b)


class LinearScore(eqx.Module):
    """s(x, t) = -x / v(t) with a learned variance scale: an equinox module that is itself the score."""

    log_scale: jax.Array

    def __call__(self, x, t):
        alpha, sigma = SDE.marginal(t)
        return -x / (alpha**2 * jnp.exp(self.log_scale) + sigma**2)


def test_equinox_module():
    """The exact score of N(0, c I) under the VP SDE, fitted by ML to data of variance ~ 1.5: c moves up."""
    m = LinearScore(jnp.asarray(0.0))
    new, hist = dd.fit_ode_likelihood(m, SDE, DATA, **{**KW, "lr": 0.1, "steps": 3})
    assert isinstance(new, LinearScore) and float(m.log_scale) == 0.0 and float(new.log_scale) > 0.0


@pytest.mark.parametrize("change, match", [
    (dict(data=jnp.full((8, 2), jnp.nan)), "data"),
    (dict(data=jnp.ones(8)), "data"),
    (dict(steps=0), "steps"),
    (dict(steps=2.5), "steps"),
    (dict(lr=-1.0), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=1000), "batch_size"),
    (dict(key=None), "key"),
    (dict(t0=0.0), "t0"),
    (dict(divergence="approx"), "divergence"),
    (dict(sde=dd.SubVPSDE()), "sde"),
    (dict(model=lambda x, t: -x), "model"),
])
def test_bad_input_names_the_argument(change, match):
    args = dict(model=tiny(), sde=SDE, data=DATA, **KW)
    args.update(change)
    with pytest.raises((ValueError, TypeError), match=match):
        dd.fit_ode_likelihood(args.pop("model"), args.pop("sde"), args.pop("data"), **args)
