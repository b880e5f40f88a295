"""Checkpoints and the trained-model cache.

A checkpoint is one file: a magic tag, the sha256 of the payload, and a msgpack payload (flax.serialization) with the
model's self-describing config (SDE class and parameters, :func:`diffdens.sde.sde_config`; parameterization; network
sizes) and its full nnx state. The checksum makes a truncated or corrupted file a clear ``ValueError`` instead of
garbage parameters, and :func:`load_model` checks every leaf of the stored state (presence, shape, dtype) against the
architecture its config describes. (Why not orbax-checkpoint: see DEVELOPING.md.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from .nets import ScoreModel, init_model
from .sde import sde_config, sde_from_config
from .unet import UNET_KEYS, init_unet

MAGIC = b"DIFFDENS1"
NET_KEYS = ("dim", "hidden", "depth", "n_features")
ARCHITECTURE_KEYS = {"mlp": NET_KEYS, "unet": UNET_KEYS}  # the sizes each architecture's config must hold


def architecture(model: ScoreModel) -> str:
    """``"mlp"`` or ``"unet"``: the network a model's config describes (a config without the key is an MLP's)."""
    return model.config.get("architecture", "mlp")


def model_config(model: ScoreModel) -> dict:
    """The JSON-able description of ``model`` stored in its checkpoint: the SDE, the parameterization, the
    architecture (``"mlp"`` or ``"unet"``) and the network's sizes."""
    net = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.config.items() if k != "architecture"}
    return {"sde": sde_config(model.sde), "parameterization": model.parameterization,
            "architecture": architecture(model), "net": net}


