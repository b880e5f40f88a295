import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd

SDE = dd.VPSDE()
MIX = dd.standard_mixture("2d")


@pytest.fixture(scope="module")
def data():
    return MIX.sample(jax.random.key(0), 2048)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    import os

    os.environ["DIFFDENS_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return dd.fit_score(data, SDE, key=jax.random.key(1), epochs=25, batch_size=256, progress=False)


BOUND = 0.5  # g^2-weighted score MSE (nats) a quick model must beat; an untrained network is ~10


def test_trained_score_beats_bound_untrained_fails(trained):
    model, hist = trained
    x0 = MIX.sample(jax.random.key(7), 512)
    err, se, _ = dd.weighted_score_error(model.score, MIX.diffuse(SDE).score, SDE, x0, key=jax.random.key(3))
    err0, se0, _ = dd.weighted_score_error(dd.init_model(2, SDE, key=jax.random.key(9)).score,
                                           MIX.diffuse(SDE).score, SDE, x0, key=jax.random.key(3))
    assert err + 3 * se < BOUND, (err, se)
    assert err0 - 3 * se0 > BOUND, (err0, se0)
    assert hist["loss"].shape == (25,) and np.all(np.isfinite(hist["loss"]))


@pytest.mark.parametrize("par", ["entropy", "eps"])
def test_other_parameterizations_learn(data, par):
    model, _ = dd.fit_score(data, SDE, key=jax.random.key(1), parameterization=par, epochs=15, batch_size=256,
                            cache=False, progress=False)
    err, se, _ = dd.weighted_score_error(model.score, MIX.diffuse(SDE).score, SDE, MIX.sample(jax.random.key(7), 256),
                                         key=jax.random.key(3))
    assert model.parameterization == par and err + 3 * se < 1.0
    # e = s + x for the VP SDE
    x, t = jnp.array([0.3, -0.2]), 0.4
    np.testing.assert_allclose(model.entropy(x, t), model.score(x, t) + x, rtol=1e-4, atol=1e-5)


def test_deterministic(data):
    kw = dict(key=jax.random.key(4), epochs=2, batch_size=512, cache=False, progress=False)
    a, _ = dd.fit_score(data, SDE, **kw)
    b, _ = dd.fit_score(data, SDE, **kw)
    x = data[:5]
    np.testing.assert_array_equal(jax.vmap(a.score)(x, jnp.full(5, 0.3)), jax.vmap(b.score)(x, jnp.full(5, 0.3)))


def test_save_load_bit_identical_and_truncation(trained, tmp_path):
    model, _ = trained
    path = dd.save_model(model, tmp_path / "m.ckpt")
    back = dd.load_model(path)
    x = MIX.sample(jax.random.key(5), 16)
    t = jnp.linspace(1e-3, 1.0, 16)
    np.testing.assert_array_equal(jax.vmap(model.score)(x, t), jax.vmap(back.score)(x, t))
    assert back.sde == model.sde and back.parameterization == model.parameterization
    blob = path.read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="corrupted or truncated"):
        dd.load_model(tmp_path / "trunc.ckpt")
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a diffdens checkpoint"):
        dd.load_model(tmp_path / "junk.ckpt")


def test_cache_reuses_model(data, trained):
    model, hist = trained
    again, hist2 = dd.fit_score(data, SDE, key=jax.random.key(1), epochs=25, batch_size=256, progress=False)
    np.testing.assert_array_equal(hist["loss"], hist2["loss"])
    x = data[:3]
    np.testing.assert_array_equal(jax.vmap(model.score)(x, jnp.full(3, 0.5)), jax.vmap(again.score)(x, jnp.full(3, 0.5)))


def test_bad_input(data):
    kw = dict(key=jax.random.key(0), cache=False, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        dd.fit_score(data.at[0, 0].set(jnp.nan), SDE, **kw)
    with pytest.raises(ValueError, match="data must have shape"):
        dd.fit_score(data[0], SDE, **kw)
    with pytest.raises(ValueError, match="parameterization"):
        dd.fit_score(data, SDE, parameterization="velocity", **kw)
    with pytest.raises(ValueError, match="weighting"):
        dd.fit_score(data, SDE, weighting="uniform", **kw)
    with pytest.raises(ValueError, match="epochs"):
        dd.fit_score(data, SDE, epochs=0, **kw)
    with pytest.raises(ValueError, match="batch_size"):
        dd.fit_score(data, SDE, batch_size=0, **kw)
