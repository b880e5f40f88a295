"""The one front door every estimator and sampler goes through, and the pieces of the engine they share.

* :func:`traced_score` turns whatever the user holds (a flax.nnx module, an equinox module, a bound method of a model
  or mixture, ``jax.tree_util.Partial(fn, params)``, a plain function) into a pytree callable whose arrays are
  *traced* by ``eqx.filter_jit``: two models of one architecture share one compilation, no weight is compiled in as a
  constant, and ``jax.grad`` / ``jax.vmap`` reach every array inside it. A plain Python function is a static
  argument: a new lambda or closure compiles anew (pass the same function object, or a ``Partial``).
* :func:`front_door` validates what every estimator shares (the SDE, the points or the sample shape, the key, the
  score, an optional prior and batch size) and returns a :class:`Front`: the score and prior as *flat* traced callables
  on one point of shape (D,), D the product of the event shape, and the points flattened to (n, D). Kernels work on
  flat points only; :meth:`Front.unflatten` restores the event shape of returned points.
* Eager or traced. Called with concrete arrays, the front door checks values on the host (NaN in x, a score that is
  non-finite at a few probe times) and raises naming the argument before any compiled work; after the kernel,
  :meth:`Front.finite` diagnoses a non-finite result on the host. Under ``jit``, ``vmap`` or ``grad`` (any traced
  leaf), value checks become runtime checks with ``equinox.error_if`` (diffrax's pattern): a NaN still raises.
* Shape checks are abstract (``jax.eval_shape``) and cached per score type, tree structure, leaf shapes and event
  shape, so a repeated call traces nothing.
* :func:`map_points` applies a per-point kernel over the points in chunks of ``batch_size`` (``jax.lax.map``), so
  peak memory is bounded by the chunk, not by n; with per-point keys the result does not depend on the chunking.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, NamedTuple, Optional

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_key, check_points, check_positive_int, check_shape
from .sde import LinearSDE, check_sde


PRIOR_MISMATCH_NATS = 0.1  # mean KL(N(alpha_T x, sigma_T^2 I) || prior) per point above which an estimator warns


class PriorMismatchWarning(UserWarning):
    """The prior at T is far from p_T for these points: the mean of :meth:`LinearSDE.prior_mismatch` (an upper
    bound on what starting from the prior instead of p_T costs, in nats per point) exceeds 0.1 nats. Pass
    ``prior_log_prob`` (e.g. the exact log p_T) or use an SDE that reaches its prior.

    Arguments:
        message: the warning text (str).
    """


class SingleSampleWarning(UserWarning):
    """An estimate's standard error is NaN because it is made from one Monte Carlo sample (``n_times=1``,
    ``n_throws=1``, ``Hutchinson(n_probes=1)``, ...): a spread needs at least two.

    Arguments:
        message: the warning text (str).
    """


def warn_single_sample(count: int, name: str, stacklevel: int = 3):
    """Warn (:class:`SingleSampleWarning`) that the stderr is NaN when ``count`` (the argument ``name``) is 1."""
    if count == 1:
        import warnings

        warnings.warn(f"{name}=1: one sample per point, so the stderr is NaN (use {name} >= 2 for an error bar)",
                      SingleSampleWarning, stacklevel=stacklevel)


def warn_prior_mismatch(front: "Front", sde, stacklevel: int = 3):
    """Eagerly, without ``prior_log_prob``: warn (:class:`PriorMismatchWarning`) when the mean
    ``sde.prior_mismatch(x)`` over the points exceeds :data:`PRIOR_MISMATCH_NATS` (cheap: closed form)."""
    if not front.eager or front.prior is not None or front.x is None:
        return
    m = float(jnp.mean(sde.prior_mismatch(front.x)))
    if m > PRIOR_MISMATCH_NATS:
        import warnings

        warnings.warn(f"sde: the prior at T is far from p_T for these points (mean sde.prior_mismatch(x) = {m:.3g} "
                      f"nats > {PRIOR_MISMATCH_NATS}); log p(x) may be off by up to that much. Pass prior_log_prob "
                      "or use an SDE whose p_T reaches its prior.", PriorMismatchWarning, stacklevel=stacklevel)


class BoundScore(eqx.Module):
    """``getattr(obj, name)`` as a pytree: ``obj`` (a model or mixture registered as a pytree) is traced."""

    obj: object
    name: str = eqx.field(static=True)

    def __call__(self, *args):
        return getattr(self.obj, self.name)(*args)


class NNXScore(eqx.Module):
    """A flax.nnx module (or one of its methods) that is not itself a pytree, split into graphdef (static) and state."""

    graphdef: object = eqx.field(static=True)
    state: object
    name: str = eqx.field(static=True)

    def __call__(self, *args):
        from flax import nnx

        return getattr(nnx.merge(self.graphdef, self.state), self.name)(*args)


class FlatScore(eqx.Module):
    """A score on event-shaped points seen as a score on flat points (D,): reshape in, flatten out."""

    fn: Callable
    event_shape: tuple = eqx.field(static=True)

    def __call__(self, y, t):
        return jnp.reshape(self.fn(jnp.reshape(y, self.event_shape), t), (-1,))


class FlatLogProb(eqx.Module):
    """A log-density on event-shaped points seen as one on flat points (D,)."""

    fn: Callable
    event_shape: tuple = eqx.field(static=True)

    def __call__(self, y):
        return self.fn(jnp.reshape(y, self.event_shape))


def _is_pytree_node(obj) -> bool:
    return not jax.tree_util.treedef_is_leaf(jax.tree_util.tree_structure(obj))


def _nnx_module(obj) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, nnx.Module)


def traced_score(score: Callable, name: str = "score") -> Callable:
    """``score`` (or any callable argument: a prior, a drift) as a pytree callable whose arrays are traced."""
    if score is None or not callable(score):
        raise TypeError(f"{name} must be a callable (a function, a bound method such as model.score, or a module), "
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


def is_traced(*trees) -> bool:
    """True when any leaf of ``trees`` is a tracer, or the call runs inside an outer ``jit`` trace even though every
    argument is a concrete constant (then any array operation yields a tracer)."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees)):
        return True
    return isinstance(jnp.zeros((), jnp.int32) + 0, jax.core.Tracer)


