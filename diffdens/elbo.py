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
from .sde import LinearSDE

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
    if not isinstance(sde, LinearSDE):
        raise ValueError(f"sde must be a LinearSDE, got {type(sde).__name__}")
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
