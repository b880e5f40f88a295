"""Fitting a score model by denoising score matching, with the weightings and time sampling of the papers.

Song et al. 2021b, Table 1 and eq. 12; Huang et al. 2021, Sec. 6.2; Premkumar 2024,
Sec. 4 (each of the N samples "thrown" to n_t fresh random times per epoch). The per-example loss is
lambda(t)/2 |s(x_t, t) + eps / sigma_t|^2, x_t = alpha_t x_0 + sigma_t eps, with weightings

* ``"song"``: lambda = sigma_t^2, t uniform (the original weighting of Song et al. 2021a);
* ``"likelihood"``: lambda = g(t)^2, t uniform (its time integral bounds -log p, Song et al. 2021b, Thm. 1);
* ``"likelihood_is"``: lambda = g(t)^2 with t drawn from p(t) proportional to g^2 / sigma_t^2 (Song et al. 2021b, eq. 12).

The loss is always computed on the score the model implies, so for every parameterization (``nets``) and every SDE
(any schedule of :mod:`diffdens.sde`) the likelihood weightings train on the bound of Song et al. 2021b, Thm. 1, itself. Written
in each parameterization's own error, g^2/2 |s_hat - s|^2 is

* ``"score"``: g^2 / 2 |s_hat - s|^2;   ``"eps"``: g^2 / (2 sigma^2) |eps_hat - eps|^2 (DDPM's MSE times
  -d lambda/dt / 2, Kingma et al. 2021's continuous VDM loss);
* ``"x0"``: g^2 alpha^2 / (2 sigma^4) |x0_hat - x0|^2;   ``"velocity"``: 2 / g^2 |v_hat - v|^2 for the flow-matching
  velocity v = dx_t/dt (the PF-ODE drift is f x - g^2 s / 2);
* ``"entropy"``: g^2 / 2 |e_hat - e|^2.

so "likelihood" is the weighting that makes each objective the likelihood bound; "song" (sigma^2 |s_hat - s|^2, i.e.
the plain eps MSE) is not a bound.
"""

from __future__ import annotations

import json
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ._checks import check_bool, check_key, check_option, check_points, check_positive, check_positive_int, check_t0
from .checkpoint import atomic_write, cache_dir, cache_key, load_model, save_model
from .estimate import sample_times
from .progress import progress_bar
from .nets import PARAMETERIZATIONS, ScoreModel, check_net_sizes, init_model
from .sde import LinearSDE, check_sde, sde_config
from .unet import check_event_shape, check_unet_sizes, init_unet

WEIGHTINGS = ("song", "likelihood", "likelihood_is")
ARCHITECTURES = ("mlp", "unet")


def dsm_terms(model: ScoreModel, x0, key, *, weighting: str, t0: float):
    """Per-example weighted DSM losses for a batch x0 (B, *event_shape) (one time and one noise per example)."""
    sde = model.sde
    kt, ke = jax.random.split(key)
    t, w = sample_times(sde, kt, (x0.shape[0],), t0=t0, importance_sampling=weighting == "likelihood_is",
                        dtype=x0.dtype)
    alpha, sigma = sde.marginal(t)
    eps = jax.random.normal(ke, x0.shape, x0.dtype)
    ev = (slice(None),) + (None,) * (x0.ndim - 1)  # t (B,) against points (B, *event_shape)
    xt = alpha[ev] * x0 + sigma[ev] * eps
    resid = sigma[ev] * model.score(xt, t) + eps
    resid2 = jnp.sum(resid.reshape(x0.shape[0], -1) ** 2, axis=-1)  # sigma^2 |s + eps/sigma|^2
    if weighting == "song":
        lam_over_sigma2 = jnp.ones_like(t) * (sde.T - t0)
    else:  # g^2 / sigma^2 times the 1/p(t) weight: uniform w = T - t0; IS w = Z sigma^2 / g^2
        lam_over_sigma2 = w * sde.g2(t) / sigma**2
    return 0.5 * lam_over_sigma2 * resid2


