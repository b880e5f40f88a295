"""Shared helpers for the benchmark scripts: device/version metadata, timing, a random-weight MLP score, JSON output."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import diffdens as dd  # noqa: E402

# Results ship with the package (diffdens/_data/benchmarks, package data) so that the benchmark chapter can read
# them after `pip install`, outside a checkout (importlib.resources).
RESULTS = Path(__file__).resolve().parents[1] / "diffdens" / "_data" / "benchmarks"


def size_option(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--size cpu|full`` to a benchmark's parser: ``cpu`` (the default) is the size of the committed
    ``*_cpu.json``, minutes on a 2-core CPU; ``full`` the GPU size (an H100 runs every benchmark in minutes, a 2-core
    CPU would need hours). ``scripts/full_run.py`` passes it explicitly. ``--full`` is a deprecated alias of
    ``--size full`` (older instructions use it)."""
    ap.add_argument("--size", choices=("cpu", "full"), default="cpu",
                    help="cpu: the size of the committed *_cpu.json (default); full: the GPU size")
    ap.add_argument("--full", dest="size", action="store_const", const="full", help=argparse.SUPPRESS)
    return ap


def meta(**sizes) -> dict:
    import diffrax
    import flax
    import optax

    d = jax.devices()[0]
    return {
        "device": dd.book.device_name(),
        "platform": d.platform,
        "n_devices": jax.device_count(),
        "cpu": platform.processor() or platform.machine(),
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "diffrax": diffrax.__version__,
                     "optax": optax.__version__, "python": platform.python_version()},
        "sizes": sizes,
        "date": time.strftime("%Y-%m-%d"),
    }


def git_commit():
    """The short hash of the checked-out commit, or None."""
    import subprocess
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except Exception:
        return None


def timeit(fn, *, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls after one warm-up call (compilation excluded)."""
    jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return best


def random_mlp_score(dim: int, sde, key, hidden: int = 128):
    """The package's score MLP with random (nonzero) output weights: a stand-in network of realistic cost."""

    model = dd.init_model(dim, sde, key=key, hidden=hidden)
    k = model.net.out.kernel
    k.value = 0.1 * jax.random.normal(jax.random.fold_in(key, 1), k.value.shape)
    return model


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if payload["meta"]["platform"] == "cpu" else payload["meta"]["device"].split()[1].lower() if len(payload["meta"]["device"].split()) > 1 else payload["meta"]["platform"]
    path = RESULTS / f"{name}_{tag}.json"
    path.write_text(json.dumps(payload, indent=1))
    return path


def table(rows: list[dict], cols: list[str]) -> str:
    w = {c: max(len(c), *(len(f"{r.get(c, '')}") for r in rows)) for c in cols}
    lines = ["  ".join(c.rjust(w[c]) for c in cols)]
    lines += ["  ".join(f"{r.get(c, '')}".rjust(w[c]) for c in cols) for r in rows]
    return "\n".join(lines)
