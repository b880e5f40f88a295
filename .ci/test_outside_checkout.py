"""What a user outside the repository runs (Colab, or after `pip install`): build the wheel, install it into a
fresh virtual environment and use it from a temporary folder outside the checkout, in two steps (in this order):

1. the core install (`pip install diffdens`, the numerical stack only): an estimator runs (the PF-ODE log p and the
   ELBO of an exact mixture, against its log p; a short fit_score without tqdm) and none of the [book] extra
   (matplotlib, scikit-learn, tqdm, IPython) is installed or imported;
2. the same venv with `diffdens[book]` added executes two chapters.

Run by .ci/run (not by `make test`): `python -m pytest -q .ci/test_outside_checkout.py`. The chapters are picked by
slug (numbers change); each must run with nothing of the checkout on its path: no PYTHONPATH, no ../benchmarks.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLUGS = ["which_estimator", "diffusion"]  # the benchmark chapter (package data) and the cheap first chapter
KERNEL = "diffdens-wheel"


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra)
    return env


BOOK_ONLY = ("matplotlib", "sklearn", "tqdm", "IPython")  # import names of the [book] extra's packages

CORE = """
import importlib.util, sys
import jax, jax.numpy as jnp, numpy as np
import diffdens as dd

installed = [m for m in %r if importlib.util.find_spec(m) is not None]
assert not installed, f"the core install has {installed}: they belong to the [book] extra"
mix = dd.standard_mixture("2d")
sde = dd.VPSDE()
p = mix.diffuse(sde)
x = mix.sample(jax.random.key(0), 16)
exact = np.asarray(mix.log_prob(x))
ode = dd.ode_log_prob(p.score, sde, x, solve=dd.SolveOptions(rtol=1e-6, atol=1e-6))
assert np.max(np.abs(np.asarray(ode.value) - exact)) < 0.05, (ode.value, exact)
lb = dd.elbo(p.score, sde, x, key=jax.random.key(1), n_times=256)
assert np.mean(np.asarray(lb.value)) < np.mean(exact) + 3 * np.sqrt(np.mean(np.asarray(lb.stderr) ** 2) / len(x))
model, hist = dd.fit_score(mix.sample(jax.random.key(2), 256), sde, key=jax.random.key(3), epochs=2, hidden=16,
                           depth=1, n_features=8, cache=False)  # progress=True: no tqdm, so no bar
assert len(hist["loss"]) == 2 and np.all(np.isfinite(hist["loss"]))
assert dd.book.pick(quick=1, full=2) in (1, 2) and dd.book.device_name()
try:
    dd.datasets.load_digits()
    raise AssertionError("load_digits ran without scikit-learn")
except ImportError as e:
    assert "diffdens[book]" in str(e), e
imported = [m for m in %r if m in sys.modules]
assert not imported, f"the core package imported {imported}"
print("core ok: PF-ODE and ELBO on the exact mixture, fit_score without tqdm")
""" % (BOOK_ONLY, BOOK_ONLY)


@pytest.fixture(scope="module")
def core_env(tmp_path_factory):
    """A fresh venv with the built wheel and its core dependencies only, and a work folder outside the repo."""
    tmp = tmp_path_factory.mktemp("outside")
    assert ROOT not in tmp.resolve().parents, "the work folder must lie outside the repository"
    env = _clean_env()
    # build from a copy of the sources, so that the checkout gets no build/ folder
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", ".ci-venvs", "_build", "build", "notebooks",
                                                            "*.egg-info", "__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp / "dist"), str(src)], env=env)
    wheels = glob.glob(str(tmp / "dist" / "diffdens-*.whl"))
    assert len(wheels) == 1, wheels
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(tmp / "venv")], env=env)
    py = tmp / "venv" / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", wheels[0]], env=env)
    work = tmp / "work"
    work.mkdir()
    # the package comes from the wheel, its benchmark data included
    out = _run([str(py), "-c", "import diffdens, importlib.resources as r; print(diffdens.__file__); "
                "print(sum(1 for f in (r.files('diffdens') / '_data' / 'benchmarks').iterdir() if f.name.endswith('.json')))"],
               cwd=work, env=env)
    path, n_json = out.split()
    assert "site-packages" in path and not path.startswith(str(ROOT)), path
    assert int(n_json) > 0, "no benchmark JSON shipped in the wheel"
    return py, work, wheels[0]


def test_core_install_runs_an_estimator(core_env):
    """Runs before the chapters, which add the [book] extra to the same venv."""
    py, work, _ = core_env
    env = _clean_env(DIFFDENS_PROFILE="quick", DIFFDENS_CACHE=str(work / "cache"))
    env.pop("MPLBACKEND", None)
    out = _run([str(py), "-c", CORE], cwd=work, env=env, timeout=900)
    assert "core ok" in out, out


@pytest.fixture(scope="module")
def wheel_env(core_env):
    """The core venv with the [book] extra added (and a kernel to execute notebooks)."""
    py, work, wheel = core_env
    env = _clean_env()
    _run([str(py), "-m", "pip", "install", "-q", f"{wheel}[book]", "nbclient", "nbformat", "ipykernel"], env=env)
    _run([str(py), "-m", "ipykernel", "install", "--prefix", str(py.parents[1]), "--name", KERNEL], env=env)
    return py, work


EXECUTE = """
import sys, nbformat, nbclient
nb = nbformat.read(sys.argv[1], as_version=4)
for c in nb.cells:
    if c.cell_type == "code":
        c.outputs, c.execution_count = [], None
nbclient.NotebookClient(nb, kernel_name=sys.argv[2], timeout=900, resources={"metadata": {"path": "."}}).execute()
print("executed", len([c for c in nb.cells if c.cell_type == "code"]), "code cells")
"""


@pytest.mark.parametrize("slug", SLUGS)
def test_chapter_runs_outside_checkout(wheel_env, slug):
    py, work = wheel_env
    found = sorted((ROOT / "notebooks").glob(f"[0-9][0-9]_{slug}.ipynb"))
    assert found, f"no chapter notebooks/NN_{slug}.ipynb"
    nb = work / found[0].name
    nb.write_bytes(found[0].read_bytes())  # the notebook a reader opens (Colab's rocket button), alone in a folder
    env = _clean_env(DIFFDENS_PROFILE="quick", MPLBACKEND="Agg", DIFFDENS_CACHE=str(work / "cache"))
    _run([str(py), "-c", EXECUTE, nb.name, KERNEL], cwd=work, env=env, timeout=1200)
