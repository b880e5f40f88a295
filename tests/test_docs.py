"""The documentation's own rules: papers cited by author and year (never by seed-file name), every public name
documented with ``Arguments:`` / ``Returns:`` (or ``Fields:`` for a result type), and every public name in the API
reference page ``book/api.md``."""

from __future__ import annotations

import dataclasses
import inspect
import pathlib
import re

import pytest

import diffdens
from diffdens import adapters, book, datasets, testing

ROOT = pathlib.Path(__file__).resolve().parents[1]
SEED_NAME = re.compile(r"\d{3}_[0-9a-f]{16}")
CLASS_SECTIONS = ("Arguments:", "Fields:", "Attributes:")


def _public(module):
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in dir(module) if not n.startswith("_")
                 and getattr(getattr(module, n), "__module__", None) == module.__name__]
    return [(f"{module.__name__}.{n}", getattr(module, n)) for n in names]


PUBLIC = dict(_public(diffdens) + _public(testing) + _public(book) + _public(datasets) + _public(adapters))
DOCUMENTED = {k: v for k, v in PUBLIC.items() if inspect.isfunction(v) or inspect.isclass(v)}


def _fields(cls):
    if dataclasses.is_dataclass(cls):
        return [f.name for f in dataclasses.fields(cls) if f.init]
    if issubclass(cls, tuple) and hasattr(cls, "_fields"):
        return list(cls._fields)
    return []


def test_no_seed_file_names_in_package():
    hits = []
    for path in sorted((ROOT / "diffdens").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".md", ".txt", ".json", ".toml", ".cfg"):
            for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if SEED_NAME.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{i}")
    assert not hits, f"cite papers by author, year and equation, not by seed-file name: {hits}"


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_public_name_has_sections(name):
    obj = DOCUMENTED[name]
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    if inspect.isclass(obj):
        assert any(s in doc for s in CLASS_SECTIONS), f"{name}: docstring lacks an Arguments:/Fields: section"
        missing = [f for f in _fields(obj) if not re.search(rf"\b{re.escape(f)}\b", doc)]
        assert not missing, f"{name}: fields not documented: {missing}"
        return
    params = [p for p in inspect.signature(obj).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if params:
        assert "Arguments:" in doc, f"{name}: docstring lacks an Arguments: section"
        section = doc.split("Arguments:", 1)[1].split("Returns:", 1)[0]
        missing = [p.name for p in params if not re.search(rf"\b{re.escape(p.name)}\b", section)]
        assert not missing, f"{name}: arguments not documented: {missing}"
    assert "Returns:" in doc, f"{name}: docstring lacks a Returns: section"


def test_every_public_name_in_api_page():
    page = (ROOT / "book" / "api.md").read_text()
    listed = set(re.findall(r"\.\. auto(?:function|class|data|module):: ([\w.]+)", page))
    missing = [n for n in diffdens.__all__ if f"diffdens.{n}" not in listed]
    assert not missing, f"book/api.md lacks {missing}"
    for module in (testing, book, datasets):
        missing = [n for n in module.__all__ if f"{module.__name__}.{n}" not in listed]
        assert not missing, f"book/api.md lacks {missing}"