def fit_score(
    data,
    sde: LinearSDE,
    *,
    key,
    parameterization: str = "score",
    weighting: str = "likelihood_is",
    n_throws: int = 10,
    epochs: int = 100,
    batch_size: int = 512,
    lr: float = 2e-3,
    hidden: int = 128,
    depth: int = 3,
    n_features: int = 32,
    t0: float = 1e-5,
    cache: bool = True,
    progress: bool = True,
    architecture: str = "mlp",
    channels: int = 32,
    groups: int = 8,
):
    """Train a :class:`~diffdens.ScoreModel` by denoising score matching (module docstring for the weightings).

    Each epoch throws every sample to ``n_throws`` fresh (t, eps) pairs, shuffles, and takes Adam steps (cosine
    decay) on batches of ``batch_size``. Deterministic given ``key``. With ``cache=True`` the model is stored under
    :func:`~diffdens.checkpoint.cache_dir`, keyed by the full config, the data, the whole package source and the
    library versions (:func:`~diffdens.checkpoint.cache_key`), and reused on the next identical call. Within a process,
    trainings that differ only in the data (of the same shape) and the key reuse one compiled epoch, so a sweep over
    seeds compiles once per configuration.

    Arguments:
        data: (N, D) the training points for ``architecture="mlp"``; (N, H, W, C) images (H, W even) for
            ``architecture="unet"`` (e.g. :func:`diffdens.datasets.photo_patches` scaled to floats).
        sde: any linear SDE (VP, sub-VP, VE, a preset schedule or ``LinearSDE.from_schedule``).
        key: PRNG key (initialisation, times, noise, shuffling).
        parameterization: ``"score"``, ``"eps"``, ``"x0"``, ``"velocity"`` or ``"entropy"`` (see
            :mod:`diffdens.nets`); whichever it is, ``model.score`` is the implied score.
        weighting: ``"song"``, ``"likelihood"`` or ``"likelihood_is"`` (the likelihood weightings minimise the bound
            of Song et al. 2021b, Thm. 1).
        n_throws: fresh (t, eps) pairs per sample per epoch (Premkumar 2024, Sec. 4).
        epochs: passes over the thrown data.
        batch_size: examples per Adam step.
        lr: the peak learning rate of the cosine decay.
        hidden, depth, n_features: the :class:`~diffdens.ScoreMLP` sizes (as :func:`~diffdens.init_model`).
        t0: the lower end of the training times, in (0, T).
        cache: reuse (and store) the model trained by an identical call.
        progress: show a progress bar (tqdm, when installed).
        architecture: ``"mlp"`` (:class:`~diffdens.ScoreMLP`, data (N, D)) or ``"unet"``
            (:class:`~diffdens.unet.ScoreUNet`, data (N, H, W, C)).
        channels, groups: the :class:`~diffdens.unet.ScoreUNet` sizes (as :func:`~diffdens.unet.init_unet`; used
            only for ``architecture="unet"``).

    Returns:
        ``(model, history)``: the trained :class:`~diffdens.ScoreModel`, and a dict with ``history["loss"]``
        (epochs,) the mean loss per epoch (an estimate of the weighted DSM objective; for the likelihood weightings
        the bound of Song et al. 2021b, Thm. 1, up to a data constant) and ``history["steps"]`` the number of Adam
        steps taken (``epochs`` times the batches per epoch).
    """
    check_sde(sde)
    check_key(key)
    check_option(parameterization, PARAMETERIZATIONS, "parameterization")
    check_option(weighting, WEIGHTINGS, "weighting")
    n_throws = check_positive_int(n_throws, "n_throws")
    epochs = check_positive_int(epochs, "epochs")
    batch_size = check_positive_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    t0 = check_t0(t0, sde.T)  # strictly inside (0, T): log-SNR(0) is infinite, and t0 = T leaves nothing to train
    check_bool(cache, "cache")
    check_bool(progress, "progress")
    check_option(architecture, ARCHITECTURES, "architecture")
    data = check_points(data, "data")  # N >= 1 points, finite
    N = data.shape[0]
    if architecture == "mlp":
        if data.ndim != 2:
            raise ValueError(f"data must have shape (N, D) for the MLP score network, got shape {data.shape} "
                             "(images (N, H, W, C): architecture='unet')")
        sizes = check_net_sizes(data.shape[1], hidden, depth, n_features)
        net_desc = dict(hidden=sizes["hidden"], depth=sizes["depth"], n_features=sizes["n_features"])
    else:
        if data.ndim != 4:
            raise ValueError(f"data must have shape (N, H, W, C) for architecture='unet', got shape {data.shape}")
        try:
            check_event_shape(data.shape[1:])
        except ValueError as e:
            raise ValueError(f"data has shape {data.shape}: its {e}") from None
        sizes = check_unet_sizes(data.shape[1:], channels, groups)
        net_desc = dict(architecture="unet", channels=sizes["channels"], groups=sizes["groups"])
    steps = epochs * _batches_per_epoch(N, n_throws, batch_size)
    try:
        sde_desc = sde_config(sde)
    except ValueError:  # a schedule of lambdas: trained fine, but it cannot be stored or looked up in the cache
        sde_desc, cache = repr(sde), False
    config = dict(sde=sde_desc, parameterization=parameterization, weighting=weighting, n_throws=n_throws,
                  epochs=epochs, batch_size=batch_size, lr=lr, **net_desc,
                  t0=t0, key=np.asarray(jax.random.key_data(key)).tolist())
    path = cache_dir() / f"model-{cache_key(config, data)}.ckpt"  # config, data, all package code, library versions
    if cache and path.exists():
        try:
            model = load_model(path, sde=sde)  # the caller's SDE: nothing named in the file is imported
            hist = json.loads(path.with_suffix(".json").read_text())
            return model, {**{k: np.asarray(v) for k, v in hist.items()}, "steps": steps}
        except (ValueError, OSError, KeyError):
            pass  # a damaged cache entry is retrained and overwritten

    k_init, k_train = jax.random.split(key)
    if architecture == "mlp":
        model = init_model(data.shape[1], sde, key=k_init, parameterization=parameterization, **net_desc)
    else:
        model = init_unet(data.shape[1:], sde, key=k_init, parameterization=parameterization,
                          channels=sizes["channels"], groups=sizes["groups"])
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05))
    graphdef, params, rest = nnx.split(model.net, nnx.Param, ...)
    opt_state = opt.init(params)

    share = None if isinstance(sde_desc, str) else (  # the compiled epoch is shared by identical configs
        graphdef, json.dumps(sde_desc, sort_keys=True), parameterization, weighting, t0, lr, steps, data.shape,
        str(data.dtype), n_throws, batch_size)
    epoch = make_epoch(graphdef, rest, sde, parameterization, weighting, t0, opt, data, n_throws, batch_size,
                       share=share)

    losses = []
    bar = progress_bar(enabled=progress, total=epochs, desc=f"fit_score[{parameterization}, {weighting}]", leave=False)
    for k in jax.random.split(k_train, epochs) if epochs > 0 else []:
        params, opt_state, loss = epoch(params, opt_state, k)
        losses.append(float(loss))
        bar.update(1)
        if math.isfinite(losses[-1]):
            bar.set_postfix(loss=f"{losses[-1]:.4g}")
        else:
            raise FloatingPointError(f"training diverged at epoch {len(losses)} (loss {losses[-1]}); lower lr")
    bar.close()
    nnx.update(model.net, params)
    history = {"loss": np.asarray(losses)}
    if cache:  # the history first: a checkpoint under the final name always has its history beside it
        try:
            atomic_write(path.with_suffix(".json"), json.dumps({k: v.tolist() for k, v in history.items()}).encode())
            save_model(model, path)
        except OSError as e:  # an unwritable cache loses the cache entry, not the trained model
            warnings.warn(f"fit_score: could not store the model in the cache {path.parent} ({e})", stacklevel=2)
    return model, {**history, "steps": steps}


