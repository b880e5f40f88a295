"""Colab notebooks: colab/NN_slug.ipynb, plain Jupyter markdown generated from the stored notebooks/NN_slug.ipynb.

Colab renders CommonMark with math, not MyST. This module rewrites each chapter's markdown cells the way the book
renders them: glued values substituted ({glue:text}`key:.2f` formatted as MyST-NB does), glued figures embedded as
markdown attachments with a bold "Figure N.k:" caption, {doc}/{eq}/{numref}/{ref} as text or links into the online
book, {cite} as "(Author year)" linked to its references page, admonitions as blockquotes, `(label)=` lines dropped
and `$$ ... $$ (label)` numbered with a \\tag. Code cells and their stored outputs are the chapter's own (glue
records, which only the book displays, are dropped). The URLs come from _config.yml (`repository.url`,
`repository.branch`, `html.baseurl`, `launch_buttons.colab_url`): see `book_config`.

    python scripts/chapters.py colab            # write colab/*.ipynb for every chapter
    python scripts/chapters.py check            # ... fails when one is missing, stale or holds MyST syntax
"""

from __future__ import annotations

import copy
import re
from ast import literal_eval
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLAB_DIR = "colab"
GLUE_PREFIX_KEY = "scrapbook"

# --------------------------------------------------------------------------------------------------------------------
# _config.yml: the one place for the URLs


def book_config(root: Path = ROOT) -> dict:
    """The book's URLs from _config.yml: repository (`repo_url`, `branch`, `org`, `repo`), the online book
    (`book_url`, ending in "/"), and `colab_url`."""
    import yaml

    cfg = yaml.safe_load((Path(root) / "_config.yml").read_text())
    repo_url = cfg["repository"]["url"].rstrip("/")
    book_url = cfg["html"]["baseurl"].rstrip("/") + "/"
    org, repo = repo_url.split("/")[-2:]
    return {"repo_url": repo_url, "branch": cfg["repository"].get("branch", "main"), "org": org, "repo": repo,
            "book_url": book_url,
            "colab_url": cfg.get("launch_buttons", {}).get("colab_url", "https://colab.research.google.com").rstrip("/")}


def colab_launch_url(config: dict, stem: str) -> str:
    """Where the book's Colab button for chapter ``stem`` points: its colab/ notebook on the repository's branch."""
    return f"{config['colab_url']}/github/{config['org']}/{config['repo']}/blob/{config['branch']}/{COLAB_DIR}/{stem}.ipynb"


# --------------------------------------------------------------------------------------------------------------------
# glue values, formatted as MyST-NB formats them


def format_plain_text(text: str, fmt_spec: str) -> str:
    """MyST-NB's formatting of a glued text/plain value (myst_nb.core.variables.format_plain_text)."""
    try:
        value = literal_eval(text)
    except (SyntaxError, ValueError):
        value = text
    if fmt_spec == "":
        return str(value)
    type_char = fmt_spec[-1]
    if type_char == "s":
        value = str(value)
    elif type_char in ("b", "c", "d", "o", "x", "X"):
        value = int(value)
    elif type_char in ("e", "E", "f", "F", "g", "G", "n", "%"):
        value = float(value)
    return format(value, fmt_spec)


