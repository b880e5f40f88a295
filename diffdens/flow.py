"""One ODE with a carried log-density, shared by the probability-flow ODE (:mod:`diffdens.ode`) and the
high-density ODE (:mod:`diffdens.modes`).

Both flows are dx/dt = f(t) x - c g(t)^2 s(x, t) with the change of log p_t(x_t) along the path carried as a second
state component (the instantaneous change of variables):

* ``kind="pf"``, c = 1/2 (``002_f66275a1c9cf2a92.txt`` eqs. 6-7): d/dt log p_t(x_t) = -div(f x - g^2/2 s)
  = -f D + g^2/2 div s;
* ``kind="hd"``, c = 1 (``004_720dbaeb92b913c7.txt`` eq. 18 and Lemma 1, eq. 22):
  d/dt log p_t(x_t) = -f D + g^2/2 div s - g^2/2 |s|^2.

The divergence is exact (D Jacobian-vector products) or Hutchinson's (one JVP per fixed probe; ``estimate``).
Every solve is diffrax with a PID step controller; the kernels are compiled with ``eqx.filter_jit`` taking the score
as a traced pytree (see :func:`diffdens._engine.traced_score`) and map over points in chunks (``map_points``).
Chunking changes only the batch layout XLA compiles for; the per-point arithmetic then differs in the last bits, which
an adaptive solver can amplify to the size of its tolerance (an accepted step becomes rejected): results for
different ``batch_size`` agree to within rtol/atol, not bit for bit. Per-point keys keep the Hutchinson probes the
same whatever the chunking.

Function evaluations (NFE). diffrax reports the number of steps it attempted (``sol.stats["num_steps"]``, accepted
plus rejected), not the number of vector-field evaluations. For a given solver object :func:`nfe_model` measures
once, by counting actual vector-field calls on a small reference problem at three tolerances, the affine law
evaluations = a + b * num_steps (a: the controller's initial-step selection and a first-same-as-last start; b: the
new stages per attempted step, e.g. 6 for Tsit5 and Dopri5, 2 for Heun). The law is checked on the third
tolerance; a solver whose cost per step varies (an implicit solver's Newton iterations) gets no law, and the
estimators then report ``nfe=None``. Each evaluation of the flow's vector field is one score evaluation (plus its
JVPs for the divergence).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_key, check_option, check_positive, check_positive_int
from ._engine import map_points
from .estimate import PROBES, make_probes, value_and_divergence

FLOWS = ("pf", "hd")
DIVERGENCES = ("exact", "hutchinson")
DEFAULT_BATCH_SIZE = 1024


# --- options ----------------------------------------------------------------------------------------------------
class SolveOptions(NamedTuple):
    """Validated solver options: tolerances, step budget, the solver object and its NFE law (a, b) or None."""

    rtol: float
    atol: float
    max_steps: int
    solver: object
    nfe_law: Optional[tuple]


def check_solve_options(rtol, atol, max_steps, solver) -> SolveOptions:
    """Eager checks of the solver arguments (each error names its argument)."""
    rtol = check_positive(rtol, "rtol")
    atol = check_positive(atol, "atol")
    max_steps = check_positive_int(max_steps, "max_steps")
    solver = diffrax.Tsit5() if solver is None else solver
    if not isinstance(solver, diffrax.AbstractSolver):
        raise TypeError(f"solver must be a diffrax solver (e.g. diffrax.Tsit5()), got {type(solver).__name__}")
    return SolveOptions(rtol, atol, max_steps, solver, nfe_model(solver))


def check_divergence(divergence, probe, n_probes, key):
    """Eager checks of the divergence options; the key is required for Hutchinson probes."""
    check_option(divergence, DIVERGENCES, "divergence")
    check_option(probe, PROBES, "probe")
    n_probes = check_positive_int(n_probes, "n_probes")
    if divergence == "hutchinson":
        key = check_key(key, "key")
    return n_probes, key


def probe_times(t_lo, t_hi, n: int = 5):
    """A few times in [t_lo, t_hi] at which the front door probes the score."""
    return np.linspace(float(t_lo), float(t_hi), n)


# --- NFE ----------------------------------------------------------------------------------------------------------
_NFE_LAWS: dict = {}


def nfe_model(solver) -> Optional[tuple]:
    """(a, b) with vector-field evaluations = a + b * num_steps for ``solver`` under a PID controller started with
    dt0=None, measured once per solver by counting calls (see the module docstring); None if no such law holds."""
    try:
        cache_key = (type(solver), solver)
        hash(cache_key)
    except TypeError:
        cache_key = (type(solver), id(solver))
    if cache_key not in _NFE_LAWS:
        _NFE_LAWS[cache_key] = _measure_nfe_law(solver)
    return _NFE_LAWS[cache_key]


def _measure_nfe_law(solver) -> Optional[tuple]:
    if isinstance(solver, diffrax.AbstractImplicitSolver):  # Newton iterations: the cost per step varies
        return None
    counts = []
    calls = [0]

    def bump():
        calls[0] += 1

    @eqx.filter_jit
    def run(tol):
        def vf(t, y, _):
            jax.debug.callback(bump)
            return jnp.stack([jnp.cos(8.0 * t) * y[1], -y[0] - 0.3 * y[1]])

        sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), solver, 0.0, 3.0, None, jnp.array([1.0, 0.0]),
                                  stepsize_controller=diffrax.PIDController(rtol=tol, atol=tol), max_steps=100_000,
                                  throw=False)
        return sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful

    try:
        for tol in (1e-3, 1e-5, 1e-4):
            calls[0] = 0
            steps, ok = run(jnp.asarray(tol, jnp.float32))
            jax.effects_barrier()
            if not bool(ok):
                return None
            counts.append((int(steps), calls[0]))
    except Exception as e:  # noqa: BLE001 - a solver that cannot run an adaptive ODE solve
        raise ValueError(f"solver {type(solver).__name__} cannot solve an ODE with PID step-size control "
                         f"(it needs an embedded error estimate): {type(e).__name__}: {e}") from e
    (s1, c1), (s2, c2), (s3, c3) = counts
    if s1 == s2:
        return None
    b = (c2 - c1) / (s2 - s1)
    a = c1 - b * s1
    if b != int(b) or a != int(a) or a + b * s3 != c3:
        return None
    return int(a), int(b)


def nfe_from_steps(steps, law) -> Optional[jax.Array]:
    """Per-point vector-field evaluations from diffrax's per-point ``num_steps`` and the solver's law."""
    if law is None:
        return None
    a, b = law
    return a + b * jnp.asarray(steps)


# --- the flows ---------------------------------------------------------------------------------------------------
def flow_drift(score, sde, kind: str) -> Callable:
    """dx/dt of the flow: f x - g^2/2 s (PF-ODE) or f x - g^2 s (HD-ODE)."""
    c = 0.5 if kind == "pf" else 1.0
    return lambda x, t: sde.f(t) * x - c * sde.g2(t) * score(x, t)


def flow_field(score, sde, kind: str, probes) -> Callable:
    """The diffrax vector field of (x, log-density change) for one point; ``probes`` None for the exact divergence,
    else (m, D) fixed probes (then the carried change has one entry per probe)."""

    def vf(t, y, _):
        x, _ = y
        d = x.shape[-1]
        s, div = value_and_divergence(lambda z: score(z, t), x, probes)
        f, g2 = sde.f(t), sde.g2(t)
        if kind == "pf":
            return f * x - 0.5 * g2 * s, -f * d + 0.5 * g2 * div
        return f * x - g2 * s, -f * d + 0.5 * g2 * div - 0.5 * g2 * jnp.sum(s**2)

    return vf


def solve_ode(vf, y0, t_start, t_end, rtol, atol, *, solver, max_steps: int, ts=None):
    """One adaptive diffrax solve from t_start to t_end (either direction). Returns (ys, y_last, t_last, num_steps,
    ok): ys the states at ``ts`` (None if ts is None), y_last / t_last the state and time where the solve stopped
    (t_end when it succeeded)."""
    saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts, t1=True)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), solver, t_start, t_end, None, y0, saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps, throw=False,
    )
    last = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    ys = None if ts is None else jax.tree_util.tree_map(lambda a: a[:-1], sol.ys)
    return ys, last, sol.ts[-1], sol.stats["num_steps"], sol.result == diffrax.RESULTS.successful


class FlowResult(NamedTuple):
    """Per point: the end state x (n, D), the log-density change (n,) or (n, n_probes), the time where each solve
    stopped (n,), diffrax's attempted steps (n,) and success flags (n,)."""

    x: jax.Array
    change: jax.Array
    t_last: jax.Array
    steps: jax.Array
    ok: jax.Array


