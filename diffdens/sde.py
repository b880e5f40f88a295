"""Linear SDEs dx = f(t) x dt + g(t) dW and their Gaussian transition kernels.

Song et al. (2021), *Score-Based Generative Modeling through SDEs* (eqs. 10-11, 29), as restated in
``002_f66275a1c9cf2a92.txt`` Table 1 and ``004_720dbaeb92b913c7.txt`` Sec. 2. For every SDE here
p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I), with alpha_t = exp(int_0^t f) and d sigma_t^2/dt = 2 f sigma_t^2 + g^2.
The log-SNR lambda(t) = log(alpha_t^2 / sigma_t^2) is strictly decreasing with d lambda/dt = -g^2 / sigma_t^2.

Any Gaussian path x_t = alpha(t) x_0 + sigma(t) eps defines such an SDE (f = d log alpha / dt,
g^2 = d sigma^2 / dt - 2 f sigma^2): :meth:`LinearSDE.from_schedule` builds one from two functions of t, and the presets
:class:`CosineVPSDE` (Nichol & Dhariwal 2021), :class:`EDMSDE` (Karras et al. 2022) and :class:`RectifiedFlowSDE`
(Liu et al. 2023) are built the same way. VP, sub-VP and VE keep their closed forms.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Optional

import diffrax
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._checks import check_points, check_positive_int, check_time, check_key

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
        if not (0 < self.beta_min <= self.beta_max < math.inf) or not 0 < self.T < math.inf:
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
        if not (0 < self.beta_min <= self.beta_max < math.inf) or not 0 < self.T < math.inf:
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


def _elementwise(fn):
    """fn of a scalar t, applied elementwise to an array t (and returning an array of t's shape)."""
    return jnp.vectorize(fn)


class ScheduleSDE(LinearSDE):
    """A linear SDE given by its Gaussian path x_t = alpha(t) x_0 + sigma(t) eps (any noise schedule).

    Subclasses define ``alpha(t)`` and ``sigma(t)`` for a scalar t (jax-traceable); everything else is derived:
    f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (by autodiff), lambda = 2 log(alpha / sigma), its
    inverse by bisection (jit-safe, vectorized), and the prior N(0, prior_std^2 I) with prior_std = sigma(T) unless
    given. :meth:`validate` checks on a grid of [0, T] that alpha > 0, sigma increases and lambda decreases.
    """

    _GRID = 2001
    _BISECT = 64

    def alpha(self, t):
        raise NotImplementedError

    def sigma(self, t):
        raise NotImplementedError

    @property
    def prior_std(self) -> float:  # type: ignore[override]
        return self._prior_std

    def _set_prior_std(self, value):
        if value is None:
            with jax.enable_x64(True):
                value = float(self.sigma(jnp.asarray(self.T, jnp.float64)))
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"prior_std must be positive and finite, got {value}")
        object.__setattr__(self, "_prior_std", float(value))

    def validate(self, label: str = "schedule"):
        """Raise ValueError naming what fails if alpha is not positive, sigma not increasing or lambda not
        decreasing on a grid of [0, T] (float64)."""
        if not (isinstance(self.T, (int, float)) and math.isfinite(self.T) and self.T > 0):
            raise ValueError(f"{label}: T must be positive and finite, got {self.T!r}")
        with jax.enable_x64(True):
            ts = jnp.linspace(0.0, float(self.T), self._GRID, dtype=jnp.float64)
            try:
                a = np.asarray(_elementwise(self.alpha)(ts), np.float64)
                s = np.asarray(_elementwise(self.sigma)(ts), np.float64)
                lam = np.asarray(self.log_snr(ts[1:]), np.float64)
            except Exception as e:  # not traceable, wrong output
                raise ValueError(f"{label}: alpha(t) and sigma(t) must be jax-traceable scalar functions of t ({e})") from e
        if a.shape != ts.shape or s.shape != ts.shape:
            raise ValueError(f"{label}: alpha(t) and sigma(t) must return a scalar for a scalar t")
        bad = ~(np.isfinite(a) & (a > 0))
        if bad.any():
            raise ValueError(f"{label}: alpha must be positive and finite on [0, T]; alpha({ts[bad.argmax()]:.4g}) = "
                             f"{a[bad.argmax()]}")
        if not (np.all(np.isfinite(s)) and s[0] >= 0 and np.all(np.diff(s) > 0)):
            k = int(np.argmax(~(np.diff(s) > 0))) if np.all(np.isfinite(s)) else int(np.argmax(~np.isfinite(s)))
            raise ValueError(f"{label}: sigma must be finite, non-negative and increasing on [0, T]; "
                             f"it fails near t = {float(ts[k]):.4g}")
        if not (np.all(np.isfinite(lam)) and np.all(np.diff(lam) < 0)):
            k = int(np.argmax(~(np.diff(lam) < 0))) if np.all(np.isfinite(lam)) else int(np.argmax(~np.isfinite(lam)))
            raise ValueError(f"{label}: the log-SNR log(alpha^2 / sigma^2) must be decreasing on (0, T]; "
                             f"it fails near t = {float(ts[k + 1]):.4g}")

    # --- derived coefficients ---------------------------------------------------------------------
    def marginal(self, t):
        return _elementwise(self.alpha)(t), _elementwise(self.sigma)(t)

    def f(self, t):
        return _elementwise(jax.grad(lambda u: jnp.log(self.alpha(u))))(jnp.asarray(t, jnp.result_type(t, float)))

    def g2(self, t):
        t = jnp.asarray(t, jnp.result_type(t, float))
        ds2 = _elementwise(jax.grad(lambda u: self.sigma(u) ** 2))(t)
        return ds2 - 2 * self.f(t) * _elementwise(self.sigma)(t) ** 2

    def log_snr(self, t):
        alpha, sigma = self.marginal(jnp.asarray(t, jnp.result_type(t, float)))
        return 2 * (jnp.log(alpha) - jnp.log(sigma))

    def log_snr_inverse(self, lam):
        """Bisection on [0, T] (log_snr is decreasing), elementwise and jit-safe."""
        lam = jnp.asarray(lam, jnp.result_type(lam, float))
        lo, hi = jnp.zeros_like(lam), jnp.full_like(lam, self.T)

        def body(_, c):
            lo, hi = c
            mid = 0.5 * (lo + hi)
            right = self.log_snr(mid) > lam
            return jnp.where(right, mid, lo), jnp.where(right, hi, mid)

        lo, hi = jax.lax.fori_loop(0, self._BISECT, body, (lo, hi))
        return 0.5 * (lo + hi)


