"""Issue 24: the U-Net's image-shaped points through the estimators and discrete_log_prob, and its checkpoints
(bit-identical round trip, the architecture recorded)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd

SDE = dd.VPSDE()
EV = (4, 4, 2)  # small images keep the exact-divergence ODE cheap; the architecture is the same at 8x8x3
X = jax.random.uniform(jax.random.key(0), (16,) + EV)


@pytest.fixture(scope="module")
def model():
    m = dd.init_unet(EV, SDE, key=jax.random.key(2), parameterization="eps", channels=4, groups=2)
    w = m.net.conv_out.kernel  # zero-initialised: perturb so that the score is not the prior's
    w.value = 0.1 * jax.random.normal(jax.random.key(3), w.value.shape)
    return m


def test_estimators_take_image_points(model):
    x = X[:4]
    o = dd.ode_log_prob(model.score, SDE, x[:1], solve=dd.SolveOptions(rtol=1e-3, atol=1e-3))
    e = dd.elbo(model.score, SDE, x, key=jax.random.key(4), n_times=8)  # the same compilation as below
    assert o.value.shape == (1,) and e.value.shape == (4,)
    assert bool(jnp.all(jnp.isfinite(o.value))) and bool(jnp.all(jnp.isfinite(e.value)))
    k = jnp.floor(x[:2] * 16).astype(jnp.uint8)
    d = dd.discrete_log_prob(model.score, SDE, k, key=jax.random.key(5), levels=16, estimator="elbo", n_times=8,
                             n_samples=2)
    assert d.value.shape == (2,) and bool(jnp.all(jnp.isfinite(d.stderr)))
    with pytest.raises(ValueError, match="event shape"):
        dd.elbo(model.score, SDE, x.reshape(4, -1), key=jax.random.key(4), n_times=8)


def test_save_load_round_trip(model, tmp_path):
    path = dd.save_model(model, tmp_path / "unet.ckpt")
    back = dd.load_model(path, sde=SDE)
    assert isinstance(back.net, dd.ScoreUNet) and back.config == model.config and back.parameterization == "eps"
    for a, b in zip(jax.tree_util.tree_leaves(model), jax.tree_util.tree_leaves(back)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(model.score(X[:2], 0.5)), np.asarray(back.score(X[:2], 0.5)))