@eqx.filter_jit
def flow_kernel(score, sde, x, keys, t_start, t_end, rtol, atol, *, kind: str, divergence: str, n_probes: int,
                probe: str, solver, max_steps: int, batch_size: Optional[int]) -> FlowResult:
    """The unchecked, compiled kernel: the flow ``kind`` for every point of x from t_start to t_end, carrying the
    change of log p_t along each path. ``keys`` (n,) per-point keys for Hutchinson probes, or None (exact)."""

    def one(xi, ki):
        probes = None if divergence == "exact" else make_probes(ki, n_probes, xi.shape[-1], probe, xi.dtype)
        c0 = jnp.zeros(() if probes is None else (n_probes,), xi.dtype)
        _, (xe, ce), tl, steps, ok = solve_ode(flow_field(score, sde, kind, probes), (xi, c0), t_start, t_end,
                                               rtol, atol, solver=solver, max_steps=max_steps)
        return FlowResult(xe, ce, tl, steps, ok)

    if keys is None:
        return map_points(lambda xi: one(xi, None), (x,), batch_size)
    return map_points(one, (x, keys), batch_size)


def run_flow(score, sde, x, keys, t_start, t_end, opts: SolveOptions, *, kind, divergence="exact", n_probes=1,
             probe="rademacher", batch_size=None, what="ODE"):
    """Call :func:`flow_kernel` with times and tolerances as traced arrays, then raise on any failed or non-finite
    solve (saying whether the score went non-finite, or the step budget ran out). Returns (FlowResult, nfe)."""
    dt = x.dtype
    res = flow_kernel(score, sde, x, keys, jnp.asarray(t_start, dt), jnp.asarray(t_end, dt),
                      jnp.asarray(opts.rtol, dt), jnp.asarray(opts.atol, dt), kind=kind, divergence=divergence,
                      n_probes=n_probes, probe=probe, solver=opts.solver, max_steps=opts.max_steps,
                      batch_size=batch_size)
    check_solution(res.ok, (res.x, res.change), x, res.x, res.t_last, score, flow_drift(score, sde, kind),
                   t_start, t_end, opts.max_steps, what)
    return res, nfe_from_steps(res.steps, opts.nfe_law)


