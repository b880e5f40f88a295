"""``python -m diffdens evaluate MODEL DATA OUT ...``: :func:`diffdens.evaluate` from the command line.

Single process by default. ``--processes N`` launches N local processes (the launcher starts no JAX backend; each
child is ``python -m diffdens evaluate ... --coordinator 127.0.0.1:PORT --num-processes N --process-id i``; on a machine
with NVIDIA GPUs each child gets its share of them through ``CUDA_VISIBLE_DEVICES``). ``--coordinator``,
``--num-processes`` and ``--process-id`` call ``jax.distributed.initialize`` with them; ``--distributed`` calls it
with none, so that JAX detects them from the cluster environment (SLURM, Open MPI, ...). See
:mod:`diffdens.evaluate` for the files written and a multi-host launch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

from .evaluate import DEFAULT_CHUNK_SIZE, ESTIMATORS  # (importing the package starts no JAX backend)

SOLVE_KEYS = ("rtol", "atol", "max_steps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m diffdens", description="diffdens command line")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser(
        "evaluate", help="evaluate a data set (resumable, multi-process)",
        description="Evaluate a log-density estimator on every item of a data set; writes OUT/results.npz and "
                    "OUT/summary.json, resumes an interrupted run in the same OUT.",
        epilog="Options: -o n_times=32 -o form=dsm (elbo); -o rtol=1e-3 -o atol=1e-3 -o max_steps=2000 (the PF-ODE's "
               "SolveOptions); -o divergence=hutchinson:4 (Hutchinson(n_probes=4)); -o t0=1e-3. Values are read as "
               "JSON where they parse (numbers, true/false, null), else as strings.")
    ev.add_argument("model", help="checkpoint file written by diffdens.save_model")
    ev.add_argument("data", help=".npy array (n, *event_shape) of floats, or of integers with --levels")
    ev.add_argument("out", help="output directory (reuse it to resume)")
    ev.add_argument("--estimator", default="ode_log_prob", choices=tuple(ESTIMATORS))
    ev.add_argument("-o", "--option", action="append", default=[], metavar="NAME=VALUE",
                    help="an estimator option (repeatable)")
    ev.add_argument("--passes", type=int, default=1, help="estimates per item, averaged (default 1)")
    ev.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE,
                    help=f"items per chunk file (default {DEFAULT_CHUNK_SIZE})")
    ev.add_argument("--batch-size", type=int, default=None, help="items per compiled call (default: chunk size)")
    ev.add_argument("--seed", type=int, default=0, help="the PRNG seed (default 0)")
    ev.add_argument("--levels", type=int, default=None, help="discrete levels of integer data (e.g. 256)")
    ev.add_argument("--data-range", type=float, nargs=2, default=(0.0, 1.0), metavar=("A", "B"),
                    help="the interval the levels map to (default 0 1)")
    ev.add_argument("--dequantize", choices=("uniform", "none"), default="uniform",
                    help="uniform dequantization, or none: the estimator takes the integers (default uniform)")
    ev.add_argument("--sde", default=None, help="the SDE as JSON (diffdens.sde.sde_config); default: the checkpoint's")
    ev.add_argument("--trust-code", action="store_true", help="allow a checkpoint's SDE to name code to import")
    ev.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    ev.add_argument("--wait-timeout", type=float, default=None, help="seconds process 0 waits for the others")
    ev.add_argument("--processes", type=int, default=1, help="launch N local processes (default 1)")
    ev.add_argument("--coordinator", default=None, help="jax.distributed coordinator address HOST:PORT")
    ev.add_argument("--num-processes", type=int, default=None, help="jax.distributed process count")
    ev.add_argument("--process-id", type=int, default=None, help="jax.distributed process id")
    ev.add_argument("--distributed", action="store_true",
                    help="jax.distributed.initialize() detecting coordinator, count and id from the cluster")
    return parser


def parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_options(items) -> dict:
    """``NAME=VALUE`` strings -> the estimator's keyword options (SolveOptions, Hutchinson built here)."""
    from .options import Hutchinson, SolveOptions

    raw, solve = {}, {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"error: option {item!r} must read NAME=VALUE")
        value = parse_value(text)
        if name in SOLVE_KEYS:
            solve[name] = value
        elif name == "divergence" and isinstance(value, str) and value.startswith("hutchinson:"):
            raw[name] = Hutchinson(n_probes=int(value.split(":", 1)[1]))
        else:
            raw[name] = value
    if solve:
        raw["solve"] = SolveOptions(**solve)
    return raw


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _local_gpus() -> list:
    """The visible NVIDIA GPUs (CUDA_VISIBLE_DEVICES, else ``nvidia-smi -L``), without importing JAX; none when
    ``JAX_PLATFORMS`` names no GPU platform (e.g. ``cpu``)."""
    platforms = os.environ.get("JAX_PLATFORMS", "").lower()
    if platforms and not any(p in platforms for p in ("cuda", "gpu")):
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU"))]


