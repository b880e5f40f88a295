"""Linear SDEs dx = f(t) x dt + g(t) dW and their Gaussian transition kernels.

Song et al. (2021), *Score-Based Generative Modeling through SDEs* (eqs. 10-11, 29), as restated in
``002_f66275a1c9cf2a92.txt`` Table 1 and ``004_720dbaeb92b913c7.txt`` Sec. 2. For every SDE here
p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I), with alpha_t = exp(int_0^t f) and d sigma_t^2/dt = 2 f sigma_t^2 + g^2.
The log-SNR lambda(t) = log(alpha_t^2 / sigma_t^2) is strictly decreasing with d lambda/dt = -g^2 / sigma_t^2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_points, check_positive_int, check_time

Scalar = Float[Array, ""]


def check_sde(sde) -> "LinearSDE":
    """sde must be one of the package's linear SDEs (a :class:`LinearSDE`)."""
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a LinearSDE (e.g. dd.VPSDE()), got {type(sde).__name__}")
    return sde


class LinearSDE:
    """Base class. Subclasses define ``f``, ``g2``, ``marginal``, ``log_snr``, ``log_snr_inverse`` and the prior."""

    T: float

    # --- coefficients -------------------------------------------------------------------------
    def f(self, t):
        """Drift coefficient f(t) of dx = f(t) x dt + g(t) dW."""
        raise NotImplementedError

    def g2(self, t):
        """Squared diffusion coefficient g(t)^2."""
        raise NotImplementedError

    def diffusion(self, t):
        """g(t)."""
        return jnp.sqrt(self.g2(t))

    def drift(self, x: Float[Array, "*b D"], t) -> Float[Array, "*b D"]:
        """f(t) x."""
        return self.f(t) * x

    def marginal(self, t):
        """(alpha_t, sigma_t) with p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)."""
        raise NotImplementedError

    # --- log-SNR ------------------------------------------------------------------------------
    def log_snr(self, t):
        """lambda(t) = log(alpha_t^2 / sigma_t^2), decreasing in t."""
        raise NotImplementedError

    def log_snr_inverse(self, lam):
        """The time t with log_snr(t) == lam."""
        raise NotImplementedError

    # --- prior --------------------------------------------------------------------------------
    prior_std: float = 1.0

    def prior_log_prob(self, x: Float[Array, "*b D"]) -> Float[Array, "*b"]:
        """log N(x; 0, prior_std^2 I), the reference density at t = T."""
        d = x.shape[-1]
        s2 = self.prior_std**2
        return -0.5 * jnp.sum(x**2, axis=-1) / s2 - 0.5 * d * jnp.log(2 * jnp.pi * s2)

    def prior_sample(self, key: PRNGKeyArray, shape) -> Float[Array, "..."]:
        """Draws from N(0, prior_std^2 I) of the given shape."""
        return self.prior_std * jax.random.normal(key, shape)

    # --- helpers ------------------------------------------------------------------------------
    def check_time(self, t, name: str = "t", *, t0: float = 0.0):
        """Raise ValueError if a concrete t lies outside [t0, T]."""
        return check_time(t, name, lo=t0, hi=self.T)

    def perturb(self, key: PRNGKeyArray, x0, t):
        """Sample x_t ~ p(x_t | x_0); returns (x_t, eps) with x_t = alpha_t x0 + sigma_t eps."""
        alpha, sigma = self.marginal(t)
        eps = jax.random.normal(key, jnp.shape(x0), dtype=jnp.result_type(x0))
        return alpha * x0 + sigma * eps, eps

    def expected_prior_log_prob(self, x: Float[Array, "*b D"]) -> Float[Array, "*b"]:
        """E_{x_T ~ N(alpha_T x, sigma_T^2 I)} log N(x_T; 0, prior_std^2 I) in closed form: the prior term of the
        ELBO and the path-integral bound for data x."""
        a, s = self.marginal(jnp.asarray(self.T, jnp.result_type(x)))
        d = x.shape[-1]
        v = self.prior_std**2
        return -0.5 * (a**2 * jnp.sum(x**2, -1) + d * s**2) / v - 0.5 * d * jnp.log(2 * jnp.pi * v)


