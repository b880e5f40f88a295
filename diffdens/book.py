"""Helpers for the chapters: run profiles, and numbered, captioned figures and numbers glued into the prose.

Profiles: ``quick`` (CI on a CPU) and ``full`` (paper scale, meant for a GPU), read in this one place from the
environment variable ``DIFFDENS_PROFILE``; unset, the profile is ``full`` if JAX sees a GPU and ``quick`` otherwise.
Both run the same code; only sizes differ (:func:`pick`).

Glue (MyST-NB): in the book build, ``figure("fig-name", fig)`` stores the figure for a ``{glue:figure}`` directive (which gives it
a number and a caption) and ``text("name", value)`` stores a number for ``{glue:text}``. Outside the book (Colab,
plain Jupyter, without myst_nb) the figure is simply shown and the number returned.
"""

from __future__ import annotations

import os

import jax

__all__ = ["PROFILES", "device_name", "figure", "pick", "profile", "text"]

#: The run profiles: ``"quick"`` (CI on a CPU) and ``"full"`` (paper scale, meant for a GPU).
PROFILES = ("quick", "full")


def profile() -> str:
    """The active profile, from ``DIFFDENS_PROFILE`` (unset: ``"full"`` if JAX sees a GPU, else ``"quick"``).

    Returns:
        ``"quick"`` or ``"full"``; an unknown ``DIFFDENS_PROFILE`` raises ValueError.
    """
    name = os.environ.get("DIFFDENS_PROFILE", "").strip().lower()
    if not name:
        return "full" if any(d.platform == "gpu" for d in jax.devices()) else "quick"
    if name not in PROFILES:
        raise ValueError(f"DIFFDENS_PROFILE must be one of {PROFILES}, got {name!r}")
    return name


def pick(*, quick, full):
    """A size by profile, e.g. ``n = pick(quick=2_000, full=50_000)``.

    Arguments:
        quick: the value in the ``quick`` profile.
        full: the value in the ``full`` profile.

    Returns:
        ``quick`` or ``full`` according to :func:`profile`.
    """
    return quick if profile() == "quick" else full


def device_name() -> str:
    """A short description of the default JAX device.

    Returns:
        e.g. ``"cpu"`` or ``"NVIDIA H100 80GB HBM3"``.
    """
    d = jax.devices()[0]
    return d.platform if d.platform == "cpu" else getattr(d, "device_kind", d.platform)


def _glue(name: str, value, display: bool) -> bool:
    try:
        from myst_nb import glue
    except ImportError:
        return False
    glue(name, value, display=display)
    return True


def figure(name: str, fig=None):
    """Glue a matplotlib figure under ``name`` (default: the current one) and close it, so that it appears only
    where the prose places it with ``{glue:figure} name``. Without myst_nb, show it instead (matplotlib and IPython:
    the ``[book]`` extra).

    Arguments:
        name: the glue name.
        fig: a matplotlib figure (default: the current one).

    Returns:
        None.
    """
    import matplotlib.pyplot as plt

    fig = plt.gcf() if fig is None else fig
    if not _glue(name, fig, display=False):
        from IPython.display import display

        display(fig)
    plt.close(fig)
    return None


def text(name: str, value):
    """Glue ``value`` under ``name`` for ``{glue:text}`name:format``` in the prose, without displaying it.

    Arguments:
        name: the glue name.
        value: a number or short string (a numpy or JAX scalar is glued as a Python number).

    Returns:
        ``value`` (as a Python number where it was a scalar array).
    """
    try:
        value = value.item()  # numpy / jax scalars glue as plain Python numbers
    except AttributeError:
        pass
    _glue(name, value, display=False)
    return value
