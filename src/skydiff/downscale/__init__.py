"""Downscaling of precipitation: pseudo-precipitation (PP) + EDM diffusion, baselines and the ``downscale`` product.

- :func:`downscale` — low-resolution rain (mm/h) → an ensemble of ``factor``-times finer fields (mm/h)
- :mod:`.data`       — :func:`block_mean`, radar and ERA5 high-/low-resolution pairs
- :mod:`.baselines`  — bicubic interpolation, spectral zero-padding and truncation, block-mean corrections
- :mod:`.diffusion`  — EDM-preconditioned conditional U-Net denoiser and Heun sampler (``"radar"``, ``"era5"``,
  ``"radar-tp"`` models)
- :mod:`.training`   — Lightning training of the diffusion models
- :mod:`.pseudo`, :mod:`.moisture`, :mod:`.era5` — pseudo-precipitation encoder/decoder, VIMD, ERA5 readers

Submodules are imported lazily, so ``import skydiff.downscale`` stays light.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
"""Folder of the shipped downscaling weights (``<name>.safetensors`` + ``<name>.json``)."""

_LAZY = {
    "downscale": ("interface", "downscale"),
    "block_mean": ("data", "block_mean"),
    "radar_pairs": ("data", "radar_pairs"),
    "era5_pairs": ("data", "era5_pairs"),
    "bicubic": ("baselines", "bicubic"),
    "spectral_zeropad": ("baselines", "spectral_zeropad"),
    "spectral_truncate": ("baselines", "spectral_truncate"),
    "match_block_means": ("baselines", "match_block_means"),
    "smooth_block_means": ("baselines", "smooth_block_means"),
    "get_downscaler": ("interface", "get_downscaler"),
    "read_lowres": ("interface", "read_lowres"),
    "coarsen_lowres": ("interface", "coarsen_lowres"),
    "EDMDownscaler": ("diffusion", "EDMDownscaler"),
    "vimd": ("moisture", "vimd"),
    "read_era5": ("era5", "read_era5"),
    "PseudoPrecip": ("pseudo", "PseudoPrecip"),
    "train_pseudo": ("pseudo", "train_pseudo"),
}
_SUBMODULES = {"data", "baselines", "diffusion", "training", "interface", "pseudo", "moisture", "era5"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{mod}", __name__), attr)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'skydiff.downscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)


__all__ = [*_LAZY, "WEIGHTS_DIR"]