# --- abstract shape checks, cached ---------------------------------------------------------------------------------
_SHAPE_OK: dict = {}
_CACHE_MAX = 512


def _signature(fn, *extra):
    """A hashable description of ``fn`` as a pytree (structure, leaf shapes/dtypes, static leaves), or None."""
    leaves, treedef = jax.tree_util.tree_flatten(fn)
    sig = []
    for leaf in leaves:
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            sig.append((tuple(leaf.shape), str(leaf.dtype), isinstance(leaf, jax.core.Tracer)))
        else:
            sig.append(leaf)
    key = (treedef, tuple(sig), extra)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _call(fn, *args):
    return fn(*args)


def abstract_eval(fn: Callable, *args):
    """``jax.eval_shape`` of ``fn(*args)`` with ``fn`` passed as an argument: ``fn`` may be a pytree whose leaves are
    tracers of an outer transformation (a model under ``jit``/``grad``), which must not become a cache key."""
    return eqx.filter_eval_shape(_call, fn, *args)


def _cached_eval_shape(fn, args, what, check: Callable) -> None:
    key = _signature(fn, what, tuple((a.shape, str(a.dtype)) for a in args))
    if key is not None and key in _SHAPE_OK:
        return
    check(fn, args)
    if key is not None:
        if len(_SHAPE_OK) >= _CACHE_MAX:
            _SHAPE_OK.clear()
        _SHAPE_OK[key] = True


def _int(d) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, (bool, np.bool_))


def _declared_event_shape(score):
    """The event shape a score declares (``event_shape``, a tuple of ints, or ``dim``, giving (dim,), of a model,
    adapter or its ``net``), or None."""
    for obj in (score, getattr(score, "__self__", None), getattr(score, "obj", None)):
        for o in (obj, getattr(obj, "net", None)):
            if o is None:
                continue
            ev = getattr(o, "event_shape", None)
            if isinstance(ev, tuple) and ev and all(_int(d) for d in ev):
                return tuple(int(d) for d in ev)
            d = getattr(o, "dim", None)
            if _int(d):
                return (int(d),)
    return None


