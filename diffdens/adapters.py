"""Bring your own model: scores from noise predictors, denoisers and velocity fields, on any Gaussian path.

Every model below is trained on a path x_t = alpha_t x_0 + sigma_t eps (an SDE of :mod:`diffdens.sde`, e.g.
:class:`~diffdens.CosineVPSDE`, :class:`~diffdens.EDMSDE`, :class:`~diffdens.RectifiedFlowSDE` or
:meth:`~diffdens.LinearSDE.from_schedule`). Tweedie's formula E[x_0 | x_t] = (x_t + sigma_t^2 grad log p_t) / alpha_t
and E[eps | x_t] = -sigma_t grad log p_t turn each prediction into the score:

* noise prediction eps_hat (DDPM):        s = -eps_hat / sigma_t
* data prediction x0_hat (EDM's D):       s = (alpha_t x0_hat - x) / sigma_t^2
* flow-matching velocity v = dx_t/dt = alpha_t' x_0 + sigma_t' eps (rectified flow, Lipman et al.):
  v_hat = f x + (g^2 / 2) (-s), i.e. s = 2 (f x - v_hat) / g^2 (v_hat is the probability-flow ODE drift)
* v-prediction (Salimans & Ho 2022) v = alpha_t eps - sigma_t x_0:
  eps_hat = (alpha_t v_hat + sigma_t x) / (alpha_t^2 + sigma_t^2), then as for eps.

Each adapter returns an equinox Module (the wrapped function is a field, traced when it is a pytree such as a model;
the SDE is static), so estimators compile once per architecture. The wrapped function's output shape is checked
when the score is first evaluated (every estimator does so abstractly before any compiled work), and at construction
when ``dim`` is given; a mismatch raises ValueError naming the argument.
"""

from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checks import check_bool, check_option, check_positive, check_positive_int
from ._engine import abstract_eval, traced_score
from .sde import LinearSDE, VPSDE, check_sde

VELOCITY_KINDS = ("flow", "v")


# --- the conversions, pure functions of one prediction ----------------------------------------------------------
def _tx(x, t):
    return jnp.asarray(t, x.dtype)


def eps_to_score(eps, x, t, sde: LinearSDE):
    """s = -eps / sigma_t.

    Arguments:
        eps: (..., D) the predicted noise.
        x: (..., D) the noisy point x_t.
        t: the time, a scalar or broadcastable against x[..., :1].
        sde: the :class:`~diffdens.LinearSDE` of the path.

    Returns:
        (..., D) the score.
    """
    return -eps / sde.marginal(_tx(x, t))[1]


def x0_to_score(x0, x, t, sde: LinearSDE):
    """s = (alpha_t x0 - x) / sigma_t^2 (Tweedie).

    Arguments:
        x0: (..., D) the predicted clean data.
        x: (..., D) the noisy point x_t.
        t: the time, a scalar or broadcastable against x[..., :1].
        sde: the :class:`~diffdens.LinearSDE` of the path.

    Returns:
        (..., D) the score.
    """
    alpha, sigma = sde.marginal(_tx(x, t))
    return (alpha * x0 - x) / sigma**2


def velocity_to_score(v, x, t, sde: LinearSDE):
    """s = 2 (f x - v) / g^2 for the flow velocity v = alpha' x_0 + sigma' eps (the PF-ODE drift f x - g^2 s / 2).

    Arguments:
        v: (..., D) the predicted velocity dx_t/dt.
        x: (..., D) the noisy point x_t.
        t: the time, a scalar or broadcastable against x[..., :1].
        sde: the :class:`~diffdens.LinearSDE` of the path.

    Returns:
        (..., D) the score.
    """
    t = _tx(x, t)
    return 2 * (sde.f(t) * x - v) / sde.g2(t)


def v_prediction_to_score(v, x, t, sde: LinearSDE):
    """s for v = alpha_t eps - sigma_t x_0: eps = (alpha v + sigma x) / (alpha^2 + sigma^2), s = -eps / sigma.

    Arguments:
        v: (..., D) the predicted v (Salimans and Ho 2022).
        x: (..., D) the noisy point x_t.
        t: the time, a scalar or broadcastable against x[..., :1].
        sde: the :class:`~diffdens.LinearSDE` of the path.

    Returns:
        (..., D) the score.
    """
    alpha, sigma = sde.marginal(_tx(x, t))
    return -(alpha * v + sigma * x) / ((alpha**2 + sigma**2) * sigma)


