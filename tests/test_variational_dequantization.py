"""Issue 24: the variational dequantizer (a flowjax conditional flow q(u | k) trained by fit_dequantizer) on the
quantized 2-D mixture of tests/test_discrete.py, against its exact bin log-probabilities."""

import jax
import numpy as np
import pytest

import diffdens as dd
from diffdens.testing import assert_above, assert_bound
from test_discrete import EXACT, K_TEST, L, MIX, N, P, RANGE, SDE, quantize

pytest.importorskip("flowjax")


def test_variational_dequantizer():
    """A flowjax proposal q(u | k), trained on other items by the ELBO: a valid bound, tighter than its untrained
    start (the sigmoid of a logistic with near-identity couplings, close to uniform)."""
    k_train = quantize(MIX.sample(jax.random.key(102), 512))
    q, hist = dd.fit_dequantizer(P.score, SDE, k_train, key=jax.random.key(3), levels=L, data_range=RANGE,
                                 steps=150, n_times=16, lr=2e-3)
    assert isinstance(q, dd.Dequantizer) and hist["loss"].shape == (150,)
    q0 = dd.init_dequantizer((2,), key=jax.random.key(3), levels=L, data_range=RANGE)  # fit_dequantizer's start
    reps = jax.numpy.tile(K_TEST, (16, 1))  # 16 draws per item (common random numbers for both proposals)
    trained, untrained = (np.asarray(dd.discrete_log_prob(P.score, SDE, reps, key=jax.random.key(7), levels=L,
                                                          data_range=RANGE, dequantization=d).value).reshape(16, N)
                          for d in (q, q0))
    assert_bound(trained.ravel(), np.tile(EXACT, 16), what="variational K=1")
    d = (trained - untrained).mean(0)
    assert_above(d.mean(), d.std(ddof=1) / np.sqrt(N), 0.0, what="trained minus untrained")
    with pytest.raises(ValueError, match="levels"):
        dd.discrete_log_prob(P.score, SDE, K_TEST % 8, key=jax.random.key(0), levels=8, data_range=RANGE,
                             dequantization=q)
