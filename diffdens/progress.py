"""Progress bars where tqdm is installed (the [book] extra), and silence in the core install: one place that decides,
so the training loops and the evaluation job need not each guard the optional import."""

from __future__ import annotations

import contextlib


class _Silent:
    """What the callers use of a tqdm bar, doing nothing."""

    def __init__(self, *args, **kwargs): ...
    def update(self, n=1): ...
    def set_postfix(self, *args, **kwargs): ...
    def set_postfix_str(self, *args, **kwargs): ...
    def close(self): ...


def progress_bar(*, enabled: bool = True, **kwargs):
    """A tqdm bar with tqdm's keyword arguments (``total``, ``desc``, ``leave``, ...), or a silent stand-in with the
    same methods (``update``, ``set_postfix``, ``set_postfix_str``, ``close``) when ``enabled`` is false or tqdm is
    not installed.

    Arguments:
        enabled: show the bar (when tqdm is importable).
        **kwargs: passed to ``tqdm.tqdm``.

    Returns:
        The bar, or the silent stand-in.
    """
    if enabled:
        try:
            from tqdm import tqdm
        except ImportError:  # core install: no bar
            return _Silent()
        return tqdm(**kwargs)
    return _Silent()


def is_shown(bar) -> bool:
    """Whether ``bar`` (from :func:`progress_bar`) is a real tqdm bar."""
    return not isinstance(bar, _Silent)


def redirect_logging(bar):
    """A context in which log lines are printed above ``bar`` (``tqdm.write``) while it is shown; a no-op else."""
    if not is_shown(bar):
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()
