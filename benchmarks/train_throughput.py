"""Training throughput of ``fit_score``: optimizer steps/s and network evaluations/s (forward + backward).

    python benchmarks/train_throughput.py                # CPU here -> diffdens/_data/benchmarks/train_throughput_cpu.json
    python benchmarks/train_throughput.py --size full    # on the GPU machine -> diffdens/_data/benchmarks/train_throughput_h100.json

Times the same jit-compiled epoch that ``fit_score`` runs (``diffdens.train.make_epoch``), compilation excluded: the
median over rounds after a warm-up call (``common.timeit``), with its spread.
"""

from __future__ import annotations

import argparse

import jax
import optax
from flax import nnx

from common import dd, meta, size_option, table, timeit, write
from diffdens.train import make_epoch


def main():
    a = size_option(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)).parse_args()
    full = a.size == "full"
    dims = [2, 9, 64]
    batches = [256, 1024, 4096] + ([16384, 65536] if full else [])
    N, n_throws = (65536, 10) if full else (4096, 4)
    sde = dd.VPSDE()
    rows = []
    for D in dims:
        data = dd.random_mixture(jax.random.key(D), 4, D).sample(jax.random.key(0), N)
        model = dd.init_model(D, sde, key=jax.random.key(1))
        graphdef, params, rest = nnx.split(model.net, nnx.Param, ...)
        opt = optax.adam(1e-3)
        for B in batches:
            n_batches = max(1, N * n_throws // B)
            epoch = make_epoch(graphdef, rest, sde, "score", "likelihood_is", 1e-5, opt, data, n_throws, B)
            state = opt.init(params)
            steps, spread = timeit(lambda: epoch(params, state, jax.random.key(2))[2]).rate(n_batches)
            rows.append({"D": D, "batch": B, "steps_per_s": round(steps, 1),
                         "steps_per_s_spread": [round(v, 1) for v in spread], "net_evals_per_s": round(steps * B)})
    payload = {"meta": meta(size=a.size, N=N, n_throws=n_throws, hidden=128, depth=3), "rows": rows}
    print(f"wrote {write('train_throughput', payload)}")
    print(table(rows, ["D", "batch", "steps_per_s", "net_evals_per_s"]))


if __name__ == "__main__":
    main()
