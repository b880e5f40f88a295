"""Sampling with plug-in reverse SDEs: the lambda family of ``001_4a6883c9517e568d.txt`` eq. 27.

In reverse time, dX = [(1 - lam/2) g^2 s(X, t) - f X] dt + sqrt(1 - lam) g dB (time running from T to t0):
lam = 0 is the usual plug-in reverse SDE (Song et al.), lam = 1 the probability-flow ODE, and every lam <= 1 has the
same marginals when s is the true score. Solved with Euler-Maruyama on diffrax in the time variable tau = T - t.
"""

from __future__ import annotations

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_t0, check_positive_int, check_shape
from .sde import LinearSDE


def _reverse_terms(score, sde, lam, T, bm):
    def drift(tau, x, _):
        t = T - tau
        return (1 - lam / 2) * sde.g2(t) * score(x, t) - sde.f(t) * x

    def diff(tau, x, _):
        return lx.DiagonalLinearOperator(jnp.sqrt(1 - lam) * sde.diffusion(T - tau) * jnp.ones_like(x))

    if lam == 1:
        return diffrax.ODETerm(drift)
    return diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diff, bm))


def reverse_sde_sample(
    score: Callable,
    sde: LinearSDE,
    key: PRNGKeyArray,
    shape,
    *,
    lam: float = 0.0,
    n_steps: int = 1000,
    t0: float = 1e-5,
    x_T: Float[Array, "n D"] | None = None,
) -> Float[Array, "n D"]:
    """n samples of shape (n, D) from the plug-in reverse SDE with parameter ``lam`` (Euler-Maruyama, n_steps).

    ``x_T`` (optional) replaces the draws from the prior, e.g. to start from the exact p_T in a test.
    """
    n, d = check_shape(shape)
    n_steps = check_positive_int(n_steps, "n_steps")
    if not lam <= 1:
        raise ValueError(f"lam must be <= 1, got {lam}")
    t0 = check_t0(t0, sde.T)
    kx, kb = jax.random.split(key)
    x_T = sde.prior_sample(kx, (n, d)) if x_T is None else jnp.asarray(x_T)
    if x_T.shape != (n, d):
        raise ValueError(f"x_T must have shape {(n, d)}, got {x_T.shape}")
    return _sample(score, sde, float(lam), int(n_steps), float(t0), x_T, jax.random.split(kb, n))


def _sample_impl(score, sde, lam, n_steps, t0, x_T, keys):
    T = float(sde.T)
    dt = (T - t0) / n_steps

    def one(x, k):
        bm = diffrax.UnsafeBrownianPath(shape=x.shape, key=k)
        sol = diffrax.diffeqsolve(_reverse_terms(score, sde, lam, T, bm), diffrax.Euler(), 0.0, T - t0, dt, x,
                                  max_steps=n_steps + 2, adjoint=diffrax.DirectAdjoint())
        return sol.ys[-1]

    return jax.vmap(one)(x_T, keys)


_sample = jax.jit(_sample_impl, static_argnums=(0, 1, 2, 3, 4))
