"""The probability-flow ODE likelihood (a continuous normalizing flow).

``002_f66275a1c9cf2a92.txt`` eqs. 6-7, ``000_8c59016f91bb37e4.txt`` Sec. 2.2 and App. B: along
dx/dt = f(t) x - g(t)^2/2 s(x, t), log p_0(x_0) = log p_T(x_T) + int_0^T div(f x - g^2/2 s) dt.
The solve itself (with the carried log-density, exact or Hutchinson divergence, NFE from diffrax's step counts) is
:mod:`diffdens.flow`, shared with the HD-ODE.

Every function validates its arguments at the front door (each error names the argument), probes the score once,
then runs one compiled kernel with the score as a traced pytree (two models of one architecture share one
compilation) over the points in chunks of ``batch_size``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_key, check_points, check_shape, check_t0
from ._engine import check_batch_size, check_score, point_keys, probe_score, traced_score
from .estimate import Estimate, Samples
from .flow import DEFAULT_BATCH_SIZE, check_divergence, check_solve_options, probe_times, run_flow
from .sde import LinearSDE, check_sde


class Encoding(NamedTuple):
    """:func:`ode_encode`'s result: ``x_T`` (n, D) the end of each PF-ODE path; ``delta`` (n,), or (n, n_probes) for
    Hutchinson (one estimate per probe), with log p_t0(x) = log p_T(x_T) + delta; ``nfe`` (n,) score evaluations per
    point (None for a solver without a fixed cost per step, see :mod:`diffdens.flow`)."""

    x_T: Float[Array, "n D"]
    delta: Array
    nfe: Optional[Array]


def _front_door(score, sde, x, key, divergence, n_probes, probe, rtol, atol, t0, solver, max_steps, batch_size):
    check_sde(sde)
    x = check_points(x, "x")
    t0 = check_t0(t0, sde.T)
    n_probes, key = check_divergence(divergence, probe, n_probes, key)
    opts = check_solve_options(rtol, atol, max_steps, solver)
    batch_size = check_batch_size(batch_size)
    score = traced_score(score)
    check_score(score, x)
    probe_score(score, x, probe_times(t0, sde.T))
    keys = point_keys(key, x.shape[0]) if divergence == "hutchinson" else None
    return score, x, t0, n_probes, keys, opts, batch_size


def _encode(score, sde, x, keys, t0, opts, divergence, n_probes, probe, batch_size) -> Encoding:
    res, nfe = run_flow(score, sde, x, keys, t0, sde.T, opts, kind="pf", divergence=divergence, n_probes=n_probes,
                        probe=probe, batch_size=batch_size, what="PF-ODE")
    return Encoding(res.x, -res.change, nfe)  # change = log p_T(x_T) - log p_t0(x)


def ode_encode(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: Optional[PRNGKeyArray] = None,
    t0: float = 1e-5,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver=None,
    max_steps: int = 4096,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Encoding:
    """Map data x at t0 to x_T along the PF-ODE; returns :class:`Encoding` (x_T, delta, nfe) with
    log p_t0(x) = log p_T(x_T) + delta. Options as :func:`ode_log_prob`."""
    score, x, t0, n_probes, keys, opts, batch_size = _front_door(score, sde, x, key, divergence, n_probes, probe,
                                                                 rtol, atol, t0, solver, max_steps, batch_size)
    return _encode(score, sde, x, keys, t0, opts, divergence, n_probes, probe, batch_size)


def _check_prior(prior_log_prob, x):
    if prior_log_prob is None:
        return None
    if not callable(prior_log_prob):
        raise TypeError(f"prior_log_prob must be a callable of x_T (n, D), got {type(prior_log_prob).__name__}")
    try:
        out = jax.eval_shape(prior_log_prob, jax.ShapeDtypeStruct(x.shape, x.dtype))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"prior_log_prob could not be evaluated on x_T of shape {x.shape}: {e}") from e
    if getattr(out, "shape", None) != (x.shape[0],):
        raise ValueError(f"prior_log_prob must map x_T of shape {x.shape} to shape ({x.shape[0]},), "
                         f"got {getattr(out, 'shape', type(out).__name__)}")
    return prior_log_prob


def ode_log_prob(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: Optional[PRNGKeyArray] = None,
    t0: float = 1e-5,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver=None,
    prior_log_prob: Optional[Callable] = None,
    max_steps: int = 4096,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Estimate:
    """log p_t0(x) under the probability-flow ODE, per point (``002_f66275a1c9cf2a92.txt`` eq. 7).

    ``divergence="exact"``: D Jacobian-vector products per evaluation, ``stderr`` None. ``"hutchinson"``:
    ``n_probes`` fixed probes per point along the whole path (``000_8c59016f91bb37e4.txt`` App. B; needs ``key``),
    value the mean over probes, stderr their standard error (NaN for one probe). ``nfe``: score evaluations per
    point, from diffrax's step count and the solver's measured cost per step (:mod:`diffdens.flow`).
    ``solver``: any adaptive diffrax solver (default Tsit5). ``prior_log_prob``: a function of x_T (n, D) -> (n,)
    replacing ``sde.prior_log_prob`` (e.g. the exact log p_T in tests); it is called once, outside the compiled
    solve, so a new function costs no recompilation. ``batch_size`` points are solved at a time (memory bound).
    A score that returns NaN/inf raises ValueError saying at which t; a solve that runs out of ``max_steps``
    raises RuntimeError.
    """
    score, x, t0, n_probes, keys, opts, batch_size = _front_door(score, sde, x, key, divergence, n_probes, probe,
                                                                 rtol, atol, t0, solver, max_steps, batch_size)
    prior_fn = _check_prior(prior_log_prob, x) or sde.prior_log_prob
    enc = _encode(score, sde, x, keys, t0, opts, divergence, n_probes, probe, batch_size)
    prior = prior_fn(enc.x_T)
    if divergence == "exact":
        return Estimate(prior + enc.delta, None, enc.nfe)
    return Estimate.from_samples(prior[:, None] + enc.delta, nfe=enc.nfe)


def ode_sample(
    score: Callable,
    sde: LinearSDE,
    key: PRNGKeyArray,
    shape,
    *,
    t0: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver=None,
    max_steps: int = 4096,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Samples:
    """Sample by integrating the PF-ODE from x_T ~ prior down to t0; returns :class:`Samples` (x, log_prob, nfe),
    with the exact divergence carried along so log_prob is the model log-density of each sample (prior at T)."""
    check_sde(sde)
    key = check_key(key)
    n, d = check_shape(shape)
    t0 = check_t0(t0, sde.T)
    opts = check_solve_options(rtol, atol, max_steps, solver)
    batch_size = check_batch_size(batch_size)
    score = traced_score(score)
    x_T = sde.prior_sample(key, (n, d))
    check_score(score, x_T)
    probe_score(score, x_T, probe_times(t0, sde.T))
    res, nfe = run_flow(score, sde, x_T, None, sde.T, t0, opts, kind="pf", batch_size=batch_size, what="PF-ODE")
    return Samples(res.x, sde.prior_log_prob(x_T) + res.change, nfe)  # change = log p_t0(x) - log p_T(x_T)
