"""Statistical assertions for estimators with error bars (as ``numpy.testing`` serves numpy).

Each assertion is a hypothesis test with false-alarm probability at most ``alpha`` (default 1e-3) per call, whatever
the number of points, when the estimates are unbiased and their standard errors honest:

* :func:`assert_agrees`: every point within its error bar. A max over n points is compared with a Bonferroni
  critical value (alpha / n per point, valid without independence), so the false-alarm rate does not grow with n.
  A stderr estimated from m draws (probes, throws, replicates) makes the standardized error a Student-t with
  m - 1 degrees of freedom: pass ``dof=m - 1``. Its power falls as n grows (the per-point threshold rises like
  sqrt(2 log n), or like n^(1/dof) for a t), so pair it with the pooled test below.
* :func:`assert_unbiased`: the mean error over points is zero within its standard error (pooled: its power grows
  like sqrt(n)). The test statistic is sum(d_i) / sqrt(sum(s_i^2)) -- not the mean of the per-point z's, which is
  biased when a skewed estimate's error and stderr are correlated -- with Satterthwaite's degrees of freedom
  when the stderrs come from few draws.
* :func:`assert_bound`: a lower (or upper) bound holds on average over the points (one-sided test).
* :func:`assert_rate`: log(error) against log(n) has the expected slope, within the fitted slope's own standard
  error (e.g. the n^-1/2 Monte Carlo rate).
* :func:`assert_below` / :func:`assert_above`: a claim that a value is below / above a limit, asserted with
  confidence 1 - alpha (here alpha bounds the chance of passing a false claim; the assertion fails on weak evidence).
* :func:`compare_paired` / :func:`assert_paired`: which of two estimators (or models) gives the larger mean on the
  same points and keys, from the per-point differences (a paired t-test: the shared variation of the points cancels),
  with the verdict "a > b", "a < b" or "not resolved" at a stated false-alarm rate.
* :func:`bootstrap_interval`: a percentile-bootstrap interval for a robust summary (median, trimmed mean) of a
  heavy-tailed sample, where a mean +- stderr is ruled by a few extreme values.

``atol`` / ``rtol`` absorb systematic, non-Monte-Carlo error (solver tolerance, float32 rounding, the t0 cut), which
the caller states explicitly. The predicates :func:`agrees`, :func:`unbiased`, :func:`bound_holds` and
:func:`rate_agrees` return the same decisions as booleans without raising, vectorized over leading axes (points
along the last axis), so the false-alarm rate of each test can itself be checked by simulation
(``tests/test_testing.py``). Non-finite values, stderrs or truths never pass. Every function rejects (ValueError,
naming the argument) an ``alpha`` outside (0, 1) and a tolerance (``atol``, ``rtol``, ``slack``) that is not a finite
number >= 0. Value, stderr and truth broadcast elementwise; the assertions flatten input of any shape (each entry a
point), the predicates read the last axis as points.

Also here: :func:`count_compilations`, to assert "one compilation per architecture" without timing anything.
"""

from __future__ import annotations

import contextlib
import math
from typing import NamedTuple, Optional

import numpy as np
from scipy import special, stats

__all__ = ["assert_agrees", "assert_unbiased", "assert_bound", "assert_rate", "critical_value",
           "count_compilations", "count_traces", "agrees", "unbiased", "bound_holds", "rate_agrees", "fit_rate", "RateFit",
           "assert_below", "assert_above", "compare_paired", "assert_paired", "Comparison", "bootstrap_interval",
           "Interval"]


def _quantile(q, dof=None):
    """The standard-normal quantile, or the Student-t one with ``dof`` degrees of freedom (array-valued allowed;
    None or inf means normal)."""
    if dof is None:
        return stats.norm.ppf(q)
    dof = np.asarray(dof, dtype=np.float64)
    if np.any(~(dof > 0)):
        raise ValueError(f"dof must be positive, got {dof}")
    return np.where(np.isfinite(dof), stats.t.ppf(q, np.where(np.isfinite(dof), dof, 1.0)), stats.norm.ppf(q))


def _scalar(x, name: str) -> float:
    """``x`` as a float: a real number or a 0-d array (not a bool, a string or an array of several entries)."""
    if isinstance(x, (bool, np.bool_, str, bytes)) or x is None or np.ndim(x) != 0:
        raise ValueError(f"{name} must be a real number, got {x!r}")
    try:
        v = float(np.asarray(x, dtype=np.float64))
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {x!r}") from None
    return v


def _check_alpha(alpha) -> float:
    """A false-alarm level strictly inside (0, 1): alpha = 0 would allow an infinite margin (everything passes),
    alpha >= 1 gives NaN quantiles."""
    a = _scalar(alpha, "alpha")
    if not 0 < a < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    return a


def _check_tol(x, name: str) -> float:
    """A tolerance (atol, rtol, slack): finite and >= 0 (a NaN tolerance would pass every value)."""
    v = _scalar(x, name)
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {x!r}")
    return v


def critical_value(alpha: float, n: int = 1, dof: Optional[float] = None, *, sides: int = 2) -> float:
    """Critical value c such that the largest of n standardized errors exceeds c with probability <= alpha:
    the normal (or Student-t with ``dof`` degrees of freedom) quantile at 1 - alpha / (sides * n). With ``sides=2``
    the bound is on max |z_i|; with ``sides=1`` on max z_i. Bonferroni: no independence between points needed.

    Arguments:
        alpha: the false-alarm level in (0, 1).
        n: the number of points.
        dof: Student-t degrees of freedom (None or inf: normal).
        sides: 2 (bound on |z|) or 1 (bound on z).

    Returns:
        the critical value c, a float.
    """
    alpha = _check_alpha(alpha)
    if sides not in (1, 2):
        raise ValueError(f"sides must be 1 or 2, got {sides}")
    q = 1.0 - alpha / (sides * max(int(n), 1))
    c = _quantile(q, dof)
    return float(c) if np.ndim(c) == 0 else c