def glue_data(nb) -> dict[str, dict]:
    """name -> mime bundle (prefix stripped) of every glued value in a stored notebook."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            meta = o.get("metadata", {}).get(GLUE_PREFIX_KEY)
            if meta:
                n = len(meta.get("mime_prefix", ""))
                out[meta["name"]] = {k[n:]: v for k, v in o.get("data", {}).items()}
    return out


def _is_glue_record(output) -> bool:
    """A glue output the book hides (stored under a mime prefix: only the glue roles display it)."""
    meta = output.get("metadata", {}).get(GLUE_PREFIX_KEY)
    return bool(meta and meta.get("mime_prefix"))


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>])")


def md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


# --------------------------------------------------------------------------------------------------------------------
# the book's index: chapter numbers, titles, equation and figure numbers, labels, bibliography

_ROLE = re.compile(r"\{([a-zA-Z][\w:-]*)\}`([^`]*)`")
_FENCE_OPEN = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}\s*(?P<arg>.*?)\s*$")
_PLAIN_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_TARGET = re.compile(r"^\s*\(([^()\s]+)\)=\s*$")
_EQ_CLOSE = re.compile(r"^(?P<body>.*?)\$\$\s*\((?P<label>[^()\s]+)\)\s*$")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# a chapter number written into an H1 title ("# 3. Title"): the book numbers chapters from _toc.yml, so sources carry
# none, but stored notebooks run before that change still may; the number always comes from the toc (Doc.number)
_TITLE_NUMBER = re.compile(r"^\d+\.\s+")


@dataclass
class Doc:
    name: str                       # e.g. "notebooks/03_probability_flow"
    title: str
    number: int | None = None       # chapter number in the numbered part of _toc.yml
    equations: dict = field(default_factory=dict)   # label -> k
    figures: dict = field(default_factory=dict)     # name -> k
    sections: dict = field(default_factory=dict)    # label -> heading text


def _markdown_sources(path: Path) -> list[str]:
    """The markdown cells of a stored notebook, or the text of a .md page."""
    if path.suffix == ".ipynb":
        import nbformat

        return [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    text = path.read_text()
    if text.startswith("---"):  # front matter
        end = text.find("\n---", 3)
        text = text[end + 4:] if end >= 0 else text
    return [text]


def _scan(doc: Doc, sources: list[str]) -> None:
    """Fill in a document's title, equation and figure numbers (in order, as Sphinx's numfig counts them: only
    labelled ones) and its section labels."""
    for src in sources:
        _scan_lines(doc, src.splitlines())


def _scan_lines(doc: Doc, lines: list[str]) -> None:
    pending = None   # a `(label)=` waiting for its heading
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _FENCE_OPEN.match(line)
        if m:
            body, i = _fence_body(lines, i + 1, m["fence"])
            opts, body = _options(body)
            if m["name"] in ("glue:figure", "figure") and opts.get("name"):
                doc.figures.setdefault(opts["name"], len(doc.figures) + 1)
            elif m["name"] == "math" and opts.get("label"):
                doc.equations.setdefault(opts["label"], len(doc.equations) + 1)
            elif m["name"] not in _VERBATIM:
                _scan_lines(doc, body)   # an admonition's body is markdown
            pending = None
            continue
        m = _PLAIN_FENCE.match(line)
        if m:
            _, i = _fence_body(lines, i + 1, m[1])
            continue
        i += 1
        m = _TARGET.match(line)
        if m:
            pending = m[1]
            continue
        m = _HEADING.match(line)
        if m:
            if not doc.title and m[1] == "#":
                doc.title = _TITLE_NUMBER.sub("", m[2])
            if pending:
                doc.sections[pending] = m[2]
            pending = None
            continue
        m = _EQ_CLOSE.match(line)
        if m:
            doc.equations.setdefault(m["label"], len(doc.equations) + 1)
        if line.strip():
            pending = None


_VERBATIM = {"code-cell", "code-block", "code", "sourcecode", "math", "glue", "glue:", "glue:any", "glue:md",
             "glue:math", "bibliography", "toctree", "tableofcontents", "raw", "eval-rst", "list-table", "csv-table"}


def _toc_docs(root: Path) -> list[tuple[str, int | None]]:
    import yaml

    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    out = [(toc["root"], None)]
    number = 0
    for part in toc.get("parts", []):
        for ch in part.get("chapters", []):
            if part.get("numbered"):
                number += 1
            out.append((ch["file"], number if part.get("numbered") else None))
    return out


def _bib_labels(bibfile: Path) -> dict[str, tuple[str, str]]:
    """key -> (authors, year) for (Author year) citations: "Premkumar", "Durkan and Song", "Song et al."; the years
    of two keys with the same label get a, b, ... in bib-file order."""
    import latexcodec  # noqa: F401  (registers the "latex" codec)
    from pybtex.database import parse_file

    def clean(s):
        return re.sub(r"[{}]", "", s.encode("utf-8").decode("latex"))

    out = {}
    for key, e in parse_file(str(bibfile)).entries.items():
        people = e.persons.get("author") or e.persons.get("editor") or []
        last = [clean(" ".join(p.prelast_names + p.last_names)) for p in people]
        who = (last[0] if len(last) == 1 else f"{last[0]} and {last[1]}" if len(last) == 2
               else f"{last[0]} et al." if last else key)
        out[key] = (who, e.fields.get("year", "n.d."))
    seen: dict = {}
    for key, lab in out.items():
        seen.setdefault(lab, []).append(key)
    for lab, keys in seen.items():
        if len(keys) > 1:
            for i, key in enumerate(keys):
                out[key] = (lab[0], lab[1] + "abcdefghijklmnopqrstuvwxyz"[i])
    return out


@dataclass
class BookIndex:
    config: dict
    docs: dict                      # name -> Doc
    bib: dict                       # key -> (authors, year)
    references_doc: str = "book/references"

    @classmethod
    def build(cls, root: Path = ROOT) -> "BookIndex":
        import yaml

        root = Path(root)
        docs = {}
        for name, number in _toc_docs(root):
            path = next((root / f"{name}{s}" for s in (".ipynb", ".md") if (root / f"{name}{s}").exists()), None)
            doc = Doc(name=name, title="", number=number)
            if path is not None:
                _scan(doc, _markdown_sources(path))
            doc.title = doc.title or Path(name).name
            docs[name] = doc
        cfg = yaml.safe_load((root / "_config.yml").read_text())
        bib = {}
        for b in cfg.get("bibtex_bibfiles", []):
            bib.update(_bib_labels(root / b))
        refs = next((n for n in docs if Path(n).name == "references"), "book/references")
        return cls(config=book_config(root), docs=docs, bib=bib, references_doc=refs)

    def page_url(self, name: str, anchor: str = "") -> str:
        return f"{self.config['book_url']}{name}.html" + (f"#{anchor}" if anchor else "")

    def find(self, kind: str, label: str) -> tuple[Doc, object]:
        for doc in self.docs.values():
            table = getattr(doc, kind)
            if label in table:
                return doc, table[label]
        raise KeyError(f"unknown {kind[:-1]} label {label!r}")


# --------------------------------------------------------------------------------------------------------------------
# markdown conversion


def _split_explicit(text: str) -> tuple[str | None, str]:
    """`title <target>` -> (title, target); `target` -> (None, target)."""
    m = re.match(r"^(.*?)\s*<([^<>]+)>\s*$", text, re.S)
    return (m[1].strip() or None, m[2].strip()) if m else (None, text.strip())


class Converter:
    """Converts the markdown of one document (``docname``) given the book's ``index`` and its glued values."""

    def __init__(self, index: BookIndex, docname: str, glue: dict | None = None):
        self.index, self.docname, self.glue = index, docname, glue or {}
        self.doc = index.docs.get(docname) or Doc(name=docname, title=docname)
        self.figures_seen = 0

    # ---- numbers ------------------------------------------------------------------------------------------------
    def _number(self, doc: Doc, k) -> str:
        return f"{doc.number}.{k}" if doc.number is not None else f"{k}"

    def _maybe_link(self, text: str, doc: Doc, anchor: str) -> str:
        """Plain text for a target in this notebook, a link into the online book for one in another page."""
        return text if doc.name == self.docname else f"[{text}]({self.index.page_url(doc.name, anchor)})"

    # ---- roles --------------------------------------------------------------------------------------------------
    def role(self, name: str, content: str, in_parens: bool = False) -> str:
        if name in ("glue", "glue:", "glue:text", "glue:any", "glue:md"):
            key, fmt = content.rsplit(":", 1) if name == "glue:text" and ":" in content else (content, "")
            if "::" in key:
                raise ValueError(f"{self.docname}: glue from another document ({content!r}) is not supported")
            if key not in self.glue:
                raise KeyError(f"{self.docname}: no glued value {key!r} in the stored notebook")
            data = self.glue[key]
            if name == "glue:md" and "text/markdown" in data:
                return data["text/markdown"]
            if "text/plain" not in data:
                raise KeyError(f"{self.docname}: glued value {key!r} has no text/plain")
            return md_escape(format_plain_text(data["text/plain"], fmt if name == "glue:text" else ""))
        if name == "doc":
            title, target = _split_explicit(content)
            target = target.removesuffix(".md").removesuffix(".ipynb")
            base = Path(self.docname).parent
            full = target.lstrip("/") if target.startswith("/") else _normpath(base / target)
            doc = self.index.docs.get(full)
            if doc is None:
                raise KeyError(f"{self.docname}: {{doc}} target {target!r} is not in _toc.yml")
            return f"[{title or doc.title}]({self.index.page_url(full)})"
        if name == "eq":
            doc, k = self.index.find("equations", content.strip())
            return self._maybe_link(f"({self._number(doc, k)})", doc, f"equation-{content.strip()}")
        if name == "numref":
            title, label = _split_explicit(content)
            doc, k = self.index.find("figures", label)
            num = self._number(doc, k)
            text = (title.replace("%s", num).replace("{number}", num).replace("{name}", label)
                    if title else f"Fig. {num}")
            return self._maybe_link(text, doc, label)
        if name == "ref":
            title, label = _split_explicit(content)
            for kind in ("sections", "figures"):
                try:
                    doc, val = self.index.find(kind, label)
                except KeyError:
                    continue
                text = title or (val if kind == "sections" else f"Fig. {self._number(doc, val)}")
                return self._maybe_link(text, doc, label)
            raise KeyError(f"{self.docname}: unknown {{ref}} label {label!r}")
        if name in ("cite", "cite:p", "cite:t", "cite:ps", "cite:ts", "cite:alp", "cite:label"):
            url = self.index.page_url(self.index.references_doc)
            parts = []
            for key in (k.strip() for k in content.split(",")):
                if key not in self.index.bib:
                    raise KeyError(f"{self.docname}: citation key {key!r} not in the bibliography")
                who, year = self.index.bib[key]
                parts.append(f"[{who} ({year})]({url})" if name.startswith("cite:t") else f"[{who} {year}]({url})")
            if name.startswith("cite:t"):
                return ", ".join(parts)
            # "({cite}`key` eq. 3)" already has its parentheses: "(Author year eq. 3)", not "((Author year) eq. 3)"
            return "; ".join(parts) if in_parens else "(" + "; ".join(parts) + ")"
        if name == "math":
            return f"${content}$"
        if name in ("code", "literal", "samp", "file", "command", "kbd"):
            return f"`{content}`"
        if name in ("sub", "sup", "abbr", "term", "dfn"):
            return content
        raise ValueError(f"{self.docname}: MyST role {{{name}}} is not converted for Colab")

    def inline(self, text: str) -> str:
        """Convert the roles of a run of markdown outside code fences (inline code spans are left alone)."""
        out, pos = [], 0
        # skip inline code spans that do not belong to a role: split on backtick runs not preceded by "}"
        for m in _ROLE.finditer(text):
            out.append(text[pos:m.start()])
            out.append(self.role(m[1], m[2], in_parens=text[:m.start()].endswith("(")))
            pos = m.end()
        out.append(text[pos:])
        return "".join(out)

    # ---- blocks -------------------------------------------------------------------------------------------------
    def convert(self, source: str) -> tuple[str, dict]:
        """(converted markdown, attachments) of one markdown cell."""
        attachments: dict = {}
        lines = self._blocks(source.splitlines(), attachments)
        text = "\n".join(lines)
        return re.sub(r"\n{3,}", "\n\n", text).strip("\n"), attachments

    def _blocks(self, lines: list[str], attachments: dict) -> list[str]:
        out: list[str] = []
        para: list[str] = []   # a run of plain lines, converted together so roles may span line breaks

        def flush():
            if para:
                out.extend(self.inline("\n".join(para)).split("\n"))
                para.clear()

        i = 0
        while i < len(lines):
            line = lines[i]
            m = _FENCE_OPEN.match(line)
            if m:
                flush()
                fence, name, arg = m["fence"], m["name"], m["arg"]
                body, i = _fence_body(lines, i + 1, fence)
                opts, body = _options(body)
                out.extend(self.directive(name, arg, opts, body, attachments))
                continue
            m = _PLAIN_FENCE.match(line)
            if m:  # a plain code block: copied verbatim
                flush()
                body, j = _fence_body(lines, i + 1, m[1])
                out.extend(lines[i:j])
                i = j
                continue
            if _TARGET.match(line):
                i += 1
                continue
            m = _EQ_CLOSE.match(line)
            if m and "$$" in "\n".join(para + [m["body"]]):
                label = m["label"]
                tag = self._equation_tag(label)
                para.append(f"{m['body']}{tag}$$" if m["body"].strip() else f"{tag}$$")
                i += 1
                continue
            para.append(line)
            i += 1
        flush()
        return out

    def _equation_tag(self, label: str) -> str:
        try:
            doc, k = self.index.find("equations", label)
        except KeyError:
            return ""
        return f"\\tag{{{self._number(doc, k)}}}\n" if doc.name == self.docname else ""

    def directive(self, name: str, arg: str, opts: dict, body: list[str], attachments: dict) -> list[str]:
        if name == "glue:figure" or name == "figure":
            return self._figure(name, arg, opts, body, attachments)
        if name in ("math",):
            label = opts.get("label")
            tag = self._equation_tag(label) if label else ""
            return ["$$", *body, *([tag.rstrip()] if tag else []), "$$"]
        if name in ("code-block", "code", "sourcecode"):
            return [f"```{arg}", *body, "```"]
        if name in ("glue", "glue:", "glue:any", "glue:md", "glue:math"):
            key = arg.strip()
            data = self.glue.get(key) or {}
            if "image/png" in data:
                attachments[f"{key}.png"] = {"image/png": data["image/png"]}
                return [f"![{key}](attachment:{key}.png)"]
            if name == "glue:math":
                return ["$$", format_plain_text(data.get("text/latex", data.get("text/plain", "")), ""), "$$"]
            return [data.get("text/markdown") or md_escape(format_plain_text(data.get("text/plain", ""), ""))]
        if name in ("bibliography", "tableofcontents", "toctree"):
            return []
        # admonitions and anything else with a markdown body: a blockquote with a bold label
        short = name.split(":")[-1]
        label = _ADMONITION_LABELS.get(short, short.replace("-", " ").capitalize())
        if name == "admonition" and arg:
            label, arg = self.inline(arg), ""
        elif short in _TITLED and arg:
            label, arg = f"{label}: {self.inline(arg)}", ""
        elif short == "solution":
            arg = ""   # the exercise's label, not text
        inner = self._blocks(([arg, ""] if arg else []) + body, attachments)
        while inner and not inner[0].strip():
            inner.pop(0)
        while inner and not inner[-1].strip():
            inner.pop()
        head = f"**{label}**"
        quoted = [head, ""] + inner
        return [("> " + ln).rstrip() for ln in quoted] + [""]

    def _figure(self, name: str, arg: str, opts: dict, body: list[str], attachments: dict) -> list[str]:
        caption = "\n".join(self._blocks(body, attachments)).strip()
        label = opts.get("name")
        number = None
        if label:
            try:
                doc, k = self.index.find("figures", label)
                number = self._number(doc, k)
            except KeyError:
                pass
        alt = opts.get("alt") or _plain(caption) or label or arg
        alt = alt.replace("[", "(").replace("]", ")")
        if name == "glue:figure":
            data = self.glue.get(arg.strip())
            if not data or "image/png" not in data:
                raise KeyError(f"{self.docname}: glued figure {arg!r} has no image/png in the stored notebook")
            fname = f"{arg.strip()}.png"
            attachments[fname] = {"image/png": data["image/png"]}
            src = f"attachment:{fname}"
        else:
            c = self.index.config
            src = arg if re.match(r"^[a-z]+://", arg) else (
                f"https://raw.githubusercontent.com/{c['org']}/{c['repo']}/{c['branch']}/"
                + _normpath(Path(self.docname).parent / arg))
        out = [f"![{alt}]({src})"]
        if caption:
            head = f"**Figure {number}:**" if number else ""
            out += ["", f"{head} {caption}".strip()]
        return out + [""]


