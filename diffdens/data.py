"""Discrete data: uniform dequantization and bits per dimension (Song et al. 2021b, Sec. 5.2, eq. 13).

Integer data k in {0, ..., levels-1}^D on ``data_range`` = (a, b) is mapped to bins of width
Delta = (b - a) / levels: y = a + (k + u) Delta with u ~ U[0, 1)^D. By Jensen,
log P(k) >= E_u[log p(y)] + D log Delta, so bits/dim = -(log p(y) + D log Delta) / (D log 2) upper-bounds the
discrete NLL. For 8-bit images on (0, 1) the offset is log2(256) = 8 bits; it is never hard-coded here.
Tighter bounds (importance weighting, truncated-normal and variational dequantization) and an error budget:
:mod:`diffdens.dequantization`. Data sets to try it on: :mod:`diffdens.datasets`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import check_positive_int
from ._engine import is_traced


def bin_width(levels, data_range):
    """``(levels, a, Delta)``: ``levels`` a positive integer, ``data_range`` (a, b) finite with b > a, and the bin
    width Delta = (b - a) / levels (ValueError naming the argument)."""
    levels = check_positive_int(levels, "levels")
    try:
        a, b = (float(v) for v in data_range)
    except (TypeError, ValueError):
        raise ValueError(f"data_range must be a pair (a, b) of numbers, got {data_range!r}") from None
    if not (math.isfinite(a) and math.isfinite(b) and b > a):
        raise ValueError(f"data_range must be (a, b) with b > a, got {data_range}")
    return levels, a, (b - a) / levels


def check_levels(k, levels: int, name: str = "k"):
    """``k`` (an integer array of any shape) lies in {0, ..., levels - 1}: eagerly a ValueError naming ``name`` with
    the range found, under a trace a runtime ``equinox.error_if``. Compared in int32, so uint8 data with
    ``levels=256`` is checked correctly. Returns k as a JAX array."""
    k = jnp.asarray(k)
    msg = f"{name} must lie in {{0, ..., {levels - 1}}} (levels={levels})"
    if is_traced(k):  # under jit / vmap: a runtime check
        wide = k.astype(jnp.int32)
        return eqx.error_if(k, jnp.any((wide < 0) | (wide >= levels)), msg)
    a = np.asarray(k)
    if a.size and (int(a.min()) < 0 or int(a.max()) >= levels):
        raise ValueError(f"{msg}, got values in [{a.min()}, {a.max()}]")
    return k


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
    levels, a, delta = bin_width(levels, data_range)
    k = check_levels(k, levels)
    u = jax.random.uniform(key, k.shape, dtype=jnp.result_type(float))
    return a + (k.astype(u.dtype) + u) * delta


def bits_per_dim(log_prob, dim: int, *, levels: int = 256, data_range=(0.0, 1.0), discrete: bool = False):
    """Bits per dimension of discrete data: -(log p(y) + D log Delta) / (D log 2) from a continuous log-density of
    its dequantized values y (Song et al. 2021b, eq. 13; an upper bound on the discrete NLL in bits), or, with
    ``discrete=True``, -log P(k) / (D log 2) from a discrete log-probability (the value of
    :func:`diffdens.discrete_log_prob`, which already holds the D log Delta of the bins and any log q).

    Published protocols in these arguments (D = 3072 for CIFAR-10; the numbers are comparable only within a
    protocol, and only for one model class: ODE, SDE/ELBO and discrete-decoder models are different models):

    * Score SDE / ScoreFlow, uniform dequantization (Song et al. 2021a; Song et al. 2021b, eq. 13): y = (k
      + u) / 256 on [0, 1], then scaled to [-1, 1] for the centred models; the code reports
      -log p(y) / (D log 2) + offset with offset 8 = log2(256) for data on [0, 1] and 7 = log2(256 / 2) on [-1, 1]:
      that offset is -log2(Delta), so ``bits_per_dim(log_p, D, levels=256, data_range=(0, 1))`` (or
      ``(-1, 1)``) is their number, with log_p the log-density in the range the model was trained on.
    * i-DODE, truncated-normal dequantization (Zheng et al. 2023): the bound log p_t0(y) - log q(y | k)
      is already discrete (its q is a density in the data range, so no offset): ``discrete_log_prob(...,
      dequantization="truncated_normal", levels=256, data_range=(-1, 1))`` then ``bits_per_dim(value, D,
      discrete=True)``. Their importance-weighted version (K > 1) takes logsumexp over K draws without subtracting
      log K, which lowers the reported bits/dim by log2(K) / D; ``discrete_log_prob(n_samples=K)`` subtracts it.
      Their uniform-dequantization number adds 7 bits (data on [-1, 1]) as above.
    * VDM and discrete decoders (Kingma et al. 2021, with its discrete decoder p(k | z_0)): the variational bound with a per-pixel
      discrete likelihood p(k | z_0) is a discrete log-probability: ``bits_per_dim(-loss, D, discrete=True)``; no
      dequantization and no offset.
    * Variational dequantization (Flow++, Ho et al. 2019; ScoreFlow, Song et al. 2021b): the bound with a learned
      q(u | k) includes -log q: ``discrete_log_prob(..., dequantization=fit_dequantizer(...)[0])`` then
      ``discrete=True``.

    Arguments:
        log_prob: (...,) log p(y) of dequantized points y (e.g. an :class:`diffdens.Estimate`'s ``value``), or with
            ``discrete=True`` the discrete log P(k).
        dim: D, the number of dimensions of a point.
        levels: the number of discrete levels (ignored when ``discrete``).
        data_range: (a, b), as in :func:`uniform_dequantize` (ignored when ``discrete``).
        discrete: ``log_prob`` is already a discrete log-probability (no D log Delta added).

    Returns:
        (...,) bits per dimension.
    """
    dim = check_positive_int(dim, "dim")
    if not isinstance(discrete, (bool, np.bool_)):
        raise TypeError(f"discrete must be True or False, got {discrete!r}")
    if discrete:
        return -jnp.asarray(log_prob) / (dim * math.log(2.0))
    levels, a, delta = bin_width(levels, data_range)
    return -(jnp.asarray(log_prob) + dim * math.log(delta)) / (dim * math.log(2.0))
