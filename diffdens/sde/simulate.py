"""Simulating the forward SDE: Euler-Maruyama with diffrax (a check of the transition kernels, and data for tests)."""

from __future__ import annotations

from functools import partial

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_key, check_points, check_positive_int
from .base import LinearSDE, check_sde


@partial(jax.jit, static_argnames=("sde", "n_steps"))
def _forward_kernel(sde, keys, x0, t0, t1, n_steps):
    dt = (t1 - t0) / n_steps

    def one(k, x):
        bm = diffrax.VirtualBrownianTree(t0, t1, tol=dt / 2, shape=x.shape, key=k)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, _: sde.drift(y, t)),
            diffrax.ControlTerm(lambda t, y, _: lx.DiagonalLinearOperator(sde.diffusion(t) * jnp.ones_like(y)), bm),
        )
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), t0, t1, dt, x, max_steps=n_steps + 1)
        return sol.ys[-1]

    return jax.vmap(one)(keys, x0)


def forward_sample(
    sde: LinearSDE,
    key: PRNGKeyArray,
    x0: Float[Array, "n D"],
    t1: float,
    *,
    n_steps: int = 1000,
    t0: float = 0.0,
) -> Float[Array, "n D"]:
    """Simulate the forward SDE from x0 at t0 to t1 with Euler-Maruyama (diffrax), one path per row of x0.

    One compiled kernel per (SDE, n_steps, shape): t0 and t1 are traced, the SDE is a static (hashable) argument.

    Arguments:
        sde: the :class:`~diffdens.LinearSDE`.
        key: PRNG key (one path per point, ``jax.random.split(key, n)``).
        x0: (n, D) the starting points.
        t1: the end time, t0 < t1 <= T.
        n_steps: Euler-Maruyama steps.
        t0: the start time.

    Returns:
        (n, D) the points at t1.
    """
    check_sde(sde)
    check_key(key)
    x0 = check_points(x0, "x0")
    n_steps = check_positive_int(n_steps, "n_steps")
    sde.check_time(t0, "t0")
    sde.check_time(t1, "t1")
    if not t1 > t0:
        raise ValueError(f"t1 must exceed t0, got t0={t0}, t1={t1}")
    keys = jax.random.split(key, x0.shape[0])
    dtype = x0.dtype
    return _forward_kernel(sde, keys, x0, jnp.asarray(t0, dtype), jnp.asarray(t1, dtype), n_steps)