_TITLED = {"exercise", "dropdown", "topic", "sidebar", "theorem", "lemma", "proof", "definition", "example",
           "remark"}
_ADMONITION_LABELS = {"note": "Note", "tip": "Tip", "hint": "Hint", "important": "Important", "warning": "Warning",
                      "caution": "Caution", "attention": "Attention", "danger": "Danger", "error": "Error",
                      "seealso": "See also", "exercise": "Exercise", "solution": "Solution", "dropdown": "Details",
                      "theorem": "Theorem", "lemma": "Lemma", "proof": "Proof", "definition": "Definition",
                      "remark": "Remark", "example": "Example", "margin": "Note", "sidebar": "Note",
                      "epigraph": "Quote", "topic": "Topic"}


def _normpath(p: Path) -> str:
    parts: list[str] = []
    for part in Path(p).as_posix().split("/"):
        if part == "..":
            if parts:
                parts.pop()
        elif part not in (".", ""):
            parts.append(part)
    return "/".join(parts)


def _plain(md: str) -> str:
    """Markdown to a one-line plain text (for alt text): links to their text, emphasis marks dropped."""
    s = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", md)
    s = re.sub(r"\*\*|__", "", s)
    return " ".join(s.split())


def _fence_body(lines: list[str], i: int, fence: str) -> tuple[list[str], int]:
    """Lines up to the closing fence (the fence character only, at least as long as ``fence``); returns
    (body, index after the closing line)."""
    body = []
    while i < len(lines):
        s = lines[i].strip()
        if s and set(s) == {fence[0]} and len(s) >= len(fence):
            return body, i + 1
        body.append(lines[i])
        i += 1
    return body, i


