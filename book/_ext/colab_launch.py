"""Point each chapter's Colab launch button at colab/NN_slug.ipynb.

sphinx-book-theme builds the Colab URL from the page's own path (notebooks/NN_slug.ipynb), whose MyST markdown
Colab cannot render. scripts/colab.py writes a plain-markdown copy of each chapter to colab/NN_slug.ipynb; this
extension rewrites the button after the theme has made it (html-page-context, priority after the theme's 501),
from the same _config.yml settings (repository.url, repository.branch, launch_buttons.colab_url).
"""

from pathlib import Path

COLAB_DIR = "colab"


def _colab_url(app, pagename):
    opts = app.config["html_theme_options"]
    repo = (opts.get("repository_url") or "").rstrip("/")
    colab = (opts.get("launch_buttons", {}).get("colab_url") or "").rstrip("/")
    if not repo.startswith("https://github.com/") or not colab:
        return None
    org, name = repo.split("/")[-2:]
    branch = opts.get("repository_branch") or "main"
    return f"{colab}/github/{org}/{name}/blob/{branch}/{COLAB_DIR}/{Path(pagename).name}.ipynb"


def rewrite_colab_button(app, pagename, templatename, context, doctree):
    if not (Path(app.srcdir) / COLAB_DIR / f"{Path(pagename).name}.ipynb").exists():
        return   # not a chapter (or its Colab notebook is missing: `make check-chapters` reports that)
    url = _colab_url(app, pagename)
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if button.get("text") == "Colab" and url:
                button["url"] = url


def setup(app):
    app.connect("html-page-context", rewrite_colab_button, priority=600)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
