"""Where the density is highest: the mode of the denoising distribution p(x_s | x_t).

``004_720dbaeb92b913c7.txt`` (Karczewski et al., *Diffusion models as cartoonists*) Sec. 4:

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

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import as_float_array, check_key, check_option, check_points, check_positive_int, check_real, \
    check_shape, check_t0, check_time
from ._engine import check_batch_size, check_score, map_points, point_keys, probe_score, traced_score
from .estimate import Estimate, SamplePath, Samples
from .flow import (DEFAULT_BATCH_SIZE, DIVERGENCES, check_divergence,  # noqa: F401 (DIVERGENCES re-exported)
                   check_solution, check_solve_options, flow_drift,
                   probe_times, run_flow, solve_ode)
from .sde import LinearSDE, check_sde

SAMPLERS = ("ode", "sde")


# --- the denoising distribution -------------------------------------------------------------------------------
def transition_coefficients(sde: LinearSDE, s, t):
    """(f~, g~^2) with p(x_t | x_s) = N(f~ x_s, g~^2 I) for s < t (``004_720dbaeb92b913c7.txt`` eq. 94):
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
    """log p(x_s | x_t) = log N(x_t; f~ x_s, g~^2 I) + log p_s(x_s) - log p_t(x_t) (Bayes, eqs. 20 and 94), for
    s < t, given an exact ``log_prob(x, t)`` (e.g. :meth:`DiffusedMixture.log_prob`). Broadcasts over x_s."""
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


@eqx.filter_jit
def _mode_kernel(score, sde, x, t, t0, ts, rtol, atol, *, solver, max_steps, batch_size):
    def one(x0):
        ys, y_last, t_last, steps, ok = solve_ode(mode_vector_field(score, sde, t), x0, t, t0, rtol, atol,
                                                  solver=solver, max_steps=max_steps, ts=ts)
        return ys, y_last, t_last, ok

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
    x: Float[Array, "n D"],
    t: float,
    *,
    save_at=None,
    t0: float = 1e-5,
    rtol: float = 1e-7,
    atol: float = 1e-7,
    max_dim: int = 64,
    solver=None,
    max_steps: int = 4096,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> SamplePath:
    """The mode y_s of p(x_s | x_t = x) for s from t down to ``t0`` (``004_720dbaeb92b913c7.txt`` Thm. 5, eq. 16).

    Exact when the mode moves smoothly (App. H); the Hessian (D JVPs), the gradient of the Laplacian (autodiff) and
    a D x D linear solve per evaluation make it a low-D tool (App. K): D > ``max_dim`` raises, use :func:`hd_ode`.
    x of shape (n, D). ``save_at``: times in [t0, t] (default: t0 only). Returns :class:`SamplePath` (ts, x):
    ts (m,) decreasing, x (n, m, D). A score returning NaN/inf raises ValueError (saying at which t); a solve that
    runs out of ``max_steps`` (or a mode curve that is not smooth) raises RuntimeError.
    """
    check_sde(sde)
    x = check_points(x, "x")
    max_dim = check_positive_int(max_dim, "max_dim")
    if x.shape[-1] > max_dim:
        raise ValueError(f"x has dimension D={x.shape[-1]} > max_dim={max_dim}: exact mode tracking needs a D x D "
                         "Hessian and a linear solve per step (App. K); use hd_ode for high-dimensional data")
    t, t0 = _check_times(sde, t, t0)
    opts = check_solve_options(rtol, atol, max_steps, solver)
    batch_size = check_batch_size(batch_size)
    if save_at is None:
        ts = np.array([t0])
    else:
        ts = np.atleast_1d(np.asarray(save_at, dtype=np.float64))
        if ts.ndim != 1 or not np.all(np.isfinite(ts)):
            raise ValueError(f"save_at must be a finite 1-D array of times, got shape {ts.shape}")
        if np.any(ts < t0) or np.any(ts > t):
            raise ValueError(f"save_at must lie in [t0, t] = [{t0}, {t}], got ({ts.min()}, {ts.max()})")
        ts = np.sort(ts)[::-1]
    score = traced_score(score)
    check_score(score, x)
    probe_score(score, x, probe_times(t0, t))
    dt = x.dtype
    ts = jnp.asarray(ts, dtype=dt)
    ys, y_last, t_last, ok = _mode_kernel(score, sde, x, jnp.asarray(t, dt), jnp.asarray(t0, dt), ts,
                                          jnp.asarray(opts.rtol, dt), jnp.asarray(opts.atol, dt),
                                          solver=opts.solver, max_steps=opts.max_steps, batch_size=batch_size)
    check_solution(ok, ys, x, y_last, t_last, score, flow_drift(score, sde, "hd"), t, t0, opts.max_steps,
                   "mode-tracking ODE")
    return SamplePath(ts, ys)


# --- Remark 1 + Lemma 1: the HD-ODE with its log-density ------------------------------------------------------
def _change_estimate(change, divergence, nfe) -> Estimate:
    if divergence == "exact":
        return Estimate(change, None, nfe)
    return Estimate.from_samples(change, nfe=nfe)


