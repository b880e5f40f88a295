"""Per-call overhead of the PF-ODE likelihood: diffdens's ``ode_log_prob`` against the host-loop approach of the widely
used public implementation (scipy RK45 on the host over the flattened batch, one Hutchinson probe per point), on the
same score network at the same tolerances, at n = 1, 100 and 1000 points.

Two measurements, each in interleaved rounds (the two implementations alternate in every round, so drifting machine
load hits both alike); the JSON keeps every round and reports the median and the range:

* warm: a repeated call in one process (diffdens's front door traces nothing on a repeated call; the baseline's
  jitted drift is built once, outside the timed call, so neither side pays compilation);
* fresh: a new Python process's first call (import excluded, compilation included), one process per round.

    python benchmarks/front_door.py               # -> diffdens/_data/benchmarks/front_door_cpu.json
    python benchmarks/front_door.py --size full   # more rounds (GPU machine)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from common import HostLoop, dd, meta, random_mlp_score, size_option, write

TOL, T0, D = 1e-5, 1e-5, 9


def setup(n):
    sde = dd.VPSDE()
    model = random_mlp_score(D, sde, jax.random.key(D))
    x = jax.random.normal(jax.random.key(n), (n, D))
    opts = dd.SolveOptions(rtol=TOL, atol=TOL)
    ours = lambda: jax.block_until_ready(dd.ode_log_prob(model.score, sde, x, key=jax.random.key(0),  # noqa: E731
                                                         divergence=dd.Hutchinson(1), solve=opts, t0=T0).value)
    loop = HostLoop(model.score, sde, rtol=TOL, atol=TOL, t0=T0)
    theirs = lambda: loop(x, jax.random.key(0))[0]  # noqa: E731
    return {"diffdens": ours, "host_loop": theirs}


def fresh_call(which: str, n: int) -> float:
    """Seconds of the first call in a new process (import and set-up excluded)."""
    code = (f"import sys, time; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
            f"import front_door as b; fns = b.setup({n}); t = time.perf_counter(); fns[{which!r}](); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def summary(xs):
    xs = np.asarray(xs)
    return {"median": float(np.median(xs)), "min": float(xs.min()), "max": float(xs.max()), "rounds": xs.tolist()}


def main():
    a = size_option(argparse.ArgumentParser(description=__doc__,
                                            formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args()
    warm_rounds, fresh_rounds = (15, 7) if a.size == "full" else (7, 5)
    rows = []
    for n in (1, 100, 1000):
        fns = setup(n)
        for f in fns.values():
            f()  # compile
        warm = {k: [] for k in fns}
        for r in range(warm_rounds):
            for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                t = time.perf_counter()
                fns[k]()
                warm[k].append(time.perf_counter() - t)
        fresh = {k: [] for k in fns}
        for r in range(fresh_rounds):
            for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
                fresh[k].append(fresh_call(k, n))
        row = {"n": n, "warm_s": {k: summary(v) for k, v in warm.items()},
               "fresh_first_call_s": {k: summary(v) for k, v in fresh.items()}}
        row["warm_speedup_median"] = row["warm_s"]["host_loop"]["median"] / row["warm_s"]["diffdens"]["median"]
        row["fresh_speedup_median"] = (row["fresh_first_call_s"]["host_loop"]["median"]
                                       / row["fresh_first_call_s"]["diffdens"]["median"])
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if "speedup" in k or k == "n"}), flush=True)
    payload = {"meta": meta(size=a.size, tol=TOL, t0=T0, D=D, warm_rounds=warm_rounds, fresh_rounds=fresh_rounds,
                            sde="VP", net="MLP 3x128 random weights"), "rows": rows}
    print(f"wrote {write('front_door', payload)}")


if __name__ == "__main__":
    main()
