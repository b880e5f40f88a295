"""Checkpoints and the trained-model cache.

A checkpoint is one file: a magic tag, the sha256 of the payload, and a msgpack payload (flax.serialization) with the
model's self-describing config (SDE class and parameters, parameterization, network sizes) and its full nnx state.
The checksum makes a truncated or corrupted file a clear ``ValueError`` instead of garbage parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, serialization

from . import sde as _sde
from .nets import ScoreModel, init_model

MAGIC = b"DIFFDENS1"


def _sde_config(sde) -> dict:
    return {"class": type(sde).__name__, **dataclasses.asdict(sde)}


def _sde_from_config(cfg: dict):
    cfg = dict(cfg)
    cls = getattr(_sde, cfg.pop("class"), None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, _sde.LinearSDE):
        raise ValueError(f"checkpoint names an unknown SDE class {cls!r}")
    return cls(**cfg)


def model_config(model: ScoreModel) -> dict:
    return {"sde": _sde_config(model.sde), "parameterization": model.parameterization, "net": model.config}


def save_model(model: ScoreModel, path) -> Path:
    """Write ``model`` (config + parameters) to the single file ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = jax.tree_util.tree_map(np.asarray, nnx.state(model.net).to_pure_dict())
    payload = serialization.msgpack_serialize({"config": json.dumps(model_config(model)), "state": state})
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(MAGIC + hashlib.sha256(payload).digest() + payload)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint under the final name
    return path


def load_model(path) -> ScoreModel:
    """Read a checkpoint written by :func:`save_model`; raises ValueError if it is truncated, corrupt or foreign."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"path {path} is not a checkpoint file")
    blob = path.read_bytes()
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 32:
        raise ValueError(f"{path} is not a diffdens checkpoint (bad header)")
    digest, payload = blob[len(MAGIC): len(MAGIC) + 32], blob[len(MAGIC) + 32:]
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"{path} is corrupted or truncated (checksum mismatch)")
    data = serialization.msgpack_restore(payload)
    cfg = json.loads(data["config"])
    net_cfg = cfg["net"]
    model = init_model(net_cfg["dim"], _sde_from_config(cfg["sde"]), key=jax.random.key(0),
                       parameterization=cfg["parameterization"],
                       **{k: net_cfg[k] for k in ("hidden", "depth", "n_features")})
    state = nnx.state(model.net)
    try:
        restored = jax.tree_util.tree_map(jnp.asarray, data["state"])
        state.replace_by_pure_dict(restored)
    except Exception as e:  # a payload from another architecture
        raise ValueError(f"{path} does not match the architecture in its config: {e}") from e
    nnx.update(model.net, state)
    model.config = dict(net_cfg)
    return model


def cache_dir() -> Path:
    """``$DIFFDENS_CACHE`` or ``~/.cache/diffdens``."""
    return Path(os.environ.get("DIFFDENS_CACHE", Path.home() / ".cache" / "diffdens"))


def cache_key(config: dict, data) -> str:
    """A key for a training run: its full config, the data bytes and the source of the training code."""
    from . import nets, train

    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(np.asarray(data)).tobytes())
    for mod in (nets, train):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:24]
