"""Every sampler by name: one file per sampler, each a host plan builder (its loop lives in ``backends``).

:data:`METHODS` is the one registry, a literal: adding a sampler is one import and one entry
(``"name": module.METHOD``, a :class:`~gddim_numerics.samplers.method.Method`).
"""

from . import ancestral, auto, em, gddim, heun, ivp, sscs
from .method import GRID_OPTIONS, Method

METHODS: dict[str, Method] = {
    "gddim": gddim.METHOD,
    "gddim_L": gddim.METHOD_L,
    "gddim_auto": auto.METHOD,
    "em": em.METHOD,
    "euler": em.EULER,
    "heun": heun.METHOD,
    "sscs": sscs.METHOD,
    "ancestral": ancestral.METHOD,
    "rk45": ivp.RK45,
    "dop853": ivp.DOP853,
}

__all__ = ["GRID_OPTIONS", "METHODS", "Method"]
