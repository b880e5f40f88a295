"""Shared helpers for the benchmark scripts: device/version metadata, timing (interleaved rounds with a spread), a
random-weight MLP score, JSON output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diffdens as dd  # noqa: E402

# Results ship with the package (diffdens/_data/benchmarks, package data) so that the benchmark chapter can read
# them after `pip install`, outside a checkout (importlib.resources).
RESULTS = Path(__file__).resolve().parents[1] / "diffdens" / "_data" / "benchmarks"


def size_option(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--size cpu|full`` to a benchmark's parser: ``cpu`` (the default) is the size of the committed
    ``*_cpu.json``, minutes on a 2-core CPU; ``full`` the GPU size (an H100 runs every benchmark in minutes, a 2-core
    CPU would need hours). ``scripts/full_run.py`` passes it explicitly. ``--full`` is a deprecated alias of
    ``--size full`` (older instructions use it)."""
    ap.add_argument("--size", choices=("cpu", "full"), default="cpu",
                    help="cpu: the size of the committed *_cpu.json (default); full: the GPU size")
    ap.add_argument("--full", dest="size", action="store_const", const="full", help=argparse.SUPPRESS)
    return ap


def meta(**sizes) -> dict:
    import diffrax
    import flax
    import optax

    d = jax.devices()[0]
    return {
        "device": dd.book.device_name(),
        "platform": d.platform,
        "n_devices": jax.device_count(),
        "cpu": platform.processor() or platform.machine(),
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "diffrax": diffrax.__version__,
                     "optax": optax.__version__, "python": platform.python_version()},
        "sizes": sizes,
        "date": time.strftime("%Y-%m-%d"),
    }


def git_commit():
    """The short hash of the checked-out commit, or None."""
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except Exception:
        return None


ROUNDS = 5  # interleaved timing rounds per comparison (issue 23: a single best-of-2 moved +-50% between runs)


class Timing(NamedTuple):
    """Wall times of one function over interleaved rounds: the median and the spread (fastest, slowest round)."""

    median: float
    low: float
    high: float
    times: list

    def spread(self) -> list:
        """[fastest, slowest] round, in seconds (for the JSON)."""
        return [self.low, self.high]

    def rate(self, count: float) -> tuple[float, list]:
        """``count`` per second at the median, and its spread [slowest, fastest round]."""
        return count / self.median, [count / self.high, count / self.low]

    def per(self, count: float) -> tuple[float, list]:
        """Seconds per one of ``count`` items at the median, and its spread [fastest, slowest round]."""
        return self.median / count, [self.low / count, self.high / count]


def interleaved(fns: dict, *, rounds: int = ROUNDS, warm: bool = True) -> dict:
    """Time zero-argument callables against each other: each is called once first (compilation and caches warmed
    outside the timed region), then ``rounds`` rounds call every one once, the order rotated from round to round, so
    that the load of other processes falls on all of them alike. Every result is blocked on
    (``jax.block_until_ready``).

    ``warm=False`` skips the warm-up calls (the caller made them, e.g. the call whose output it keeps).

    Returns:
        {name: Timing(median, low, high, times)}; :func:`ratio` compares two of them round by round.
    """
    if rounds < 5:
        raise ValueError(f"rounds must be >= 5 (a timing comparison reports a spread), got {rounds}")
    names = list(fns)
    for k in names if warm else ():  # warm=False: the caller has already called each one on the timed shape
        jax.block_until_ready(fns[k]())
    times = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            jax.block_until_ready(fns[k]())
            times[k].append(time.perf_counter() - t)
    return {k: Timing(float(np.median(v)), float(min(v)), float(max(v)), v) for k, v in times.items()}


def ratio(timings: dict, num: str, den: str) -> dict:
    """time(num) / time(den) per round (both measured in the same round, under the same load): the median and the
    spread [lowest, highest] over rounds."""
    r = np.asarray(timings[num].times) / np.asarray(timings[den].times)
    return {"median": float(np.median(r)), "spread": [float(r.min()), float(r.max())]}


def timeit(fn, *, rounds: int = ROUNDS) -> Timing:
    """One function's :class:`Timing` over ``rounds`` rounds after a warm-up call (compilation excluded)."""
    return interleaved({"f": fn}, rounds=rounds)["f"]


