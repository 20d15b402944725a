"""skydiff: differentiable precipitation and atmosphere modelling in PyTorch.

The core is :func:`skydiff.advect`, a differentiable backward semi-Lagrangian extrapolation with pysteps'
semantics. Sub-packages (imported lazily so that ``import skydiff`` stays light):

- :mod:`skydiff.operators` grad/div/curl/Laplacian and smoothness norms on pixel grids
- :mod:`skydiff.io`        radar readers (pysteps importers), CF netCDF writers
- :mod:`skydiff.verify`    categorical, continuous, FSS, RAPSD scores (torch, NaN-aware)
- :mod:`skydiff.motion`    motion estimation registry (pysteps optical flow, 4D-Var)
- :mod:`skydiff.nowcast`   the ``forecast`` entry point every nowcasting model plugs into
- :mod:`skydiff.downscale` pseudo-precipitation + diffusion downscaling (``downscale``), VIMD, baselines
- :mod:`skydiff.dycore`    a differentiable 2-D non-hydrostatic dynamical core with learned (NEUVE) coordinates
- :mod:`skydiff.registry`  one model registry: ``create_model(name, pretrained=True)``, ``list_models()``
- :mod:`skydiff.synthetic` realistic synthetic rain sequences (the embedded demo case)
"""

from __future__ import annotations

import importlib
from typing import Any

from .advection import advect
from .errors import InputError, ReadError, ShapeError, SkydiffError, SkydiffWarning, TimeGapError

__version__ = "0.1.0"

_SUBMODULES = {"operators", "io", "verify", "motion", "nowcast", "downscale", "dycore", "registry", "synthetic",
               "plot", "cli"}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'skydiff' has no attribute {name!r}")


__all__ = [
    "advect",
    "SkydiffError",
    "InputError",
    "ShapeError",
    "ReadError",
    "TimeGapError",
    "SkydiffWarning",
    "__version__",
]
