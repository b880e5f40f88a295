"""Discrete log-probabilities of integer data under a continuous model: every dequantization, importance weighting,
and an error budget per item.

Integer data k in {0, ..., levels-1}^D (any event shape) sits in the bin B_k = a + (k + [0, 1)^D) Delta of the data
range (a, b), Delta = (b - a) / levels. A continuous density p assigns the discrete model P(k) = int_{B_k} p(y) dy.
For any proposal q(y | k) supported in the bin (Ho et al. 2019, Sec. 3.1; Song et al. 2021b, Sec. 5.2, eq. 13),

    log P(k) >= E_q[log p(y) - log q(y | k)]                                                        (K = 1)
    log P(k) >= E_q[log (1/K) sum_j p(y_j) / q(y_j | k)]  (y_1..y_K iid from q; Burda et al. 2016, Thm. 1)

and the K-sample bound increases with K to log P(k). Written in the bin coordinates u = (y - a)/Delta - k in [0, 1)^D,
q(y | k) = q(u | k) / Delta^D: the Jacobian of the affine map from the bins to the data range is the D log Delta term
(for uniform u, log P(k) >= E log p(y) + D log Delta, Song et al. 2021b, eq. 13). Proposals:

* ``"uniform"``: u ~ U[0, 1)^D (Uria et al. 2013; Theis et al. 2016; Song et al. 2021b, eq. 13).
* ``"truncated_normal"``: the training-free variant of Zheng et al. 2023 (i-DODE): the bin centre
  c_k = a + (k + 1/2) Delta is diffused to the estimator's start time t0 and the noise truncated to the (scaled) bin,
  y = alpha_t0 c_k + sigma_t0 eps, eps ~ N(0, I) truncated to [-tau, tau]^D, tau = alpha_t0 Delta / (2 sigma_t0), with
  log q(y | k) = -D log sigma_t0 - D/2 log(2 pi) - D log Z - |eps|^2/2, Z = erf(tau / sqrt 2). The bound is then on
  the discrete model int_{alpha_t0 B_k} p_t0(y) dy of the density at t0 (what the PF-ODE from t0 measures), which
  needs no extrapolation to t = 0: the t0 truncation is part of the model, not an error. i-DODE's t0 gives tau of
  about 3 at 8 bits on [-1, 1]; choose ``t0`` so that sigma_t0 / alpha_t0 is a few times below Delta / 2.
* a :class:`Dequantizer` (``"variational"``): a conditional normalizing flow q(u | k) (flowjax coupling flow, then a
  sigmoid onto (0, 1)^D) trained by :func:`fit_dequantizer` to maximize the bound (Ho et al. 2019, Sec. 3.1,
  Flow++; Song et al. 2021b, Sec. 5.2, ScoreFlow's variational dequantization).

log p(y) comes from one of the package's estimators: ``"ode"`` (:func:`diffdens.ode_log_prob`, log p_t0 of the
probability-flow ODE; exact divergence, or Hutchinson), ``"elbo"`` (:func:`diffdens.elbo`, a lower bound on the
reverse-SDE log p) or ``"path_integral"`` (:func:`diffdens.path_integral_log_prob`); so the value is a bound on the
discrete log-probability of *that* model (ODE and SDE models differ).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.scipy.special import logsumexp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ._checks import check_key, check_option, check_positive, check_positive_int, check_t0
from ._engine import front_door, probe_times, traced_score, warn_single_sample
from .data import bin_width, check_levels
from .elbo import elbo
from .estimate import Estimate
from .ode import ode_log_prob
from .options import check_solve
from .path_integral import path_integral_log_prob
from .sde import LinearSDE, check_sde

DEQUANTIZATIONS = ("uniform", "truncated_normal", "variational")
ESTIMATORS = {"ode": ode_log_prob, "elbo": elbo, "path_integral": path_integral_log_prob}
DEFAULT_T0 = 1e-5  # the estimators' default t0


# --- validation --------------------------------------------------------------------------------------------------
def check_discrete(k, levels: int, name: str = "k"):
    """Integer data k of shape (n, *event_shape) with values in {0, ..., levels - 1}: TypeError for a non-integer
    dtype, ValueError naming ``name`` for a wrong shape or (eagerly) an out-of-range value; under a trace the range
    check is a runtime ``equinox.error_if``. Returns k as a JAX array."""
    try:
        k = jnp.asarray(k)
    except TypeError as e:
        raise TypeError(f"{name} must be an integer array, got {type(k).__name__}") from e
    if not jnp.issubdtype(k.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype (the discrete data, e.g. uint8 pixels), got {k.dtype}; "
                        "dequantizing is this function's job")
    if k.ndim < 2 or k.shape[0] < 1 or any(s < 1 for s in k.shape[1:]):
        raise ValueError(f"{name} must have shape (n, *event_shape), e.g. (n, D) or (n, H, W, C), got shape {k.shape}")
    return check_levels(k, levels, name)


def _check_dequantization(dequantization, k, levels, data_range):
    if isinstance(dequantization, Dequantizer):
        if dequantization.levels != levels:
            raise ValueError(f"dequantization was trained for levels={dequantization.levels}, got levels={levels}")
        if tuple(float(v) for v in data_range) != dequantization.data_range:
            raise ValueError(f"data_range {tuple(data_range)} is not the dequantizer's {dequantization.data_range}")
        if tuple(k.shape[1:]) != dequantization.event_shape:
            raise ValueError(f"k has event shape {tuple(k.shape[1:])}, the dequantizer's is "
                             f"{dequantization.event_shape}")
        return dequantization
    check_option(dequantization, DEQUANTIZATIONS, "dequantization")
    if dequantization == "variational":
        raise ValueError("dequantization='variational' needs the trained proposal: pass the Dequantizer that "
                         "dd.fit_dequantizer(score, sde, k_train, key=..., levels=...) returns as dequantization")
    return dequantization


# --- the proposals -------------------------------------------------------------------------------------------------
def _sample_keys(key, n: int, n_samples: int):
    """(n, K) keys: item i's j-th sample draws from fold_in(split(key, n)[i], j), so the first K of K' > K samples are
    the same draws (common random numbers for :func:`error_budget`)."""
    return jax.vmap(lambda ki: jax.vmap(lambda j: jax.random.fold_in(ki, j))(jnp.arange(n_samples)))(
        jax.random.split(key, n))


def dequantize(dequantization, key, k, n_samples: int, *, levels: int, a: float, delta: float, sde, t0):
    """K draws y ~ q(y | k) per item and their log q(y | k) (a density in the data range).

    Returns:
        ``(y, log_q)``: (n, K, *event_shape) and (n, K).
    """
    n, ev = k.shape[0], tuple(k.shape[1:])
    d = math.prod(ev)
    dtype = jnp.result_type(float)
    keys = _sample_keys(key, n, n_samples)
    kf = k.astype(dtype)[:, None]  # (n, 1, *ev)
    if isinstance(dequantization, Dequantizer):
        u, log_qu = jax.vmap(lambda kk, ki: jax.vmap(lambda kj: dequantization.sample_and_log_prob(kj, ki))(kk))(
            keys, k)
        return a + (kf + u) * delta, log_qu - d * math.log(delta)
    if dequantization == "uniform":
        u = jax.vmap(jax.vmap(lambda kj: jax.random.uniform(kj, ev, dtype)))(keys)
        return a + (kf + u) * delta, jnp.full((n, n_samples), -d * math.log(delta), dtype)
    # truncated normal (Zheng et al. 2023): bin centre diffused to t0, noise truncated to the scaled bin
    alpha, sigma = sde.marginal(jnp.asarray(t0, dtype))
    tau = alpha * delta / (2 * sigma)
    eps = jax.vmap(jax.vmap(lambda kj: jax.random.truncated_normal(kj, -tau, tau, ev, dtype)))(keys)
    log_z = jnp.log(jax.scipy.special.erf(tau / math.sqrt(2.0)))
    log_q = (-d * (jnp.log(sigma) + 0.5 * math.log(2 * math.pi) + log_z)
             - 0.5 * jnp.sum(eps.reshape(n, n_samples, -1) ** 2, axis=-1))
    return alpha * (a + (kf + 0.5) * delta) + sigma * eps, log_q


def importance_weighted(w, est_stderr=None):
    """log (1/K) sum_j exp(w_j) over the last axis, and its standard error.

    K = 1: the stderr is ``est_stderr`` (the estimator's own, None where it has none). K >= 2: the delta method on the
    sample mean of the weights r_j = exp(w_j - max w): se(log mean r) = sd(r) / (sqrt(K) mean(r)). Each w_j carries
    the estimator's noise as well as the proposal's, so the spread of the K weights measures both.
    """
    K = w.shape[-1]
    value = logsumexp(w, axis=-1) - math.log(K)
    if K == 1:
        return value, None if est_stderr is None else est_stderr[..., 0]
    r = jnp.exp(w - jnp.max(w, axis=-1, keepdims=True))
    return value, jnp.std(r, axis=-1, ddof=1) / (math.sqrt(K) * jnp.mean(r, axis=-1))


def _setup(score, sde, k, key, levels, data_range, dequantization, n_samples, estimator, estimator_options):
    check_sde(sde)
    key = check_key(key)
    levels, a, delta = bin_width(levels, data_range)
    k = check_discrete(k, levels)
    deq = _check_dequantization(dequantization, k, levels, data_range)
    n_samples = check_positive_int(n_samples, "n_samples")
    check_option(estimator, tuple(ESTIMATORS), "estimator")
    t0 = check_t0(estimator_options.get("t0", DEFAULT_T0), sde.T)
    return key, levels, a, delta, k, deq, n_samples, t0


def _bound(score, sde, k, key, levels, a, delta, deq, n_samples, t0, estimator, options, *, with_points=False):
    n, ev = k.shape[0], tuple(k.shape[1:])
    k_deq, k_est = jax.random.split(key)
    y, log_q = dequantize(deq, k_deq, k, n_samples, levels=levels, a=a, delta=delta, sde=sde, t0=t0)
    est = ESTIMATORS[estimator](score, sde, y.reshape((n * n_samples,) + ev), key=k_est, **options)
    w = est.value.reshape(n, n_samples) - log_q
    se = None if est.stderr is None else est.stderr.reshape(n, n_samples)
    value, stderr = importance_weighted(w, se)
    nfe = None if est.nfe is None else jnp.sum(est.nfe.reshape(n, n_samples), axis=-1)
    out = Estimate(value, stderr, nfe)
    return (out, y) if with_points else out


def discrete_log_prob(
    score: Callable,
    sde: LinearSDE,
    k: Int[Array, "n *event"],
    *,
    key: PRNGKeyArray,
    levels: int,
    data_range=(0.0, 1.0),
    dequantization: Union[str, "Dequantizer"] = "uniform",
    n_samples: int = 1,
    estimator: str = "ode",
    **estimator_options,
) -> Estimate:
    """A lower bound on log P(k), the discrete log-probability of integer data in nats per item, with its standard
    error (module docstring: Ho et al. 2019, Sec. 3.1; Song et al. 2021b, eq. 13; Zheng et al. 2023; Burda et al.
    2016). Convert to bits/dim with ``dd.bits_per_dim(value, D, discrete=True)``.

    Stderr. With ``n_samples=1`` it is the estimator's own (Hutchinson probes, time samples or throws; None for the
    exact-divergence ODE): the noise of the single dequantization draw is *not* in it. It averages out over items, so a
    data-set mean's stderr is the spread over items / sqrt(n); for a per-item error bar use ``n_samples >= 2``. With
    ``n_samples = K >= 2`` it is the delta-method stderr of log of the mean of the K importance weights (their sample
    spread, which includes the estimator's noise), about the K-sample bound's expectation; the delta method
    understates it when the weights are heavy-tailed (a few dominate). The bound itself holds for exact log p (the
    ODE with exact divergence); a noisy log p estimate inside the exponential biases the K >= 2 value upward by about
    half its variance, so pair K >= 2 with the exact ODE or a small estimator stderr.

    Arguments:
        score: ``score(x, t)`` on one point of the event shape (a model's ``.score``, a mixture's ``p.score``, ...).
        sde: the forward SDE (:class:`diffdens.LinearSDE`).
        k: (n, *event_shape) integers in {0, ..., levels - 1} (any integer dtype, e.g. uint8 pixels).
        key: PRNG key (required): the dequantization draws and the estimator's randomness.
        levels: the number of discrete levels per dimension (256 for 8-bit data).
        data_range: (a, b): the levels map to the bins a + (k + [0, 1)) (b - a) / levels, the range the model was
            trained on (e.g. (0, 1) or (-1, 1)).
        dequantization: ``"uniform"``, ``"truncated_normal"`` or a :class:`Dequantizer` from
            :func:`fit_dequantizer` (the variational proposal; the string ``"variational"`` asks for it).
        n_samples: K, dequantization draws per item: K = 1 the plain bound, K >= 2 the importance-weighted bound
            log (1/K) sum_j p(y_j)/q(y_j | k) (with its log K subtracted).
        estimator: ``"ode"``, ``"elbo"`` or ``"path_integral"``: which log p(y) (and so which model) is bounded.
        **estimator_options: passed to the estimator (``t0``, ``solve``, ``divergence``, ``n_times``,
            ``n_throws``, ``batch_size``, ...); ``t0`` is also the truncated-normal proposal's time.

    Returns:
        :class:`diffdens.Estimate`: value (n,) the bound in nats, stderr (n,) or None (see above), nfe (n,) summed
        over the K draws, or None. Bad input raises before any compiled work: TypeError for a non-integer ``k``,
        ValueError naming ``k`` (shape, range), ``levels``, ``data_range``, ``dequantization``, ``n_samples`` or
        ``estimator``.
    """
    key, levels, a, delta, k, deq, n_samples, t0 = _setup(score, sde, k, key, levels, data_range, dequantization,
                                                           n_samples, estimator, estimator_options)
    return _bound(score, sde, k, key, levels, a, delta, deq, n_samples, t0, estimator, estimator_options)


# --- the error budget ----------------------------------------------------------------------------------------------
class ErrorBudget(NamedTuple):
    """:func:`error_budget`'s result: per item, the bound and what each knob would change, in nats (divide by
    -D log 2 for bits/dim; a part much larger than ``monte_carlo`` names the knob to turn).

    Fields:
        value: (n,) the bound, as :func:`discrete_log_prob` returns it.
        monte_carlo: (n,) its standard error (0 where none is estimated: the exact ODE with one draw).
        solver: (n,) the change when the ODE is re-solved at tolerances ``tighten`` times smaller, with the same
            draws (0 for the ELBO and the path integral, which solve nothing).
        t0: (n,) the change when t0 is ``t0_factor`` times smaller, with the same draws (0 for the truncated normal,
            whose discrete model is defined at t0).
        prior: (n,) the mean over the draws of :meth:`diffdens.LinearSDE.prior_mismatch`, KL(p(y_T | y) || prior): an
            upper bound on what starting from the prior instead of p_T costs (0 with a ``prior_log_prob`` option).
        dequantization: (n,) the change from K to ``more_samples`` x K draws (the first K shared): how much of the
            dequantization gap importance weighting recovers, >= 0 in expectation; with a noisy estimator it also
            carries the estimator's noise and its upward bias inside the weights (see :func:`error_budget`).
    """

    value: Float[Array, " n"]
    monte_carlo: Float[Array, " n"]
    solver: Float[Array, " n"]
    t0: Float[Array, " n"]
    prior: Float[Array, " n"]
    dequantization: Float[Array, " n"]


def error_budget(
    score: Callable,
    sde: LinearSDE,
    k: Int[Array, "n *event"],
    *,
    key: PRNGKeyArray,
    levels: int,
    data_range=(0.0, 1.0),
    dequantization: Union[str, "Dequantizer"] = "uniform",
    n_samples: int = 1,
    estimator: str = "ode",
    tighten: float = 100.0,
    t0_factor: float = 0.1,
    more_samples: int = 4,
    **estimator_options,
) -> ErrorBudget:
    """The bound of :func:`discrete_log_prob` with, per item, the size of each of its error sources: re-solved at
    tighter tolerances, at a smaller t0, with more dequantization draws, plus the closed-form prior mismatch at T and
    the Monte Carlo stderr. The solver and t0 comparisons reuse the key (same draws, same probes, same time samples),
    so their differences are the knob's effect, not noise. The dequantization comparison shares the first K draws,
    but the estimator's per-point randomness is split over the n x K' draws of the larger call, so with a noisy
    estimator (Hutchinson's divergence, the ELBO, the path integral) it scores those draws with other probes and
    carries that noise too; and a noisy log p inside the importance weights biases the K' value upward (see
    :func:`discrete_log_prob`). Read it as the dequantization gap only where ``monte_carlo`` is small (the exact
    divergence). Costs up to four calls of :func:`discrete_log_prob`, one with ``more_samples`` x K draws.

    Arguments:
        score, sde, k, key, levels, data_range, dequantization, n_samples, estimator, estimator_options: as
            :func:`discrete_log_prob`.
        tighten: the factor by which the ODE's ``rtol`` and ``atol`` are divided (> 1).
        t0_factor: the factor by which t0 is multiplied (in (0, 1)).
        more_samples: the factor by which K is multiplied (>= 2).

    Returns:
        :class:`ErrorBudget` of (n,) arrays in nats.
    """
    key, levels, a, delta, k, deq, n_samples, t0 = _setup(score, sde, k, key, levels, data_range, dequantization,
                                                           n_samples, estimator, estimator_options)
    if check_positive(tighten, "tighten") <= 1:
        raise ValueError(f"tighten must be > 1, got {tighten}")
    if not 0 < check_positive(t0_factor, "t0_factor") < 1:
        raise ValueError(f"t0_factor must lie in (0, 1), got {t0_factor}")
    more = check_positive_int(more_samples, "more_samples")
    if more < 2:
        raise ValueError(f"more_samples must be >= 2, got {more_samples}")
    opts = dict(estimator_options)

    def run(options, K=n_samples, with_points=False):
        return _bound(score, sde, k, key, levels, a, delta, deq, K, t0 if "t0" not in options else options["t0"],
                      estimator, options, with_points=with_points)

    base, y = run(opts, with_points=True)
    zero = jnp.zeros_like(base.value)
    mc = zero if base.stderr is None else base.stderr
    solver = zero
    if estimator == "ode":
        solve = check_solve(opts.get("solve"))
        tight = solve.replace(rtol=solve.rtol / tighten, atol=solve.atol / tighten)
        solver = run({**opts, "solve": tight}).value - base.value
    t0_part = zero if deq == "truncated_normal" else run({**opts, "t0": t0 * t0_factor}).value - base.value
    if opts.get("prior_log_prob") is not None:
        prior = zero
    else:
        prior = jnp.mean(sde.prior_mismatch(y.reshape(y.shape[:2] + (-1,))), axis=-1)
    deq_part = run(opts, K=more * n_samples).value - base.value
    return ErrorBudget(base.value, mc, solver, t0_part, prior, deq_part)


# --- variational dequantization ------------------------------------------------------------------------------------
def _flowjax():
    try:
        import flowjax  # noqa: F401
    except ImportError as e:
        raise ImportError("variational dequantization needs flowjax: pip install 'diffdens[book]' (or flowjax)") from e
    from flowjax.bijections import Chain, Sigmoid
    from flowjax.distributions import Logistic, Transformed
    from flowjax.flows import coupling_flow

    return Chain, Sigmoid, Logistic, Transformed, coupling_flow


class Dequantizer(eqx.Module):
    """A learned dequantization proposal q(u | k) on the bin coordinates u in (0, 1)^D (Ho et al. 2019, Sec. 3.1):
    a flowjax conditional coupling flow (affine couplings, Dinh et al. 2017) on R^D followed by a sigmoid, conditioned
    on c(k) = 2 (k + 1/2) / levels - 1 (the flattened item). Built and trained by :func:`fit_dequantizer`; pass it as
    ``dequantization`` to :func:`discrete_log_prob`. An equinox module: its arrays are traced under jit.

    Arguments:
        flow: the flowjax distribution of u given c(k) (shape (D,), condition shape (D,)).
        levels: the number of levels it was trained for.
        data_range: the (a, b) it was trained for.
        event_shape: the shape of one item.
    """

    flow: eqx.Module
    levels: int = eqx.field(static=True)
    data_range: tuple = eqx.field(static=True)
    event_shape: tuple = eqx.field(static=True)

    def condition(self, k):
        """c(k) = 2 (k + 1/2) / levels - 1 for one item k of the event shape, flattened to (D,)."""
        return (2.0 * (jnp.reshape(k, (-1,)).astype(jnp.result_type(float)) + 0.5) / self.levels) - 1.0

    def sample_and_log_prob(self, key, k):
        """One draw u ~ q(u | k) (of the event shape, in (0, 1)) and log q(u | k) for one item k."""
        u, lq = self.flow.sample_and_log_prob(key, condition=self.condition(k))
        return jnp.reshape(u, self.event_shape), lq

    def log_prob(self, u, k):
        """log q(u | k) for one item k and u of the event shape in (0, 1)."""
        return self.flow.log_prob(jnp.reshape(u, (-1,)), condition=self.condition(k))


def init_dequantizer(event_shape, *, key, levels: int, data_range=(0.0, 1.0), flow_layers: int = 4,
                     nn_width: int = 64) -> Dequantizer:
    """An untrained :class:`Dequantizer` (near a logit-normal proposal with identity couplings).

    Arguments:
        event_shape: the shape of one item (D = its product >= 2: a coupling flow splits the dimensions).
        key: PRNG key of the initial parameters.
        levels: the number of levels.
        data_range: (a, b), as :func:`discrete_log_prob`.
        flow_layers: coupling layers.
        nn_width: the width of each coupling's conditioner MLP.

    Returns:
        :class:`Dequantizer`.
    """
    Chain, Sigmoid, Logistic, Transformed, coupling_flow = _flowjax()
    check_key(key)
    levels, _, _ = bin_width(levels, data_range)
    ev = tuple(int(s) for s in event_shape)
    d = math.prod(ev)
    if d < 2:
        raise ValueError(f"the variational dequantizer needs D >= 2 dimensions per item, got event shape {ev}")
    base = Logistic(jnp.zeros(d))  # sigmoid of a standard logistic is uniform on (0, 1)
    flow = coupling_flow(key, base_dist=base, cond_dim=d, flow_layers=check_positive_int(flow_layers, "flow_layers"),
                         nn_width=check_positive_int(nn_width, "nn_width"), invert=False)
    q = Transformed(base, Chain([flow.bijection, Sigmoid(shape=(d,))]))
    return Dequantizer(q, levels, tuple(float(v) for v in data_range), ev)


def fit_dequantizer(
    score: Callable,
    sde: LinearSDE,
    k: Int[Array, "n *event"],
    *,
    key: PRNGKeyArray,
    levels: int,
    data_range=(0.0, 1.0),
    steps: int = 500,
    batch_size: int = 64,
    lr: float = 1e-3,
    n_times: int = 16,
    t0: float = DEFAULT_T0,
    flow_layers: int = 4,
    nn_width: int = 64,
):
    """Train a variational dequantizer q(u | k) for a fixed score model by maximizing the dequantization bound
    E_k E_q[log p(y) - log q(y | k)] (Ho et al. 2019, Sec. 3.1; Song et al. 2021b, Sec. 5.2), with log p(y)
    the reparameterized ELBO (:func:`diffdens.elbo`, ``n_times`` time samples per draw, which is differentiable in y
    and solves no ODE). Adam (optax) with cosine decay over ``steps`` steps on random batches of items.

    Arguments:
        score: the trained score (its parameters are not changed).
        sde: the forward SDE.
        k: (N, *event_shape) training integers in {0, ..., levels - 1}.
        key: PRNG key (initialization, batches, draws, time samples).
        levels: the number of levels.
        data_range: (a, b), as :func:`discrete_log_prob`.
        steps: Adam steps.
        batch_size: items per step.
        lr: the peak learning rate.
        n_times: ELBO time samples per draw.
        t0: the ELBO's lower time end.
        flow_layers, nn_width: the flow's size (:func:`init_dequantizer`).

    Returns:
        ``(dequantizer, history)``: the trained :class:`Dequantizer` and ``{"loss": (steps,)}`` the negative bound
        per step (nats per item, a noisy estimate).
    """
    check_sde(sde)
    key = check_key(key)
    levels, a, delta = bin_width(levels, data_range)
    k = check_discrete(k, levels)
    steps = check_positive_int(steps, "steps")
    batch = min(check_positive_int(batch_size, "batch_size"), k.shape[0])
    check_positive(lr, "lr")
    n_times = check_positive_int(n_times, "n_times")
    warn_single_sample(n_times, "n_times")
    t0 = check_t0(t0, sde.T)
    k_init, k_train = jax.random.split(key)
    deq = init_dequantizer(k.shape[1:], key=k_init, levels=levels, data_range=data_range, flow_layers=flow_layers,
                           nn_width=nn_width)
    front = front_door(score, sde, a + (k[:1].astype(jnp.result_type(float)) + 0.5) * delta, key=key,
                       times=probe_times(sde, t0))  # validates the score once, eagerly
    score = traced_score(score)
    import paramax

    params, static = eqx.partition(deq, eqx.is_inexact_array, is_leaf=lambda x: isinstance(x, paramax.NonTrainable))
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))
    opt_state = opt.init(params)
    del front

    def loss_fn(params, score, kb, kk):  # kb: a batch of items
        q = eqx.combine(params, static)
        k1, k2 = jax.random.split(kk)
        y, log_q = dequantize(q, k1, kb, 1, levels=levels, a=a, delta=delta, sde=sde, t0=t0)
        lp = elbo(score, sde, y[:, 0], key=k2, n_times=n_times, t0=t0, n_correction=min(n_times, 4)).value
        return -jnp.mean(lp - log_q[:, 0])

    @eqx.filter_jit
    def step(params, opt_state, score, data, kk):
        ki, kl = jax.random.split(kk)
        kb = data[jax.random.choice(ki, data.shape[0], (batch,), replace=False)]
        loss, grads = eqx.filter_value_and_grad(loss_fn)(params, score, kb, kl)
        updates, opt_state = opt.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, loss

    losses = []
    for kk in jax.random.split(k_train, steps):
        params, opt_state, loss = step(params, opt_state, score, k, kk)
        losses.append(loss)
    losses = np.asarray(jnp.stack(losses))
    if not np.all(np.isfinite(losses)):
        raise FloatingPointError(f"fit_dequantizer diverged (loss {losses[~np.isfinite(losses)][0]}); lower lr")
    return eqx.combine(params, static), {"loss": losses}
