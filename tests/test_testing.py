"""diffdens.testing, tested on simulated estimates: each check passes unbiased estimates with a false-alarm rate of
at most alpha (judged by a binomial bound over many simulated replicates, at n = 10 and n = 10000 points) and fails
biased ones with high probability. The simulations are vectorized over replicates (the boolean predicates take
replicates along leading axes), so the whole file runs in seconds."""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from diffdens import testing as T

R = 2000  # simulated replicates per case
CHUNK = 250  # replicates per vectorized batch (bounds memory at n = 10000)


def max_alarms(alpha, r=R, level=1e-5):
    """The largest alarm count consistent with a false-alarm rate <= alpha: Binomial(r, alpha) exceeds it with
    probability < level. (At alpha = 1e-3 and r = 2000 this allows about 5 alpha; at 0.05, about 1.4 alpha.)"""
    return int(stats.binom.isf(level, r, alpha))


def simulate(rng, r, n, *, m=None, bias=0.0, shift=0.0, skewed=False):
    """r replicates of n per-point estimates: value, stderr, truth, dof. Each point has its own noise scale.
    m=None: the stderr is the exact standard deviation of the value. m draws: value = mean of m draws, stderr = their
    standard error (Gaussian draws: sufficient statistics simulated directly; skewed: exponential draws).
    ``bias`` is in units of each point's true standard error; ``shift`` is added to every value."""
    sigma = np.exp(rng.uniform(-1, 1, n))  # true standard error of each point's value
    truth = 3.0 * rng.standard_normal(n)
    if shift:
        v, s, t, dof = simulate(rng, r, n, m=m, bias=bias, skewed=skewed)
        return v + shift, s, t, dof
    if m is None:
        v = truth + sigma * (bias + rng.standard_normal((r, n)))
        return v, np.broadcast_to(sigma, (r, n)), truth, None
    if skewed:
        draws = rng.standard_exponential((r, n, m)) - 1.0  # mean 0, sd 1, skewness 2
        z, sz = draws.mean(-1) * np.sqrt(m), draws.std(-1, ddof=1)
    else:
        z = rng.standard_normal((r, n))
        sz = np.sqrt(rng.chisquare(m - 1, (r, n)) / (m - 1))
    return truth + sigma * (bias + z), sigma * sz, truth, m - 1


def alarms(pred, rng, n, r=R, **sim):
    """How many of r simulated replicates the predicate rejects."""
    bad = 0
    for i in range(0, r, CHUNK):
        v, s, t, dof = simulate(rng, min(CHUNK, r - i), n, **sim)
        bad += int((~pred(v, s, t, dof)).sum())
    return bad


@pytest.fixture
def rng(request):
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))  # fixed per test, independent of hash seeds


# ------------------------------------------------------------------------------------------------ assert_agrees

@pytest.mark.parametrize("n", [10, 10_000])
@pytest.mark.parametrize("m", [None, 4], ids=["known-stderr", "stderr-from-4-draws"])
@pytest.mark.parametrize("alpha", [1e-3, 0.05])
def test_agrees_false_alarm_rate(n, m, alpha, rng):
    pred = lambda v, s, t, dof: T.agrees(v, s, t, dof=dof, alpha=alpha)
    assert alarms(pred, rng, n, m=m) <= max_alarms(alpha)


def test_agrees_needs_the_t_for_a_stderr_from_few_draws(rng):
    """The defect of issue 13: a stderr from 4 draws judged with normal quantiles raises false alarms on nearly every
    replicate at n = 10000 points; with dof = 3 they stay below alpha."""
    pred = lambda v, s, t, dof: T.agrees(v, s, t, alpha=1e-3)  # dof ignored
    assert alarms(pred, rng, 10_000, r=200, m=4) > 150


@pytest.mark.parametrize("n", [10, 10_000])
def test_agrees_fails_biased_points(n, rng):
    # one point off by 10 of its stderrs (well past the Bonferroni value, 5.3 at n = 10^4), others unbiased
    def pred(v, s, t, dof):
        v = v.copy()
        v[:, 0] = t[0] + 10 * s[:, 0]
        return T.agrees(v, s, t, dof=dof)
    assert alarms(pred, rng, n, r=500) == 500
    # a bias of 6 stderr at every point
    pred = lambda v, s, t, dof: T.agrees(v, s, t, dof=dof)
    assert alarms(pred, rng, n, r=500, bias=6.0) >= 0.99 * 500


