"""PF-ODE likelihood speed: diffdens (diffrax on the device, vmapped, per-point adaptive steps) vs the host-loop
approach of the widely used public implementation (scipy RK45 on the host over the flattened batch, one Hutchinson
probe per point, a device call and a device<->host copy at every step), same score network, same tolerances.

    python benchmarks/ode_speed.py               # CPU here -> diffdens/_data/benchmarks/ode_speed_cpu.json
    python benchmarks/ode_speed.py --size full   # on the GPU machine (adds 10^4 points) -> diffdens/_data/benchmarks/ode_speed_h100.json

Also reports the floor: mean NFE x the time of one batched network evaluation with its divergence. Every timing is
the median over interleaved rounds (``common.interleaved``: each function warmed and compiled first, the baseline's
drift included) with its spread; the speedup is the per-round ratio. ``--dims`` / ``--batches`` run a subset (smoke
tests).
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from common import ROUNDS, HostLoop, dd, interleaved, meta, random_mlp_score, ratio, size_option, table, write

TOL = 1e-5
T0 = 1e-5


def main():
    a = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    a.add_argument("--dims", type=int, nargs="+", default=[2, 9, 50, 100], help="dimensions (default 2 9 50 100)")
    a.add_argument("--batches", type=int, nargs="+", help="numbers of points (default 1 100 1000, and 10^4 at full)")
    a = a.parse_args()
    full = a.size == "full"
    sde = dd.VPSDE()
    solve = dd.SolveOptions(rtol=TOL, atol=TOL)
    batches = a.batches or [1, 100, 1000] + ([10000] if full else [])
    rows = []
    for D in a.dims:
        model = random_mlp_score(D, sde, jax.random.key(D))
        score = model.score
        host = HostLoop(score, sde, rtol=TOL, atol=TOL, t0=T0)  # its drift jitted once, outside any timed call
        for n in batches:
            x = jax.random.normal(jax.random.key(n), (n, D))
            row = {"D": D, "n": n, "rounds": ROUNDS}
            run = {div: (lambda div=div: dd.ode_log_prob(score, sde, x, key=jax.random.key(0), divergence=div,
                                                         solve=solve, t0=T0)) for div in ("hutchinson", "exact")}
            fns = {div: (lambda f=f: f().value) for div, f in run.items()}
            # floor: mean NFE x one batched score + Hutchinson divergence evaluation
            probes = jax.random.rademacher(jax.random.key(1), (n, D), dtype=jnp.float32)
            one = jax.jit(lambda x: jax.vmap(lambda z, v: dd.value_and_divergence(lambda y: score(y, 0.5), z, v[None]))(x, probes))
            fns["floor_eval"] = lambda: one(x)
            with_host = n <= 100 and not (D == 100 and n == 100 and not full)
            if with_host:
                fns["host_loop"] = lambda: host(x, jax.random.key(2))[0]
            tm = interleaved(fns)  # every one warmed (compiled) first, then ROUNDS interleaved rounds
            for div, f in run.items():
                row[f"pts_per_s_{div}"], row[f"pts_per_s_{div}_spread"] = tm[div].rate(n)
                row[f"mean_nfe_{div}"] = round(float(f().nfe.mean()), 1)
            nfe = row["mean_nfe_hutchinson"]
            row["floor_pts_per_s_hutchinson"], row["floor_pts_per_s_hutchinson_spread"] = tm["floor_eval"].rate(n / nfe)
            if with_host:
                row["pts_per_s_host_loop"], row["pts_per_s_host_loop_spread"] = tm["host_loop"].rate(n)
                row["nfe_host_loop"] = host(x, jax.random.key(2))[1]
                sp = ratio(tm, "host_loop", "hutchinson")  # per round: host-loop time / diffdens time
                row["speedup_vs_host_loop"], row["speedup_vs_host_loop_spread"] = sp["median"], sp["spread"]
            rows.append(_rounded(row))
            print(rows[-1], flush=True)
    payload = {"meta": meta(size=a.size, tol=TOL, t0=T0, sde="VP", net="MLP 3x128 random weights", rounds=ROUNDS,
                            timing="median over interleaved rounds after a warm-up call of each; spread [min, max]"),
               "rows": rows}
    print(f"wrote {write('ode_speed', payload)}")
    print(table(rows, ["D", "n", "pts_per_s_hutchinson", "mean_nfe_hutchinson", "pts_per_s_exact", "floor_pts_per_s_hutchinson",
                       "pts_per_s_host_loop", "speedup_vs_host_loop"]))


def _rounded(row: dict) -> dict:
    r = lambda v: round(v, 2) if isinstance(v, float) else v  # noqa: E731
    return {k: ([r(u) for u in v] if isinstance(v, list) else r(v)) for k, v in row.items()}


if __name__ == "__main__":
    main()