def _options(body: list[str]) -> tuple[dict, list[str]]:
    """Directive options (`:key: value` lines or a `---` YAML block at the top) and the rest of the body."""
    opts: dict = {}
    i = 0
    if body and body[0].strip() == "---":
        j = next((k for k in range(1, len(body)) if body[k].strip() == "---"), None)
        if j is not None:
            import yaml

            opts = {str(k): str(v) for k, v in (yaml.safe_load("\n".join(body[1:j])) or {}).items()}
            return opts, body[j + 1:]
    while i < len(body):
        m = re.match(r"^\s*:([\w-]+):\s*(.*?)\s*$", body[i])
        if not m:
            break
        opts[m[1]] = m[2]
        i += 1
    return opts, body[i:]


# --------------------------------------------------------------------------------------------------------------------
# notebooks

# what must not survive in a Colab markdown cell
MYST_PATTERNS = {
    "{glue": re.compile(r"\{glue[\w:-]*\}"),
    "{doc}": re.compile(r"\{doc\}`"),
    "{eq}": re.compile(r"\{eq\}`"),
    "{numref}": re.compile(r"\{numref\}`"),
    "{ref}": re.compile(r"\{ref\}`"),
    "{cite": re.compile(r"\{cite[\w:-]*\}`"),
    "{math}": re.compile(r"\{math\}`"),
    "```{ fence": re.compile(r"^ {0,3}(> ?)*`{3,}\{", re.M),
    ":::{ fence": re.compile(r"^ {0,3}(> ?)*:{3,}\{", re.M),
    "(label)= line": re.compile(r"^ {0,3}(> ?)*\([^()\s]+\)=\s*$", re.M),
    "$$ (label)": re.compile(r"\$\$\s*\([^()\s]+\)\s*$", re.M),
}


