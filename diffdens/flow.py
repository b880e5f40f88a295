"""One ODE with a carried log-density, shared by the probability-flow ODE (:mod:`diffdens.ode`) and the
high-density ODE (:mod:`diffdens.modes`).

Both flows are dx/dt = f(t) x - c g(t)^2 s(x, t) with the change of log p_t(x_t) along the path carried as a second
state component (the instantaneous change of variables):

* ``kind="pf"``, c = 1/2 (Song et al. 2021b, eqs. 6-7): d/dt log p_t(x_t) = -div(f x - g^2/2 s)
  = -f D + g^2/2 div s;
* ``kind="hd"``, c = 1 (Karczewski et al. 2025, eq. 18 and Lemma 1, eq. 22):
  d/dt log p_t(x_t) = -f D + g^2/2 div s - g^2/2 |s|^2.

The divergence is exact (D Jacobian-vector products) or Hutchinson's (one JVP per fixed probe; ``estimate``).
Every solve is diffrax with a PID step controller; the kernels are compiled with ``eqx.filter_jit`` taking the score
as a traced pytree (see :func:`diffdens._engine.traced_score`) and map over points in chunks (``map_points``).
Chunking changes only the batch layout XLA compiles for; the per-point arithmetic then differs in the last bits, which
an adaptive solver can amplify to the size of its tolerance (an accepted step becomes rejected): results for
different ``batch_size`` agree to within rtol/atol, not bit for bit. Per-point keys keep the Hutchinson probes the
same whatever the chunking.

Function evaluations (NFE): diffrax's attempted steps (``sol.stats["num_steps"]``) times the solver's cost per step,
from its Butcher tableau (:attr:`diffdens.SolveOptions.nfe_law`). Each evaluation of the flow's vector field is one
score evaluation (plus its JVPs for the divergence).

Gradients flow through the solve by the adjoint of :class:`diffdens.SolveOptions` (``jax.grad`` with respect to the
points, or to any array inside the score).
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._engine import Front, first_nonfinite_time, map_points
from .estimate import make_probes, value_and_divergence
from .options import Hutchinson, SolveOptions

FLOWS = ("pf", "hd")
DEFAULT_BATCH_SIZE = 1024


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


class FlowField(eqx.Module):
    """The diffrax vector field of (x, log-density change) for one point; ``probes`` None for the exact divergence,
    else (m, D) fixed probes (then the carried change has one entry per probe). A pytree: the score's arrays and the
    probes are leaves, which diffrax's continuous adjoint (``BacksolveAdjoint``) needs to differentiate them."""

    score: Callable
    probes: Optional[jax.Array]
    sde: object = eqx.field(static=True)
    kind: str = eqx.field(static=True)

    def __call__(self, t, y, args):
        x, _ = y
        d = x.shape[-1]
        s, div = value_and_divergence(lambda z: self.score(z, t), x, self.probes)
        f, g2 = self.sde.f(t), self.sde.g2(t)
        if self.kind == "pf":
            return f * x - 0.5 * g2 * s, -f * d + 0.5 * g2 * div
        return f * x - g2 * s, -f * d + 0.5 * g2 * div - 0.5 * g2 * jnp.sum(s**2)


def flow_field(score, sde, kind: str, probes) -> Callable:
    """The flow's vector field as a pytree (:class:`FlowField`)."""
    return FlowField(score, probes, sde, kind)


def solve_ode(vf, y0, t_start, t_end, rtol, atol, *, solver, max_steps: int, adjoint=None, ts=None):
    """One adaptive diffrax solve from t_start to t_end (either direction). Returns (ys, y_last, t_last, num_steps,
    ok): ys the states at ``ts`` (None if ts is None), y_last / t_last the state and time where the solve stopped
    (t_end when it succeeded)."""
    saveat = diffrax.SaveAt(t1=True) if ts is None else diffrax.SaveAt(ts=ts, t1=True)
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), solver, t_start, t_end, None, y0, saveat=saveat,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=max_steps, throw=False,
        adjoint=diffrax.RecursiveCheckpointAdjoint() if adjoint is None else adjoint,
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
def flow_kernel(score, sde, x, keys, t_start, t_end, rtol, atol, *, kind: str, hutchinson: Optional[Hutchinson],
                solver, max_steps: int, adjoint, batch_size: Optional[int]) -> FlowResult:
    """The unchecked, compiled kernel: the flow ``kind`` for every flat point of x (n, D) from t_start to t_end,
    carrying the change of log p_t along each path. ``keys`` (n,) per-point keys for Hutchinson probes, or None."""

    def one(xi, ki):
        probes = None if hutchinson is None else make_probes(ki, hutchinson.n_probes, xi.shape[-1], hutchinson.probe,
                                                              xi.dtype)
        c0 = jnp.zeros(() if probes is None else (hutchinson.n_probes,), xi.dtype)
        _, (xe, ce), tl, steps, ok = solve_ode(flow_field(score, sde, kind, probes), (xi, c0), t_start, t_end,
                                               rtol, atol, solver=solver, max_steps=max_steps, adjoint=adjoint)
        return FlowResult(xe, ce, tl, steps, ok)

    if keys is None:
        return map_points(lambda xi: one(xi, None), (x,), batch_size)
    return map_points(one, (x, keys), batch_size)


def run_flow(front: Front, sde, x, keys, t_start, t_end, solve: SolveOptions, *, kind,
             hutchinson: Optional[Hutchinson] = None, what="ODE"):
    """Call :func:`flow_kernel` on flat points x with times and tolerances as traced arrays, then check every solve
    (eagerly: raise saying whether the score went non-finite or the step budget ran out; traced: ``error_if``).
    Returns (FlowResult, nfe)."""
    dt = x.dtype
    res = flow_kernel(front.score, sde, x, keys, jnp.asarray(t_start, dt), jnp.asarray(t_end, dt),
                      jnp.asarray(solve.rtol, dt), jnp.asarray(solve.atol, dt), kind=kind, hutchinson=hutchinson,
                      solver=solve.solver, max_steps=solve.max_steps, adjoint=solve.adjoint,
                      batch_size=front.batch_size)
    res = checked(front, res, x, flow_drift(front.score, sde, kind), t_start, t_end, solve.max_steps, what)
    return res, nfe_from_steps(res.steps, solve.nfe_law)


def checked(front: Front, res, x_start, drift, t_start, t_end, max_steps: int, what: str):
    """``res`` (a FlowResult, or any NamedTuple with fields x, change, t_last, ok) checked: eagerly with
    :func:`check_solution`; under a trace, an ``equinox.error_if`` on the end state and the change."""
    if front.eager and not any(isinstance(a, jax.core.Tracer) for a in jax.tree_util.tree_leaves(res)):
        check_solution(res.ok, (res.x, res.change), x_start, res.x, res.t_last, front.score, drift, t_start, t_end,
                       max_steps, what)
        return res
    bad_steps = ~jnp.all(res.ok)
    x = eqx.error_if(res.x, bad_steps, f"{what} solve did not reach its end time within max_steps={max_steps} "
                                       "(or the score returned NaN/inf on the path); raise solve.max_steps or loosen "
                                       "rtol/atol")
    change = eqx.error_if(res.change, ~jnp.all(jnp.isfinite(res.change)) | ~jnp.all(jnp.isfinite(x)),
                          f"the {what} result is non-finite: the score returned NaN/inf on the path")
    return res._replace(x=x, change=change)


# --- after the kernel -------------------------------------------------------------------------------------------
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
    t_bad = first_nonfinite_time(score, jnp.asarray(x_start)[i], grid)
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