def test_agrees_tolerances_and_exact_values():
    T.assert_agrees([1.0, 2.0], None, [1.0, 2.0 + 1e-7], atol=1e-6)
    T.assert_agrees([1.0, 2.0], [0.1, 0.1], [1.1, 2.25], rtol=0.1)
    with pytest.raises(AssertionError, match="1 of 2 points"):
        T.assert_agrees([1.0, 2.0], None, [1.0, 2.1], atol=1e-6)


def test_nonfinite_never_passes():
    for v, s, t in [([np.nan, 1.0], [1.0, 1.0], [0.0, 1.0]), ([0.0, 1.0], [np.nan, 1.0], [0.0, 1.0]),
                    ([0.0, 1.0], [1.0, 1.0], [np.inf, 1.0]), ([0.0, 1.0], [-1.0, 1.0], [0.0, 1.0])]:
        assert not T.agrees(v, s, t) and not T.unbiased(v, s, t) and not T.bound_holds(v, t, s)
        with pytest.raises(AssertionError, match="non-finite|negative"):
            T.assert_agrees(v, s, t)
        with pytest.raises(AssertionError, match="non-finite|negative"):
            T.assert_unbiased(v, s, t)
    with pytest.raises(AssertionError, match="positive"):
        T.assert_rate([10, 100, 1000], [1.0, np.nan, 0.1])


def test_assertions_match_predicates(rng):
    """The raising assertions take the same decisions as the boolean predicates."""
    v, s, t, dof = simulate(rng, 200, 50, m=4, bias=0.6)
    for i in range(200):
        for pred, check in [(T.agrees, T.assert_agrees), (T.unbiased, T.assert_unbiased)]:
            ok = bool(pred(v[i], s[i], t, dof=dof, alpha=0.05))
            try:
                check(v[i], s[i], t, dof=dof, alpha=0.05)
                raised = False
            except AssertionError:
                raised = True
            assert raised == (not ok)
        ok = bool(T.bound_holds(v[i], t, s[i], alpha=0.05))
        raised = False
        try:
            T.assert_bound(v[i], t, s[i], alpha=0.05)
        except AssertionError:
            raised = True
        assert raised == (not ok)


def test_critical_value():
    assert T.critical_value(0.05) == pytest.approx(1.959964, abs=1e-5)
    assert T.critical_value(0.05, sides=1) == pytest.approx(1.644854, abs=1e-5)
    assert T.critical_value(1e-3, 10_000) == pytest.approx(stats.norm.isf(5e-8))
    assert T.critical_value(0.05, 1, dof=3) == pytest.approx(3.182446, abs=1e-5)
    assert T.critical_value(0.05, 1, dof=np.inf) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        T.critical_value(0.0)


# ---------------------------------------------------------------------------------------------- assert_unbiased

@pytest.mark.parametrize("n", [10, 10_000])
@pytest.mark.parametrize("m", [None, 4], ids=["known-stderr", "stderr-from-4-draws"])
@pytest.mark.parametrize("alpha", [1e-3, 0.05])
def test_unbiased_false_alarm_rate(n, m, alpha, rng):
    pred = lambda v, s, t, dof: T.unbiased(v, s, t, dof=dof, alpha=alpha)
    assert alarms(pred, rng, n, m=m) <= max_alarms(alpha)


@pytest.mark.parametrize("n", [10, 10_000])
def test_unbiased_without_stderr_uses_the_spread(n, rng):
    pred = lambda v, s, t, dof: T.unbiased(v, None, t, alpha=0.05)
    assert alarms(pred, rng, n) <= max_alarms(0.05)
    assert alarms(pred, rng, n, r=500, bias=3.0 if n == 10 else 0.1) >= 0.95 * 500


def test_unbiased_robust_to_skewed_draws(rng):
    """Skewed draws (exponential, m = 4) make each point's error and stderr correlated: the mean of the per-point z's
    is then biased (the old statistic), while sum(d) / sqrt(sum s^2) is not."""
    n = 10_000
    pred = lambda v, s, t, dof: T.unbiased(v, s, t, dof=dof, alpha=0.05)
    assert alarms(pred, rng, n, r=500, m=4, skewed=True) <= max_alarms(0.05, r=500)
    v, s, t, _ = simulate(rng, 100, n, m=4, skewed=True)
    z = ((v - t) / s).mean(-1)  # mean of per-point t-statistics: far from 0 in units of its sd sqrt(3 / n)
    assert np.mean(np.abs(z) > 3.29 * np.sqrt(3 / n)) > 0.5


