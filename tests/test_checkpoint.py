"""Checkpoint file handling and the model-cache key (issue 27, items 1, 5, 6): tiny models, no training."""

import shutil

import numpy as np
import pytest

from diffdens import checkpoint as ck


def _copy_package(tmp_path):
    dst = tmp_path / "pkg"
    shutil.copytree(ck.PACKAGE_ROOT, dst, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    return dst


CFG = {"epochs": 2, "lr": 1e-3}
DATA = np.arange(12, dtype=np.float32).reshape(6, 2)
VERSIONS = {"jax": "0.4.30", "flax": "0.8.5"}


def test_cache_key_covers_every_module_of_the_package(tmp_path):
    """Issue 27 item 1: editing a helper that training runs (estimate.sample_times) must be a cache miss."""
    root = _copy_package(tmp_path)
    key = ck.cache_key(CFG, DATA, root=root, versions=VERSIONS)
    assert ck.cache_key(CFG, DATA, root=root, versions=VERSIONS) == key  # deterministic
    est = root / "estimate.py"
    est.write_text(est.read_text().replace("def sample_times(", "def sample_times(  ", 1) + "\n# edited\n")
    edited = ck.cache_key(CFG, DATA, root=root, versions=VERSIONS)
    assert edited != key
    # a module in a subpackage (sde.py may become diffdens/sde/*.py) counts too, and so does a new file
    (root / "sub").mkdir()
    (root / "sub" / "helpers.py").write_text("X = 1\n")
    added = ck.cache_key(CFG, DATA, root=root, versions=VERSIONS)
    assert added != edited
    (root / "sub" / "helpers.py").write_text("X = 2\n")
    assert ck.cache_key(CFG, DATA, root=root, versions=VERSIONS) != added
    # renaming a file (same bytes) changes the key; non-Python files do not
    (root / "sub" / "helpers.py").rename(root / "sub" / "other.py")
    renamed = ck.cache_key(CFG, DATA, root=root, versions=VERSIONS)
    assert renamed not in (added, edited)
    (root / "notes.txt").write_text("not code")
    assert ck.cache_key(CFG, DATA, root=root, versions=VERSIONS) == renamed


def test_cache_key_covers_library_versions_config_and_data(tmp_path):
    key = ck.cache_key(CFG, DATA, versions=VERSIONS)
    assert ck.cache_key(CFG, DATA, versions={**VERSIONS, "jax": "0.4.31"}) != key
    assert ck.cache_key(CFG, DATA, versions={**VERSIONS, "optax": "0.2.3"}) != key
    assert ck.cache_key({**CFG, "lr": 2e-3}, DATA, versions=VERSIONS) != key
    assert ck.cache_key(CFG, DATA.reshape(3, 4), versions=VERSIONS) != key  # same bytes, another shape
    assert ck.cache_key(CFG, DATA + 1, versions=VERSIONS) != key
    v = ck.library_versions()
    assert set(v) == {"jax", "jaxlib", "flax", "optax", "diffrax", "equinox"} and v["jax"]
    assert ck.cache_key(CFG, DATA) == ck.cache_key(CFG, DATA, versions=v)  # the installed versions by default


# ------------------------------------------------------------------------- concurrent saves (issue 27, item 5)

def _saver(path, blob, n, barrier, errors):
    """Write the checkpoint bytes ``blob`` to ``path`` n times through save_model's writer, starting together with
    the other savers (the model is serialized once in the parent, so a child compiles nothing)."""
    from diffdens.checkpoint import atomic_write

    barrier.wait()
    for _ in range(n):
        try:
            atomic_write(path, blob)
        except Exception as e:  # noqa: BLE001 -- every failure is reported to the parent
            errors.put(f"{type(e).__name__}: {e}")


def test_concurrent_saves_to_one_path_never_fail(tmp_path):
    """Two processes x 50 saves to one path: with one shared temporary name, one writer's rename took the other's
    file away (FileNotFoundError); with a temporary file per writer every save succeeds and the result loads."""
    import multiprocessing as mp

    import jax

    import diffdens as dd

    blobs = []
    for seed in (0, 1):  # two different models, one per writer
        m = dd.init_model(2, dd.VPSDE(), key=jax.random.key(seed), hidden=4, depth=1, n_features=2)
        blobs.append(dd.save_model(m, tmp_path / "src" / f"{seed}.ckpt").read_bytes())
    ctx = mp.get_context("spawn")
    path = tmp_path / "out" / "shared.ckpt"
    path.parent.mkdir()
    barrier, errors = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_saver, args=(path, blob, 50, barrier, errors)) for blob in blobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert [p.exitcode for p in procs] == [0, 0] and not found, found[:5]
    model = dd.load_model(path)
    assert model.config == {"dim": 2, "hidden": 4, "depth": 1, "n_features": 2}
    x = jax.numpy.ones(2)
    assert np.all(np.isfinite(np.asarray(model.score(x, 0.5))))
    assert path.read_bytes() in blobs
    assert [f.name for f in path.parent.iterdir()] == ["shared.ckpt"]  # no temporary file left behind


