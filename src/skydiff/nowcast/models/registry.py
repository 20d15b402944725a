"""The nowcasting models' view of :mod:`skydiff.registry` (the one registry of every trainable skydiff model)."""

from __future__ import annotations

from functools import partial
from typing import Any

from ...registry import WEIGHTS_DIR, create_model, load_model, load_weights, save_model, weights_dir
from ...registry import list_models as _list_all
from ...registry import register_model as _register

__all__ = ["register_model", "create_model", "list_models", "save_model", "load_model", "load_weights", "WEIGHTS_DIR",
           "weights_dir"]

register_model = partial(_register, kind="nowcast")


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered nowcasting models (optionally those containing ``pattern``)."""
    return _list_all(pattern, kind="nowcast")


def __getattr__(name: str) -> Any:  # pragma: no cover - private helpers used by older tests
    from ... import registry

    return getattr(registry, name)
