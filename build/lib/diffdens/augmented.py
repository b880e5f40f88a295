"""Augmented reverse SDE: sample and carry the log-density along (004_720dbaeb92b913c7 eq. 7, Thm. 1).

Derivation (Ito in reverse time, step h > 0 from t to t - h, s = score(x, t), linear drift f(t) x):
  x <- x - (f x - g^2 s) h + g sqrt(h) z
  r <- r + (D f + g^2 |s|^2 / 2) h + g sqrt(h) s.z
The Laplacian terms (Fokker-Planck 1/2 g^2 tr H and the Ito correction -1/2 g^2 tr H h) cancel only in
reverse time, so no divergence is needed.  Euler-Maruyama on diffrax, the same Brownian increment for x and r.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from typing import NamedTuple

from ._checks import check_option, check_points, check_positive_int, check_shape, check_t0
from .estimate import Estimate, make_probes, value_and_divergence

__all__ = ["sample_with_log_prob", "augmented_forward", "sde_bias_diagnostics", "BiasDiagnostics"]


def sample_with_log_prob(score, sde, key, shape, *, n_steps=1000, t0=1e-5, prior_log_prob=None, scheme="euler",
                         save_at=None):
    """Sample x0 by the augmented reverse SDE and return (x0, r0), r0 ~ log p0(x0).

    ``scheme="euler"``: Euler-Maruyama on diffrax, one score call per step, strong order 1/2 in r.
    ``scheme="milstein"``: adds the Milstein term g^2 h (z^T H z - tr H) / 2 to r (H = Jacobian of the score; the
    noise is commutative because H is symmetric, and x has additive noise so needs none), strong order 1 at the cost
    of D + 1 Jacobian-vector products per step. diffrax's Milstein solvers take diagonal noise only, so this scheme is
    a plain scan. ``save_at`` (times in [t0, T], decreasing, Euler only): also return (xs, rs) of shapes
    (n, m, D) and (n, m), the trajectory and its running log-density (``004`` Fig. 3)."""
    n, D = check_shape(shape, "shape")
    n_steps = check_positive_int(n_steps, "n_steps")
    t0 = check_t0(t0, sde.T)
    check_option(scheme, ("euler", "milstein"), "scheme")
    lp = prior_log_prob if prior_log_prob is not None else sde.prior_log_prob
    k_prior, k_paths = jax.random.split(key)
    xT = sde.prior_sample(k_prior, (n, D))
    keys = jax.random.split(k_paths, n)
    if save_at is not None:
        if scheme != "euler":
            raise ValueError("save_at is supported with scheme='euler' only")
        save_at = jnp.asarray(save_at, dtype=xT.dtype)
        if save_at.ndim != 1 or save_at.shape[0] < 1:
            raise ValueError(f"save_at must be a non-empty 1-D array of times, got shape {save_at.shape}")
        if not bool(jnp.all((save_at >= t0) & (save_at <= sde.T))) or not bool(jnp.all(jnp.diff(save_at) < 0)):
            raise ValueError(f"save_at must be decreasing times in [t0={t0}, T={sde.T}]")
        x0, r0, ys = _reverse_augmented(score, sde, int(n_steps), float(t0), lp, xT, keys, sde.T - save_at)
        return x0, r0, (ys[..., :D], ys[..., D])
    if scheme == "milstein":
        return _reverse_milstein(score, sde, int(n_steps), float(t0), lp, xT, keys)
    x0, r0, _ = _reverse_augmented(score, sde, int(n_steps), float(t0), lp, xT, keys, None)
    return x0, r0


def _reverse_augmented_impl(score, sde, n_steps, t0, lp, xT, keys, taus):
    """diffrax Euler-Maruyama on y = (x, r) in tau = T - t, one Brownian motion driving both (diffusion [g I; g s^T])."""
    T = float(sde.T)
    D = xT.shape[-1]

    def drift(tau, y, _):
        t = T - tau
        x = y[:D]
        s = score(x, t)
        f, g2 = sde.f(t), sde.g2(t)
        return jnp.concatenate([-(f * x - g2 * s), (D * f + 0.5 * g2 * jnp.sum(s * s))[None]])

    def diffusion(tau, y, _):
        t = T - tau
        g = jnp.sqrt(sde.g2(t))
        return g * jnp.concatenate([jnp.eye(D, dtype=y.dtype), score(y[:D], t)[None, :]], axis=0)

    def one(x, k):
        bm = diffrax.UnsafeBrownianPath(shape=(D,), key=k)
        terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion, bm))
        y0 = jnp.concatenate([x, lp(x)[None]])
        saveat = diffrax.SaveAt(t1=True) if taus is None else diffrax.SaveAt(t1=True, ts=taus)
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, T - t0, (T - t0) / n_steps, y0, saveat=saveat,
                                  max_steps=n_steps + 2, adjoint=diffrax.DirectAdjoint())
        y = sol.ys[-1]
        return y[:D], y[D], (None if taus is None else sol.ys[:-1])

    return jax.vmap(one)(xT, keys)


_reverse_augmented = jax.jit(_reverse_augmented_impl, static_argnums=(0, 1, 2, 3, 4))


def _reverse_milstein_impl(score, sde, n_steps, t0, lp, xT, keys):
    """Milstein steps in reverse time on the uniform grid of the Euler scheme."""
    T = float(sde.T)
    D = xT.shape[-1]
    h = (T - t0) / n_steps
    ts = T - h * jnp.arange(n_steps, dtype=xT.dtype)
    eye = jnp.eye(D, dtype=xT.dtype)

    def one(x, k):
        z = jax.random.normal(k, (n_steps, D), xT.dtype)

        def step(c, inp):
            x, r = c
            t, zi = inp
            f, g2 = sde.f(t), sde.g2(t)
            s, jvp = jax.linearize(lambda y: score(y, t), x)
            z_h_z, tr = jnp.dot(zi, jvp(zi)), jnp.trace(jax.vmap(jvp)(eye))
            dw = jnp.sqrt(h) * zi
            x_new = x - (f * x - g2 * s) * h + jnp.sqrt(g2) * dw
            r_new = r + (D * f + 0.5 * g2 * jnp.sum(s * s)) * h + jnp.sqrt(g2) * jnp.dot(s, dw)
            return (x_new, r_new + 0.5 * g2 * h * (z_h_z - tr)), None

        (x0, r0), _ = jax.lax.scan(step, (x, lp(x)), (ts, z))
        return x0, r0

    return jax.vmap(one)(xT, keys)


_reverse_milstein = jax.jit(_reverse_milstein_impl, static_argnums=(0, 1, 2, 3, 4))


def augmented_forward(score, sde, x0, key, *, n_steps=1000, t0=1e-5, divergence="exact"):
    """The augmented forward SDE (``004`` Thm. 4, eq. 10), Euler-Maruyama from t0 to T: returns (x_T, omega_T) with
    omega_T = log p_T^SDE(x_T) - log p_0^SDE(x_0) + Y with E[Y] >= 0, = 0 for the true score (eq. 11-12), so
    E[log p_T(x_T) - omega_T] <= log p_0^SDE(x_0), with equality for the true score.
    ``divergence`` is "exact" (D JVPs per step) or "hutchinson" (one Rademacher probe per step)."""
    x0 = check_points(x0, "x0")
    n_steps = check_positive_int(n_steps, "n_steps")
    t0 = check_t0(t0, sde.T)
    check_option(divergence, ("exact", "hutchinson"), "divergence")
    n, D = x0.shape
    ts = jnp.linspace(t0, sde.T, n_steps + 1, dtype=x0.dtype)

    def one(k, x):
        def step(c, inp):
            x, w = c
            t, t_next, kk = inp
            h = t_next - t
            kz, kv = jax.random.split(kk)
            v = None if divergence == "exact" else make_probes(kv, 1, D, "rademacher", x.dtype)
            s, div = value_and_divergence(lambda y: score(y, t), x, v)
            div = jnp.mean(div)
            f, g2 = sde.f(t), sde.g2(t)
            dw = jnp.sqrt(h) * jax.random.normal(kz, x.shape, x.dtype)
            x_new = x + f * x * h + jnp.sqrt(g2) * dw
            w_new = w + (-f * D + g2 * (0.5 * jnp.sum(s * s) + div)) * h + jnp.sqrt(g2) * jnp.dot(s, dw)
            return (x_new, w_new), None

        (x, w), _ = jax.lax.scan(step, (x, jnp.zeros((), x.dtype)), (ts[:-1], ts[1:], jax.random.split(k, n_steps)))
        return x, w

    return jax.vmap(one)(jax.random.split(key, n), x0)


class BiasDiagnostics(NamedTuple):
    """``004`` eqs. 14-15: R = E[r0 - ELBO] bounds the bias of both r0 and the ELBO; R^L <= KL(p^SDE || p^ODE) <= R^U."""

    R: Estimate
    R_upper: Estimate
    R_lower: Estimate


def sde_bias_diagnostics(score, sde, key, shape, *, n_steps=1000, t0=1e-5, n_times=1000, ode_kwargs=None):
    """R, R^U, R^L with standard errors over the samples (x0, r0) of the augmented reverse SDE (``004`` eqs. 14-15).

    ELBO(x0) from :func:`diffdens.elbo` (DSM form, importance-sampled t), log p^ODE(x0) from
    :func:`diffdens.ode_log_prob` (exact divergence unless ``ode_kwargs`` says otherwise)."""
    from .elbo import elbo
    from .ode import ode_log_prob

    n, _ = check_shape(shape, "shape")
    if n < 2:
        raise ValueError(f"shape must hold at least 2 samples for a standard error, got {shape}")
    ks, ke, ko = jax.random.split(key, 3)
    x0, r0 = sample_with_log_prob(score, sde, ks, shape, n_steps=n_steps, t0=t0)
    lb = elbo(score, sde, x0, key=ke, n_times=n_times, t0=t0).value
    lode = ode_log_prob(score, sde, x0, key=ko, t0=t0, **(ode_kwargs or {})).value

    def mean(v):
        return Estimate(jnp.mean(v), jnp.std(v, ddof=1) / jnp.sqrt(v.shape[0]), None)

    return BiasDiagnostics(mean(r0 - lb), mean(r0 - lode), mean(lb - lode))