def check_score(score: Callable, event_shape: tuple, dtype, name: str = "score", x_name: str = "x") -> None:
    """``score`` maps one point of shape ``event_shape`` and a scalar time to a floating array of that shape
    (checked abstractly with ``jax.eval_shape``, cached: a repeated call traces nothing)."""
    ev = tuple(event_shape)
    args = (jax.ShapeDtypeStruct(ev, dtype), jax.ShapeDtypeStruct((), dtype))

    def check(fn, a):
        want = _declared_event_shape(fn)
        if want is not None and ev != want:
            raise ValueError(f"{x_name} has event shape {ev}, the {name} expects {want}")
        try:
            out = abstract_eval(fn, *a)
        except Exception as e:  # noqa: BLE001 - any failure to trace is the score's
            raise ValueError(f"{name} could not be evaluated on one point of {x_name}'s event shape {ev} and a scalar "
                             f"t (does the {name} expect another shape?): {type(e).__name__}: {e}") from e
        if not hasattr(out, "shape") or tuple(out.shape) != ev or not jnp.issubdtype(out.dtype, jnp.floating):
            got = f"shape {tuple(out.shape)} dtype {out.dtype}" if hasattr(out, "shape") else type(out).__name__
            raise ValueError(f"{name}(x, t) must return a floating array of the point's shape {ev} for x of shape "
                             f"{ev}, got {got}")

    _cached_eval_shape(score, args, ("score", name), check)


def check_log_prob(fn: Callable, event_shape: tuple, dtype, name: str = "prior_log_prob") -> None:
    """``fn`` maps one point of shape ``event_shape`` to a scalar (abstractly, cached)."""
    ev = tuple(event_shape)

    def check(f, a):
        try:
            out = abstract_eval(f, *a)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{name} could not be evaluated on one point of shape {ev}: {type(e).__name__}: {e}") \
                from e
        if getattr(out, "shape", None) != ():
            raise ValueError(f"{name}(y) must return a scalar for one point y of shape {ev}, "
                             f"got {getattr(out, 'shape', type(out).__name__)}")

    _cached_eval_shape(fn, (jax.ShapeDtypeStruct(ev, dtype),), ("log_prob", name), check)


def flat_score(score: Callable, event_shape: tuple) -> Callable:
    return score if len(event_shape) == 1 else FlatScore(score, tuple(event_shape))


# --- the front door ------------------------------------------------------------------------------------------------
def probe_times(sde, t_lo: float, t_hi: Optional[float] = None) -> np.ndarray:
    """The few times in [t_lo, t_hi] (default [t0, T]) at which the front door probes the score: geometric from
    t_lo (where a score is most fragile), plus the midpoint."""
    t_hi = float(sde.T if t_hi is None else t_hi)
    t_lo = float(t_lo)
    if t_lo <= 0:
        t_lo = min(1e-5 * sde.T, 0.5 * t_hi)
    lo, hi = min(t_lo, t_hi), max(t_lo, t_hi)
    return np.unique(np.concatenate([np.geomspace(lo, hi, 6), [0.5 * (lo + hi)]]))


class Front(NamedTuple):
    """What :func:`front_door` hands an estimator: flat traced ``score`` (D,) -> (D,); flat points ``x`` (n, D)
    (None for a sampler); ``event_shape``; ``n``; ``dtype``; ``key`` (checked, or None); ``prior`` a flat traced
    log-density (D,) -> scalar or None; ``batch_size``; ``eager`` (no traced leaf: host checks apply); ``times`` the
    probe times; ``names`` the user-facing name of each checked callable."""

    score: Callable
    x: Optional[jax.Array]
    event_shape: tuple
    n: int
    dtype: object
    key: object
    prior: Optional[Callable]
    batch_size: Optional[int]
    eager: bool
    times: np.ndarray

    @property
    def dim(self) -> int:
        return math.prod(self.event_shape)

    def unflatten(self, y):
        """Points (n, ..., D) back to (n, ..., *event_shape)."""
        return None if y is None else jnp.reshape(y, y.shape[:-1] + tuple(self.event_shape))

    def point_keys(self, key=None):
        return point_keys(self.key if key is None else key, self.n)

    def finite(self, values, diagnose: Optional[Callable[[int], None]] = None, what: str = "the result"):
        """``values`` (leading axis n), checked finite: eagerly on the host (``diagnose(i)`` may raise a more precise
        error for the first failing point i), under a trace with ``equinox.error_if``. Returns ``values``."""
        if self.eager and not is_traced(values):
            v = np.asarray(values)
            bad = ~np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1) if v.ndim else np.array([not np.isfinite(v)])
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                if diagnose is not None:
                    diagnose(i)
                raise ValueError(f"{what} is non-finite for point {i}: the score returned NaN/inf on its path, or "
                                 "the computation overflowed")
            return values
        return eqx.error_if(values, ~jnp.all(jnp.isfinite(values)),
                            f"{what} is non-finite: the score returned NaN/inf, or the computation overflowed")


