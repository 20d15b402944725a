"""``skydiff.dycore``: a differentiable 2-D (x-z) compressible non-hydrostatic dynamical core.

Arakawa C-grid in a terrain-following coordinate ``z(x, r)`` given as a differentiable function (BTF, hybrid,
SLEVE, SLEVE2 or the learned NEUVE), metric terms by automatic differentiation, perturbations about a
discretely hydrostatic reference, SSP-RK3, sponge layers, float32/float64, CPU/CUDA.

>>> from skydiff import dycore
>>> ds = dycore.run("schaer", coordinate="sleve", hours=0.1)  # doctest: +SKIP
>>> ds.w.dims                                                  # doctest: +SKIP
('level', 'x')
"""

from __future__ import annotations

from .cases import CASES, build, get_case, schaer_linear_w, w_error
from .coordinates import (
    COORDINATES,
    BasicTerrainFollowing,
    Hybrid,
    Neuve,
    Sleve,
    Sleve2,
    Terrain,
    coordinate_metrics,
    make_coordinate,
    schaer_terrain,
)
from .equations import State, tendencies, total_mass
from .grid import Grid
from .interface import run
from .stepping import StabilityError, check_dt, integrate, integrate_loss, ssprk3_step, stable_dt

__all__ = [
    "run",
    "CASES",
    "COORDINATES",
    "Grid",
    "Terrain",
    "schaer_terrain",
    "BasicTerrainFollowing",
    "Hybrid",
    "Sleve",
    "Sleve2",
    "Neuve",
    "make_coordinate",
    "coordinate_metrics",
    "get_case",
    "build",
    "schaer_linear_w",
    "w_error",
    "State",
    "tendencies",
    "total_mass",
    "ssprk3_step",
    "integrate",
    "integrate_loss",
    "stable_dt",
    "check_dt",
    "StabilityError",
]