@pytest.mark.parametrize("n", [10, 10_000])
def test_unbiased_fails_a_small_common_bias(n, rng):
    # a bias of 3 stderr per point at n = 10 and 0.08 stderr at n = 10^4 (pooled z ~ 7 and 6)
    pred = lambda v, s, t, dof: T.unbiased(v, s, t, dof=dof)
    for m in (None, 4):
        assert alarms(pred, rng, n, r=500, m=m, bias=3.0 if n == 10 else 0.08) >= 0.95 * 500


def test_unbiased_atol_is_an_allowed_mean_bias():
    t = np.zeros(1000)
    v = np.full(1000, 0.05)
    T.assert_unbiased(v, np.full(1000, 0.01), t, atol=0.05)
    with pytest.raises(AssertionError, match="mean error"):
        T.assert_unbiased(v, np.full(1000, 0.01), t, atol=0.04)


# ------------------------------------------------------------------------------------ assert_below / assert_above

def test_below_and_above():
    T.assert_below([0.1, 0.2], [0.01, 0.02], 0.5)
    T.assert_above([1.0], [0.1], 0.5)
    with pytest.raises(AssertionError, match="not below"):
        T.assert_below([0.1, 0.45], [0.01, 0.02], 0.5)  # 0.45 + 3.3 x 0.02 is not below 0.5
    with pytest.raises(AssertionError, match="not below"):
        T.assert_above([1.0], [0.2], 0.5)
    # a value at its limit passes with probability <= alpha (Bonferroni over the n values)
    rng = np.random.default_rng(0)
    passed = 0
    for _ in range(2000):
        try:
            T.assert_below(0.5 + 0.1 * rng.standard_normal(10), 0.1, 0.5, alpha=0.05)
            passed += 1
        except AssertionError:
            pass
    assert passed <= max_alarms(0.05)


# ------------------------------------------------------------------------------------------------- assert_bound

@pytest.mark.parametrize("n", [10, 10_000])
@pytest.mark.parametrize("with_stderr", [False, True])
@pytest.mark.parametrize("alpha", [1e-3, 0.05])
def test_bound_false_alarm_rate_when_tight(n, with_stderr, alpha, rng):
    """A tight bound (mean gap zero) is the worst case: at most alpha false alarms; a strict bound, fewer."""
    pred = lambda v, s, t, dof: T.bound_holds(v, t, s if with_stderr else None, alpha=alpha)
    assert alarms(pred, rng, n) <= max_alarms(alpha)
    assert alarms(pred, rng, n, r=500, bias=-1.0) == 0  # lower bound below the truth by a stderr


@pytest.mark.parametrize("n", [10, 10_000])
def test_bound_fails_when_violated(n, rng):
    shift = 5.0 if n == 10 else 0.1  # the "lower bound" exceeds the truth on average by this much
    pred = lambda v, s, t, dof: T.bound_holds(v, t, s)
    assert alarms(pred, rng, n, r=500, shift=shift) >= 0.95 * 500
    upper = lambda v, s, t, dof: T.bound_holds(v, t, s, upper=True)  # the same values as an upper bound: fine
    assert alarms(upper, rng, n, r=500, shift=shift) == 0
    assert alarms(upper, rng, n, r=500, shift=-shift) >= 0.95 * 500


# -------------------------------------------------------------------------------------------------- assert_rate

NS = np.array([64, 256, 1024, 4096, 16384])


def rms_errors(rng, r, k, *, bias=0.0, scale=3.0):
    """Errors of r replicate studies: at each n, the RMS over k runs of an estimator with sd scale / sqrt(n) and
    a constant bias."""
    err = bias + scale / np.sqrt(NS) * rng.standard_normal((r, k, NS.size))
    return np.sqrt((err ** 2).mean(1))