# --- after the kernel -------------------------------------------------------------------------------------------
def _first_nonfinite(score, x, times):
    ts = jnp.asarray(np.asarray(times, dtype=np.float64), x.dtype)
    s = np.asarray(jax.vmap(lambda tt: score(x, tt))(ts))
    bad = np.flatnonzero(~np.isfinite(s).all(axis=-1))
    return None if bad.size == 0 else float(ts[bad[0]])


def check_solution(ok, values, x_start, x_last, t_last, score, drift, t_start, t_end, max_steps: int,
                   what: str) -> None:
    """Raise if any point's solve failed or gave non-finite values.

    A non-finite score is looked for at the point's start over a grid of times, at the state where its solve stopped,
    and at trial Euler steps from there (where an adaptive solver stalls when the score turns NaN); if found, a
    ValueError says at which t. Otherwise a failed solve is a RuntimeError about ``max_steps`` and a non-finite
    result a ValueError."""
    flat = [np.asarray(v).reshape(np.asarray(v).shape[0], -1) for v in jax.tree_util.tree_leaves(values)]
    finite = np.all([np.isfinite(v).all(axis=1) for v in flat], axis=0)
    okk = np.asarray(ok) & finite
    if okk.all():
        return
    i = int(np.flatnonzero(~okk)[0])
    grid = np.linspace(float(min(t_start, t_end)), float(max(t_start, t_end)), 33)
    t_bad = _first_nonfinite(score, jnp.asarray(x_start)[i], grid)
    if t_bad is None:
        xl, tl = jnp.asarray(x_last)[i], jnp.asarray(t_last)[i]
        if bool(jnp.all(jnp.isfinite(xl))):
            v = drift(xl, tl)
            if not bool(jnp.all(jnp.isfinite(v))):
                t_bad = float(tl)
            else:
                span = float(t_end) - float(tl)
                for h in [0.0] + [span * 10.0**-k for k in range(10)]:
                    if not bool(jnp.all(jnp.isfinite(score(xl + h * v, tl + h)))):
                        t_bad = float(tl + h)
                        break
    if t_bad is not None:
        raise ValueError(f"score returned a non-finite value at t={t_bad:.6g} (on the {what} path of point {i}); "
                         "the result would be NaN")
    if not bool(np.asarray(ok)[i]):
        bad = np.flatnonzero(~np.asarray(ok))
        raise RuntimeError(f"{what} solve did not reach t={float(t_end):.6g} within max_steps={max_steps} for points "
                           f"{bad[:10].tolist()} (stopped at t={float(jnp.asarray(t_last)[i]):.6g}); raise max_steps "
                           "or loosen rtol/atol")
    raise ValueError(f"the {what} result is non-finite for point {i} although the score was finite where probed; "
                     "the computation overflowed")
