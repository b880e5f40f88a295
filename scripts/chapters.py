#!/usr/bin/env python
"""Chapter pairs: notebooks/NN_slug.md (reviewed source) <-> notebooks/NN_slug.ipynb (stored outputs + stamp).

    python scripts/chapters.py refresh --profile full notebooks/03_*.md   # execute, stamp, write the .ipynb
    python scripts/chapters.py check                                      # every pair in sync, hashes match
    python scripts/chapters.py check --require-profile full               # ... and every stamp says `full`
    python scripts/chapters.py times                                      # markdown table: profile, device, wall s
    python scripts/chapters.py times --update-readme                      # ... also into README.md and book/intro.md
    python scripts/chapters.py colab [notebooks/03_*.ipynb]               # write colab/NN_slug.ipynb (scripts/colab.py)
    python scripts/chapters.py reprose notebooks/03_*.md                  # prose-only edit: keep the stored outputs

The stamp lives in the .ipynb metadata under "diffdens": profile, device, sha256 of the .md, versions, date.
`refresh` also regenerates the Colab notebooks (colab/, plain Jupyter markdown made from the stored notebooks), and
`check` fails when one is missing, stale or holds MyST syntax, or when a setup cell installs from another URL than
_config.yml's repository.url.

`reprose` is for an edit of the prose only: when every code cell of the .md is the stored notebook's (same sources,
same order), it copies the markdown cells into the stored notebook, keeps every code cell's outputs, updates the
stamp's source_sha256 and records `prose_updated`; it refuses, naming the cell, when any code cell differs (then the
chapter must be re-executed with `refresh`). Run `colab` afterwards.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import colab  # noqa: E402  (scripts/colab.py)

NOTEBOOKS = ROOT / "notebooks"
STAMP_KEY = "diffdens"
_PREALLOC = "XLA_PYTHON_CLIENT_PREALLOCATE"
_PARENT_ONLY: dict = {}


def source_hash(md: Path) -> str:
    return hashlib.sha256(Path(md).read_bytes()).hexdigest()


def chapter_pairs(folder: Path = NOTEBOOKS):
    mds = sorted(p for p in Path(folder).glob("*.md") if p.name != "README.md")
    ipynbs = sorted(Path(folder).glob("*.ipynb"))
    return mds, ipynbs


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


def check_pair(md: Path, require_profile: str | None = None) -> list[str]:
    """Problems with one pair: missing .ipynb, cells out of sync, missing stamp, a stale source hash, or (with
    ``require_profile``) a stamp from another profile."""
    import jupytext
    import nbformat

    md = Path(md)
    ipynb = md.with_suffix(".ipynb")
    if not ipynb.exists():
        return [f"{md.name}: no paired {ipynb.name}"]
    problems = []
    src = jupytext.read(md)
    nb = nbformat.read(ipynb, as_version=4)
    if _cells(src) != _cells(nb):
        problems.append(f"{ipynb.name}: cells differ from {md.name} (run `make refresh CHAPTERS={md.relative_to(ROOT) if md.is_relative_to(ROOT) else md}`)")
    stamp = nb.metadata.get(STAMP_KEY)
    if not stamp:
        problems.append(f"{ipynb.name}: no '{STAMP_KEY}' stamp in its metadata")
    else:
        for k in ("profile", "device", "source_sha256"):
            if k not in stamp:
                problems.append(f"{ipynb.name}: stamp lacks '{k}'")
        if stamp.get("source_sha256") != source_hash(md):
            problems.append(f"{ipynb.name}: stored outputs were not produced from the current {md.name} (hash mismatch)")
        if stamp.get("profile") not in ("quick", "full"):
            problems.append(f"{ipynb.name}: stamp profile must be quick or full, got {stamp.get('profile')!r}")
        elif require_profile and stamp.get("profile") != require_profile:
            problems.append(f"{ipynb.name}: stored outputs are from the {stamp.get('profile')!r} profile, "
                            f"{require_profile!r} required (run `make refresh PROFILE={require_profile} CHAPTERS=...`)")
    missing_outputs = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.strip() and c.get("execution_count") is None]
    if missing_outputs:
        problems.append(f"{ipynb.name}: code cells {missing_outputs[:5]} were never executed")
    return problems


def check(folder: Path = NOTEBOOKS, require_profile: str | None = None) -> list[str]:
    mds, ipynbs = chapter_pairs(folder)
    problems = [f"{nb.name}: no paired {nb.with_suffix('.md').name}" for nb in ipynbs if not nb.with_suffix(".md").exists()]
    for md in mds:
        problems += check_pair(md, require_profile)
    stored = [md.with_suffix(".ipynb") for md in mds if md.with_suffix(".ipynb").exists()]
    if Path(folder).resolve() == NOTEBOOKS.resolve():
        problems += colab.check(stored, ROOT)
        problems += colab.setup_url_problems(stored, ROOT)
    return problems


def write_colab(chapters=None) -> list[Path]:
    """Regenerate colab/NN_slug.ipynb for the given stored notebooks (.ipynb or their .md; default all)."""
    stored = sorted({Path(c).resolve().with_suffix(".ipynb") for c in chapters} if chapters
                    else {md.with_suffix(".ipynb") for md in chapter_pairs()[0]})
    missing = [p for p in stored if not p.exists()]
    if missing:
        raise SystemExit(f"no stored notebook {missing[0]}")
    return colab.write(stored, ROOT)


def stamps(folder: Path = NOTEBOOKS) -> list[tuple[str, dict]]:
    """(chapter stem, stamp dict or {}) for every stored notebook, in chapter order."""
    import nbformat

    out = []
    for md in chapter_pairs(folder)[0]:
        ipynb = md.with_suffix(".ipynb")
        stamp = nbformat.read(ipynb, as_version=4).metadata.get(STAMP_KEY, {}) if ipynb.exists() else {}
        out.append((md.stem, dict(stamp)))
    return out


def times_table(folder: Path = NOTEBOOKS) -> str:
    """A markdown table of each chapter's stamp: profile, device, wall seconds, date; and the total."""
    rows = stamps(folder)
    lines = ["| chapter | profile | device | wall time (s) | executed |", "|---|---|---|---:|---|"]
    total = 0.0
    for stem, st in rows:
        w = st.get("wall_seconds")
        total += w or 0.0
        lines.append(f"| {stem} | {st.get('profile', '-')} | {st.get('device', '-')} | "
                     f"{'-' if w is None else f'{w:.0f}'} | {st.get('executed', '-')[:10]} |")
    lines.append(f"| total | | | {total:.0f} | |")
    return "\n".join(lines)


