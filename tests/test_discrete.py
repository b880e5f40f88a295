"""Issue 24: discrete log-probabilities with every dequantization, against the exact bin probabilities of a quantized
2-D mixture (GaussianMixture.bin_log_prob: the mixture integrated over each bin in float64), the error budget, and
bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_above, assert_below, assert_bound

SDE = dd.VPSDE()
MIX = dd.standard_mixture("2d")
P = MIX.diffuse(SDE)
L, RANGE = 16, (-4.0, 4.0)  # bins of width 0.5, about one component standard deviation
DELTA = (RANGE[1] - RANGE[0]) / L
N = 64


def quantize(x):
    return jnp.clip(jnp.floor((x - RANGE[0]) / DELTA), 0, L - 1).astype(jnp.int32)


K_TEST = quantize(MIX.sample(jax.random.key(101), N))  # held out: drawn from a key no other test uses
LO = RANGE[0] + np.asarray(K_TEST) * DELTA
EXACT = MIX.bin_log_prob(LO, LO + DELTA)  # log P(k) = log int_bin p_0


def bound(**kw):
    return dd.discrete_log_prob(P.score, SDE, K_TEST, key=jax.random.key(7), levels=L, data_range=RANGE, **kw)


@pytest.fixture(scope="module")
def uniform_bounds():
    """K = 1 (16 independent draws per item: each item repeated 16 times) and K = 256."""
    one = dd.discrete_log_prob(P.score, SDE, jnp.tile(K_TEST, (16, 1)), key=jax.random.key(8), levels=L,
                               data_range=RANGE)
    return one, bound(n_samples=256)


def test_bin_log_prob_sums_to_one():
    """The quadrature's bins over a range holding the mixture carry its whole mass."""
    g = np.arange(-8.0, 8.0, 1.0)
    lo = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    np.testing.assert_allclose(np.exp(MIX.bin_log_prob(lo, lo + 1.0)).sum(), 1.0, rtol=1e-9)


def test_uniform_bound_below_exact(uniform_bounds):
    one, _ = uniform_bounds
    assert one.value.shape == (16 * N,) and one.stderr is None and one.nfe.shape == (16 * N,)  # exact ODE, 1 draw
    assert_bound(np.asarray(one.value), np.tile(EXACT, 16), what="uniform K=1")


def test_importance_weighted_bound_converges(uniform_bounds):
    """K = 256: still a bound, within 0.05 nats of log P(k) on average, and tighter than K = 1."""
    one, many = uniform_bounds
    v = np.asarray(many.value)
    assert_bound(v, EXACT, np.asarray(many.stderr), what="uniform K=256")
    gap = EXACT - v
    assert_below(gap.mean(), np.sqrt(np.sum(np.asarray(many.stderr) ** 2)) / N, 0.05, what="K=256 mean gap")
    d = v - np.asarray(one.value).reshape(16, N).mean(0)  # per item: K=256 minus the mean of 16 K=1 draws
    assert_above(d.mean(), d.std(ddof=1) / np.sqrt(N), 0.0, what="K=256 minus K=1")


def test_truncated_normal_bound_below_exact():
    """i-DODE's proposal at t0: the bound is on the bins alpha_t0 B_k of p_t0, exact from the diffused mixture."""
    t0 = 0.05  # tau = alpha Delta / (2 sigma) of about 1.4
    est = bound(dequantization="truncated_normal", t0=t0)
    alpha = float(SDE.marginal(jnp.asarray(t0))[0])
    exact_t0 = P.marginal(t0).bin_log_prob(alpha * LO, alpha * (LO + DELTA))
    assert_bound(np.asarray(est.value), exact_t0, what="truncated normal K=1")


