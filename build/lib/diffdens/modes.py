"""Where the density is highest: the mode of the denoising distribution p(x_s | x_t).

``004_720dbaeb92b913c7.txt`` (Karczewski et al., *Diffusion models as cartoonists*) Sec. 4:

* Thm. 5, eq. 16 (proof App. H): the mode y_s of p(x_s | x_t), when it moves smoothly, solves
  dy/ds = f y - g^2 s(y, s) - g^2/2 A^{-1} grad Laplacian log p_s(y), A = Hessian log p_s - psi(s) I.
* Remark 1, eq. 18 (App. I): dropping the third-order term gives the high-density ODE (HD-ODE)
  dy/ds = f y - g^2 s(y, s), exact for Gaussian data up to O(e^{-lambda_max}).
* Lemma 1, eq. 22: log p_s(y_s) along the HD-ODE, d/ds log p_s(y_s) = -f D + g^2/2 div s - g^2/2 |s|^2.
* Alg. 1: high-density sampling, x_t from the model at a threshold t, then the HD-ODE down to ~0.

All time integration uses diffrax (Tsit5, adaptive steps); time runs backwards from t to ``t_end``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple, Optional

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import (as_float_array, check_finite, check_option, check_positive, check_positive_int,
                      check_shape, check_t0, check_time)
from .estimate import Estimate, make_probes, value_and_divergence
from .sde import LinearSDE, check_sde

DIVERGENCES = ("exact", "hutchinson")
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
    x_s = as_float_array(x_s, "x_s")
    x_t = as_float_array(x_t, "x_t")
    ft, gt2 = transition_coefficients(sde, s, t)
    d = x_s.shape[-1]
    log_kernel = -0.5 * jnp.sum((x_t - ft * x_s) ** 2, axis=-1) / gt2 - 0.5 * d * jnp.log(2 * jnp.pi * gt2)
    return log_kernel + log_prob(x_s, s) - log_prob(x_t, t)


# --- Thm. 5: the exact mode-tracking ODE ----------------------------------------------------------------------
def _mode_vector_field(score, sde, t):
    """Right-hand side of eq. 16 for one point y (D,) at time s, for the conditioning time t."""

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


@partial(jax.jit, static_argnames=("score", "sde", "rtol", "atol", "max_steps"))
def _mode_batch(score, sde, x, t, t_end, ts, rtol, atol, max_steps):
    def one(x0):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_mode_vector_field(score, sde, t)), diffrax.Tsit5(), t, t_end, None, x0,
            saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps, throw=False,
        )
        return sol.ys, sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful

    return jax.vmap(one)(x)


def _check_start_end(sde, t, t_end):
    t = float(check_time(t, "t", lo=0.0, hi=float(sde.T), open_lo=True))
    t_end = float(check_time(t_end, "t_end", lo=0.0, hi=float(sde.T), open_lo=True))
    if not t_end < t:
        raise ValueError(f"t_end must be smaller than t, got t_end={t_end}, t={t}")
    return t, t_end


def _points(x, name):
    """(n, D) from (D,) or (n, D); returns (x2d, was_single)."""
    x = as_float_array(x, name)
    if x.ndim not in (1, 2) or x.shape[-1] < 1 or (x.ndim == 2 and x.shape[0] < 1):
        raise ValueError(f"{name} must have shape (D,) or (n, D), got shape {x.shape}")
    check_finite(x, name)
    return (x[None] if x.ndim == 1 else x), x.ndim == 1


def _solved(ok, steps, max_steps, what):
    if not bool(jnp.all(ok)):
        bad = np.flatnonzero(~np.asarray(ok))
        raise RuntimeError(f"{what} solve failed (max_steps={max_steps} reached, or the mode curve is not smooth) "
                           f"for points {bad[:10].tolist()}; raise max_steps, loosen rtol/atol or stop earlier")
    return 6 * steps + 1


def mode_tracking_ode(
    score: Callable,
    sde: LinearSDE,
    x_t: Float[Array, "*n D"],
    t: float,
    *,
    save_at=None,
    t_end: float = 1e-5,
    rtol: float = 1e-7,
    atol: float = 1e-7,
    max_dim: int = 64,
    max_steps: int = 4096,
):
    """The mode y_s of p(x_s | x_t) for s from t down to ``t_end`` (``004_720dbaeb92b913c7.txt`` Thm. 5, eq. 16).

    Exact when the mode moves smoothly (App. H); the Hessian (D JVPs), the gradient of the Laplacian (autodiff) and
    a D x D linear solve per evaluation make it a low-D tool (App. K): D > ``max_dim`` raises, use :func:`hd_ode`.
    x_t of shape (D,) or (n, D). ``save_at``: times in [t_end, t] (default: t_end only). Returns (ts, ys), ts
    decreasing, ys of shape (len(ts), D) or (n, len(ts), D). A failed solve raises RuntimeError.
    """
    check_sde(sde)
    x, single = _points(x_t, "x_t")
    max_dim = check_positive_int(max_dim, "max_dim")
    if x.shape[-1] > max_dim:
        raise ValueError(f"x_t has dimension D={x.shape[-1]} > max_dim={max_dim}: exact mode tracking needs a D x D "
                         "Hessian and a linear solve per step (App. K); use hd_ode for high-dimensional data")
    t, t_end = _check_start_end(sde, t, t_end)
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    max_steps = check_positive_int(max_steps, "max_steps")
    if save_at is None:
        ts = np.array([t_end])
    else:
        ts = np.atleast_1d(np.asarray(save_at, dtype=np.float64))
        if ts.ndim != 1 or not np.all(np.isfinite(ts)):
            raise ValueError(f"save_at must be a finite 1-D array of times, got shape {ts.shape}")
        if np.any(ts < t_end) or np.any(ts > t):
            raise ValueError(f"save_at must lie in [t_end, t] = [{t_end}, {t}], got ({ts.min()}, {ts.max()})")
        ts = np.sort(ts)[::-1]
    ts = jnp.asarray(ts, dtype=x.dtype)
    ys, steps, ok = _mode_batch(score, sde, x, t, t_end, ts, float(rtol), float(atol), max_steps)
    _solved(ok, steps, max_steps, "mode-tracking ODE")
    return ts, (ys[0] if single else ys)


# --- Remark 1 + Lemma 1: the HD-ODE with its log-density ------------------------------------------------------
def _hd_solve(score, sde, x, probes, t_start, t_end, rtol, atol, max_steps):
    d = x.shape[-1]

    def vf(s, y, _):
        yy, _ = y
        sc, div = value_and_divergence(lambda z: score(z, s), yy, probes)
        f, g2 = sde.f(s), sde.g2(s)
        return f * yy - g2 * sc, -f * d + 0.5 * g2 * div - 0.5 * g2 * jnp.sum(sc**2)  # eqs. 18 and 22

    y0 = (x, jnp.zeros(() if probes is None else (probes.shape[0],), x.dtype))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), diffrax.Tsit5(), t_start, t_end, None, y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps, throw=False,
    )
    yT, delta = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    return yT, delta, sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful


@partial(jax.jit, static_argnames=("score", "sde", "rtol", "atol", "max_steps"))
def _hd_batch(score, sde, x, probes, t_start, t_end, rtol, atol, max_steps):
    fn = lambda xx, pp: _hd_solve(score, sde, xx, pp, t_start, t_end, rtol, atol, max_steps)
    if probes is None:
        return jax.vmap(lambda xx: fn(xx, None))(x)
    return jax.vmap(fn)(x, probes)


def hd_ode(
    score: Callable,
    sde: LinearSDE,
    x_t: Float[Array, "n D"],
    t: float,
    *,
    key: Optional[PRNGKeyArray] = None,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    t_end: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
):
    """The high-density ODE from x_t at time t down to ``t_end`` (``004_720dbaeb92b913c7.txt`` Remark 1, eq. 18),
    with log p_{t_end}(y) - log p_t(x_t) carried along by the general change of variables (Lemma 1, eq. 22).

    Returns (y, log_p_change): y (n, D); log_p_change an :class:`Estimate` with per-point value, stderr (0 for
    divergence="exact", the spread over ``n_probes`` fixed Hutchinson probes otherwise) and nfe.
    """
    check_sde(sde)
    x = as_float_array(x_t, "x_t")
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x_t must have shape (n, D), got shape {x.shape}")
    check_finite(x, "x_t")
    t, t_end = _check_start_end(sde, t, t_end)
    check_option(divergence, DIVERGENCES, "divergence")
    check_option(probe, ("rademacher", "gaussian"), "probe")
    n_probes = check_positive_int(n_probes, "n_probes")
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    max_steps = check_positive_int(max_steps, "max_steps")
    if divergence == "hutchinson" and key is None:
        raise ValueError("key is required when divergence='hutchinson'")
    n, d = x.shape
    probes = None
    if divergence == "hutchinson":
        probes = jax.vmap(lambda k: make_probes(k, n_probes, d, probe, x.dtype))(jax.random.split(key, n))
    y, delta, steps, ok = _hd_batch(score, sde, x, probes, t, t_end, float(rtol), float(atol), max_steps)
    nfe = _solved(ok, steps, max_steps, "HD-ODE")
    if divergence == "exact":
        return y, Estimate(delta, jnp.zeros_like(delta), nfe)
    est = Estimate.from_samples(delta, nfe=nfe)
    return y, est


class HDSamples(NamedTuple):
    """Output of :func:`hd_sample`: the high-density samples y (n, D), the noisy starts x_t (n, D) and the
    log-density change log p_{t_end}(y) - log p_t(x_t) along the HD-ODE (an :class:`Estimate`)."""

    y: Float[Array, "n D"]
    x_t: Float[Array, "n D"]
    log_p_change: Estimate


def hd_sample(
    score: Callable,
    sde: LinearSDE,
    key: PRNGKeyArray,
    shape,
    t_threshold: float,
    *,
    sampler: str = "ode",
    n_steps: int = 1000,
    t_end: float = 1e-5,
    divergence: str = "exact",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 4096,
) -> HDSamples:
    """High-density sampling (``004_720dbaeb92b913c7.txt`` Alg. 1): x_T from the prior, x_t at ``t_threshold`` by
    the PF-ODE (``sampler="ode"``, eq. 6) or the reverse SDE (``"sde"``, Euler-Maruyama with ``n_steps`` over
    [t_threshold, T]), then the HD-ODE (eq. 18) from t_threshold to ``t_end``. Larger thresholds give higher
    density and less diversity (Fig. 6)."""
    check_sde(sde)
    n, d = check_shape(shape)
    check_option(sampler, SAMPLERS, "sampler")
    check_time(t_threshold, "t_threshold", lo=0.0, hi=float(sde.T), open_lo=True)
    t_threshold = float(t_threshold)
    _check_start_end(sde, t_threshold, t_end)
    k_x, k_h = jax.random.split(key)
    if t_threshold == float(sde.T):
        x_t = sde.prior_sample(k_x, (n, d))
    elif sampler == "ode":
        from .ode import ode_sample

        x_t, _, _ = ode_sample(score, sde, k_x, (n, d), t0=check_t0(t_threshold, sde.T, "t_threshold"),
                               rtol=rtol, atol=atol, max_steps=max_steps)
    else:
        from .reverse import reverse_sde_sample

        x_t = reverse_sde_sample(score, sde, k_x, (n, d), t0=t_threshold, n_steps=n_steps)
    y, change = hd_ode(score, sde, x_t, t_threshold, key=k_h, divergence=divergence, t_end=t_end, rtol=rtol,
                       atol=atol, max_steps=max_steps)
    return HDSamples(y, x_t, change)
