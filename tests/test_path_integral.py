import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd


def _setup(sde, n=3, D=2):
    mix = dd.random_mixture(jax.random.key(3), 3, D)
    p = mix.diffuse(sde)
    return mix, p, mix.sample(jax.random.key(0), n)


@pytest.mark.parametrize("sde", [dd.VPSDE(), dd.VESDE()], ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("control", ["score", "entropy"])
def test_exact_score_unbiased(sde, control):
    mix, p, x = _setup(sde)
    fn = p.score if control == "score" else dd.entropy_from_score(p.score, sde)
    est = dd.path_integral_log_prob(fn, sde, x, key=jax.random.key(1), n_throws=50_000, control=control,
                                    prior_log_prob=lambda y: p.log_prob(y, sde.T))
    z = (est.value - mix.log_prob(x)) / est.stderr
    assert jnp.all(jnp.abs(z) < 3.5), z
    # the pooled mean error over points is also within 3 of its stderr
    assert abs(float(jnp.sum(est.value - mix.log_prob(x)))) < 3 * float(jnp.sqrt(jnp.sum(est.stderr**2)))


def test_error_shrinks_like_inverse_sqrt_n():
    sde = dd.VPSDE()
    mix, p, x = _setup(sde, n=1)
    ns = [100, 1000, 10000]
    rms = []
    for n in ns:
        errs = [dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(s), n_throws=n).value[0] - mix.log_prob(x)[0]
                for s in range(24)]
        rms.append(float(np.sqrt(np.mean(np.square(errs)))))
    slope = np.polyfit(np.log(ns), np.log(rms), 1)[0]
    assert abs(slope + 0.5) < 0.1, (rms, slope)


def test_chunked_million_throws():
    """10^6 throws in chunks of 4096: memory independent of n_throws; chunking does not change the estimate."""
    sde = dd.VPSDE()
    mix, p, x = _setup(sde, n=1)
    big = dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(2), n_throws=1_000_000, chunk_size=4096)
    assert float(jnp.abs(big.value - mix.log_prob(x))[0]) < 4 * float(big.stderr[0]) + 0.01
    a = dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(4), n_throws=10_000, chunk_size=10_000)
    b = dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(4), n_throws=10_000, chunk_size=3000)
    assert float(jnp.abs(a.value - b.value)[0]) < 3 * float(a.stderr[0])  # different draws, same distribution


def test_importance_sampling_helps_subvp():
    sde = dd.SubVPSDE()
    mix, p, x = _setup(sde, n=2)
    u = dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(5), n_throws=20_000)
    i = dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(5), n_throws=20_000, importance_sampling=True)
    assert jnp.all(i.stderr < u.stderr)


def test_model_control_mismatch_and_bad_input():
    sde = dd.VPSDE()
    mix, p, x = _setup(sde)
    model = dd.init_model(2, sde, key=jax.random.key(0), parameterization="score")
    with pytest.raises(ValueError, match="entropy"):
        dd.path_integral_log_prob(model.score, sde, x, key=jax.random.key(0), control="entropy")
    with pytest.raises(ValueError, match="control='score'"):
        dd.path_integral_log_prob(model.entropy, sde, x, key=jax.random.key(0), control="score")
    with pytest.raises(ValueError, match="control"):
        dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(0), control="drift")
    with pytest.raises(ValueError, match="n_throws"):
        dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(0), n_throws=0)
    with pytest.raises(ValueError, match="t0"):
        dd.path_integral_log_prob(p.score, sde, x, key=jax.random.key(0), t0=0.0)
    with pytest.raises(ValueError, match="NaN"):
        dd.path_integral_log_prob(p.score, sde, x.at[0, 0].set(jnp.inf), key=jax.random.key(0))
    with pytest.raises(ValueError, match="x must have shape"):
        dd.path_integral_log_prob(p.score, sde, x[0], key=jax.random.key(0))


def test_model_object_resolves_control():
    sde = dd.VPSDE()
    mix, p, x = _setup(sde, n=2)
    em = dd.init_model(2, sde, key=jax.random.key(0), parameterization="entropy")
    a = dd.path_integral_log_prob(em, sde, x, key=jax.random.key(1), n_throws=500, control="entropy")
    b = dd.path_integral_log_prob(em.entropy, sde, x, key=jax.random.key(1), n_throws=500, control="entropy")
    np.testing.assert_array_equal(a.value, b.value)
    with pytest.raises(ValueError, match="parameterization"):
        dd.path_integral_log_prob(em, sde, x, key=jax.random.key(1), control="score")