def myst_problems(nb) -> list[str]:
    """MyST syntax left in the markdown cells of a notebook: ["cell 3: {glue", ...]."""
    out = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            out += [f"cell {i}: {what}" for what, pat in MYST_PATTERNS.items() if pat.search(cell.source)]
    return out


_HIDDEN = {"hide-input": {"source_hidden": True}, "hide-cell": {"source_hidden": True, "outputs_hidden": True},
           "hide-output": {"outputs_hidden": True}, "remove-input": {"source_hidden": True},
           "remove-cell": {"source_hidden": True, "outputs_hidden": True}, "remove-output": {"outputs_hidden": True}}


def _code_cell(cell):
    import nbformat

    new = nbformat.v4.new_code_cell(cell.source)
    meta = copy.deepcopy({k: v for k, v in cell.get("metadata", {}).items() if k != "execution"})
    tags = meta.get("tags", [])
    hidden: dict = {}
    for t in tags:
        hidden.update(_HIDDEN.get(t, {}))
    if hidden:
        # the book's hide-* tags (kept) as Jupyter's standard collapse flags and Colab's collapsed form view
        meta["jupyter"] = {**meta.get("jupyter", {}), **hidden}
        if hidden.get("source_hidden"):
            meta["cellView"] = "form"
    new.metadata = meta
    new.execution_count = cell.get("execution_count")
    new.outputs = [copy.deepcopy(o) for o in cell.get("outputs", []) if not _is_glue_record(o)]
    return new