def _batches_per_epoch(N, n_throws, batch_size):
    """Adam steps per epoch of :func:`fit_score`: N samples thrown n_throws times each, in batches of batch_size."""
    return max(1, (N * n_throws) // batch_size)


_EPOCHS: dict = {}  # compiled epochs by config (make_epoch's ``share``), oldest first
_EPOCHS_MAX = 64


def make_epoch(graphdef, rest, sde, parameterization, weighting, t0, opt, data, n_throws, batch_size, *, share=None):
    """The jit-compiled epoch of :func:`fit_score`: (params, opt_state, key) -> (params, opt_state, mean loss).

    The data and the non-trained state (``rest``, e.g. the random Fourier features) enter the compiled function as
    arguments, not as constants, so trainings that differ only in them (other seeds, other samples of the same size)
    reuse one compilation when they pass the same ``share``: a hashable description of everything else (network
    structure, SDE, loss, optimizer and its schedule, data shape, throws, batch size). ``share=None`` compiles anew.
    """
    fn = _EPOCHS.get(share) if share is not None else None
    if fn is None:
        fn = _jit_epoch(graphdef, sde, parameterization, weighting, t0, opt, data.shape, n_throws, batch_size)
        if share is not None:
            _EPOCHS[share] = fn
            while len(_EPOCHS) > _EPOCHS_MAX:
                _EPOCHS.pop(next(iter(_EPOCHS)))
    return lambda params, opt_state, k: fn(params, opt_state, k, data, rest)


def _jit_epoch(graphdef, sde, parameterization, weighting, t0, opt, shape, n_throws, batch_size):
    """The jitted epoch (params, opt_state, key, data, rest) -> (params, opt_state, mean loss) for data of ``shape``."""
    N, event = shape[0], tuple(shape[1:])
    n_batches = _batches_per_epoch(N, n_throws, batch_size)

    def loss_fn(params, rest, x0, k):
        m = ScoreModel(nnx.merge(graphdef, params, rest), sde, parameterization)
        return jnp.mean(dsm_terms(m, x0, k, weighting=weighting, t0=t0))

    @jax.jit
    def epoch(params, opt_state, k, data, rest):
        kp, kb = jax.random.split(k)
        idx = jax.random.permutation(kp, jnp.tile(jnp.arange(N), n_throws))[: n_batches * batch_size]
        batches = data[idx].reshape((n_batches, -1) + event)

        def step(carry, inp):
            params, opt_state = carry
            x0, kk = inp
            loss, grads = jax.value_and_grad(loss_fn)(params, rest, x0, kk)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state),
                                                   (batches, jax.random.split(kb, n_batches)))
        return params, opt_state, jnp.mean(losses)

    return epoch
