"""Augmented reverse SDE: sample and carry the log-density along (004_720dbaeb92b913c7 eq. 7, Thm. 1).

Derivation (Ito in reverse time, step h > 0 from t to t - h, s = score(x, t), linear drift f(t) x):
  x <- x - (f x - g^2 s) h + g sqrt(h) z
  r <- r + (D f + g^2 |s|^2 / 2) h + g sqrt(h) s.z
The Laplacian terms (Fokker-Planck 1/2 g^2 tr H and the Ito correction -1/2 g^2 tr H h) cancel only in
reverse time, so no divergence is needed.  Euler-Maruyama, same Brownian increment z for x and r.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._checks import check_positive, check_positive_int, check_shape

__all__ = ["sample_with_log_prob"]


def sample_with_log_prob(score, sde, key, shape, *, n_steps=1000, t0=1e-5, prior_log_prob=None):
    """Sample x0 by the augmented reverse SDE (Euler-Maruyama) and return (x0, r0), r0 ~ log p0(x0)."""
    n, D = check_shape(shape, "shape")
    n_steps = check_positive_int(n_steps, "n_steps")
    t0 = check_positive(t0, "t0")
    if not t0 < sde.T:
        raise ValueError(f"t0 must be < T={sde.T}, got {t0}")
    lp = prior_log_prob if prior_log_prob is not None else sde.prior_log_prob
    ts = jnp.linspace(sde.T, t0, n_steps + 1)
    k_prior, k_paths = jax.random.split(key)
    xT = sde.prior_sample(k_prior, (n, D))

    def one(k, x):
        r = lp(x)

        def step(c, inp):
            x, r = c
            t, t_next, kk = inp
            h = t - t_next
            s = score(x, t)
            f, g2 = sde.f(t), sde.g2(t)
            z = jax.random.normal(kk, x.shape, x.dtype)
            dw = jnp.sqrt(h) * z
            x_new = x - (f * x - g2 * s) * h + jnp.sqrt(g2) * dw
            r_new = r + (D * f + 0.5 * g2 * jnp.sum(s * s)) * h + jnp.sqrt(g2) * jnp.dot(s, dw)
            return (x_new, r_new), None

        (x, r), _ = jax.lax.scan(step, (x, r), (ts[:-1], ts[1:], jax.random.split(k, n_steps)))
        return x, r

    return jax.vmap(one)(jax.random.split(k_paths, n), xT)