def _as(x, shape=None, name="value"):
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of real numbers, got {type(x).__name__}") from None
    if shape is None:
        return a
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {a.shape} does not broadcast to shape {shape}") from None


def _broadcast(*named):
    """The given (array, name) pairs as float64 arrays broadcast to one common shape, at least 1-d; a ValueError
    names the shapes that do not broadcast."""
    arrays = [_as(a, name=n) for a, n in named]
    try:
        shape = np.broadcast_shapes(*(a.shape for a in arrays))
    except ValueError:
        raise ValueError("shapes do not broadcast: " + ", ".join(f"{n} {a.shape}" for a, (_, n) in zip(arrays, named))) \
            from None
    shape = shape if len(shape) else (1,)
    return [np.broadcast_to(a, shape) for a in arrays]


def _finite(v, s, t):
    """Per-replicate mask (leading axes): everything finite, stderr non-negative."""
    ok = np.isfinite(v) & np.isfinite(t) & np.isfinite(s) & (s >= 0)
    return ok.all(axis=-1)


_quiet = np.errstate(invalid="ignore", over="ignore", divide="ignore")  # non-finite input is reported, not warned


def _prepare(value, stderr, truth, names=("value", "stderr", "truth")):
    """value, stderr (0 when None) and truth broadcast elementwise to one shape (at least 1-d): the predicates read
    the last axis as points and leading axes as replicates."""
    return _broadcast((value, names[0]), (0.0 if stderr is None else stderr, names[1]), (truth, names[2]))


def _prepare_flat(value, stderr, truth, dof=None, names=("value", "stderr", "truth")):
    """As :func:`_prepare`, flattened: an assertion tests every entry of any shape as one set of points. A per-point
    ``dof`` is broadcast to the same shape and flattened alike."""
    v, s, t = _prepare(value, stderr, truth, names)
    if dof is not None and np.ndim(dof) > 0:
        dof = _as(dof, v.shape, "dof").ravel()
    return v.ravel(), s.ravel(), t.ravel(), dof


# ----------------------------------------------------------------------------------------------------- per point


def _agrees_tol(v, s, t, dof, alpha, atol, rtol):
    c = critical_value(alpha, v.shape[-1], dof)
    return c, c * s + atol + rtol * np.abs(t)


@_quiet
def agrees(value, stderr, truth, *, dof=None, alpha: float = 1e-3, atol: float = 0.0, rtol: float = 0.0):
    """Boolean form of :func:`assert_agrees`, over the last axis (points); leading axes are independent replicates.
    True where every point satisfies |value - truth| <= c stderr + atol + rtol |truth|.

    Arguments:
        value: the estimates, any shape.
        stderr: their standard errors (broadcast against ``value``), or None for exact values.
        truth: the true values (broadcast against ``value``).
        dof: degrees of freedom of each stderr (m - 1 for m draws), scalar or per point; None for a normal reference.
        alpha: the false-alarm level in (0, 1).
        atol, rtol: absolute and relative tolerances added to the margin.

    Returns:
        a boolean array of the leading (replicate) shape; a 0-d one for 1-d inputs.
    """
    alpha, atol, rtol = _check_alpha(alpha), _check_tol(atol, "atol"), _check_tol(rtol, "rtol")
    v, s, t = _prepare(value, stderr, truth)
    _, tol = _agrees_tol(v, s, t, dof, alpha, atol, rtol)
    return _finite(v, s, t) & np.all(np.abs(v - t) <= tol, axis=-1)


def assert_agrees(value, stderr, truth, *, dof=None, alpha: float = 1e-3, atol: float = 0.0,
                  rtol: float = 0.0, what: str = "estimate") -> None:
    """Every point agrees with the truth within its error bar: |value - truth| <= c stderr + atol + rtol |truth|,
    c the Bonferroni critical value for n points (:func:`critical_value`; ``dof=m - 1`` when each stderr comes from
    m draws, a scalar or one per point). False alarm <= alpha for unbiased estimates with honest stderrs, at any n.
    ``stderr=None`` (an exact value) compares within atol + rtol |truth| only. value, stderr and truth broadcast
    elementwise and may have any shape: every entry is a point (n = the number of entries).

    Arguments:
        value: the estimates, any shape.
        stderr: their standard errors (broadcast against ``value``), or None for exact values.
        truth: the true values (broadcast against ``value``).
        dof: degrees of freedom of each stderr (m - 1 for m draws), scalar or per point; None for a normal reference.
        alpha: the false-alarm level in (0, 1).
        atol, rtol: absolute and relative tolerances added to the margin.
        what: the name used in the assertion message.

    Returns:
        None; raises AssertionError naming the points that disagree (or any non-finite entry).
    """
    alpha, atol, rtol = _check_alpha(alpha), _check_tol(atol, "atol"), _check_tol(rtol, "rtol")
    v, s, t, dof = _prepare_flat(value, stderr, truth, dof)
    _check_finite(v, s, t, what)
    c, tol = _agrees_tol(v, s, t, dof, alpha, atol, rtol)
    err = np.abs(v - t)
    bad = np.flatnonzero(err > tol)
    if bad.size:
        excess = (err - tol)[bad] / np.where(s.ravel()[bad] > 0, s.ravel()[bad], 1.0)
        i = bad[np.argmax(excess)]
        ci = float(np.broadcast_to(c, v.shape).ravel()[i])
        raise AssertionError(f"{what}: {bad.size} of {v.size} points disagree with the truth beyond {ci:.2f} stderr"
                             f" + atol {atol:g} + rtol {rtol:g} (false-alarm level {alpha:g}); worst point {i}: value"
                             f" {v.ravel()[i]:.6g}, truth {t.ravel()[i]:.6g}, stderr {s.ravel()[i]:.3g}")


