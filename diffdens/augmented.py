"""Augmented SDEs that carry the log-density along (Karczewski et al. 2025, eq. 7 and Thm. 1; Thm. 4, eq. 10).

Derivation (Ito in reverse time, step h > 0 from t to t - h, s = score(x, t), linear drift f(t) x):
  x <- x - (f x - g^2 s) h + g sqrt(h) z
  r <- r + (D f + g^2 |s|^2 / 2) h + g sqrt(h) s.z
The Laplacian terms (Fokker-Planck 1/2 g^2 tr H and the Ito correction -1/2 g^2 tr H h) cancel only in
reverse time, so no divergence is needed.  Euler-Maruyama on diffrax, the same Brownian increment for x and r, and
one score evaluation per step (a single diffrax term computes drift and diffusion from one call).

Every function here goes through the package's one front door (``diffdens._engine.front_door``): arguments
validated eagerly naming the argument, the score and the prior traced pytrees on flat points, one compiled kernel
over the points in chunks of ``batch_size``, and a non-finite result an error (under jit/vmap/grad an
``equinox.error_if``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._checks import check_option, check_positive_int, check_shape, check_t0
from ._engine import Front, GridBrownianPath, diagnose_score, front_door, map_points, probe_times
from .elbo import elbo
from .estimate import Estimate, SamplePath, Samples, make_probes, value_and_divergence
from .ode import ode_log_prob
from .options import Divergence, check_divergence
from .sde import LinearSDE, check_sde

__all__ = ["sample_with_log_prob", "augmented_forward", "sde_bias_diagnostics", "BiasDiagnostics",
           "ForwardAugmented"]

BATCH_SIZE = 1024  # points per chunk by default: peak memory stays far below 2 GB for D <= 64 (Milstein included)



# --------------------------------------------------------------------------------------------------------------
# after the kernels


def _check_result(front: Front, values, lp, x_start, sde, t0, reverse: bool = True):
    """``values`` (n, ...) checked finite; eagerly, blame the prior log-density if it is non-finite at the start of
    the failing point, else the score (at the first time on the path where it is non-finite)."""
    times = np.linspace(float(sde.T), t0, 33) if reverse else np.linspace(t0, float(sde.T), 33)
    score_diag = diagnose_score(front.score, x_start, times)

    def diagnose(i):
        if reverse and not np.isfinite(float(lp(jnp.asarray(x_start)[i]))):
            raise ValueError(f"prior_log_prob returned a non-finite value at the start x_T of sample {i}")
        score_diag(i)

    return front.finite(values, diagnose)


# --------------------------------------------------------------------------------------------------------------
# the augmented reverse SDE


class _AugmentedTerm(diffrax.AbstractTerm):
    """y = (x, r) in reverse time tau = T - t, driven by (d tau, dW): drift [-(f x - g^2 s); D f + g^2 |s|^2 / 2],
    diffusion [g I; g s^T]. One score call per vector-field evaluation."""

    score: Callable
    bm: diffrax.AbstractBrownianPath
    sde: LinearSDE = eqx.field(static=True)

    def vf(self, tau, y, args):
        T = float(self.sde.T)
        t = T - tau
        d = y.shape[0] - 1
        x = y[:d]
        s = self.score(x, t)
        f, g2 = self.sde.f(t), self.sde.g2(t)
        drift = jnp.concatenate([-(f * x - g2 * s), (d * f + 0.5 * g2 * jnp.sum(s * s))[None]])
        return drift, jnp.sqrt(g2), s

    def contr(self, t0, t1, **kwargs):
        return t1 - t0, self.bm.evaluate(t0, t1)

    def prod(self, vf, control):
        drift, g, s = vf
        dt, dw = control
        return drift * dt + jnp.concatenate([g * dw, (g * jnp.dot(s, dw))[None]])


def _euler_one(score, lp, sde, n_steps, x, k, t0, taus):
    d = x.shape[-1]
    T = float(sde.T)
    bm = GridBrownianPath(k, 0.0, (T - t0) / n_steps, n_steps, (d,), x.dtype)  # reverse time tau = T - t
    y0 = jnp.concatenate([x, jnp.asarray(lp(x), x.dtype)[None]])
    saveat = diffrax.SaveAt(t1=True) if taus is None else diffrax.SaveAt(t1=True, ts=taus)
    sol = diffrax.diffeqsolve(_AugmentedTerm(score, bm, sde), diffrax.Euler(), 0.0, T - t0, (T - t0) / n_steps, y0,
                              saveat=saveat, max_steps=n_steps + 2, adjoint=diffrax.DirectAdjoint())
    y = sol.ys[-1]
    nfe = sol.stats["num_steps"]  # Euler evaluates the (single) vector field once per step
    path = None if taus is None else sol.ys[:-1]
    return y[:d], y[d], nfe, path


def _milstein_one(score, lp, sde, n_steps, x, k, t0):
    """Milstein steps in reverse time on the uniform grid of the Euler scheme (a plain scan: diffrax's Milstein
    solvers take diagonal noise only). Score evaluations: one linearisation and D + 1 JVPs per step."""
    d = x.shape[-1]
    T = float(sde.T)
    h = (T - t0) / n_steps
    ts = T - h * jnp.arange(n_steps, dtype=x.dtype)
    eye = jnp.eye(d, dtype=x.dtype)

    def step(c, inp):
        x, r = c
        t, kk = inp
        zi = jax.random.normal(kk, (d,), x.dtype)
        f, g2 = sde.f(t), sde.g2(t)
        s, jvp = jax.linearize(lambda y: score(y, t), x)
        z_h_z, tr = jnp.dot(zi, jvp(zi)), jnp.trace(jax.vmap(jvp)(eye))
        dw = jnp.sqrt(h) * zi
        x_new = x - (f * x - g2 * s) * h + jnp.sqrt(g2) * dw
        r_new = r + (d * f + 0.5 * g2 * jnp.sum(s * s)) * h + jnp.sqrt(g2) * jnp.dot(s, dw)
        return (x_new, r_new + 0.5 * g2 * h * (z_h_z - tr)), None

    (x0, r0), _ = jax.lax.scan(step, (x, jnp.asarray(lp(x), x.dtype)), (ts, jax.random.split(k, n_steps)))
    return x0, r0, jnp.asarray(n_steps * (d + 2), jnp.int32), None


@eqx.filter_jit
def _augmented_kernel(score, lp, sde, x_T, keys, t0, taus, n_steps, scheme, batch_size):
    if scheme == "milstein":
        fn = lambda x, k: _milstein_one(score, lp, sde, n_steps, x, k, t0)  # noqa: E731
    else:
        fn = lambda x, k: _euler_one(score, lp, sde, n_steps, x, k, t0, taus)  # noqa: E731
    return map_points(fn, (x_T, keys), batch_size)


def _check_save_at(save_at, scheme, t0, T, dtype):
    if save_at is None:
        return None
    if scheme != "euler":
        raise ValueError("save_at is supported with scheme='euler' only")
    a = np.asarray(save_at, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] < 1:
        raise ValueError(f"save_at must be a non-empty 1-D array of times, got shape {a.shape}")
    tol = 4 * float(np.finfo(np.float32).eps) * T  # times given in float32 may round just outside [t0, T]
    if not np.all(np.isfinite(a)) or np.any(a < t0 - tol) or np.any(a > T + tol) or np.any(np.diff(a) >= 0):
        raise ValueError(f"save_at must be strictly decreasing times in [t0={t0}, T={T}]")
    return jnp.asarray(np.clip(a, t0, T), dtype)


def _sample_augmented(front: Front, lp, sde, key, n_steps, t0, scheme, save_at) -> Samples:
    """The unchecked sampler behind :func:`sample_with_log_prob` (arguments already through the front door)."""
    n, d = front.n, front.dim
    k_prior, k_paths = jax.random.split(key)
    x_T = sde.prior_sample(k_prior, (n, d)).astype(front.dtype)
    taus = None if save_at is None else float(sde.T) - save_at
    x0, r0, nfe, ys = _augmented_kernel(front.score, lp, sde, x_T, front.point_keys(k_paths),
                                        jnp.asarray(t0, x_T.dtype), taus, n_steps, scheme, front.batch_size)
    check = jnp.concatenate([x0, r0[:, None]] + ([] if ys is None else [ys.reshape(n, -1)]), axis=1)
    check = _check_result(front, check, lp, x_T, sde, t0)
    x0, r0 = check[:, :d], check[:, d]
    path = None if ys is None else SamplePath(save_at, front.unflatten(ys[..., :d]), ys[..., d])
    return Samples(front.unflatten(x0), r0, nfe, path=path)


def _prior(front: Front, sde):
    return sde.prior_log_prob if front.prior is None else front.prior


def sample_with_log_prob(score: Callable, sde: LinearSDE, key, shape, *, n_steps: int = 1000, t0: float = 1e-5,
                         prior_log_prob: Optional[Callable] = None, scheme: str = "euler", save_at=None,
                         batch_size: Optional[int] = BATCH_SIZE) -> Samples:
    """Sample x0 by the augmented reverse SDE, carrying r0 ~ log p0(x0) along (Karczewski et al. 2025, eq. 7,
    Thm. 1).

    ``scheme="euler"``: Euler-Maruyama on diffrax, one score evaluation per step, strong order 1/2 in r and weak
    order 1 (the mean of r0 - log p0(x0) is O(h)). ``scheme="milstein"``: adds the Milstein term
    g^2 h (z^T H z - tr H) / 2 to r (H = Jacobian of the score; the noise is commutative because H is symmetric, and
    x has additive noise so needs none), strong order 1 at the cost of D + 1 Jacobian-vector products per step; a
    plain scan, since diffrax's Milstein solvers take diagonal noise only.

    Arguments:
        score, sde: the score and its SDE.
        key: PRNG key.
        shape: (n, *event_shape).
        n_steps: steps from T to t0.
        t0: the end time in (0, T).
        prior_log_prob: log p_T of one point (a scalar; default ``sde.prior_log_prob``).
        scheme: ``"euler"`` or ``"milstein"``.
        save_at: strictly decreasing times in [t0, T] (Euler only) at which to save the path.
        batch_size: points per compiled chunk (None: all at once); the result does not depend on it.

    Returns:
        :class:`diffdens.Samples` with ``x`` (n, *event_shape), ``log_prob`` = r0 (n,), ``nfe`` (n,) score
        evaluations per sample (each Jacobian-vector product counted as one), and ``path`` = SamplePath(ts,
        x (n, m, *event_shape), log_prob (n, m)) when ``save_at`` is given (their Fig. 3).
    """
    check_sde(sde)
    n_steps = check_positive_int(n_steps, "n_steps")
    t0 = check_t0(t0, sde.T)
    check_option(scheme, ("euler", "milstein"), "scheme")
    save_at = _check_save_at(save_at, scheme, t0, float(sde.T), jnp.result_type(float))
    front = front_door(score, sde, shape=shape, key=key, key_required=True, times=probe_times(sde, t0),
                       prior_log_prob=prior_log_prob, batch_size=batch_size)
    return _sample_augmented(front, _prior(front, sde), sde, front.key, n_steps, t0, scheme, save_at)


# --------------------------------------------------------------------------------------------------------------
# the augmented forward SDE


class ForwardAugmented(NamedTuple):
    """:func:`augmented_forward`'s result, per point (Karczewski et al. 2025, Thm. 4, eqs. 11-12).

    Fields:
        x_T: (n, *event_shape) the end of the forward path.
        omega: (n,) the carried omega_T.
        log_prob: (n,) prior_log_prob(x_T) - omega_T, a one-path estimate whose mean is a lower bound on
            log p_0^SDE(x) (equal for the true score).
        nfe: (n,) score evaluations per point (each Jacobian-vector product counted as one).
    """

    x_T: Array
    omega: Float[Array, " n"]
    log_prob: Float[Array, " n"]
    nfe: Array


def _forward_one(score, lp, sde, n_steps, hutch, x, k, t0):
    d = x.shape[-1]
    ts = t0 + (sde.T - t0) * jnp.arange(n_steps + 1, dtype=x.dtype) / n_steps

    def step(c, inp):
        x, w = c
        t, t_next, kk = inp
        h = t_next - t
        kz, kv = jax.random.split(kk)
        v = None if hutch is None else make_probes(kv, hutch.n_probes, d, hutch.probe, x.dtype)
        s, div = value_and_divergence(lambda y: score(y, t), x, v)
        div = jnp.mean(div)
        f, g2 = sde.f(t), sde.g2(t)
        dw = jnp.sqrt(h) * jax.random.normal(kz, x.shape, x.dtype)
        x_new = x + f * x * h + jnp.sqrt(g2) * dw
        w_new = w + (-f * d + g2 * (0.5 * jnp.sum(s * s) + div)) * h + jnp.sqrt(g2) * jnp.dot(s, dw)
        return (x_new, w_new), None

    (xT, w), _ = jax.lax.scan(step, (x, jnp.zeros((), x.dtype)), (ts[:-1], ts[1:], jax.random.split(k, n_steps)))
    per_step = 1 + (d if hutch is None else hutch.n_probes)  # the linearisation and the JVPs of the divergence
    return xT, w, jnp.asarray(lp(xT), x.dtype) - w, jnp.asarray(n_steps * per_step, jnp.int32)


@eqx.filter_jit
def _forward_kernel(score, lp, sde, x, keys, t0, n_steps, hutch, batch_size):
    return map_points(lambda xi, k: _forward_one(score, lp, sde, n_steps, hutch, xi, k, t0), (x, keys),
                      batch_size)


def augmented_forward(score: Callable, sde: LinearSDE, x: Float[Array, "n *event"], *, key=None, t0: float = 1e-5,
                      n_steps: int = 1000, divergence: Divergence = "exact",
                      prior_log_prob: Optional[Callable] = None,
                      batch_size: Optional[int] = BATCH_SIZE) -> ForwardAugmented:
    """The augmented forward SDE (Karczewski et al. 2025, Thm. 4, eq. 10), Euler-Maruyama from t0 to T, one path
    per point of x.

    omega_T = log p_T^SDE(x_T) - log p_0^SDE(x) + Y with E[Y] >= 0 and = 0 for the true score (their eqs. 11-12),
    so ``log_prob`` = log p_T(x_T) - omega_T has mean <= log p_0^SDE(x), with equality for the true score.

    Arguments:
        score, sde: the score and its SDE.
        x: the points, shape (n, *event_shape).
        key: PRNG key (required).
        t0: the start time in (0, T).
        n_steps: Euler-Maruyama steps.
        divergence: ``"exact"`` (D JVPs per step) or :class:`diffdens.Hutchinson` (``n_probes`` probes per step).
        prior_log_prob: log p_T of one point (a scalar; default ``sde.prior_log_prob``).
        batch_size: points per compiled chunk; the result does not depend on it.

    Returns:
        :class:`ForwardAugmented` (x_T, omega, log_prob, nfe).
    """
    check_sde(sde)
    t0 = check_t0(t0, sde.T)
    n_steps = check_positive_int(n_steps, "n_steps")
    hutch = check_divergence(divergence)
    front = front_door(score, sde, x, key=key, key_required=True, times=probe_times(sde, t0),
                       prior_log_prob=prior_log_prob, batch_size=batch_size)
    lp = _prior(front, sde)
    x_T, omega, log_prob, nfe = _forward_kernel(front.score, lp, sde, front.x, front.point_keys(),
                                                jnp.asarray(t0, front.dtype), n_steps, hutch, front.batch_size)
    score_diag = diagnose_score(front.score, front.x, np.linspace(t0, float(sde.T), 33))

    def diagnose(i):
        if bool(jnp.isfinite(omega[i])) and bool(jnp.all(jnp.isfinite(x_T[i]))):
            raise ValueError(f"prior_log_prob returned a non-finite value at x_T of point {i}")
        score_diag(i)

    v = front.finite(jnp.concatenate([x_T, omega[:, None], log_prob[:, None]], axis=1), diagnose)
    d = front.dim
    return ForwardAugmented(front.unflatten(v[:, :d]), v[:, d], v[:, d + 1], nfe)


# --------------------------------------------------------------------------------------------------------------
# bias diagnostics


class BiasDiagnostics(NamedTuple):
    """:func:`sde_bias_diagnostics`'s result (Karczewski et al. 2025, eqs. 14-15): the three diagnostics, each a 0-d
    :class:`diffdens.Estimate` (mean over the samples, its standard error), and the per-sample values behind them,
    so that paired comparisons (:func:`diffdens.testing.compare_paired`) and extrapolations over step counts can be
    formed on the same samples.

    Fields:
        R: R = E[r0 - ELBO] >= 0, which bounds the bias of both r0 and the ELBO.
        R_upper: R^U, an upper bound on KL(p^SDE || p^ODE).
        R_lower: R^L, a lower bound on KL(p^SDE || p^ODE).
        samples: the augmented sampler's :class:`diffdens.Samples` (``x`` (n, *event_shape), ``log_prob`` = r0 (n,),
            ``nfe`` (n,)).
        elbo: (n,) the per-sample ELBO of ``samples.x``.
        log_prob_ode: (n,) the per-sample PF-ODE log-density of ``samples.x``.
    """

    R: Estimate
    R_upper: Estimate
    R_lower: Estimate
    samples: Samples
    elbo: Float[Array, " n"]
    log_prob_ode: Float[Array, " n"]


def sde_bias_diagnostics(score: Callable, sde: LinearSDE, key, shape, *, n_steps: int = 1000, t0: float = 1e-5,
                         n_times: int = 1000, ode_kwargs: Optional[dict] = None, scheme: str = "euler",
                         batch_size: Optional[int] = BATCH_SIZE) -> BiasDiagnostics:
    """R, R^U, R^L with standard errors over n samples (x0, r0) of the augmented reverse SDE (Karczewski et al.
    2025, eqs. 14-15).

    R and R^U hold r0, so they carry its O(h) discretization bias (weak order 1 for both schemes); R^L holds r0 only
    through the distribution of the samples. Calls with the same ``key`` at two step counts start sample i from the
    same x_T and use the same ELBO and PF-ODE keys, so per-sample Richardson combinations 2 v(h) - v(2h) of the
    returned values are independent across samples (an honest standard error from their spread) and remove the
    O(h) term. ``scheme="milstein"`` lowers r0's pathwise error (strong order 1 when the score's Jacobian is
    symmetric, as the Hessian of an exact log-density is; a learned network's is not, and the scheme then keeps
    only the symmetric part of the correction).

    Arguments:
        score, sde, key, shape, n_steps, t0, scheme, batch_size: as :func:`sample_with_log_prob` (n >= 2).
        n_times: time samples per point of :func:`diffdens.elbo` (its other defaults).
        ode_kwargs: keyword arguments of :func:`diffdens.ode_log_prob` (e.g. ``solve``, ``divergence``).

    Returns:
        :class:`BiasDiagnostics` (R, R_upper, R_lower, each a 0-d :class:`diffdens.Estimate`; samples, elbo,
        log_prob_ode per sample).
    """
    check_sde(sde)
    n_steps = check_positive_int(n_steps, "n_steps")
    t0 = check_t0(t0, sde.T)
    n_times = check_positive_int(n_times, "n_times")
    if ode_kwargs is not None and not isinstance(ode_kwargs, dict):
        raise TypeError(f"ode_kwargs must be a dict or None, got {type(ode_kwargs).__name__}")
    for bad in ("key", "t0", "x"):
        if ode_kwargs and bad in ode_kwargs:
            raise ValueError(f"ode_kwargs must not set {bad!r} (sde_bias_diagnostics sets it)")
    check_option(scheme, ("euler", "milstein"), "scheme")
    if check_shape(shape, "shape")[0] < 2:
        raise ValueError(f"shape must hold at least 2 samples for a standard error, got {shape}")
    front = front_door(score, sde, shape=shape, key=key, key_required=True, times=probe_times(sde, t0),
                       batch_size=batch_size)
    ks, ke, ko = jax.random.split(front.key, 3)
    smp = _sample_augmented(front, sde.prior_log_prob, sde, ks, n_steps, t0, scheme, None)
    lb = elbo(score, sde, smp.x, key=ke, n_times=n_times, t0=t0).value
    lode = ode_log_prob(score, sde, smp.x, key=ko, t0=t0, **(ode_kwargs or {})).value

    mean = Estimate.from_samples  # over the n samples (n >= 2 checked above)
    return BiasDiagnostics(mean(smp.log_prob - lb), mean(smp.log_prob - lode), mean(lb - lode), smp, lb, lode)
