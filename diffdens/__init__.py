"""diffdens: log-densities of data under diffusion models, with error bars, in JAX.

A *score* is any callable ``score(x, t)`` taking one point x of the event shape (e.g. (D,) or (H, W, C)) and a scalar
t. Every estimator and sampler works eagerly and under ``jax.jit``, ``jax.vmap`` and ``jax.grad``.
"""

from ._engine import PriorMismatchWarning, SingleSampleWarning
from .adapters import from_discrete_timesteps, score_from_denoiser, score_from_eps, score_from_velocity
from .augmented import BiasDiagnostics, ForwardAugmented, augmented_forward, sample_with_log_prob, sde_bias_diagnostics
from .checkpoint import load_model, save_model
from .data import bits_per_dim, uniform_dequantize
from .dequantization import (Dequantizer, ErrorBudget, discrete_log_prob, error_budget, fit_dequantizer,
                             init_dequantizer)
from .elbo import elbo, hvae_elbo, variational_gap
from .evaluate import Evaluation, evaluate
from .identities import entropy, kl_divergence, weighted_score_error
from .finetune import fit_ode_likelihood
from .estimate import Estimate, SamplePath, Samples, make_probes, sample_times, value_and_divergence
from .mixtures import DiffusedMixture, GaussianMixture, random_mixture, standard_mixture
from .modes import denoising_log_prob, hd_ode, hd_sample, mode_tracking_ode
from .nets import ScoreMLP, ScoreModel, init_model
from .ode import Encoding, ode_encode, ode_log_prob, ode_sample
from .options import Hutchinson, SolveOptions
from .parallel import shard_points
from .path_integral import entropy_from_score, path_integral_log_prob
from .reverse import reverse_sde_sample
from .sde import (CosineVPSDE, CustomSDE, EDMSDE, LinearSDE, RectifiedFlowSDE, ScheduleSDE, SubVPSDE, VESDE, VPSDE,
                  check_sde, forward_sample)
from .train import fit_score
from .unet import ScoreUNet, init_unet
from . import adapters, book, datasets, testing

__version__ = "0.1.0"

__all__ = [
    "PriorMismatchWarning",
    "SingleSampleWarning",
    "from_discrete_timesteps",
    "score_from_denoiser",
    "score_from_eps",
    "score_from_velocity",
    "CosineVPSDE",
    "CustomSDE",
    "EDMSDE",
    "RectifiedFlowSDE",
    "ScheduleSDE",
    "Encoding",
    "denoising_log_prob",
    "hd_ode",
    "hd_sample",
    "mode_tracking_ode",
    "shard_points",
    "BiasDiagnostics",
    "ForwardAugmented",
    "augmented_forward",
    "sde_bias_diagnostics",
    "elbo",
    "Evaluation",
    "evaluate",
    "hvae_elbo",
    "variational_gap",
    "entropy",
    "kl_divergence",
    "sample_with_log_prob",
    "entropy_from_score",
    "path_integral_log_prob",
    "reverse_sde_sample",
    "load_model",
    "save_model",
    "ScoreMLP",
    "ScoreModel",
    "init_model",
    "fit_score",
    "fit_ode_likelihood",
    "weighted_score_error",
    "bits_per_dim",
    "uniform_dequantize",
    "Dequantizer",
    "ErrorBudget",
    "discrete_log_prob",
    "error_budget",
    "fit_dequantizer",
    "init_dequantizer",
    "ScoreUNet",
    "init_unet",
    "ode_encode",
    "ode_log_prob",
    "ode_sample",
    "Hutchinson",
    "SolveOptions",
    "Estimate",
    "SamplePath",
    "Samples",
    "make_probes",
    "sample_times",
    "value_and_divergence",
    "DiffusedMixture",
    "GaussianMixture",
    "random_mixture",
    "standard_mixture",
    "LinearSDE",
    "SubVPSDE",
    "VESDE",
    "VPSDE",
    "forward_sample",
    "check_sde",
]