def _check_finite(v, s, t, what):
    for name, a in (("value", v), ("stderr", s), ("truth", t)):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            raise AssertionError(f"{what}: {name} holds non-finite entries at {bad[:10].tolist()}")
    if np.any(s < 0):
        raise AssertionError(f"{what}: negative stderr at {np.flatnonzero(s < 0)[:10].tolist()}")


# ------------------------------------------------------------------------------------------------------- pooled


def _pooled(v, s, t, stderr_given, dof):
    """Mean error over points, its standard error and degrees of freedom (None = normal), over the last axis."""
    n = v.shape[-1]
    d = v - t
    mean = d.mean(axis=-1)
    if stderr_given:
        var = (s ** 2).sum(axis=-1)
        se = np.sqrt(var) / n
        if dof is None:
            k = None
        else:  # Welch-Satterthwaite degrees of freedom of sum(s_i^2)
            dof_b = np.broadcast_to(np.asarray(dof, dtype=np.float64), s.shape)
            k = var ** 2 / np.maximum((s ** 4 / dof_b).sum(axis=-1), 1e-300)
            k = np.where(var > 0, k, np.inf)
    else:
        if n < 2:
            raise ValueError("without a stderr, a pooled test needs at least 2 points (the spread estimates it)")
        se = d.std(axis=-1, ddof=1) / math.sqrt(n)
        k = n - 1
    return mean, se, k


@_quiet
def unbiased(value, stderr, truth, *, dof=None, alpha: float = 1e-3, atol: float = 0.0):
    """Boolean form of :func:`assert_unbiased` over the last axis (points).

    Arguments:
        value: the estimates, any shape.
        stderr: their standard errors (broadcast against ``value``), or None for exact values.
        truth: the true values (broadcast against ``value``).
        dof: degrees of freedom of each stderr (m - 1 for m draws), scalar or per point; None for a normal reference.
        alpha: the false-alarm level in (0, 1).
        atol: an allowed bias.

    Returns:
        a boolean array of the leading (replicate) shape.
    """
    alpha, atol = _check_alpha(alpha), _check_tol(atol, "atol")
    v, s, t = _prepare(value, stderr, truth)
    mean, se, k = _pooled(v, s, t, stderr is not None, dof)
    c = _quantile(1 - alpha / 2, k)
    return _finite(v, s, t) & (np.abs(mean) <= c * se + atol)


@_quiet
def assert_unbiased(value, stderr, truth, *, dof=None, alpha: float = 1e-3, atol: float = 0.0,
                    what: str = "estimate") -> None:
    """The mean error over points is consistent with zero: |mean(value - truth)| <= c sqrt(sum stderr^2) / n + atol
    (two-sided, false alarm <= alpha; its power grows with n). ``dof`` (scalar or per point) when the stderrs come
    from few draws: the pooled degrees of freedom follow Welch-Satterthwaite. Without ``stderr`` the standard error
    comes from the spread of the errors over the points (t with n - 1 dof). ``atol`` is an allowed bias. Inputs of
    any shape are flattened (every entry a point).

    Arguments:
        value: the estimates, any shape.
        stderr: their standard errors (broadcast against ``value``), or None for exact values.
        truth: the true values (broadcast against ``value``).
        dof: degrees of freedom of each stderr (m - 1 for m draws), scalar or per point; None for a normal reference.
        alpha: the false-alarm level in (0, 1).
        atol: an allowed bias.
        what: the name used in the assertion message.

    Returns:
        None; raises AssertionError when the mean error is significant.
    """
    alpha, atol = _check_alpha(alpha), _check_tol(atol, "atol")
    v, s, t, dof = _prepare_flat(value, stderr, truth, dof)
    _check_finite(v, s, t, what)
    if stderr is not None and not np.any(s > 0):
        raise ValueError("assert_unbiased: every stderr is zero; compare exact values with assert_agrees(atol=...)")
    mean, se, k = _pooled(v, s, t, stderr is not None, dof)
    c = float(_quantile(1 - alpha / 2, k))
    if abs(float(mean)) > c * float(se) + atol:
        raise AssertionError(f"{what}: mean error {float(mean):+.4g} over {v.size} points exceeds {c:.2f} x its"
                             f" standard error {float(se):.3g} + atol {atol:g} (z = {float(mean) / float(se):+.2f},"
                             f" false-alarm level {alpha:g})")


def _bound_stats(lower, truth, stderr, upper, flat=False):
    lo, s, t = _prepare(lower, stderr, truth, names=("lower", "stderr", "truth"))
    if flat:
        lo, s, t = lo.ravel(), s.ravel(), t.ravel()
    gap = (lo - t) if upper else (t - lo)  # >= 0 on average when the bound holds
    n = gap.shape[-1]
    return lo, t, s, gap, n


def _bound_margin(gap, s, n, stderr_given, alpha):
    """One-sided margin: the bound is violated when mean(gap) < -margin. The larger of a spread-based (t, n-1 dof)
    and a stderr-based (normal) margin, each a valid one-sided test, so the false-alarm rate is at most alpha."""
    margin = np.zeros(gap.shape[:-1])
    if n >= 2:
        margin = _quantile(1 - alpha, n - 1) * gap.std(axis=-1, ddof=1) / math.sqrt(n)
    if stderr_given:
        margin = np.maximum(margin, stats.norm.ppf(1 - alpha) * np.sqrt((s ** 2).sum(axis=-1)) / n)
    return margin


