"""Colab notebooks (colab/NN_slug.ipynb, written by scripts/colab.py from the stored notebooks): present, fresh,
plain markdown with the glued values in place and the chapter's own code cells; and the converter on small MyST
snippets."""

import re
import shutil
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")  # a [book] package: absent from the oldest (core) set

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import colab  # noqa: E402
import colab_launch  # noqa: E402

CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.md") if p.name != "README.md")


@pytest.fixture(scope="module")
def index():
    return colab.BookIndex.build(ROOT)


def _read(stem, folder):
    return nbformat.read(ROOT / folder / f"{stem}.ipynb", as_version=4)


# ------------------------------------------------------------------------------------------------------------------
# every chapter


@pytest.mark.parametrize("stem", CHAPTERS)
def test_colab_notebook_exists_and_is_fresh(stem, index):
    out = colab.colab_path(ROOT, stem)
    assert out.exists(), f"{out} missing: run `python scripts/chapters.py colab`"
    assert out.read_text() == colab.render(ROOT / "notebooks" / f"{stem}.ipynb", index, ROOT), (
        f"{out} is stale: run `python scripts/chapters.py colab`")


@pytest.mark.parametrize("stem", CHAPTERS)
def test_colab_markdown_has_no_myst(stem):
    nb = _read(stem, "colab")
    assert colab.myst_problems(nb) == []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            assert not re.search(r"\{[a-z][\w:-]*\}`", cell.source), cell.source[:300]


@pytest.mark.parametrize("stem", CHAPTERS)
def test_colab_glued_values_in_place(stem):
    md = (ROOT / "notebooks" / f"{stem}.md").read_text()
    glue = colab.glue_data(_read(stem, "notebooks"))
    nb = _read(stem, "colab")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    unescaped = re.sub(r"\\(.)", r"\1", text)
    for key, fmt in re.findall(r"\{glue:text\}`([^`:]+):?([^`]*)`", md):
        value = colab.format_plain_text(glue[key]["text/plain"], fmt)
        assert value in unescaped, f"{stem}: glued {key!r} ({value!r}) not in the Colab notebook"
    attachments = {name: a for c in nb.cells for name, a in c.get("attachments", {}).items()}
    for name in re.findall(r"```\{glue:figure\}\s*(\S+)", md):
        assert attachments[f"{name}.png"]["image/png"] == glue[name]["image/png"]
        assert f"(attachment:{name}.png)" in text
    assert len(re.findall(r"^\*\*Figure \d+\.\d+:\*\*", text, re.M)) == len(re.findall(r"\{glue:figure\}", md))


@pytest.mark.parametrize("stem", CHAPTERS)
def test_colab_code_cells_are_the_chapters(stem):
    stored, nb = _read(stem, "notebooks"), _read(stem, "colab")
    code = [c for c in stored.cells if c.cell_type == "code"]
    ccode = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.source for c in ccode] == [c.source for c in code]
    for c, cc in zip(code, ccode):
        assert cc.outputs == [o for o in c.outputs if not colab._is_glue_record(o)]
        assert cc.metadata.get("tags", []) == c.metadata.get("tags", [])
        if {"hide-cell", "hide-input"} & set(c.metadata.get("tags", [])):
            assert cc.metadata["jupyter"]["source_hidden"] is True
    assert "import diffdens as dd" in ccode[0].source   # the setup cell is kept, first
    # the title, numbered from _toc.yml (the book's sources carry no number; a stored run from before may)
    number = CHAPTERS.index(stem) + 1
    title = re.sub(r"^# (\d+\.\s+)?", f"# {number}. ", stored.cells[0].source, count=1)
    assert [c.source for c in nb.cells if c.cell_type == "markdown"][0] == title


def test_colab_title_numbered_from_toc():
    for text, number, want in (("# A title\n\nmore", 3, "# 3. A title\n\nmore"), ("# 3. A title", 4, "# 4. A title"),
                               ("(lab)=\n# T", 1, "(lab)=\n# 1. T"), ("# 2. T", None, "# T"), ("## T", 2, "## T")):
        assert colab.numbered_title(text, number)[0] == want


def test_setup_cells_install_from_config_url():
    stored = [ROOT / "notebooks" / f"{s}.ipynb" for s in CHAPTERS]
    assert colab.setup_url_problems(stored, ROOT) == []


def test_check_reports_missing_stale_and_myst(tmp_path):
    for f in ("_config.yml", "_toc.yml", "book/references.bib", "notebooks/03_probability_flow.ipynb"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / f, tmp_path / f)
    ipynb = [tmp_path / "notebooks/03_probability_flow.ipynb"]
    assert "missing" in colab.check(ipynb, tmp_path)[0]
    assert colab.write(ipynb, tmp_path) and colab.check(ipynb, tmp_path) == []
    assert colab.write(ipynb, tmp_path) == []   # regeneration is idempotent
    out = colab.colab_path(tmp_path, "03_probability_flow")
    nb = nbformat.read(out, as_version=4)
    nb.cells[0].source += "\n\nsee {eq}`eq-03-x`\n\n(lab)=\n:::{note}\nx\n:::"
    nbformat.write(nb, out)
    problems = "\n".join(colab.check(ipynb, tmp_path))
    for what in ("stale", "{eq}", ":::{ fence", "(label)= line"):
        assert what in problems