def score_to_eps(s, x, t, sde):
    """eps = -sigma_t s (inverse of :func:`eps_to_score`).

    Arguments:
        s: (..., D) the score.
        x: (..., D) the noisy point x_t.
        t: the time, a scalar or broadcastable against x[..., :1].
        sde: the :class:`~diffdens.LinearSDE` of the path.

    Returns:
        (..., D) the noise prediction.
    """
    return -sde.marginal(_tx(x, t))[1] * s


def score_to_x0(s, x, t, sde):
    """x0 = (x + sigma_t^2 s) / alpha_t (inverse of :func:`x0_to_score`).

    Arguments:
        s: (..., D) the score.
        x: (..., D) the noisy point x_t.
        t: the time, a scalar or broadcastable against x[..., :1].
        sde: the :class:`~diffdens.LinearSDE` of the path.

    Returns:
        (..., D) the data prediction.
    """
    alpha, sigma = sde.marginal(_tx(x, t))
    return (x + sigma**2 * s) / alpha


def score_to_velocity(s, x, t, sde):
    """v = f x - g^2 s / 2, the PF-ODE drift (inverse of :func:`velocity_to_score`).

    Arguments:
        s: (..., D) the score.
        x: (..., D) the noisy point x_t.
        t: the time, a scalar or broadcastable against x[..., :1].
        sde: the :class:`~diffdens.LinearSDE` of the path.

    Returns:
        (..., D) the flow velocity.
    """
    t = _tx(x, t)
    return sde.f(t) * x - 0.5 * sde.g2(t) * s


def score_to_v_prediction(s, x, t, sde):
    """v = alpha eps - sigma x0 with eps and x0 the Tweedie means (inverse of :func:`v_prediction_to_score`).

    Arguments:
        s: (..., D) the score.
        x: (..., D) the noisy point x_t.
        t: the time, a scalar or broadcastable against x[..., :1].
        sde: the :class:`~diffdens.LinearSDE` of the path.

    Returns:
        (..., D) the v-prediction.
    """
    alpha, sigma = sde.marginal(_tx(x, t))
    return alpha * (-sigma * s) - sigma * (x + sigma**2 * s) / alpha


# --- adapters --------------------------------------------------------------------------------------------------
def _checked(out, x, name):
    if jnp.shape(out) != jnp.shape(x):
        raise ValueError(f"{name} must return an array of the shape of x {tuple(jnp.shape(x))}, got "
                         f"{tuple(jnp.shape(out))}")
    if not jnp.issubdtype(jnp.result_type(out), jnp.floating):
        raise ValueError(f"{name} must return floating values, got {jnp.result_type(out)}")
    return out


class EpsScore(eqx.Module):
    """score(x, t) = -eps_fn(x, t) / sigma_t (built by :func:`score_from_eps`).

    Arguments:
        fn: the noise predictor ``eps_fn(x, t)``, output of the shape of x (traced when a pytree).
        sde: the :class:`~diffdens.LinearSDE` of the path (static).
    """

    fn: Callable
    sde: LinearSDE = eqx.field(static=True)

    def __call__(self, x, t):
        return eps_to_score(_checked(self.fn(x, t), x, "eps_fn"), x, t, self.sde)


class DenoiserScore(eqx.Module):
    """score(x, t) = (alpha_t D - x) / sigma_t^2 with D = denoiser_fn(x, t), or, with ``sigma_input``,
    D = denoiser_fn(x / alpha_t, sigma_t / alpha_t) (EDM's D(x; sigma) in its scaled coordinates). Built by
    :func:`score_from_denoiser`.

    Arguments:
        fn: the denoiser, output of the shape of x (traced when a pytree).
        sde: the :class:`~diffdens.LinearSDE` of the path (static).
        sigma_input: call ``fn`` with the noise level in scaled coordinates instead of t.
    """

    fn: Callable
    sde: LinearSDE = eqx.field(static=True)
    sigma_input: bool = eqx.field(static=True, default=False)

    def __call__(self, x, t):
        if self.sigma_input:
            alpha, sigma = self.sde.marginal(_tx(x, t))
            out = self.fn(x / alpha, sigma / alpha)
        else:
            out = self.fn(x, t)
        return x0_to_score(_checked(out, x, "denoiser_fn"), x, t, self.sde)