@pytest.mark.parametrize("mode", ["replicates", "errors_stderr", "scatter"])
@pytest.mark.parametrize("alpha", [1e-3, 0.05])
def test_rate_false_alarm_rate(mode, alpha, rng):
    k = 30
    e = rms_errors(rng, R, k)
    kw = {"replicates": dict(replicates=k), "errors_stderr": dict(errors_stderr=e / np.sqrt(2 * k)),
          "scatter": {}}[mode]
    ok = T.rate_agrees(NS, e, -0.5, alpha=alpha, **kw)
    assert (~ok).sum() <= max_alarms(alpha)


def test_rate_fails_a_biased_estimator_and_a_wrong_rate(rng):
    k = 30
    # an error floor (bias 0.1) flattens the slope; a 1/n error has slope -1
    e = rms_errors(rng, 500, k, bias=0.1)
    assert (~T.rate_agrees(NS, e, -0.5, replicates=k)).mean() >= 0.95
    e = rms_errors(rng, 500, k)
    assert (~T.rate_agrees(NS, e, -1.0, replicates=k)).mean() >= 0.95
    f = T.fit_rate(NS, e[0], replicates=k)
    assert abs(f.slope + 0.5) < 5 * f.stderr and f.dof is None
    assert T.assert_rate(NS, e[0], replicates=k) == pytest.approx(f.slope)
    with pytest.raises(AssertionError, match="slope"):
        T.assert_rate(NS, e[0], -1.0, replicates=k)


def test_rate_stderr_matches_the_spread_of_slopes(rng):
    """The slope's standard error from the replicate count is the actual spread of fitted slopes."""
    k = 30
    f = T.fit_rate(NS, rms_errors(rng, R, k), replicates=k)
    assert np.std(f.slope) == pytest.approx(np.mean(f.stderr), rel=0.1)


# ------------------------------------------------------------------------------- compare_paired / assert_paired

def paired(rng, r, n, *, diff=0.0, shared=10.0, noise=1.0, rho=0.0, skewed=False):
    """r replicates of n paired estimates a_i, b_i at the same points: both carry the point's own value (sd
    ``shared``, common to a and b) and a per-point error (sd ``noise``; correlation ``rho`` between a's and b's,
    exponential instead of Gaussian when ``skewed``), and mean(a) - mean(b) = ``diff``."""
    point = shared * rng.standard_normal((r, n))
    draw = (lambda: rng.standard_exponential((r, n)) - 1.0) if skewed else (lambda: rng.standard_normal((r, n)))
    e1, e2 = draw(), draw()
    ea, eb = e1, rho * e1 + np.sqrt(1 - rho ** 2) * e2
    return point + noise * ea + diff, point + noise * eb


def verdicts(rng, n, alpha, r=R, **sim):
    """Counts of each verdict over r simulated comparisons at level alpha (vectorized in chunks)."""
    out = {"a > b": 0, "a < b": 0, "not resolved": 0}
    for i in range(0, r, CHUNK):
        a, b = paired(rng, min(CHUNK, r - i), n, **sim)
        v = T.compare_paired(a, b, alpha=alpha).verdict
        for k in out:
            out[k] += int((v == k).sum())
    return out


@pytest.mark.parametrize("n", [10, 10_000])
@pytest.mark.parametrize("rho", [0.0, 0.9, -0.9], ids=["independent", "correlated", "anticorrelated"])
@pytest.mark.parametrize("alpha", [1e-3, 0.05])
def test_paired_false_alarm_rate(n, rho, alpha, rng):
    """Equal means: a resolved verdict (either sign) in at most alpha of the comparisons, at any n and whatever
    the correlation of the two estimators' errors; each sign in at most alpha / 2."""
    v = verdicts(rng, n, alpha, rho=rho)
    assert v["a > b"] + v["a < b"] <= max_alarms(alpha)
    assert max(v["a > b"], v["a < b"]) <= max_alarms(alpha / 2)


def test_paired_false_alarm_rate_skewed_errors(rng):
    """Skewed (exponential) errors at n = 10^4: the t reference still holds (central limit)."""
    v = verdicts(rng, 10_000, 0.05, r=500, skewed=True, shared=0.0)
    assert v["a > b"] + v["a < b"] <= max_alarms(0.05, r=500)


