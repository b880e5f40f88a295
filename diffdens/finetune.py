"""Maximum likelihood through the probability-flow ODE: fine-tune a score model on its own ODE log-likelihood.

Song et al. 2021b, eqs. 6-7 (the PF-ODE density p^ODE_theta, a continuous normalizing flow) and Sec. 4-5
(why the ODE likelihood and the likelihood-weighted denoising bound of Thm. 1 are different objectives: the bound is
on the SDE model p^SDE_theta, which equals p^ODE_theta only when s_theta is the score of its own marginals). The
gradient of log p^ODE_theta(x) with respect to theta is that of a neural ODE (Chen et al. 2018): diffrax
differentiates the solve of :func:`diffdens.ode_log_prob` with the adjoint of ``SolveOptions(adjoint=...)``.

:func:`fit_ode_likelihood` takes Adam steps (optax) on -mean log p^ODE_theta over minibatches. The model is data: its
trainable arrays (a flax.nnx model's ``nnx.Param`` s, an equinox module's inexact arrays) are split from the rest and
passed to one compiled step as traced arguments, so every step, and every later call with the same shapes and
options, reuses one compilation; the caller's model is never modified (a new one is returned).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ._checks import check_bool, check_key, check_positive, check_positive_int, check_t0
from ._engine import front_door, probe_times
from .nets import ScoreModel
from .ode import ode_log_prob
from .options import Divergence, SolveOptions, check_divergence, check_solve
from .sde import LinearSDE, check_sde
from .progress import progress_bar


def _split(model):
    """``model`` as (trainable arrays, the rest, a hashable description) such that :func:`_merge` rebuilds it."""
    if isinstance(model, ScoreModel):
        graphdef, params, rest = nnx.split(model.net, nnx.Param, ...)
        return params, rest, ("ScoreModel", graphdef, model.sde, model.parameterization,
                              tuple(sorted(model.config.items())))
    if isinstance(model, nnx.Module):
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        return params, rest, ("nnx", graphdef)
    if isinstance(model, eqx.Module):
        params, rest = eqx.partition(model, eqx.is_inexact_array)
        return params, rest, ("eqx",)
    raise TypeError(f"model must be a diffdens.ScoreModel, a flax.nnx module or an equinox module (with a "
                    f"score(x, t) method, or itself the score), got {type(model).__name__}")


def _merge(params, rest, static):
    kind = static[0]
    if kind == "ScoreModel":
        _, graphdef, sde, par, config = static
        return ScoreModel(nnx.merge(graphdef, params, rest), sde, par, dict(config))
    if kind == "nnx":
        return nnx.merge(static[1], params, rest)
    return eqx.combine(params, rest)


def _score_of(model) -> Callable:
    """The score callable of a model: its ``score`` method where it has one, else the model itself."""
    score = getattr(model, "score", None)
    return score if callable(score) else model


@eqx.filter_jit
def _step(params, opt_state, rest, static, sde, data, key, lr, solve_fields, *, t0, hutch, batch_size):
    """One Adam step on -mean log p^ODE over a minibatch of ``batch_size`` points drawn from ``data`` without
    replacement; returns (params, opt_state, loss before the step, mean NFE per point or NaN). ``solve_fields`` are
    the fields of a SolveOptions, passed as a pytree (an adjoint such as BacksolveAdjoint is not hashable)."""
    solve = SolveOptions(*solve_fields)
    kb, kp = jax.random.split(key)
    xb = data[jax.random.choice(kb, data.shape[0], (batch_size,), replace=False)]

    def loss_fn(p):
        est = ode_log_prob(_score_of(_merge(p, rest, static)), sde, xb, key=kp if hutch is not None else None,
                           t0=t0, divergence="exact" if hutch is None else hutch, solve=solve, batch_size=None)
        nfe = jnp.nan if est.nfe is None else jnp.mean(est.nfe.astype(xb.dtype))
        return -jnp.mean(est.value), nfe

    (loss, nfe), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = optax.adam(lr).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, nfe


def fit_ode_likelihood(
    model,
    sde: LinearSDE,
    data,
    *,
    key,
    steps: int,
    batch_size: int = 64,
    lr: float = 1e-4,
    t0: float = 1e-5,
    solve: Optional[SolveOptions] = None,
    divergence: Divergence = "exact",
    progress: bool = True,
):
    """Fine-tune ``model`` by maximum likelihood through the probability-flow ODE; returns ``(model, history)``.

    Each of ``steps`` Adam steps (optax, constant learning rate ``lr``) lowers the minibatch negative log-likelihood
    -mean_i log p^ODE_theta(x_i) of :func:`diffdens.ode_log_prob` (Song et al. 2021b, eqs. 6-7), differentiated
    through the ODE solve as a continuous normalizing flow (Chen et al. 2018) with the adjoint of ``solve``. This is
    the exact likelihood of the ODE model, not the denoising bound of :func:`diffdens.fit_score`, which bounds the
    SDE model's likelihood (Song et al. 2021b, Thm. 1): the two models differ unless the network is the score of its
    own marginals, so raising one objective need not raise the other.

    Arguments:
        model: a :class:`diffdens.ScoreModel` (its ``nnx.Param`` s are trained; the random Fourier features stay
            fixed), a flax.nnx module (its ``nnx.Param`` s) or an equinox module (its inexact arrays); the score is
            ``model.score`` where the model has that method, else the model itself. Not modified.
        sde: the forward SDE (a ScoreModel's own ``model.sde``).
        data: training points, shape (N, *event_shape), finite.
        key: PRNG key; step k draws its minibatch (without replacement) and, for a Hutchinson divergence, its probes
            from ``jax.random.split(key, steps)[k]``, so the result is a deterministic function of ``key``.
        steps: the number of Adam steps.
        batch_size: points per minibatch, at most N.
        lr: Adam's learning rate.
        t0: the start time of the ODE in (0, T) (the likelihood is that of p_t0).
        solve: :class:`diffdens.SolveOptions` of the ODE solve and its gradient (``adjoint``); default tolerances
            1e-5.
        divergence: ``"exact"`` or :class:`diffdens.Hutchinson` (an unbiased estimate of the log-likelihood, and of
            its gradient, with fresh probes each step; Grathwohl et al. 2019).
        progress: show a progress bar (tqdm, where installed).

    Returns:
        ``(model, history)``: a new model of the same type with the fine-tuned parameters; ``history["loss"]`` (steps,)
        the minibatch negative log-likelihood (nats per point) before each step, ``history["nfe"]`` (steps,) the
        mean score evaluations per point of each step's forward solve (NaN for a solver without a fixed cost per
        step), ``history["steps"]`` the number of steps.

    Every argument is validated before any compiled work (ValueError / TypeError naming it). A non-finite loss stops
    the fit with FloatingPointError naming the step.
    """
    check_sde(sde)
    params, rest, static = _split(model)
    if isinstance(model, ScoreModel) and model.sde != sde:
        raise ValueError(f"sde must be the model's own SDE ({model.sde!r}), got {sde!r}")
    if not jax.tree_util.tree_leaves(params):
        raise ValueError("model has no trainable parameters (no nnx.Param / inexact array)")
    key = check_key(key)
    steps = check_positive_int(steps, "steps")
    batch_size = check_positive_int(batch_size, "batch_size")
    lr = check_positive(lr, "lr")
    t0 = check_t0(t0, sde.T)
    solve = check_solve(solve)
    hutch = check_divergence(divergence)
    check_bool(progress, "progress")
    front = front_door(_score_of(model), sde, data, times=probe_times(sde, t0), score_name="model.score",
                       x_name="data")  # data's shape and values, the score's output shape, a probe for NaN
    data = front.unflatten(front.x)
    if batch_size > data.shape[0]:
        raise ValueError(f"batch_size must be at most the number of data points ({data.shape[0]}), got {batch_size}")

    lr_arr = jnp.asarray(lr, data.dtype)
    solve_fields = tuple(getattr(solve, f.name) for f in dataclasses.fields(solve))
    opt_state = optax.adam(lr_arr).init(params)
    losses, nfes = [], []
    bar = progress_bar(enabled=progress, total=steps, desc="fit_ode_likelihood", leave=False)
    for k, kk in enumerate(jax.random.split(key, steps)):
        params, opt_state, loss, nfe = _step(params, opt_state, rest, static, sde, data, kk, lr_arr, solve_fields,
                                             t0=t0, hutch=hutch, batch_size=batch_size)
        losses.append(float(loss))
        nfes.append(float(nfe))
        bar.update(1)
        if not math.isfinite(losses[-1]):
            bar.close()
            raise FloatingPointError(f"fit_ode_likelihood: the loss is non-finite at step {k + 1} "
                                     f"({losses[-1]}); lower lr")
        bar.set_postfix(nll=f"{losses[-1]:.4g}")
    bar.close()
    return _merge(params, rest, static), {"loss": np.asarray(losses), "nfe": np.asarray(nfes), "steps": steps}
