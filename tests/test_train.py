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


def test_history_reports_adam_steps(data, trained):
    _, hist = trained  # 25 epochs of 2048 samples x 10 throws in batches of 256
    assert hist["steps"] == 25 * (data.shape[0] * 10 // 256) == 2000


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
    assert hist2["steps"] == hist["steps"]  # the cached history reports the steps too
    x = data[:3]
    np.testing.assert_array_equal(jax.vmap(model.score)(x, jnp.full(3, 0.5)), jax.vmap(again.score)(x, jnp.full(3, 0.5)))


def test_bad_input(data):
    kw = dict(key=jax.random.key(0), cache=False, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        dd.fit_score(data.at[0, 0].set(jnp.nan), SDE, **kw)
    with pytest.raises(ValueError, match="data must have shape"):
        dd.fit_score(data[0], SDE, **kw)
    with pytest.raises(ValueError, match="parameterization"):
        dd.fit_score(data, SDE, parameterization="v", **kw)
    with pytest.raises(ValueError, match="weighting"):
        dd.fit_score(data, SDE, weighting="uniform", **kw)
    with pytest.raises(ValueError, match="epochs"):
        dd.fit_score(data, SDE, epochs=0, **kw)
    with pytest.raises(ValueError, match="batch_size"):
        dd.fit_score(data, SDE, batch_size=0, **kw)


def score_error(score, p, sde, x0, key, t0=1e-5):
    """The likelihood-weighted score error E_t E_{x_t} g^2/2 |score - exact|^2 (t importance-sampled), inline."""
    kt, ke = jax.random.split(key)
    t, w = dd.sample_times(sde, kt, (x0.shape[0],), t0=t0, importance_sampling=True)
    xt, _ = sde.perturb(ke, x0, t[:, None])
    d = jax.vmap(score)(xt, t) - jax.vmap(p.score)(xt, t)
    return float(jnp.mean(w * sde.g2(t) / 2 * jnp.sum(d**2, -1)))


@pytest.mark.parametrize("par, sde", [("eps", dd.CosineVPSDE()), ("x0", dd.EDMSDE()),
                                      ("velocity", dd.RectifiedFlowSDE())],
                         ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_each_parameterization_on_new_sdes(data, par, sde):
    model, hist = dd.fit_score(data, sde, key=jax.random.key(1), parameterization=par, epochs=10, batch_size=256,
                               cache=False, progress=False)
    p = MIX.diffuse(sde)
    x0 = MIX.sample(jax.random.key(7), 1024)
    err = score_error(model.score, p, sde, x0, jax.random.key(3))
    err0 = score_error(dd.init_model(2, sde, key=jax.random.key(9), parameterization=par).score, p, sde, x0,
                       jax.random.key(3))
    assert model.parameterization == par and np.all(np.isfinite(hist["loss"]))
    assert err < 0.5 * err0 and err < 0.5, (err, err0)  # x0's EDM preconditioning starts already fair


@pytest.mark.parametrize("sde", [dd.EDMSDE(), dd.RectifiedFlowSDE(), dd.CosineVPSDE()], ids=lambda s: type(s).__name__)
def test_checkpoint_new_sdes_and_parameterizations(sde, tmp_path):
    for par in ("x0", "velocity"):
        m = dd.init_model(2, sde, key=jax.random.key(0), parameterization=par, hidden=16, depth=2)
        back = dd.load_model(dd.save_model(m, tmp_path / f"{par}.ckpt"))
        assert back.sde == sde and back.parameterization == par
        x, t = jnp.ones((3, 2)), jnp.full(3, 0.3 * sde.T)
        np.testing.assert_array_equal(jax.vmap(m.score)(x, t), jax.vmap(back.score)(x, t))


def _saved(tmp_path, name, hidden, depth, edit):
    """A checkpoint whose config says ``edit`` while its weights are those of (hidden, depth)."""
    m = dd.init_model(2, SDE, key=jax.random.key(0), hidden=hidden, depth=depth)
    m.config.update(edit)
    return dd.save_model(m, tmp_path / name)


def test_load_checks_every_leaf(tmp_path):
    with pytest.raises(ValueError, match=r"layers/2/kernel missing"):
        dd.load_model(_saved(tmp_path, "depth.ckpt", 16, 2, {"depth": 3}))
    with pytest.raises(ValueError, match=r"layers/0/kernel has shape \(\d+, 16\), the config needs \(\d+, 32\)"):
        dd.load_model(_saved(tmp_path, "hidden.ckpt", 16, 2, {"hidden": 32}))
    with pytest.raises(ValueError, match="unexpected"):
        dd.load_model(_saved(tmp_path, "fewer.ckpt", 16, 3, {"depth": 2}))
    m = dd.init_model(2, SDE, key=jax.random.key(0), hidden=16, depth=2)
    from flax import nnx

    state = nnx.state(m.net)
    nnx.update(m.net, jax.tree_util.tree_map(lambda a: a.astype(jnp.float16), state))
    with pytest.raises(ValueError, match="dtype float16, the config needs float32"):
        dd.load_model(dd.save_model(m, tmp_path / "f16.ckpt"))


def test_lambda_schedule_trains_without_cache(data):
    sde = dd.LinearSDE.from_schedule(lambda t: jnp.exp(-2 * t), lambda t: jnp.sqrt(-jnp.expm1(-4 * t)), T=2.0)
    model, hist = dd.fit_score(data[:256], sde, key=jax.random.key(0), epochs=1, batch_size=128, progress=False)
    assert np.all(np.isfinite(hist["loss"]))
    with pytest.raises(ValueError, match="sde"):
        dd.save_model(model, "/tmp/never-written.ckpt")


def test_fit_score_validates_t0_sizes_and_data_first(data):
    """Issue 27 item 7: each bad argument raises a ValueError naming it before any training (t0 = 0 used to fail
    later as 'training diverged', t0 = T to train nothing, hidden = 0 to divide by zero, depth = -1 to be stored)."""
    kw = dict(key=jax.random.key(0), cache=False, progress=False, epochs=1)
    small = data[:64]
    for t0 in (0.0, -1e-3, SDE.T, 2.0, np.nan):
        with pytest.raises(ValueError, match="t0"):
            dd.fit_score(small, SDE, t0=t0, **kw)
    for name, bad in [("hidden", 0), ("hidden", -4), ("hidden", 8.5), ("depth", -1), ("depth", 1.5),
                      ("n_features", 0)]:
        with pytest.raises(ValueError, match=name):
            dd.fit_score(small, SDE, **{name: bad}, **kw)
    with pytest.raises(TypeError, match="hidden"):
        dd.fit_score(small, SDE, hidden="16", **kw)
    for bad in (np.zeros((8, 0)), np.zeros((0, 2)), np.zeros((2, 3, 4)), np.zeros(5)):
        with pytest.raises(ValueError, match="data"):
            dd.fit_score(bad, SDE, **kw)


def test_init_model_validates_sizes():
    key = jax.random.key(0)
    for kw in ({"hidden": 0}, {"hidden": -4}, {"hidden": 8.5}, {"depth": -1}, {"n_features": 0}, {"dim": 0}):
        args = {"dim": 2, **kw}
        with pytest.raises(ValueError, match=next(iter(kw))):
            dd.init_model(args.pop("dim"), SDE, key=key, **args)
    with pytest.raises(TypeError, match="dim"):
        dd.init_model("3", SDE, key=key)
    with pytest.raises(ValueError, match="key"):
        dd.init_model(2, SDE, key=None)
    m = dd.init_model(np.int64(2), SDE, key=key, hidden=8.0, depth=0, n_features=4)  # depth 0: a linear read-out
    assert m.config == {"dim": 2, "hidden": 8, "depth": 0, "n_features": 4}
    assert type(m.config["dim"]) is int and m.score(jnp.ones(2), 0.5).shape == (2,)


def test_malformed_checkpoint_config_is_a_value_error(tmp_path):
    """A config with dim='3' or hidden=-16 gives the documented ValueError, not a jax TypeError."""
    for i, edit in enumerate([{"dim": "3"}, {"hidden": -16}, {"depth": -1}, {"n_features": 2.5}, {"hidden": True}]):
        with pytest.raises(ValueError, match=f"{next(iter(edit))}=.*must be an integer"):
            dd.load_model(_saved(tmp_path, f"bad{i}.ckpt", 16, 2, edit))


def test_compiled_epoch_shared_across_seeds_and_data():
    """Trainings differing only in data and key reuse one compiled epoch, with the same result as a fresh compile."""
    from diffdens import train

    kw = dict(epochs=2, batch_size=128, hidden=16, depth=1, n_features=4, progress=False, cache=False)
    d1, d2 = MIX.sample(jax.random.key(11), 256), MIX.sample(jax.random.key(12), 256)
    train._EPOCHS.clear()
    m1, _ = dd.fit_score(d1, SDE, key=jax.random.key(1), **kw)
    m2, _ = dd.fit_score(d2, SDE, key=jax.random.key(2), **kw)
    assert len(train._EPOCHS) == 1  # one compilation for both
    train._EPOCHS.clear()
    m2_fresh, _ = dd.fit_score(d2, SDE, key=jax.random.key(2), **kw)
    x = MIX.sample(jax.random.key(5), 8)
    t = jnp.full((8,), 0.3)
    np.testing.assert_array_equal(m2.score(x, t), m2_fresh.score(x, t))
    assert not np.allclose(m1.score(x, t), m2.score(x, t))
    dd.fit_score(d1, SDE, key=jax.random.key(1), **dict(kw, epochs=3))  # another schedule: compiled anew
    assert len(train._EPOCHS) == 2