README_BEGIN, README_END = "<!-- chapters.py times: begin -->", "<!-- chapters.py times: end -->"
# the marked blocks that hold the table: the README's and the book's (the intro's "Wall times" section)
TIMES_FILES = (ROOT / "README.md", ROOT / "book" / "intro.md")


def update_readme(table: str, readme: Path = ROOT / "README.md") -> None:
    """Replace the table between the two markers (README_BEGIN, README_END) of ``readme`` with ``table``."""
    text = Path(readme).read_text()
    i, j = text.find(README_BEGIN), text.find(README_END)
    if i < 0 or j < i:
        raise SystemExit(f"{readme}: no '{README_BEGIN}' ... '{README_END}' block")
    Path(readme).write_text(text[: i + len(README_BEGIN)] + "\n" + table + "\n" + text[j:])


def update_times(table: str, files=TIMES_FILES) -> None:
    """Rewrite the marked wall-time block in every one of ``files`` (README.md and book/intro.md)."""
    for f in files:
        update_readme(table, f)


def execute(md: Path, profile: str, timeout: int = 3600, failed_dir: Path | None = None, cold: bool = True):
    """Execute the chapter from its .md in ``profile`` (with an empty model cache unless ``cold`` is false) and
    return the executed notebook, unstamped and unwritten. When a cell fails and ``failed_dir`` is given, the partly
    executed notebook (with the traceback) is written there first."""
    import jupytext
    import nbclient
    import nbformat

    md = Path(md).resolve()
    nb = jupytext.read(md)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    env = dict(os.environ, DIFFDENS_PROFILE=profile, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               MPLBACKEND="module://matplotlib_inline.backend_inline")
    # a fresh model cache per chapter: the stamped wall time is what a reader's first run costs
    cold_cache = tempfile.TemporaryDirectory(prefix="diffdens-cache-") if cold else None
    if cold_cache is not None:
        env["DIFFDENS_CACHE"] = cold_cache.name
    if _PARENT_ONLY.get(_PREALLOC):  # set below for this process only: the kernel keeps JAX's default
        env.pop(_PREALLOC, None)
    old = os.environ.copy()
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(md.parent)}})
        try:
            client.execute()
        except Exception:
            if failed_dir is not None:
                Path(failed_dir).mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, Path(failed_dir) / f"{md.stem}.failed.ipynb")
            raise
    finally:
        os.environ.clear()
        os.environ.update(old)
        if cold_cache is not None:
            cold_cache.cleanup()
    return nb