@dataclass(frozen=True)
class CustomSDE(ScheduleSDE):
    """The SDE of :meth:`LinearSDE.from_schedule`: alpha_fn and sigma_fn are the user's functions of a scalar t.

    Hashable and comparable: two CustomSDEs built from the same function objects, T, name and prior_std are equal
    (and share compiled kernels). A checkpoint stores the functions by import path (module-level functions only).
    """

    alpha_fn: Callable = field(repr=False)
    sigma_fn: Callable = field(repr=False)
    T: float = 1.0
    name: str = "custom"
    prior_scale: Optional[float] = None

    def __post_init__(self):
        for nm in ("alpha_fn", "sigma_fn"):
            if not callable(getattr(self, nm)):
                raise TypeError(f"{nm[:-3]} must be a callable of t, got {type(getattr(self, nm)).__name__}")
        self.validate(f"schedule {self.name!r}")
        self._set_prior_std(self.prior_scale)

    def alpha(self, t):
        return self.alpha_fn(t)

    def sigma(self, t):
        return self.sigma_fn(t)


def _from_schedule(cls, alpha: Callable, sigma: Callable, *, T: float = 1.0, name: str = "custom",
                   prior_std: Optional[float] = None) -> "CustomSDE":
    """An SDE from a Gaussian path x_t = alpha(t) x_0 + sigma(t) eps on [0, T] (jax-traceable scalar functions).

    f = d log alpha / dt, g^2 = d sigma^2 / dt - 2 f sigma^2; prior N(0, prior_std^2 I), prior_std = sigma(T) by
    default. Raises ValueError naming the schedule if alpha is not positive, sigma not increasing or the log-SNR not
    decreasing on [0, T] (checked on a grid).
    """
    return CustomSDE(alpha, sigma, T=T, name=name, prior_scale=prior_std)