class VelocityScore(eqx.Module):
    """score(x, t) from a velocity (built by :func:`score_from_velocity`).

    Arguments:
        fn: the velocity model ``v_fn(x, t)``, output of the shape of x (traced when a pytree).
        sde: the :class:`~diffdens.LinearSDE` of the path (static).
        kind: ``"flow"`` (v = dx_t/dt) or ``"v"`` (v = alpha eps - sigma x0).
    """

    fn: Callable
    sde: LinearSDE = eqx.field(static=True)
    kind: str = eqx.field(static=True, default="flow")

    def __call__(self, x, t):
        v = _checked(self.fn(x, t), x, "v_fn")
        conv = velocity_to_score if self.kind == "flow" else v_prediction_to_score
        return conv(v, x, t, self.sde)


class RescaledTime(eqx.Module):
    """fn(x, offset + scale * t) (rounded to the nearest integer with ``round_t``): a model of integer timesteps
    called with continuous t (:func:`from_discrete_timesteps`).

    Arguments:
        fn: the model ``fn(x, timestep)`` (traced when a pytree).
        scale: timestep per unit of t (static).
        offset: timestep at t = 0 (static).
        round_t: round the timestep to the nearest integer (static).
    """

    fn: Callable
    scale: float = eqx.field(static=True)
    offset: float = eqx.field(static=True, default=0.0)
    round_t: bool = eqx.field(static=True, default=False)

    def __call__(self, x, t):
        s = self.offset + self.scale * jnp.asarray(t, x.dtype)
        return self.fn(x, jnp.round(s) if self.round_t else s)


def _probe(score, dim, sde):
    if dim is None:
        return score
    dim = check_positive_int(dim, "dim")
    x = jax.ShapeDtypeStruct((dim,), jnp.result_type(float))
    abstract_eval(score, x, jnp.asarray(0.5 * sde.T, jnp.result_type(float)))
    return score


def score_from_eps(eps_fn: Callable, sde: LinearSDE, *, dim: Optional[int] = None) -> EpsScore:
    """The score of a noise predictor eps_fn(x, t) ~ E[eps | x_t = x] on ``sde``'s path: s = -eps / sigma_t.

    Arguments:
        eps_fn: ``eps_fn(x, t)`` on one point x (D,) and scalar t, returning (D,); a model, module, ``Partial`` or
            plain function.
        sde: the :class:`~diffdens.LinearSDE` the model was trained on.
        dim: D, to check the output shape now (ValueError naming ``eps_fn``); otherwise the first evaluation
            (every estimator's abstract shape check) does.

    Returns:
        :class:`EpsScore`, a score callable ``score(x, t)``.
    """
    check_sde(sde)
    return _probe(EpsScore(traced_score(eps_fn, "eps_fn"), sde), dim, sde)


def score_from_denoiser(denoiser_fn: Callable, sde: LinearSDE, *, sigma_input: bool = False,
                        dim: Optional[int] = None) -> DenoiserScore:
    """The score of a data predictor (x0-prediction) D ~ E[x_0 | x_t = x]: s = (alpha_t D - x) / sigma_t^2.

    ``denoiser_fn(x, t)`` by default. With ``sigma_input=True`` it is EDM's D(x; sigma) (Karras et al. 2022, eq. 3),
    called as D(x / alpha_t, sigma_t / alpha_t): the noise level instead of t, in the scaled coordinates
    x / alpha_t where the noise is N(0, (sigma_t / alpha_t)^2 I). On :class:`~diffdens.EDMSDE` (alpha = 1,
    sigma(t) = t) both calls coincide: D(x, t) = D(x; sigma = t).

    Arguments:
        denoiser_fn: the data predictor, returning an array of the shape of x.
        sde: the :class:`~diffdens.LinearSDE` the model was trained on.
        sigma_input: call it as EDM's D(x; sigma) (see above).
        dim: D, to check the output shape now (ValueError naming ``denoiser_fn``).

    Returns:
        :class:`DenoiserScore`, a score callable ``score(x, t)``.
    """
    check_sde(sde)
    sigma_input = check_bool(sigma_input, "sigma_input")
    return _probe(DenoiserScore(traced_score(denoiser_fn, "denoiser_fn"), sde, sigma_input), dim, sde)


