"""Evaluate a data set: a resumable, multi-process job that writes one log-density estimate per item.

The reference implementations evaluate a test set by hand: score_flow (Song et al. 2021b) saves bits/dim per batch so
that an interrupted run resumes, score_sde (Song et al. 2021a) and VDM shard the batch over devices. :func:`evaluate`
is that job for any diffdens estimator (``ode_log_prob``, ``elbo``, ``path_integral_log_prob``, or a callable with
the estimator contract), on a score from a checkpoint (:func:`diffdens.save_model`) or any score callable.

Items and randomness. The data (n, *event_shape) are cut into chunks of ``chunk_size`` items (chunk c holds items
c * chunk_size, ...), each computed in compiled batches of ``batch_size`` items. Item i's randomness in pass p is
``k = fold_in(fold_in(key, i), p)``, split into ``(k_dequantize, k_estimator) = jax.random.split(k)``, and the
estimator sees the item alone: item i's value is exactly ``estimator(score, sde, y_i[None], key=k_estimator,
**options).value[0]`` (vmapped over the batch), so it does not depend on the chunking, on resumption, or on the
number of processes or devices (bit for bit on one kind of device for a fixed ``batch_size``; up to float rounding
otherwise). With ``passes`` P > 1 an item's value is the mean of its P passes and its stderr their standard deviation
over sqrt(P) (which includes the dequantization noise); with P = 1 it is the estimator's own stderr (NaN where the
estimator reports none, e.g. the PF-ODE with the exact divergence). ``nfe`` is summed over passes (NaN where the
estimator does not count it).

Discrete data (Song et al. 2021b, Sec. 5.2, eq. 13). With ``levels``, integer data k in {0, ..., levels - 1} are
dequantized per pass (``dequantize="uniform"``: :func:`diffdens.uniform_dequantize`) and the bits per dimension
are :func:`diffdens.bits_per_dim` of each pass's value. ``dequantize`` may instead be a callable
``dequantize(key, k) -> (y, log_q)`` on a batch (1, *event_shape) returning the continuous points and log q(y | k)
(1,), with bits/dim -(log p(y) - log q(y | k)) / (D log 2) (a variational dequantization), or None: the estimator
takes the integers itself and returns the discrete log P(k) (a discrete-data estimator).

Resumable and exact. The output directory holds ``config.json`` (the full configuration and its sha256: model
checkpoint digest or score fingerprint, SDE, data digest, estimator and options, key, passes, chunk size, levels)
and ``chunks/chunk_NNNNNN.bin``, each written atomically (:func:`diffdens.checkpoint.atomic_write`: write, fsync,
rename) as a magic tag, the sha256 of its payload and the payload (an ``.npz`` of the chunk's arrays with the
configuration hash). Running the same job again continues where it stopped: valid chunks are read, never
recomputed; a corrupted or truncated chunk is detected by its checksum and recomputed; a changed configuration
raises ``ValueError`` naming what changed. When every chunk exists, process 0 writes ``results.npz`` (``index``,
``value``, ``stderr``, ``nfe``, and ``bits_per_dim`` with levels) and ``summary.json`` (mean with its standard error
over items and the Monte Carlo one, median with a bootstrap 95% interval, counts, library versions, devices, the
full configuration, wall time), both atomically.

Many processes and hosts. Under JAX's distributed runtime (``jax.distributed.initialize``, called by
``python -m diffdens evaluate`` from ``--coordinator/--num-processes/--process-id``, or ``--distributed`` to detect
them from the cluster environment as JAX does, e.g. SLURM or Open MPI), process p of P computes the chunks c with
c % P == p, each batch over its *local* devices through :func:`diffdens.shard_points`; no collective runs inside a
solve, so no process waits on another's adaptive solver. The processes share the output directory (a shared file
system across hosts); process 0 merges once every chunk file exists. A multi-host launch, e.g. with SLURM (one task
per host, or per GPU)::

    srun --ntasks 4 python -m diffdens evaluate model.ckpt test.npy out/ --levels 256 --distributed

or by hand on each host h of H: ``python -m diffdens evaluate ... --coordinator HOST0:12345 --num-processes H
--process-id h``. ``--processes N`` launches N such processes on one machine (on GPUs, one share of the visible
GPUs each). If a process dies, the others stop or wait; run the same command again to resume.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import math
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_positive_int, check_real, check_t0
from ._engine import front_door, probe_times, score_sde, traced_score
from .checkpoint import atomic_write, library_versions, load_model, model_config
from .data import bits_per_dim, uniform_dequantize
from .elbo import elbo
from .nets import ScoreModel
from .ode import ode_log_prob
from .parallel import shard_points
from .path_integral import path_integral_log_prob
from .progress import progress_bar, redirect_logging
from .sde import LinearSDE, check_sde, sde_config

ESTIMATORS = {"ode_log_prob": ode_log_prob, "elbo": elbo, "path_integral_log_prob": path_integral_log_prob}
RESERVED_OPTIONS = ("score", "sde", "x", "key", "batch_size")  # set by evaluate itself
CHUNK_MAGIC = b"DIFFDENS-EVAL1\n"
KILL_AFTER_ENV = "DIFFDENS_EVALUATE_KILL_AFTER"  # testing hook: SIGKILL this process after writing that many chunks
DEFAULT_CHUNK_SIZE = 256
CHECK_ROWS = 65_536  # rows of the data checked / hashed at a time (a memory-mapped .npy is streamed)
N_BOOTSTRAP = 2000

logger = logging.getLogger("diffdens.evaluate")


class Evaluation(NamedTuple):
    """:func:`evaluate`'s result (on process 0; the arrays are those of ``results.npz``).

    Fields:
        index: (n,) the item indices, 0 ... n - 1.
        value: (n,) the estimate per item (the mean over passes).
        stderr: (n,) its standard error (see :mod:`diffdens.evaluate`).
        nfe: (n,) score evaluations per item, summed over passes (NaN where the estimator does not count them).
        bits_per_dim: (n,) bits per dimension (with ``levels``), or None.
        summary: the dict written to ``summary.json``.
        out_dir: the output directory (``pathlib.Path``).
    """

    index: np.ndarray
    value: np.ndarray
    stderr: np.ndarray
    nfe: np.ndarray
    bits_per_dim: Optional[np.ndarray]
    summary: dict
    out_dir: Path


# --- inputs ---------------------------------------------------------------------------------------------------------


def _load_data(data):
    """(array (n, *event_shape) - possibly a read-only memory map, description of its source)."""
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"data file {path} does not exist")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"data file {path} is not a readable .npy array ({type(e).__name__}: {e})") from e
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"data file {path} must hold one array (.npy), not an archive of several")
        return arr, str(path.resolve())
    if isinstance(data, (np.ndarray, jax.Array)) or hasattr(data, "__array__"):
        return np.asarray(data), "array"
    if isinstance(data, (list, tuple)) or hasattr(data, "__iter__"):
        parts = [np.asarray(a) for a in data]
        if not parts:
            raise ValueError("data must hold at least one item, got an empty iterable")
        try:
            return np.concatenate(parts, axis=0), "arrays"
        except ValueError as e:
            raise ValueError(f"data: the arrays do not stack into (n, *event_shape) ({e})") from e
    raise TypeError(f"data must be an array, an iterable of arrays or a .npy path, got {type(data).__name__}")


def _bad_rows(arr, bad_of_block) -> list:
    """Indices of the rows for which ``bad_of_block(rows) -> (rows,) bool`` holds, streaming the data."""
    out = []
    for lo in range(0, arr.shape[0], CHECK_ROWS):
        block = np.asarray(arr[lo: lo + CHECK_ROWS])
        out.extend((lo + np.flatnonzero(bad_of_block(block.reshape(block.shape[0], -1)))).tolist())
        if len(out) > 10:
            break
    return out


def _rows(rows: list) -> str:
    return ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")


def _check_data(arr, levels):
    if arr.ndim < 2 or arr.shape[0] < 1 or any(s < 1 for s in arr.shape[1:]):
        raise ValueError(f"data must have shape (n, *event_shape) with n >= 1, e.g. (n, D), got shape {arr.shape}")
    kind = arr.dtype.kind
    if kind not in "biuf":
        raise ValueError(f"data must hold real numbers or integers, got dtype {arr.dtype}")
    if levels is None:
        if kind in "biu":
            raise ValueError(f"data holds integers (dtype {arr.dtype}): pass levels (the number of discrete values, "
                             "e.g. 256 for 8-bit images) to dequantize them and report bits/dim, or pass floats")
        bad = _bad_rows(arr, lambda b: ~np.isfinite(b).all(axis=1))
        if bad:
            raise ValueError(f"data has non-finite values (NaN or inf) in rows {_rows(bad)}")
        return
    if kind not in "iu":
        raise ValueError(f"with levels the data must hold integers in {{0, ..., levels - 1}}, got dtype {arr.dtype}")
    bad = _bad_rows(arr, lambda b: ((b < 0) | (b >= levels)).any(axis=1))
    if bad:
        raise ValueError(f"data has values outside {{0, ..., {levels - 1}}} (levels={levels}) in rows {_rows(bad)}")


def _digest_array(arr) -> str:
    h = hashlib.sha256(json.dumps([list(arr.shape), arr.dtype.str]).encode())
    for lo in range(0, arr.shape[0], CHECK_ROWS):
        h.update(np.ascontiguousarray(arr[lo: lo + CHECK_ROWS]).tobytes())
    return h.hexdigest()


def _digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]+")


def _fingerprint(tree) -> str:
    """sha256 of a pytree's structure (memory addresses stripped) and of every leaf (array bytes, or repr)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    h = hashlib.sha256(_ADDRESS.sub("", str(treedef)).encode())
    for leaf in leaves:
        if isinstance(leaf, (jax.Array, np.ndarray, np.generic)) and not jax.dtypes.issubdtype(
                getattr(leaf, "dtype", None), jax.dtypes.prng_key):
            a = np.asarray(leaf)
            h.update(json.dumps([list(a.shape), a.dtype.str]).encode() + np.ascontiguousarray(a).tobytes())
        else:
            h.update(_ADDRESS.sub("", repr(leaf)).encode())
    return h.hexdigest()