LinearSDE.from_schedule = classmethod(_from_schedule)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CosineVPSDE(ScheduleSDE):
    """The cosine schedule of Nichol & Dhariwal (2021): alpha_t^2 = cos^2(phi_t) / cos^2(phi_0),
    phi_t = (t + s) / (1 + s) pi / 2, sigma_t^2 = 1 - alpha_t^2 (variance preserving, g^2 = -2 f = beta(t)).

    alpha vanishes at t = 1, where f diverges, so T defaults to 0.995 (log-SNR about -9.7, near VP's -10 at T = 1);
    see :meth:`prior_mismatch` for what stopping there costs.
    """

    s: float = 0.008
    T: float = 0.995

    def __post_init__(self):
        if not (0 < self.s < 1) or not (0 < self.T < 1):
            raise ValueError(f"CosineVPSDE needs 0 < s < 1 and 0 < T < 1, got {self}")
        self.validate("CosineVPSDE")
        self._set_prior_std(1.0)

    def _phi(self, t):
        return (t + self.s) / (1 + self.s) * (jnp.pi / 2)

    def alpha(self, t):
        return jnp.cos(self._phi(t)) / math.cos(self._phi(0.0))

    def sigma(self, t):  # sqrt(cos^2 phi0 - cos^2 phi) / cos phi0, without cancellation
        p, p0 = self._phi(t), self._phi(0.0)
        dp = t / (1 + self.s) * (jnp.pi / 2)  # p - p0, formed without subtraction
        return jnp.sqrt(jnp.sin(dp) * jnp.sin(p + p0)) / math.cos(p0)

    def f(self, t):
        return -0.5 * self.beta(t)

    def beta(self, t):
        return jnp.pi / (1 + self.s) * jnp.tan(self._phi(jnp.asarray(t, jnp.result_type(t, float))))

    def g2(self, t):
        return self.beta(t)


@dataclass(frozen=True)
class EDMSDE(ScheduleSDE):
    """Karras et al. (2022)'s path: alpha = 1, sigma(t) = t, so the time variable IS the noise level sigma.

    f = 0 and g^2 = 2 t; T = sigma_max; the prior is N(0, sigma_max^2 I). ``sigma_min`` is the smallest noise level
    the model was trained on: pass ``t0=sde.sigma_min`` to the estimators (below it the model is extrapolating).
    An EDM denoiser D(x; sigma) is then a function of t directly (:func:`diffdens.score_from_denoiser`).
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self):
        if not (0 < self.sigma_min < self.sigma_max < math.inf):
            raise ValueError(f"EDMSDE needs 0 < sigma_min < sigma_max < inf, got {self}")
        self._set_prior_std(self.sigma_max)

    @property
    def T(self) -> float:  # type: ignore[override]
        return float(self.sigma_max)

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, jnp.result_type(t, float)))

    def sigma(self, t):
        return jnp.asarray(t, jnp.result_type(t, float))

    def f(self, t):
        return jnp.zeros_like(jnp.asarray(t, jnp.result_type(t, float)))

    def g2(self, t):
        return 2 * jnp.asarray(t, jnp.result_type(t, float))

    def log_snr(self, t):
        return -2 * jnp.log(jnp.asarray(t, jnp.result_type(t, float)))

    def log_snr_inverse(self, lam):
        return jnp.exp(-0.5 * jnp.asarray(lam, jnp.result_type(lam, float)))


@dataclass(frozen=True)
class RectifiedFlowSDE(ScheduleSDE):
    """Rectified flow / flow matching (Liu et al. 2023; Lipman et al. 2023): alpha = 1 - t, sigma = t.

    f = -1 / (1 - t) and g^2 = 2 t / (1 - t) diverge at t = 1, so T defaults to 0.99 (log-SNR -9.2); the prior is
    N(0, T^2 I), and the cost of stopping short of t = 1 is reported by :meth:`prior_mismatch`
    (0.5 alpha_T^2 / sigma_T^2 |x_0|^2 per point: about 5e-5 |x_0|^2 nats at T = 0.99).
    """

    T: float = 0.99

    def __post_init__(self):
        if not (0 < self.T < 1):
            raise ValueError(f"RectifiedFlowSDE needs 0 < T < 1 (the drift diverges at t = 1), got T={self.T}")
        self._set_prior_std(None)

    def alpha(self, t):
        return 1 - jnp.asarray(t, jnp.result_type(t, float))

    def sigma(self, t):
        return jnp.asarray(t, jnp.result_type(t, float))

    def f(self, t):
        return -1 / (1 - jnp.asarray(t, jnp.result_type(t, float)))

    def g2(self, t):
        t = jnp.asarray(t, jnp.result_type(t, float))
        return 2 * t / (1 - t)

    def log_snr(self, t):
        t = jnp.asarray(t, jnp.result_type(t, float))
        return 2 * (jnp.log1p(-t) - jnp.log(t))

    def log_snr_inverse(self, lam):
        return jax.nn.sigmoid(-0.5 * jnp.asarray(lam, jnp.result_type(lam, float)))


def _fn_path(fn) -> str:
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or "<" in qual or mod == "__main__":
        raise ValueError(f"sde: cannot store the schedule function {fn!r} in a checkpoint; define it at module level "
                         "in an importable module (lambdas and closures cannot be saved)")
    return f"{mod}:{qual}"


def _fn_from_path(path: str):
    import importlib

    mod, qual = path.split(":")
    obj = importlib.import_module(mod)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def sde_config(sde: LinearSDE) -> dict:
    """A JSON-able description of ``sde`` (class name and parameters) that :func:`sde_from_config` rebuilds."""
    check_sde(sde)
    if isinstance(sde, CustomSDE):
        return {"class": "CustomSDE", "alpha": _fn_path(sde.alpha_fn), "sigma": _fn_path(sde.sigma_fn),
                "T": sde.T, "name": sde.name, "prior_std": sde.prior_scale}
    if not dataclasses.is_dataclass(sde) or type(sde) not in _SDE_CLASSES.values():
        raise ValueError(f"sde: cannot serialize an SDE of class {type(sde).__name__}")
    return {"class": type(sde).__name__, **dataclasses.asdict(sde)}


def sde_from_config(cfg: dict) -> LinearSDE:
    """The SDE described by :func:`sde_config`'s output; ValueError for an unknown class."""
    cfg = dict(cfg)
    name = cfg.pop("class", None)
    if name == "CustomSDE":
        return LinearSDE.from_schedule(_fn_from_path(cfg["alpha"]), _fn_from_path(cfg["sigma"]), T=cfg["T"],
                                       name=cfg["name"], prior_std=cfg["prior_std"])
    if name not in _SDE_CLASSES:
        raise ValueError(f"unknown SDE class {name!r} in the configuration")
    return _SDE_CLASSES[name](**cfg)


