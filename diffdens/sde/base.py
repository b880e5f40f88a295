"""The interface: a linear SDE dx = f(t) x dt + g(t) dW with Gaussian transition kernel.

Song et al. 2021a, *Score-Based Generative Modeling through SDEs* (eqs. 10-11, 29), as restated in
Song et al. 2021b, Table 1, and Karczewski et al. 2025, Sec. 2. For every SDE here
p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I), with alpha_t = exp(int_0^t f) and d sigma_t^2/dt = 2 f sigma_t^2 + g^2.
The log-SNR lambda(t) = log(alpha_t^2 / sigma_t^2) is strictly decreasing with d lambda/dt = -g^2 / sigma_t^2.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable, Optional

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._checks import check_time

if TYPE_CHECKING:
    from .schedules import CustomSDE

Scalar = Float[Array, ""]


def check_sde(sde) -> "LinearSDE":
    """Check that ``sde`` is one of the package's linear SDEs.

    Arguments:
        sde: the object to check.

    Returns:
        ``sde`` itself, a :class:`LinearSDE`; anything else raises TypeError naming ``sde``.
    """
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a LinearSDE (e.g. dd.VPSDE()), got {type(sde).__name__}")
    return sde


def coerce_real_fields(sde) -> None:
    """Check that each float/int field of a frozen dataclass SDE (annotated ``float``, ``int`` or
    ``Optional[float]``) is a real number, raising ``TypeError`` naming the field (e.g. ``beta_min="0.1"``), and store
    numpy scalars (``np.float32(1.0)``) as Python numbers, so equal SDEs hash equal."""
    import dataclasses
    import numbers

    for f in dataclasses.fields(sde):
        ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        if ann not in ("float", "int", "Optional[float]"):
            continue
        v = getattr(sde, f.name)
        if v is None and ann == "Optional[float]":
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{type(sde).__name__}: {f.name} must be a real number, got {v!r} "
                            f"({type(v).__name__})")
        object.__setattr__(sde, f.name, int(v) if ann == "int" and isinstance(v, numbers.Integral) else float(v))


class LinearSDE(ABC):
    """Abstract base of every SDE: dx = f(t) x dt + g(t) dW with p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I).

    Subclasses define ``f``, ``g2``, ``marginal``, ``log_snr``, ``log_snr_inverse`` and ``T`` (and ``prior_std``
    when the prior is not N(0, I)); :meth:`from_schedule` builds one from any Gaussian path. Every concrete SDE is a
    frozen dataclass: hashable, a static argument of the compiled kernels. Methods take a time t (scalar or array)
    and points x (..., D): ``f(t)``, ``g2(t)``, ``g(t)``, ``drift(x, t)``, ``marginal(t) -> (alpha_t, sigma_t)``,
    ``log_snr(t)``, ``log_snr_inverse(lam)``, ``prior_log_prob(x) -> (...,)``, ``prior_sample(key, shape)``,
    ``prior_mismatch(x0) -> (...,)``, ``perturb(key, x0, t) -> (x_t, eps)``.

    Attributes:
        T: the end time of the diffusion.
        prior_std: the standard deviation of the prior N(0, prior_std^2 I) at t = T.
    """

    T: float

    @classmethod
    def from_schedule(cls, alpha: Callable, sigma: Callable, *, T: float = 1.0, name: str = "custom",
                      prior_std: Optional[float] = None) -> "CustomSDE":
        """An SDE from a Gaussian path x_t = alpha(t) x_0 + sigma(t) eps on [0, T] (jax-traceable scalar functions).

        f = d log alpha / dt, g^2 = d sigma^2 / dt - 2 f sigma^2; prior N(0, prior_std^2 I), prior_std = sigma(T) by
        default. Raises ValueError naming the schedule if alpha(0) != 1 or sigma(0) != 0, alpha is not positive,
        sigma not increasing or continuous, g^2 not positive or the log-SNR not decreasing on [0, T] (checked on a
        grid, :meth:`ScheduleSDE.validate`).
        """
        from .schedules import CustomSDE  # schedules builds on this module

        return CustomSDE(alpha, sigma, T=T, name=name, prior_scale=prior_std)

    # --- coefficients -------------------------------------------------------------------------
    @abstractmethod
    def f(self, t):
        """Drift coefficient f(t) of dx = f(t) x dt + g(t) dW."""

    @abstractmethod
    def g2(self, t):
        """Squared diffusion coefficient g(t)^2."""

    def diffusion(self, t):
        """g(t)."""
        return jnp.sqrt(self.g2(t))

    def drift(self, x: Float[Array, "*b D"], t) -> Float[Array, "*b D"]:
        """f(t) x."""
        return self.f(t) * x

    @abstractmethod
    def marginal(self, t):
        """(alpha_t, sigma_t) with p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)."""

    # --- log-SNR ------------------------------------------------------------------------------
    @abstractmethod
    def log_snr(self, t):
        """lambda(t) = log(alpha_t^2 / sigma_t^2), decreasing in t."""

    @abstractmethod
    def log_snr_inverse(self, lam):
        """The time t with log_snr(t) == lam."""

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

    def prior_mismatch(self, x0: Float[Array, "*b D"]) -> Float[Array, "*b"]:
        """KL( N(alpha_T x0, sigma_T^2 I) || prior ) per data point, in nats.

        Its mean over data bounds KL(p_T || prior) from above (convexity of KL), so it bounds what any
        estimator of log p loses by starting from the prior instead of p_T. Near zero for VP/VE/cosine; for a
        schedule stopped early (e.g. :class:`RectifiedFlowSDE` at T < 1) it is what the truncation costs.
        """
        x0 = jnp.asarray(x0)
        alpha, sigma = self.marginal(jnp.asarray(self.T, dtype=jnp.result_type(x0.dtype, float)))
        d = x0.shape[-1]
        r = sigma**2 / self.prior_std**2
        return 0.5 * (alpha**2 * jnp.sum(x0**2, axis=-1) / self.prior_std**2 + d * (r - 1 - jnp.log(r)))

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
