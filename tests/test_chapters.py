"""Chapter pairs (.md source <-> .ipynb with stored outputs) and the book build."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import chapters  # noqa: E402

MDS = sorted(p for p in (ROOT / "notebooks").glob("*.md") if p.name != "README.md")


def test_there_are_chapters():
    assert MDS, "no chapters found"


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_pair_in_sync_and_stamped(md):
    assert chapters.check_pair(md) == []


def test_every_ipynb_has_a_source():
    for nb in (ROOT / "notebooks").glob("*.ipynb"):
        assert nb.with_suffix(".md").exists(), f"{nb.name} has no paired .md"


def test_hash_check_fails_when_source_changes(tmp_path):
    md = MDS[0]
    shutil.copy(md, tmp_path / md.name)
    shutil.copy(md.with_suffix(".ipynb"), tmp_path / md.with_suffix(".ipynb").name)
    assert chapters.check_pair(tmp_path / md.name) == []
    with open(tmp_path / md.name, "a") as f:
        f.write("\nAn edited sentence.\n")
    problems = chapters.check_pair(tmp_path / md.name)
    assert any("hash mismatch" in p for p in problems), problems
    # an edited code cell is also caught as out of sync
    text = (tmp_path / md.name).read_text().replace("import jax\n", "import jax  # edited\n", 1)
    (tmp_path / md.name).write_text(text)
    assert any("cells differ" in p for p in chapters.check_pair(tmp_path / md.name))


def _copy_pair(md, folder, profile=None):
    import nbformat

    shutil.copy(md, folder / md.name)
    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    if profile is not None:
        nb.metadata[chapters.STAMP_KEY]["profile"] = profile
    nbformat.write(nb, folder / md.with_suffix(".ipynb").name)
    return folder / md.name


def test_require_profile(tmp_path):
    """`check --require-profile full` rejects a quick stamp (and accepts a full one); plain `check` accepts both."""
    required = lambda problems: [p for p in problems if "required" in p]
    md = _copy_pair(MDS[0], tmp_path, "quick")
    assert required(chapters.check_pair(md)) == []
    assert any("'full' required" in p for p in chapters.check_pair(md, require_profile="full"))
    md = _copy_pair(MDS[0], tmp_path, "full")
    assert required(chapters.check_pair(md, require_profile="full")) == []
    assert required(chapters.check(tmp_path, require_profile="quick")) != []


def test_times_table(tmp_path, capsys):
    import nbformat

    for md, wall in zip(MDS[:2], (12.3, 45.6)):
        _copy_pair(md, tmp_path, "full")
        nb_path = tmp_path / md.with_suffix(".ipynb").name
        nb = nbformat.read(nb_path, as_version=4)
        nb.metadata[chapters.STAMP_KEY].update(wall_seconds=wall, device="NVIDIA H100 80GB HBM3")
        nbformat.write(nb, nb_path)
    table = chapters.times_table(tmp_path).splitlines()
    assert table[0].startswith("| chapter | profile | device | wall time (s)")
    assert f"| {MDS[0].stem} | full | NVIDIA H100 80GB HBM3 | 12 |" in table[2]
    assert f"| {MDS[1].stem} | full | NVIDIA H100 80GB HBM3 | 46 |" in table[3]
    assert table[-1].startswith("| total | | | 58 |")
    assert chapters.main(["times"]) == 0 and "| chapter |" in capsys.readouterr().out
    readme = tmp_path / "README.md"
    readme.write_text(f"text\n{chapters.README_BEGIN}\nold\n{chapters.README_END}\nmore\n")
    chapters.update_readme("\n".join(table), readme)
    assert readme.read_text() == f"text\n{chapters.README_BEGIN}\n" + "\n".join(table) + f"\n{chapters.README_END}\nmore\n"


def test_readme_lists_the_stored_wall_times():
    """The README's wall-time table is the one `chapters.py times` prints for the stored notebooks."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index(chapters.README_BEGIN) + len(chapters.README_BEGIN): text.index(chapters.README_END)]
    assert block.strip() == chapters.times_table().strip(), "run `python scripts/chapters.py times --update-readme`"


def test_every_chapter_in_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for md in MDS:
        assert f"notebooks/{md.stem}" in toc, f"{md.stem} missing from _toc.yml"


def test_book_builds(tmp_path):
    """The book builds from stored outputs with warnings as errors (toc, cross-references, bibliography)."""
    exe = Path(sys.executable).parent / "jupyter-book"
    if not exe.exists():
        pytest.skip("jupyter-book is not installed (e.g. on the GPU machine, which has no Jupyter)")
    out = tmp_path / "book"
    r = subprocess.run(
        [str(exe), "build", str(ROOT), "--path-output", str(out), "--warningiserror", "--keep-going"],
        capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    html = out / "_build" / "html"
    for md in MDS:
        page = html / "notebooks" / f"{md.stem}.html"
        assert page.exists(), f"{page} not built"
        assert "colab.research.google.com" in page.read_text(), f"no Colab launch button on {md.stem}"
    assert (html / "book" / "references.html").exists()
