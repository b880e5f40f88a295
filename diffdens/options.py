"""Options that travel together, as small immutable objects: how an ODE is solved, how a divergence is estimated.

* :class:`SolveOptions`: tolerances, solver, step budget and adjoint of every adaptive diffrax solve (the PF-ODE,
  the HD-ODE, the mode-tracking ODE). Pass ``solve=dd.SolveOptions(rtol=1e-6)``.
* :class:`Hutchinson`: the divergence estimator of Hutchinson (1989) with ``n_probes`` fixed probes per point
  (Grathwohl et al. 2019, FFJORD, eq. 7), Rademacher or Gaussian. Pass ``divergence=dd.Hutchinson(4)``; the string
  ``"exact"`` (D Jacobian-vector products) is the other choice, and ``"hutchinson"`` means ``Hutchinson()``.

Both are frozen dataclasses: hashable, so they are static arguments of the compiled kernels (tolerances are passed to
the kernels as traced arrays, so changing them does not recompile). Every field is validated on construction, and
the error names the field.

NFE. diffrax reports the number of attempted steps, not the number of vector-field evaluations. For an explicit
Runge-Kutta solver the cost is fixed by its Butcher tableau: ``s`` stages per step, one fewer when the last stage is
the next step's first (FSAL), plus one evaluation to start an FSAL solve. :attr:`SolveOptions.nfe_law` is that
``(a, b)`` with evaluations = a + b * steps (``tests/test_options.py`` checks it against counted calls); a solver
without a fixed cost per step (implicit, or not a tableau solver) has no law and estimators report ``nfe=None``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import diffrax

from ._checks import check_option, check_positive, check_positive_int

PROBES = ("rademacher", "gaussian")


@dataclasses.dataclass(frozen=True)
class SolveOptions:
    """How an adaptive ODE solve runs.

    Arguments:
        rtol, atol: relative and absolute tolerances of diffrax's PID step-size controller.
        solver: an adaptive diffrax solver (default ``diffrax.Tsit5()``; it needs an embedded error estimate).
        max_steps: the step budget per point; a solve that exhausts it raises (eagerly) naming ``max_steps``.
        adjoint: how gradients flow through the solve (default ``diffrax.RecursiveCheckpointAdjoint()``:
            discretise-then-optimise with checkpointing, memory bounded; ``diffrax.BacksolveAdjoint()`` solves the
            continuous adjoint backwards).
    """

    rtol: float = 1e-5
    atol: float = 1e-5
    solver: diffrax.AbstractSolver = diffrax.Tsit5()
    max_steps: int = 4096
    adjoint: diffrax.AbstractAdjoint = diffrax.RecursiveCheckpointAdjoint()

    def __post_init__(self):
        object.__setattr__(self, "rtol", check_positive(self.rtol, "solve.rtol"))
        object.__setattr__(self, "atol", check_positive(self.atol, "solve.atol"))
        object.__setattr__(self, "max_steps", check_positive_int(self.max_steps, "solve.max_steps"))
        if not isinstance(self.solver, diffrax.AbstractAdaptiveSolver):
            raise TypeError(f"solve.solver must be an adaptive diffrax solver (e.g. diffrax.Tsit5()), "
                            f"got {type(self.solver).__name__}")
        if not isinstance(self.adjoint, diffrax.AbstractAdjoint):
            raise TypeError(f"solve.adjoint must be a diffrax adjoint (e.g. diffrax.RecursiveCheckpointAdjoint()), "
                            f"got {type(self.adjoint).__name__}")

    @property
    def nfe_law(self) -> Optional[tuple]:
        """(a, b) with vector-field evaluations = a + b * attempted steps, or None (see the module docstring)."""
        return nfe_law(self.solver)

    def replace(self, **changes) -> "SolveOptions":
        return dataclasses.replace(self, **changes)


def nfe_law(solver) -> Optional[tuple]:
    """(a, b) for an explicit Runge-Kutta ``solver``: b stages per step (one fewer with FSAL), a = 1 with FSAL."""
    if isinstance(solver, diffrax.AbstractImplicitSolver):
        return None
    tableau = getattr(solver, "tableau", None)
    if not isinstance(tableau, diffrax.ButcherTableau):
        return None
    stages = len(tableau.c) + 1
    fsal = bool(tableau.fsal)
    return int(fsal), stages - int(fsal)


@dataclasses.dataclass(frozen=True)
class Hutchinson:
    """Hutchinson's trace estimator: ``n_probes`` probes v with E[v v^T] = I, tr(J) ~ mean of v^T J v.

    Arguments:
        n_probes: probes per point (held fixed along an ODE path; per time sample in the ELBO).
        probe: ``"rademacher"`` (lowest variance for a fixed J) or ``"gaussian"``.
    """

    n_probes: int = 1
    probe: str = "rademacher"

    def __post_init__(self):
        object.__setattr__(self, "n_probes", check_positive_int(self.n_probes, "divergence.n_probes"))
        check_option(self.probe, PROBES, "divergence.probe")


Divergence = Union[str, Hutchinson]


def check_divergence(divergence, name: str = "divergence") -> Optional[Hutchinson]:
    """``"exact"`` -> None; ``"hutchinson"`` -> ``Hutchinson()``; a :class:`Hutchinson` as it is."""
    if isinstance(divergence, Hutchinson):
        return divergence
    check_option(divergence, ("exact", "hutchinson"), name)
    return None if divergence == "exact" else Hutchinson()


def check_solve(solve, name: str = "solve") -> SolveOptions:
    """None -> the defaults; a :class:`SolveOptions` as it is."""
    if solve is None:
        return SolveOptions()
    if not isinstance(solve, SolveOptions):
        raise TypeError(f"{name} must be a diffdens.SolveOptions(rtol=..., atol=..., solver=..., max_steps=..., "
                        f"adjoint=...), got {type(solve).__name__}")
    return solve
