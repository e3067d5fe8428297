"""gddim-numerics: generalized DDIM exponential integrators for any linear diffusion.

Host numerics (float64 NumPy/SciPy): diffusions, their exact transition matrices, covariances and
gDDIM factors, time grids, and sampler plans. Array execution lives in
:mod:`gddim_numerics.backends`; studies and the command line in :mod:`gddim_numerics.validation`.
"""

from .bases import DCTBasis, IdentityBasis, OrthogonalBasis
from .bdm import BDM
from .cld import CLD
from .diffusion import LinearDiffusion, ScalarModesDiffusion
from .grids import GRID_KINDS, check_grid, time_grid
from .linear_sde import ConstantCoefficientSDE, LinearSDE
from .model_time import timestep_grid
from .samplers.gddim import GDDIM
from .problems import DiracData, GaussianData, GaussianMixture
from .result import SampleResult, StepInfo
from .samplers import METHODS, Method
from .auto import auto_plan
from .sampling import plan, sample
from .statistics import DataStatistics
from .surrogate import surrogate_error
from .schedules import CosineSchedule, DiscreteSchedule, LinearBetaSchedule, NoiseSchedule, TanLogSNRSchedule
from .ve import VESDE
from .vp import VPSDE

__version__ = "0.1.0"

#: names served on first use from :mod:`gddim_numerics.backends` (``import gddim_numerics`` loads no backend)
_LAZY = {"wrap_model": "adapters", "ModelAdapter": "adapters", "GDDIMScheduler": "scheduler"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"gddim_numerics.backends.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gddim_numerics' has no attribute {name!r}")

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
    "plan",
    "sample",
    "time_grid",
    "timestep_grid",
    "BDM",
    "CLD",
    "ConstantCoefficientSDE",
    "CosineSchedule",
    "DCTBasis",
    "DiscreteSchedule",
    "IdentityBasis",
    "LinearBetaSchedule",
    "LinearDiffusion",
    "ScalarModesDiffusion",
    "LinearSDE",
    "NoiseSchedule",
    "OrthogonalBasis",
    "TanLogSNRSchedule",
    "VESDE",
    "VPSDE",
]
