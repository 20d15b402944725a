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
import os
import sys
from typing import Any

# GNU OpenMP (torch's and numba's thread pools here) lets an idle worker spin for ~300 000 rounds before it sleeps.
# On a machine that other jobs share, those spinning workers steal the cores the others need: a full-grid LUPIN
# nowcast beside one 2-thread job took 24.3 s instead of ~6 s idle; with a spin count of 3 000, 14.7 s, and no
# measurable change idle (benchmarks/RESULTS.md §5 "On a shared machine"). OpenMP reads it when it is loaded, so it
# takes effect only when skydiff is imported before torch (always for the `skydiff` command); a value the user set
# is kept.
if "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", "3000")

from .advection import advect  # noqa: E402  (after the OpenMP setting above)
from .errors import InputError, ReadError, ShapeError, SkydiffError, SkydiffWarning, TimeGapError  # noqa: E402

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