# ------------------------------------------------------------------------------------------------------------------
# the converter on synthetic MyST


@pytest.fixture
def tiny():
    config = {"repo_url": "https://github.com/o/r", "branch": "main", "org": "o", "repo": "r",
              "book_url": "https://o.github.io/r/", "colab_url": "https://colab.research.google.com"}
    docs = {"book/intro": colab.Doc("book/intro", "Intro"),
            "notebooks/01_a": colab.Doc("notebooks/01_a", "1. A", 1),
            "notebooks/02_b": colab.Doc("notebooks/02_b", "2. B", 2),
            "book/references": colab.Doc("book/references", "References")}
    index = colab.BookIndex(config=config, docs=docs,
                            bib={"smith2020x": ("Smith", "2020"), "doe2021y": ("Doe and Roe", "2021")})
    colab._scan(docs["notebooks/01_a"], ["# 1. A\n\n$$\nx\n$$ (eq-a)\n\n```{glue:figure} fa\n:name: fig-a\n\nCap.\n```"])
    colab._scan(docs["notebooks/02_b"], ["# 2. B\n\n(sec-b)=\n## Part B\n\n$$ y $$ (eq-b1)\n\n$$\nz\n$$ (eq-b2)\n"
                                          "```{glue:figure} fb\n:name: fig-b\n\nB.\n```"])
    glue = {"v": {"text/plain": "0.123456"}, "s": {"text/plain": "'a_b'"}, "n": {"text/plain": "192000"},
            "fb": {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}}
    return colab.Converter(index, "notebooks/02_b", glue)


def conv(c, text):
    return c.convert(text)[0]


def test_glue_text_formatted_as_myst_nb(tiny):
    from myst_nb.core.variables import format_plain_text

    assert conv(tiny, "err {glue:text}`v:.2f` nats") == "err 0.12 nats"
    assert conv(tiny, "{glue:text}`n:,.0f` steps, {glue:text}`v` raw") == "192,000 steps, 0.123456 raw"
    assert conv(tiny, "the {glue:text}`s` form") == r"the a\_b form"
    for text, fmt in (("0.123456", ".3f"), ("192000", ",.0f"), ("'x'", "s"), ("1.5e-05", ".1e"), ("-3", "+.2f")):
        assert colab.format_plain_text(text, fmt) == format_plain_text(text, fmt)
    with pytest.raises(KeyError, match="nope"):
        conv(tiny, "{glue:text}`nope:.2f`")


def test_glue_figure_becomes_attachment_with_caption(tiny):
    text, att = tiny.convert("before\n\n```{glue:figure} fb\n:name: fig-b\n\nThe *B* curve, see {eq}`eq-b1`.\n```\n\nafter")
    assert att == {"fb.png": {"image/png": "iVBORw0KGgo="}}
    assert "![The *B* curve, see (2.1).](attachment:fb.png)" in text
    assert "**Figure 2.1:** The *B* curve, see (2.1)." in text
    assert text.startswith("before") and text.endswith("after") and "```" not in text


def test_doc_eq_numref_ref_links(tiny):
    assert conv(tiny, "see {doc}`01_a`") == "see [1. A](https://o.github.io/r/notebooks/01_a.html)"
    assert conv(tiny, "see {doc}`the intro <../book/intro>`") == "see [the intro](https://o.github.io/r/book/intro.html)"
    assert conv(tiny, "by {eq}`eq-b2`") == "by (2.2)"   # this notebook: the number as text
    assert conv(tiny, "by {eq}`eq-a`") == "by [(1.1)](https://o.github.io/r/notebooks/01_a.html#equation-eq-a)"
    assert conv(tiny, "{numref}`fig-b` and {numref}`fig-a`") == (
        "Fig. 2.1 and [Fig. 1.1](https://o.github.io/r/notebooks/01_a.html#fig-a)")
    assert conv(tiny, "{numref}`Figure %s <fig-b>`") == "Figure 2.1"
    assert conv(tiny, "in {ref}`sec-b`, {ref}`here <sec-b>`") == "in Part B, here"


def test_cite_roles(tiny):
    url = "https://o.github.io/r/book/references.html"
    assert conv(tiny, "as in {cite}`smith2020x`.") == f"as in ([Smith 2020]({url}))."
    assert conv(tiny, "({cite}`smith2020x` eq. 3)") == f"([Smith 2020]({url}) eq. 3)"
    assert conv(tiny, "{cite:p}`smith2020x,doe2021y`") == f"([Smith 2020]({url}); [Doe and Roe 2021]({url}))"
    assert conv(tiny, "{cite:t}`doe2021y` show") == f"[Doe and Roe (2021)]({url}) show"
    with pytest.raises(KeyError, match="nobody"):
        conv(tiny, "{cite}`nobody`")