def _flat(tree) -> dict:
    """{'layers/0/kernel': leaf, ...} for a nested dict of arrays (keys as strings, so msgpack's str keys match)."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)] = leaf
    return out


def atomic_write(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and safely under concurrency: each writer writes its own temporary
    file in the same directory (``tempfile.mkstemp``), flushes and fsyncs it, then renames it over ``path``
    (``os.replace``, atomic on POSIX and Windows). A reader sees the old file or the new one, never a mix; concurrent
    writers of one path never collide (the last rename wins); a failed write removes its temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file 0600; give it the permissions of a plain open()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (best effort: not every filesystem allows it)
        with contextlib.suppress(OSError):
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_model(model: ScoreModel, path) -> Path:
    """Write ``model`` (config + parameters) to the single file ``path`` (atomically, and safely when several
    processes save to one path at once: see :func:`atomic_write`).

    Arguments:
        model: the :class:`~diffdens.ScoreModel` (its SDE must be serializable, else ValueError naming ``sde``).
        path: the file to write.

    Returns:
        the ``pathlib.Path`` written.
    """
    path = Path(path)
    cfg = json.dumps(model_config(model))  # raises ValueError naming sde for an unserializable schedule
    state = jax.tree_util.tree_map(np.asarray, nnx.state(model.net).to_pure_dict())
    payload = serialization.msgpack_serialize({"config": cfg, "state": state})
    return atomic_write(path, MAGIC + hashlib.sha256(payload).digest() + payload)


CODE_SDE_CLASSES = ("CustomSDE",)  # SDE configs that name functions to import (``module:qualname``)


def _stored_sde(sde_cfg, path, *, sde, trust_code):
    """The SDE a checkpoint describes, importing nothing unless ``trust_code``: with ``sde`` given, the stored
    description must be that SDE's (and ``sde`` is used as is); a schedule stored as import paths (``CustomSDE``)
    needs ``trust_code=True``."""
    if not isinstance(sde_cfg, dict):
        raise ValueError(f"{path}: malformed SDE description {sde_cfg!r}")
    if sde is not None:
        want = json.loads(json.dumps(sde_config(sde)))
        if sde_cfg != want:
            raise ValueError(f"{path}: the checkpoint's SDE {sde_cfg} is not the given sde {want}")
        return sde
    if sde_cfg.get("class") in CODE_SDE_CLASSES and not trust_code:
        names = [sde_cfg.get(k) for k in ("alpha", "sigma")]
        raise ValueError(f"{path}: the checkpoint's SDE is a schedule stored as functions to import ({names}); "
                         "loading it would import that code and run it. Pass the SDE itself (load_model(path, "
                         "sde=...)), or trust_code=True only for a file from a trusted source (unsafe for untrusted "
                         "files: a forged checkpoint can name any module or function)")
    try:
        return sde_from_config(sde_cfg, trust_code=trust_code)
    except (TypeError, ValueError, KeyError, AttributeError, ImportError) as e:
        raise ValueError(f"{path}: cannot rebuild the checkpoint's SDE {sde_cfg} ({type(e).__name__}: {e})") from e


def load_model(path, *, sde=None, trust_code: bool = False) -> ScoreModel:
    """Read a checkpoint written by :func:`save_model`.

    A checkpoint is untrusted input (its sha256 guards against damage, not forgery), so loading never imports code by
    default. A model trained on a :meth:`~diffdens.sde.LinearSDE.from_schedule` schedule stores its functions as
    import paths: load it by passing the SDE (``sde=...``, which must equal the stored description; then nothing is
    imported), or with ``trust_code=True``, which imports the named modules and calls the named functions.
    **trust_code=True is unsafe for files from an untrusted source**: a forged file can name any module (its import
    runs its code) or function (e.g. ``os:system``).

    Raises ValueError if the file is truncated, corrupt or foreign, if its config is malformed (the network sizes must
    be positive integers, depth a non-negative one), if it names code to import without ``trust_code``, or if its
    weights do not match the architecture in its config (every leaf must be present with the config's shape and
    dtype; the message names the leaves).

    Arguments:
        path: the checkpoint file.
        sde: the SDE the model was trained for; it must equal the stored description, and then nothing is imported.
        trust_code: allow importing the functions a stored ``CustomSDE`` names (unsafe for untrusted files).

    Returns:
        the :class:`~diffdens.ScoreModel`.
    """
    if not isinstance(trust_code, (bool, np.bool_)):
        raise TypeError(f"trust_code must be True or False, got {trust_code!r}")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {path} is not a checkpoint file")
    blob = path.read_bytes()
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 32:
        raise ValueError(f"{path} is not a diffdens checkpoint (bad header)")
    digest, payload = blob[len(MAGIC): len(MAGIC) + 32], blob[len(MAGIC) + 32:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"{path} is corrupted or truncated (checksum mismatch)")
    try:
        data = serialization.msgpack_restore(payload)
        cfg = json.loads(data["config"])
        net_cfg, stored = dict(cfg["net"]), data["state"]
        sde_cfg, par = cfg["sde"], cfg["parameterization"]
        arch = cfg.get("architecture", "mlp")  # checkpoints written before the U-Net hold an MLP
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: malformed checkpoint payload ({e})") from e
    if arch not in ARCHITECTURE_KEYS:
        raise ValueError(f"{path}: unknown architecture {arch!r} (known: {tuple(ARCHITECTURE_KEYS)})")
    missing = [k for k in ARCHITECTURE_KEYS[arch] if k not in net_cfg]
    if missing:
        raise ValueError(f"{path}: the network config lacks {missing}")
    _check_net_config(net_cfg, path, arch)
    if not isinstance(par, str):
        raise ValueError(f"{path}: malformed parameterization {par!r}")
    the_sde = _stored_sde(sde_cfg, path, sde=sde, trust_code=bool(trust_code))
    if arch == "mlp":
        model = init_model(net_cfg["dim"], the_sde, key=jax.random.key(0), parameterization=par,
                           **{k: net_cfg[k] for k in NET_KEYS[1:]})
    else:
        net_cfg["event_shape"] = tuple(net_cfg["event_shape"])
        model = init_unet(net_cfg["event_shape"], the_sde, key=jax.random.key(0), parameterization=par,
                          channels=net_cfg["channels"], groups=net_cfg["groups"])
    state = nnx.state(model.net)
    want, got = _flat(state.to_pure_dict()), _flat(stored)
    problems = [f"{k} missing" for k in want if k not in got]
    problems += [f"{k} unexpected" for k in got if k not in want]
    for k in want.keys() & got.keys():
        w, g = want[k], np.asarray(got[k])
        if tuple(w.shape) != g.shape:
            problems.append(f"{k} has shape {g.shape}, the config needs {tuple(w.shape)}")
        elif np.dtype(w.dtype) != g.dtype:
            problems.append(f"{k} has dtype {g.dtype}, the config needs {np.dtype(w.dtype)}")
    if problems:
        raise ValueError(f"{path}: the weights do not match the architecture in its config ({net_cfg}): "
                         + "; ".join(sorted(problems)))
    state.replace_by_pure_dict(jax.tree_util.tree_map(jnp.asarray, stored))
    nnx.update(model.net, state)
    model.config = net_cfg if arch == "mlp" else dict(architecture=arch, **net_cfg)
    return model


def _check_net_config(net_cfg: dict, path, arch: str = "mlp") -> None:
    """The stored network sizes are integers (JSON ints, not '3' or 8.5): for the MLP dim, hidden, n_features >= 1,
    depth >= 0; for the U-Net channels, groups >= 1 and event_shape three integers >= 1 (H, W even)."""
    for k in ARCHITECTURE_KEYS[arch]:
        v, lo = net_cfg[k], 0 if k == "depth" else 1
        if k == "event_shape":
            ok = isinstance(v, list) and len(v) == 3 and all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in v) and v[0] % 2 == v[1] % 2 == 0
            if not ok:
                raise ValueError(f"{path}: the network config has event_shape={v!r}; it must be [H, W, C], "
                                 "integers >= 1 with H and W even")
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{path}: the network config has {k}={v!r}; it must be an integer >= {lo}")


def cache_dir() -> Path:
    """``$DIFFDENS_CACHE`` or ``~/.cache/diffdens``."""
    return Path(os.environ.get("DIFFDENS_CACHE", Path.home() / ".cache" / "diffdens"))


PACKAGE_ROOT = Path(__file__).resolve().parent
LIBRARIES = ("jax", "jaxlib", "flax", "optax", "diffrax", "equinox")


def library_versions() -> dict:
    """The installed versions of the libraries training runs on (None for one that is not installed)."""
    from importlib import metadata

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def source_digest(root=PACKAGE_ROOT) -> str:
    """sha256 of every ``.py`` file under ``root`` (recursively, sorted by relative path; each file's relative path
    and bytes are hashed), i.e. of all the package code a training run may execute."""
    root = Path(root)
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        if "__pycache__" in f.parts or not f.is_file():
            continue
        rel = f.relative_to(root).as_posix().encode()
        body = f.read_bytes()
        h.update(len(rel).to_bytes(8, "little") + rel + len(body).to_bytes(8, "little") + body)
    return h.hexdigest()


def cache_key(config: dict, data, *, root=PACKAGE_ROOT, versions: dict | None = None) -> str:
    """A key for a training run: its full config, the data (shape, dtype, bytes), the whole package source under
    ``root`` (:func:`source_digest`) and the library versions (:func:`library_versions` unless ``versions`` is
    given). Editing any package module or upgrading jax, jaxlib, flax, optax, diffrax or equinox is a cache miss."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    a = np.ascontiguousarray(np.asarray(data))
    h.update(json.dumps([list(a.shape), a.dtype.str]).encode())
    h.update(a.tobytes())
    h.update(source_digest(root).encode())
    h.update(json.dumps(library_versions() if versions is None else versions, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]
