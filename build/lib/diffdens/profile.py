"""Run profiles: ``quick`` (CI on a CPU) and ``full`` (paper scale, meant for a GPU).

The profile is read in this one place, from the environment variable ``DIFFDENS_PROFILE``.
When it is unset, the profile is ``full`` if JAX sees a GPU and ``quick`` otherwise.
Both profiles run the same code; only sizes differ (see :func:`pick`).
"""

from __future__ import annotations

import os

import jax

PROFILES = ("quick", "full")


def profile() -> str:
    """The active profile name, ``"quick"`` or ``"full"``."""
    name = os.environ.get("DIFFDENS_PROFILE", "").strip().lower()
    if not name:
        return "full" if any(d.platform == "gpu" for d in jax.devices()) else "quick"
    if name not in PROFILES:
        raise ValueError(f"DIFFDENS_PROFILE must be one of {PROFILES}, got {name!r}")
    return name


def pick(*, quick, full):
    """Return ``quick`` or ``full`` according to the active profile."""
    return quick if profile() == "quick" else full


def device_name() -> str:
    """A short description of the default JAX device, e.g. ``"cpu"`` or ``"NVIDIA H100 80GB HBM3"``."""
    d = jax.devices()[0]
    return d.platform if d.platform == "cpu" else getattr(d, "device_kind", d.platform)
