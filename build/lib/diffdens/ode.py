"""The probability-flow ODE likelihood (a continuous normalizing flow).

``002_f66275a1c9cf2a92.txt`` eqs. 6-7, ``000_8c59016f91bb37e4.txt`` Sec. 2.2 and App. B: along
dx/dt = f(t) x - g(t)^2/2 s(x, t), log p_0(x_0) = log p_T(x_T) + int_0^T div(f x - g^2/2 s) dt.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Optional

import diffrax
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_t0, check_option, check_points, check_positive, check_positive_int, check_shape
from .estimate import Estimate, make_probes, value_and_divergence
from .sde import LinearSDE, check_sde

DIVERGENCES = ("exact", "hutchinson")


def _pf_vector_field(score, sde):
    def drift(x, t):
        return sde.f(t) * x - 0.5 * sde.g2(t) * score(x, t)

    return drift


def _solve(score, sde, x, t_start, t_end, probes, rtol, atol, solver, max_steps):
    """Integrate (x, delta) from t_start to t_end for one point; delta = int div dt (one entry per probe)."""
    drift = _pf_vector_field(score, sde)

    def vf(t, y, _):
        xx, _ = y
        dx, div = value_and_divergence(lambda z: drift(z, t), xx, probes)
        return dx, div

    n = 1 if probes is None else probes.shape[0]
    y0 = (x, jnp.zeros(() if probes is None else (n,), x.dtype))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vf), solver, t_start, t_end, None, y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        max_steps=max_steps, throw=False,
    )
    (xT, delta) = jax.tree_util.tree_map(lambda a: a[-1], sol.ys)
    ok = sol.result == diffrax.RESULTS.successful
    return xT, delta, sol.stats["num_steps"], ok


def _common_checks(sde, x, t0, rtol, atol, divergence, probe, n_probes, key):
    check_sde(sde)
    x = check_points(x, "x")
    t0 = check_t0(t0, sde.T)
    check_positive(rtol, "rtol")
    check_positive(atol, "atol")
    check_option(divergence, DIVERGENCES, "divergence")
    check_option(probe, ("rademacher", "gaussian"), "probe")
    check_positive_int(n_probes, "n_probes")
    if divergence == "hutchinson" and key is None:
        raise ValueError("key is required when divergence='hutchinson'")
    return x


def _probes_for(key, divergence, n, n_probes, dim, probe, dtype):
    if divergence == "exact":
        return None
    keys = jax.random.split(key, n)
    return jax.vmap(lambda k: make_probes(k, n_probes, dim, probe, dtype))(keys)


def ode_encode(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: Optional[PRNGKeyArray] = None,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t0: float = 1e-5,
    solver=None,
    max_steps: int = 4096,
):
    """Map data x at t0 to x_T along the PF-ODE; returns (x_T, delta, nfe) with
    log p_t0(x) = log p_T(x_T) + delta, delta (n,) or (n, n_probes) for Hutchinson (one estimate per probe)."""
    x = _common_checks(sde, x, t0, rtol, atol, divergence, probe, n_probes, key)
    n, d = x.shape
    probes = _probes_for(key, divergence, n, n_probes, d, probe, x.dtype)
    solver = solver or diffrax.Tsit5()
    xT, delta, steps, ok = _flow_batch(score, sde, x, probes, float(t0), float(sde.T), float(rtol), float(atol),
                                       solver, int(max_steps))
    return xT, delta, _check_solved(ok, steps, max_steps)


@partial(jax.jit, static_argnames=("score", "sde", "t_start", "t_end", "rtol", "atol", "solver", "max_steps"))
def _flow_batch(score, sde, x, probes, t_start, t_end, rtol, atol, solver, max_steps):
    fn = lambda xx, pp: _solve(score, sde, xx, t_start, t_end, pp, rtol, atol, solver, max_steps)
    if probes is None:
        return jax.vmap(lambda xx: fn(xx, None))(x)
    return jax.vmap(fn)(x, probes)


def _check_solved(ok, steps, max_steps):
    """Raise if any solve failed; else the per-point NFE (Tsit5/Dopri5: 6 new evaluations per step, FSAL, + 1)."""
    if not bool(jnp.all(ok)):
        bad = jnp.flatnonzero(~ok)
        raise RuntimeError(f"PF-ODE solve failed (max_steps={max_steps} reached?) for points {bad[:10].tolist()}; "
                           "raise max_steps or loosen rtol/atol")
    return 6 * steps + 1


def ode_log_prob(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: Optional[PRNGKeyArray] = None,
    divergence: str = "exact",
    n_probes: int = 1,
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t0: float = 1e-5,
    solver=None,
    prior_log_prob: Optional[Callable] = None,
    max_steps: int = 4096,
) -> Estimate:
    """log p(x) under the probability-flow ODE, per point (``002_f66275a1c9cf2a92.txt`` eq. 7).

    divergence="exact": D Jacobian-vector products per step, stderr 0. "hutchinson": ``n_probes`` fixed probes per
    point along the whole trajectory (``000_8c59016f91bb37e4.txt`` App. B, all probes in one batched JVP), value the
    mean over probes, stderr their standard error. ``prior_log_prob`` (a function of x_T of shape (D,) or (n, D))
    replaces ``sde.prior_log_prob``, e.g. by the exact log p_T in tests. A solve that fails (``max_steps``) raises.
    """
    xT, delta, nfe = ode_encode(score, sde, x, key=key, divergence=divergence, n_probes=n_probes, probe=probe,
                                rtol=rtol, atol=atol, t0=t0, solver=solver, max_steps=max_steps)
    prior = (prior_log_prob or sde.prior_log_prob)(xT)
    if divergence == "exact":
        return Estimate(prior + delta, jnp.zeros_like(delta), nfe)
    est = Estimate.from_samples(prior[:, None] + delta, nfe=nfe)
    if n_probes == 1:  # one probe: no spread to measure
        est = est._replace(stderr=jnp.full_like(est.value, jnp.nan))
    return est


def ode_sample(
    score: Callable,
    sde: LinearSDE,
    key: PRNGKeyArray,
    shape,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    t0: float = 1e-5,
    solver=None,
    max_steps: int = 4096,
):
    """Sample by integrating the PF-ODE from x_T ~ prior down to t0; returns (x, log_prob, nfe), with the exact
    divergence carried along so log_prob is the model density of each sample."""
    n, d = check_shape(shape)
    check_sde(sde)
    t0 = check_t0(t0, sde.T)
    xT = sde.prior_sample(key, (n, d))
    x0, delta, steps, ok = _flow_batch(score, sde, xT, None, float(sde.T), float(t0), float(rtol), float(atol),
                                       solver or diffrax.Tsit5(), int(max_steps))
    nfe = _check_solved(ok, steps, max_steps)
    # integrating T -> t0 accumulates -int_{t0}^T div dt
    return x0, sde.prior_log_prob(xT) - delta, nfe
