"""Any Gaussian noise schedule as a linear SDE, and the presets built on it.

A Gaussian path x_t = alpha(t) x_0 + sigma(t) eps with alpha(0) = 1, sigma(0) = 0 is the transition of the SDE with
f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (Karczewski et al. 2025, Sec. 2): :class:`ScheduleSDE`
derives everything from alpha and sigma; :class:`CustomSDE` (what :meth:`LinearSDE.from_schedule` returns) takes them
as two functions; the presets :class:`CosineVPSDE` (Nichol & Dhariwal 2021), :class:`EDMSDE` (Karras et al. 2022) and
:class:`RectifiedFlowSDE` (Liu et al. 2023) override the derived coefficients with closed forms.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .base import LinearSDE, coerce_real_fields


def _elementwise(fn):
    """fn of a scalar t, applied elementwise to an array t (and returning an array of t's shape)."""
    return jnp.vectorize(fn)


def _jumps(fn, ts, v, *, depth: int = 40, rtol: float = 1e-3):
    """Grid points t_k at which fn (values v on the float64 grid ts) seems to jump between t_k and t_(k+1).

    An interval whose increment is over 3 times both its neighbours' is bisected ``depth`` times, each time keeping
    the half with the larger increment: a continuous fn's increment then shrinks towards 0, a jump's stays. Reported:
    the intervals whose final increment exceeds rtol times max |fn| on the grid.
    """
    d = np.abs(np.diff(v))
    scale = max(float(np.max(np.abs(v))), 1e-300)
    nb = np.maximum(np.concatenate([[0.0], d[:-1]]), np.concatenate([d[1:], [0.0]]))
    sus = np.flatnonzero((d > 3 * nb) & (d > rtol * scale))
    if sus.size == 0:
        return sus
    lo, hi = np.asarray(ts)[sus], np.asarray(ts)[sus + 1]
    vlo, vhi = v[sus], v[sus + 1]
    f = _elementwise(fn)
    for _ in range(depth):
        mid = 0.5 * (lo + hi)
        vm = np.asarray(f(jnp.asarray(mid, jnp.float64)), np.float64)
        left = np.abs(vm - vlo) >= np.abs(vhi - vm)
        lo, hi = np.where(left, lo, mid), np.where(left, mid, hi)
        vlo, vhi = np.where(left, vlo, vm), np.where(left, vm, vhi)
    return sus[np.abs(vhi - vlo) > rtol * scale]


class ScheduleSDE(LinearSDE):
    """A linear SDE given by its Gaussian path x_t = alpha(t) x_0 + sigma(t) eps (any noise schedule).

    Subclasses define ``alpha(t)`` and ``sigma(t)`` for a scalar t (jax-traceable); everything else is derived:
    f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2 (by autodiff), lambda = 2 log(alpha / sigma), its
    inverse by bisection (jit-safe, vectorized), and the prior N(0, prior_std^2 I) with prior_std = sigma(T) unless
    given. :meth:`validate` checks the path on a grid of [0, T]. A subclass is a frozen dataclass that calls
    ``self.validate()`` and ``self._set_prior_std(...)`` in ``__post_init__`` and is added to ``_SDE_CLASSES``
    (:mod:`diffdens.sde.serialization`).

    Attributes:
        T: the end time.
        prior_std: the prior's standard deviation (sigma(T) unless set).
    """

    _GRID = 2001
    _BISECT = 64
    _ATOL0 = 1e-6  # tolerance on alpha(0) = 1 and sigma(0) = 0

    @abstractmethod
    def alpha(self, t):
        """alpha(t) for a scalar t, with alpha(0) = 1."""

    @abstractmethod
    def sigma(self, t):
        """sigma(t) for a scalar t, with sigma(0) = 0."""

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
        """Raise ValueError naming what fails, checked on a grid of [0, T] in float64: alpha positive, sigma
        increasing, the log-SNR decreasing, alpha(0) = 1 and sigma(0) = 0 (within 1e-6: else the path is not the
        SDE's transition from t = 0 and every bound on log p is off), alpha and sigma continuous (no jump between
        grid points, found by bisection) and g^2 > 0 on (0, T]."""
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
            if abs(a[0] - 1) > self._ATOL0 or abs(s[0]) > self._ATOL0:
                raise ValueError(f"{label}: the path must start at the data, alpha(0) = 1 and sigma(0) = 0 (within "
                                 f"{self._ATOL0:g}), got alpha(0) = {a[0]:.6g}, sigma(0) = {s[0]:.6g}: otherwise "
                                 "N(alpha_t x_0, sigma_t^2) is not the SDE's transition from t = 0 and the bounds on "
                                 "log p are wrong")
            for nm, fn, v in (("alpha", self.alpha, a), ("sigma", self.sigma, s)):
                k = _jumps(fn, ts, v)
                if k.size:
                    raise ValueError(f"{label}: {nm}(t) must be continuous on [0, T]; it jumps between "
                                     f"t = {float(ts[k[0]]):.6g} and t = {float(ts[k[0] + 1]):.6g}")
            g2 = np.asarray(self.g2(ts[1:]), np.float64)
            if not np.all(np.isfinite(g2) & (g2 > 0)):
                k = int(np.argmax(~(np.isfinite(g2) & (g2 > 0)))) + 1
                raise ValueError(f"{label}: g^2 = d sigma^2/dt - 2 f sigma^2 must be positive and finite on (0, T]; "
                                 f"g^2({float(ts[k]):.4g}) = {g2[k - 1]}")

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

    Arguments:
        alpha_fn: alpha(t) for a scalar t (jax-traceable), alpha(0) = 1.
        sigma_fn: sigma(t) for a scalar t (jax-traceable), sigma(0) = 0.
        T: the end time.
        name: a label for repr and checkpoints.
        prior_scale: the prior's standard deviation (default sigma(T)); ``from_schedule``'s ``prior_std``.
    """

    alpha_fn: Callable = field(repr=False)
    sigma_fn: Callable = field(repr=False)
    T: float = 1.0
    name: str = "custom"
    prior_scale: Optional[float] = None

    def __post_init__(self):
        coerce_real_fields(self)
        for nm in ("alpha_fn", "sigma_fn"):
            if not callable(getattr(self, nm)):
                raise TypeError(f"{nm[:-3]} must be a callable of t, got {type(getattr(self, nm)).__name__}")
        self.validate(f"schedule {self.name!r}")
        self._set_prior_std(self.prior_scale)

    def alpha(self, t):
        return self.alpha_fn(t)

    def sigma(self, t):
        return self.sigma_fn(t)


@dataclass(frozen=True)
class CosineVPSDE(ScheduleSDE):
    """The cosine schedule of Nichol & Dhariwal (2021): alpha_t^2 = cos^2(phi_t) / cos^2(phi_0),
    phi_t = (t + s) / (1 + s) pi / 2, sigma_t^2 = 1 - alpha_t^2 (variance preserving, g^2 = -2 f = beta(t)).

    alpha vanishes at t = 1, where f diverges, so T defaults to 0.995 (log-SNR about -9.7, near VP's -10 at T = 1);
    see :meth:`prior_mismatch` for what stopping there costs.

    Arguments:
        s: the offset of phi_t (0 < s < 1).
        T: the end time (0 < T < 1).
    """

    s: float = 0.008
    T: float = 0.995

    def __post_init__(self):
        coerce_real_fields(self)
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

    Arguments:
        sigma_min: the smallest trained noise level.
        sigma_max: the largest noise level, = T and the prior's standard deviation.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0

    def __post_init__(self):
        coerce_real_fields(self)
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

    Arguments:
        T: the end time (0 < T < 1).
    """

    T: float = 0.99

    def __post_init__(self):
        coerce_real_fields(self)
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