@_quiet
def bound_holds(lower, truth, stderr=None, *, upper: bool = False, alpha: float = 1e-3, atol: float = 0.0):
    """Boolean form of :func:`assert_bound` over the last axis (points).

    Arguments:
        lower, truth, stderr, upper, alpha, atol: as :func:`assert_bound`.

    Returns:
        a boolean array of the leading (replicate) shape.
    """
    alpha, atol = _check_alpha(alpha), _check_tol(atol, "atol")
    lo, t, s, gap, n = _bound_stats(lower, truth, stderr, upper)
    margin = _bound_margin(gap, s, n, stderr is not None, alpha)
    return _finite(lo, s, t) & (gap.mean(axis=-1) >= -(margin + atol))


@_quiet
def assert_bound(lower, truth, stderr=None, *, upper: bool = False, alpha: float = 1e-3, atol: float = 0.0,
                 what: str = "bound") -> None:
    """A lower bound holds on average over the points: mean(truth - lower) >= -(c x its standard error + atol),
    one-sided with false alarm <= alpha when the bound is tight (mean gap 0) and less when it is strict. The standard
    error comes from the spread of the gaps over the points (t, n - 1 dof) and, when ``stderr`` is given, from the
    Monte Carlo stderrs; the larger margin is used. ``upper=True``: ``lower`` is an upper bound (value >= truth).
    Inputs of any shape are flattened (every entry a point).

    Arguments:
        lower: the bound's values, any shape.
        truth: the true values (broadcast against ``lower``).
        stderr: Monte Carlo standard errors of ``lower``, or None.
        upper: ``lower`` is an upper bound instead.
        alpha: the false-alarm level in (0, 1).
        atol: an allowed violation.
        what: the name used in the assertion message.

    Returns:
        None; raises AssertionError when the bound is violated beyond the margin.
    """
    alpha, atol = _check_alpha(alpha), _check_tol(atol, "atol")
    lo, t, s, gap, n = _bound_stats(lower, truth, stderr, upper, flat=True)
    _check_finite(lo, s, t, what)
    margin = float(_bound_margin(gap, s, n, stderr is not None, alpha))
    m = float(gap.mean())
    if m < -(margin + atol):
        side = "below" if upper else "above"
        raise AssertionError(f"{what}: the bound lies {side} the truth on average by {-m:.4g} over {n} points "
                             f"(allowed {margin:.3g} of noise + atol {atol:g}, false-alarm level {alpha:g})")


# ------------------------------------------------------------------------------------------ confidence limits


def assert_below(value, stderr, limit, *, dof=None, alpha: float = 1e-3, what: str = "estimate") -> None:
    """Every value lies below ``limit`` with confidence: value + c stderr < limit, c the one-sided Bonferroni
    critical value for the n values (:func:`critical_value` with ``sides=1``). This asserts a claim ("the trained
    model's error is below 0.5"), so it fails when the evidence is too weak; the probability that it passes although
    some true value is at or above its limit is at most alpha. Inputs of any shape are flattened.

    Arguments:
        value: the estimates, any shape.
        stderr: their standard errors, or None.
        limit: the limits (broadcast against ``value``).
        dof: degrees of freedom of each stderr; None for a normal reference.
        alpha: the false-alarm level in (0, 1).
        what: the name used in the assertion message.

    Returns:
        None; raises AssertionError when some value is not confidently below its limit.
    """
    alpha = _check_alpha(alpha)
    v, s, t, dof = _prepare_flat(value, stderr, limit, dof, names=("value", "stderr", "limit"))
    _check_finite(v, s, t, what)
    c = critical_value(alpha, v.size, dof, sides=1)
    upper = v + c * s
    bad = np.flatnonzero(~(upper < t))
    if bad.size:
        i = bad[np.argmax((upper - t).ravel()[bad])]
        raise AssertionError(f"{what}: {bad.size} of {v.size} values are not below their limit with confidence"
                             f" {1 - alpha:g}; worst {i}: {v.ravel()[i]:.4g} + {float(np.broadcast_to(c, v.shape).ravel()[i]):.2f}"
                             f" x {s.ravel()[i]:.3g} >= {t.ravel()[i]:.4g}")


def assert_above(value, stderr, limit, *, dof=None, alpha: float = 1e-3, what: str = "estimate") -> None:
    """Every value lies above ``limit`` with confidence: value - c stderr > limit.

    Arguments:
        value, stderr, limit, dof, alpha, what: as :func:`assert_below`.

    Returns:
        None; raises AssertionError when some value is not confidently above its limit.
    """
    assert_below(-_as(value), stderr, -_as(limit, name="limit"), dof=dof, alpha=alpha, what=what)


# ------------------------------------------------------------------------------------------- paired comparisons


class Comparison(NamedTuple):
    """:func:`compare_paired`'s result: the mean difference of two paired sets of estimates and its verdict.

    Fields:
        difference: mean(a - b) over the points (an array over leading axes for a batch of comparisons).
        stderr: its standard error, std(a - b, ddof=1) / sqrt(n) from the per-point differences (with one point:
            the two stderrs in quadrature).
        z: difference / stderr; under "no difference" a Student-t with ``dof`` degrees of freedom.
        dof: n - 1, or None (a normal reference) for a single point.
        p_value: the two-sided p-value of "no difference".
        verdict: "a > b", "a < b" (with the given names) or "not resolved", at the two-sided false-alarm level.
        n: the number of points.
        unpaired_stderr: what the stderr would be if the pairing were ignored: the two means' own stderrs (each
            from its spread over the points) added in quadrature, sqrt(var(a) / n + var(b) / n); printed beside
            ``stderr`` it shows what the pairing buys (with one point: the quadrature, as ``stderr``).
    """

    difference: float
    stderr: float
    z: float
    dof: Optional[float]
    p_value: float
    verdict: str
    n: int
    unpaired_stderr: float


