"""Score networks (flax.nnx): an MLP with Gaussian random Fourier features of x and t.

The architecture of Premkumar 2024, Sec. 4 (an MLP with Gaussian random-feature embeddings of x and t).
A :class:`ScoreModel` wraps a network with its SDE and parameterization and exposes ``model.score(x, t)``, a plain
score callable (one point x of shape (D,), scalar t) that every estimator accepts. Parameterizations of the raw
output o = net(x, t), all scaled by 1/sigma_t so the network output stays O(1) as t -> 0:

* ``"score"``:    s = o / sigma_t                              (o estimates sigma_t grad log p_t)
* ``"eps"``:      s = -o / sigma_t                             (o estimates the noise; Song et al. 2021b / Ho et al. 2020)
* ``"x0"``:       x0_hat = c_skip x / alpha_t + c_out o, s = (alpha_t x0_hat - x) / sigma_t^2, with EDM's
  preconditioning (Karras et al. 2022, Table 1, sigma_data = 1) in the scaled noise level r = sigma_t / alpha_t:
  c_skip = 1 / (1 + r^2), c_out = r / sqrt(1 + r^2)
* ``"velocity"``: v_hat = c_v o with c_v = sqrt(alpha_t'^2 + sigma_t'^2), s = 2 (f x - v_hat) / g^2 (o estimates the
  flow-matching velocity dx_t/dt = alpha_t' x_0 + sigma_t' eps, scaled to O(1))
* ``"entropy"``:  e = o / sigma_t, s = e + 2 f(t) x / g(t)^2   (Premkumar 2024, eq. 2.6 / App. A: the control
  u = -f x - g^2 e equals the score control f x - g^2 s; for VP e = grad log p_t + x, which vanishes as p_t -> N(0, I))

The conversions are those of :mod:`diffdens.adapters`, so a trained model in any parameterization is a score.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from ._checks import check_key, check_option, check_positive_int
from .adapters import velocity_to_score, x0_to_score
from .sde import LinearSDE, check_sde

PARAMETERIZATIONS = ("score", "entropy", "eps", "x0", "velocity")


class Fixed(nnx.Variable):
    """A non-trainable variable (the random Fourier frequencies)."""


class ScoreMLP(nnx.Module):
    """MLP on [x, t, sin/cos(2 pi B_x x), sin/cos(2 pi B_t t)] with SiLU activations (Premkumar 2024, Sec. 4).

    Called as ``net(x, t)`` with x (..., D) and t (...) it returns the raw output o of shape (..., D).

    Arguments:
        dim: the dimension D of a point.
        hidden: the width of each hidden layer.
        depth: the number of hidden layers.
        n_features: random Fourier features per input (x and t each).
        x_scale, t_scale: the standard deviations of the fixed Gaussian frequencies B_x (D, n_features) and
            B_t (1, n_features).
        rngs: ``flax.nnx.Rngs`` for the initial parameters and frequencies.
    """

    def __init__(self, dim: int, *, hidden: int = 128, depth: int = 3, n_features: int = 32,
                 x_scale: float = 1.0, t_scale: float = 4.0, rngs: nnx.Rngs):
        self.dim = dim
        self.event_shape = (dim,)
        self.bx = Fixed(x_scale * jax.random.normal(rngs.params(), (dim, n_features), jnp.float32))
        self.bt = Fixed(t_scale * jax.random.normal(rngs.params(), (1, n_features), jnp.float32))
        width = dim + 1 + 4 * n_features
        layers = []
        for _ in range(depth):
            layers.append(nnx.Linear(width, hidden, rngs=rngs))
            width = hidden
        self.layers = nnx.List(layers) if hasattr(nnx, "List") else layers
        self.out = nnx.Linear(width, dim, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x: Float[Array, "*b D"], t: Float[Array, "*b"]) -> Float[Array, "*b D"]:
        t = jnp.asarray(t, x.dtype)[..., None]
        px = 2 * jnp.pi * x @ self.bx.value
        pt = 2 * jnp.pi * t @ self.bt.value
        h = jnp.concatenate([x, t, jnp.sin(px), jnp.cos(px), jnp.sin(pt), jnp.cos(pt)], axis=-1)
        for layer in self.layers:
            h = jax.nn.silu(layer(h))
        return self.out(h)


@jax.tree_util.register_pytree_node_class
class ScoreModel:
    """A trained (or untrained) network with its SDE and parameterization; ``model.score`` is a score callable.

    A ScoreModel is a pytree (its children are the network's nnx state; the graph definition, SDE,
    parameterization and config are static), so estimators trace its weights: two models of one architecture share
    one compilation. ``model.score(x, t)`` and ``model.entropy(x, t)`` take x of the event shape ((D,) for
    :class:`ScoreMLP`, (H, W, C) for :class:`~diffdens.unet.ScoreUNet`), or with leading batch axes, and return the
    same shape; ``model.raw(x, t)`` is the network output.

    Arguments:
        net: the network (:class:`ScoreMLP` or :class:`~diffdens.unet.ScoreUNet`: any nnx module with an
            ``event_shape`` attribute, called as ``net(x, t)``).
        sde: the forward SDE (:class:`diffdens.LinearSDE`) the model was trained for.
        parameterization: what the network output means: ``"score"``, ``"entropy"``, ``"eps"``, ``"x0"`` or
            ``"velocity"`` (see :mod:`diffdens.nets`).
        config: the architecture's sizes (for the MLP: dim, hidden, depth, n_features; for the U-Net:
            ``architecture="unet"`` and its sizes), stored in checkpoints.
    """

    def tree_flatten(self):
        graphdef, state = nnx.split(self.net)
        return (state,), (graphdef, self.sde, self.parameterization, tuple(sorted(self.config.items())))

    @classmethod
    def tree_unflatten(cls, aux, children):
        graphdef, sde, par, config = aux
        obj = object.__new__(cls)
        obj.net, obj.sde, obj.parameterization, obj.config = nnx.merge(graphdef, children[0]), sde, par, dict(config)
        return obj

    def __init__(self, net: ScoreMLP, sde: LinearSDE, parameterization: str = "score", config: dict | None = None):
        self.net, self.sde = net, sde
        self.parameterization = check_option(parameterization, PARAMETERIZATIONS, "parameterization")
        self.config = dict(config or {})

    def __repr__(self) -> str:
        return f"ScoreModel({self.parameterization!r}, {self.sde!r}, event_shape={self.event_shape})"

    @property
    def event_shape(self) -> tuple:
        """The shape of one point: (D,) for :class:`ScoreMLP`, (H, W, C) for :class:`~diffdens.unet.ScoreUNet`."""
        return tuple(self.net.event_shape)

    def _time(self, x, t):
        """t as an array that broadcasts against x (..., *event_shape): t (...) gets one axis per event axis."""
        return jnp.reshape(jnp.asarray(t, x.dtype), jnp.shape(t) + (1,) * len(self.event_shape))

    def raw(self, x, t):
        """The network output o(x, t)."""
        return self.net(x, t)

    def score(self, x: Float[Array, "*b *event"], t) -> Float[Array, "*b *event"]:
        """grad log p_t(x) as this model estimates it (x of shape (*event_shape) or (..., *event_shape), t scalar
        or (...))."""
        t_ = self._time(x, t)
        alpha, sigma = self.sde.marginal(t_)
        o = self.net(x, t)
        par = self.parameterization
        if par == "score":
            return o / sigma
        if par == "eps":
            return -o / sigma
        if par == "x0":
            r = sigma / alpha
            x0 = (x / alpha) / (1 + r**2) + r / jnp.sqrt(1 + r**2) * o
            return x0_to_score(x0, x, t_, self.sde)
        if par == "velocity":
            f, g2 = self.sde.f(t_), self.sde.g2(t_)
            dsigma = (g2 + 2 * f * sigma**2) / (2 * sigma)  # sigma' from d sigma^2/dt = 2 f sigma^2 + g^2
            return velocity_to_score(jnp.sqrt((f * alpha) ** 2 + dsigma**2) * o, x, t_, self.sde)
        return o / sigma + 2 * self.sde.f(t_) * x / self.sde.g2(t_)

    def entropy(self, x: Float[Array, "*b *event"], t) -> Float[Array, "*b *event"]:
        """The entropy-matching field e = s - 2 f x / g^2 (Premkumar 2024, eq. 2.6), for any parameterization."""
        t_ = self._time(x, t)
        return self.score(x, t) - 2 * self.sde.f(t_) * x / self.sde.g2(t_)


def check_net_sizes(dim, hidden, depth, n_features) -> dict:
    """The sizes of a :class:`ScoreMLP` as plain ints: ``dim`` (D), ``hidden`` (width of each hidden layer) and
    ``n_features`` (random Fourier features per input) positive integers; ``depth`` (the number of hidden layers) a
    non-negative integer (0: a linear map of the features). An integral float such as 8.0 is accepted. ValueError
    (TypeError for a non-number) naming the argument."""
    out = {"dim": check_positive_int(dim, "dim"), "hidden": check_positive_int(hidden, "hidden")}
    out["depth"] = _check_nonnegative_int(depth, "depth")
    out["n_features"] = check_positive_int(n_features, "n_features")
    return out


def _check_nonnegative_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.ndarray, jax.Array)) \
            or np.ndim(value) != 0:
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v != int(v) or v < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(v)


def init_model(dim: int, sde: LinearSDE, *, key, parameterization: str = "score", hidden: int = 128,
               depth: int = 3, n_features: int = 32) -> ScoreModel:
    """A freshly initialised :class:`ScoreModel` on a :class:`ScoreMLP`.

    Arguments:
        dim: the dimension D of a point.
        sde: the forward SDE (:class:`diffdens.LinearSDE`).
        key: PRNG key of the initial parameters.
        parameterization: ``"score"``, ``"entropy"``, ``"eps"``, ``"x0"`` or ``"velocity"``.
        hidden: the width of each hidden layer.
        depth: the number of hidden layers (0: a linear map of the features).
        n_features: random Fourier features of x and of t.

    Returns:
        :class:`ScoreModel` for points of shape (dim,). Bad sizes raise ValueError (TypeError for a non-number)
        naming the argument (:func:`check_net_sizes`).
    """
    check_sde(sde)
    check_key(key)
    check_option(parameterization, PARAMETERIZATIONS, "parameterization")
    sizes = check_net_sizes(dim, hidden, depth, n_features)
    dim, hidden, depth, n_features = sizes["dim"], sizes["hidden"], sizes["depth"], sizes["n_features"]
    net = ScoreMLP(dim, hidden=hidden, depth=depth, n_features=n_features, rngs=nnx.Rngs(params=key))
    config = dict(dim=dim, hidden=hidden, depth=depth, n_features=n_features)
    return ScoreModel(net, sde, parameterization, config)
