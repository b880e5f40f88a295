"""The book renders math with no network: Sphinx loads a vendored, pinned MathJax (no build needed here; the built
pages are checked in tests/test_chapters.py::test_math_is_served_locally)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = ROOT / "book" / "_static" / "mathjax"


def _sphinx_config():
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]


def _script(config) -> Path:
    path = config.get("mathjax_path")
    assert path, "_config.yml sets no sphinx.config.mathjax_path: Sphinx would load MathJax from a CDN"
    assert "://" not in path and not path.startswith("//"), f"mathjax_path {path!r} is a URL, not the vendored copy"
    # Sphinx resolves a relative mathjax_path against the static folder(s)
    found = [ROOT / folder / path for folder in config.get("html_static_path", []) if (ROOT / folder / path).is_file()]
    assert found, f"mathjax_path {path!r} is not a file under html_static_path {config.get('html_static_path')}"
    return found[0]


def test_mathjax_path_points_at_the_vendored_copy():
    script = _script(_sphinx_config())
    assert script.resolve().parent == MATHJAX.resolve(), f"{script} is not in {MATHJAX}"
    # CommonHTML loads its fonts relative to the script; every TeX extension is built in (nothing autoloaded)
    fonts = sorted((script.parent / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) >= 20, f"the CommonHTML fonts are missing beside {script.name}"
    text = script.read_text(errors="replace")
    assert 'preLoad("loader","startup","core","input/tex-full"' in text, (
        f"{script.name} is not a -full build: it would fetch TeX extensions at run time")


def test_vendored_copy_is_pinned_small_and_licensed():
    script = _script(_sphinx_config())
    readme = (MATHJAX / "README.md").read_text()
    version = re.search(r"MathJax (\d+\.\d+\.\d+)", readme)
    assert version, "book/_static/mathjax/README.md names no MathJax version"
    assert f'.VERSION="{version.group(1)}"' in script.read_text(errors="replace"), (
        f"the README's version {version.group(1)} is not the one in {script.name}")
    assert "Apache" in readme and "Apache License" in (MATHJAX / "LICENSE").read_text()
    size = sum(p.stat().st_size for p in MATHJAX.rglob("*") if p.is_file())
    assert size < 4_000_000, f"the vendored MathJax takes {size / 1e6:.1f} MB (keep only what the book loads)"