def _check_names(names) -> tuple[str, str]:
    if (not isinstance(names, (tuple, list)) or len(names) != 2
            or not all(isinstance(n, str) and n for n in names)):
        raise ValueError(f"names must be two non-empty strings, got {names!r}")
    return str(names[0]), str(names[1])


@_quiet
def compare_paired(a, b, *, a_stderr=None, b_stderr=None, alpha: float = 1e-3, names=("a", "b")) -> Comparison:
    """A paired comparison of two sets of estimates on the same points (and the same keys): is mean(a) above or
    below mean(b)? The test statistic is the mean of the per-point differences d_i = a_i - b_i over its standard
    error std(d, ddof=1) / sqrt(n), a Student-t with n - 1 degrees of freedom; the verdict ("a > b", "a < b" or
    "not resolved") is a two-sided test at false-alarm level ``alpha`` (each wrong-sign verdict has probability at
    most alpha / 2 when the means are equal), at any n.

    Valid for paired data only: a_i and b_i must be estimates at the same point x_i (for Monte Carlo estimates,
    preferably with the same key, probes and noise), the pairs independent of each other (per-point keys split from
    one key are). The spread of the differences then holds everything that varies from pair to pair: the points
    themselves and each estimate's Monte Carlo noise, so the test is valid for the population the points were drawn
    from (and conservative for the mean over these very points).

    Why pairing matters: var(a_i - b_i) = var(a_i) + var(b_i) - 2 cov(a_i, b_i). Adding the two means' stderrs in
    quadrature drops the covariance. When the two share the point (whose own log-density varies far more than
    either estimator's error) or the same noise, the covariance is large and positive: quadrature then overstates
    the stderr of the difference, often by orders of magnitude, and hides a difference the paired test resolves
    (``unpaired_stderr`` shows the size of the effect). When the errors are anticorrelated (two forms of one loss on
    the same (t, eps) draws, say), quadrature understates it and raises false alarms. The per-point differences
    estimate the variance with the covariance in it.

    Points run along the last axis; leading axes are independent comparisons (the fields are then arrays, as for
    the predicates). Non-finite input gives NaN statistics and the verdict "not resolved".

    Arguments:
        a: (..., n) the first estimates, one per point.
        b: (..., n) the second estimates on the same points (broadcast against ``a``).
        a_stderr: per-point standard errors of ``a`` (None: exact); used only with a single point (n = 1), where
            no spread exists and the stderr of the difference is sqrt(a_stderr^2 + b_stderr^2) with a normal
            reference -- valid for independent errors only (different keys). With n >= 2 the spread of the
            differences already holds each point's Monte Carlo noise, so the per-point stderrs are not needed.
        b_stderr: per-point standard errors of ``b``, as ``a_stderr``.
        alpha: the two-sided false-alarm level in (0, 1).
        names: the two estimates' names in the verdict, e.g. ("ODE", "ELBO").

    Returns:
        :class:`Comparison` (difference, stderr, z, dof, p_value, verdict, n, unpaired_stderr).
    """
    alpha = _check_alpha(alpha)
    na, nb = _check_names(names)
    va, vb = _broadcast((a, "a"), (b, "b"))
    n = va.shape[-1]
    d = va - vb
    diff = d.mean(axis=-1)
    if n >= 2:
        se = d.std(axis=-1, ddof=1) / math.sqrt(n)
        unpaired = np.sqrt((va.var(axis=-1, ddof=1) + vb.var(axis=-1, ddof=1)) / n)
        dof = n - 1
        p = 2 * stats.t.sf(np.abs(diff / se), dof)
    else:
        if a_stderr is None and b_stderr is None:
            raise ValueError("a paired comparison of a single point needs a_stderr or b_stderr (with two or more "
                             "points the spread of the differences gives the stderr)")
        sa, sb = _broadcast((0.0 if a_stderr is None else a_stderr, "a_stderr"),
                            (0.0 if b_stderr is None else b_stderr, "b_stderr"))
        if sa.shape[-1] != 1 or sb.shape[-1] != 1:
            raise ValueError(f"a_stderr and b_stderr must have one entry per point ({n}), got shapes {sa.shape} and "
                             f"{sb.shape}")
        ok = (sa >= 0) & (sb >= 0)
        se = np.where(ok, np.hypot(sa, sb), np.nan)[..., 0]
        unpaired = se
        dof = None
        p = 2 * stats.norm.sf(np.abs(diff / se))
    z = diff / se
    c = _quantile(1 - alpha / 2, dof)
    gt, lt = f"{na} > {nb}", f"{na} < {nb}"
    verdict = np.where(z > c, gt, np.where(z < -c, lt, "not resolved"))  # NaN compares False: not resolved
    if np.ndim(diff) == 0:
        return Comparison(float(diff), float(se), float(z), dof, float(p), str(verdict), n, float(unpaired))
    return Comparison(diff, se, z, dof, p, verdict, n, unpaired)


_EXPECT = ("greater", "less", "equal")


