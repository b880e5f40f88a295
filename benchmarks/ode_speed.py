"""PF-ODE likelihood speed: diffdens (diffrax on the device, vmapped, per-point adaptive steps) vs the host-loop
approach of the widely used public implementation (scipy RK45 on the host over the flattened batch, one Hutchinson
probe per point, a device call and a device<->host copy at every step), same score network, same tolerances.

    python benchmarks/ode_speed.py               # CPU here -> diffdens/_data/benchmarks/ode_speed_cpu.json
    python benchmarks/ode_speed.py --size full   # on the GPU machine (adds 10^4 points) -> diffdens/_data/benchmarks/ode_speed_h100.json

Also reports the floor: mean NFE x the time of one batched network evaluation with its divergence.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

from common import dd, meta, random_mlp_score, size_option, table, timeit, write

TOL = 1e-5
T0 = 1e-5


def host_loop_log_prob(score, sde, x, key):
    """Faithful re-implementation of the host-loop baseline: RK45 over the flattened batch, one probe per point."""
    n, d = x.shape
    eps = jax.random.rademacher(key, (n, d), dtype=jnp.float32)

    @jax.jit
    def drift_and_div(xs, t):
        def f(z):
            return sde.f(t) * z - 0.5 * sde.g2(t) * jax.vmap(score, in_axes=(0, None))(z, t)

        fx, jv = jax.jvp(f, (xs,), (eps,))
        return fx, jnp.sum(jv * eps, axis=-1)

    nfe = [0]

    def rhs(t, y):
        nfe[0] += 1
        fx, div = drift_and_div(jnp.asarray(y[: n * d].reshape(n, d), jnp.float32), jnp.float32(t))
        return np.concatenate([np.asarray(fx).ravel(), np.asarray(div)])

    y0 = np.concatenate([np.asarray(x).ravel(), np.zeros(n)])
    sol = solve_ivp(rhs, (T0, sde.T), y0, rtol=TOL, atol=TOL, method="RK45")
    xT = sol.y[: n * d, -1].reshape(n, d)
    return np.asarray(sde.prior_log_prob(jnp.asarray(xT))) + sol.y[n * d:, -1], nfe[0]


def main():
    a = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args()
    full = a.size == "full"
    sde = dd.VPSDE()
    batches = [1, 100, 1000] + ([10000] if full else [])
    rows = []
    for D in (2, 9, 50, 100):
        model = random_mlp_score(D, sde, jax.random.key(D))
        score = model.score
        for n in batches:
            x = jax.random.normal(jax.random.key(n), (n, D))
            row = {"D": D, "n": n}
            for div in ("hutchinson", "exact"):
                f = lambda: dd.ode_log_prob(score, sde, x, key=jax.random.key(0), divergence=div, solve=dd.SolveOptions(rtol=TOL, atol=TOL), t0=T0).value
                sec = timeit(f, repeats=2)
                est = dd.ode_log_prob(score, sde, x, key=jax.random.key(0), divergence=div, solve=dd.SolveOptions(rtol=TOL, atol=TOL), t0=T0)
                row[f"pts_per_s_{div}"] = round(n / sec, 1)
                row[f"mean_nfe_{div}"] = round(float(est.nfe.mean()), 1)
            # floor: mean NFE x one batched score + Hutchinson divergence evaluation
            probes = jax.random.rademacher(jax.random.key(1), (n, D), dtype=jnp.float32)
            one = jax.jit(lambda x: jax.vmap(lambda z, v: dd.value_and_divergence(lambda y: score(y, 0.5), z, v[None]))(x, probes))
            row["floor_pts_per_s_hutchinson"] = round(n / (timeit(lambda: one(x), repeats=5) * row["mean_nfe_hutchinson"]), 1)
            if n <= 100 and not (D == 100 and n == 100 and not full):
                host_loop_log_prob(score, sde, x[:1], jax.random.key(2))  # compile
                t = time.perf_counter()
                _, nfe = host_loop_log_prob(score, sde, x, jax.random.key(2))
                row["pts_per_s_host_loop"] = round(n / (time.perf_counter() - t), 1)
                row["nfe_host_loop"] = nfe
                row["speedup_vs_host_loop"] = round(row["pts_per_s_hutchinson"] / row["pts_per_s_host_loop"], 2)
            rows.append(row)
            print(row, flush=True)
    payload = {"meta": meta(size=a.size, tol=TOL, t0=T0, sde="VP", net="MLP 3x128 random weights"), "rows": rows}
    print(f"wrote {write('ode_speed', payload)}")
    print(table(rows, ["D", "n", "pts_per_s_hutchinson", "mean_nfe_hutchinson", "pts_per_s_exact", "floor_pts_per_s_hutchinson",
                       "pts_per_s_host_loop", "speedup_vs_host_loop"]))


if __name__ == "__main__":
    main()