@pytest.mark.parametrize("n", [10, 10_000])
def test_paired_power(n, rng):
    """A difference of 8 of its own stderrs is resolved with the right sign in nearly every comparison."""
    se = np.sqrt(2.0 / n)  # sd of mean(a - b) for independent unit errors (the shared value cancels)
    for diff, want in [(8 * se, "a > b"), (-8 * se, "a < b")]:
        a, b = paired(rng, 500, n, diff=diff)
        c = T.compare_paired(a, b)
        assert np.mean(c.verdict == want) >= 0.95
        assert c.dof == n - 1 and c.n == n
        assert np.std(c.difference) == pytest.approx(se, rel=0.15)  # the paired stderr is the actual spread
        assert np.mean(c.stderr) == pytest.approx(se, rel=0.15)


def test_paired_resolves_what_quadrature_does_not(rng):
    """Estimates sharing the point's value (sd 10) differ by 0.1 with per-point errors of sd 0.1: the paired stderr
    (0.014 at n = 100) resolves it; adding the two means' stderrs in quadrature (1.4) would not."""
    a, b = paired(rng, 500, 100, diff=0.1, shared=10.0, noise=0.1)
    c = T.compare_paired(a, b)
    assert np.mean(c.verdict == "a > b") >= 0.95
    quadrature_z = c.difference / c.unpaired_stderr
    assert np.all(np.abs(quadrature_z) < T.critical_value(1e-3, dof=99))
    assert np.all(c.unpaired_stderr > 50 * c.stderr)


def test_quadrature_raises_false_alarms_on_anticorrelated_errors(rng):
    """Two forms of one quantity with anticorrelated errors (chapter 4's DSM and ISM on shared draws): quadrature
    understates the stderr of the difference, so it raises false alarms far above alpha; the paired test does not."""
    alpha = 0.05
    a, b = paired(rng, R, 50, shared=0.0, rho=-1.0)  # a = m + e, b = m - e: var(a - b) is 4, quadrature says 2
    c = T.compare_paired(a, b, alpha=alpha)
    assert (c.verdict != "not resolved").sum() <= max_alarms(alpha)
    quadrature_alarms = (np.abs(c.difference / c.unpaired_stderr) > T.critical_value(alpha, dof=49)).sum()
    assert quadrature_alarms > 1.5 * max_alarms(alpha)  # about 15%: z inflated by sqrt(2), against 5%


def test_paired_single_point_uses_the_stderrs():
    c = T.compare_paired(1.0, 0.0, a_stderr=0.1, b_stderr=0.1, names=("ODE", "ELBO"))
    assert c.verdict == "ODE > ELBO" and c.dof is None and c.n == 1
    assert c.stderr == pytest.approx(np.hypot(0.1, 0.1)) and c.unpaired_stderr == c.stderr
    assert c.p_value == pytest.approx(2 * stats.norm.sf(1 / np.hypot(0.1, 0.1)))
    assert T.compare_paired([0.1], [0.0], a_stderr=[0.1]).verdict == "not resolved"
    with pytest.raises(ValueError, match="single point"):
        T.compare_paired([1.0], [0.0])


def test_paired_edge_cases():
    # an exact, constant difference is resolved; identical estimates are not; NaN is never resolved
    assert T.compare_paired([2.0, 3.0, 4.0], [1.0, 2.0, 3.0]).verdict == "a > b"
    assert T.compare_paired([1.0, 2.0], [1.0, 2.0]).verdict == "not resolved"
    c = T.compare_paired([np.nan, 1.0, 2.0], [0.0, 0.0, 0.0])
    assert c.verdict == "not resolved" and np.isnan(c.difference)
    with pytest.raises(ValueError, match="names"):
        T.compare_paired([1.0, 2.0], [0.0, 0.0], names=("a",))
    with pytest.raises(ValueError, match="broadcast"):
        T.compare_paired(np.zeros(3), np.zeros(4))


