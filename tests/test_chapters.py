"""Chapter pairs (.md source <-> .ipynb with stored outputs) and the book build."""

import re
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
    """In sync with its .md, stamped from the current source, and from the full profile (what readers see)."""
    assert chapters.check_pair(md, require_profile="full") == []


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


def test_reprose_keeps_outputs_and_refuses_code_changes(tmp_path, capsys):
    """`reprose`: an edit of the prose only is copied into the stored notebook with every code cell's outputs kept and
    the stamp updated (so the pair checks clean again); an edited code cell is refused, naming it, and nothing is
    written. No execution."""
    import nbformat

    md = _copy_pair(MDS[0], tmp_path)
    ipynb = md.with_suffix(".ipynb")
    before = nbformat.read(ipynb, as_version=4)
    code_before = [(c.source, c.outputs, c.execution_count) for c in before.cells if c.cell_type == "code"]
    text = md.read_text()
    head = re.search(r"^# .*\n", text, re.M).end()
    md.write_text(text[:head] + "\nA sentence added to the prose.\n\n+++\n\nAnd a new markdown cell.\n" + text[head:])
    assert any("hash mismatch" in p for p in chapters.check_pair(md))
    assert chapters.main(["reprose", str(md)]) == 0
    assert chapters.check_pair(md, require_profile="full") == []
    after = nbformat.read(ipynb, as_version=4)
    assert [(c.source, c.outputs, c.execution_count) for c in after.cells if c.cell_type == "code"] == code_before
    assert "A sentence added to the prose." in after.cells[0].source
    assert "And a new markdown cell." in after.cells[1].source
    stamp, old_stamp = after.metadata[chapters.STAMP_KEY], before.metadata[chapters.STAMP_KEY]
    assert stamp["source_sha256"] == chapters.source_hash(md) and "prose_updated" in stamp
    assert {k: v for k, v in stamp.items() if k not in ("source_sha256", "prose_updated")} == \
        {k: v for k, v in old_stamp.items() if k != "source_sha256"}
    nbformat.validate(after)
    # a changed code cell: refused, naming it; the stored notebook is untouched
    stored = ipynb.read_bytes()
    md.write_text(md.read_text().replace("import jax\n", "import jax  # edited\n", 1))
    with pytest.raises(chapters.CodeChanged, match=r"code cell \d+ .*differs"):
        chapters.reprose(md)
    capsys.readouterr()
    assert chapters.main(["reprose", str(md)]) == 1 and "refused" in capsys.readouterr().err
    assert ipynb.read_bytes() == stored
    # a removed code cell is refused too
    nb_src = md.read_text().replace("import jax  # edited\n", "import jax\n", 1)
    last = nb_src.rindex("```{code-cell}")
    md.write_text(nb_src[:last])
    with pytest.raises(chapters.CodeChanged, match="gone from the .md"):
        chapters.reprose(md)


def test_which_estimator_execute_reproduces_glued_values():
    """The benchmark chapter computes its glued values from the committed benchmark JSON only (package data), so
    executed afresh (quick profile, no figure compared) it reproduces every glued text value of its stored notebook:
    the stored outputs and the shipped JSON agree (issue 23). Executes the chapter (tens of seconds)."""
    pytest.importorskip("nbclient")
    import nbformat
    import colab

    md = _chapter("which_estimator")
    values = lambda nb: {k: d["text/plain"] for k, d in colab.glue_data(nb).items()
                         if "text/plain" in d and not any(m.startswith("image/") for m in d)}
    stored = values(nbformat.read(md.with_suffix(".ipynb"), as_version=4))
    assert stored, f"{md.stem}: no glued values in the stored notebook"
    fresh = values(chapters.execute(md, "quick", timeout=600))
    changed = {k: (stored[k], fresh.get(k)) for k in stored if fresh.get(k) != stored[k]}
    assert not changed, (f"{md.stem}: re-executed from the committed JSON, {len(changed)} of {len(stored)} glued values "
                         f"differ from the stored notebook (stored, fresh): {changed}")


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
    # --update-readme rewrites every marked block: the README's and the book's (book/intro.md)
    assert [p.relative_to(chapters.ROOT).as_posix() for p in chapters.TIMES_FILES] == ["README.md", "book/intro.md"]
    intro = tmp_path / "intro.md"
    intro.write_text(f"# Intro\n{chapters.README_BEGIN}\n{chapters.README_END}\n")
    chapters.update_times("| new |", [readme, intro])
    assert all(f"{chapters.README_BEGIN}\n| new |\n{chapters.README_END}" in f.read_text() for f in (readme, intro))


