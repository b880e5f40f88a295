"""A small U-Net score network for images (flax.nnx): time embedding, group norm, two resolutions.

The architecture is the DDPM / score-SDE U-Net (Ho et al. 2020, App. B; Song et al. 2021a, App. H) cut down to what a
2-core CPU trains in minutes at 8x8x3: a sinusoidal embedding of t (Vaswani et al. 2017) through a two-layer MLP,
residual blocks (group norm, SiLU, 3x3 convolution, the time embedding added as a per-channel bias, group norm, SiLU,
3x3 convolution with zero initial weights) at full resolution with ``channels`` channels and at half resolution with
2 ``channels``, a middle block, skip connections by concatenation, nearest-neighbour upsampling, and a zero-initialised
output convolution (so an untrained model's raw output is 0). No attention: at 8x8 the receptive field of the two
resolutions already covers the image.

:class:`ScoreUNet` returns the raw output o(x, t) of the image's shape; :class:`diffdens.ScoreModel` turns it into a
score in any parameterization (``score``, ``eps``, ``x0``, ``velocity``, ``entropy``; :mod:`diffdens.nets`), so
``dd.fit_score(images, sde, architecture="unet")`` trains it and every estimator accepts ``model.score`` on points of
shape (n, H, W, C).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from ._checks import check_key, check_option, check_positive_int
from .nets import PARAMETERIZATIONS, ScoreModel
from .sde import LinearSDE, check_sde

ARCHITECTURE = "unet"
UNET_KEYS = ("event_shape", "channels", "groups")


def _groups(channels: int, groups: int) -> int:
    """The largest divisor of ``channels`` that is at most ``groups`` (group norm needs groups | channels)."""
    return max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)


def time_embedding(t: Float[Array, " b"], dim: int) -> Float[Array, "b dim"]:
    """Sinusoidal embedding of t (Vaswani et al. 2017; Ho et al. 2020): sin and cos of 1000 t at ``dim // 2``
    frequencies geometric from 1 to 1/10000, so t in [0, 1] is resolved down to about 1e-3.

    Arguments:
        t: (b,) the times.
        dim: the embedding width (even).

    Returns:
        (b, dim) the embeddings.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=t.dtype) / max(half - 1, 1))
    arg = 1000.0 * t[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


class ResBlock(nnx.Module):
    """GroupNorm-SiLU-Conv, plus the time embedding as a per-channel bias, GroupNorm-SiLU-Conv (zero initial
    weights), with a 1x1 convolution on the skip path when the channel count changes.

    Arguments:
        c_in: input channels.
        c_out: output channels.
        t_dim: the width of the time embedding.
        groups: the number of group-norm groups (reduced to a divisor of the channels).
        rngs: ``flax.nnx.Rngs``.
    """

    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int, *, rngs: nnx.Rngs):
        self.norm1 = nnx.GroupNorm(c_in, num_groups=_groups(c_in, groups), rngs=rngs)
        self.conv1 = nnx.Conv(c_in, c_out, (3, 3), rngs=rngs)
        self.temb = nnx.Linear(t_dim, c_out, rngs=rngs)
        self.norm2 = nnx.GroupNorm(c_out, num_groups=_groups(c_out, groups), rngs=rngs)
        self.conv2 = nnx.Conv(c_out, c_out, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.skip = nnx.Conv(c_in, c_out, (1, 1), rngs=rngs) if c_in != c_out else None

    def __call__(self, x, temb):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.temb(temb)[:, None, None, :]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class ScoreUNet(nnx.Module):
    """A two-resolution U-Net o(x, t) on images (see the module docstring).

    Called as ``net(x, t)`` with x of shape (H, W, C) or (..., H, W, C) and t a scalar or of shape (...), it returns
    the raw output of x's shape.

    Arguments:
        event_shape: (H, W, C), the shape of one image; H and W even (one 2x downsampling).
        channels: the channels at full resolution (twice that at half resolution).
        groups: the number of group-norm groups (at most; reduced to a divisor of each channel count).
        rngs: ``flax.nnx.Rngs`` for the initial parameters.
    """

    def __init__(self, event_shape, *, channels: int = 32, groups: int = 8, rngs: nnx.Rngs):
        H, W, C = check_event_shape(event_shape)
        self.event_shape = (H, W, C)
        c1, c2, t_dim = channels, 2 * channels, 4 * channels
        self.t_dim = t_dim
        self.t1 = nnx.Linear(c1, t_dim, rngs=rngs)
        self.t2 = nnx.Linear(t_dim, t_dim, rngs=rngs)
        self.conv_in = nnx.Conv(C, c1, (3, 3), rngs=rngs)
        self.down1 = ResBlock(c1, c1, t_dim, groups, rngs=rngs)
        self.downsample = nnx.Conv(c1, c1, (3, 3), strides=(2, 2), rngs=rngs)
        self.down2 = ResBlock(c1, c2, t_dim, groups, rngs=rngs)
        self.mid = ResBlock(c2, c2, t_dim, groups, rngs=rngs)
        self.up2 = ResBlock(2 * c2, c2, t_dim, groups, rngs=rngs)
        self.upconv = nnx.Conv(c2, c1, (3, 3), rngs=rngs)
        self.up1 = ResBlock(2 * c1, c1, t_dim, groups, rngs=rngs)
        self.norm_out = nnx.GroupNorm(c1, num_groups=_groups(c1, groups), rngs=rngs)
        self.conv_out = nnx.Conv(c1, C, (3, 3), kernel_init=nnx.initializers.zeros, rngs=rngs)
        self.channels = c1

    def __call__(self, x: Float[Array, "*b H W C"], t) -> Float[Array, "*b H W C"]:
        ev = self.event_shape
        batch = x.shape[: x.ndim - 3]
        xb = jnp.reshape(x, (-1,) + ev)
        tb = jnp.reshape(jnp.broadcast_to(jnp.asarray(t, x.dtype), batch), (-1,))
        temb = self.t2(jax.nn.silu(self.t1(time_embedding(tb, self.channels))))
        h0 = self.down1(self.conv_in(xb), temb)
        h1 = self.down2(self.downsample(h0), temb)
        h = self.mid(h1, temb)
        h = self.up2(jnp.concatenate([h, h1], axis=-1), temb)
        b, hh, ww, c = h.shape
        h = self.upconv(jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest"))
        h = self.up1(jnp.concatenate([h, h0], axis=-1), temb)
        out = self.conv_out(jax.nn.silu(self.norm_out(h)))
        return jnp.reshape(out, batch + ev)


def check_event_shape(event_shape) -> tuple:
    """(H, W, C) of positive integers with H and W even (ValueError naming ``event_shape``)."""
    try:
        ev = tuple(event_shape)
    except TypeError:
        raise ValueError(f"event_shape must be (H, W, C), got {event_shape!r}") from None
    if len(ev) != 3:
        raise ValueError(f"event_shape must be (H, W, C) for the U-Net (data of shape (n, H, W, C)), got {ev}")
    ev = tuple(check_positive_int(d, "event_shape") for d in ev)
    if ev[0] % 2 or ev[1] % 2:
        raise ValueError(f"event_shape must have even H and W (the U-Net halves the resolution once), got {ev}")
    return ev


def check_unet_sizes(event_shape, channels, groups) -> dict:
    """The sizes of a :class:`ScoreUNet` as plain values: ``event_shape`` (H, W, C) with H, W even; ``channels`` and
    ``groups`` positive integers. ValueError (TypeError for a non-number) naming the argument."""
    return {"event_shape": check_event_shape(event_shape), "channels": check_positive_int(channels, "channels"),
            "groups": check_positive_int(groups, "groups")}


def init_unet(event_shape, sde: LinearSDE, *, key, parameterization: str = "score", channels: int = 32,
              groups: int = 8) -> ScoreModel:
    """A freshly initialised :class:`diffdens.ScoreModel` on a :class:`ScoreUNet`.

    Arguments:
        event_shape: (H, W, C), the shape of one image (H, W even).
        sde: the forward SDE (:class:`diffdens.LinearSDE`).
        key: PRNG key of the initial parameters.
        parameterization: ``"score"``, ``"entropy"``, ``"eps"``, ``"x0"`` or ``"velocity"``.
        channels: the channels at full resolution.
        groups: the number of group-norm groups (at most).

    Returns:
        :class:`diffdens.ScoreModel` for points of shape ``event_shape``; its config records
        ``architecture="unet"`` and the sizes (stored in checkpoints).
    """
    check_sde(sde)
    check_key(key)
    check_option(parameterization, PARAMETERIZATIONS, "parameterization")
    sizes = check_unet_sizes(event_shape, channels, groups)
    net = ScoreUNet(sizes["event_shape"], channels=sizes["channels"], groups=sizes["groups"],
                    rngs=nnx.Rngs(params=key))
    return ScoreModel(net, sde, parameterization, dict(architecture=ARCHITECTURE, **sizes))
