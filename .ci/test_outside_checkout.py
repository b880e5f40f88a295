"""What a reader outside the repository runs (Colab, or after `pip install`): build the wheel, install it into a
fresh virtual environment, and execute two chapters from a temporary folder outside the checkout.

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


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """A fresh venv with the built wheel (and a kernel to execute notebooks), and a work folder outside the repo."""
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
    _run([str(py), "-m", "pip", "install", "-q", wheels[0], "nbclient", "nbformat", "ipykernel"], env=env)
    _run([str(py), "-m", "ipykernel", "install", "--prefix", str(tmp / "venv"), "--name", KERNEL], env=env)
    work = tmp / "work"
    work.mkdir()
    # the package comes from the wheel, its benchmark data included
    out = _run([str(py), "-c", "import diffdens, importlib.resources as r; print(diffdens.__file__); "
                "print(sum(1 for f in (r.files('diffdens') / '_data' / 'benchmarks').iterdir() if f.name.endswith('.json')))"],
               cwd=work, env=env)
    path, n_json = out.split()
    assert "site-packages" in path and not path.startswith(str(ROOT)), path
    assert int(n_json) > 0, "no benchmark JSON shipped in the wheel"
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