@pytest.mark.parametrize("path", chapters.TIMES_FILES, ids=lambda p: p.name)
def test_readme_and_book_list_the_stored_wall_times(path):
    """The wall-time tables of the README and of the book's intro are the one `chapters.py times` prints for the
    stored notebooks."""
    text = path.read_text()
    assert chapters.README_BEGIN in text and chapters.README_END in text, f"{path.name}: no marked wall-time block"
    block = text[text.index(chapters.README_BEGIN) + len(chapters.README_BEGIN): text.index(chapters.README_END)]
    assert block.strip() == chapters.times_table().strip(), "run `python scripts/chapters.py times --update-readme`"


def test_every_chapter_in_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for md in MDS:
        assert f"notebooks/{md.stem}" in toc, f"{md.stem} missing from _toc.yml"


@pytest.fixture(scope="module")
def built_html(tmp_path_factory):
    """The book built once from stored outputs with warnings as errors (toc, cross-references, bibliography)."""
    exe = Path(sys.executable).parent / "jupyter-book"
    if not exe.exists():
        pytest.skip("jupyter-book is not installed (e.g. on the GPU machine, which has no Jupyter)")
    out = tmp_path_factory.mktemp("book")
    r = subprocess.run(
        [str(exe), "build", str(ROOT), "--path-output", str(out), "--warningiserror", "--keep-going"],
        capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    return out / "_build" / "html"


def _page(html: Path, md: Path):
    from bs4 import BeautifulSoup

    page = html / "notebooks" / f"{md.stem}.html"
    assert page.exists(), f"{md.stem}: page {page} not built"
    soup = BeautifulSoup(page.read_text(), "html.parser")
    article = soup.find("article")
    assert article is not None, f"{md.stem}: no <article> in the built page"
    return soup, article


def _chapter(slug: str) -> Path:
    """A chapter by its slug, whatever its number (chapters get renumbered)."""
    found = [md for md in MDS if md.stem.split("_", 1)[1] == slug]
    assert found, f"no chapter notebooks/NN_{slug}.md"
    return found[0]


def _markdown_tables(text: str) -> int:
    """Pipe tables in a Markdown string: a header row followed by a |---| separator row."""
    lines = [l.strip() for l in text.splitlines()]
    return sum(1 for a, b in zip(lines, lines[1:]) if a.startswith("|") and re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", b))


def test_book_builds(built_html):
    html = built_html
    for md in MDS:
        page = html / "notebooks" / f"{md.stem}.html"
        assert page.exists(), f"{page} not built"
        assert "colab.research.google.com" in page.read_text(), f"no Colab launch button on {md.stem}"
    assert (html / "book" / "references.html").exists()


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_computed_tables_render(built_html, md):
    """Every Markdown table, in the prose or displayed by a cell (display(Markdown(...))), is an HTML <table>."""
    import nbformat

    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    prose = sum(_markdown_tables(c.source) for c in nb.cells if c.cell_type == "markdown")
    computed = sum(_markdown_tables(o.get("data", {}).get("text/markdown", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    _, article = _page(built_html, md)
    n = len(article.find_all("table"))
    assert n >= prose + computed, (f"{md.stem}: {n} <table> in the built page for {prose} tables in the prose and "
                                   f"{computed} computed tables (Markdown outputs not rendered as MyST?)")


def test_which_estimator_tables_render(built_html):
    """The benchmark chapter: one <table> per computed table (and per static one)."""
    md = _chapter("which_estimator")
    import nbformat

    nb = nbformat.read(md.with_suffix(".ipynb"), as_version=4)
    computed = sum(_markdown_tables(o.get("data", {}).get("text/markdown", ""))
                   for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    prose = sum(_markdown_tables(c.source) for c in nb.cells if c.cell_type == "markdown")
    assert computed >= 1, f"{md.stem}: no computed table in its stored outputs"
    _, article = _page(built_html, md)
    assert len(article.find_all("table")) == computed + prose, (
        f"{md.stem}: {len(article.find_all('table'))} <table> for {computed} computed + {prose} static tables")


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_figures_numbered_and_captioned(built_html, md):
    """Every image of a chapter figure sits in a <figure> with a <figcaption> (a {glue:figure} with a caption)."""
    _, article = _page(built_html, md)
    bare = []
    for img in article.find_all("img"):
        if "_images/" not in img.get("src", ""):
            continue  # logos and badges, not chapter figures
        fig = img.find_parent("figure")
        if fig is None or fig.find("figcaption") is None or not fig.find("figcaption").get_text(strip=True):
            bare.append(img.get("src").rsplit("/", 1)[-1][:16])
    assert not bare, (f"{md.stem}: {len(bare)} figure image(s) without a captioned <figure> "
                      f"(use dd.book.figure + {{glue:figure}} with a caption): {bare}")
    # numbered by chapter: the N-th chapter's figures are "Fig. N.1", "Fig. N.2", ... (one numbered toc part)
    chapter = int(md.stem.split("_", 1)[0])
    labels = [f.find("figcaption").get_text(" ", strip=True) for f in article.find_all("figure") if f.find("figcaption")]
    wrong = [l[:24] for l in labels if not re.match(rf"Fig\.?\s*{chapter}\.\d+", l)]
    assert not wrong, f"{md.stem}: figure captions not numbered {chapter}.k: {wrong}"


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_chapter_links(built_html, md):
    """At least one {doc} link to another chapter, and a link to the notation page, in the chapter body."""
    _, article = _page(built_html, md)
    hrefs = [a.get("href", "") for a in article.find_all("a", class_="reference internal")]
    pages = {h.split("#")[0].rsplit("/", 1)[-1] for h in hrefs if h and not h.startswith("#")}
    others = {p for p in pages if re.fullmatch(r"\d\d_\w+\.html", p) and p != f"{md.stem}.html"}
    assert others, f"{md.stem}: no {{doc}} link to another chapter ({{doc}}`NN_slug`)"
    assert "notation.html" in pages, f"{md.stem}: no link to the notation page ({{doc}}`../book/notation`)"


_SOLUTION_LABEL = re.compile(r"Solutions? to exercises? (\d+(?:(?:, | and )\d+)*)", re.I)


def _solved(label: str) -> set[int]:
    return {int(n) for n in re.findall(r"\d+", label)}


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_exercises_with_checked_solution(md):
    """The chapter ends with `## Exercises`; every exercise has a solution hidden behind a toggle labelled as one: a
    ```{admonition} Solution to exercise N``` with `:class: dropdown`, or a code cell tagged hide-cell whose toggle
    (MyST-NB's `mystnb.code_prompt_show`) and first comment name the exercise. Nothing else follows the list: no
    solution in plain view. At least one solution is computed (a checked code cell)."""
    import jupytext

    nb = jupytext.read(md)
    heads = [i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
             and re.search(r"^## Exercises\s*$", c.source, re.M)]
    assert heads, f"{md.stem}: no '## Exercises' section"
    head = nb.cells[heads[-1]].source
    exercises = {int(n) for n in re.findall(r"^(\d+)\. ", head.split("## Exercises", 1)[1], re.M)}
    assert exercises == set(range(1, len(exercises) + 1)) and exercises, f"{md.stem}: exercises not numbered 1..n"
    solved: set[int] = set()
    computed = 0
    for k, c in enumerate(nb.cells[heads[-1]:]):
        if c.cell_type == "code" and c.source.strip():
            m = _SOLUTION_LABEL.match(c.source.lstrip("# "))
            prompt = c.metadata.get("mystnb", {}).get("code_prompt_show", "")
            assert m and "hide-cell" in c.metadata.get("tags", []), (
                f"{md.stem}: a code cell after '## Exercises' that is not a hidden solution "
                f"(tag hide-cell, first line '# Solution to exercise N'): {c.source[:80]!r}")
            assert _SOLUTION_LABEL.search(prompt) and _solved(_SOLUTION_LABEL.search(prompt)[1]) == _solved(m[1]), (
                f"{md.stem}: the toggle of {m[0]!r} must say so (metadata mystnb.code_prompt_show)")
            solved |= _solved(m[1])
            computed += 1
        elif c.cell_type == "markdown":
            text = c.source.split("## Exercises", 1)[1] if k == 0 else c.source
            if k == 0:   # the list itself, then only solutions
                text = re.sub(r"^(\d+\. |   ).*\n?", "", text.lstrip("\n"), flags=re.M)
            blocks = re.findall(r"^(`{3,})\{admonition\} (.*)\n:class: dropdown\n(?:.*\n)*?\1\s*$", text, re.M)
            rest = re.sub(r"^(`{3,})\{admonition\}.*\n(?:.*\n)*?\1\s*$", "", text, flags=re.M)
            assert not rest.strip(), f"{md.stem}: text after the exercises outside a solution dropdown: {rest.strip()[:120]!r}"
            for _, title in blocks:
                m = _SOLUTION_LABEL.fullmatch(title.strip())
                assert m, f"{md.stem}: a dropdown after the exercises not titled 'Solution to exercise N': {title!r}"
                solved |= _solved(m[1])
    assert computed, f"{md.stem}: no computed solution (a code cell tagged hide-cell) after '## Exercises'"
    assert solved >= exercises, f"{md.stem}: exercises without a solution: {sorted(exercises - solved)}"


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_chapter_title_unnumbered(md):
    """The toc numbers the chapters: a number written into the H1 would show twice ("3. 3. Title")."""
    titles = re.findall(r"^# (.*)$", re.sub(r"```.*?```", "", md.read_text(), flags=re.S), re.M)
    assert titles, f"{md.stem}: no H1 title"
    assert not re.match(r"\d+(\.\d+)*\.?\s", titles[0]), f"{md.stem}: numbered title {titles[0]!r}"


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_figures_have_alt_text(md):
    """Every {glue:figure} carries `:alt:` (else the alt text is the image's hashed file name)."""
    figs = re.findall(r"^```\{glue:figure\}\s*(\S+)\n((?::[^\n]*\n)*)", md.read_text(), re.M)
    bare = [name for name, opts in figs if not re.search(r"^:alt:\s*\S", opts, re.M)]
    assert not bare, f"{md.stem}: figures without :alt: {bare}"


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_no_fixed_width_tables(md):
    """Tables are rendered (display(Markdown(...)) of a pipe table), not printed as fixed-width text: no print of a
    padded header (f"{'name':>10s}") and no print with a padded field inside a loop (one result line per case with a
    padded label, f"{name:6s} ...", or aligned columns, f"{k:6d}": a listing to collect into a table instead)."""
    import jupytext

    bad = []
    for c in jupytext.read(md).cells:
        if c.cell_type != "code":
            continue
        lines = c.source.splitlines()
        for i, line in enumerate(lines):
            if not re.search(r"\bprint\(f[\"']", line):
                continue
            header = re.search(r"\{'[^']*':[<>^]?\d+s?\}", line)
            widths = len(re.findall(r":[<>^+]?\d+(?:\.\d+)?[sdfe]?\}", line))  # padded fields, e.g. {x:12.4f}
            indented = len(line) - len(line.lstrip()) > 0
            looped = indented and any(re.match(r"\s*for .*:\s*$", l) for l in lines[max(0, i - 6):i])
            if header or (looped and widths >= 1):
                bad.append(line.strip()[:90])
    assert not bad, f"{md.stem}: fixed-width tables printed (render them as Markdown tables): {bad}"


@pytest.mark.parametrize("md", MDS, ids=lambda p: p.stem)
def test_tables_numbered(md):
    """Table captions in the prose ("**Table N.k:** ...") carry the chapter's toc number and count up from 1."""
    number = int(md.stem.split("_", 1)[0])
    labels = re.findall(r"\*\*Table (\d+)\.(\d+):?\*\*", md.read_text())
    assert [(int(a), int(b)) for a, b in labels] == [(number, k) for k in range(1, len(labels) + 1)], (
        f"{md.stem}: table captions {labels} are not {number}.1, {number}.2, ...")


def test_math_is_served_locally(built_html):
    """No built page loads MathJax (or any script with "mathjax" in its name) from a URL; pages with math load the
    vendored copy that _config.yml's mathjax_path names, and it was copied into the build."""
    from bs4 import BeautifulSoup

    pages = sorted(built_html.rglob("*.html"))
    assert pages, f"no pages under {built_html}"
    remote, local = [], set()
    for page in pages:
        for script in BeautifulSoup(page.read_text(), "html.parser").find_all("script"):
            src = script.get("src", "")
            if "mathjax" not in src.lower():
                continue
            if "://" in src or src.startswith("//"):
                remote.append(f"{page.relative_to(built_html)}: {src}")
            else:
                local.add((page.parent / src.split("?")[0]).resolve())
    assert not remote, f"pages load MathJax from the network: {remote[:5]}"
    assert local, "no page loads the vendored MathJax"
    missing = [str(p) for p in local if not p.is_file()]
    assert not missing, f"pages load a MathJax script the build did not copy: {missing}"
    assert all(p.name == "tex-chtml-full.js" and p.parent.name == "mathjax" for p in local), local
    assert (next(iter(local)).parent / "output" / "chtml" / "fonts" / "woff-v2").is_dir()


def test_references_have_links(built_html):
    """Every bibliography entry carries a doi or url; the rendered references hold no internal notes."""
    bib = (ROOT / "book" / "references.bib").read_text()
    entries = re.findall(r"@\w+\{([^,]+),(.*?)\n\}", bib, re.S)
    assert entries, "no entries parsed from book/references.bib"
    missing = [k for k, body in entries if not re.search(r"^\s*(doi|url)\s*=", body, re.M | re.I)]
    assert not missing, f"book/references.bib: entries without a doi or url: {missing}"
    assert "seed file" not in bib.lower(), "book/references.bib holds internal 'Seed file' notes"
    refs = (built_html / "book" / "references.html").read_text()
    assert "seed file" not in refs.lower(), "the rendered references page shows a 'Seed file' note"


# Sentences about how or where a chapter was produced (machines, load, what was at hand), not about its subject.
PRODUCTION_PHRASES = [
    "this machine", "cpu-only", "loaded", "no gpu was", "at hand", "this session", "was lent", "not lent",
    "under load", "load average", "2-core", "two-core", "other jobs", "shared machine", "gpu machine",
    "h100 machine", "what was run, and what was not",
]


@pytest.mark.parametrize("src", MDS + sorted((ROOT / "book").glob("*.md")), ids=lambda p: p.stem)
def test_no_production_circumstances(src):
    hits = [f"line {i}: {phrase!r}" for i, line in enumerate(src.read_text().splitlines(), 1)
            for phrase in PRODUCTION_PHRASES if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", line, re.I)]
    assert not hits, f"{src.relative_to(ROOT)} speaks of the circumstances of its production: {hits}"