def refresh(md: Path, profile: str, timeout: int = 3600, failed_dir: Path | None = None, cold: bool = True) -> Path:
    """Execute the chapter from its .md in ``profile`` (:func:`execute`) and write the stamped .ipynb."""
    import nbformat

    md = Path(md).resolve()
    t = time.time()
    nb = execute(md, profile, timeout=timeout, failed_dir=failed_dir, cold=cold)
    # this process imports JAX only to name the device for the stamp: on a GPU it must not reserve the memory that
    # the next chapter's kernel needs
    if _PREALLOC not in os.environ:
        os.environ[_PREALLOC] = "false"
        _PARENT_ONLY[_PREALLOC] = True
    import jax

    sys.path.insert(0, str(ROOT))
    from diffdens.book import device_name

    nb.metadata[STAMP_KEY] = {
        "profile": profile,
        "device": device_name(),
        "source_sha256": source_hash(md),
        "jax": jax.__version__,
        "executed": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": round(time.time() - t, 1),
    }
    out = md.with_suffix(".ipynb")
    nbformat.write(nb, out)
    return out


class CodeChanged(Exception):
    """A chapter's code cells differ from its stored notebook's: its outputs cannot be kept (re-execute it)."""


def reprose(md: Path, today: str | None = None) -> Path:
    """Copy the prose (markdown cells) of ``md`` into its stored notebook, keeping every code cell and its outputs,
    when the code cells (sources, in order) are the stored ones; update the stamp's ``source_sha256`` and add
    ``prose_updated`` (``today``, default the current UTC time, ISO 8601). Raises CodeChanged naming the first
    code cell that differs (or a missing or extra one), FileNotFoundError without a stored notebook, ValueError
    without a stamp."""
    import jupytext
    import nbformat

    md = Path(md).resolve()
    ipynb = md.with_suffix(".ipynb")
    if not ipynb.exists():
        raise FileNotFoundError(f"{md.name}: no stored {ipynb.name} to keep the outputs of (run `refresh`)")
    src = jupytext.read(md)
    nb = nbformat.read(ipynb, as_version=4)
    if not nb.metadata.get(STAMP_KEY):
        raise ValueError(f"{ipynb.name}: no '{STAMP_KEY}' stamp: its outputs are of unknown provenance (run `refresh`)")
    new_code = [c for c in src.cells if c.cell_type == "code"]
    old_code = [c for c in nb.cells if c.cell_type == "code"]
    for k in range(max(len(new_code), len(old_code))):
        first = lambda cells: repr((cells[k].source.strip().splitlines() or [""])[0][:80])
        if k >= len(new_code):
            what = f"the stored code cell {k + 1} ({first(old_code)}) is gone from the .md"
        elif k >= len(old_code):
            what = f"code cell {k + 1} ({first(new_code)}) is new"
        elif new_code[k].source.strip() != old_code[k].source.strip():
            what = f"code cell {k + 1} ({first(new_code)}) differs from the stored one"
        else:
            continue
        raise CodeChanged(f"{md.name}: {what} in {ipynb.name}; the code changed, so the chapter needs `refresh`, "
                          f"not `reprose`")
    old_md = iter([c for c in nb.cells if c.cell_type == "markdown"])
    code = iter(old_code)
    cells = []
    for c in src.cells:
        if c.cell_type == "code":
            kept = next(code)
            kept.source = c.source
            meta = dict(c.metadata)  # tags and options from the source; nbclient's timings from the run
            if "execution" in kept.metadata:
                meta["execution"] = kept.metadata["execution"]
            kept.metadata = nbformat.from_dict(meta)
            cells.append(kept)
        else:
            prev = next(old_md, None)
            if prev is not None and "id" in prev:
                c["id"] = prev["id"]  # stable ids: a small diff of the stored notebook
            cells.append(c)
    nb.cells = cells
    nb.metadata[STAMP_KEY]["source_sha256"] = source_hash(md)
    nb.metadata[STAMP_KEY]["prose_updated"] = today or datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds")
    nbformat.write(nb, ipynb)
    return ipynb


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("refresh", help="execute chapters and stamp their .ipynb")
    r.add_argument("--profile", choices=("quick", "full"), required=True)
    r.add_argument("chapters", nargs="*", help="notebooks/NN_slug.md files (default: all)")
    r.add_argument("--cell-timeout", type=int, default=3600, help="seconds per cell (default 3600)")
    r.add_argument("--failed-dir", type=Path, help="write a failing chapter's partly executed notebook here")
    r.add_argument("--warm-cache", action="store_true",
                   help="reuse the model cache ($DIFFDENS_CACHE) instead of a fresh one per chapter")
    c = sub.add_parser("check", help="every pair in sync and stamped from the current source")
    c.add_argument("--require-profile", choices=("quick", "full"),
                   default=os.environ.get("DIFFDENS_REQUIRE_PROFILE") or None,
                   help="also fail when a stamp is from another profile (env DIFFDENS_REQUIRE_PROFILE)")
    cb = sub.add_parser("colab", help="write colab/NN_slug.ipynb from the stored notebooks (default: all)")
    cb.add_argument("chapters", nargs="*", help="notebooks/NN_slug.ipynb (or .md) files")
    rp = sub.add_parser("reprose", help="copy edited prose into the stored notebooks, keeping their outputs "
                                        "(refused when a code cell changed)")
    rp.add_argument("chapters", nargs="+", help="notebooks/NN_slug.md files")
    tm = sub.add_parser("times", help="print a markdown table of each chapter's stamp (profile, device, wall time)")
    tm.add_argument("--update-readme", action="store_true",
                    help="also rewrite the marked table in README.md and in book/intro.md (the book's copy)")
    a = p.parse_args(argv)
    if a.cmd == "times":
        table = times_table()
        print(table)
        if a.update_readme:
            update_times(table)
        return 0
    if a.cmd == "colab":
        chapters = [c for pat in a.chapters for c in sorted(glob.glob(pat))]
        if a.chapters and not chapters:
            raise SystemExit(f"no chapter matches {a.chapters}")
        changed = write_colab(chapters)
        print("\n".join(f"{p.relative_to(ROOT)}: written" for p in changed) or "colab notebooks up to date")
        return 0
    if a.cmd == "reprose":
        mds = [Path(c) for pat in a.chapters for c in sorted(glob.glob(pat))]
        if not mds:
            raise SystemExit(f"no chapter matches {a.chapters}")
        failed = 0
        for md in mds:
            try:
                out = reprose(md)
            except (CodeChanged, FileNotFoundError, ValueError) as exc:
                print(f"refused: {exc}", file=sys.stderr)
                failed += 1
                continue
            print(f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: prose updated, outputs kept")
        if failed < len(mds):
            print("now run `python scripts/chapters.py colab` (the Colab notebooks carry the prose)")
        return 1 if failed else 0
    if a.cmd == "check":
        problems = check(require_profile=a.require_profile)
        print("\n".join(problems) or "all chapter pairs in sync")
        return 1 if problems else 0
    mds = [Path(c) for pat in (a.chapters or ["notebooks/*.md"]) for c in sorted(glob.glob(pat))]
    mds = [m for m in mds if m.name != "README.md"]
    for md in mds:
        t = time.time()
        out = refresh(md, a.profile, timeout=a.cell_timeout, failed_dir=a.failed_dir, cold=not a.warm_cache)
        print(f"{out.relative_to(ROOT)}: {a.profile} profile, {time.time() - t:.0f} s")
    # every Colab notebook, not only the refreshed ones: another chapter's cross-references may have moved
    try:
        changed = write_colab()
    except ImportError as exc:  # e.g. a GPU machine with JAX and nbclient but not the book's tooling (pybtex)
        print(f"colab/ not regenerated ({exc}): run `python scripts/chapters.py colab` where the book builds")
        return 0
    for p in changed:
        print(f"{p.relative_to(ROOT)}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