def _vp_beta_integral(beta_min, beta_max, t):
    return beta_min * t + 0.5 * (beta_max - beta_min) * t**2


def _vp_time_from_integral(beta_min, beta_max, B):
    # solves beta_min t + (beta_max - beta_min) t^2 / 2 = B in the cancellation-free form
    d = beta_max - beta_min
    return 2 * B / (beta_min + jnp.sqrt(beta_min**2 + 2 * d * B))


@dataclass(frozen=True)
class VPSDE(LinearSDE):
    """Variance-preserving SDE: f = -beta(t)/2, g^2 = beta(t), beta linear from beta_min to beta_max."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __post_init__(self):
        if not (0 < self.beta_min <= self.beta_max) or not self.T > 0:
            raise ValueError(f"VPSDE needs 0 < beta_min <= beta_max and T > 0, got {self}")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t)

    def _B(self, t):
        return _vp_beta_integral(self.beta_min, self.beta_max, t)

    def marginal(self, t):
        B = self._B(t)
        return jnp.exp(-0.5 * B), jnp.sqrt(-jnp.expm1(-B))

    def log_snr(self, t):
        return -jnp.log(jnp.expm1(self._B(t)))

    def log_snr_inverse(self, lam):
        return _vp_time_from_integral(self.beta_min, self.beta_max, jax.nn.softplus(-lam))


@dataclass(frozen=True)
class SubVPSDE(LinearSDE):
    """Sub-VP SDE: f = -beta/2, g^2 = beta (1 - exp(-2 int beta)); sigma_t = 1 - exp(-int beta)."""

    beta_min: float = 0.1
    beta_max: float = 20.0
    T: float = 1.0

    def __post_init__(self):
        if not (0 < self.beta_min <= self.beta_max) or not self.T > 0:
            raise ValueError(f"SubVPSDE needs 0 < beta_min <= beta_max and T > 0, got {self}")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def f(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(t) * -jnp.expm1(-2 * self._B(t))

    def _B(self, t):
        return _vp_beta_integral(self.beta_min, self.beta_max, t)

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
        return _vp_time_from_integral(self.beta_min, self.beta_max, jnp.log1p(w))


@dataclass(frozen=True)
class VESDE(LinearSDE):
    """Variance-exploding SDE: f = 0, sigma(t) = sigma_min (sigma_max/sigma_min)^t, g^2 = d sigma(t)^2 / dt.

    The transition kernel from x_0 at t = 0 has variance sigma(t)^2 - sigma_min^2 (exact, vanishing at t = 0);
    the prior is N(0, sigma_max^2 I) as in Song et al.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    T: float = 1.0

    def __post_init__(self):
        if not (0 < self.sigma_min < self.sigma_max) or not self.T > 0:
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


def forward_sample(
    sde: LinearSDE,
    key: PRNGKeyArray,
    x0: Float[Array, "n D"],
    t1: float,
    *,
    n_steps: int = 1000,
    t0: float = 0.0,
) -> Float[Array, "n D"]:
    """Simulate the forward SDE from x0 at t0 to t1 with Euler-Maruyama (diffrax), one path per row of x0."""
    x0 = check_points(x0, "x0")
    n_steps = check_positive_int(n_steps, "n_steps")
    sde.check_time(t0, "t0")
    sde.check_time(t1, "t1")
    if not t1 > t0:
        raise ValueError(f"t1 must exceed t0, got t0={t0}, t1={t1}")
    dt = (t1 - t0) / n_steps

    def one(k, x):
        bm = diffrax.VirtualBrownianTree(t0, t1, tol=dt / 2, shape=x.shape, key=k)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, _: sde.drift(y, t)),
            diffrax.ControlTerm(lambda t, y, _: lx.DiagonalLinearOperator(sde.diffusion(t) * jnp.ones_like(y)), bm),
        )
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), t0, t1, dt, x, max_steps=n_steps + 1)
        return sol.ys[-1]

    keys = jax.random.split(key, x0.shape[0])
    return jax.jit(jax.vmap(one))(keys, x0)