def score_from_velocity(v_fn: Callable, sde: LinearSDE, *, kind: str = "flow",
                        dim: Optional[int] = None) -> VelocityScore:
    """The score of a velocity model.

    * ``kind="flow"`` (flow matching / rectified flow): v_fn(x, t) ~ E[dx_t/dt | x_t = x] with
      dx_t/dt = alpha_t' x_0 + sigma_t' eps; that is the probability-flow ODE drift f x - g^2 s / 2, so
      s = 2 (f x - v) / g^2. For :class:`~diffdens.RectifiedFlowSDE` v = eps - x_0.
    * ``kind="v"`` (v-prediction, Salimans & Ho 2022): v = alpha_t eps - sigma_t x_0, so
      eps = (alpha_t v + sigma_t x) / (alpha_t^2 + sigma_t^2) and s = -eps / sigma_t.

    Arguments:
        v_fn: the velocity model ``v_fn(x, t)``, returning an array of the shape of x.
        sde: the :class:`~diffdens.LinearSDE` the model was trained on.
        kind: ``"flow"`` or ``"v"`` (see above).
        dim: D, to check the output shape now (ValueError naming ``v_fn``).

    Returns:
        :class:`VelocityScore`, a score callable ``score(x, t)``.
    """
    check_sde(sde)
    kind = check_option(kind, VELOCITY_KINDS, "kind")
    return _probe(VelocityScore(traced_score(v_fn, "v_fn"), sde, kind), dim, sde)


def from_discrete_timesteps(eps_fn: Callable, *, n_steps: int = 1000, beta_start: float = 1e-4,
                            beta_end: float = 0.02, round_t: bool = False, dim: Optional[int] = None):
    """A DDPM noise predictor of integer timesteps as ``(score, sde)``, in one call.

    DDPM's linear schedule beta_i from ``beta_start`` to ``beta_end`` over ``n_steps`` steps is the discretization of
    :class:`~diffdens.VPSDE` with beta_min = n_steps beta_start and beta_max = n_steps beta_end (0.1 and 20 for the
    defaults, Song et al. 2021a, eq. 10) at t = i / n_steps. The network is called as eps_fn(x, t (n_steps - 1)), the
    convention of Song et al.'s released code for DDPM checkpoints (a float timestep; ``round_t=True`` rounds it to
    the nearest integer for models that only accept trained integer steps, at the cost of a piecewise-constant score).

    Arguments:
        eps_fn: the noise predictor ``eps_fn(x, timestep)``.
        n_steps: the number of DDPM steps.
        beta_start, beta_end: the first and last beta of the linear schedule.
        round_t: round the timestep to the nearest integer.
        dim: D, to check the output shape now (ValueError naming ``eps_fn``).

    Returns:
        ``(score, sde)``: an :class:`EpsScore` over a :class:`RescaledTime`, and the matching
        :class:`~diffdens.VPSDE`.
    """
    n_steps = check_positive_int(n_steps, "n_steps")
    check_positive(beta_start, "beta_start")
    check_positive(beta_end, "beta_end")
    if not beta_end >= beta_start:
        raise ValueError(f"beta_end must be >= beta_start, got {beta_start}, {beta_end}")
    round_t = check_bool(round_t, "round_t")
    sde = VPSDE(beta_min=beta_start * n_steps, beta_max=beta_end * n_steps)
    fn = RescaledTime(traced_score(eps_fn, "eps_fn"), float(n_steps - 1), 0.0, round_t)
    return score_from_eps(fn, sde, dim=dim), sde
