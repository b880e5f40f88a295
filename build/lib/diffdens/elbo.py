"""The continuous-time ELBO of the plug-in reverse SDE, per data point.

``002_f66275a1c9cf2a92.txt`` Thm. 3 and App. B (eqs. 37-39); ``001_4a6883c9517e568d.txt`` eqs. 16/25. On [t0, T],

    L^SM(x)  = -E log pi(x_T) + 1/2 int E[ 2 g^2 div s + g^2 |s|^2 - 2 D f ] dt            (form="ism")
    L^DSM(x) = -E log pi(x_T) + 1/2 int E[ g^2 |s + eps/sigma_t|^2 - g^2 |eps|^2/sigma_t^2 - 2 D f ] dt   (form="dsm")

with x_t = alpha_t x + sigma_t eps, and elbo = -L. The two are equal in expectation (integration by parts against the
Gaussian kernel); DSM needs no derivative of the network. Per point, n_times draws of (t, x_t) (t uniform or
importance-sampled, log-SNR uniform) give the value and its standard error. ``eps_correction`` adds eq. 39's
E[log q(x | x') - log p(x' | x)], x' ~ p(x_{t0} | x), with the Tweedie denoiser
q(x | x') = N(x'/alpha + sigma^2/alpha s(x', t0), sigma^2/alpha^2 I), so the bound is on log p(x) of the data rather
than of the t0-smoothed density.
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_t0, check_option, check_points, check_positive_int
from .estimate import Estimate, make_probes, sample_times, value_and_divergence
from .path_integral import _prior_term
from .sde import LinearSDE, check_sde

FORMS = ("dsm", "ism")


def elbo(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: PRNGKeyArray,
    n_times: int = 1000,
    form: str = "dsm",
    importance_sampling: bool = True,
    t0: float = 1e-5,
    eps_correction: bool = True,
    divergence: str = "hutchinson",
    prior_log_prob: Optional[Callable] = None,
) -> Estimate:
    """Per-point lower bound on log p^SDE(x) with its standard error over ``n_times`` time samples."""
    check_sde(sde)
    x = check_points(x, "x")
    check_option(form, FORMS, "form")
    check_option(divergence, ("exact", "hutchinson"), "divergence")
    n_times = check_positive_int(n_times, "n_times")
    t0 = check_t0(t0, sde.T)
    keys = jax.random.split(key, x.shape[0])
    vals = _run(score, sde, form, n_times, bool(importance_sampling), float(t0), bool(eps_correction), divergence,
                prior_log_prob, x, keys)
    return Estimate.from_samples(vals)


def _per_point(score, sde, form, m, is_, t0, eps_corr, divergence, prior_log_prob, x, key):
    d = x.shape[-1]
    kt, ke, kp, kT, kc = jax.random.split(key, 5)
    t, w = sample_times(sde, kt, (m,), t0=t0, importance_sampling=is_, dtype=x.dtype)
    alpha, sigma = sde.marginal(t)
    eps = jax.random.normal(ke, (m, d), x.dtype)
    xt = alpha[:, None] * x + sigma[:, None] * eps
    g2, f = sde.g2(t), sde.f(t)
    if form == "dsm":
        s = jax.vmap(score)(xt, t)
        inner = g2 * (jnp.sum((s + eps / sigma[:, None]) ** 2, -1) - jnp.sum(eps**2, -1) / sigma**2)
    else:
        probes = None if divergence == "exact" else make_probes(kp, m, d, "rademacher", x.dtype)[:, None, :]

        def s_and_div(y, tt, v):
            val, div = value_and_divergence(lambda z: score(z, tt), y, v)
            return val, jnp.mean(div)

        s, div = jax.vmap(s_and_div)(xt, t, probes) if probes is not None else jax.vmap(
            lambda y, tt: s_and_div(y, tt, None))(xt, t)
        inner = g2 * (2 * div + jnp.sum(s**2, -1))
    term = 0.5 * inner - d * f
    if prior_log_prob is None:
        prior = _prior_term(sde, x)
    else:
        aT, sT = sde.marginal(jnp.asarray(sde.T, x.dtype))
        prior = jax.vmap(prior_log_prob)(aT * x + sT * jax.random.normal(kT, (m, d), x.dtype))
    vals = prior - w * term
    if eps_corr:
        a0, s0 = sde.marginal(jnp.asarray(t0, x.dtype))
        z = jax.random.normal(kc, (m, d), x.dtype)
        xp = a0 * x + s0 * z
        mean = xp / a0 + s0**2 / a0 * jax.vmap(score, in_axes=(0, None))(xp, jnp.asarray(t0, x.dtype))
        sq = s0 / a0  # std of q
        log_q = -0.5 * jnp.sum((x - mean) ** 2, -1) / sq**2 - d * jnp.log(sq) - 0.5 * d * jnp.log(2 * jnp.pi)
        log_fwd = -0.5 * jnp.sum(z**2, -1) - d * jnp.log(s0) - 0.5 * d * jnp.log(2 * jnp.pi)
        vals = vals + log_q - log_fwd
    return vals


def _run_impl(score, sde, form, m, is_, t0, eps_corr, divergence, prior_log_prob, x, keys):
    return jax.vmap(lambda xx, k: _per_point(score, sde, form, m, is_, t0, eps_corr, divergence, prior_log_prob, xx, k))(x, keys)


_run = jax.jit(_run_impl, static_argnums=(0, 1, 2, 3, 4, 5, 6, 7, 8))


def hvae_elbo(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: PRNGKeyArray,
    n_layers: int,
    n_paths: int = 64,
    lam: float = 0.0,
    inference_drift: Optional[Callable] = None,
    t0: float = 0.0,
) -> Estimate:
    """The discrete-time ELBO of the L-layer hierarchical VAE (``001_4a6883c9517e568d.txt`` eqs. 19-23).

    Decoder: Euler-Maruyama steps of the lambda plug-in reverse SDE (eq. 27) on a uniform grid of ``n_layers`` steps
    of [t0, T], prior N(0, prior_std^2). Encoder: Euler-Maruyama steps of the inference SDE, by default the
    lambda-family inference SDE dY = (f y - lam/2 g^2 s) dt + sqrt(1 - lam) g dB (the forward SDE for lam = 0), or
    dY = inference_drift(y, t) dt + sqrt(1 - lam) g dB. Tends to the CT-ELBO as n_layers grows (Thm. 5). Per point,
    the value and stderr are over ``n_paths`` encoder paths."""
    vals, _ = _hvae_checked(score, sde, x, key, n_layers, n_paths, lam, inference_drift, t0)
    return Estimate.from_samples(vals)


def variational_gap(
    score: Callable,
    sde: LinearSDE,
    x: Float[Array, "n D"],
    *,
    key: PRNGKeyArray,
    inference_drift: Callable,
    n_layers: int,
    n_paths: int = 64,
    lam: float = 0.0,
    t0: float = 0.0,
) -> Estimate:
    """Thm. 4 of ``001_4a6883c9517e568d.txt`` (eq. 18): log p(x) - CT-ELBO = 1/2 int E_Q |a - a*|^2 ds, here written
    as the time integral of |b - b*|^2 / (2 (1 - lam) g^2) along the encoder paths of :func:`hvae_elbo`, where b is the
    encoder drift and b* = f y - lam/2 g^2 s the optimal one. Exact when ``score`` is the true score of the
    generative model's marginals (e.g. an exact mixture score, whose plug-in reverse SDE has marginals p_t).
    The same ``key`` as :func:`hvae_elbo` gives the same paths."""
    _, gaps = _hvae_checked(score, sde, x, key, n_layers, n_paths, lam, inference_drift, t0)
    return Estimate.from_samples(gaps)


def _hvae_checked(score, sde, x, key, n_layers, n_paths, lam, inference_drift, t0):
    check_sde(sde)
    x = check_points(x, "x")
    n_layers = check_positive_int(n_layers, "n_layers")
    n_paths = check_positive_int(n_paths, "n_paths")
    lam = float(lam)
    if not lam < 1.0:
        raise ValueError(f"lam must be < 1 (lam = 1 is the ODE, which has no ELBO), got {lam}")
    t0 = float(t0)
    if not 0.0 <= t0 < sde.T:
        raise ValueError(f"t0 must lie in [0, T={sde.T}), got {t0}")
    if inference_drift is not None and not callable(inference_drift):
        raise ValueError(f"inference_drift must be a callable b(y, t), got {type(inference_drift).__name__}")
    keys = jax.random.split(key, x.shape[0])
    return _hvae(score, sde, n_layers, n_paths, lam, inference_drift, t0, x, keys)


def _hvae_point(score, sde, n_layers, n_paths, lam, drift, t0, x, key):
    d = x.shape[-1]
    ts = jnp.linspace(t0, sde.T, n_layers + 1, dtype=x.dtype)
    c = 1.0 - lam

    def b_opt(y, t):  # the lambda-family inference drift (exact posterior when score is the true score)
        return sde.f(t) * y - 0.5 * lam * sde.g2(t) * score(y, t)

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


def _hvae_impl(score, sde, n_layers, n_paths, lam, drift, t0, x, keys):
    return jax.vmap(lambda xx, k: _hvae_point(score, sde, n_layers, n_paths, lam, drift, t0, xx, k))(x, keys)


_hvae = jax.jit(_hvae_impl, static_argnums=(0, 1, 2, 3, 4, 5, 6))
