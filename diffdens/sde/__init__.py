"""Linear SDEs dx = f(t) x dt + g(t) dW and their Gaussian transition kernels p(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I).

Song et al. 2021a, *Score-Based Generative Modeling through SDEs* (eqs. 10-11, 29), as restated in
Song et al. 2021b, Table 1, and Karczewski et al. 2025, Sec. 2. One concept per module:

* :mod:`.base`: the interface, the abstract :class:`LinearSDE` (with :meth:`LinearSDE.from_schedule`), :func:`check_sde`;
* :mod:`.closed_form`: VP and sub-VP (one linear-beta base) and VE in closed form;
* :mod:`.schedules`: any Gaussian path x_t = alpha(t) x_0 + sigma(t) eps (:class:`ScheduleSDE`, :class:`CustomSDE`)
  and the presets :class:`CosineVPSDE`, :class:`EDMSDE`, :class:`RectifiedFlowSDE`;
* :mod:`.serialization`: :func:`sde_config` / :func:`sde_from_config` and the class registry ``_SDE_CLASSES``;
* :mod:`.simulate`: :func:`forward_sample` (Euler-Maruyama).
"""


from .base import LinearSDE, Scalar, check_sde
from .closed_form import SubVPSDE, VESDE, VPSDE, _LinearBetaSDE, _vp_beta_integral, _vp_time_from_integral
from .schedules import CosineVPSDE, CustomSDE, EDMSDE, RectifiedFlowSDE, ScheduleSDE, _elementwise
from .serialization import _SDE_CLASSES, _fn_from_path, _fn_path, sde_config, sde_from_config
from .simulate import _forward_kernel, forward_sample

# the source files of this package (sorted), e.g. for a cache key that must change when any SDE's code does

__all__ = [
    "LinearSDE",
    "Scalar",
    "check_sde",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "ScheduleSDE",
    "CustomSDE",
    "CosineVPSDE",
    "EDMSDE",
    "RectifiedFlowSDE",
    "sde_config",
    "sde_from_config",
    "forward_sample",
]
