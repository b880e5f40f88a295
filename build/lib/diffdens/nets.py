"""Score networks (flax.nnx): an MLP with Gaussian random Fourier features of x and t.

The architecture of ``000_8c59016f91bb37e4.txt`` Sec. 4 (an MLP with Gaussian random-feature embeddings of x and t).
A :class:`ScoreModel` wraps a network with its SDE and parameterization and exposes ``model.score(x, t)``, a plain
score callable (one point x of shape (D,), scalar t) that every estimator accepts. Parameterizations of the raw
output o = net(x, t), all scaled by 1/sigma_t so the network output stays O(1) as t -> 0:

* ``"score"``:   s = o / sigma_t                              (o estimates sigma_t grad log p_t)
* ``"eps"``:     s = -o / sigma_t                             (o estimates the noise; ``002`` / DDPM)
* ``"entropy"``: e = o / sigma_t, s = e + 2 f(t) x / g(t)^2   (``000`` eq. 2.6 / App. A: the control
  u = -f x - g^2 e equals the score control f x - g^2 s; for VP e = grad log p_t + x, which vanishes as p_t -> N(0, I))
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from ._checks import check_option
from .sde import LinearSDE

PARAMETERIZATIONS = ("score", "entropy", "eps")


class Fixed(nnx.Variable):
    """A non-trainable variable (the random Fourier frequencies)."""


class ScoreMLP(nnx.Module):
    """MLP on [x, sin/cos(2 pi B_x x), sin/cos(2 pi B_t t)] with SiLU activations; output of shape (D,)."""

    def __init__(self, dim: int, *, hidden: int = 128, depth: int = 3, n_features: int = 32,
                 x_scale: float = 1.0, t_scale: float = 4.0, rngs: nnx.Rngs):
        self.dim = dim
        self.bx = Fixed(x_scale * jax.random.normal(rngs.params(), (dim, n_features)))
        self.bt = Fixed(t_scale * jax.random.normal(rngs.params(), (1, n_features)))
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
    one compilation.
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
        return f"ScoreModel({self.parameterization!r}, {self.sde!r}, D={self.net.dim})"

    def raw(self, x, t):
        """The network output o(x, t)."""
        return self.net(x, t)

    def score(self, x: Float[Array, " D"], t) -> Float[Array, " D"]:
        """grad log p_t(x) as this model estimates it (x of shape (D,) or (..., D), t scalar or (...))."""
        sigma = self.sde.marginal(jnp.asarray(t, x.dtype))[1][..., None]
        o = self.net(x, t)
        if self.parameterization == "score":
            return o / sigma
        if self.parameterization == "eps":
            return -o / sigma
        t_ = jnp.asarray(t, x.dtype)[..., None]
        return o / sigma + 2 * self.sde.f(t_) * x / self.sde.g2(t_)

    def entropy(self, x: Float[Array, " D"], t) -> Float[Array, " D"]:
        """The entropy-matching field e = s - 2 f x / g^2 (``000`` eq. 2.6), for any parameterization."""
        t_ = jnp.asarray(t, x.dtype)[..., None]
        return self.score(x, t) - 2 * self.sde.f(t_) * x / self.sde.g2(t_)


def init_model(dim: int, sde: LinearSDE, *, key, parameterization: str = "score", hidden: int = 128,
               depth: int = 3, n_features: int = 32) -> ScoreModel:
    """A freshly initialised :class:`ScoreModel`."""
    check_option(parameterization, PARAMETERIZATIONS, "parameterization")
    net = ScoreMLP(dim, hidden=hidden, depth=depth, n_features=n_features, rngs=nnx.Rngs(params=key))
    config = dict(dim=dim, hidden=hidden, depth=depth, n_features=n_features)
    return ScoreModel(net, sde, parameterization, config)
