"""What the eps correction costs the ELBO (issue 14, item 5: at most 10% of the ELBO's time at the defaults).

``dd.elbo`` at its defaults (DSM, 1000 importance-sampled times, 32 correction draws) with and without
``eps_correction``, same points and key, D = 9, on the exact mixture score and the package's score MLP (width 256,
random weights), and with one correction draw per time sample (``n_correction=1000``, the cost before). Ratios
within one run; compilation excluded (``common.timeit``: best of 3 after a warm-up).

    python benchmarks/elbo_eps_correction.py     -> diffdens/_data/benchmarks/elbo_eps_correction_<device>.json

One size: ``--size cpu`` (the default) and ``--size full`` run the same problem (accepted for a uniform interface).
"""

from __future__ import annotations

import argparse

import jax

from common import dd, git_commit, meta, random_mlp_score, size_option, table, timeit, write

D, N = 9, 256


def main():
    size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args()
    sde = dd.VPSDE()
    mix = dd.standard_mixture("9d")
    x = mix.sample(jax.random.key(0), N)
    scores = {"analytic": mix.diffuse(sde).score,
              "mlp": random_mlp_score(D, sde, jax.random.key(1), hidden=256).score}
    rows = []
    configs = {"without": dict(eps_correction=False), "with": dict(),
               "with_n_correction_1000": dict(n_correction=1000)}  # the last: one draw per time sample (before)
    for name, score in scores.items():
        t = {c: float("inf") for c in configs}
        for _ in range(3):  # interleaved rounds, best of each: robust to load from other processes
            for c, kw in configs.items():
                t[c] = min(t[c], timeit(lambda: dd.elbo(score, sde, x, key=jax.random.key(2), **kw).value))
        rows.append(dict(score=name, n=N, D=D, s_without=t["without"], s_with=t["with"],
                         s_with_n_correction_1000=t["with_n_correction_1000"],
                         correction_fraction=(t["with"] - t["without"]) / t["with"],
                         correction_fraction_n_correction_1000=(t["with_n_correction_1000"] - t["without"])
                         / t["with_n_correction_1000"]))
        print(rows[-1], flush=True)
    print(table(rows, ["score", "s_without", "s_with", "correction_fraction", "correction_fraction_n_correction_1000"]))
    print("written", write("elbo_eps_correction", dict(meta=meta(D=D, n=N, n_times=1000, n_correction=32),
                                                        commit=git_commit(), rows=rows)))


if __name__ == "__main__":
    main()