def score_sde(score):
    """The SDE a score carries, or None: ``score.sde`` (an adapter, a :class:`~diffdens.DiffusedMixture`) or
    ``score.__self__.sde`` (a bound method such as ``model.score`` or ``p.score``)."""
    for obj in (score, getattr(score, "__self__", None)):
        s = getattr(obj, "sde", None) if obj is not None else None
        if isinstance(s, LinearSDE):
            return s
    return None


def check_score_sde(score, sde, name: str = "score"):
    """Raise ``ValueError`` naming ``sde`` when the score carries an SDE other than ``sde``: a model trained (or an
    adapter built) for one SDE is the wrong score under another. To use it anyway on purpose, wrap it
    (``lambda x, t: model.score(x, t)`` or ``jax.tree_util.Partial(model.score)``), which hides its SDE."""
    own = score_sde(score)
    if own is not None and own != sde:
        raise ValueError(f"sde: the {name} was built for {own!r} but sde is {sde!r}; pass the SDE the {name} was "
                         f"trained for (or wrap the {name}, e.g. lambda x, t: model.score(x, t), to use it anyway)")


def front_door(score, sde, x=None, *, shape=None, key=None, key_required: bool = False, times=None,
               prior_log_prob=None, batch_size=None, score_name: str = "score", x_name: str = "x",
               dtype=None) -> Front:
    """Validate what every estimator and sampler shares, eagerly and naming the argument (see the module docstring).

    Arguments:
        score: the score callable, ``score(x, t)`` on one point of the event shape.
        sde: a :class:`diffdens.LinearSDE`; a score that carries its own SDE (an adapter, ``model.score``, a
            mixture's ``p.score``) must carry this one (else ``ValueError`` naming ``sde``; wrap the score in a
            lambda or ``jax.tree_util.Partial`` to opt out).
        x: the points (n, *event_shape) of an estimator; or ``shape`` (n, *event_shape) of a sampler.
        key: a PRNG key; required when ``key_required``.
        times: probe times at which an eager call evaluates the score once before compiled work (None: no probe).
        prior_log_prob: None, or a log-density of one point of the event shape.
        batch_size: None or a positive int.
    Returns:
        A :class:`Front`.
    """
    check_sde(sde)
    if x is not None:
        x = check_points(x, x_name)
        n, event_shape, dt = x.shape[0], tuple(x.shape[1:]), x.dtype
    else:
        shp = check_shape(shape, "shape")
        n, event_shape = shp[0], shp[1:]
        dt = jnp.dtype(dtype or jnp.result_type(float))
    if key is not None or key_required:
        key = check_key(key)
    batch_size = None if batch_size is None else check_positive_int(batch_size, "batch_size")
    check_score_sde(score, sde, score_name)
    score = traced_score(score, score_name)
    check_score(score, event_shape, dt, score_name, x_name if x is not None else "shape")
    prior = None
    if prior_log_prob is not None:
        prior = traced_score(prior_log_prob, "prior_log_prob")
        check_log_prob(prior, event_shape, dt)
        prior = prior if len(event_shape) == 1 else FlatLogProb(prior, event_shape)
    fscore = flat_score(score, event_shape)
    xf = None if x is None else jnp.reshape(x, (n, -1))
    eager = not is_traced(score, x, key, prior)
    times = None if times is None else np.asarray(times, dtype=np.float64)
    if eager and times is not None:
        x0 = xf[0] if xf is not None else jnp.zeros((math.prod(event_shape),), dt)
        probe_score(fscore, x0, times, score_name, "x[0]" if xf is not None else "a point")
    return Front(fscore, xf, event_shape, n, dt, key, prior, batch_size, eager, times)


def check_callable(fn, event_shape, dtype, name: str, *, takes_time: bool = True) -> Callable:
    """A further callable argument (an inference drift (y, t) -> like y): traced, shape-checked, made flat."""
    fn = traced_score(fn, name)
    if takes_time:
        check_score(fn, event_shape, dtype, name)
        return flat_score(fn, event_shape)
    check_log_prob(fn, event_shape, dtype, name)
    return fn if len(event_shape) == 1 else FlatLogProb(fn, tuple(event_shape))


