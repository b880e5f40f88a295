"""Multi-device scale: shard an estimator's points over all visible devices with ``jax.sharding``.

Every estimator ``fn(score, sde, x, *, key, ...)`` treats the n points of x independently (one vmap over points,
per-point keys from ``jax.random.split(key, n)``), so the points can be laid out over a 1-D device mesh named
``"points"`` and XLA's sharding propagation runs each device's share of the vmap locally: the sharded result is the
one-device result up to float noise (reduction order inside a fused kernel).

Padding. n is padded to a multiple of the device count by repeating the last point, and the padding is stripped
from the result. The pad points change ``split(key, n)`` into ``split(key, n + pad)``; with JAX's *partitionable*
threefry (``jax_threefry_partitionable``, the default since JAX 0.5) the first n keys of ``split(key, m)`` do not
depend on m, so the real points keep their keys. With the legacy non-partitionable threefry they would not, and
:func:`shard_points` then refuses to pad (it falls back to one device with a warning) rather than return different
random numbers. Tested in ``tests/test_parallel.py`` under ``--xla_force_host_platform_device_count=4``.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._checks import check_points
from .estimate import Estimate

AXIS = "points"


def keys_independent_of_count() -> bool:
    """True when ``jax.random.split(key, m)[:n] == split(key, n)`` for all m >= n (partitionable threefry)."""
    return bool(jax.config.jax_threefry_partitionable)


def _strip(a, n):
    return None if a is None else a[:n]


def shard_points(fn: Callable, *, devices: Optional[Sequence] = None) -> Callable:
    """Wrap ``fn(score, sde, x, *, key, ...)`` so x (n, *event_shape) is split across ``devices``.

    With one device the wrapper calls ``fn`` unchanged. Otherwise it pads n to a multiple of the device count (see
    the module docstring for why that keeps each point's random key) and strips the padding from every output whose
    leading axis is n + pad.

    Arguments:
        fn: an estimator ``fn(score, sde, x, *, key, ...)`` treating its points independently.
        devices: the devices of the 1-D mesh ``"points"`` (default: all visible, ``jax.devices()``).

    Returns:
        a function with ``fn``'s signature whose result (an :class:`Estimate`, or a tuple of per-point arrays such
        as :func:`diffdens.ode_encode` returns) equals the one-device result up to float noise.
    """
    if not callable(fn):
        raise ValueError(f"fn must be a callable estimator, got {type(fn).__name__}")
    if devices is not None:
        devices = list(devices)
        if not devices:
            raise ValueError("devices must hold at least one device")

    @functools.wraps(fn)
    def sharded(score, sde, x, *args, **kwargs):
        x = check_points(x, "x")
        devs = devices if devices is not None else jax.devices()
        nd = len(devs)
        n = x.shape[0]
        if nd == 1:
            return fn(score, sde, x, *args, **kwargs)
        pad = (-n) % nd
        if pad and not keys_independent_of_count():
            warnings.warn("shard_points: padding would change per-point keys under non-partitionable threefry; "
                          f"running on one device (set jax_threefry_partitionable=True or pass n divisible by {nd})")
            return fn(score, sde, x, *args, **kwargs)
        xp = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)]) if pad else x
        mesh = Mesh(np.asarray(devs), (AXIS,))
        xs = jax.device_put(xp, NamedSharding(mesh, PartitionSpec(AXIS, None)))
        out = fn(score, sde, xs, *args, **kwargs)
        if not pad:  # keep the outputs laid out over the mesh
            return out
        if isinstance(out, Estimate):
            return Estimate(*(_strip(a, n) for a in out))
        m = n + pad
        return jax.tree_util.tree_map(lambda a: a[:n] if getattr(a, "ndim", 0) >= 1 and a.shape[0] == m else a, out)

    return sharded