def test_assert_paired(rng):
    a, b = paired(rng, 1, 200, diff=1.0, noise=1.0)
    c = T.assert_paired(a[0], b[0], expect="greater")
    assert c.verdict == "a > b"
    T.assert_paired(b[0], a[0], expect="less")
    with pytest.raises(AssertionError, match=r"ODE < ELBO is not supported.*verdict 'ODE > ELBO'"):
        T.assert_paired(a[0], b[0], expect="less", names=("ODE", "ELBO"))
    with pytest.raises(AssertionError, match="ODE = ELBO is not supported"):
        T.assert_paired(a[0], b[0], expect="equal", names=("ODE", "ELBO"))
    a, b = paired(rng, 1, 200)
    T.assert_paired(a[0], b[0], expect="equal")
    with pytest.raises(AssertionError, match="a > b is not supported.*not resolved"):
        T.assert_paired(a[0], b[0])
    # any shape, paired entry by entry; non-finite entries never pass
    T.assert_paired(a[0].reshape(20, 10) + 1.0, b[0].reshape(20, 10))
    with pytest.raises(AssertionError, match="non-finite"):
        T.assert_paired([np.nan, 2.0, 3.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="expect"):
        T.assert_paired(a[0], b[0], expect="better")


def test_assert_paired_matches_compare_paired(rng):
    a, b = paired(rng, 300, 20, diff=0.5, noise=1.0)
    for i in range(300):
        verdict = T.compare_paired(a[i], b[i], alpha=0.05).verdict
        for expect, want in [("greater", "a > b"), ("less", "a < b"), ("equal", "not resolved")]:
            try:
                T.assert_paired(a[i], b[i], expect=expect, alpha=0.05)
                passed = True
            except AssertionError:
                passed = False
            assert passed == (verdict == want)


# ----------------------------------------------------------------------------------------- bootstrap_interval

LOGNORMAL_TRIMMED_MEAN = float(np.exp(0.5) * (stats.norm.cdf(stats.norm.ppf(0.9) - 1)
                                              - stats.norm.cdf(stats.norm.ppf(0.1) - 1)) / 0.8)  # 10% from each end


@pytest.mark.parametrize("stat, draw, truth", [
    ("median", lambda rng, shape: rng.standard_t(2, size=shape), 0.0),
    ("trimmed_mean", lambda rng, shape: rng.lognormal(size=shape), LOGNORMAL_TRIMMED_MEAN),
], ids=["median-student-t", "trimmed-mean-lognormal"])
def test_bootstrap_coverage(stat, draw, truth, rng):
    """Over r independent heavy-tailed samples of 40 points, the 90% interval covers the true summary in about 90%
    of them: within a binomial tolerance (plus 0.02 for the percentile bootstrap's finite-n error)."""
    r, level = 600, 0.9
    iv = T.bootstrap_interval(draw(rng, (r, 40)), stat=stat, level=level, n_boot=500, key=1)
    covered = int(((iv.low <= truth) & (truth <= iv.high)).sum())
    lo, hi = stats.binom.ppf(1e-5, r, level), stats.binom.isf(1e-5, r, level)
    assert lo - 0.02 * r <= covered <= hi + 0.02 * r, covered / r
    assert np.all(iv.low <= iv.high) and iv.level == level


def test_bootstrap_is_deterministic_and_summarizes(rng):
    x = rng.standard_t(2, size=101)
    iv = T.bootstrap_interval(x, key=7)
    assert iv == T.bootstrap_interval(x, key=7)
    assert iv != T.bootstrap_interval(x, key=8)
    assert iv.estimate == np.median(x) and iv.low <= iv.estimate <= iv.high
    k = jax.random.key(3)
    assert T.bootstrap_interval(x, key=k) == T.bootstrap_interval(x, key=k)
    assert T.bootstrap_interval(x, key=k) == T.bootstrap_interval(x, key=jax.random.PRNGKey(3))  # same bits
    tm = T.bootstrap_interval(x, stat="trimmed_mean", trim=0.2)
    assert tm.estimate == pytest.approx(stats.trim_mean(x, 0.2))
    q = T.bootstrap_interval(x, stat=lambda xs: np.quantile(xs, 0.75, axis=-1), level=0.5)
    assert q.estimate == pytest.approx(np.quantile(x, 0.75)) and q.level == 0.5
    # a batch: one interval per leading index, the same estimates
    batch = T.bootstrap_interval(np.stack([x, 2 * x]), n_boot=200)
    assert batch.estimate.shape == (2,) and batch.estimate[1] == pytest.approx(2 * np.median(x))


def test_bootstrap_rejects_bad_input():
    x = np.arange(10.0)
    for kw, name in [(dict(level=1.0), "level"), (dict(level=0.0), "level"), (dict(n_boot=5), "n_boot"),
                     (dict(n_boot=100.0), "n_boot"), (dict(stat="mode"), "stat"), (dict(trim=0.5), "trim"),
                     (dict(key=-1), "key"), (dict(key="0"), "key"), (dict(stat=np.median), "stat")]:
        with pytest.raises(ValueError, match=name):
            T.bootstrap_interval(x, **kw)
    with pytest.raises(ValueError, match="x"):
        T.bootstrap_interval([1.0], n_boot=100)
    with pytest.raises(ValueError, match="non-finite"):
        T.bootstrap_interval([1.0, np.inf, 2.0])


# ------------------------------------------------------------------------------------------- count_compilations

def test_count_compilations():
    x3, x4 = jnp.ones(3), jnp.ones(4)
    f = jax.jit(lambda x: jnp.sin(x) * 2)
    with T.count_compilations() as c:
        f(x3).block_until_ready()
        f(x3).block_until_ready()
        assert c.n == 1
        f(x4).block_until_ready()
    assert c.n == 2
    with T.count_compilations() as c2:
        f(x3).block_until_ready()
    assert c2.n == 0
    # a pytree argument of the same structure and shapes reuses the compilation
    g = jax.jit(lambda p, x: p["w"] * x)
    with T.count_compilations() as c3:
        g({"w": jnp.float32(1.0)}, x3)
        g({"w": jnp.float32(2.0)}, x3)
    assert c3.n == 1


# ------------------------------------------------------------------------ argument validation (issue 27, item 4)

def _every_check():
    """(name, call(**kw)) for each public check, on data it passes with the default arguments."""
    v, s, t = [1.0, 2.0, 3.0], [0.1, 0.1, 0.1], [1.0, 2.0, 3.0]
    ns, e = NS, 3.0 / np.sqrt(NS)
    return [
        ("assert_agrees", lambda **kw: T.assert_agrees(v, s, t, **kw)),
        ("agrees", lambda **kw: T.agrees(v, s, t, **kw)),
        ("assert_unbiased", lambda **kw: T.assert_unbiased(v, s, t, **kw)),
        ("unbiased", lambda **kw: T.unbiased(v, s, t, **kw)),
        ("assert_bound", lambda **kw: T.assert_bound(v, t, s, **kw)),
        ("bound_holds", lambda **kw: T.bound_holds(v, t, s, **kw)),
        ("assert_below", lambda **kw: T.assert_below(v, s, 10.0, **kw)),
        ("assert_above", lambda **kw: T.assert_above(v, s, 0.0, **kw)),
        ("assert_rate", lambda **kw: T.assert_rate(ns, e, replicates=30, **kw)),
        ("rate_agrees", lambda **kw: T.rate_agrees(ns, e, replicates=30, **kw)),
        ("critical_value", lambda **kw: T.critical_value(**{"alpha": 1e-3, **kw})),
        ("compare_paired", lambda **kw: T.compare_paired(np.add(v, 1.0), v, **kw)),
        ("assert_paired", lambda **kw: T.assert_paired([2.0, 3.1, 3.9], v, **kw)),
    ]


TOLS = {"assert_agrees": ("atol", "rtol"), "agrees": ("atol", "rtol"), "assert_unbiased": ("atol",),
        "unbiased": ("atol",), "assert_bound": ("atol",), "bound_holds": ("atol",), "assert_rate": ("slack",),
        "rate_agrees": ("slack",)}


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5, -0.1, np.nan, np.inf, True, "0.05", [0.01, 0.02]])
def test_every_check_rejects_a_bad_alpha(alpha):
    """alpha = 0 meant an infinite margin (everything passed), alpha > 1 a NaN threshold (issue 27 item 4)."""
    for name, call in _every_check():
        call(alpha=0.05)  # the data pass at a valid alpha
        with pytest.raises(ValueError, match="alpha"):
            call(alpha=alpha)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1e-3, "0.1", None])
