"""Helpers for the chapters: numbered, captioned figures and numbers glued into the prose (MyST-NB ``glue``).

In the book build, ``figure("fig-name", fig)`` stores the figure for a ``{glue:figure}`` directive (which gives it
a number and a caption) and ``text("name", value)`` stores a number for ``{glue:text}``. Outside the book (Colab,
plain Jupyter, without myst_nb) the figure is simply shown and the number returned.
"""

from __future__ import annotations

__all__ = ["figure", "text"]


def _glue(name: str, value, display: bool) -> bool:
    try:
        from myst_nb import glue
    except ImportError:
        return False
    glue(name, value, display=display)
    return True


def figure(name: str, fig=None):
    """Glue a matplotlib figure under ``name`` (default: the current one) and close it, so that it appears only
    where the prose places it with ``{glue:figure} name``. Without myst_nb, show it instead."""
    import matplotlib.pyplot as plt

    fig = plt.gcf() if fig is None else fig
    if not _glue(name, fig, display=False):
        from IPython.display import display

        display(fig)
    plt.close(fig)
    return None


def text(name: str, value):
    """Glue ``value`` (a number or short string) under ``name`` for ``{glue:text}`name:format``` in the prose,
    without displaying it; returns ``value``."""
    try:
        value = value.item()  # numpy / jax scalars glue as plain Python numbers
    except AttributeError:
        pass
    _glue(name, value, display=False)
    return value
