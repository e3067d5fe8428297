"""Array execution of sampler plans on NumPy, CuPy, PyTorch and any array-API namespace.

:func:`run_tables` is the one sampler loop; :mod:`.operators` applies per-mode coefficients in the
three layouts (scalar, ``k x k`` blocks, DCT basis), :mod:`.kernels` writes them per array library,
:mod:`.noise` draws per-backend random numbers and :mod:`.namespace` holds the input checks.
"""

from .kernels import kernels_for
from .loop import run_tables
from .namespace import device_of, namespace_of, working_dtype
from .noise import noise_source
from .operators import BlockModes, DCTModes, ScalarModes, operator_for

__all__ = [
    "BlockModes",
    "DCTModes",
    "ScalarModes",
    "device_of",
    "kernels_for",
    "namespace_of",
    "noise_source",
    "operator_for",
    "run_tables",
    "working_dtype",
]
