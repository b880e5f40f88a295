"""Issue 24: the U-Net score network: fit_score(architecture="unet") on (n, 8, 8, 3) images in every
parameterization, and its bad input. Estimators on its points and checkpoints: tests/test_unet_points.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd

SDE = dd.VPSDE()
EV = (8, 8, 3)
X = jax.random.uniform(jax.random.key(0), (16,) + EV)


@pytest.mark.parametrize("par", ["score", "eps", "x0", "velocity"])
def test_fit_score_unet_every_parameterization(par):
    model, hist = dd.fit_score(X, SDE, key=jax.random.key(1), parameterization=par, architecture="unet",
                               channels=4, groups=2, epochs=1, n_throws=1, batch_size=16, cache=False,
                               progress=False)
    assert isinstance(model.net, dd.ScoreUNet) and model.parameterization == par
    assert model.event_shape == EV and model.config["architecture"] == "unet"
    assert hist["loss"].shape == (1,) and np.isfinite(hist["loss"]).all()
    s = model.score(X[:3], 0.3)
    assert s.shape == (3,) + EV and bool(jnp.all(jnp.isfinite(s)))


def test_unet_bad_shapes():
    with pytest.raises(ValueError, match="even"):
        dd.init_unet((5, 4, 1), SDE, key=jax.random.key(0))
    with pytest.raises(ValueError, match="data"):
        dd.fit_score(jnp.zeros((4, 8)), SDE, key=jax.random.key(0), architecture="unet", progress=False)
    with pytest.raises(ValueError, match="architecture"):
        dd.fit_score(X, SDE, key=jax.random.key(0), architecture="resnet", progress=False)
