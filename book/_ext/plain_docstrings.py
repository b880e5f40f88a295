"""Render the package's plain-text docstrings in the API reference (book/api.md) without reStructuredText surprises.

The docstrings write math as plain text (``|s - s*|^2``, ``x (n, *event_shape)``, ``sigma_t^2``) so that they read
well in ``help()``. In reStructuredText ``*`` starts emphasis, ``|`` a substitution and a word ending in ``_`` a
link, so before napoleon parses the Google-style sections (priority 400 < napoleon's 500) this extension escapes
those characters outside inline literals (````x````), interpreted text (```x```) and roles (``:func:`x```).
It also puts the repository root first on ``sys.path``, so the page documents the working tree's ``diffdens`` (not
an installed copy) whether or not the build sets ``PYTHONPATH``.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# ``literal``, :role:`text` or `text` (kept as written)
_PROTECTED = re.compile(r"``.+?``|:[\w:.+-]+:`[^`]+`|`[^`]+`_{0,2}")
_SPECIAL = re.compile(r"[*|]|(?<=\w)_(?=[^\w]|$)")
# a literal followed directly by a word character or ^ (``scale``^2) needs an escaped space to end it
_GLUED = re.compile(r"[\w^(]")


def escape_line(line: str) -> str:
    """``line`` with ``*``, ``|`` and a trailing ``_`` escaped outside literals, roles and interpreted text."""
    out, pos = [], 0
    for m in _PROTECTED.finditer(line):
        out.append(_SPECIAL.sub(lambda s: "\\" + s.group(0), line[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
        if m.group(0).startswith("``") and _GLUED.match(line, pos):
            out.append("\\ ")
    out.append(_SPECIAL.sub(lambda s: "\\" + s.group(0), line[pos:]))
    return "".join(out)


def _bullet(line: str) -> bool:
    return bool(re.match(r"\s*\* ", line))


def escape_docstring(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        if _bullet(line):  # keep a leading "* " list marker
            head, rest = line.split("* ", 1)
            lines[i] = head + "* " + escape_line(rest)
        else:
            lines[i] = escape_line(line)


def setup(app):
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    app.connect("autodoc-process-docstring", escape_docstring, priority=400)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