def _hd(score, sde, x, keys, t, t0, opts, divergence, n_probes, probe, batch_size):
    """The unchecked HD-ODE stage: (y, change Estimate, nfe)."""
    res, nfe = run_flow(score, sde, x, keys, t, t0, opts, kind="hd", divergence=divergence, n_probes=n_probes,
                        probe=probe, batch_size=batch_size, what="HD-ODE")
    return res.x, _change_estimate(res.change, divergence, nfe), nfe


def hd_ode(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    t: float,
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
) -> Samples:
    """The high-density ODE from x at time t down to ``t0`` (``004_720dbaeb92b913c7.txt`` Remark 1, eq. 18), with
    log p_t0(y) - log p_t(x) carried along by the general change of variables (Lemma 1, eq. 22).

    Returns :class:`Samples` like every sampler: ``x`` the end points y (n, D), ``start`` the given x,
    ``log_prob_change`` an :class:`Estimate` of log p_t0(y) - log p_t(x) (stderr None for ``divergence="exact"``,
    the spread over ``n_probes`` fixed Hutchinson probes otherwise; needs ``key``), ``nfe`` score evaluations per
    point; ``log_prob`` is None (log p_t(x) is not known here: add it to the change when it is).
    """
    check_sde(sde)
    x = check_points(x, "x")
    t, t0 = _check_times(sde, t, t0)
    n_probes, key = check_divergence(divergence, probe, n_probes, key)
    opts = check_solve_options(rtol, atol, max_steps, solver)
    batch_size = check_batch_size(batch_size)
    score = traced_score(score)
    check_score(score, x)
    probe_score(score, x, probe_times(t0, t))
    keys = point_keys(key, x.shape[0]) if divergence == "hutchinson" else None
    y, change, nfe = _hd(score, sde, x, keys, t, t0, opts, divergence, n_probes, probe, batch_size)
    return Samples(y, None, nfe, start=x, log_prob_change=change)


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
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver=None,
    max_steps: int = 4096,
    batch_size: Optional[int] = DEFAULT_BATCH_SIZE,
) -> Samples:
    """High-density sampling (``004_720dbaeb92b913c7.txt`` Alg. 1): x_T from the prior, x_t at ``t_threshold`` by
    the PF-ODE (``sampler="ode"``, eq. 6) or the reverse SDE (``"sde"``, Euler-Maruyama with ``n_steps`` over
    [t_threshold, T]), then the HD-ODE (eq. 18) from t_threshold to ``t0``. Larger thresholds give higher density
    and less diversity (Fig. 6).

    Returns :class:`Samples`: ``x`` the high-density samples y, ``start`` the x_t they came from,
    ``log_prob_change`` the :class:`Estimate` of log p_t0(y) - log p_t(x_t), ``nfe`` the score evaluations of both
    stages per sample, and ``log_prob`` = log p_t0(y) under the model where log p_t(x_t) is known: with
    ``sampler="ode"`` (the PF-ODE carries it from the prior) or ``t_threshold = T`` (the prior itself), with
    ``log_prob_stderr`` from Hutchinson probes; None after the reverse SDE.
    """
    check_sde(sde)
    key = check_key(key)
    n, d = check_shape(shape)
    check_option(sampler, SAMPLERS, "sampler")
    n_steps = check_positive_int(n_steps, "n_steps")
    t_threshold, t0 = _check_times(sde, t_threshold, t0, "t_threshold")
    n_probes, _ = check_divergence(divergence, probe, n_probes, key)
    opts = check_solve_options(rtol, atol, max_steps, solver)
    batch_size = check_batch_size(batch_size)
    score = traced_score(score)
    k_x, k_h = jax.random.split(key)
    x_T = sde.prior_sample(k_x, (n, d))
    check_score(score, x_T)
    probe_score(score, x_T, probe_times(t0, sde.T))
    log_p_t = None
    nfe_first = None
    if t_threshold == float(sde.T):
        x_t, log_p_t, nfe_first = x_T, sde.prior_log_prob(x_T), jnp.zeros((n,), jnp.int32)
    elif sampler == "ode":
        res, nfe_first = run_flow(score, sde, x_T, None, sde.T, t_threshold, opts, kind="pf", batch_size=batch_size,
                                  what="PF-ODE")
        x_t, log_p_t = res.x, sde.prior_log_prob(x_T) + res.change
    else:
        from .reverse import reverse_sde_sample

        out = reverse_sde_sample(score, sde, k_x, (n, d), t0=t_threshold, n_steps=n_steps)
        x_t, nfe_first = out.x, out.nfe
    keys = point_keys(k_h, n) if divergence == "hutchinson" else None
    y, change, nfe_hd = _hd(score, sde, x_t, keys, t_threshold, t0, opts, divergence, n_probes, probe, batch_size)
    nfe = None if nfe_first is None or nfe_hd is None else nfe_first + nfe_hd
    log_prob = None if log_p_t is None else log_p_t + change.value
    stderr = None if log_p_t is None else change.stderr
    return Samples(y, log_prob, nfe, log_prob_stderr=stderr, start=x_t, log_prob_change=change)
