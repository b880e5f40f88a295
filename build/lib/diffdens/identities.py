"""KL divergence and differential entropy as time integrals of scores (``003_4cfdcc379dd9f743.txt`` Thms. 1 and 4).

For the forward SDE dx = f(t) x dt + g(t) dW started from p (resp. q), with marginals p_t (q_t) and p_T = q_T,

    KL(p || q) = 1/2 int_0^T E_{x ~ p_t} [ g^2 |grad log p_t(x) - grad log q_t(x)|^2 ] dt            (Thm. 1, eq. 5)
    H(p)       = H(p_T) + 1/2 int_0^T E_{x ~ p_t} [ 2 f x . grad log p_t(x) - g^2 |grad log p_t(x)|^2 ] dt  (Thm. 4, eq. 10)

Both are estimated from samples of p: each sample is diffused to ``n_times`` times t (uniform on [t0, T], or
importance-sampled as in ``002_f66275a1c9cf2a92.txt`` eq. 12), so the per-sample values are i.i.d. and the result
carries a standard error over samples. H(p_T) is taken as the entropy of the prior N(0, prior_std^2 I): the error is
O(alpha_T^2) for VP/subVP and O(Var/sigma_max^2) for VE, far below the Monte Carlo error at the book's settings.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_points, check_positive_int, check_t0
from .estimate import Estimate, sample_times
from .sde import LinearSDE, check_sde


def _scalar(vals: Float[Array, " n"]) -> Estimate:
    """A population quantity from i.i.d. per-sample values: value and stderr are 0-d arrays."""
    n = vals.shape[0]
    return Estimate(jnp.mean(vals), jnp.std(vals, ddof=1) / math.sqrt(n) if n > 1 else jnp.asarray(jnp.nan))


def _diffuse(sde, x, key, m, t0, importance_sampling):
    """m (t, x_t, weight) draws per sample: (m, n) times and weights, (m, n, D) points."""
    kt, ke = jax.random.split(key)
    t, w = sample_times(sde, kt, (m, x.shape[0]), t0=t0, importance_sampling=importance_sampling, dtype=x.dtype)
    alpha, sigma = sde.marginal(t)
    xt = alpha[..., None] * x + sigma[..., None] * jax.random.normal(ke, (m,) + x.shape, x.dtype)
    return t, w, xt


def _validate(sde, samples, n_times, t0, name):
    check_sde(sde)
    samples = check_points(samples, name)
    if samples.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples for a standard error, got {samples.shape[0]}")
    return samples, check_positive_int(n_times, "n_times"), check_t0(t0, sde.T)


def kl_divergence(
    score_p: Callable,
    score_q: Callable,
    sde: LinearSDE,
    samples_p: Float[Array, "n D"],
    *,
    key: PRNGKeyArray,
    n_times: int = 16,
    importance_sampling: bool = False,
    t0: float = 1e-5,
) -> Estimate:
    """KL(p || q) from the scores of p_t and q_t and samples of p (``003_4cfdcc379dd9f743.txt`` Thm. 1, eq. 5).

    Returns a scalar ``Estimate`` (value, stderr over the samples)."""
    samples_p, n_times, t0 = _validate(sde, samples_p, n_times, t0, "samples_p")
    return _scalar(_kl_values(score_p, score_q, sde, samples_p, key, n_times, bool(importance_sampling), float(t0)))


def entropy(
    score: Callable,
    sde: LinearSDE,
    samples: Float[Array, "n D"],
    *,
    key: PRNGKeyArray,
    n_times: int = 16,
    importance_sampling: bool = False,
    t0: float = 1e-5,
) -> Estimate:
    """Differential entropy H(p) in nats from the score of p_t and samples of p (``003_4cfdcc379dd9f743.txt`` Thm. 4,
    eq. 10). Returns a scalar ``Estimate`` (value, stderr over the samples)."""
    samples, n_times, t0 = _validate(sde, samples, n_times, t0, "samples")
    vals = _entropy_values(score, sde, samples, key, n_times, bool(importance_sampling), float(t0))
    d = samples.shape[-1]
    h_prior = 0.5 * d * math.log(2 * math.pi * math.e * sde.prior_std**2)
    est = _scalar(vals)
    return Estimate(h_prior + est.value, est.stderr)


def _kl_values_impl(score_p, score_q, sde, x, key, m, is_, t0):
    t, w, xt = _diffuse(sde, x, key, m, t0, is_)
    sp, sq = jax.vmap(jax.vmap(score_p))(xt, t), jax.vmap(jax.vmap(score_q))(xt, t)
    return jnp.mean(0.5 * w * sde.g2(t) * jnp.sum((sp - sq) ** 2, -1), axis=0)


def _entropy_values_impl(score, sde, x, key, m, is_, t0):
    t, w, xt = _diffuse(sde, x, key, m, t0, is_)
    s = jax.vmap(jax.vmap(score))(xt, t)
    inner = 2 * sde.f(t) * jnp.sum(xt * s, -1) - sde.g2(t) * jnp.sum(s**2, -1)
    return jnp.mean(0.5 * w * inner, axis=0)


_kl_values = jax.jit(_kl_values_impl, static_argnums=(0, 1, 2, 5, 6, 7))
_entropy_values = jax.jit(_entropy_values_impl, static_argnums=(0, 1, 4, 5, 6))
