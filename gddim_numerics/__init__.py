"""gddim-numerics: generalized DDIM exponential integrators for any linear diffusion.

Host numerics (float64 NumPy/SciPy): diffusions, their exact transition matrices, covariances and
gDDIM factors, time grids, and sampler plans. Array execution lives in
:mod:`gddim_numerics.backends`; studies and the command line in :mod:`gddim_numerics.validation`.
"""

from .auto import auto_plan
from .bases import DCTBasis, IdentityBasis
from .bdm import BDM
from .cld import CLD
from .diffusion import LinearDiffusion
from .grids import GRID_KINDS, check_grid, time_grid
from .linear_sde import ConstantCoefficientSDE, LinearSDE
from .plans import GDDIM
from .problems import DiracData, GaussianData, GaussianMixture
from .result import SampleResult, StepInfo
from .sampling import METHODS, Method, register_method, sample
from . import baselines  # noqa: E402,F401  (registers the baseline samplers)
from .statistics import DataStatistics
from .surrogate import surrogate_error
from .schedules import CosineSchedule, DiscreteSchedule, LinearBetaSchedule, NoiseSchedule, TanLogSNRSchedule
from .ve import VESDE
from .vp import VPSDE

__version__ = "0.1.0"

__all__ = [
    "DataStatistics",
    "auto_plan",
    "surrogate_error",
    "DiracData",
    "GDDIM",
    "GaussianData",
    "GaussianMixture",
    "GRID_KINDS",
    "METHODS",
    "Method",
    "SampleResult",
    "StepInfo",
    "check_grid",
    "register_method",
    "sample",
    "time_grid",
    "BDM",
    "CLD",
    "ConstantCoefficientSDE",
    "CosineSchedule",
    "DCTBasis",
    "DiscreteSchedule",
    "IdentityBasis",
    "LinearBetaSchedule",
    "LinearDiffusion",
    "LinearSDE",
    "NoiseSchedule",
    "TanLogSNRSchedule",
    "VESDE",
    "VPSDE",
]
