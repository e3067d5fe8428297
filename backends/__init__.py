"""Array execution of sampler plans on NumPy, CuPy, PyTorch and any array-API namespace."""

from .loop import run_tables
from .namespace import namespace_of
from .operators import BlockModes, DCTModes, ScalarModes, operator_for

__all__ = ["BlockModes", "DCTModes", "ScalarModes", "namespace_of", "operator_for", "run_tables"]