class GridBrownianPath(diffrax.AbstractBrownianPath):
    """Brownian increments on a fixed uniform grid, drawn up front from one key: the increment over [s, s + h] of
    grid step k = round((s - start) / h) is sqrt(h) z_k with z_k ~ N(0, I). For fixed-step Euler-Maruyama solves in
    diffrax: unlike ``diffrax.UnsafeBrownianPath`` it is differentiable (the increments are arrays, so ``jax.grad``
    flows through the solve, the reparameterization trick), and deterministic per key."""

    start: jax.Array
    h: jax.Array
    z: jax.Array
    levy_area: type = eqx.field(static=True, default=diffrax.BrownianIncrement)

    def __init__(self, key, start, h, n_steps: int, shape, dtype):
        self.levy_area = diffrax.BrownianIncrement
        self.start = jnp.asarray(start, dtype)
        self.h = jnp.asarray(h, dtype)
        self.z = jax.random.normal(key, (n_steps,) + tuple(shape), dtype)

    @property
    def t0(self):
        return self.start

    @property
    def t1(self):
        return self.start + self.h * self.z.shape[0]

    def evaluate(self, t0, t1=None, left: bool = True, use_levy: bool = False):
        if t1 is None:
            raise ValueError("GridBrownianPath gives increments over grid steps only (pass t0 and t1)")
        k = jnp.clip(jnp.round((t0 - self.start) / self.h).astype(jnp.int32), 0, self.z.shape[0] - 1)
        dw = jnp.sqrt(jnp.asarray(t1 - t0, self.z.dtype)) * self.z[k]
        return diffrax.BrownianIncrement(t1 - t0, dw) if use_levy else dw


def point_keys(key, n: int):
    """One key per point: ``jax.random.split(key, n)`` (the first n keys do not depend on n, so chunking and
    sharding leave each point's randomness unchanged)."""
    return jax.random.split(key, n)


def map_points(fn: Callable, args, batch_size: Optional[int]):
    """``vmap(fn)(*args)`` over the leading (points) axis, in sequential chunks of ``batch_size`` points."""
    n = jax.tree_util.tree_leaves(args)[0].shape[0]
    if batch_size is None or batch_size >= n:
        return jax.vmap(fn)(*args)
    b = int(batch_size)
    n_chunks = -(-n // b)
    pad = n_chunks * b - n

    def chunked(a):  # pad with copies of the last point (stripped below) so every chunk has b points
        if pad:
            a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)])
        return a.reshape((n_chunks, b) + a.shape[1:])

    out = jax.lax.map(lambda a: jax.vmap(fn)(*a), jax.tree_util.tree_map(chunked, tuple(args)))
    return jax.tree_util.tree_map(lambda o: o.reshape((n_chunks * b,) + o.shape[2:])[:n], out)


def first_nonfinite_time(score: Callable, x, times) -> Optional[float]:
    """The first of ``times`` at which ``score(x, t)`` is non-finite for one flat point x (eager), or None."""
    ts = jnp.asarray(np.asarray(times, dtype=np.float64), x.dtype)
    s = np.asarray(_probe(score, x, ts))
    where = np.flatnonzero(~np.isfinite(s).all(axis=-1))
    return None if where.size == 0 else float(ts[where[0]])


def probe_score(score: Callable, x0, times, name: str = "score", where: str = "x[0]") -> None:
    """Evaluate ``score`` at one point at a few ``times`` (one small compiled call) and raise naming ``name`` if it
    returns NaN or inf there: the common case of a broken model is caught before the estimator runs."""
    t_bad = first_nonfinite_time(score, x0, times)
    if t_bad is not None:
        raise ValueError(f"{name} returned a non-finite value at t={t_bad:.6g} for {where}")


def diagnose_score(score: Callable, x, times, name: str = "score") -> Callable[[int], None]:
    """A ``diagnose(i)`` for :meth:`Front.finite`: raise naming the time where ``score`` is non-finite at point i."""

    def diagnose(i: int) -> None:
        xi = jnp.asarray(x)[min(i, x.shape[0] - 1)]
        t_bad = first_nonfinite_time(score, xi, times)
        if t_bad is not None:
            raise ValueError(f"{name} returned a non-finite value at t={t_bad:.6g} (on the path of point {i}); "
                             "the result would be NaN")

    return diagnose


@eqx.filter_jit
def _probe(score, x0, ts):
    return jax.vmap(lambda tt: score(x0, tt))(ts)
