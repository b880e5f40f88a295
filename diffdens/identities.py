"""KL divergence and differential entropy as time integrals of scores (Durkan and Song 2021, Thms. 1 and 4).

For the forward SDE dx = f(t) x dt + g(t) dW started from p (resp. q), with marginals p_t (q_t) and p_T = q_T,

    KL(p || q) = 1/2 int_0^T E_{x ~ p_t} [ g^2 |grad log p_t(x) - grad log q_t(x)|^2 ] dt            (Thm. 1, eq. 5)
    H(p)       = H(p_T) + 1/2 int_0^T E_{x ~ p_t} [ 2 f x . grad log p_t(x) - g^2 |grad log p_t(x)|^2 ] dt  (Thm. 4, eq. 10)

Both are estimated from samples of p: each sample is diffused to ``n_times`` times t (uniform on [t0, T], or
importance-sampled as in Song et al. 2021b, eq. 12), so the per-sample values are i.i.d. and the result
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

from ._checks import check_bool, check_positive_int, check_t0
from ._engine import check_callable, diagnose_score, front_door, map_points, probe_score, probe_times
from .estimate import Estimate, sample_times
from .sde import LinearSDE, check_sde

EVALS_PER_CALL = 65_536


def population_estimate(vals: Float[Array, " n"]) -> Estimate:
    """A population quantity from i.i.d. per-sample values: value and stderr are 0-d arrays (stderr by two passes)."""
    n = vals.shape[0]
    mean = jnp.mean(vals)
    se = jnp.sqrt(jnp.sum((vals - mean) ** 2) / (n - 1) / n) if n > 1 else jnp.asarray(jnp.nan, vals.dtype)
    return Estimate(mean, se, None)


def _front(sde, x, key, n_times, t0, importance_sampling, batch_size, scores):
    """The front door with one or two scores: (front, n_times, t0, importance sampling, batch size, times, scores)."""
    check_sde(sde)
    n_times = check_positive_int(n_times, "n_times")
    t0 = check_t0(t0, sde.T)
    is_ = check_bool(importance_sampling, "importance_sampling")
    times = probe_times(sde, t0)
    (name0, s0), rest = scores[0], scores[1:]
    front = front_door(s0, sde, x, key=key, key_required=True, times=times, batch_size=batch_size,
                       score_name=name0)
    if front.n < 2:
        raise ValueError(f"x needs at least 2 samples for a standard error, got {front.n}")
    out = [front.score]
    for sname, sc in rest:
        sc = check_callable(sc, front.event_shape, front.dtype, sname)
        if front.eager:
            probe_score(sc, front.x[0], times, sname)
        out.append(sc)
    bs = front.batch_size if front.batch_size is not None else max(1, EVALS_PER_CALL // n_times)
    return front, n_times, t0, is_, bs, times, out


def kl_divergence(
    score_p: Callable,
    score_q: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    *,
    key: PRNGKeyArray = None,
    n_times: int = 16,
    importance_sampling: bool = False,
    t0: float = 1e-5,
    batch_size: Optional[int] = None,
) -> Estimate:
    """KL(p || q) from the scores of p_t and q_t and samples x of p (Durkan and Song 2021, Thm. 1, eq. 5).

    Arguments:
        score_p, score_q: the scores of p_t and q_t (on one point of the event shape).
        sde: the forward SDE.
        x: samples of p, shape (n, *event_shape), n >= 2.
        key: PRNG key (required).
        n_times: diffusion times per sample.
        importance_sampling: t with density g^2 / sigma_t^2 instead of uniform.
        t0: the lower time end in (0, T).
        batch_size: samples per compiled chunk.

    Returns:
        A population :class:`diffdens.Estimate` with 0-d value and stderr (over the samples)."""
    front, m, t0, is_, bs, times, (sp, sq) = _front(sde, x, key, n_times, t0, importance_sampling, batch_size,
                                                     [("score_p", score_p), ("score_q", score_q)])
    vals = kl_kernel(sp, sq, sde, front.x, front.point_keys(), jnp.asarray(t0, front.dtype), m=m, is_=is_,
                     batch_size=bs)
    vals = front.finite(vals, diagnose_score(sp, front.x, times, "score_p"))
    return population_estimate(vals)


def weighted_score_error(
    score: Callable,
    exact_score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    *,
    key: PRNGKeyArray = None,
    n_times: int = 64,
    t0: float = 1e-5,
    batch_size: Optional[int] = None,
) -> Estimate:
    """The likelihood-weighted Fisher divergence of a model from the exact score, over data x:
    1/2 int_{t0}^T g(t)^2 E_{x_t} |score - exact_score|^2 dt (t importance-sampled, x_t diffused from x), i.e. the
    Thm. 1 integrand of :func:`kl_divergence` (Durkan and Song 2021).

    Arguments:
        score: the model's score; exact_score: the reference score (both on one point of the event shape).
        sde, x, key, n_times, t0, batch_size: as :func:`kl_divergence` (t is importance-sampled).

    Returns:
        A population :class:`diffdens.Estimate` with 0-d value and stderr."""
    front, m, t0, is_, bs, times, (s, se) = _front(sde, x, key, n_times, t0, True, batch_size,
                                                    [("score", score), ("exact_score", exact_score)])
    vals = kl_kernel(se, s, sde, front.x, front.point_keys(), jnp.asarray(t0, front.dtype), m=m, is_=True,
                     batch_size=bs)
    vals = front.finite(vals, diagnose_score(s, front.x, times))
    return population_estimate(vals)


def entropy(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    *,
    key: PRNGKeyArray = None,
    n_times: int = 16,
    importance_sampling: bool = False,
    t0: float = 1e-5,
    batch_size: Optional[int] = None,
) -> Estimate:
    """Differential entropy H(p) in nats from the score of p_t and samples x of p (Durkan and Song 2021, Thm. 4,
    eq. 10).

    Arguments:
        score: the score of p_t; sde, x, key, n_times, importance_sampling, t0, batch_size: as :func:`kl_divergence`.

    Returns:
        A population :class:`diffdens.Estimate` with 0-d value and stderr (over the samples)."""
    front, m, t0, is_, bs, times, (s,) = _front(sde, x, key, n_times, t0, importance_sampling, batch_size,
                                                [("score", score)])
    vals = entropy_kernel(s, sde, front.x, front.point_keys(), jnp.asarray(t0, front.dtype), m=m, is_=is_,
                          batch_size=bs)
    vals = front.finite(vals, diagnose_score(s, front.x, times))
    d = front.dim
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
