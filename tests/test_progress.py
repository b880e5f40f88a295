"""diffdens.progress: a tqdm bar where tqdm is installed, a silent stand-in otherwise (the core install)."""
import sys

import pytest

from diffdens.progress import is_shown, progress_bar, redirect_logging


def test_disabled_bar_is_silent(capsys):
    bar = progress_bar(enabled=False, total=3, desc="x")
    assert not is_shown(bar)
    bar.update(1), bar.set_postfix(loss="1"), bar.set_postfix_str("a"), bar.close()
    with redirect_logging(bar):
        pass
    assert capsys.readouterr().err == ""


def test_without_tqdm_the_bar_is_silent(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    assert not is_shown(progress_bar(enabled=True, total=3))


def test_with_tqdm_the_bar_shows(capsys):
    pytest.importorskip("tqdm")
    bar = progress_bar(enabled=True, total=2, desc="counting")
    assert is_shown(bar)
    bar.update(2), bar.close()
    assert "counting" in capsys.readouterr().err
