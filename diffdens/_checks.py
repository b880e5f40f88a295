"""Eager input validation shared by every public function.

Each check raises ``ValueError`` naming the offending argument. Checks on values (NaN, ranges) run only on
concrete arrays, so they fire before any jit-compiled work and are skipped silently inside a trace.
"""

from __future__ import annotations

from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_sde(sde) -> None:
    """sde must be one of the package's linear SDEs."""
    from .sde import LinearSDE  # sde.py imports this module

    if not isinstance(sde, LinearSDE):
        raise ValueError(f"sde must be a LinearSDE, got {type(sde).__name__}")


def check_option(value, options: Iterable[str], name: str) -> str:
    options = tuple(options)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive(value, name: str) -> float:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return float(value)


def check_finite(x, name: str):
    if _concrete(x) and not bool(jnp.all(jnp.isfinite(jnp.asarray(x)))):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def as_float_array(x, name: str):
    """``x`` as a floating JAX array (float32 unless x64 is enabled and x is float64)."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def check_points(x, name: str = "x", *, dim: int | None = None, rank: int = 2):
    """A batch of points of shape (n, D) (``rank=2``) or one point (D,) (``rank=1``), finite, with D == dim."""
    x = as_float_array(x, name)
    if x.ndim != rank:
        want = "(n, D)" if rank == 2 else "(D,)"
        raise ValueError(f"{name} must have shape {want}, got shape {x.shape}")
    if rank == 2 and x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one point, got shape {x.shape}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[-1]}, expected D={dim}")
    check_finite(x, name)
    return x


def check_shape(shape, name: str = "shape") -> tuple[int, int]:
    """A sample shape (n, D) with positive integers."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple (n, D), got {shape!r}") from None
    ok = len(shape) == 2 and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape)
    if not ok:
        raise ValueError(f"{name} must be a tuple (n, D) of positive integers, got {shape!r}")
    return int(shape[0]), int(shape[1])


def check_time(t, name: str, *, lo: float, hi: float, open_lo: bool = False):
    """Concrete times must lie in [lo, hi] (or (lo, hi] when ``open_lo``)."""
    if _concrete(t):
        a = np.asarray(t)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or inf")
        bad_lo = np.any(a <= lo) if open_lo else np.any(a < lo)
        if bad_lo or np.any(a > hi):
            bracket = "(" if open_lo else "["
            raise ValueError(f"{name} must lie in {bracket}{lo}, {hi}], got {a if a.ndim == 0 else (a.min(), a.max())}")
    return t


def check_t0(t0, T: float, name: str = "t0") -> float:
    """A start time strictly inside (0, T)."""
    if isinstance(t0, bool) or not np.isfinite(t0) or not 0 < t0 < T:
        raise ValueError(f"{name} must lie in (0, T) = (0, {T}), got {t0!r}")
    return float(t0)
