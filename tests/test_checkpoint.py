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
