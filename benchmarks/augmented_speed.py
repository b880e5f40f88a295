"""Cost of sampling *with* the log-density: the augmented reverse SDE (one score evaluation per step, no divergence)
vs the PF-ODE sampler with its exact divergence (``dd.ode_sample``), same network, same number of samples.

    python benchmarks/augmented_speed.py               # CPU here -> diffdens/_data/benchmarks/augmented_speed_cpu.json
    python benchmarks/augmented_speed.py --size full   # on the GPU machine -> diffdens/_data/benchmarks/augmented_speed_h100.json
"""

from __future__ import annotations

import argparse

import jax

from common import dd, meta, random_mlp_score, size_option, table, timeit, write


def main():
    a = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args()
    full = a.size == "full"
    sde = dd.VPSDE()
    n = 4096 if full else 128
    n_steps = 1000
    rows = []
    for D in ((2, 9, 50) if full else (2, 9)):
        score = random_mlp_score(D, sde, jax.random.key(D)).score
        t_aug = timeit(lambda: dd.sample_with_log_prob(score, sde, jax.random.key(0), (n, D), n_steps=n_steps).log_prob, repeats=1)
        t_ode = timeit(lambda: dd.ode_sample(score, sde, jax.random.key(0), (n, D))[1], repeats=1)
        nfe = float(dd.ode_sample(score, sde, jax.random.key(0), (n, D))[2].mean())
        rows.append({"D": D, "n": n, "aug_steps": n_steps, "aug_score_evals_per_sample": n_steps,
                     "ode_nfe_per_sample": round(nfe, 1), "ode_jvps_per_sample": round(nfe * D, 1),
                     "aug_samples_per_s": round(n / t_aug, 1), "ode_samples_per_s": round(n / t_ode, 1),
                     "speed_ratio_aug_over_ode": round(t_ode / t_aug, 2)})
        print(rows[-1], flush=True)
    payload = {"meta": meta(size=a.size, n=n, n_steps=n_steps, sde="VP", net="MLP 3x128 random weights", ode="Tsit5 rtol=atol=1e-5, exact divergence"),
               "rows": rows}
    print(f"wrote {write('augmented_speed', payload)}")
    print(table(rows, ["D", "n", "aug_score_evals_per_sample", "ode_nfe_per_sample", "ode_jvps_per_sample",
                       "aug_samples_per_s", "ode_samples_per_s", "speed_ratio_aug_over_ode"]))


if __name__ == "__main__":
    main()