def assert_paired(a, b, *, expect: str = "greater", a_stderr=None, b_stderr=None, alpha: float = 1e-3,
                  names=("a", "b"), what: str = "comparison") -> Comparison:
    """Assert an ordering of two paired sets of estimates (:func:`compare_paired`): ``expect="greater"`` passes
    only when the comparison resolves mean(a) > mean(b) at false-alarm level ``alpha`` ("a wins" is claimed only
    where the error bars resolve it: the probability of passing when in truth mean(a) <= mean(b) is at most
    alpha / 2), ``"less"`` likewise, and ``"equal"`` passes when the difference is not resolved (as
    :func:`assert_unbiased`: it fails a true equality with probability <= alpha, and passes a small difference that
    the points cannot resolve). Inputs of any shape are flattened (every entry a point, paired entry by entry).

    Arguments:
        a: the first estimates, any shape (one per point).
        b: the second estimates on the same points (broadcast against ``a``).
        expect: "greater" (a > b), "less" (a < b) or "equal" (the difference not resolved).
        a_stderr: per-point standard errors of ``a``, used for a single point only (:func:`compare_paired`).
        b_stderr: per-point standard errors of ``b``, likewise.
        alpha: the two-sided false-alarm level in (0, 1).
        names: the two estimates' names, used in the verdict and the message.
        what: the name used in the assertion message.

    Returns:
        the :class:`Comparison`; raises AssertionError when the stated ordering is not resolved (or any entry is
        non-finite).
    """
    alpha = _check_alpha(alpha)
    na, nb = _check_names(names)
    if expect not in _EXPECT:
        raise ValueError(f"expect must be one of {_EXPECT}, got {expect!r}")
    va, vb = (x.ravel() for x in _broadcast((a, "a"), (b, "b")))
    for name, x in ((na, va), (nb, vb)):
        bad = np.flatnonzero(~np.isfinite(x))
        if bad.size:
            raise AssertionError(f"{what}: {name} holds non-finite entries at {bad[:10].tolist()}")
    flat = lambda s: None if s is None else _as(s, name="stderr").ravel()
    c = compare_paired(va, vb, a_stderr=flat(a_stderr), b_stderr=flat(b_stderr), alpha=alpha, names=(na, nb))
    want = {"greater": f"{na} > {nb}", "less": f"{na} < {nb}", "equal": "not resolved"}[expect]
    if c.verdict != want:
        claim = {"greater": f"{na} > {nb}", "less": f"{na} < {nb}", "equal": f"{na} = {nb}"}[expect]
        ref = "normal" if c.dof is None else f"t, {c.dof} dof"
        raise AssertionError(f"{what}: {claim} is not supported: mean({na} - {nb}) = {c.difference:+.4g} +- "
                             f"{c.stderr:.3g} (paired, {c.n} points; z = {c.z:+.2f}, {ref}, p = {c.p_value:.2g}), "
                             f"verdict '{c.verdict}' at false-alarm level {alpha:g}")
    return c


# ------------------------------------------------------------------------------------------ bootstrap intervals


class Interval(NamedTuple):
    """:func:`bootstrap_interval`'s result: a summary and its percentile-bootstrap confidence interval.

    Fields:
        estimate: the summary of the sample itself (an array over leading axes for a batch).
        low: the lower end, the (1 - level) / 2 quantile of the bootstrap replicates.
        high: the upper end, the (1 + level) / 2 quantile.
        level: the nominal coverage.
    """

    estimate: float
    low: float
    high: float
    level: float


_BOOT_CHUNK = 1 << 22  # resampled entries per vectorized batch (32 MB of float64)


def _numpy_rng(key) -> np.random.Generator:
    """A numpy generator seeded from an int or from a JAX PRNG key's bits (a typed key or a raw uint32 one)."""
    if isinstance(key, (bool, np.bool_)):
        raise ValueError(f"key must be a jax.random key or a non-negative int, got {key!r}")
    if isinstance(key, (int, np.integer)):
        if key < 0:
            raise ValueError(f"key must be a jax.random key or a non-negative int, got {key!r}")
        return np.random.default_rng(int(key))
    import jax

    try:
        data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key
        bits = np.asarray(data)
    except (AttributeError, TypeError):
        raise ValueError(f"key must be a jax.random key or a non-negative int, got {type(key).__name__}") from None
    if bits.dtype != np.uint32 or bits.size == 0:
        raise ValueError(f"key must be a jax.random key or a non-negative int, got an array of {bits.dtype}")
    return np.random.default_rng(bits.ravel().tolist())


def _stat_fn(stat, trim):
    if callable(stat):
        return stat
    if stat == "median":
        return lambda x: np.median(x, axis=-1)
    if stat == "trimmed_mean":
        return lambda x: stats.trim_mean(x, trim, axis=-1)
    if stat == "mean":
        return lambda x: np.mean(x, axis=-1)
    raise ValueError(f"stat must be 'median', 'trimmed_mean', 'mean' or a callable, got {stat!r}")