def test_elbo_and_path_integral_estimators():
    """The estimator is a choice: the ELBO bound (a bound on a bound) is below log P(k) too, with its stderr."""
    e = bound(estimator="elbo", n_times=64)
    assert e.stderr.shape == (N,) and e.nfe is None
    assert_bound(np.asarray(e.value), EXACT, np.asarray(e.stderr), what="ELBO K=1")
    pi = dd.discrete_log_prob(P.score, SDE, K_TEST[:4], key=jax.random.key(1), levels=L, data_range=RANGE,
                              estimator="path_integral", n_throws=64, n_samples=2)
    assert pi.value.shape == (4,) and np.all(np.isfinite(np.asarray(pi.stderr)))


def test_jit_equals_eager_and_vmap_over_keys():
    f = lambda k, key: dd.discrete_log_prob(P.score, SDE, k, key=key, levels=L, data_range=RANGE,  # noqa: E731
                                            n_samples=2, estimator="elbo", n_times=8)[:2]
    k, key = K_TEST[:3], jax.random.key(3)
    eager = f(k, key)
    jitted = jax.jit(f)(k, key)
    for a, b in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4)
    keys = jax.random.split(key, 2)
    batched = jax.jit(jax.vmap(f, in_axes=(None, 0)))(k, keys)
    np.testing.assert_allclose(np.asarray(batched[0][1]), np.asarray(f(k, keys[1])[0]), rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception, match="must lie in"):
        jax.block_until_ready(jax.jit(f)(k.at[0, 0].set(L), key))


def test_error_budget():
    b = dd.error_budget(P.score, SDE, K_TEST[:8], key=jax.random.key(2), levels=L, data_range=RANGE)
    assert isinstance(b, dd.ErrorBudget)
    for f in b:
        assert f.shape == (8,) and np.all(np.isfinite(np.asarray(f)))
    assert np.all(np.asarray(b.monte_carlo) == 0) and np.all(np.asarray(b.prior) >= 0)
    assert np.max(np.abs(np.asarray(b.solver))) < 1e-2  # rtol 1e-5 vs 1e-7 on a smooth 2-D flow


def test_bits_per_dim_discrete_matches_continuous():
    lp = jnp.array([-3.0, -1.5])
    a = dd.bits_per_dim(lp, 2, levels=L, data_range=RANGE)
    b = dd.bits_per_dim(lp + 2 * np.log(DELTA), 2, discrete=True)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


@pytest.mark.parametrize("kw, exc, name", [
    (dict(k=np.asarray(K_TEST, np.float32)), TypeError, "k"),
    (dict(k=K_TEST.at[0, 0].set(-1)), ValueError, "k"),
    (dict(k=K_TEST.at[0, 0].set(L)), ValueError, "k"),
    (dict(k=K_TEST[0]), ValueError, "k"),
    (dict(dequantization="gaussian"), ValueError, "dequantization"),
    (dict(dequantization="variational"), ValueError, "dequantization"),
    (dict(estimator="sde"), ValueError, "estimator"),
    (dict(n_samples=0), ValueError, "n_samples"),
    (dict(levels=0), ValueError, "levels"),
    (dict(data_range=(1.0, 0.0)), ValueError, "data_range"),
    (dict(key=None), ValueError, "key"),
])
def test_bad_input_names_argument(kw, exc, name):
    args = dict(k=K_TEST, key=jax.random.key(0), levels=L, data_range=RANGE)
    args.update(kw)
    k = args.pop("k")
    with pytest.raises(exc) as info:
        dd.discrete_log_prob(P.score, SDE, k, **args)
    assert name in str(info.value)


def test_uint8_with_256_levels():
    """uint8 pixels with levels=256: the range check compares in int32 (256 does not fit a uint8), eagerly and under jit."""
    k = np.array([[0, 255], [3, 4]], np.uint8)
    y = dd.uniform_dequantize(jax.random.key(0), k, levels=256)
    assert y.shape == (2, 2) and float(y.max()) < 1.0
    yj = jax.jit(lambda kk: dd.uniform_dequantize(jax.random.key(0), kk, levels=256))(k)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(yj))
    with pytest.raises(ValueError, match="k must lie in"):
        dd.uniform_dequantize(jax.random.key(0), k, levels=200)