_SDE_CLASSES = {c.__name__: c for c in (VPSDE, SubVPSDE, VESDE, CosineVPSDE, EDMSDE, RectifiedFlowSDE)}


@partial(jax.jit, static_argnames=("sde", "n_steps"))
def _forward_kernel(sde, keys, x0, t0, t1, n_steps):
    dt = (t1 - t0) / n_steps

    def one(k, x):
        bm = diffrax.VirtualBrownianTree(t0, t1, tol=dt / 2, shape=x.shape, key=k)
        terms = diffrax.MultiTerm(
            diffrax.ODETerm(lambda t, y, _: sde.drift(y, t)),
            diffrax.ControlTerm(lambda t, y, _: lx.DiagonalLinearOperator(sde.diffusion(t) * jnp.ones_like(y)), bm),
        )
        sol = diffrax.diffeqsolve(terms, diffrax.Euler(), t0, t1, dt, x, max_steps=n_steps + 1)
        return sol.ys[-1]

    return jax.vmap(one)(keys, x0)


def forward_sample(
    sde: LinearSDE,
    key: PRNGKeyArray,
    x0: Float[Array, "n D"],
    t1: float,
    *,
    n_steps: int = 1000,
    t0: float = 0.0,
) -> Float[Array, "n D"]:
    """Simulate the forward SDE from x0 at t0 to t1 with Euler-Maruyama (diffrax), one path per row of x0.

    One compiled kernel per (SDE, n_steps, shape): t0 and t1 are traced, the SDE is a static (hashable) argument."""
    check_sde(sde)
    check_key(key)
    x0 = check_points(x0, "x0")
    n_steps = check_positive_int(n_steps, "n_steps")
    sde.check_time(t0, "t0")
    sde.check_time(t1, "t1")
    if not t1 > t0:
        raise ValueError(f"t1 must exceed t0, got t0={t0}, t1={t1}")
    keys = jax.random.split(key, x0.shape[0])
    dtype = x0.dtype
    return _forward_kernel(sde, keys, x0, jnp.asarray(t0, dtype), jnp.asarray(t1, dtype), n_steps)