def test_math_labels_and_roles(tiny):
    out = conv(tiny, "(eq-b1-target)=\n$$\nz = 1\n$$ (eq-b2)\n\nand {math}`a^2` inline")
    assert out == "$$\nz = 1\n\\tag{2.2}\n$$\n\nand $a^2$ inline"
    assert conv(tiny, "$$ y $$ (eq-b1)") == "$$ y \\tag{2.1}\n$$"


def test_admonitions_become_blockquotes(tiny):
    out = conv(tiny, "```{note}\nA note with {glue:text}`v:.1f`.\n```")
    assert out == "> **Note**\n>\n> A note with 0.1."
    out = conv(tiny, ":::{exercise} Probes\n:label: ex-1\n\nShow that $x$.\n:::\n\n::::{solution} ex-1\n:class: dropdown\n\n"
                     "Because.\n\n```{math}\n:label: eq-b1\nw\n```\n::::")
    assert out.startswith("> **Exercise: Probes**\n>\n> Show that $x$.")
    assert "> **Solution**\n>\n> Because.\n>\n> $$\n> w\n> \\tag{2.1}\n> $$" in out
    assert conv(tiny, "```{admonition} Why?\nBecause.\n```") == "> **Why?**\n>\n> Because."
    assert colab.myst_problems(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(out)])) == []


def test_plain_code_and_inline_code_untouched(tiny):
    src = "```python\nx = '{eq}`eq-b1`'\n```\n\nuse `dd.elbo` here"
    assert conv(tiny, src) == src


def test_myst_problems_finds_leftovers():
    cells = [nbformat.v4.new_markdown_cell(s) for s in
             ("{glue:text}`a:.2f`", "{doc}`x`", "```{note}\nx\n```", ":::{tip}\nx\n:::", "(lab)=\n# T", "$$\nx\n$$ (l)",
              "fine $x$ text")]
    found = colab.myst_problems(nbformat.v4.new_notebook(cells=cells))
    assert [p.split(":")[0] for p in found] == [f"cell {i}" for i in range(6)]


def test_hidden_tags_kept_as_metadata():
    cell = nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["hide-input"], "execution": {"iopub.status.idle": "2026"}})
    new = colab._code_cell(cell)
    assert new.metadata == {"tags": ["hide-input"], "jupyter": {"source_hidden": True}, "cellView": "form"}


# ------------------------------------------------------------------------------------------------------------------
# URLs: _config.yml is the one place


def test_urls_come_from_config():
    import yaml

    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    c = colab.book_config(ROOT)
    assert c["repo_url"] == cfg["repository"]["url"].rstrip("/")
    assert c["book_url"] == cfg["html"]["baseurl"].rstrip("/") + "/"
    assert colab.colab_launch_url(c, "03_probability_flow") == (
        f"{c['colab_url']}/github/{c['org']}/{c['repo']}/blob/{c['branch']}/colab/03_probability_flow.ipynb")
    readme = (ROOT / "README.md").read_text()
    assert f"git+{c['repo_url']}" in readme and c["book_url"] in readme
    others = set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", readme)) - {c["repo_url"]}
    assert not others, f"README names another repository URL than _config.yml's: {others}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    urls = set(re.findall(r"https://github\.com/[\w.-]+/[\w.-]+", pyproject))
    assert urls <= {c["repo_url"]}, f"pyproject.toml names another repository URL than _config.yml's: {urls}"


def test_launch_button_extension_points_at_colab_notebook():
    class App:
        srcdir = str(ROOT)
        config = {"html_theme_options": {"repository_url": "https://github.com/o/r", "repository_branch": "dev",
                                         "launch_buttons": {"colab_url": "https://colab.research.google.com"}}}

    ctx = {"header_buttons": [{"label": "launch-buttons", "buttons": [
        {"text": "Colab", "url": "https://colab.research.google.com/github/o/r/blob/dev/notebooks/03_probability_flow.ipynb"},
        {"text": "Binder", "url": "b"}]}]}
    colab_launch.rewrite_colab_button(App, "notebooks/03_probability_flow", None, ctx, None)
    buttons = ctx["header_buttons"][0]["buttons"]
    assert buttons[0]["url"] == "https://colab.research.google.com/github/o/r/blob/dev/colab/03_probability_flow.ipynb"
    assert buttons[1]["url"] == "b"


def test_setup_url_check_fails_on_another_url(tmp_path):
    cfg = (ROOT / "_config.yml").read_text()
    (tmp_path / "_config.yml").write_text(cfg.replace("url: https://github.com/", "url: https://github.com/elsewhere-", 1))
    problems = colab.setup_url_problems([ROOT / "notebooks" / f"{CHAPTERS[0]}.ipynb"], tmp_path)
    assert len(problems) == 1 and "repository.url" in problems[0]
