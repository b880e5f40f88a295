"""The continuous-time ELBO of the plug-in reverse SDE, per data point.

Song et al. 2021b, Thm. 3 and App. B (eqs. 37-39); Huang et al. 2021, eqs. 16 and 25. On [t0, T],

    L^SM(x)  = -E log pi(x_T) + 1/2 int E[ 2 g^2 div s + g^2 |s|^2 - 2 D f ] dt            (form="ism")
    L^DSM(x) = -E log pi(x_T) + 1/2 int E[ g^2 |s + eps/sigma_t|^2 - g^2 |eps|^2/sigma_t^2 - 2 D f ] dt   (form="dsm")

with x_t = alpha_t x + sigma_t eps, and elbo = -L. The two are equal in expectation (integration by parts against the
Gaussian kernel); DSM needs no derivative of the network. Per point, n_times draws of (t, x_t) (t uniform or
importance-sampled, log-SNR uniform) give the value and its standard error. ``eps_correction`` adds eq. 39's
E[log q(x | x') - log p(x' | x)], x' = a0 x + s0 z ~ p(x_{t0} | x), with the Tweedie denoiser
q(x | x') = N(x'/a0 + s0^2/a0 s(x', t0), s0^2/a0^2 I), so the bound is on log p(x) of the data rather than of the
t0-smoothed density. The difference x - mean = -(s0/a0)(z + s0 s(x', t0)) is expanded analytically, so that

    log q(x | x') - log p(x' | x) = D log a0 - s0 z . s(x', t0) - s0^2 |s(x', t0)|^2 / 2

(forming x' and subtracting it from x instead cancels catastrophically in float32 when s0 is below the resolution of
x, e.g. s0 ~ 0.1 t0 for sub-VP).
"""

from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import numpy as np
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_bool, check_option, check_positive_int, check_real, check_t0
from ._engine import check_callable, diagnose_score, front_door, map_points, probe_times, warn_prior_mismatch, warn_single_sample
from .estimate import Estimate, make_probes, sample_times, value_and_divergence
from .options import Divergence, Hutchinson, check_divergence
from .sde import LinearSDE, check_sde

FORMS = ("dsm", "ism")
EVALS_PER_CALL = 65_536  # score evaluations held in memory at once (points x time samples)


