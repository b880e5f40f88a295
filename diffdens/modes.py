"""Where the density is highest: the mode of the denoising distribution p(x_s | x_t).

Karczewski et al. 2025 (*Diffusion models as cartoonists*), Sec. 4:

* Thm. 5, eq. 16 (proof App. H): the mode y_s of p(x_s | x_t), when it moves smoothly, solves
  dy/ds = f y - g^2 s(y, s) - g^2/2 A^{-1} grad Laplacian log p_s(y), A = Hessian log p_s - psi(s) I.
* Remark 1, eq. 18 (App. I): dropping the third-order term gives the high-density ODE (HD-ODE)
  dy/ds = f y - g^2 s(y, s), exact for Gaussian data up to O(e^{-lambda_max}).
* Lemma 1, eq. 22: log p_s(y_s) along the HD-ODE, d/ds log p_s(y_s) = -f D + g^2/2 div s - g^2/2 |s|^2.
* Alg. 1: high-density sampling, x_t from the model at a threshold t, then the HD-ODE down to ~0.

All time integration uses diffrax (Tsit5 by default, adaptive steps); time runs backwards from t to ``t0``. The HD-ODE
with its log-density is the shared solve of :mod:`diffdens.flow` (as the PF-ODE of :mod:`diffdens.ode`).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import as_float_array, check_option, check_positive_int, check_real, check_t0, check_time
from ._engine import Front, front_door, map_points, probe_times
from .estimate import Estimate, SamplePath, Samples
from .flow import DEFAULT_BATCH_SIZE, checked, flow_drift, run_flow, solve_ode
from .options import Divergence, SolveOptions, check_divergence, check_solve
from .reverse import reverse_sde_sample
from .sde import LinearSDE, check_sde

SAMPLERS = ("ode", "sde")


# --- the denoising distribution -------------------------------------------------------------------------------
def transition_coefficients(sde: LinearSDE, s, t):
    """(f~, g~^2) with p(x_t | x_s) = N(f~ x_s, g~^2 I) for s < t (Karczewski et al. 2025, eq. 94):
    f~ = alpha_t / alpha_s, g~^2 = sigma_t^2 - f~^2 sigma_s^2 = sigma_t^2 (1 - e^{lambda_t - lambda_s})."""
    a_s, _ = sde.marginal(s)
    a_t, sig_t = sde.marginal(t)
    return a_t / a_s, sig_t**2 * -jnp.expm1(sde.log_snr(t) - sde.log_snr(s))


def inverse_psi(sde: LinearSDE, s, t):
    """1 / psi(s) of Thm. 5 (eq. 110): psi = e^{lambda_t} / (sigma_s^2 (e^{lambda_s} - e^{lambda_t})), so
    1/psi = alpha_s^2 (1 - e^{lambda_t - lambda_s}) e^{-lambda_t}, which is 0 at s = t (no division by zero)."""
    a_s, _ = sde.marginal(s)
    lam_s, lam_t = sde.log_snr(s), sde.log_snr(t)
    return a_s**2 * -jnp.expm1(lam_t - lam_s) * jnp.exp(-lam_t)


def denoising_log_prob(log_prob: Callable, sde: LinearSDE, x_s: Float[Array, "*b D"], s, x_t: Float[Array, " D"], t):
    """log p(x_s | x_t) = log N(x_t; f~ x_s, g~^2 I) + log p_s(x_s) - log p_t(x_t) (Bayes; Karczewski et al. 2025,
    eqs. 20 and 94), for s < t, given an exact log-density.

    Arguments:
        log_prob: ``log_prob(x, t)`` of p_t, broadcasting over leading axes of x (e.g.
            :meth:`diffdens.DiffusedMixture.log_prob`).
        sde: the forward SDE (:class:`diffdens.LinearSDE`).
        x_s: (..., D) the points at the earlier time s.
        s: the earlier time, 0 < s < t.
        x_t: (D,) the conditioning point at time t.
        t: the later time, t <= T.

    Returns:
        (...,) log p(x_s | x_t), one value per point of ``x_s``.
    """
    check_sde(sde)
    if not callable(log_prob):
        raise TypeError(f"log_prob must be a callable log_prob(x, t), got {type(log_prob).__name__}")
    x_s = as_float_array(x_s, "x_s")
    x_t = as_float_array(x_t, "x_t")
    check_time(s, "s", lo=0.0, hi=float(sde.T), open_lo=True)
    check_time(t, "t", lo=0.0, hi=float(sde.T), open_lo=True)
    if not isinstance(s, jax.core.Tracer) and not isinstance(t, jax.core.Tracer):
        if np.any(np.asarray(s) >= np.asarray(t)):
            raise ValueError(f"s must be smaller than t (p(x_s | x_t) needs s < t), got s={s}, t={t}")
    ft, gt2 = transition_coefficients(sde, s, t)
    d = x_s.shape[-1]
    log_kernel = -0.5 * jnp.sum((x_t - ft * x_s) ** 2, axis=-1) / gt2 - 0.5 * d * jnp.log(2 * jnp.pi * gt2)
    return log_kernel + log_prob(x_s, s) - log_prob(x_t, t)


# --- Thm. 5: the exact mode-tracking ODE ----------------------------------------------------------------------
def mode_vector_field(score, sde, t):
    """Right-hand side of eq. 16, ``vf(s, y, args)`` for one point y (D,) at time s, for the conditioning time t
    (a diffrax vector field; :func:`mode_tracking_ode` integrates it)."""

    def vf(s, y, _):
        sc_fn = lambda z: score(z, s)
        sc, hvp = jax.linearize(sc_fn, y)
        d = y.shape[-1]
        eye = jnp.eye(d, dtype=y.dtype)
        H = jax.vmap(hvp)(eye).T  # Hessian of log p_s: D JVPs of the score (symmetric)
        grad_lap = jax.grad(lambda z: jnp.trace(jax.jacfwd(sc_fn)(z)))(y)  # grad of Laplacian of log p_s
        kappa = inverse_psi(sde, s, t)
        # A^{-1} v = (H - psi I)^{-1} v = (kappa H - I)^{-1} (kappa v): finite at s = t, where it vanishes.
        corr = jnp.linalg.solve(kappa * H - eye, kappa * grad_lap)
        g2 = sde.g2(s)
        return sde.f(s) * y - g2 * sc - 0.5 * g2 * corr

    return vf


class _ModeResult(NamedTuple):
    x: jax.Array  # the end point
    change: jax.Array  # the solver's output: the saved path, or the log-density change
    t_last: jax.Array
    ok: jax.Array


@eqx.filter_jit
def _mode_kernel(score, sde, x, t, t0, ts, rtol, atol, *, solver, max_steps, adjoint, batch_size):
    def one(x0):
        ys, y_last, t_last, steps, ok = solve_ode(mode_vector_field(score, sde, t), x0, t, t0, rtol, atol,
                                                  solver=solver, max_steps=max_steps, adjoint=adjoint, ts=ts)
        return _ModeResult(y_last, ys, t_last, ok)

    return map_points(one, (x,), batch_size)


def _check_times(sde, t, t0, t_name="t"):
    """t in (0, T], t0 in (0, T), t0 < t (time runs backwards from t to t0)."""
    t = check_real(t, t_name, lo=0.0, hi=float(sde.T), open_lo=True)
    t0 = check_t0(t0, sde.T)
    if not t0 < t:
        raise ValueError(f"t0 must be smaller than {t_name}, got t0={t0}, {t_name}={t}")
    return t, t0


def mode_tracking_ode(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    t: float,
    *,
    save_at=None,
    t0: float = 1e-5,
    solve: Optional[SolveOptions] = None,
    max_dim: int = 64,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> SamplePath:
    """The mode y_s of p(x_s | x_t = x) for s from t down to ``t0`` (Karczewski et al. 2025, Thm. 5, eq. 16).

    Exact when the mode moves smoothly (their App. H); the Hessian (D JVPs), the gradient of the Laplacian
    (autodiff) and a D x D linear solve per evaluation make it a low-D tool (their App. K): D > ``max_dim`` raises,
    use :func:`hd_ode`.

    Arguments:
        score, sde: the score and its SDE.
        x: the conditioning points x_t, shape (n, *event_shape).
        t: the conditioning time in (0, T].
        save_at: times in [t0, t] at which to save the mode (default: t0 only).
        t0: the end time, 0 < t0 < t.
        solve: :class:`diffdens.SolveOptions` (default rtol = atol = 1e-7).
        max_dim: the largest flat dimension D accepted.
        batch_size: points solved at a time.

    Returns:
        :class:`diffdens.SamplePath` (ts (m,) decreasing, x (n, m, *event_shape)). A score returning NaN/inf raises
        ValueError (saying at which t); a solve that runs out of ``max_steps`` (or a mode curve that is not smooth)
        raises RuntimeError.
    """
    check_sde(sde)
    solve = check_solve(solve) if solve is not None else SolveOptions(rtol=1e-7, atol=1e-7)
    max_dim = check_positive_int(max_dim, "max_dim")
    t, t0 = _check_times(sde, t, t0)
    front = front_door(score, sde, x, times=probe_times(sde, t0, t), batch_size=batch_size)
    if front.dim > max_dim:
        raise ValueError(f"x has dimension D={front.dim} > max_dim={max_dim}: exact mode tracking needs a D x D "
                         "Hessian and a linear solve per step (App. K); use hd_ode for high-dimensional data")
    if save_at is None:
        ts = np.array([t0])
    else:
        ts = np.atleast_1d(np.asarray(save_at, dtype=np.float64))
        if ts.ndim != 1 or not np.all(np.isfinite(ts)):
            raise ValueError(f"save_at must be a finite 1-D array of times, got shape {ts.shape}")
        if np.any(ts < t0) or np.any(ts > t):
            raise ValueError(f"save_at must lie in [t0, t] = [{t0}, {t}], got ({ts.min()}, {ts.max()})")
        ts = np.sort(ts)[::-1]
    dt = front.dtype
    ts = jnp.asarray(ts, dtype=dt)
    res = _mode_kernel(front.score, sde, front.x, jnp.asarray(t, dt), jnp.asarray(t0, dt), ts,
                       jnp.asarray(solve.rtol, dt), jnp.asarray(solve.atol, dt), solver=solve.solver,
                       max_steps=solve.max_steps, adjoint=solve.adjoint, batch_size=front.batch_size)
    res = checked(front, res, front.x, flow_drift(front.score, sde, "hd"), t, t0, solve.max_steps,
                  "mode-tracking ODE")
    return SamplePath(ts, front.unflatten(res.change))


# --- Remark 1 + Lemma 1: the HD-ODE with its log-density ------------------------------------------------------
def _change_estimate(change, hutch, nfe) -> Estimate:
    if hutch is None:
        return Estimate(change, None, nfe)
    return Estimate.from_samples(change, nfe=nfe)


def _hd(front: Front, sde, x, keys, t, t0, solve, hutch):
    """The unchecked HD-ODE stage on flat points: (y, change Estimate, nfe)."""
    res, nfe = run_flow(front, sde, x, keys, t, t0, solve, kind="hd", hutchinson=hutch, what="HD-ODE")
    return res.x, _change_estimate(res.change, hutch, nfe), nfe


def hd_ode(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    t: float,
    *,
    key: Optional[PRNGKeyArray] = None,
    t0: float = 1e-5,
    divergence: Divergence = "exact",
    solve: Optional[SolveOptions] = None,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Samples:
    """The high-density ODE from x at time t down to ``t0`` (Karczewski et al. 2025, Remark 1, eq. 18), with
    log p_t0(y) - log p_t(x) carried along by the general change of variables (their Lemma 1, eq. 22).

    Arguments:
        score, sde: the score and its SDE.
        x: the points x_t, shape (n, *event_shape).
        t: their time in (0, T].
        key: PRNG key, needed for a Hutchinson divergence.
        t0: the end time, 0 < t0 < t.
        divergence: ``"exact"`` or :class:`diffdens.Hutchinson`.
        solve: :class:`diffdens.SolveOptions`.
        batch_size: points solved at a time.

    Returns:
        :class:`diffdens.Samples`: ``x`` the end points y (n, *event_shape), ``start`` the given x,
        ``log_prob_change`` an :class:`diffdens.Estimate` of log p_t0(y) - log p_t(x) (stderr None when exact),
        ``nfe`` score evaluations per point; ``log_prob`` None (add log p_t(x) to the change where it is known).
    """
    check_sde(sde)
    hutch = check_divergence(divergence)
    solve = check_solve(solve)
    t, t0 = _check_times(sde, t, t0)
    front = front_door(score, sde, x, key=key, key_required=hutch is not None, times=probe_times(sde, t0, t),
                       batch_size=batch_size)
    keys = front.point_keys() if hutch is not None else None
    y, change, nfe = _hd(front, sde, front.x, keys, t, t0, solve, hutch)
    return Samples(front.unflatten(y), None, nfe, start=front.unflatten(front.x), log_prob_change=change)


def hd_sample(
    score: Callable,
    sde: LinearSDE,
    key: PRNGKeyArray,
    shape,
    *,
    t_threshold: float,
    sampler: str = "ode",
    n_steps: int = 1000,
    t0: float = 1e-5,
    divergence: Divergence = "exact",
    solve: Optional[SolveOptions] = None,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Samples:
    """High-density sampling (Karczewski et al. 2025, Alg. 1): x_T from the prior, x_t at ``t_threshold`` by the
    PF-ODE (``sampler="ode"``, Song et al. 2021b eq. 6) or the reverse SDE (``"sde"``, Euler-Maruyama with
    ``n_steps`` over [t_threshold, T]), then the HD-ODE (their eq. 18) from t_threshold to ``t0``. Larger thresholds
    give higher density and less diversity (their Fig. 6).

    Arguments:
        score, sde: the score and its SDE.
        key: PRNG key.
        shape: (n, *event_shape).
        t_threshold: the time where the HD-ODE starts, in (t0, T].
        sampler: ``"ode"`` or ``"sde"`` for the first stage; n_steps: its Euler-Maruyama steps for ``"sde"``.
        t0, divergence, solve, batch_size: as :func:`hd_ode`.

    Returns:
        :class:`diffdens.Samples`: ``x`` the high-density samples y, ``start`` the x_t they came from,
        ``log_prob_change`` the :class:`diffdens.Estimate` of log p_t0(y) - log p_t(x_t), ``nfe`` the score
        evaluations of both stages per sample, and ``log_prob`` = log p_t0(y) under the model where log p_t(x_t) is
        known: with ``sampler="ode"`` (the PF-ODE carries it from the prior) or ``t_threshold = T`` (the prior
        itself), with ``log_prob_stderr`` from Hutchinson probes; None after the reverse SDE.
    """
    check_sde(sde)
    check_option(sampler, SAMPLERS, "sampler")
    n_steps = check_positive_int(n_steps, "n_steps")
    hutch = check_divergence(divergence)
    solve = check_solve(solve)
    t_threshold, t0 = _check_times(sde, t_threshold, t0, "t_threshold")
    front = front_door(score, sde, shape=shape, key=key, key_required=True, times=probe_times(sde, t0),
                       batch_size=batch_size)
    n = front.n
    k_x, k_h = jax.random.split(front.key)
    x_T = sde.prior_sample(k_x, (n, front.dim)).astype(front.dtype)
    log_p_t = None
    nfe_first = None
    if t_threshold == float(sde.T):
        x_t, log_p_t, nfe_first = x_T, sde.prior_log_prob(x_T), jnp.zeros((n,), jnp.int32)
    elif sampler == "ode":
        res, nfe_first = run_flow(front, sde, x_T, None, sde.T, t_threshold, solve, kind="pf", what="PF-ODE")
        x_t, log_p_t = res.x, sde.prior_log_prob(x_T) + res.change
    else:
        out = reverse_sde_sample(score, sde, k_x, (n,) + tuple(front.event_shape), t0=t_threshold, n_steps=n_steps,
                                 batch_size=batch_size)
        x_t, nfe_first = jnp.reshape(out.x, (n, -1)), out.nfe
    keys = front.point_keys(k_h) if hutch is not None else None
    y, change, nfe_hd = _hd(front, sde, x_t, keys, t_threshold, t0, solve, hutch)
    nfe = None if nfe_first is None or nfe_hd is None else nfe_first + nfe_hd
    log_prob = None if log_p_t is None else log_p_t + change.value
    stderr = None if log_p_t is None else change.stderr
    return Samples(front.unflatten(y), log_prob, nfe, log_prob_stderr=stderr, start=front.unflatten(x_t),
                   log_prob_change=change)
