"""Nowcasting: :func:`forecast` is the entry point every model plugs into (see :func:`register_model`).

Sub-modules: :mod:`~skydiff.nowcast.models` (LUPIN, RainNet, SmaAt-UNet, L-CNN; ``create_model``),
:mod:`~skydiff.nowcast.data` (datasets, NL-50 builder), :mod:`~skydiff.nowcast.training` (Lightning),
:mod:`~skydiff.nowcast.evaluation` (:func:`evaluate`: models side by side on the same cases and pixels).
"""

from .evaluation import evaluate
from .interface import available_models, check_frames, forecast, get_model, register_model

__all__ = ["forecast", "evaluate", "register_model", "get_model", "available_models", "check_frames"]
