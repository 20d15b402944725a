"""Nowcasting networks (issues #4, #5): RainNet, SmaAt-UNet, LUPIN, L-CNN and SpaT-SparK, behind a timm-like registry.

>>> from skydiff.nowcast.models import create_model
>>> net = create_model("lupin", base_channels=8)           # random weights
>>> # nowcast = net.predict(frames_mm_h, 6)                # (T, H, W) mm/h -> (6, H, W) mm/h

Every model is an ``nn.Module`` (a :class:`~skydiff.nowcast.models.blocks.NowcastModel`) with

- ``forward(x)``: the training path on transformed tensors (see each class for shapes);
- ``transform(rain_mm_h)`` / ``inverse_transform(y)``: the model's data space (``model.scaler``);
- ``predict(frames, leadtimes)``: mm/h in and out, NaN-aware, no gradients, eval mode; autoregressive for the
  single-step models (RainNet, LUPIN, L-CNN), direct for SmaAt-UNet and SpaT-SparK;
- ``config``: the constructor keywords, saved with the weights by :func:`save_model`.

Any grid size works: the U-Nets pad to a multiple of ``2**depth`` (reflection) and crop back.

| name | class | default input | data space (``scaler``) | paper |
|---|---|---|---|---|
| ``rainnet`` | :class:`RainNet` | 4 frames -> +5 min | ``ln(R/12 + 0.01)`` | Ayzel et al. 2020 |
| ``smaat`` | :class:`SmaAtUNet` | 12 frames -> +30 min | ``R / 12 / 47.83`` | Trebing et al. 2021 |
| ``lupin`` | :class:`LUPIN` | 6 frames -> +5 min | mm/h (MF-U-Net: ``ln(R + 0.01)``) | Pavlík et al. 2024 |
| ``lcnn`` | :class:`LCNN` | 5 frames (4 Lagrangian differences) -> +5 min | mm/h | Ritvanen et al. 2023 |
| ``spatspark`` | :class:`SpaTSparK` | 12 frames -> 12 frames (+5 ... +60 min) | ``R / 12 / 47.83`` | Li et al. 2024 |
| ``spatspark-pretrain`` | :class:`SparKPretrain` | 12 masked frames -> the 12 | ``R / 12 / 47.83`` | Li et al. 2024 |

``spatspark-pretrain`` is not a nowcasting model (no ``predict``): it is the SparK pretraining stage whose encoder
and decoder initialise ``spatspark`` (:func:`init_from_pretrain`).
"""

from __future__ import annotations

from .registry import WEIGHTS_DIR, create_model, list_models, load_model, load_weights, register_model, save_model
from .blocks import SCALERS, NowcastModel, get_scaler
from .rainnet import RainNet, RainNetUNet
from .smaat import SmaAtUNet
from .lupin import LUPIN
from .lcnn import LCNN
from .spatspark import SparKPretrain, SpaTSparK, finetune_config_from_pretrain, init_from_pretrain

__all__ = [
    "create_model",
    "list_models",
    "register_model",
    "save_model",
    "load_model",
    "load_weights",
    "WEIGHTS_DIR",
    "NowcastModel",
    "SCALERS",
    "get_scaler",
    "RainNet",
    "RainNetUNet",
    "SmaAtUNet",
    "LUPIN",
    "LCNN",
    "SpaTSparK",
    "SparKPretrain",
    "init_from_pretrain",
    "finetune_config_from_pretrain",
]