def test_every_check_rejects_a_bad_tolerance(bad):
    """A NaN atol / rtol passed every value (issue 27 item 4)."""
    for name, call in _every_check():
        for tol in TOLS.get(name, ()):
            call(**{tol: 0.0})
            with pytest.raises(ValueError, match=tol):
                call(**{tol: bad})


def test_nan_tolerance_no_longer_passes_a_wrong_value():
    with pytest.raises(ValueError, match="atol"):
        T.assert_agrees([100.0], [0.1], [0.0], atol=np.nan)
    with pytest.raises(ValueError, match="rtol"):
        T.assert_agrees([100.0], [0.1], [1.0], rtol=np.nan)
    with pytest.raises(ValueError, match="atol"):
        T.assert_unbiased([100.0, 100.0], [0.1, 0.1], [0.0, 0.0], atol=np.nan)
    with pytest.raises(ValueError, match="rate"):
        T.assert_rate(NS, 3.0 / np.sqrt(NS), np.nan, replicates=30)


# ---------------------------------------------------------------------------------- any shape (issue 27, item 4)

def test_assertions_take_any_shape(rng):
    """2-D (or n-D) input is one set of points: the same decision as the flattened input, never an IndexError."""
    for i in range(100):
        v, s, t, dof = simulate(rng, 1, 60, m=4, bias=0.5 if i % 2 else 0.0)
        v, s = v[0], s[0]
        for check in (T.assert_agrees, T.assert_unbiased, lambda v, s, t, dof: T.assert_bound(v, t, s)):
            outcomes = []
            for shape in [(60,), (6, 10), (2, 3, 10)]:
                try:
                    check(v.reshape(shape), s.reshape(shape), t.reshape(shape), dof=dof)
                    outcomes.append(True)
                except AssertionError:
                    outcomes.append(False)
            assert len(set(outcomes)) == 1, outcomes
    # the failing point is reported by its flat index
    v = np.zeros((3, 4))
    v[2, 1] = 50.0
    with pytest.raises(AssertionError, match="1 of 12 points.*worst point 9"):
        T.assert_agrees(v, 1.0, 0.0)
    with pytest.raises(AssertionError, match="not below"):
        T.assert_below(v, 1.0, 40.0)


