"""What the eps correction costs the ELBO (issue 14, item 5: at most 10% of the ELBO's time at the defaults).

``dd.elbo`` at its defaults (DSM, 1000 importance-sampled times, 32 correction draws) with and without
``eps_correction``, same points and key, D = 9, on the exact mixture score and the package's score MLP (width 256,
random weights), and with one correction draw per time sample (``n_correction=1000``, the cost before). Ratios
within one run, per interleaved round; compilation excluded (``common.interleaved``: medians over rounds after
a warm-up call of each, with their spread).

    python benchmarks/elbo_eps_correction.py     -> diffdens/_data/benchmarks/elbo_eps_correction_<device>.json

One size: ``--size cpu`` (the default) and ``--size full`` run the same problem (accepted for a uniform interface).
"""

from __future__ import annotations

import argparse

import jax

from common import ROUNDS, dd, git_commit, interleaved, meta, random_mlp_score, ratio, size_option, table, write

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
        # interleaved rounds, each config warmed first: the load of other processes falls on all alike
        tm = interleaved({c: (lambda kw=kw: dd.elbo(score, sde, x, key=jax.random.key(2), **kw).value)
                          for c, kw in configs.items()})
        t = {c: tm[c].median for c in configs}
        # the fraction per round, 1 - without / with, from the per-round time ratio
        frac = {c: ratio(tm, "without", c) for c in ("with", "with_n_correction_1000")}
        rows.append(dict(score=name, n=N, D=D, rounds=ROUNDS, s_without=t["without"], s_with=t["with"],
                         s_with_n_correction_1000=t["with_n_correction_1000"],
                         s_spread={c: tm[c].spread() for c in configs},
                         correction_fraction=1 - frac["with"]["median"],
                         correction_fraction_spread=[1 - v for v in frac["with"]["spread"][::-1]],
                         correction_fraction_n_correction_1000=1 - frac["with_n_correction_1000"]["median"],
                         correction_fraction_n_correction_1000_spread=[
                             1 - v for v in frac["with_n_correction_1000"]["spread"][::-1]]))
        print(rows[-1], flush=True)
    print(table(rows, ["score", "s_without", "s_with", "correction_fraction", "correction_fraction_n_correction_1000"]))
    print("written", write("elbo_eps_correction", dict(meta=meta(D=D, n=N, n_times=1000, n_correction=32),
                                                        commit=git_commit(), rows=rows)))


if __name__ == "__main__":
    main()