def test_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    import os

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        ck.atomic_write(tmp_path / "x.ckpt", b"data")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    ck.atomic_write(tmp_path / "x.ckpt", b"data")
    assert (tmp_path / "x.ckpt").read_bytes() == b"data"
    assert (tmp_path / "x.ckpt").stat().st_mode & 0o777 == 0o666 & ~ck._umask()


# ------------------------------------------------------------------- checkpoints import no code (issue 27, item 6)

def _forge(path, edit):
    """Rewrite the config of the checkpoint at ``path`` with ``edit(cfg)`` and a valid checksum (a forged file)."""
    import hashlib
    import json

    from flax import serialization

    blob = path.read_bytes()
    data = serialization.msgpack_restore(blob[len(ck.MAGIC) + 32:])
    cfg = json.loads(data["config"])
    edit(cfg)
    data["config"] = json.dumps(cfg)
    payload = serialization.msgpack_serialize(data)
    path.write_bytes(ck.MAGIC + hashlib.sha256(payload).digest() + payload)
    return path


EVIL = '''
import pathlib
import jax.numpy as jnp
pathlib.Path({marker!r}).write_text("imported")  # import-time code: must never run on a plain load_model

def alpha(t):
    return jnp.exp(-t)

def sigma(t):
    return jnp.sqrt(-jnp.expm1(-2 * t))
'''


@pytest.fixture
def tiny(tmp_path):
    import jax

    import diffdens as dd

    return dd.save_model(dd.init_model(2, dd.VPSDE(), key=jax.random.key(0), hidden=4, depth=1, n_features=2),
                         tmp_path / "tiny.ckpt")


def test_forged_checkpoint_imports_nothing(tiny, tmp_path, monkeypatch):
    import sys

    import diffdens as dd

    marker = tmp_path / "ran"
    (tmp_path / "evil_sched_27.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path))
    custom = {"class": "CustomSDE", "alpha": "evil_sched_27:alpha", "sigma": "evil_sched_27:sigma", "T": 1.0,
              "name": "evil", "prior_std": None}
    forged = _forge(tiny, lambda cfg: cfg.update(sde=custom))
    with pytest.raises(ValueError, match="trust_code=True"):
        dd.load_model(forged)
    assert not marker.exists() and "evil_sched_27" not in sys.modules
    with pytest.raises(ValueError, match="not the given sde"):  # the SDE passed must be the one stored
        dd.load_model(forged, sde=dd.VPSDE())
    assert not marker.exists() and "evil_sched_27" not in sys.modules
    os_system = {**custom, "alpha": "os:system", "sigma": "os:system"}
    with pytest.raises(ValueError, match="import"):
        dd.load_model(_forge(forged, lambda cfg: cfg.update(sde=os_system)))
    # the explicit opt-in imports the named functions (here: a legitimate schedule in a trusted module)
    _forge(forged, lambda cfg: cfg.update(sde=custom))
    model = dd.load_model(forged, trust_code=True)
    assert marker.exists() and model.sde.name == "evil"
    back = dd.load_model(forged, sde=model.sde)  # or given the SDE itself: nothing imported, that SDE used
    assert back.sde is model.sde
    sys.modules.pop("evil_sched_27", None)


def test_plain_checkpoints_load_without_trust_code(tiny):
    import diffdens as dd

    assert dd.load_model(tiny).sde == dd.VPSDE()
    assert dd.load_model(tiny, sde=dd.VPSDE()).sde == dd.VPSDE()
    with pytest.raises(ValueError, match="not the given sde"):
        dd.load_model(tiny, sde=dd.VPSDE(beta_max=10.0))
    with pytest.raises(TypeError, match="trust_code"):
        dd.load_model(tiny, trust_code="yes")
    with pytest.raises(ValueError, match="unknown SDE class|cannot rebuild"):
        dd.load_model(_forge(tiny, lambda cfg: cfg.update(sde={"class": "os"})))
