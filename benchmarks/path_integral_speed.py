"""Throughput of the path-integral estimator (throws/s) and its ratio to the bare forward pass of the same MLP.

Both numbers come from the same run on the same device: the estimator's cost per throw is one network forward pass
plus the Gaussian kernel and its random draws, so the ratio (target >= 0.6 on an H100) measures the estimator's overhead.
Both are timed in interleaved rounds after a warm-up call of each (``common.interleaved``); the ratio is the median of
the per-round ratios, with its spread.

CPU (small):  PYTHONPATH=. python benchmarks/path_integral_speed.py               (the default: --size cpu)
H100 rows:    PYTHONPATH=. python benchmarks/path_integral_speed.py --size full
Writes diffdens/_data/benchmarks/path_integral_speed_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diffdens as dd  # noqa: E402
from common import ROUNDS, interleaved, ratio, results_dir, size_option  # noqa: E402

CHUNK = 8192


def plain_mlp(dim, hidden, depth, key):
    """A plain jnp MLP score(x, t) with fixed random weights (the bare network whose forward pass we compare to)."""
    sizes = [dim + 1] + [hidden] * depth + [dim]
    ks = jax.random.split(key, len(sizes) - 1)
    params = [(jax.random.normal(k, (a, b)) / jnp.sqrt(a), jnp.zeros(b)) for k, a, b in zip(ks, sizes[:-1], sizes[1:])]

    def score(x, t):
        h = jnp.concatenate([x, jnp.reshape(t, (1,))], -1)
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i < len(params) - 1:
                h = jax.nn.silu(h)
        return h

    return score


def main():
    a = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args()
    small = a.size == "cpu"
    dims = [2, 9] if small else [2, 9, 32, 128]
    n_points = 4 if small else 100
    n_throws = 16_384 if small else 98_304
    hidden, depth = 128, 3
    sde = dd.VPSDE()
    rows = []
    for D in dims:
        score = plain_mlp(D, hidden, depth, jax.random.key(D))
        x = jax.random.normal(jax.random.key(1), (n_points, D))
        # the estimator compiles once per architecture (the score is traced); repeated calls reuse the compilation
        def pi(x, key):
            return dd.path_integral_log_prob(score, sde, x, key=key, n_throws=n_throws, chunk_size=CHUNK).value

        # bare forward: the same number of (point, time) evaluations, in the same chunks
        m = n_points * n_throws
        xs = jax.random.normal(jax.random.key(3), (m // CHUNK, CHUNK, D))
        ts = jax.random.uniform(jax.random.key(4), (m // CHUNK, CHUNK))
        fwd = jax.jit(lambda xs, ts: jnp.sum(jax.lax.map(lambda c: jax.vmap(score)(*c), (xs, ts))))
        # interleaved rounds after a warm-up of each: the ratio per round, under the same load
        tm = interleaved({"pi": lambda: pi(x, jax.random.key(2)), "fwd": lambda: fwd(xs, ts)})
        r = ratio(tm, "fwd", "pi")
        (thr, thr_spread), (fw, fw_spread) = tm["pi"].rate(m), tm["fwd"].rate(m)
        rows.append(dict(D=D, n_points=n_points, n_throws=n_throws, rounds=ROUNDS, throws_per_s=thr,
                         throws_per_s_spread=thr_spread, forward_per_s=fw, forward_per_s_spread=fw_spread,
                         ratio=r["median"], ratio_spread=r["spread"]))
        print(rows[-1], flush=True)
    d = jax.devices()[0]
    tag = "cpu" if d.platform == "cpu" else (getattr(d, "device_kind", d.platform).split() + [d.platform])[1].lower()
    payload = dict(meta=dict(device=dd.book.device_name(), platform=d.platform, jax=jax.__version__,
                             python=platform.python_version(), date=time.strftime("%Y-%m-%d"),
                             sizes=dict(hidden=hidden, depth=depth, small=small, size=a.size)), rows=rows)
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"path_integral_speed_{tag}.json").write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