def bootstrap_interval(x, *, stat="median", level: float = 0.95, n_boot: int = 2000, trim: float = 0.1,
                       key=0) -> Interval:
    """A percentile-bootstrap confidence interval (Efron and Tibshirani 1993, ch. 13) for a robust summary of a
    heavy-tailed sample (per-point bits/dim with a few runaway points, say), where a mean +- stderr is driven by
    the tail: resample the n values with replacement ``n_boot`` times, compute the summary of each resample, and
    report the (1 - level) / 2 and (1 + level) / 2 quantiles of the replicates. Its coverage tends to ``level`` as n
    grows for smooth summaries (the median, a trimmed mean); with tens of points it is approximate. Deterministic
    given ``key`` and the shape of ``x``.

    The sample runs along the last axis; leading axes are independent samples (vectorized: each gets its own
    resamples, and the fields are arrays of the leading shape).

    Arguments:
        x: (..., n) the sample, n >= 2, finite.
        stat: "median", "trimmed_mean" (the mean of the values left after cutting ``trim`` of them from each end,
            ``scipy.stats.trim_mean``), "mean", or a callable reducing the last axis (``f(xs)`` on an array of shape
            (..., n) returns shape (...), e.g. ``lambda xs: np.quantile(xs, 0.9, axis=-1)``).
        level: the confidence level in (0, 1).
        n_boot: the number of bootstrap resamples (>= 10; 2000 is ample for a 95% interval).
        trim: the proportion cut from each end for "trimmed_mean", in [0, 0.5).
        key: a ``jax.random`` key or a non-negative int seeding the resampling.

    Returns:
        :class:`Interval` (estimate, low, high, level).
    """
    level = _scalar(level, "level")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if isinstance(n_boot, (bool, np.bool_)) or not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    trim = _scalar(trim, "trim")
    if not 0 <= trim < 0.5:
        raise ValueError(f"trim must lie in [0, 0.5), got {trim!r}")
    fn = _stat_fn(stat, trim)
    xs = _as(x, name="x")
    if xs.ndim == 0 or xs.shape[-1] < 2:
        raise ValueError(f"x must hold at least 2 values along its last axis, got shape {xs.shape}")
    if not np.all(np.isfinite(xs)):
        raise ValueError(f"x holds non-finite entries at {np.flatnonzero(~np.isfinite(xs))[:10].tolist()}")
    rng = _numpy_rng(key)
    lead, n = xs.shape[:-1], xs.shape[-1]
    flat = xs.reshape(-1, n)
    m = flat.shape[0]
    estimate = np.asarray(fn(flat), dtype=np.float64)
    if estimate.shape != (m,):
        raise ValueError(f"stat must reduce the last axis: on shape {flat.shape} it returned shape {estimate.shape}")
    reps = np.empty((m, int(n_boot)))
    step = max(1, _BOOT_CHUNK // (m * n))
    for i in range(0, int(n_boot), step):
        k = min(step, int(n_boot) - i)
        idx = rng.integers(0, n, size=(m, k, n))
        reps[:, i:i + k] = fn(np.take_along_axis(flat[:, None, :], idx, axis=-1))
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2], axis=-1)
    if not lead:
        return Interval(float(estimate[0]), float(low[0]), float(high[0]), level)
    return Interval(estimate.reshape(lead), low.reshape(lead), high.reshape(lead), level)


# --------------------------------------------------------------------------------------------------------- rates


class RateFit(NamedTuple):
    """:func:`fit_rate`'s result: a fitted log-log slope.

    Fields:
        slope: the fitted slope (an array over leading axes for a batch of fits).
        stderr: its standard error.
        dof: its degrees of freedom (None: a normal reference).
    """

    slope: float
    stderr: float
    dof: Optional[float]


@_quiet
def fit_rate(ns, errors, *, errors_stderr=None, replicates=None) -> RateFit:
    """Weighted least-squares fit of log(errors) = a + slope log(ns), over the last axis (leading axes are
    replicates). The variance of each log-error is known when ``errors_stderr`` is given (delta method:
    (stderr / error)^2) or when each error is an RMS over ``replicates`` independent zero-mean Gaussian errors
    (k e^2 / sigma^2 ~ chi2_k, so var log e = trigamma(k / 2) / 4 exactly); the slope's standard error is then known
    (normal reference). Otherwise the residual variance is estimated (t with len(ns) - 2 dof).

    Arguments:
        ns: (m,) the sample sizes.
        errors: (..., m) the errors at each n.
        errors_stderr: (..., m) standard errors of the errors, or None.
        replicates: k when each error is an RMS over k independent runs, or None.

    Returns:
        :class:`RateFit` (slope, stderr, dof).
    """
    n_arr = _as(ns, name="ns")
    e = _as(errors, name="errors")
    if n_arr.ndim != 1 or e.ndim < 1 or e.shape[-1] != n_arr.size:
        raise ValueError(f"ns must be 1-d and match the last axis of errors, got {n_arr.shape} and {e.shape}")
    if not np.all(np.isfinite(n_arr) & (n_arr > 0)):
        raise ValueError(f"ns must be finite and positive, got {n_arr}")
    known = errors_stderr is not None or replicates is not None
    need = 2 if known else 3
    if np.unique(n_arr).size < need:
        raise ValueError(f"a rate needs errors at {need} or more distinct sample sizes ({need} when their "
                         f"uncertainty is {'' if known else 'not '}given by errors_stderr or replicates), got ns = "
                         f"{n_arr}")
    if errors_stderr is not None and replicates is not None:
        raise ValueError("give errors_stderr or replicates, not both")
    if replicates is not None:
        r = _as(replicates, name="replicates")
        if not np.all(np.isfinite(r) & (r >= 1)):
            raise ValueError(f"replicates must be finite and >= 1, got {replicates!r}")
    ln = np.log(n_arr)
    le = np.log(np.where(e > 0, e, np.nan))
    if errors_stderr is not None:
        var = (_as(errors_stderr, e.shape) / e) ** 2
    elif replicates is not None:
        k = np.broadcast_to(np.asarray(replicates, dtype=np.float64), ln.shape)
        var = np.broadcast_to(special.polygamma(1, k / 2) / 4, e.shape)
    else:
        var = np.ones_like(le)
    w = 1.0 / var
    sw = w.sum(-1)
    xbar = (w * ln).sum(-1) / sw
    ybar = (w * le).sum(-1) / sw
    sxx = (w * (ln - xbar[..., None]) ** 2).sum(-1)
    slope = (w * (ln - xbar[..., None]) * (le - ybar[..., None])).sum(-1) / sxx
    if errors_stderr is None and replicates is None:
        resid = le - ybar[..., None] - slope[..., None] * (ln - xbar[..., None])
        dof = ln.size - 2
        se = np.sqrt((resid ** 2).sum(-1) / dof / sxx)
    else:
        dof = None
        se = np.sqrt(1.0 / sxx)
    if np.ndim(slope) == 0:
        return RateFit(float(slope), float(se), dof)
    return RateFit(slope, se, dof)