def test_value_stderr_truth_broadcast_elementwise():
    v = np.array([[1.0, 2.0, 3.0], [1.1, 2.1, 2.9]])
    T.assert_agrees(v, 0.1, [1.0, 2.0, 3.0])  # stderr scalar, truth one per column
    T.assert_agrees(2.0, [0.1, 0.2], [[2.0, 2.1], [1.9, 2.0]])  # a scalar value against a 2-D truth
    T.assert_unbiased(v, np.full(3, 0.1), [1.0, 2.0, 3.0])
    T.assert_bound(v - 0.2, [1.0, 2.0, 3.0], 0.1)
    # per-point dof broadcast with the points and flattened alike
    T.assert_agrees(v, 0.1, [1.0, 2.0, 3.0], dof=np.array([3.0, 4.0, 5.0]))
    assert T.agrees(v, 0.1, [1.0, 2.0, 3.0]).shape == (2,)  # predicates: leading axes are replicates
    with pytest.raises(ValueError, match="broadcast"):
        T.assert_agrees(np.zeros((2, 3)), 0.1, np.zeros(4))
    with pytest.raises(ValueError, match="broadcast"):
        T.agrees(np.zeros(3), np.ones(2), np.zeros(3))


# ------------------------------------------------------------------------------ degenerate rates (issue 27, item 4)

def test_rate_on_degenerate_input_says_why():
    e = 3.0 / np.sqrt(NS)
    with pytest.raises(ValueError, match="distinct sample sizes"):
        T.assert_rate([100, 100, 100, 100], [0.1, 0.2, 0.1, 0.3])
    with pytest.raises(ValueError, match="distinct sample sizes"):
        T.assert_rate([100, 100], [0.1, 0.2], replicates=10)
    with pytest.raises(ValueError, match="ns must be finite and positive"):
        T.assert_rate([0, 10, 100], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="replicates"):
        T.assert_rate(NS, e, replicates=0)
    with pytest.raises(AssertionError, match="errors_stderr must be finite and positive"):
        T.assert_rate(NS, e, errors_stderr=np.zeros_like(e))
    with pytest.raises(ValueError, match="1-d"):
        T.assert_rate(NS, e[None], replicates=30)
    with pytest.raises(AssertionError, match="errors must be finite and positive"):
        T.assert_rate(NS, np.where(NS > 1000, 0.0, e), replicates=30)
    assert not T.rate_agrees(NS, np.zeros_like(e), replicates=30)  # the predicate says False, without a NaN slope