class HostLoop:
    """The host-loop PF-ODE baseline of the widely used public implementation, re-implemented faithfully: scipy's RK45
    on the host over the flattened batch, one Rademacher Hutchinson probe per point, a device call and a device<->host
    copy at every step. Its drift-and-divergence is jit-compiled once per instance, here, never inside a timed call
    (a warm-up call on the timed shape compiles it for that shape), so timings compare solvers, not compilation.

    ``HostLoop(score, sde, rtol=..., atol=..., t0=...)(x, key)`` returns (log p per point, number of drift calls)."""

    def __init__(self, score, sde, *, rtol: float, atol: float, t0: float):
        import jax.numpy as jnp

        self.sde, self.rtol, self.atol, self.t0 = sde, rtol, atol, t0

        @jax.jit
        def drift_and_div(xs, t, eps):
            def f(z):
                return sde.f(t) * z - 0.5 * sde.g2(t) * jax.vmap(score, in_axes=(0, None))(z, t)

            fx, jv = jax.jvp(f, (xs,), (eps,))
            return fx, jnp.sum(jv * eps, axis=-1)

        self.drift_and_div = drift_and_div

    def __call__(self, x, key):
        import jax.numpy as jnp
        from scipy.integrate import solve_ivp

        n, d = x.shape
        eps = jax.random.rademacher(key, (n, d), dtype=jnp.float32)
        nfe = [0]

        def rhs(t, y):
            nfe[0] += 1
            fx, div = self.drift_and_div(jnp.asarray(y[: n * d].reshape(n, d), jnp.float32), jnp.float32(t), eps)
            return np.concatenate([np.asarray(fx).ravel(), np.asarray(div)])

        y0 = np.concatenate([np.asarray(x).ravel(), np.zeros(n)])
        sol = solve_ivp(rhs, (self.t0, self.sde.T), y0, rtol=self.rtol, atol=self.atol, method="RK45")
        xT = sol.y[: n * d, -1].reshape(n, d)
        return np.asarray(self.sde.prior_log_prob(jnp.asarray(xT))) + sol.y[n * d:, -1], nfe[0]


def random_mlp_score(dim: int, sde, key, hidden: int = 128):
    """The package's score MLP with random (nonzero) output weights: a stand-in network of realistic cost."""

    model = dd.init_model(dim, sde, key=key, hidden=hidden)
    k = model.net.out.kernel
    k.value = 0.1 * jax.random.normal(jax.random.fold_in(key, 1), k.value.shape)
    return model


def results_dir() -> Path:
    """Where the JSON goes: ``$DIFFDENS_BENCH_OUT`` when set (smoke runs must not overwrite the committed results),
    else the package data folder."""
    return Path(os.environ.get("DIFFDENS_BENCH_OUT") or RESULTS)


def write(name: str, payload: dict) -> Path:
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if payload["meta"]["platform"] == "cpu" else payload["meta"]["device"].split()[1].lower() if len(payload["meta"]["device"].split()) > 1 else payload["meta"]["platform"]
    path = out / f"{name}_{tag}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


def table(rows: list[dict], cols: list[str]) -> str:
    w = {c: max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(w[c]) for c in cols)]
    lines += ["  ".join(f"{r.get(c, '')}".rjust(w[c]) for c in cols) for r in rows]
    return "\n".join(lines)


# chapter 3's D=9 call (its data, network, keys and batch size at its full-profile data size), trained 300 epochs:
# longer than chapter 3's full profile (200 epochs, which keep that chapter within its time limit on two CPU cores)
LEARNED_9D = dict(n_data=32768, epochs=300, batch_size=512, data_key=10, key=12)


def learned_9d(n_data: int, epochs: int):
    """A score model learned on the D=9 mixture with chapter 3's call (``notebooks/03_probability_flow.md``: data
    ``standard_mixture("9d").sample(key(10), n)``, ``fit_score(..., key=key(12), batch_size=512)``, VP SDE), at
    ``n_data`` points and ``epochs`` epochs; cached by ``fit_score`` (cache=True), so the estimator and baseline
    benchmarks share one training when their sizes agree. Returns (model, data, history, train seconds)."""
    sde = dd.VPSDE()
    data = dd.standard_mixture("9d").sample(jax.random.key(LEARNED_9D["data_key"]), n_data)
    t = time.perf_counter()
    model, hist = dd.fit_score(data, sde, key=jax.random.key(LEARNED_9D["key"]), epochs=epochs,
                               batch_size=LEARNED_9D["batch_size"], progress=False)
    return model, data, hist, time.perf_counter() - t
