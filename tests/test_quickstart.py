"""The book's code runs as written: every ```python block of book/quickstart.md, in order, in one namespace, and
the intro's (book/intro.md), with the checks the prose promises."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(page: Path) -> list[str]:
    """The ```python fenced blocks of a MyST page, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", page.read_text(), re.S | re.M)


def run_blocks(page: Path) -> dict:
    """Execute the page's python blocks in order in one namespace; a failure names the block and shows its code."""
    ns: dict = {"__name__": f"{page.stem}_page"}
    blocks = python_blocks(page)
    name = page.name if ROOT not in page.parents else str(page.relative_to(ROOT))
    assert blocks, f"{name} has no ```python block"
    for i, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"{name} [python block {i}]", "exec"), ns)
        except Exception as e:
            raise AssertionError(f"{name}: python block {i} fails:\n{code}") from e
    return ns


def test_python_blocks_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("text\n```python\na = 1\n```\n\n```{code-cell}\nno\n```\n```python\nb = a + 1\n```\n")
    assert python_blocks(page) == ["a = 1\n", "b = a + 1\n"]
    assert run_blocks(page)["b"] == 2


def test_quickstart_runs(capsys):
    import jax.numpy as jnp

    ns = run_blocks(ROOT / "book" / "quickstart.md")
    out = capsys.readouterr().out
    for name in ("PF-ODE (exact div.)", "ELBO (bound)", "eps", "x0 / denoiser", "velocity", "EDM", "DDPM",
                 "images"):
        assert name in out, f"quickstart printed no line for {name!r}:\n{out}"
    # what the prose claims: the PF-ODE with the exact score is the exact bits/dim up to the solver; the ELBO bounds it
    bpd, ode, y, data = ns["bpd"], ns["ode"], ns["y"], ns["data"]
    exact = bpd(data.log_prob(y))
    assert float(jnp.max(jnp.abs(bpd(ode.value) - exact))) < 0.02
    assert float(jnp.mean(bpd(ns["lb"].value))) > float(jnp.mean(exact)) - 0.05
    assert ns["grad"].shape == (4, 2) and ns["per_batch"].shape == (2, 4)
    assert ns["y_img"].shape[1:] == (2, 2, 1)


def test_intro_code_runs(capsys):
    run_blocks(ROOT / "book" / "intro.md")