def _check_rate(rate) -> float:
    r = _scalar(rate, "rate")
    if not math.isfinite(r):
        raise ValueError(f"rate must be a finite number, got {rate!r}")
    return r


@_quiet
def rate_agrees(ns, errors, rate: float = -0.5, *, errors_stderr=None, replicates=None, alpha: float = 1e-3,
                slack: float = 0.0):
    """Boolean form of :func:`assert_rate` over the last axis (one fit per leading index).

    Arguments:
        ns, errors, rate, errors_stderr, replicates, alpha, slack: as :func:`assert_rate`.

    Returns:
        a boolean array of the leading shape of ``errors``.
    """
    alpha, slack = _check_alpha(alpha), _check_tol(slack, "slack")
    rate = _check_rate(rate)
    f = fit_rate(ns, errors, errors_stderr=errors_stderr, replicates=replicates)
    c = _quantile(1 - alpha / 2, f.dof)
    ok = np.abs(np.asarray(f.slope) - rate) <= c * np.asarray(f.stderr) + slack
    return ok & np.isfinite(f.slope) & np.isfinite(f.stderr)


def assert_rate(ns, errors, rate: float = -0.5, *, errors_stderr=None, replicates=None, alpha: float = 1e-3,
                slack: float = 0.0, what: str = "error") -> float:
    """log(error) against log(n) has slope ``rate`` within the fit's own uncertainty (:func:`fit_rate`): two-sided,
    false alarm <= alpha when the errors follow the rate. Pass ``replicates=k`` when each error is the RMS over k
    independent runs (the best-founded choice), or ``errors_stderr``; with neither, the scatter about the line sets
    the uncertainty (t with len(ns) - 2 dof: needs several ns to have power). ``slack`` widens the band for known
    non-asymptotic effects. ``errors`` is one study (1-d, one error per n).

    Arguments:
        ns: (m,) the sample sizes.
        errors: (m,) the errors at each n.
        rate: the expected slope (-0.5 for Monte Carlo).
        errors_stderr: (m,) standard errors of the errors, or None.
        replicates: k when each error is an RMS over k independent runs, or None.
        alpha: the false-alarm level in (0, 1).
        slack: a widening of the band for known non-asymptotic effects.
        what: the name used in the assertion message.

    Returns:
        the fitted slope, a float; raises AssertionError when it disagrees with ``rate``.
    """
    alpha, slack = _check_alpha(alpha), _check_tol(slack, "slack")
    rate = _check_rate(rate)
    e = _as(errors, name="errors")
    if e.ndim != 1:
        raise ValueError(f"errors must be 1-d (one error per sample size) in assert_rate, got shape {e.shape}; "
                         "use rate_agrees for replicate studies along leading axes")
    if np.any(~np.isfinite(e)) or np.any(e <= 0):
        raise AssertionError(f"{what}: errors must be finite and positive, got {e}")
    if errors_stderr is not None:
        es = _as(errors_stderr, name="errors_stderr")
        if np.any(~np.isfinite(es)) or np.any(es <= 0):
            raise AssertionError(f"{what}: errors_stderr must be finite and positive, got {es}")
    f = fit_rate(ns, e, errors_stderr=errors_stderr, replicates=replicates)
    if not (math.isfinite(f.slope) and math.isfinite(f.stderr)):
        raise AssertionError(f"{what}: the log-log fit is degenerate (slope {f.slope}, stderr {f.stderr}) for ns "
                             f"{np.asarray(ns).tolist()} and errors {e.tolist()}; no rate can be judged")
    c = float(_quantile(1 - alpha / 2, f.dof))
    if not abs(f.slope - rate) <= c * f.stderr + slack:
        raise AssertionError(f"{what}: fitted slope {f.slope:.3f} +- {f.stderr:.3f} is not {rate} (allowed "
                             f"{c:.2f} x {f.stderr:.3f} + slack {slack}, false-alarm level {alpha:g})")
    return f.slope


# ------------------------------------------------------------------------------------------------- compilations

_EVENTS = {"/jax/core/compile/backend_compile_duration": [0], "/jax/core/compile/jaxpr_trace_duration": [0]}
_COMPILES = _EVENTS["/jax/core/compile/backend_compile_duration"]
_TRACES = _EVENTS["/jax/core/compile/jaxpr_trace_duration"]
_LISTENING = [False]


def _listen() -> None:
    if _LISTENING[0]:
        return
    import jax

    def on_event(event: str, duration: float, **kwargs) -> None:
        if event in _EVENTS:
            _EVENTS[event][0] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    _LISTENING[0] = True


class _Count:
    def __init__(self, counter=_COMPILES):
        self.counter = counter
        self.start = counter[0]
        self.end = None

    @property
    def n(self) -> int:
        return (self.counter[0] if self.end is None else self.end) - self.start


@contextlib.contextmanager
def count_traces():
    """``with count_traces() as c: ...``; then ``c.n`` is the number of jaxpr traces inside the block (JAX's
    ``/jax/core/compile/jaxpr_trace_duration`` events): zero for a repeated call whose compiled work is cached and
    whose front door traces nothing.

    Returns:
        a context manager yielding a counter with attribute ``n``.
    """
    _listen()
    c = _Count(_TRACES)
    try:
        yield c
    finally:
        c.end = _TRACES[0]


@contextlib.contextmanager
def count_compilations():
    """``with count_compilations() as c: ...``; then ``c.n`` is the number of XLA backend compilations inside the
    block (every jit, including those of eager jnp operations on new shapes; a hit in JAX's persistent
    compilation cache is not counted).

    Returns:
        a context manager yielding a counter with attribute ``n``.
    """
    _listen()
    c = _Count()
    try:
        yield c
    finally:
        c.end = _COMPILES[0]
