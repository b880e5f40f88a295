"""Time per point and peak memory against the number of points n, for the PF-ODE, the ELBO and the path integral.

D = 9, VP SDE, two scores: the exact score of a Gaussian mixture (``analytic``) and the package's score MLP of width
256 with random weights (``mlp``). Every estimator runs at its defaults except 1024 time samples (ELBO) / throws
(path integral). Each (estimator, score, n) runs in its own subprocess, so its peak memory is that process's
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the baseline of the interpreter with JAX imported and the score built
is recorded too, and the difference reported). Time: the first call's wall time (compilation included) and, where n
is small enough, a second call's (steady state); ``s_per_point`` is the steady-state time where measured, else the
first call's time less the compilation time measured at the smallest n.

    python benchmarks/scaling.py                # CPU sizes -> diffdens/_data/benchmarks/scaling_cpu.json
    python benchmarks/scaling.py --size full    # larger n for the MLP and the PF-ODE (GPU)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import jax
import numpy as np

from common import dd, git_commit, meta, random_mlp_score, size_option, table, write

D = 9
M = 1024  # time samples (ELBO) and throws (path integral)
SIZES = {
    # (estimator, score) -> list of n. The PF-ODE (whose points are not yet chunked on this branch) and
    # the MLP stop earlier on the 2-core CPU to keep the run short (the analytic n = 10^5 runs alone take minutes).
    "quick": {("path_integral", "analytic"): [100, 1000, 2000, 20_000, 100_000],
              ("elbo", "analytic"): [100, 1000, 2000, 20_000, 100_000],
              ("path_integral", "mlp"): [100, 1000],
              ("elbo", "mlp"): [100, 1000],
              ("pf_ode", "analytic"): [100, 1000],
              ("pf_ode", "mlp"): [100]},
    "full": {(e, s): [100, 1000, 2000, 10_000, 20_000, 100_000] for e in ("path_integral", "elbo", "pf_ode")
             for s in ("analytic", "mlp")},
}
STEADY_MAX_N = 1000  # a second (steady-state) call only up to this n


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def one(est: str, kind: str, n: int) -> dict:
    """Run in a subprocess: one estimator on n points; returns times and peak memory."""
    sde = dd.VPSDE()
    mix = dd.random_mixture(jax.random.key(0), 3, D)
    score = mix.diffuse(sde).score if kind == "analytic" else random_mlp_score(D, sde, jax.random.key(1),
                                                                               hidden=256).score
    x = mix.sample(jax.random.key(2), n)
    jax.block_until_ready(x)
    base = _maxrss_mb()
    if est == "path_integral":
        call = lambda: dd.path_integral_log_prob(score, sde, x, key=jax.random.key(3), n_throws=M)  # noqa: E731
    elif est == "elbo":
        call = lambda: dd.elbo(score, sde, x, key=jax.random.key(3), n_times=M)  # noqa: E731
    else:
        call = lambda: dd.ode_log_prob(score, sde, x)  # noqa: E731
    t = time.perf_counter()
    jax.block_until_ready(call().value)
    first = time.perf_counter() - t
    second = None
    if n <= STEADY_MAX_N:
        t = time.perf_counter()
        jax.block_until_ready(call().value)
        second = time.perf_counter() - t
    peak = _maxrss_mb()
    return dict(estimator=est, score=kind, n=n, first_call_s=first, steady_s=second, baseline_mb=base, peak_mb=peak,
                peak_over_baseline_mb=peak - base)


def main():
    ap = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--one", nargs=3, metavar=("EST", "SCORE", "N"))
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one[0], a.one[1], int(a.one[2]))))
        return
    sizes = SIZES["full" if a.size == "full" else "quick"]
    rows = []
    t_start = time.perf_counter()
    for (est, kind), ns in sizes.items():
        compile_s = None
        for n in ns:
            out = subprocess.run([sys.executable, __file__, "--one", est, kind, str(n)], capture_output=True,
                                 text=True)
            if out.returncode != 0:
                rows.append(dict(estimator=est, score=kind, n=n, error=out.stderr.strip().splitlines()[-1]))
                print(rows[-1], flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if r["steady_s"] is not None:
                compile_s = max(r["first_call_s"] - r["steady_s"], 0.0) if compile_s is None else compile_s
                r["s_per_point"] = r["steady_s"] / n
            else:
                r["s_per_point"] = max(r["first_call_s"] - (compile_s or 0.0), 0.0) / n
            rows.append(r)
            print({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
    ratios = {}
    for est in ("path_integral", "elbo"):
        by_n = {r["n"]: r for r in rows if r.get("estimator") == est and r.get("score") == "analytic" and "error" not in r}
        if 2000 in by_n and 20_000 in by_n:
            ratios[f"{est}_peak_20000_over_2000"] = by_n[20_000]["peak_mb"] / by_n[2000]["peak_mb"]
        if 100_000 in by_n:
            ratios[f"{est}_peak_mb_at_100000"] = by_n[100_000]["peak_mb"]
    payload = dict(meta=meta(D=D, m=M, sizes={f"{e}/{s}": ns for (e, s), ns in sizes.items()}, full=a.size == "full", size=a.size),
                   commit=git_commit(), total_s=time.perf_counter() - t_start, ratios=ratios, rows=rows)
    print(table([r for r in rows if "error" not in r],
                ["estimator", "score", "n", "s_per_point", "peak_mb", "peak_over_baseline_mb"]))
    print(json.dumps(ratios, indent=1))
    print("written", write("scaling", payload))


if __name__ == "__main__":
    main()
