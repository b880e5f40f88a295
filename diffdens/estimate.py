"""What every estimator shares: the ``Estimate`` result type, divergences and time sampling.

* ``Estimate``: per-point ``value``, its Monte Carlo ``stderr`` (None where exact), and ``nfe`` (None where no
  ODE/SDE is solved).
* Divergences: exact (D Jacobian-vector products) or Hutchinson's estimator with Rademacher or Gaussian probes
  (Hutchinson 1989; Grathwohl et al. 2019).
* Time sampling on [t0, T]: uniform, or importance sampling from p(t) proportional to g(t)^2 / sigma_t^2
  (Song et al. 2021b, eq. 12, whose lambda(t) weighting is our sigma_t^2). Since
  d lambda / dt = -g^2 / sigma_t^2, that proposal is exactly "the log-SNR lambda uniform", sampled in closed form.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_option
from .options import PROBES
from .sde import LinearSDE


class Estimate(NamedTuple):
    """Per-point result of an estimator. A population estimate (:func:`diffdens.kl_divergence`,
    :func:`diffdens.entropy`, :func:`diffdens.weighted_score_error`) has 0-d fields.

    Fields:
        value: (n,) the estimate per point.
        stderr: (n,) its Monte Carlo standard error, or None where the value is exact (up to solver tolerance).
        nfe: (n,) score evaluations per point, or None where nothing is solved or the solver has no fixed cost
            per step.
    """

    value: Float[Array, " n"]
    stderr: Optional[Float[Array, " n"]] = None
    nfe: Optional[Array] = None

    @classmethod
    def from_samples(cls, samples: Float[Array, "n m"], nfe=None) -> "Estimate":
        """Mean over the last axis, with the standard error of that mean (ddof=1)."""
        m = samples.shape[-1]
        value = jnp.mean(samples, axis=-1)
        stderr = jnp.std(samples, axis=-1, ddof=1) / jnp.sqrt(m) if m > 1 else jnp.full_like(value, jnp.nan)
        return cls(value, stderr, nfe)


class SamplePath(NamedTuple):
    """A saved trajectory (:attr:`Samples.path`).

    Fields:
        ts: (m,) the saved times.
        x: (n, m, *event_shape) the states at those times.
        log_prob: (n, m) the running log-density, or None where the sampler does not carry it.
    """

    ts: Float[Array, " m"]
    x: Float[Array, "n m D"]
    log_prob: Optional[Float[Array, "n m"]] = None


class Samples(NamedTuple):
    """What every sampler returns. Fields after ``nfe`` are None unless a sampler has them.

    Fields:
        x: (n, *event_shape) the samples.
        log_prob: (n,) the model log-density of each sample where the sampler carries it, else None.
        nfe: (n,) score evaluations per sample where known, else None.
        log_prob_stderr: (n,) the standard error of ``log_prob`` when it is itself an estimate.
        start: (n, *event_shape) the intermediate states a two-stage sampler started from
            (:func:`diffdens.hd_sample`'s x_t).
        log_prob_change: an :class:`Estimate`, the change of log-density along the last stage.
        path: a :class:`SamplePath`, where the sampler saves one.
    """

    x: Float[Array, "n D"]
    log_prob: Optional[Float[Array, " n"]] = None
    nfe: Optional[Array] = None
    log_prob_stderr: Optional[Float[Array, " n"]] = None
    start: Optional[Float[Array, "n D"]] = None
    log_prob_change: Optional["Estimate"] = None
    path: Optional[SamplePath] = None


def make_probes(key: PRNGKeyArray, n_probes: int, dim: int, probe: str = "rademacher", dtype=None):
    """Hutchinson probes v with E[v v^T] = I.

    Arguments:
        key: PRNG key.
        n_probes: the number of probes.
        dim: the dimension D of each probe.
        probe: ``"rademacher"`` (entries +-1) or ``"gaussian"`` (standard normal).
        dtype: the float dtype (default: JAX's default float).

    Returns:
        (n_probes, dim) array of probes.
    """
    check_option(probe, PROBES, "probe")
    dtype = dtype or jnp.result_type(float)
    if probe == "rademacher":
        return jax.random.rademacher(key, (n_probes, dim), dtype=dtype)
    return jax.random.normal(key, (n_probes, dim), dtype=dtype)


def value_and_divergence(
    fn: Callable[[Float[Array, " D"]], Float[Array, " D"]],
    x: Float[Array, " D"],
    probes: Optional[Float[Array, "m D"]] = None,
):
    """A vector field's value and divergence at one point, from one linearization of ``fn`` (exact: D JVPs;
    Hutchinson: one JVP per probe).

    Arguments:
        fn: a map from (D,) to (D,).
        x: (D,) the point.
        probes: (m, D) Hutchinson probes (:func:`make_probes`), or None for the exact divergence.

    Returns:
        ``(fn(x), div)``: (D,) and a scalar tr(d fn / dx) when ``probes`` is None, else (m,) the estimates
        v^T J v, one per probe.
    """
    y, jvp = jax.linearize(fn, x)
    if probes is None:
        eye = jnp.eye(x.shape[-1], dtype=x.dtype)
        return y, jnp.trace(jax.vmap(jvp)(eye))
    return y, jnp.sum(probes * jax.vmap(jvp)(probes), axis=-1)


def sample_times(
    sde: LinearSDE,
    key: PRNGKeyArray,
    shape,
    *,
    t0: float,
    t1: Optional[float] = None,
    importance_sampling: bool = False,
    dtype=None,
):
    """Times t in [t0, t1] and weights w with  int_{t0}^{t1} h(t) dt  ~  mean(w * h(t)).

    Uniform: w = t1 - t0. Importance sampling (Song et al. 2021b, eq. 12): the log-SNR lambda(t) uniform on
    [lambda(t1), lambda(t0)], so p(t) = g^2 / (sigma_t^2 Z), Z = lambda(t0) - lambda(t1), and w = Z sigma_t^2 / g(t)^2.

    Arguments:
        sde: the forward SDE (:class:`diffdens.LinearSDE`).
        key: PRNG key.
        shape: the shape of the returned arrays.
        t0: the lower end of the time interval.
        t1: the upper end (default ``sde.T``).
        importance_sampling: draw from p(t) proportional to g^2 / sigma_t^2 instead of uniformly.
        dtype: the float dtype (default: JAX's default float).

    Returns:
        ``(t, w)``, both of shape ``shape``.
    """
    t1 = sde.T if t1 is None else t1
    dtype = dtype or jnp.result_type(float)
    u = jax.random.uniform(key, shape, dtype=dtype)
    if not importance_sampling:
        return t0 + (t1 - t0) * u, jnp.full(shape, t1 - t0, dtype=dtype)
    lam0, lam1 = sde.log_snr(jnp.asarray(t0, dtype)), sde.log_snr(jnp.asarray(t1, dtype))
    t = jnp.clip(sde.log_snr_inverse(lam1 + (lam0 - lam1) * u), t0, t1)
    sigma2 = sde.marginal(t)[1] ** 2
    return t, (lam0 - lam1) * sigma2 / sde.g2(t)
