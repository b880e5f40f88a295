"""The SDEs of Song et al. 2021a in closed form (as tabulated in Song et al. 2021b, Table 1): VP and sub-VP, which share
the linear beta(t) = beta_min + t (beta_max - beta_min) and its integral B(t), and VE."""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .base import LinearSDE, coerce_real_fields


def _vp_beta_integral(beta_min, beta_max, t):
    return beta_min * t + 0.5 * (beta_max - beta_min) * t**2


def _vp_time_from_integral(beta_min, beta_max, B):
    # solves beta_min t + (beta_max - beta_min) t^2 / 2 = B in the cancellation-free form
    d = beta_max - beta_min
    return 2 * B / (beta_min + jnp.sqrt(beta_min**2 + 2 * d * B))


@dataclass(frozen=True)
class _LinearBetaSDE(LinearSDE):
    """The drift shared by VP and sub-VP: f = -beta(t)/2 with beta linear from beta_min to beta_max, so
    alpha_t = exp(-B(t)/2) with B(t) = int_0^t beta."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __post_init__(self):
        coerce_real_fields(self)
        if not (0 < self.beta_min <= self.beta_max < math.inf) or not 0 < self.T < math.inf:
            raise ValueError(f"{type(self).__name__} needs 0 < beta_min <= beta_max and T > 0, got {self}")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def f(self, t):
        return -0.5 * self.beta(t)

    def _B(self, t):
        return _vp_beta_integral(self.beta_min, self.beta_max, t)

    def _time_from_B(self, B):
        return _vp_time_from_integral(self.beta_min, self.beta_max, B)


@dataclass(frozen=True)
class VPSDE(_LinearBetaSDE):
    """Variance-preserving SDE: f = -beta(t)/2, g^2 = beta(t), beta linear from beta_min to beta_max; prior N(0, I).

    Arguments:
        beta_min: beta(0).
        beta_max: beta(T).
        T: the end time.
    """

    def g2(self, t):
        return self.beta(t)

    def marginal(self, t):
        B = self._B(t)
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def log_snr(self, t):
        return -jnp.log(jnp.expm1(self._B(t)))

    def log_snr_inverse(self, lam):
        return self._time_from_B(jax.nn.softplus(-lam))


@dataclass(frozen=True)
class SubVPSDE(_LinearBetaSDE):
    """Sub-VP SDE: f = -beta/2, g^2 = beta (1 - exp(-2 int beta)); sigma_t = 1 - exp(-int beta).

    Arguments:
        beta_min: beta(0).
        beta_max: beta(T).
        T: the end time.
    """

    def g2(self, t):
        return self.beta(t) * -jnp.expm1(-2 * self._B(t))

    def marginal(self, t):
        B = self._B(t)
        return jnp.exp(-0.5 * B), -jnp.expm1(-B)

    def log_snr(self, t):
        B = self._B(t)
        return -B - 2 * jnp.log(-jnp.expm1(-B))

    def log_snr_inverse(self, lam):
        # exp(-lam) = w^2 / (1 + w) with w = e^B - 1  =>  w = (c + sqrt(c^2 + 4c)) / 2, c = exp(-lam)
        c = jnp.exp(-lam)
        w = 0.5 * (c + jnp.sqrt(c * c + 4 * c))
        return self._time_from_B(jnp.log1p(w))


@dataclass(frozen=True)
class VESDE(LinearSDE):
    """Variance-exploding SDE: f = 0, sigma(t) = sigma_min (sigma_max/sigma_min)^t, g^2 = d sigma(t)^2 / dt.

    The transition kernel from x_0 at t = 0 has variance sigma(t)^2 - sigma_min^2 (exact, vanishing at t = 0);
    the prior is N(0, sigma_max^2 I) as in Song et al. 2021a.

    Arguments:
        sigma_min: the noise level at t = 0.
        sigma_max: the noise level at t = 1 (and the prior's standard deviation).
        T: the end time.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0

    def __post_init__(self):
        coerce_real_fields(self)
        if not (0 < self.sigma_min < self.sigma_max < math.inf) or not 0 < self.T < math.inf:
            raise ValueError(f"VESDE needs 0 < sigma_min < sigma_max and T > 0, got {self}")

    @property
    def prior_std(self) -> float:  # type: ignore[override]
        return self.sigma_max

    @property
    def _log_ratio(self) -> float:
        return math.log(self.sigma_max / self.sigma_min) / self.T

    def f(self, t):
        return jnp.zeros_like(jnp.asarray(t, dtype=jnp.result_type(float)))

    def g2(self, t):
        return 2 * self._log_ratio * self.sigma_min**2 * jnp.exp(2 * self._log_ratio * t)

    def marginal(self, t):
        sigma = self.sigma_min * jnp.sqrt(jnp.expm1(2 * self._log_ratio * t))
        return jnp.ones_like(sigma), sigma

    def log_snr(self, t):
        return -2 * math.log(self.sigma_min) - jnp.log(jnp.expm1(2 * self._log_ratio * t))

    def log_snr_inverse(self, lam):
        return jnp.log1p(jnp.exp(-lam) / self.sigma_min**2) / (2 * self._log_ratio)
