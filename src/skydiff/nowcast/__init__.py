"""Nowcasting: :func:`forecast` is the entry point every model plugs into (see :func:`register_model`)."""

from .interface import check_frames, forecast, get_model, models, register_model

__all__ = ["forecast", "register_model", "get_model", "models", "check_frames"]
