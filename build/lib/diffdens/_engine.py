"""The front door every estimator and sampler goes through, and the pieces of the engine they share.

* :func:`traced_score` turns whatever the user holds (a flax.nnx module, an equinox module, a bound method of a model
  or mixture, ``jax.tree_util.Partial(fn, params)``, a plain function) into a pytree callable whose arrays are
  *traced* by ``eqx.filter_jit``: two models of one architecture share one compilation, and no weight is compiled in
  as a constant. A plain Python function is a static argument: a new lambda or closure compiles anew (pass the same
  function object, or a ``Partial`` over its parameters, to reuse the compilation).
* :func:`check_score` evaluates the score's output shape abstractly (``jax.eval_shape``, no compiled work) and raises
  naming ``score`` when it is not (D,) floating.
* :func:`map_points` applies a per-point kernel over the points in chunks of ``batch_size`` (``jax.lax.map``), so
  peak memory is bounded by the chunk, not by n; with per-point keys the result does not depend on the chunking.
* :func:`raise_if_nonfinite` turns a non-finite result into an error that says where the score went non-finite,
  instead of a silent NaN.
"""

from __future__ import annotations

import inspect
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_positive_int


class BoundScore(eqx.Module):
    """``getattr(obj, name)`` as a pytree: ``obj`` (a model or mixture registered as a pytree) is traced."""

    obj: object
    name: str = eqx.field(static=True)

    def __call__(self, x, t):
        return getattr(self.obj, self.name)(x, t)


class NNXScore(eqx.Module):
    """A flax.nnx module (or one of its methods) that is not itself a pytree, split into graphdef (static) and state."""

    graphdef: object = eqx.field(static=True)
    state: object
    name: str = eqx.field(static=True)

    def __call__(self, x, t):
        from flax import nnx

        return getattr(nnx.merge(self.graphdef, self.state), self.name)(x, t)


def _is_pytree_node(obj) -> bool:
    return not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(obj))


def _nnx_module(obj) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, nnx.Module)


def traced_score(score: Callable, name: str = "score") -> Callable:
    """``score`` as a pytree callable whose arrays are traced (see the module docstring)."""
    if score is None or not callable(score):
        raise TypeError(f"{name} must be a callable score(x, t) (a function, model.score or a module), "
                        f"got {type(score).__name__}")
    if isinstance(score, (eqx.Module, jax.tree_util.Partial)):
        return score
    if inspect.ismethod(score):
        owner, meth = score.__self__, score.__name__
        if _nnx_module(owner) and not _is_pytree_node(owner):
            from flax import nnx

            graphdef, state = nnx.split(owner)
            return NNXScore(graphdef, state, meth)
        if _is_pytree_node(owner):
            return BoundScore(owner, meth)
        return score
    if _nnx_module(score):
        if _is_pytree_node(score):
            return BoundScore(score, "__call__")
        from flax import nnx

        graphdef, state = nnx.split(score)
        return NNXScore(graphdef, state, "__call__")
    return score


def check_score(score: Callable, x, t=None, name: str = "score", dim: Optional[int] = None) -> None:
    """The score maps one point (D,) and a scalar time to a floating array of shape (D,) (checked abstractly)."""
    d = x.shape[-1] if dim is None else dim
    xs = jax.ShapeDtypeStruct((d,), x.dtype)
    ts = jax.ShapeDtypeStruct((), x.dtype)
    try:
        out = jax.eval_shape(score, xs, ts)
    except Exception as e:  # noqa: BLE001 - any failure to trace is the score's
        raise ValueError(f"{name} could not be evaluated on one point of shape ({d},) and a scalar t: "
                         f"{type(e).__name__}: {e}") from e
    if not hasattr(out, "shape") or tuple(out.shape) != (d,) or not jnp.issubdtype(out.dtype, jnp.floating):
        got = f"shape {tuple(out.shape)} dtype {out.dtype}" if hasattr(out, "shape") else type(out).__name__
        raise ValueError(f"{name}(x, t) must return a floating array of shape (D,) = ({d},) for x of shape ({d},), "
                         f"got {got}")


def point_keys(key, n: int):
    """One key per point: ``jax.random.split(key, n)`` (the first n keys do not depend on n, so chunking and
    sharding leave each point's randomness unchanged)."""
    return jax.random.split(key, n)


def map_points(fn: Callable, args, batch_size: Optional[int]):
    """``vmap(fn)(*args)`` over the leading (points) axis, in sequential chunks of ``batch_size`` points."""
    n = jax.tree_util.tree_leaves(args)[0].shape[0]
    if batch_size is None or batch_size >= n:
        return jax.vmap(fn)(*args)
    return jax.lax.map(lambda a: fn(*a), tuple(args), batch_size=int(batch_size))


def check_batch_size(batch_size, name: str = "batch_size") -> Optional[int]:
    return None if batch_size is None else check_positive_int(batch_size, name)


def raise_if_nonfinite(values, score: Callable, x, times, name: str = "score") -> None:
    """If ``values`` holds NaN/inf, find a time in ``times`` where ``score`` is non-finite at a failing point and
    raise ValueError saying so (or saying that the estimate itself overflowed)."""
    v = np.asarray(values)
    bad = ~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1) if v.ndim else np.array([not np.isfinite(v)])
    if not bad.any():
        return
    i = int(np.flatnonzero(bad)[0]) if v.ndim else 0
    xi = jnp.asarray(x)[min(i, x.shape[0] - 1)]
    ts = jnp.asarray(np.asarray(times, dtype=np.float64), xi.dtype)
    s = jax.vmap(lambda tt: score(xi, tt))(ts)
    where = np.flatnonzero(~np.isfinite(np.asarray(s)).all(axis=-1))
    if where.size:
        raise ValueError(f"{name} returned a non-finite value at t={float(ts[where[0]]):.6g} "
                         f"(on the path of point {i}); the result would be NaN")
    raise ValueError(f"the result is non-finite for point {i} although {name} was finite at the probed times; "
                     "the score may be non-finite elsewhere on the path, or the computation overflowed")


def probe_score(score: Callable, x, times, name: str = "score") -> None:
    """Evaluate ``score`` at the first point of ``x`` at a few ``times`` (one small call) and raise naming ``name``
    if it returns NaN or inf there: the common case of a broken model is caught before the estimator runs."""
    x0 = jnp.asarray(x)[0]
    ts = jnp.asarray(np.asarray(times, dtype=np.float64), x0.dtype)
    s = np.asarray(_probe(score, x0, ts))
    where = np.flatnonzero(~np.isfinite(s).all(axis=-1))
    if where.size:
        raise ValueError(f"{name} returned a non-finite value at t={float(ts[where[0]]):.6g} for x[0]")


@eqx.filter_jit
def _probe(score, x0, ts):
    return jax.vmap(lambda tt: score(x0, tt))(ts)
