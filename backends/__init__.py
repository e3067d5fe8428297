"""Array execution of sampler plans on NumPy, CuPy, PyTorch and any array-API namespace.

Every array loop lives here; the host package (:mod:`gddim_numerics`) only builds float64 plans.
:func:`run_tables` runs every table plan (gDDIM, EM, Euler, ancestral); :mod:`.multistage` holds the
Heun and SSCS loops and :mod:`.ivp` the ``solve_ivp`` wrapper, all on one run context
(:class:`~.run.ArrayRun`). :mod:`.operators` applies per-mode coefficients in each basis's layout,
:mod:`.kernels` writes them per array library, :mod:`.noise` draws per-backend random numbers,
:mod:`.namespace` holds the input checks and :mod:`.exact` the exact-score networks of the problems.
"""

from .kernels import kernels_for
from .loop import run_tables
from .namespace import device_of, namespace_of, working_dtype
from .noise import noise_source
from .operators import BlockModes, DCTModes, ModeBlocks, ScalarModes, operator_for
from .run import ArrayRun

__all__ = [
    "ArrayRun",
    "BlockModes",
    "DCTModes",
    "ModeBlocks",
    "ScalarModes",
    "device_of",
    "kernels_for",
    "namespace_of",
    "noise_source",
    "operator_for",
    "run_tables",
    "working_dtype",
]