def numbered_title(text: str, number: int | None) -> tuple[str, bool]:
    """(text with its first H1 numbered "N. Title" from the toc, whether it had an H1): Colab shows no toc, and the
    figure and equation numbers ("Figure 3.1") need the chapter's number. A number already in the title is replaced."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = _HEADING.match(line)
        if m and m[1] == "#":
            title = _TITLE_NUMBER.sub("", m[2])
            lines[i] = f"# {number}. {title}" if number is not None else f"# {title}"
            return "\n".join(lines), True
    return text, False


def to_colab(nb, docname: str, index: BookIndex, source_path: str | None = None):
    """The Colab notebook of one stored chapter notebook ``nb`` (document ``docname``, e.g.
    "notebooks/03_probability_flow")."""
    import nbformat

    glue = glue_data(nb)
    conv = Converter(index, docname, glue)
    cells = []
    titled = False
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            text, att = conv.convert(cell.source)
            if not titled:
                text, titled = numbered_title(text, conv.doc.number)
            new = nbformat.v4.new_markdown_cell(text)
            if att:
                new.attachments = att
            cells.append(new)
        elif cell.cell_type == "code":
            cells.append(_code_cell(cell))
        else:
            cells.append(copy.deepcopy(cell))
    # a note after the title: where this notebook comes from and where the book is
    src = source_path or f"{docname}.md"
    note = nbformat.v4.new_markdown_cell(
        f"*This notebook is a chapter of the [diffdens book]({index.page_url(docname)}) "
        f"([source]({index.config['repo_url']}/blob/{index.config['branch']}/{src}); generated by "
        f"`scripts/chapters.py colab`, with the outputs of the book's stored run). Run the first cell to install "
        f"diffdens; a GPU runtime runs the full profile.*")
    first_md = next((i for i, c in enumerate(cells) if c.cell_type == "markdown"), -1)
    cells.insert(first_md + 1, note)
    for i, c in enumerate(cells):  # stable ids: a regenerated notebook is byte-identical
        c["id"] = f"cell-{i}"
    out = nbformat.v4.new_notebook(cells=cells)
    out.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"name": f"{Path(docname).name}.ipynb", "provenance": []},
    }
    return out


def colab_path(root: Path, stem: str) -> Path:
    return Path(root) / COLAB_DIR / f"{stem}.ipynb"


def render(ipynb: Path, index: BookIndex, root: Path = ROOT) -> str:
    """The text of the Colab notebook that the stored notebook ``ipynb`` generates."""
    import nbformat

    ipynb = Path(ipynb).resolve()
    docname = ipynb.relative_to(Path(root).resolve()).with_suffix("").as_posix()
    nb = nbformat.read(ipynb, as_version=4)
    out = to_colab(nb, docname, index, source_path=f"{docname}.md")
    return nbformat.writes(out) + "\n"


def write(ipynbs, root: Path = ROOT, index: BookIndex | None = None) -> list[Path]:
    """Write colab/NN_slug.ipynb for each stored notebook; returns the files that changed."""
    index = index or BookIndex.build(root)
    changed = []
    for ipynb in ipynbs:
        text = render(ipynb, index, root)
        out = colab_path(root, Path(ipynb).stem)
        out.parent.mkdir(exist_ok=True)
        if not out.exists() or out.read_text() != text:
            out.write_text(text)
            changed.append(out)
    return changed


def check(ipynbs, root: Path = ROOT, index: BookIndex | None = None) -> list[str]:
    """Problems: a Colab notebook missing, stale (not what `write` would produce now) or holding MyST syntax."""
    import nbformat

    index = index or BookIndex.build(root)
    problems = []
    for ipynb in ipynbs:
        out = colab_path(root, Path(ipynb).stem)
        rel = out.relative_to(root) if out.is_relative_to(root) else out
        if not out.exists():
            problems.append(f"{rel}: missing (run `python scripts/chapters.py colab`)")
            continue
        text = out.read_text()
        try:
            fresh = render(ipynb, index, root)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{rel}: cannot be generated from {Path(ipynb).name}: {exc}")
            fresh = None
        if fresh is not None and text != fresh:
            problems.append(f"{rel}: stale, not what {Path(ipynb).name} generates now "
                            f"(run `python scripts/chapters.py colab`)")
        problems += [f"{rel}: MyST syntax in {p}" for p in myst_problems(nbformat.reads(text, as_version=4))]
    stray = sorted(set(p.stem for p in (Path(root) / COLAB_DIR).glob("*.ipynb")) - {Path(p).stem for p in ipynbs})
    problems += [f"{COLAB_DIR}/{s}.ipynb: no chapter notebooks/{s}.ipynb" for s in stray]
    return problems


# the chapters' setup cell installs diffdens from the repository: its URL must be _config.yml's repository.url
_INSTALL_URL = re.compile(r"git\+(https?://[^\s\"'@]+)")


def setup_url_problems(ipynbs, root: Path = ROOT) -> list[str]:
    import nbformat

    repo = book_config(root)["repo_url"]
    problems = []
    for ipynb in ipynbs:
        nb = nbformat.read(ipynb, as_version=4)
        first = next((c for c in nb.cells if c.cell_type == "code"), None)
        urls = _INSTALL_URL.findall(first.source) if first is not None else []
        bad = [u for u in urls if u.rstrip("/").removesuffix(".git") != repo]
        if bad:
            problems.append(f"{Path(ipynb).name}: setup cell installs from {bad[0]}, but _config.yml's "
                            f"repository.url is {repo}")
    return problems
