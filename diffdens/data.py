"""Discrete data: uniform dequantization and bits per dimension (Song et al. 2021b, Sec. 5.2, eq. 13).

Integer data k in {0, ..., levels-1}^D on ``data_range`` = (a, b) is mapped to bins of width
Delta = (b - a) / levels: y = a + (k + u) Delta with u ~ U[0, 1)^D. By Jensen,
log P(k) >= E_u[log p(y)] + D log Delta, so bits/dim = -(log p(y) + D log Delta) / (D log 2) upper-bounds the
discrete NLL. For 8-bit images on (0, 1) the offset is log2(256) = 8 bits; it is never hard-coded here.
Data sets to try it on: :mod:`diffdens.datasets`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import check_positive_int
from ._engine import is_traced


def _delta(levels, data_range):
    levels = check_positive_int(levels, "levels")
    a, b = (float(v) for v in data_range)
    if not b > a:
        raise ValueError(f"data_range must be (a, b) with b > a, got {data_range}")
    return levels, a, (b - a) / levels


def uniform_dequantize(key: PRNGKeyArray, k: Int[Array, "n D"], *, levels: int, data_range=(0.0, 1.0)) -> Float[Array, "n D"]:
    """Continuous y = a + (k + u) Delta, u ~ U[0, 1), for integer data k in {0, ..., levels-1}.

    Arguments:
        key: PRNG key of the uniform noise u.
        k: (n, D) integers in {0, ..., levels - 1}.
        levels: the number of discrete levels.
        data_range: (a, b), the interval the levels are mapped to; Delta = (b - a) / levels.

    Returns:
        (n, D) the dequantized points y.
    """
    levels, a, delta = _delta(levels, data_range)
    k = jnp.asarray(k)
    msg = f"k must lie in {{0, ..., {levels - 1}}}"
    if is_traced(k):  # under jit / vmap: a runtime check
        k = eqx.error_if(k, jnp.any(k < 0) | jnp.any(k >= levels), msg)
    elif jnp.any(k < 0) or jnp.any(k >= levels):
        raise ValueError(msg)
    u = jax.random.uniform(key, k.shape, dtype=jnp.result_type(float))
    return a + (k.astype(u.dtype) + u) * delta


def bits_per_dim(log_prob, dim: int, *, levels: int = 256, data_range=(0.0, 1.0)):
    """Bits per dimension of discrete data from a continuous log-density of its dequantized values:
    -(log p(y) + D log Delta) / (D log 2), an upper bound on the discrete NLL in bits.

    Arguments:
        log_prob: (...,) log p(y) of dequantized points y (e.g. an :class:`diffdens.Estimate`'s ``value``).
        dim: D, the number of dimensions of a point.
        levels: the number of discrete levels.
        data_range: (a, b), as in :func:`uniform_dequantize`.

    Returns:
        (...,) bits per dimension.
    """
    dim = check_positive_int(dim, "dim")
    levels, a, delta = _delta(levels, data_range)
    return -(jnp.asarray(log_prob) + dim * math.log(delta)) / (dim * math.log(2.0))

