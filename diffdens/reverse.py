"""Sampling with plug-in reverse SDEs: the family of ``001_4a6883c9517e568d.txt`` eq. 27.

In reverse time, dX = [(1 - lam/2) g^2 s(X, t) - f X] dt + sqrt(1 - lam) g dB (time running from T to t0):
lam = 0 is the usual plug-in reverse SDE (Song et al.), lam = 1 the probability-flow ODE, and every lam <= 1 has the
same marginals when s is the true score. (The book writes this family parameter eta, keeping lambda for the log-SNR.)
Solved with Euler-Maruyama on diffrax in the time variable tau = T - t, one score evaluation per step.
"""

from __future__ import annotations

from typing import Callable, Optional

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_key, check_points, check_positive_int, check_real, check_shape, check_t0
from ._engine import (check_batch_size, check_score, map_points, point_keys, probe_score, raise_if_nonfinite,
                      traced_score)
from .estimate import Samples
from .sde import LinearSDE, check_sde

__all__ = ["reverse_sde_sample"]

BATCH_SIZE = 4096  # points per chunk by default (a few KB of state per point: far below 2 GB for D <= 64)



def _one(score, sde, n_steps, x, k, lam, t0):
    T = float(sde.T)

    def drift(tau, x, _):
        t = T - tau
        return (1 - lam / 2) * sde.g2(t) * score(x, t) - sde.f(t) * x

    def diff(tau, x, _):
        return lx.DiagonalLinearOperator(jnp.sqrt(1 - lam) * sde.diffusion(T - tau) * jnp.ones_like(x))

    bm = diffrax.UnsafeBrownianPath(shape=x.shape, key=k)
    terms = diffrax.MultiTerm(diffrax.ODETerm(drift), diffrax.ControlTerm(diff, bm))
    sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, T - t0, (T - t0) / n_steps, x,
                              max_steps=n_steps + 2, adjoint=diffrax.DirectAdjoint())
    return sol.ys[-1], sol.stats["num_steps"]  # Euler: one drift (score) evaluation per step


@eqx.filter_jit
def _kernel(score, sde, x_T, keys, lam, t0, n_steps, batch_size):
    return map_points(lambda x, k: _one(score, sde, n_steps, x, k, lam, t0), (x_T, keys), batch_size)


def reverse_sde_sample(
    score: Callable,
    sde: LinearSDE,
    key: PRNGKeyArray,
    shape,
    *,
    lam: float = 0.0,
    n_steps: int = 1000,
    t0: float = 1e-5,
    x_T: Optional[Float[Array, "n D"]] = None,
    batch_size: Optional[int] = BATCH_SIZE,
) -> Samples:
    """n samples of shape (n, D) from the plug-in reverse SDE with family parameter ``lam`` (the book's eta; any
    finite lam <= 1, lam = 1 being the PF-ODE), Euler-Maruyama with ``n_steps`` uniform steps from T to t0.

    Returns :class:`~diffdens.Samples` with ``x`` (n, D), ``log_prob`` None, ``nfe`` (n,) score evaluations per
    sample. ``x_T`` (optional, finite, shape (n, D)) replaces the draws from the prior, e.g. to start from the exact
    p_T in a test. ``lam`` and ``t0`` are traced: changing them does not recompile. Points run in chunks of
    ``batch_size`` (None: all at once); the result does not depend on it."""
    check_sde(sde)
    key = check_key(key)
    n, d = check_shape(shape, "shape")
    lam = check_real(lam, "lam", hi=1.0)
    n_steps = check_positive_int(n_steps, "n_steps")
    t0 = check_t0(t0, sde.T)
    batch_size = check_batch_size(batch_size)
    if x_T is not None:
        x_T = check_points(x_T, "x_T", dim=d)
        if x_T.shape != (n, d):
            raise ValueError(f"x_T must have shape {(n, d)}, got {x_T.shape}")
    score = traced_score(score)
    dtype = jnp.result_type(float) if x_T is None else x_T.dtype
    check_score(score, jnp.zeros((1, d), dtype))
    probe_score(score, jnp.zeros((1, d), dtype) if x_T is None else x_T,
                np.array([float(sde.T), 0.5 * (float(sde.T) + t0), t0]))
    kx, kb = jax.random.split(key)
    if x_T is None:
        x_T = sde.prior_sample(kx, (n, d))
    x, nfe = _kernel(score, sde, x_T, point_keys(kb, n), jnp.asarray(lam, x_T.dtype), jnp.asarray(t0, x_T.dtype),
                     n_steps, batch_size)
    raise_if_nonfinite(x, score, x_T, np.linspace(float(sde.T), t0, 33))
    return Samples(x, None, nfe)
