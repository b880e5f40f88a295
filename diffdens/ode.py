"""The probability-flow ODE likelihood (a continuous normalizing flow).

Song et al. 2021b, eqs. 6-7; Premkumar 2024, Sec. 2.2 and App. B: along
dx/dt = f(t) x - g(t)^2/2 s(x, t), log p_0(x_0) = log p_T(x_T) + int_0^T div(f x - g^2/2 s) dt.
The solve itself (with the carried log-density, exact or Hutchinson divergence, NFE from diffrax's step counts) is
:mod:`diffdens.flow`, shared with the HD-ODE.

Every function validates its arguments at the front door (each error names the argument), probes the score once,
then runs one compiled kernel with the score as a traced pytree (two models of one architecture share one
compilation) over the points in chunks of ``batch_size``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_key, check_t0
from ._engine import Front, front_door, probe_times, warn_prior_mismatch, warn_single_sample
from .estimate import Estimate, Samples
from .flow import DEFAULT_BATCH_SIZE, run_flow
from .options import Divergence, SolveOptions, check_divergence, check_solve
from .sde import LinearSDE, check_sde


class Encoding(NamedTuple):
    """:func:`ode_encode`'s result.

    Fields:
        x_T: (n, *event_shape) the end of each PF-ODE path.
        delta: (n,), or (n, n_probes) for Hutchinson (one estimate per probe), with
            log p_t0(x) = log p_T(x_T) + delta.
        nfe: (n,) score evaluations per point (None for a solver without a fixed cost per step, see
            :class:`diffdens.SolveOptions`).
    """

    x_T: Array
    delta: Array
    nfe: Optional[Array]


def _front(score, sde, x, key, divergence, t0, solve, batch_size, prior_log_prob=None):
    hutch = check_divergence(divergence)
    solve = check_solve(solve)
    if hutch is not None:
        key = check_key(key)
    t0 = check_t0(t0, check_sde(sde).T)
    front = front_door(score, sde, x, key=key, times=probe_times(sde, t0), prior_log_prob=prior_log_prob,
                       batch_size=batch_size)
    keys = front.point_keys() if hutch is not None else None
    return front, hutch, t0, solve, keys


def _encode(front: Front, sde, keys, t0, solve, hutch) -> tuple:
    res, nfe = run_flow(front, sde, front.x, keys, t0, sde.T, solve, kind="pf", hutchinson=hutch, what="PF-ODE")
    return res.x, -res.change, nfe  # change = log p_T(x_T) - log p_t0(x)


def ode_encode(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    *,
    key: Optional[PRNGKeyArray] = None,
    t0: float = 1e-5,
    divergence: Divergence = "exact",
    solve: Optional[SolveOptions] = None,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Encoding:
    """Map data x at t0 to x_T along the probability-flow ODE (Song et al. 2021b, eq. 6).

    Arguments:
        score, sde, x, key, t0, divergence, solve, batch_size: as :func:`ode_log_prob`.

    Returns:
        :class:`Encoding` (x_T, delta, nfe) with log p_t0(x) = log p_T(x_T) + delta.
    """
    front, hutch, t0, solve, keys = _front(score, sde, x, key, divergence, t0, solve, batch_size)
    x_T, delta, nfe = _encode(front, sde, keys, t0, solve, hutch)
    return Encoding(front.unflatten(x_T), delta, nfe)


@eqx.filter_jit
def _prior_values(prior, sde, x_T):
    return sde.prior_log_prob(x_T) if prior is None else jax.vmap(prior)(x_T)


def ode_log_prob(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    *,
    key: Optional[PRNGKeyArray] = None,
    t0: float = 1e-5,
    divergence: Divergence = "exact",
    solve: Optional[SolveOptions] = None,
    prior_log_prob: Optional[Callable] = None,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Estimate:
    """log p_t0(x) under the probability-flow ODE, per point: a continuous normalizing flow (Song et al. 2021b,
    eqs. 6-7; Chen et al. 2018), log p_t0(x) = log p_T(x_T) + int_t0^T div(f x - g^2/2 s)(x_t, t) dt.

    Arguments:
        score: ``score(x, t)`` on one point of shape ``event_shape`` and a scalar t (a model's ``.score``, a
            module, a ``Partial``, a plain function); its arrays are traced (jit, vmap and grad reach them).
        sde: the forward SDE (:class:`diffdens.LinearSDE`).
        x: the points, shape (n, *event_shape).
        key: PRNG key, needed for a Hutchinson divergence.
        t0: the start time in (0, T).
        divergence: ``"exact"`` (D Jacobian-vector products per evaluation, ``stderr`` None) or
            :class:`diffdens.Hutchinson` (fixed probes per point along the whole path (Grathwohl et al. 2019); value
            the mean over probes, stderr their standard error, NaN for one probe, with a :class:`diffdens.SingleSampleWarning`).
        solve: :class:`diffdens.SolveOptions` (tolerances, solver, ``max_steps``, adjoint for gradients).
        prior_log_prob: log pi(y) of one point y of shape ``event_shape`` (a scalar), replacing
            ``sde.prior_log_prob`` (e.g. the exact log p_T in tests).
        batch_size: points solved at a time (a memory bound; the result does not depend on it beyond rounding).

    Returns:
        :class:`diffdens.Estimate` with ``value`` (n,), ``stderr`` (None when exact), ``nfe`` (n,) score evaluations
        per point. Eagerly, a score that returns NaN/inf raises ValueError saying at which t, and a solve that runs
        out of ``max_steps`` raises RuntimeError; under jit/vmap/grad both raise at run time (equinox.error_if).
    """
    front, hutch, t0, solve, keys = _front(score, sde, x, key, divergence, t0, solve, batch_size, prior_log_prob)
    warn_prior_mismatch(front, sde)
    if hutch is not None:
        warn_single_sample(hutch.n_probes, "n_probes")
    x_T, delta, nfe = _encode(front, sde, keys, t0, solve, hutch)
    prior = front.finite(_prior_values(front.prior, sde, x_T), what="prior_log_prob(x_T)")
    if hutch is None:
        return Estimate(prior + delta, None, nfe)
    return Estimate.from_samples(prior[:, None] + delta, nfe=nfe)


def ode_sample(
    score: Callable,
    sde: LinearSDE,
    key: PRNGKeyArray,
    shape,
    *,
    t0: float = 1e-5,
    solve: Optional[SolveOptions] = None,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Samples:
    """Sample by integrating the probability-flow ODE (Song et al. 2021b, eq. 6) from x_T ~ prior down to t0.

    Arguments:
        score, sde, t0, solve, batch_size: as :func:`ode_log_prob`.
        key: PRNG key of the prior draws.
        shape: (n, *event_shape).

    Returns:
        :class:`diffdens.Samples` (x (n, *event_shape), log_prob (n,) the model log-density of each sample, carried
        with the exact divergence from the prior at T, nfe (n,)).
    """
    solve = check_solve(solve)
    t0 = check_t0(t0, check_sde(sde).T)
    front = front_door(score, sde, shape=shape, key=key, key_required=True, times=probe_times(sde, t0),
                       batch_size=batch_size)
    x_T = sde.prior_sample(front.key, (front.n, front.dim)).astype(front.dtype)
    res, nfe = run_flow(front, sde, x_T, None, sde.T, t0, solve, kind="pf", what="PF-ODE")
    # change = log p_t0(x) - log p_T(x_T)
    return Samples(front.unflatten(res.x), _prior_values(None, sde, x_T) + res.change, nfe)