def _resolve_model(model, sde, trust_code):
    """(score, sde, description for the configuration)."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"model checkpoint {path} does not exist")
        m = load_model(path, sde=sde, trust_code=trust_code)  # ValueError: corrupt, foreign, or another SDE
        return m.score, m.sde, {"checkpoint_sha256": _digest_file(path), "config": model_config(m)}
    if sde is not None:
        check_sde(sde)
    if isinstance(model, ScoreModel):
        sde = model.sde if sde is None else sde
        return model.score, sde, {"config": model_config(model), "state": _fingerprint(model)}
    if not callable(model):
        raise TypeError(f"model must be a checkpoint path, a ScoreModel or a score callable, got "
                        f"{type(model).__name__}")
    if sde is None:
        sde = score_sde(model)
        if sde is None:
            raise ValueError("sde: a score callable carries no SDE; pass the SDE it was trained for (sde=...)")
    name = f"{getattr(model, '__module__', '?')}:{getattr(model, '__qualname__', type(model).__qualname__)}"
    return model, sde, {"score": name, "fingerprint": _fingerprint(traced_score(model, "model"))}


def _probe_model(score, sde, first, est_fn, options, levels, data_range, dequantize):
    """The estimators' front door on the first item (as the estimator will see it, the bin centre for integer
    data): the score carries no other SDE, takes the data's event shape, and is finite at the probe times on
    [t0, T] (one small compiled call), each a ValueError naming the model or the data."""
    first = np.asarray(first, np.float64)
    if levels is not None and dequantize == "uniform":
        first = data_range[0] + (first + 0.5) * (data_range[1] - data_range[0]) / levels
    t0 = options.get("t0", getattr(_parameters(est_fn).get("t0"), "default", None))
    t0 = check_t0(t0, sde.T, "t0") if isinstance(t0, (int, float)) and not isinstance(t0, bool) else None
    probe = t0 is not None and (levels is None or dequantize == "uniform")
    front_door(score, sde, first, times=probe_times(sde, t0) if probe else None, score_name="model", x_name="data")


def _parameters(fn) -> dict:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def _jsonable(obj):
    """A JSON-able, address-free description of an option value (for the configuration and its hash)."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in sorted(obj.items())}
    if isinstance(obj, (np.generic, np.ndarray, jax.Array)) and not jax.dtypes.issubdtype(obj.dtype,
                                                                                           jax.dtypes.prng_key):
        a = np.asarray(obj)
        return a.item() if a.ndim == 0 else {"array": list(a.shape), "sha256": _fingerprint(a)}
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {type(obj).__name__: {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, LinearSDE):
        return _sde_description(obj)
    if callable(obj) and hasattr(obj, "__qualname__"):
        return {"callable": f"{getattr(obj, '__module__', '?')}:{obj.__qualname__}",
                "fingerprint": _fingerprint(traced_score(obj))}
    return _ADDRESS.sub("", repr(obj))


def _sde_description(sde):
    try:
        return json.loads(json.dumps(sde_config(sde)))
    except (ValueError, TypeError):
        return _ADDRESS.sub("", repr(sde))


def _key_data(key):
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        key = jax.random.key(int(key))
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(f"key must be an int seed or a PRNG key, got {type(key).__name__}")
    if not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.dtype != np.uint32 or key.ndim != 1:
            raise ValueError(f"key must be an int seed or one PRNG key, got an array of dtype {key.dtype}")
        key = jax.random.wrap_key_data(jnp.asarray(key))
    if key.shape != ():
        raise ValueError(f"key must be one PRNG key, got a key array of shape {key.shape}")
    return key, {"impl": str(jax.random.key_impl(key)), "data": np.asarray(jax.random.key_data(key)).tolist()}


def _check_options(estimator, options) -> dict:
    options = dict(options or {})
    params = _parameters(estimator)
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    for name in options:
        if name in RESERVED_OPTIONS:
            raise ValueError(f"options: {name!r} is set by evaluate itself (key: pass key=; batch_size: the items "
                             "per compiled call, pass batch_size=)")
        if params and not var_kw and name not in params:
            known = [p for p in params if p not in RESERVED_OPTIONS]
            raise ValueError(f"options: the estimator {getattr(estimator, '__name__', estimator)} has no option "
                             f"{name!r}; its options are {known}")
    return options


def _prepare_out_dir(out_dir) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir {out} exists and is not a directory")
    try:
        (out / "chunks").mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out / "chunks", prefix=".probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"out_dir {out} is not writable ({type(e).__name__}: {e})") from e
    return out


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _changes(old: dict, new: dict) -> str:
    a, b = _flatten(old), _flatten(new)
    diffs = [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(a.keys() | b.keys())
             if a.get(k, "(absent)") != b.get(k, "(absent)")]
    shown = [d if len(d) < 200 else d[:197] + "..." for d in diffs[:8]]
    return "; ".join(shown) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")


def config_hash(config: dict) -> str:
    """sha256 of a job's configuration (JSON with sorted keys).

    Arguments:
        config: the ``"config"`` dict of ``config.json`` / ``summary.json``.

    Returns:
        the hex digest stored in ``config.json`` and in every chunk file.
    """
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _claim_config(out: Path, config: dict) -> str:
    digest = config_hash(config)
    path = out / "config.json"
    if path.exists():
        try:
            stored = json.loads(path.read_text())
            old, old_hash = stored["config"], stored["hash"]
        except (ValueError, KeyError, TypeError, OSError) as e:
            raise ValueError(f"out_dir {out}: {path.name} is unreadable ({e}); use another out_dir") from e
        if old_hash != digest:
            raise ValueError(f"out_dir {out} holds results of another configuration ({_changes(old, config)}); "
                             "use another out_dir, or delete this one to start over")
        return digest
    atomic_write(path, json.dumps({"hash": digest, "config": config}, indent=1, sort_keys=True).encode())
    return digest


# --- chunk files ----------------------------------------------------------------------------------------------------


def _npz_bytes(arrays: dict) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _chunk_path(out: Path, c: int) -> Path:
    return out / "chunks" / f"chunk_{c:06d}.bin"


def _write_chunk(out: Path, c: int, arrays: dict, digest: str) -> None:
    payload = _npz_bytes({**arrays, "chunk": np.asarray(c), "config_hash": np.asarray(digest)})
    atomic_write(_chunk_path(out, c), CHUNK_MAGIC + hashlib.sha256(payload).digest() + payload)


class _BadChunk(Exception):
    """A chunk file that exists but cannot be used (corrupt, truncated, foreign)."""


def _read_chunk(out: Path, c: int, lo: int, hi: int, digest: str) -> Optional[dict]:
    """The chunk's arrays, None if the file does not exist; raises :class:`_BadChunk` saying why it is unusable."""
    path = _chunk_path(out, c)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    n0 = len(CHUNK_MAGIC)
    if not blob.startswith(CHUNK_MAGIC) or len(blob) < n0 + 32:
        raise _BadChunk("bad header")
    payload = blob[n0 + 32:]
    if hashlib.sha256(payload).digest() != blob[n0: n0 + 32]:
        raise _BadChunk("checksum mismatch: corrupted or truncated")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise _BadChunk(f"unreadable payload ({e})") from e
    if str(arrays.pop("config_hash", "")) != digest or int(arrays.pop("chunk", -1)) != c:
        raise _BadChunk("written by another configuration")
    if not np.array_equal(arrays.get("index"), np.arange(lo, hi)):
        raise _BadChunk("holds other items")
    return arrays


# --- the compiled batch ---------------------------------------------------------------------------------------------


@eqx.filter_jit
def _batch_kernel(score, sde, x, start, pass_index, key, options, estimator, dequantize, levels, data_range):
    """Every item of the batch x alone, with its key fold_in(fold_in(key, index), pass_index) (module docstring)."""
    index = start + jnp.arange(x.shape[0], dtype=jnp.int32)

    def one(xi, i):
        k_deq, k_est = jax.random.split(jax.random.fold_in(jax.random.fold_in(key, i), pass_index))
        y, log_q = xi[None], jnp.zeros((), jnp.result_type(float))
        if levels is not None and dequantize == "uniform":
            y = uniform_dequantize(k_deq, y, levels=levels, data_range=data_range)
        elif levels is not None and dequantize is not None:
            y, log_q = dequantize(k_deq, y)
            log_q = jnp.reshape(log_q, ())
        est = estimator(score, sde, y, key=k_est, **options)
        nan = jnp.full((), jnp.nan, est.value.dtype)
        return (est.value[0], nan if est.stderr is None else est.stderr[0],
                nan if est.nfe is None else est.nfe[0].astype(est.value.dtype), log_q.astype(est.value.dtype))

    return jax.vmap(one)(x, index)


def _batch_on_devices(score, sde, x, *, start, pass_index, key, static):
    return _batch_kernel(score, sde, x, start, pass_index, key, *static)


def _bits(value, log_q, dim, levels, data_range, dequantize):
    """Bits/dim of one pass: :func:`diffdens.bits_per_dim` for the uniform dequantization, else from log q."""
    if dequantize == "uniform":
        return np.asarray(bits_per_dim(value, dim, levels=levels, data_range=data_range), np.float64)
    return -(value - log_q) / (dim * math.log(2.0))


def _combine(values, stderrs, nfes, bits):
    """Per item over passes (P, m) -> value, stderr, nfe, bits (see the module docstring)."""
    p = values.shape[0]
    value = values.mean(0)
    stderr = stderrs[0] if p == 1 else values.std(0, ddof=1) / math.sqrt(p)
    out = {"value": value, "stderr": stderr, "nfe": nfes.sum(0)}
    if bits is not None:
        out["bits_per_dim"] = bits.mean(0)
    return out


# --- summary --------------------------------------------------------------------------------------------------------


def _num(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _stats(v, stderr=None) -> dict:
    """Mean with its standard error over items (and the Monte Carlo one from per-item stderrs), median with a
    percentile-bootstrap 95% interval (fixed seed: the summary is a function of the results)."""
    v = np.asarray(v, np.float64)
    n = v.size
    out = {"mean": _num(v.mean()), "stderr": _num(v.std(ddof=1) / math.sqrt(n)) if n > 1 else None}
    if stderr is not None:
        out["mc_stderr"] = _num(math.sqrt(np.sum(np.asarray(stderr, np.float64) ** 2)) / n)
    rng = np.random.default_rng(0)
    meds = []
    for lo in range(0, N_BOOTSTRAP, 100):
        idx = rng.integers(0, n, (min(100, N_BOOTSTRAP - lo), n))
        meds.append(np.median(v[idx], axis=1))
    lo, hi = np.percentile(np.concatenate(meds), [2.5, 97.5])
    out.update(median=_num(np.median(v)), median_interval=[_num(lo), _num(hi)], interval_level=0.95)
    return out


def _summary(results, event_shape, n_chunks, run, config, digest) -> dict:
    """What summary.json holds: statistics of value (and bits/dim), nfe, counts, the run, device, versions, config."""
    from . import __version__  # the package's version (the package imports this module)

    dim = math.prod(event_shape)
    stderr = results["stderr"]
    out = {"n_items": int(results["index"].size), "n_chunks": n_chunks, "dim": dim, "event_shape": list(event_shape),
           "value": _stats(results["value"], None if np.isnan(stderr).any() else stderr)}
    if "bits_per_dim" in results:
        out["bits_per_dim"] = _stats(results["bits_per_dim"],
                                     None if np.isnan(stderr).any() else stderr / (dim * math.log(2.0)))
    nfe = results["nfe"]
    out["nfe"] = None if np.isnan(nfe).any() else {"mean": _num(nfe.mean()), "total": _num(nfe.sum())}
    out.update(run=run, device=_device_info(),
               versions={"diffdens": __version__, "python": sys.version.split()[0], **library_versions()},
               config_hash=digest, config=config)
    return out


def _device_info() -> dict:
    devs = jax.local_devices()
    return {"platform": devs[0].platform, "device_kind": devs[0].device_kind, "local_devices": len(devs),
            "processes": jax.process_count(), "global_devices": jax.device_count()}


# --- the job --------------------------------------------------------------------------------------------------------


class _Progress:
    """A tqdm bar (items/s, ETA, the running mean of bits/dim or value +- its stderr), or nothing without tqdm or
    when disabled; ``text()`` the running mean for the log."""

    def __init__(self, what, total, done, enabled):
        self.what, self.parts = what, []
        for arrays in done:
            self._keep(arrays)
        self.bar = progress_bar(enabled=enabled, total=total, initial=sum(p.size for p in self.parts), unit="item",
                                desc="evaluate", dynamic_ncols=True)
        if self.parts:
            self.bar.set_postfix_str(self.text())

    def _keep(self, arrays):
        self.parts.append(np.asarray(arrays["bits_per_dim" if self.what == "bits/dim" else "value"], np.float64))

    def add(self, arrays):
        self._keep(arrays)
        self.bar.update(self.parts[-1].size)
        self.bar.set_postfix_str(self.text())

    def text(self):
        if not self.parts:
            return ""
        v = np.concatenate(self.parts)
        se = v.std(ddof=1) / math.sqrt(v.size) if v.size > 1 else float("nan")
        return f"{self.what} {v.mean():.4f} +- {se:.4f}"

    def redirect_logging(self):
        """Log lines printed above the bar (tqdm.write) while it is shown."""
        return redirect_logging(self.bar)

    def close(self):
        self.bar.close()


class _Job(NamedTuple):
    score: Callable
    sde: LinearSDE
    key: jax.Array
    static: tuple  # (options, estimator, dequantize, levels, data_range): static arguments of the kernel
    passes: int
    batch_size: int
    dim: int


def _compute_chunk(job: _Job, arr, lo: int, hi: int) -> dict:
    """Items lo ... hi - 1 in batches of ``job.batch_size`` (the last padded: one compiled shape), every pass."""
    _, _, dequantize, levels, data_range = job.static
    fn = shard_points(_batch_on_devices, devices=jax.local_devices())
    b, parts = job.batch_size, []
    for b0 in range(lo, hi, b):
        xb = np.asarray(arr[b0: min(hi, b0 + b)])
        m = xb.shape[0]
        if m < b:  # pad with copies of the last item (stripped)
            xb = np.concatenate([xb, np.repeat(xb[-1:], b - m, axis=0)])
        per_pass = []
        for p in range(job.passes):
            res = fn(job.score, job.sde, xb, start=jnp.asarray(b0, jnp.int32), pass_index=jnp.asarray(p, jnp.int32),
                     key=job.key, static=job.static)
            per_pass.append([np.asarray(r, np.float64)[:m] for r in res])
        v, s, f, q = (np.stack(a) for a in zip(*per_pass))
        bits = None if levels is None else np.stack(
            [_bits(v[i], q[i], job.dim, levels, data_range, dequantize) for i in range(job.passes)])
        parts.append(_combine(v, s, f, bits))
    return {"index": np.arange(lo, hi, dtype=np.int64),
            **{k: np.concatenate([pt[k] for pt in parts]) for k in parts[0]}}


def _collect(out, pending, bounds, digest, done, progress, wait_timeout, poll=0.2):
    """Process 0: read the other processes' chunk files as they appear (an unusable one is being recomputed by its
    owner), until every chunk is there."""
    t_wait, last_note = time.time(), 0.0
    while pending:
        still = []
        for c in pending:
            try:
                arrays = _read_chunk(out, c, *bounds(c), digest)
            except _BadChunk:
                arrays = None
            if arrays is None:
                still.append(c)
            else:
                done[c] = arrays
                progress.add(arrays)
        pending = still
        if pending:
            waited = time.time() - t_wait
            if wait_timeout is not None and waited > wait_timeout:
                raise TimeoutError(f"process 0 waited {waited:.0f} s for chunks {pending[:10]} of the other "
                                   "processes; run the same job again to resume")
            if waited - last_note > 30:
                last_note = waited
                logger.info("process 0: waiting for %d chunks of the other processes", len(pending))
            time.sleep(poll)


def evaluate(
    model,
    data,
    out_dir,
    *,
    sde: Optional[LinearSDE] = None,
    estimator: Union[str, Callable] = "ode_log_prob",
    options: Optional[dict] = None,
    key=0,
    passes: int = 1,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    batch_size: Optional[int] = None,
    levels: Optional[int] = None,
    data_range=(0.0, 1.0),
    dequantize: Union[str, Callable, None] = "uniform",
    progress: Optional[bool] = None,
    wait_timeout: Optional[float] = None,
    trust_code: bool = False,
) -> Optional[Evaluation]:
    """Evaluate an estimator on every item of a data set, resumably, in chunks, over processes and devices.

    See :mod:`diffdens.evaluate` for the per-item randomness (item i, pass p: fold_in(fold_in(key, i), p)), the
    files written to ``out_dir`` and a multi-host launch. Every input is checked before any compiled work
    (ValueError or FileNotFoundError naming it); nothing already written is removed. Under
    ``jax.distributed.initialize``, process p computes the chunks c with c % P == p on its local devices, and
    process 0 waits for the others' chunk files and merges.

    Arguments:
        model: a checkpoint path (:func:`diffdens.save_model`), a :class:`diffdens.ScoreModel`, or any score callable
            ``score(x, t)`` on one item.
        data: (n, *event_shape) floats, or integers with ``levels``: an array, an iterable of arrays (concatenated)
            or a ``.npy`` path (memory-mapped).
        out_dir: the output directory (created; reused to resume the same job).
        sde: the SDE (default: the checkpoint's or the model's; required for a plain callable).
        estimator: ``"ode_log_prob"``, ``"elbo"``, ``"path_integral_log_prob"``, or a callable with the estimator
            contract ``f(score, sde, x, *, key, **options) -> Estimate``.
        options: the estimator's keyword options (e.g. ``{"n_times": 32}`` or ``{"solve": SolveOptions(...)}``).
        key: an int seed or a PRNG key.
        passes: estimates per item (each with its own key and dequantization), averaged.
        chunk_size: items per chunk file (the unit of resumption and of the split over processes).
        batch_size: items per compiled call (a memory bound; default ``chunk_size``).
        levels: the number of discrete levels of integer data (bits/dim are then reported), or None for floats.
        data_range: (a, b) the interval the levels map to (as :func:`diffdens.uniform_dequantize`).
        dequantize: ``"uniform"``, a callable ``(key, k) -> (y, log_q)``, or None (see :mod:`diffdens.evaluate`).
        progress: show a tqdm bar on process 0 (default: when stderr is a terminal).
        wait_timeout: seconds process 0 waits for the other processes' chunks (default: no limit).
        trust_code: passed to :func:`diffdens.load_model` (a checkpoint whose SDE names functions to import).

    Returns:
        :class:`Evaluation` on process 0 (also written to ``out_dir/results.npz`` and ``summary.json``); None on the
        other processes.
    """
    t_start = time.time()
    # ---- the front door: every check before compiled work ----
    passes = check_positive_int(passes, "passes")
    chunk_size = check_positive_int(chunk_size, "chunk_size")
    batch_size = chunk_size if batch_size is None else check_positive_int(batch_size, "batch_size")
    if levels is not None:
        levels = check_positive_int(levels, "levels")
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
    try:
        data_range = (float(data_range[0]), float(data_range[1]))
    except (TypeError, ValueError, IndexError) as e:
        raise ValueError(f"data_range must be (a, b), got {data_range!r}") from e
    if len(data_range) != 2 or not data_range[1] > data_range[0] or not all(map(math.isfinite, data_range)):
        raise ValueError(f"data_range must be (a, b) with finite b > a, got {data_range!r}")
    if not (dequantize is None or dequantize == "uniform" or callable(dequantize)):
        raise ValueError(f"dequantize must be 'uniform', None or a callable (key, k) -> (y, log_q), got {dequantize!r}")
    if wait_timeout is not None:
        wait_timeout = check_real(wait_timeout, "wait_timeout", lo=0.0)
    if isinstance(estimator, str):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {tuple(ESTIMATORS)} or a callable, got {estimator!r}")
        est_name, est_fn = estimator, ESTIMATORS[estimator]
    elif callable(estimator):
        est_fn = estimator
        est_name = f"{getattr(estimator, '__module__', '?')}:{getattr(estimator, '__qualname__', repr(estimator))}"
    else:
        raise TypeError(f"estimator must be a name or a callable, got {type(estimator).__name__}")
    options = _check_options(est_fn, options)
    key, key_desc = _key_data(key)
    arr, source = _load_data(data)
    _check_data(arr, levels)
    n, event_shape = arr.shape[0], tuple(arr.shape[1:])
    dim = math.prod(event_shape)
    score, sde, model_desc = _resolve_model(model, sde, trust_code)
    check_sde(sde)
    _probe_model(score, sde, arr[:1], est_fn, options, levels, data_range, dequantize)
    dtype = jnp.result_type(float)
    out = _prepare_out_dir(out_dir)
    deq_desc = None if levels is None else (dequantize if dequantize in (None, "uniform") else _jsonable(dequantize))
    config = {
        "model": model_desc, "sde": _sde_description(sde),
        "data": {"shape": list(arr.shape), "dtype": arr.dtype.str, "sha256": _digest_array(arr)},
        "estimator": est_name, "options": _jsonable(options), "key": key_desc, "passes": passes,
        "chunk_size": chunk_size, "levels": levels, "data_range": list(data_range) if levels else None,
        "dequantize": deq_desc, "dtype": np.dtype(dtype).name,
    }
    digest = _claim_config(out, config)

    # ---- the plan ----
    n_chunks = -(-n // chunk_size)
    proc, n_proc = jax.process_index(), jax.process_count()
    mine = [c for c in range(n_chunks) if c % n_proc == proc]
    watch = range(n_chunks) if proc == 0 else mine  # process 0 also reads the others' chunks, to merge
    bounds = lambda c: (c * chunk_size, min(n, (c + 1) * chunk_size))  # noqa: E731
    done, bad = {}, {}
    for c in watch:
        try:
            arrays = _read_chunk(out, c, *bounds(c), digest)
        except _BadChunk as e:
            bad[c] = str(e)
            continue
        if arrays is not None:
            done[c] = arrays
    todo = [c for c in mine if c not in done]
    for c in todo:
        if c in bad:
            logger.warning("process %d: %s is unusable (%s): recomputing it", proc, _chunk_path(out, c), bad[c])
    n_items = lambda cs: sum(bounds(c)[1] - bounds(c)[0] for c in cs)  # noqa: E731
    resumed, resumed_all = [c for c in mine if c in done], list(done)
    devs = jax.local_devices()
    logger.info("process %d/%d (%d local %s devices): %d items in %d chunks of %d, %d chunks for this process; resumed "
                "%d items (%d chunks) from %s, %d corrupt chunks to recompute; computing %d items (%d chunks)",
                proc, n_proc, len(devs), devs[0].platform, n, n_chunks, chunk_size, len(mine), n_items(resumed),
                len(resumed), out / "chunks", len([c for c in todo if c in bad]), n_items(todo), len(todo))

    what = "bits/dim" if levels is not None else "value"
    show = (sys.stderr.isatty() if progress is None else bool(progress)) and proc == 0
    progress_ = _Progress(what, n, done.values(), show)
    with progress_.redirect_logging():
        # ---- compute this process's chunks ----
        job = _Job(traced_score(score, "model"), sde, key, (options, est_fn, dequantize, levels, data_range),
                   passes, min(batch_size, chunk_size, n), dim)
        kill_after = int(os.environ.get(KILL_AFTER_ENV, "0") or 0)
        for written, c in enumerate(todo, 1):
            t0 = time.time()
            lo, hi = bounds(c)
            arrays = _compute_chunk(job, arr, lo, hi)
            _write_chunk(out, c, arrays, digest)
            done[c] = arrays
            progress_.add(arrays)
            dt = time.time() - t0
            logger.info("process %d: chunk %d/%d (items %d-%d) computed in %.1f s (%.1f items/s); running %s", proc,
                        c + 1, n_chunks, lo, hi - 1, dt, (hi - lo) / max(dt, 1e-9), progress_.text())
            if kill_after and written >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        if proc != 0:
            logger.info("process %d: done (%d chunks computed, %d resumed); process 0 merges", proc, len(todo),
                        len(resumed))
            return None
        # ---- process 0: wait for the others' chunks ----
        _collect(out, [c for c in range(n_chunks) if c not in done], bounds, digest, done, progress_, wait_timeout)
        progress_.close()
    keys = ["index", "value", "stderr", "nfe"] + (["bits_per_dim"] if levels is not None else [])
    results = {k: np.concatenate([done[c][k] for c in range(n_chunks)]) for k in keys}
    atomic_write(out / "results.npz", _npz_bytes(results))
    run = {"resumed_items": n_items(resumed_all), "computed_items": n - n_items(resumed_all),
           "recomputed_corrupt_chunks": len(bad), "batch_size": job.batch_size, "processes": n_proc,
           "wall_time_s": time.time() - t_start, "data_source": source,
           "model_source": str(Path(model).resolve()) if isinstance(model, (str, os.PathLike))
           else model_desc.get("score", "ScoreModel"), "out_dir": str(out.resolve())}
    summary = _summary(results, event_shape, n_chunks, run, config, digest)
    atomic_write(out / "summary.json", json.dumps(summary, indent=1).encode())
    head = summary.get("bits_per_dim", summary["value"])
    logger.info("done: %d items (%d resumed, %d computed in this run); %s %s +- %s; wrote %s and %s", n,
                run["resumed_items"], run["computed_items"], what, head["mean"], head["stderr"], out / "results.npz",
                out / "summary.json")
    return Evaluation(results["index"], results["value"], results["stderr"], results["nfe"],
                      results.get("bits_per_dim"), summary, out)
