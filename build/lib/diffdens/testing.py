"""Statistical assertions for estimators with error bars (as ``numpy.testing`` serves numpy).

Every check here has a false-alarm probability of at most ``alpha`` (default 1e-3) per call, whatever the number of
points: per-point checks use a Bonferroni-corrected critical value (alpha / n per point), and a stderr estimated from
m draws is treated as Student-t with m - 1 degrees of freedom. ``atol`` / ``rtol`` absorb systematic, non-Monte-Carlo
error (solver tolerance, the t0 cut), which the caller states explicitly.

Also here: :func:`count_compilations`, to assert "one compilation per architecture" without timing anything.
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import numpy as np
from scipy import stats

__all__ = ["assert_agrees", "assert_unbiased", "assert_bound", "assert_rate", "critical_value",
           "count_compilations"]


def critical_value(alpha: float, n: int = 1, dof: Optional[float] = None) -> float:
    """Two-sided critical value so that max_i |z_i| of n independent z's exceeds it with probability <= alpha:
    the normal (or Student-t with ``dof`` degrees of freedom) quantile at 1 - alpha / (2 n)."""
    q = 1.0 - alpha / (2.0 * max(int(n), 1))
    return float(stats.norm.ppf(q) if dof is None or not math.isfinite(dof) else stats.t.ppf(q, dof))


def _arrays(value, stderr, truth):
    v = np.atleast_1d(np.asarray(value, dtype=np.float64))
    t = np.broadcast_to(np.asarray(truth, dtype=np.float64), v.shape)
    s = np.broadcast_to(np.asarray(0.0 if stderr is None else stderr, dtype=np.float64), v.shape)
    if not np.all(np.isfinite(v)):
        raise AssertionError(f"estimate holds non-finite values at {np.flatnonzero(~np.isfinite(v))[:10].tolist()}")
    return v, s, t


def assert_agrees(value, stderr, truth, *, dof: Optional[float] = None, alpha: float = 1e-3, atol: float = 0.0,
                  rtol: float = 0.0, what: str = "estimate") -> None:
    """Every point agrees with the truth within its error bar: |value - truth| <= c * stderr + atol + rtol |truth|,
    c the Bonferroni-corrected critical value for n points (false alarm <= alpha for unbiased, honest estimates)."""
    v, s, t = _arrays(value, stderr, truth)
    c = critical_value(alpha, v.size, dof)
    tol = c * s + atol + rtol * np.abs(t)
    err = np.abs(v - t)
    bad = np.flatnonzero(err > tol)
    if bad.size:
        i = bad[np.argmax((err - tol)[bad])]
        raise AssertionError(f"{what}: {bad.size} of {v.size} points disagree with the truth beyond {c:.2f} stderr"
                             f" + atol {atol:g} + rtol {rtol:g}; worst point {i}: value {v[i]:.6g}, truth {t[i]:.6g},"
                             f" stderr {s[i]:.3g}")


def assert_unbiased(value, stderr, truth, *, dof: Optional[float] = None, alpha: float = 1e-3, atol: float = 0.0,
                    what: str = "estimate") -> None:
    """The mean of the standardized errors z_i = (value_i - truth_i) / stderr_i is consistent with zero
    (a pooled test: its power grows with n while its false-alarm rate stays alpha). ``atol`` is an allowed bias."""
    v, s, t = _arrays(value, stderr, truth)
    if np.any(s <= 0):
        raise ValueError("assert_unbiased needs positive stderr for every point")
    d = v - t
    d = np.sign(d) * np.maximum(np.abs(d) - atol, 0.0)
    z = d / s
    var_z = 1.0 if dof is None or not math.isfinite(dof) else dof / (dof - 2.0) if dof > 2 else np.inf
    se = math.sqrt(var_z / z.size)
    c = critical_value(alpha, 1, None)
    if abs(z.mean()) > c * se:
        raise AssertionError(f"{what}: mean standardized error {z.mean():+.3f} over {z.size} points exceeds "
                             f"{c:.2f} x {se:.3f} (a bias of about {np.mean(v - t):+.4g})")


def assert_bound(lower, truth, stderr=None, *, alpha: float = 1e-3, atol: float = 0.0,
                 what: str = "bound") -> None:
    """A lower bound holds on average: mean(truth - lower) >= -(c * its standard error + atol), the standard error
    from the spread over points (and from ``stderr`` when given, whichever is larger)."""
    lo = np.atleast_1d(np.asarray(lower, dtype=np.float64))
    gap = np.broadcast_to(np.asarray(truth, dtype=np.float64), lo.shape) - lo
    n = gap.size
    se_spread = gap.std(ddof=1) / math.sqrt(n) if n > 1 else 0.0
    se_mc = 0.0 if stderr is None else math.sqrt(np.sum(np.asarray(stderr, dtype=np.float64) ** 2)) / n
    se = max(se_spread, se_mc)
    c = critical_value(alpha, 1, None)
    if gap.mean() < -(c * se + atol):
        raise AssertionError(f"{what}: the bound exceeds the truth on average by {-gap.mean():.4g} "
                             f"(> {c:.2f} x {se:.3g} + {atol:g})")


def assert_rate(ns, errors, rate: float = -0.5, *, errors_stderr=None, alpha: float = 1e-3,
                slack: float = 0.0, what: str = "error") -> float:
    """log(error) against log(n) has slope ``rate`` within the fit's own uncertainty (a weighted least-squares slope
    with its standard error; ``errors_stderr`` are the standard errors of the error measurements, used for weights
    by the delta method). ``slack`` widens the band for known non-asymptotic effects. Returns the fitted slope."""
    ln = np.log(np.asarray(ns, dtype=np.float64))
    e = np.asarray(errors, dtype=np.float64)
    if np.any(e <= 0):
        raise ValueError("errors must be positive")
    le = np.log(e)
    w = np.ones_like(le) if errors_stderr is None else (e / np.asarray(errors_stderr, dtype=np.float64)) ** 2
    X = np.stack([np.ones_like(ln), ln], 1)
    W = np.diag(w)
    cov = np.linalg.inv(X.T @ W @ X)
    beta = cov @ X.T @ W @ le
    resid = le - X @ beta
    dof = max(len(le) - 2, 1)
    if errors_stderr is None:
        cov = cov * float(resid @ W @ resid) / dof
    se = math.sqrt(cov[1, 1])
    c = critical_value(alpha, 1, dof if errors_stderr is None else None)
    slope = float(beta[1])
    if abs(slope - rate) > c * se + slack:
        raise AssertionError(f"{what}: fitted slope {slope:.3f} +- {se:.3f} is not {rate} (allowed "
                             f"{c:.2f} x {se:.3f} + {slack})")
    return slope


_COMPILES = [0]
_LISTENING = [False]


def _listen() -> None:
    if _LISTENING[0]:
        return
    import jax

    def on_event(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            _COMPILES[0] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    _LISTENING[0] = True


class _Count:
    def __init__(self):
        self.start = _COMPILES[0]
        self.end = None

    @property
    def n(self) -> int:
        return (_COMPILES[0] if self.end is None else self.end) - self.start


@contextlib.contextmanager
def count_compilations():
    """``with count_compilations() as c: ...``; then ``c.n`` is the number of XLA compilations inside the block."""
    _listen()
    c = _Count()
    try:
        yield c
    finally:
        c.end = _COMPILES[0]
