"""KL divergence and differential entropy as time integrals of scores (``003_4cfdcc379dd9f743.txt`` Thms. 1 and 4).

For the forward SDE dx = f(t) x dt + g(t) dW started from p (resp. q), with marginals p_t (q_t) and p_T = q_T,

    KL(p || q) = 1/2 int_0^T E_{x ~ p_t} [ g^2 |grad log p_t(x) - grad log q_t(x)|^2 ] dt            (Thm. 1, eq. 5)
    H(p)       = H(p_T) + 1/2 int_0^T E_{x ~ p_t} [ 2 f x . grad log p_t(x) - g^2 |grad log p_t(x)|^2 ] dt  (Thm. 4, eq. 10)

Both are estimated from samples of p: each sample is diffused to ``n_times`` times t (uniform on [t0, T], or
importance-sampled as in ``002_f66275a1c9cf2a92.txt`` eq. 12), so the per-sample values are i.i.d. and the result
carries a standard error over samples. Both are *population* estimates: a 0-d ``Estimate`` (value, stderr),
not per-point values. H(p_T) is taken as the entropy of the prior N(0, prior_std^2 I): the error is
O(alpha_T^2) for VP/subVP and O(Var/sigma_max^2) for VE, far below the Monte Carlo error at the book's settings.
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_bool, check_key, check_points, check_positive_int, check_t0
from ._engine import (check_batch_size, check_score, map_points, point_keys, probe_score, raise_if_nonfinite,
                      traced_score)
from .estimate import Estimate, probe_times, sample_times
from .sde import LinearSDE, check_sde

EVALS_PER_CALL = 65_536


def population_estimate(vals: Float[Array, " n"]) -> Estimate:
    """A population quantity from i.i.d. per-sample values: value and stderr are 0-d arrays (stderr by two passes)."""
    n = vals.shape[0]
    mean = jnp.mean(vals)
    se = jnp.sqrt(jnp.sum((vals - mean) ** 2) / (n - 1) / n) if n > 1 else jnp.asarray(jnp.nan, vals.dtype)
    return Estimate(mean, se, None)


def _front(sde, x, key, n_times, t0, importance_sampling, batch_size, scores, name):
    check_sde(sde)
    x = check_points(x, name)
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples for a standard error, got {x.shape[0]}")
    key = check_key(key)
    n_times = check_positive_int(n_times, "n_times")
    t0 = check_t0(t0, sde.T)
    is_ = check_bool(importance_sampling, "importance_sampling")
    batch_size = check_batch_size(batch_size)
    if batch_size is None:
        batch_size = max(1, EVALS_PER_CALL // n_times)
    times = probe_times(sde, t0)
    out = []
    for sname, sc in scores:
        sc = traced_score(sc, sname)
        check_score(sc, x, name=sname)
        probe_score(sc, x, times, name=sname)
        out.append(sc)
    return x, key, n_times, t0, is_, batch_size, times, out


def kl_divergence(
    score_p: Callable,
    score_q: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: PRNGKeyArray = None,
    n_times: int = 16,
    importance_sampling: bool = False,
    t0: float = 1e-5,
    batch_size: Optional[int] = None,
) -> Estimate:
    """KL(p || q) from the scores of p_t and q_t and samples x of p (``003_4cfdcc379dd9f743.txt`` Thm. 1, eq. 5).

    A population estimate: a 0-d ``Estimate`` (value, stderr over the samples), ``n_times`` times per sample."""
    x, key, m, t0, is_, bs, times, (sp, sq) = _front(sde, x, key, n_times, t0, importance_sampling, batch_size,
                                                      [("score_p", score_p), ("score_q", score_q)], "x")
    vals = kl_kernel(sp, sq, sde, x, point_keys(key, x.shape[0]), jnp.asarray(t0, x.dtype), m=m, is_=is_,
                     batch_size=bs)
    raise_if_nonfinite(vals, sp, x, times, name="score_p")
    return population_estimate(vals)


def weighted_score_error(
    score: Callable,
    exact_score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: PRNGKeyArray = None,
    n_times: int = 64,
    t0: float = 1e-5,
    batch_size: Optional[int] = None,
) -> Estimate:
    """The likelihood-weighted Fisher divergence of a model from the exact score, over data x:
    1/2 int_{t0}^T g(t)^2 E_{x_t} |score - exact_score|^2 dt (t importance-sampled, x_t diffused from x), i.e. the
    Thm. 1 integrand of :func:`kl_divergence`. A population estimate: a 0-d ``Estimate`` (value, stderr)."""
    x, key, m, t0, is_, bs, times, (s, se) = _front(sde, x, key, n_times, t0, True, batch_size,
                                                     [("score", score), ("exact_score", exact_score)], "x")
    vals = kl_kernel(se, s, sde, x, point_keys(key, x.shape[0]), jnp.asarray(t0, x.dtype), m=m, is_=True,
                     batch_size=bs)
    raise_if_nonfinite(vals, s, x, times)
    return population_estimate(vals)


def entropy(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: PRNGKeyArray = None,
    n_times: int = 16,
    importance_sampling: bool = False,
    t0: float = 1e-5,
    batch_size: Optional[int] = None,
) -> Estimate:
    """Differential entropy H(p) in nats from the score of p_t and samples x of p (``003_4cfdcc379dd9f743.txt``
    Thm. 4, eq. 10). A population estimate: a 0-d ``Estimate`` (value, stderr over the samples)."""
    x, key, m, t0, is_, bs, times, (s,) = _front(sde, x, key, n_times, t0, importance_sampling, batch_size,
                                                 [("score", score)], "x")
    vals = entropy_kernel(s, sde, x, point_keys(key, x.shape[0]), jnp.asarray(t0, x.dtype), m=m, is_=is_,
                          batch_size=bs)
    raise_if_nonfinite(vals, s, x, times)
    d = x.shape[-1]
    h_prior = 0.5 * d * math.log(2 * math.pi * math.e * sde.prior_std**2)
    est = population_estimate(vals)
    return Estimate(h_prior + est.value, est.stderr, None)


def _diffuse(sde, x, key, m, t0, is_):
    """m (t, x_t, weight) draws for one sample x: (m,) times and weights, (m, D) points."""
    kt, ke = jax.random.split(key)
    t, w = sample_times(sde, kt, (m,), t0=t0, importance_sampling=is_, dtype=x.dtype)
    alpha, sigma = sde.marginal(t)
    xt = alpha[:, None] * x + sigma[:, None] * jax.random.normal(ke, (m,) + x.shape, x.dtype)
    return t, w, xt


@eqx.filter_jit
def kl_kernel(score_p, score_q, sde, x, keys, t0, *, m, is_, batch_size):
    """Per-sample Thm. 1 integrands (unchecked): 1/2 mean_t w g^2 |s_p - s_q|^2 for each sample of x."""

    def one(xx, k):
        t, w, xt = _diffuse(sde, xx, k, m, t0, is_)
        sp, sq = jax.vmap(score_p)(xt, t), jax.vmap(score_q)(xt, t)
        return jnp.mean(0.5 * w * sde.g2(t) * jnp.sum((sp - sq) ** 2, -1))

    return map_points(one, (x, keys), batch_size)


@eqx.filter_jit
def entropy_kernel(score, sde, x, keys, t0, *, m, is_, batch_size):
    """Per-sample Thm. 4 integrands (unchecked), without the prior entropy H(p_T)."""

    def one(xx, k):
        t, w, xt = _diffuse(sde, xx, k, m, t0, is_)
        s = jax.vmap(score)(xt, t)
        inner = 2 * sde.f(t) * jnp.sum(xt * s, -1) - sde.g2(t) * jnp.sum(s**2, -1)
        return jnp.mean(0.5 * w * inner)

    return map_points(one, (x, keys), batch_size)
