"""Sampling with plug-in reverse SDEs: the family of Huang et al. 2021, eq. 27.

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

from ._checks import check_points, check_positive_int, check_real, check_shape, check_t0
from ._engine import GridBrownianPath, diagnose_score, front_door, map_points
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

    bm = GridBrownianPath(k, 0.0, (T - t0) / n_steps, n_steps, x.shape, x.dtype)  # reverse time tau = T - t
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
    x_T: Optional[Array] = None,
    batch_size: Optional[int] = BATCH_SIZE,
) -> Samples:
    """Samples from the plug-in reverse SDE of the family with parameter ``lam`` (Huang et al. 2021, eq. 27; the
    book's eta; any finite lam <= 1, lam = 1 being the PF-ODE), Euler-Maruyama with ``n_steps`` uniform steps
    from T to t0.

    Arguments:
        score, sde: the score and its SDE.
        key: PRNG key.
        shape: (n, *event_shape).
        lam: the family parameter (traced: changing it does not recompile), lam <= 1.
        n_steps: Euler-Maruyama steps.
        t0: the end time in (0, T).
        x_T: optional finite start points of shape ``shape`` replacing the prior draws (e.g. the exact p_T).
        batch_size: points per compiled chunk (None: all at once); the result does not depend on it.

    Returns:
        :class:`diffdens.Samples` with ``x`` (n, *event_shape), ``log_prob`` None, ``nfe`` (n,) score evaluations.
    """
    check_sde(sde)
    lam = check_real(lam, "lam", hi=1.0)
    n_steps = check_positive_int(n_steps, "n_steps")
    t0 = check_t0(t0, sde.T)
    times = np.linspace(float(sde.T), t0, 33)
    dtype = None
    if x_T is not None:
        x_T = check_points(x_T, "x_T")
        dtype = x_T.dtype
        if tuple(x_T.shape) != check_shape(shape, "shape"):
            raise ValueError(f"x_T must have shape {check_shape(shape, 'shape')}, got {tuple(x_T.shape)}")
    front = front_door(score, sde, shape=shape, key=key, key_required=True, batch_size=batch_size, dtype=dtype,
                       times=times[[0, 16, 32]])
    kx, kb = jax.random.split(front.key)
    x_T = (sde.prior_sample(kx, (front.n, front.dim)).astype(front.dtype) if x_T is None
           else jnp.reshape(x_T, (front.n, -1)))
    x, nfe = _kernel(front.score, sde, x_T, front.point_keys(kb), jnp.asarray(lam, x_T.dtype),
                     jnp.asarray(t0, x_T.dtype), n_steps, front.batch_size)
    x = front.finite(x, diagnose_score(front.score, x_T, times), what="the sample")
    return Samples(front.unflatten(x), None, nfe)