def launch(argv: list, n: int) -> int:
    """Run ``evaluate`` in ``n`` local processes under one jax.distributed coordinator; stop all if one fails."""
    gpus = _local_gpus()
    if gpus and n > len(gpus):
        raise SystemExit(f"error: --processes {n} exceeds the {len(gpus)} visible GPUs")
    port = _free_port()
    children = []
    for i in range(n):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[i::n])
        cmd = [sys.executable, "-m", "diffdens", *argv, "--coordinator", f"127.0.0.1:{port}",
               "--num-processes", str(n), "--process-id", str(i)]
        children.append(subprocess.Popen(cmd, env=env))
    status = 0
    try:
        while any(c.poll() is None for c in children):
            failed = [c for c in children if c.returncode not in (None, 0)]
            if failed:
                status = failed[0].returncode
                print(f"diffdens evaluate: process {children.index(failed[0])} exited with status {status}; "
                      "stopping the others (run the same command again to resume)", file=sys.stderr)
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        status = 130
    finally:
        for c in children:
            if c.poll() is None:
                c.send_signal(signal.SIGTERM)
        for c in children:
            try:
                c.wait(timeout=30)
            except subprocess.TimeoutExpired:
                c.kill()
                c.wait()
    if status == 0:
        status = next((c.returncode for c in children if c.returncode != 0), 0)
    return 128 - status if status < 0 else status


def _strip_processes(argv: list) -> list:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--processes":
            skip = True
            continue
        if a.startswith("--processes="):
            continue
        out.append(a)
    return out


def run_evaluate(args) -> int:
    import jax

    distributed = bool(args.coordinator or args.num_processes is not None or args.process_id is not None
                       or args.distributed)
    if distributed:
        # Before any JAX computation (importing diffdens runs none). On the CPU, JAX's default collectives (gloo)
        # need no setting: evaluate runs no collective. A finished process waits at JAX's shutdown barrier until
        # process 0 has merged, hence the long shutdown timeout.
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                                   shutdown_timeout_seconds=7 * 24 * 3600)
    import diffdens as dd
    from .sde import sde_from_config

    level = logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format=f"%(asctime)s [p{jax.process_index()}] %(message)s", stream=sys.stderr)
    sde = None if args.sde is None else sde_from_config(json.loads(args.sde), trust_code=args.trust_code)
    try:
        dd.evaluate(args.model, args.data, args.out, sde=sde, estimator=args.estimator,
                    options=parse_options(args.option), key=args.seed, passes=args.passes,
                    chunk_size=args.chunk_size, batch_size=args.batch_size, levels=args.levels,
                    data_range=tuple(args.data_range),
                    dequantize=None if args.dequantize == "none" else args.dequantize,
                    progress=False if args.quiet else None, wait_timeout=args.wait_timeout,
                    trust_code=args.trust_code)
    except (ValueError, FileNotFoundError, TypeError, TimeoutError) as e:
        print(f"diffdens evaluate: error: {e}", file=sys.stderr)
        status = 2
    except BaseException:
        if not distributed:
            raise
        import traceback

        traceback.print_exc()
        status = 1
    else:
        return 0
    if distributed:  # leave without JAX's shutdown barrier, which would wait for the others: they learn of the
        sys.stderr.flush()  # failure from the coordination service (or from the --processes launcher)
        sys.stdout.flush()
        os._exit(status)
    return status


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.command == "evaluate":
        if args.processes < 1:
            raise SystemExit("error: --processes must be >= 1")
        if args.processes > 1:
            if args.coordinator or args.num_processes or args.process_id is not None or args.distributed:
                raise SystemExit("error: --processes launches its own processes; it excludes --coordinator, "
                                 "--num-processes, --process-id and --distributed")
            return launch(_strip_processes(argv), args.processes)
        return run_evaluate(args)
    return 1


if __name__ == "__main__":
    sys.exit(main())
