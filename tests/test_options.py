"""diffdens.options: SolveOptions and Hutchinson validation, and the NFE law from the Butcher tableau checked against
counted vector-field evaluations."""

import diffrax
import jax
import jax.numpy as jnp
import pytest

import diffdens as dd
from diffdens.options import nfe_law


def _counted_solve(solver, rtol=1e-5, atol=1e-5):
    """Solve a stiff-ish scalar ODE with a vector field that counts its calls; return (calls, attempted steps)."""
    calls = [0]

    def bump():
        calls[0] += 1

    def vf(t, y, args):
        jax.debug.callback(bump)
        return -3.0 * y + jnp.sin(5.0 * t)

    sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), solver, 0.0, 2.0, None, jnp.array([1.0]),
                              stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol), max_steps=4096)
    jax.effects_barrier()
    return calls[0], int(sol.stats["num_steps"])


@pytest.mark.parametrize("solver", [diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Bosh3(), diffrax.Heun()],
                         ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_nfe_law_matches_counted_evaluations(solver, tol):
    a, b = nfe_law(solver)
    calls, steps = _counted_solve(solver, tol, tol)
    assert steps > 0
    assert calls == a + b * steps
    assert dd.SolveOptions(solver=solver).nfe_law == (a, b)


def test_nfe_law_known_values():
    assert nfe_law(diffrax.Tsit5()) == (1, 6)
    assert nfe_law(diffrax.Dopri5()) == (1, 6)
    assert nfe_law(diffrax.Bosh3()) == (1, 3)
    assert nfe_law(diffrax.Heun()) == (0, 2)


@pytest.mark.parametrize("solver", [diffrax.Kvaerno3(), diffrax.ImplicitEuler()], ids=lambda s: type(s).__name__)
def test_nfe_law_none_for_implicit_solver(solver):
    assert nfe_law(solver) is None
    assert dd.SolveOptions(solver=solver).nfe_law is None


def test_solve_options_validated():
    assert dd.SolveOptions() == dd.SolveOptions(rtol=1e-5, atol=1e-5)
    assert hash(dd.SolveOptions()) == hash(dd.SolveOptions())
    assert dd.SolveOptions().replace(rtol=1e-3).rtol == 1e-3
    for kw, name in [({"rtol": 0.0}, "solve.rtol"), ({"atol": -1.0}, "solve.atol"),
                     ({"max_steps": 0}, "solve.max_steps"), ({"max_steps": 2.5}, "solve.max_steps")]:
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            dd.SolveOptions(**kw)
    with pytest.raises(TypeError, match=r"solve\.solver"):
        dd.SolveOptions(solver=diffrax.Euler())
    with pytest.raises(TypeError, match=r"solve\.adjoint"):
        dd.SolveOptions(adjoint="backsolve")


def test_hutchinson_validated():
    assert dd.Hutchinson() == dd.Hutchinson(n_probes=1, probe="rademacher")
    assert dd.Hutchinson(4).n_probes == 4
    with pytest.raises(ValueError, match=r"divergence\.n_probes"):
        dd.Hutchinson(n_probes=0)
    with pytest.raises(ValueError, match=r"divergence\.probe"):
        dd.Hutchinson(probe="sphere")
    from diffdens.options import check_divergence

    assert check_divergence("exact") is None
    assert check_divergence("hutchinson") == dd.Hutchinson()
    with pytest.raises(ValueError, match="divergence"):
        check_divergence("skilling")