def elbo(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    *,
    key: PRNGKeyArray = None,
    n_times: int = 1000,
    form: str = "dsm",
    importance_sampling: bool = True,
    t0: float = 1e-5,
    eps_correction: bool = True,
    n_correction: Optional[int] = None,
    divergence: Divergence = "hutchinson",
    prior_log_prob: Optional[Callable] = None,
    batch_size: Optional[int] = None,
) -> Estimate:
    """Per-point lower bound on log p^SDE(x) with its standard error (Song et al. 2021b, Thm. 3, eqs. 37-39;
    Huang et al. 2021, eq. 25).

    Arguments:
        score: ``score(x, t)`` on one point of the event shape (its arrays are traced).
        sde: the forward SDE.
        x: the points, shape (n, *event_shape).
        key: PRNG key (required): per point, ``n_times`` draws of (t, x_t).
        n_times: time samples per point (one gives a NaN stderr, with a :class:`diffdens.SingleSampleWarning`).
        form: ``"dsm"`` (denoising form, no derivative of the score) or ``"ism"`` (implicit score matching form,
            with the divergence of the score).
        importance_sampling: draw t with density proportional to g^2 / sigma_t^2 (the log-SNR uniform; Song et al.
            2021b, eq. 12) instead of uniformly.
        t0: the lower time end in (0, T).
        eps_correction: add eq. 39's correction so that the bound is on log p(x) of the data, not of the
            t0-smoothed density; averaged over ``n_correction`` draws (default min(n_times, 32)).
        divergence: for ``form="ism"``: ``"exact"``, ``"hutchinson"`` or :class:`diffdens.Hutchinson` (probes per
            time sample).
        prior_log_prob: log pi(y) of one point (a scalar), replacing the closed-form Gaussian prior term by a Monte
            Carlo average of log pi(x_T), one draw per time sample.
        batch_size: points per compiled chunk (default: 65536 score evaluations at a time).

    Returns:
        :class:`diffdens.Estimate` (value (n,), stderr (n,) combining both Monte Carlo averages, nfe None).
    """
    check_sde(sde)
    check_option(form, FORMS, "form")
    hutch = check_divergence(divergence)
    n_times = check_positive_int(n_times, "n_times")
    warn_single_sample(n_times, "n_times")
    is_ = check_bool(importance_sampling, "importance_sampling")
    eps_corr = check_bool(eps_correction, "eps_correction")
    n_corr = check_positive_int(min(n_times, 32) if n_correction is None else n_correction, "n_correction")
    t0 = check_t0(t0, sde.T)
    times = probe_times(sde, t0)
    front = front_door(score, sde, x, key=key, key_required=True, times=times, prior_log_prob=prior_log_prob,
                       batch_size=batch_size)
    warn_prior_mismatch(front, sde)
    batch_size = front.batch_size
    if batch_size is None:
        per = front.dim if form == "ism" and hutch is None else (hutch.n_probes if form == "ism" else 1)
        batch_size = max(1, EVALS_PER_CALL // (n_times * per))
    est = elbo_kernel(front.score, sde, front.x, front.point_keys(), jnp.asarray(t0, front.dtype), form=form,
                      m=n_times, is_=is_, eps_corr=eps_corr, n_corr=n_corr, hutch=hutch, prior_log_prob=front.prior,
                      batch_size=batch_size)
    value = front.finite(est.value, diagnose_score(front.score, front.x, times))
    return Estimate(value, est.stderr, None)


def eps_correction_terms(score, sde, x, key, t0, m):
    """m draws of log q(x | x') - log p(x' | x), x' ~ p(x_{t0} | x) (eq. 39), in the cancellation-free form."""
    a0, s0 = sde.marginal(t0)
    z = jax.random.normal(key, (m, x.shape[-1]), x.dtype)
    s = jax.vmap(score, in_axes=(0, None))(a0 * x + s0 * z, t0)
    return x.shape[-1] * jnp.log(a0) - s0 * jnp.sum(z * s, -1) - 0.5 * s0**2 * jnp.sum(s**2, -1)


def _mean_var(v):
    m = v.shape[-1]
    mean = jnp.mean(v, -1)
    var = jnp.sum((v - mean) ** 2, -1) / (m - 1) / m if m > 1 else jnp.full_like(mean, jnp.nan)
    return mean, var


def _per_point(score, sde, form, m, is_, t0, eps_corr, n_corr, hutch, prior_log_prob, x, key):
    d = x.shape[-1]
    kt, ke, kp, kT, kc = jax.random.split(key, 5)
    t, w = sample_times(sde, kt, (m,), t0=t0, importance_sampling=is_, dtype=x.dtype)
    alpha, sigma = sde.marginal(t)
    eps = jax.random.normal(ke, (m, d), x.dtype)
    xt = alpha[:, None] * x + sigma[:, None] * eps
    g2, f = sde.g2(t), sde.f(t)
    if form == "dsm":
        s = jax.vmap(score)(xt, t)
        # |s + eps/sigma|^2 - |eps|^2/sigma^2 = |s|^2 + 2 s.eps/sigma (no cancellation of two large terms)
        inner = g2 * (jnp.sum(s**2, -1) + 2 * jnp.sum(s * eps, -1) / sigma)
    else:
        def s_and_div(y, tt, v):
            val, div = value_and_divergence(lambda z: score(z, tt), y, v)
            return val, jnp.mean(div)

        if hutch is None:
            s, div = jax.vmap(lambda y, tt: s_and_div(y, tt, None))(xt, t)
        else:
            probes = make_probes(kp, m * hutch.n_probes, d, hutch.probe, x.dtype).reshape(m, hutch.n_probes, d)
            s, div = jax.vmap(s_and_div)(xt, t, probes)
        inner = g2 * (2 * div + jnp.sum(s**2, -1))
    term = 0.5 * inner - d * f
    if prior_log_prob is None:
        prior = sde.expected_prior_log_prob(x)
    else:
        aT, sT = sde.marginal(jnp.asarray(sde.T, x.dtype))
        prior = jax.vmap(prior_log_prob)(aT * x + sT * jax.random.normal(kT, (m, d), x.dtype))
    value, var = _mean_var(prior - w * term)
    if eps_corr:
        cv, cvar = _mean_var(eps_correction_terms(score, sde, x, kc, t0, n_corr))
        value, var = value + cv, var + cvar
    return value, jnp.sqrt(var)


@eqx.filter_jit
def elbo_kernel(score, sde, x, keys, t0, *, form, m, is_, eps_corr, n_corr, hutch: Optional[Hutchinson],
                prior_log_prob, batch_size) -> Estimate:
    """The unchecked kernel of :func:`elbo` (``score`` traced, ``t0`` a traced scalar)."""
    value, stderr = map_points(
        lambda xx, k: _per_point(score, sde, form, m, is_, t0, eps_corr, n_corr, hutch, prior_log_prob, xx, k),
        (x, keys), batch_size)
    return Estimate(value, stderr, None)


def hvae_elbo(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    *,
    key: PRNGKeyArray = None,
    n_layers: int,
    n_paths: int = 64,
    lam: float = 0.0,
    inference_drift: Optional[Callable] = None,
    t0: float = 0.0,
    batch_size: Optional[int] = None,
) -> Estimate:
    """The discrete-time ELBO of the L-layer hierarchical VAE (Huang et al. 2021, eqs. 19-23).

    Decoder: Euler-Maruyama steps of the ``lam`` plug-in reverse SDE (their eq. 27) on a uniform grid of
    ``n_layers`` steps of [t0, T], prior N(0, prior_std^2). Encoder: Euler-Maruyama steps of the inference SDE, by
    default the ``lam``-family inference SDE dY = (f y - lam/2 g^2 s) dt + sqrt(1 - lam) g dB (the forward SDE for
    lam = 0), or dY = inference_drift(y, t) dt + sqrt(1 - lam) g dB. Tends to the continuous-time ELBO as n_layers
    grows (their Thm. 5).

    Arguments:
        score, sde: the score and its SDE.
        x: the points, shape (n, *event_shape).
        key: PRNG key (required).
        n_layers: the number of layers L (Euler-Maruyama steps).
        n_paths: encoder paths per point (value and stderr are over them).
        lam: the parameter of the reverse-SDE family (eta in the book's prose), lam < 1.
        inference_drift: an encoder drift b(y, t) on one point, or None for the lam-family drift.
        t0: the lower time end in [0, T), with g(t0)^2 > 0.
        batch_size: points per compiled chunk.

    Returns:
        :class:`diffdens.Estimate` (value (n,), stderr (n,), nfe None).
    """
    vals, _, _ = _hvae_checked(score, sde, x, key, n_layers, n_paths, lam, inference_drift, t0, batch_size)
    return Estimate.from_samples(vals)


def variational_gap(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n *event"],
    *,
    key: PRNGKeyArray = None,
    inference_drift: Callable,
    n_layers: int,
    n_paths: int = 64,
    lam: float = 0.0,
    t0: float = 0.0,
    batch_size: Optional[int] = None,
) -> Estimate:
    """The variational gap log p(x) - CT-ELBO = 1/2 int E_Q |a - a*|^2 ds (Huang et al. 2021, Thm. 4, eq. 18),
    written as the time integral of |b - b*|^2 / (2 (1 - lam) g^2) along the encoder paths of :func:`hvae_elbo`,
    where b is the encoder drift and b* = f y - lam/2 g^2 s the optimal one. Exact when ``score`` is the true score
    of the generative model's marginals (e.g. an exact mixture score). The same ``key`` as :func:`hvae_elbo` gives
    the same paths.

    Arguments:
        score, sde, x, key, n_layers, n_paths, lam, t0, batch_size: as :func:`hvae_elbo`.
        inference_drift: the encoder drift b, as :func:`hvae_elbo`'s, but required here.

    Returns:
        :class:`diffdens.Estimate` of the gap per point (value (n,), stderr (n,)).
    """
    if inference_drift is None:
        raise TypeError("inference_drift must be a callable b(y, t), got None")
    _, gaps, front = _hvae_checked(score, sde, x, key, n_layers, n_paths, lam, inference_drift, t0, batch_size)
    return Estimate.from_samples(front.finite(gaps, what="the variational gap"))


def _hvae_checked(score, sde, x, key, n_layers, n_paths, lam, inference_drift, t0, batch_size):
    check_sde(sde)
    n_layers = check_positive_int(n_layers, "n_layers")
    n_paths = check_positive_int(n_paths, "n_paths")
    lam = check_real(lam, "lam")
    if not lam < 1.0:
        raise ValueError(f"lam must be < 1 (lam = 1 is the ODE, which has no ELBO), got {lam}")
    t0 = check_real(t0, "t0", lo=0.0, hi=float(sde.T), open_hi=True)
    if not float(sde.g2(t0)) > 0:
        raise ValueError(f"t0 must be > 0 for {type(sde).__name__}, whose g(t0)^2 = 0 at t0 = {t0} (no Gaussian layer)")
    times = probe_times(sde, max(t0, 1e-5 * sde.T))
    front = front_door(score, sde, x, key=key, key_required=True, times=times, batch_size=batch_size)
    batch_size = front.batch_size if front.batch_size is not None else max(1, EVALS_PER_CALL // n_paths)
    drift = None
    if inference_drift is not None:
        drift = check_callable(inference_drift, front.event_shape, front.dtype, "inference_drift")
    vals, gaps = hvae_kernel(front.score, sde, front.x, front.point_keys(), jnp.asarray(t0, front.dtype),
                             jnp.asarray(lam, front.dtype), drift=drift, n_layers=n_layers, n_paths=n_paths,
                             batch_size=batch_size)
    vals = front.finite(vals, diagnose_score(front.score, front.x, np.concatenate([[t0], times])))
    return vals, gaps, front


def _hvae_point(score, sde, n_layers, n_paths, lam, drift, t0, x, key):
    d = x.shape[-1]
    ts = jnp.linspace(t0, sde.T, n_layers + 1, dtype=x.dtype)
    c = 1.0 - lam

    def b_opt(y, t):  # the lam-family inference drift (exact posterior when score is the true score)
        # lam = 0 (the forward SDE) needs no score, which may be infinite at t = 0 (e.g. a model's -eps/sigma_0)
        return sde.f(t) * y - jnp.where(lam == 0, 0.0, 0.5 * lam * sde.g2(t) * score(y, t))

    b_inf = b_opt if drift is None else drift

    def log_normal(z, mean, var):
        return -0.5 * jnp.sum((z - mean) ** 2) / var - 0.5 * d * jnp.log(2 * jnp.pi * var)

    def step(y, inp):
        t, t_next, z = inp
        h = t_next - t
        var_q, var_p = c * sde.g2(t) * h, c * sde.g2(t_next) * h
        b = b_inf(y, t)
        y_next = y + h * b + jnp.sqrt(var_q) * z
        # decoder: one EM step of the lambda plug-in reverse SDE from (y_next, t_next) down to t
        mu = y_next - h * (sde.f(t_next) * y_next - (1.0 - 0.5 * lam) * sde.g2(t_next) * score(y_next, t_next))
        term = log_normal(y, mu, var_p) - log_normal(y_next, y + h * b, var_q)
        gap = 0.0 if drift is None else 0.5 * h * jnp.sum((b - b_opt(y, t)) ** 2) / (c * sde.g2(t))
        return y_next, (term, gap)

    def path(k):
        z = jax.random.normal(k, (n_layers, d), x.dtype)
        yT, (terms, gaps) = jax.lax.scan(step, x, (ts[:-1], ts[1:], z))
        return sde.prior_log_prob(yT) + jnp.sum(terms), jnp.sum(gaps)

    return jax.vmap(path)(jax.random.split(key, n_paths))


@eqx.filter_jit
def hvae_kernel(score, sde, x, keys, t0, lam, *, drift, n_layers, n_paths, batch_size):
    """The unchecked kernel of :func:`hvae_elbo` and :func:`variational_gap`: per-path (values, gaps), (n, n_paths)."""
    return map_points(lambda xx, k: _hvae_point(score, sde, n_layers, n_paths, lam, drift, t0, xx, k), (x, keys),
                      batch_size)
