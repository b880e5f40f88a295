"""Cost of sampling *with* the log-density: the augmented reverse SDE (one score evaluation per step, no divergence)
vs the PF-ODE sampler with its exact divergence (``dd.ode_sample``), same network, same number of samples.

    python benchmarks/augmented_speed.py               # CPU here -> diffdens/_data/benchmarks/augmented_speed_cpu.json
    python benchmarks/augmented_speed.py --size full   # on the GPU machine -> diffdens/_data/benchmarks/augmented_speed_h100.json

Timings: medians over interleaved rounds after a warm-up call of each (``common.interleaved``), with their spread;
the ratio per round.
"""

from __future__ import annotations

import argparse

import jax

from common import ROUNDS, dd, interleaved, meta, random_mlp_score, ratio, size_option, table, write


def main():
    a = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args()
    full = a.size == "full"
    sde = dd.VPSDE()
    n = 4096 if full else 128
    n_steps = 1000
    rows = []
    for D in ((2, 9, 50) if full else (2, 9)):
        score = random_mlp_score(D, sde, jax.random.key(D)).score
        tm = interleaved({"aug": lambda: dd.sample_with_log_prob(score, sde, jax.random.key(0), (n, D), n_steps=n_steps).log_prob,
                          "ode": lambda: dd.ode_sample(score, sde, jax.random.key(0), (n, D))[1]})
        nfe = float(dd.ode_sample(score, sde, jax.random.key(0), (n, D))[2].mean())
        (aug, aug_spread), (ode, ode_spread) = tm["aug"].rate(n), tm["ode"].rate(n)
        sp = ratio(tm, "ode", "aug")  # per round: ODE time / augmented time
        rows.append({"D": D, "n": n, "rounds": ROUNDS, "aug_steps": n_steps, "aug_score_evals_per_sample": n_steps,
                     "ode_nfe_per_sample": round(nfe, 1), "ode_jvps_per_sample": round(nfe * D, 1),
                     "aug_samples_per_s": round(aug, 1), "aug_samples_per_s_spread": [round(v, 1) for v in aug_spread],
                     "ode_samples_per_s": round(ode, 1), "ode_samples_per_s_spread": [round(v, 1) for v in ode_spread],
                     "speed_ratio_aug_over_ode": round(sp["median"], 2),
                     "speed_ratio_aug_over_ode_spread": [round(v, 2) for v in sp["spread"]]})
        print(rows[-1], flush=True)
    payload = {"meta": meta(size=a.size, n=n, n_steps=n_steps, sde="VP", rounds=ROUNDS, net="MLP 3x128 random weights", ode="Tsit5 rtol=atol=1e-5, exact divergence"),
               "rows": rows}
    print(f"wrote {write('augmented_speed', payload)}")
    print(table(rows, ["D", "n", "aug_score_evals_per_sample", "ode_nfe_per_sample", "ode_jvps_per_sample",
                       "aug_samples_per_s", "ode_samples_per_s", "speed_ratio_aug_over_ode"]))


if __name__ == "__main__":
    main()
