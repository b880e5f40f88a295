"""SDEs as JSON-able configurations (what a checkpoint stores): the class registry, :func:`sde_config` and
:func:`sde_from_config`. A new SDE class is added to ``_SDE_CLASSES`` so that checkpoints can name it."""

from __future__ import annotations

import dataclasses
import importlib

from .base import LinearSDE, check_sde
from .closed_form import SubVPSDE, VESDE, VPSDE
from .schedules import CosineVPSDE, CustomSDE, EDMSDE, RectifiedFlowSDE

_SDE_CLASSES = {c.__name__: c for c in (VPSDE, SubVPSDE, VESDE, CosineVPSDE, EDMSDE, RectifiedFlowSDE)}


def _fn_path(fn) -> str:
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not mod or "<" in qual or mod == "__main__":
        raise ValueError(f"sde: cannot store the schedule function {fn!r} in a checkpoint; define it at module level "
                         "in an importable module (lambdas and closures cannot be saved)")
    return f"{mod}:{qual}"


def _fn_from_path(path: str):
    if not isinstance(path, str) or path.count(":") != 1 or not all(path.split(":")):
        raise ValueError(f"a stored schedule function must be named 'module:qualname', got {path!r}")
    mod, qual = path.split(":")
    obj = importlib.import_module(mod)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj


def sde_config(sde: LinearSDE) -> dict:
    """A JSON-able description of ``sde`` (class name and parameters) that :func:`sde_from_config` rebuilds."""
    check_sde(sde)
    if isinstance(sde, CustomSDE):
        return {"class": "CustomSDE", "alpha": _fn_path(sde.alpha_fn), "sigma": _fn_path(sde.sigma_fn),
                "T": sde.T, "name": sde.name, "prior_std": sde.prior_scale}
    if not dataclasses.is_dataclass(sde) or type(sde) not in _SDE_CLASSES.values():
        raise ValueError(f"sde: cannot serialize an SDE of class {type(sde).__name__}")
    return {"class": type(sde).__name__, **dataclasses.asdict(sde)}


def sde_from_config(cfg: dict, *, trust_code: bool = False) -> LinearSDE:
    """The SDE described by :func:`sde_config`'s output.

    Arguments:
        cfg: the description.
        trust_code: a ``CustomSDE`` is stored as the import paths of its schedule functions; rebuilding it imports
            them and so runs code named by the file. Only with ``trust_code=True`` (unsafe for untrusted input).

    Returns:
        The :class:`LinearSDE`. ValueError for an unknown class, or a ``CustomSDE`` without ``trust_code``.
    """
    cfg = dict(cfg)
    name = cfg.pop("class", None)
    if name == "CustomSDE":
        if not trust_code:
            raise ValueError("the SDE is a schedule stored as functions to import "
                             f"({cfg.get('alpha')!r}, {cfg.get('sigma')!r}); rebuilding it runs that code: pass "
                             "trust_code=True only for a trusted source")
        return LinearSDE.from_schedule(_fn_from_path(cfg["alpha"]), _fn_from_path(cfg["sigma"]), T=cfg["T"],
                                       name=cfg["name"], prior_std=cfg["prior_std"])
    if name not in _SDE_CLASSES:
        raise ValueError(f"unknown SDE class {name!r} in the configuration")
    return _SDE_CLASSES[name](**cfg)
