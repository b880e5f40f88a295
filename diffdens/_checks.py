"""Eager input validation shared by every public function (the ground floor: imports nothing from the package).

Each check raises ``ValueError`` (``TypeError`` for a wrong type) naming the offending argument. Checks on values
(NaN, ranges) run only on concrete arrays, so they fire before any jit-compiled work and are skipped silently inside a
trace.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_option(value, options: Iterable[str], name: str) -> str:
    """``value`` must be one of ``options`` (compared with ==, so ``True`` is not ``"exact"``)."""
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_bool(value, name: str) -> bool:
    """A real boolean (``True``/``False``; numpy booleans accepted), not a string such as ``"no"``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _real_number(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, (jax.Array, np.ndarray)):
        if value.ndim != 0:
            raise TypeError(f"{name} must be a scalar, got an array of shape {value.shape}")
        if not _concrete(value):
            raise TypeError(f"{name} must be a concrete number, not a traced value")
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def check_positive_int(value, name: str) -> int:
    """A positive integer (an integral float such as 8.0 is accepted); NaN, inf, None, 2.5, 0 and -1 are not."""
    v = _real_number(value, name)
    if not math.isfinite(v) or v != int(v) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(v)


def check_positive(value, name: str) -> float:
    """A finite positive number."""
    v = _real_number(value, name)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return v


def check_real(value, name: str, *, lo: float = -math.inf, hi: float = math.inf, open_lo=False, open_hi=False) -> float:
    """A finite real number in [lo, hi] (open ends as asked)."""
    v = _real_number(value, name)
    bad = (not math.isfinite(v) or (v <= lo if open_lo else v < lo) or (v >= hi if open_hi else v > hi))
    if bad:
        br = ("(" if open_lo else "[") + f"{lo}, {hi}" + (")" if open_hi else "]")
        raise ValueError(f"{name} must be a finite number in {br}, got {value!r}")
    return v


def check_finite(x, name: str):
    # on the host: a jnp operation on a concrete array inside an outer jit trace would itself be traced
    if _concrete(x) and not bool(np.all(np.isfinite(np.asarray(x)))):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def as_float_array(x, name: str):
    """``x`` as a real floating JAX array: integers become the default float; complex input is a TypeError;
    float16/bfloat16 are computed in float32 (with a warning), since log-densities need more precision."""
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    try:
        x = jnp.asarray(x)
    except TypeError as e:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}") from e
    if jnp.issubdtype(x.dtype, jnp.complexfloating):
        raise TypeError(f"{name} must be real, got dtype {x.dtype}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        if not (jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_):
            raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}")
        x = x.astype(jnp.result_type(float))
    elif jnp.finfo(x.dtype).bits < 32:
        warnings.warn(f"{name} has dtype {x.dtype}; computing in float32", stacklevel=3)
        x = x.astype(jnp.float32)
    return x


def check_points(x, name: str = "x", *, dim: int | None = None, rank: int = 2, event_shape=None):
    """A batch of points of shape (n, *event_shape) (``rank=2``: at least one event axis) or one point (D,)
    (``rank=1``), finite when concrete. ``dim`` (flat size) or ``event_shape`` pin the expected event."""
    x = as_float_array(x, name)
    if rank == 1:
        if x.ndim != 1:
            raise ValueError(f"{name} must have shape (D,), got shape {x.shape}")
    elif x.ndim < 2:
        raise ValueError(f"{name} must have shape (n, *event_shape), e.g. (n, D) or (n, H, W, C), got shape {x.shape}")
    if rank != 1 and x.shape[0] < 1:
        raise ValueError(f"{name} must hold at least one point, got shape {x.shape}")
    if any(s < 1 for s in x.shape[1 if rank != 1 else 0:]):
        raise ValueError(f"{name} must have every event dimension >= 1, got shape {x.shape}")
    ev = x.shape[1:] if rank != 1 else x.shape
    if event_shape is not None and tuple(ev) != tuple(event_shape):
        raise ValueError(f"{name} has event shape {tuple(ev)}, expected {tuple(event_shape)}")
    if dim is not None and math.prod(ev) != dim:
        raise ValueError(f"{name} has dimension {math.prod(ev)} (event shape {tuple(ev)}), expected D={dim}")
    check_finite(x, name)
    return x


def check_shape(shape, name: str = "shape") -> tuple[int, ...]:
    """A sample shape (n, *event_shape), e.g. (n, D) or (n, H, W, C), of positive integers."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{name} must be a tuple (n, *event_shape), e.g. (n, D), got {shape!r}") from None
    ok = len(shape) >= 2 and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1
                                 for s in shape)
    if not ok:
        raise ValueError(f"{name} must be a tuple (n, *event_shape) of positive integers, e.g. (n, D), got {shape!r}")
    return tuple(int(s) for s in shape)


def check_time(t, name: str, *, lo: float, hi: float, open_lo: bool = False):
    """Concrete times must lie in [lo, hi] (or (lo, hi] when ``open_lo``)."""
    if _concrete(t):
        a = np.asarray(t)
        if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
            raise TypeError(f"{name} must be real, got {t!r}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or inf")
        bad_lo = np.any(a <= lo) if open_lo else np.any(a < lo)
        if bad_lo or np.any(a > hi):
            bracket = "(" if open_lo else "["
            raise ValueError(f"{name} must lie in {bracket}{lo}, {hi}], got {a if a.ndim == 0 else (a.min(), a.max())}")
    return t


def check_t0(t0, T: float, name: str = "t0") -> float:
    """A start time strictly inside (0, T)."""
    return check_real(t0, name, lo=0.0, hi=float(T), open_lo=True, open_hi=True)


def check_key(key, name: str = "key"):
    """A JAX PRNG key: a typed key (``jax.random.key``) or a legacy uint32 key of shape (2,)."""
    if key is None:
        raise ValueError(f"{name} is required: pass a PRNG key, e.g. {name}=jax.random.key(0)")
    if isinstance(key, (jax.Array, np.ndarray)):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0:
            return key
        if key.dtype == np.uint32 and key.shape == (2,):
            return key
    raise TypeError(f"{name} must be a single PRNG key from jax.random.key, got {type(key).__name__}"
                    f"{' of shape ' + str(key.shape) if hasattr(key, 'shape') else ''}")
