"""One timm-like registry for every trainable skydiff model, and weight I/O with safetensors.

>>> from skydiff.registry import create_model, list_models
>>> list_models(kind="nowcast")
['lcnn', 'lupin', 'rainnet', 'smaat', 'spatspark', 'spatspark-pretrain']
>>> net = create_model("rainnet", base_channels=8)

Every model is registered with a ``kind`` (``"nowcast"``, ``"downscale"``, ``"dycore"``) and the folder its
shipped weights live in (default ``skydiff/nowcast/weights``). Weights are stored as a pair of files with a
common stem: ``<stem>.safetensors`` (the state dict) and ``<stem>.json`` (``{"model": name, "config":
{...constructor keywords...}, "card": {...free-form model card...}}``); ``create_model(name, pretrained=True)``
loads ``<weights_dir>/<name>.safetensors``.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from .errors import InputError, ReadError

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "save_model",
    "load_model",
    "load_weights",
    "WEIGHTS_DIR",
    "weights_dir",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "nowcast" / "weights"
FORMAT_VERSION = 1

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_KIND: dict[str, str] = {}
_WEIGHTS: dict[str, Path | None] = {}

F = TypeVar("F", bound=Callable[..., Any])


def register_model(
    name: str | F | None = None, *, kind: str = "nowcast", weights_dir: str | Path | None = None
) -> Any:
    """Register a model class or factory under a (case-insensitive) name.

    Use as ``@register_model`` (the name is the lower-cased ``__name__``) or ``@register_model("name",
    kind="downscale", weights_dir=...)``. The decorated object is returned unchanged; ``create_model(name,
    **config)`` calls it with ``config``; ``pretrained=True`` looks for ``<weights_dir>/<name>.safetensors``
    (default folder: :data:`WEIGHTS_DIR`, the nowcasting weights).
    """

    def deco(fn: F, key: str | None = None) -> F:
        if not callable(fn):
            raise InputError(f"register_model needs a class or function, got {type(fn).__name__}")
        k = (key or fn.__name__).lower()
        _REGISTRY[k] = fn
        _KIND[k] = kind
        _WEIGHTS[k] = Path(weights_dir) if weights_dir is not None else None
        return fn

    if callable(name):
        return deco(name)
    if name is not None and not isinstance(name, str):
        raise InputError(f"register_model name must be a string, got {type(name).__name__}")
    return lambda fn: deco(fn, name)


# the modules that register skydiff's own models
_PACKAGES = ("skydiff.nowcast.models", "skydiff.downscale.pseudo", "skydiff.downscale.diffusion",
             "skydiff.dycore.coordinates")


def _load_builtin_models() -> None:
    """Import the packages that register skydiff's own models (once), so that the registry is complete whichever
    module the caller imported first."""
    import importlib
    import sys

    for pkg in _PACKAGES:
        if pkg not in sys.modules:
            importlib.import_module(pkg)


def list_models(pattern: str | None = None, kind: str | None = None) -> list[str]:
    """Sorted names of the registered models (optionally those of one ``kind`` / containing ``pattern``)."""
    _load_builtin_models()
    if pattern is not None and not isinstance(pattern, str):
        raise InputError(f"pattern must be a string (part of a model name), got {pattern!r}")
    if kind is not None and kind not in set(_KIND.values()):
        raise InputError(f"unknown model kind {kind!r}; kinds: {', '.join(sorted(set(_KIND.values())))}")
    names = sorted(k for k in _REGISTRY if kind is None or _KIND[k] == kind)
    if pattern:
        names = [n for n in names if pattern.lower() in n]
    return names


def _lookup(name: Any) -> Callable[..., nn.Module]:
    if isinstance(name, str) and name.lower() not in _REGISTRY:
        _load_builtin_models()
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        close = difflib.get_close_matches(str(name).lower(), list_models(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InputError(f"unknown model {name!r}{hint}; available: {', '.join(list_models())}")
    return _REGISTRY[name.lower()]


def weights_dir(name: str) -> Path:
    """The folder holding the shipped weights of a registered model."""
    _lookup(name)
    return _WEIGHTS[name.lower()] or WEIGHTS_DIR


def _build(factory: Callable[..., nn.Module], name: str, config: dict[str, Any]) -> nn.Module:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        params = {}
    if params and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(config) - set(params))
        if unknown:
            raise InputError(
                f"model {name!r} has no option(s) {', '.join(unknown)}; options: {', '.join(params)}"
            )
    try:
        return factory(**config)
    except TypeError as exc:  # a factory taking **config passes it on: an unknown option fails one level down
        if "keyword argument" not in str(exc):
            raise
        raise InputError(f"model {name!r}: {exc}") from None


def _saved_model_name(path: Path) -> str | None:
    """The model name ``save_model`` writes into a ``.safetensors`` file's metadata (None without it)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types
        raise ReadError(f"cannot read weights {path}: {exc}") from None
    return meta.get("model")


def _stem(path: str | Path) -> Path:
    """A weights path without its ``.safetensors`` / ``.json`` (a stem may hold dots: ``lupin_v1.2``)."""
    p = Path(path)
    if p.is_dir():  # "weights file <dir>.safetensors not found" named a file the user never gave
        raise InputError(f"{p} is a folder; give the weights' stem inside it (<folder>/<name> for <name>.safetensors "
                         "+ <name>.json)")
    if p.is_file() and p.suffix not in (".safetensors", ".json", ".ckpt"):
        raise InputError(f"{p} is not skydiff weights: give <stem>.safetensors (with <stem>.json beside it) or the "
                         "stem")
    if p.suffix == ".ckpt":
        raise InputError(f"{p} is a Lightning training checkpoint; give the weights a training run exports "
                         "(<stem>.safetensors + <stem>.json, e.g. OUT/<model>), or start training from it with "
                         "training.init_from")
    return p.with_suffix("") if p.suffix in (".safetensors", ".json") else p


def _strict_json(obj: Any) -> Any:
    """``obj`` with its non-finite floats as the strings "inf", "-inf" and "nan": JSON has no such numbers (Python
    wrote ``Infinity``, which other JSON readers refuse; e.g. a terrain with ``lam = inf`` in a NEUVE card)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def weights_paths(path: str | Path) -> tuple[Path, Path]:
    """``(<stem>.safetensors, <stem>.json)`` of a weights path (a stem, its ``.safetensors`` or ``.json``), as
    :func:`save_model` writes them; :class:`InputError` for a training checkpoint."""
    stem = _stem(path)
    return _file(stem, ".safetensors"), _file(stem, ".json")


def weights_version(path: str | Path) -> tuple[str, tuple[Any, ...]]:
    """``(real path of the weights, (mtime, size) of both files)``: a cache key under which weights saved again
    under the same path, or a relative path from another folder, are read anew; ``("missing",)`` as the stamp
    where a file is missing (loading them says so)."""
    files = weights_paths(path)
    try:
        stamp: tuple[Any, ...] = tuple((st.st_mtime_ns, st.st_size) for st in map(os.stat, files))
    except OSError:
        stamp = ("missing",)
    return os.path.realpath(files[0]), stamp


def weights_file(path: str | Path) -> Path:
    """The ``.safetensors`` file of a weights path (a stem, its ``.safetensors`` or ``.json``); :class:`InputError`
    for a training checkpoint or a missing file (for checking a path before long work)."""
    f = weights_paths(path)[0]
    if not f.is_file():
        raise InputError(f"weights file {f} not found")
    return f


def _file(stem: Path, ext: str) -> Path:
    """``stem`` + ``ext`` (not ``with_suffix``, which would replace the part after a dot in the stem)."""
    return stem.parent / (stem.name + ext)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ReadError(f"cannot read model config {path}: {exc}") from None
    if not isinstance(meta, dict):
        raise ReadError(f"model config {path} must hold a JSON object")
    return meta


def create_model(name: str, pretrained: bool | str | Path = False, **config: Any) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name
        A name from :func:`list_models` (case-insensitive).
    pretrained
        ``False`` (or None, 0: random initialisation), ``True`` (or 1: the shipped weights
        ``<weights_dir>/<name>.safetensors`` of the registration, e.g. ``skydiff/nowcast/weights``; their
        ``<name>.json`` config, if present, gives the defaults that ``config`` overrides) or a path to a
        ``.safetensors`` or ``.json`` file / stem of your own (checked against the model name in its ``.json``
        card, or without one in the ``.safetensors`` metadata).
    **config
        Constructor keyword arguments of the model (e.g. ``base_channels``, ``depth``).

    Raises :class:`~skydiff.errors.InputError` for an unknown name, missing shipped weights, or weights that do
    not fit the model (the message lists the missing, unexpected and mis-shaped keys).
    """
    factory = _lookup(name)
    key = name.lower()
    if isinstance(pretrained, (bool, np.bool_)) or (isinstance(pretrained, (int, np.integer)) and pretrained in (0, 1)):
        pretrained = bool(pretrained)  # numpy booleans and 0/1 as True/False (they were taken for paths)
    elif not isinstance(pretrained, (str, os.PathLike)) and pretrained is not None:
        raise InputError(f"pretrained must be True, False or the path of a weights file, got {pretrained!r}")
    if pretrained is False or pretrained is None:
        return _build(factory, key, config)
    if pretrained is True:
        stem = weights_dir(key) / key
        if not _file(stem, ".safetensors").is_file():
            raise InputError(
                f"no shipped weights for {key} yet (looked for {_file(stem, '.safetensors')}); "
                "use pretrained=False or pass the path of your own .safetensors file"
            )
    else:
        stem = _stem(pretrained)
        if not _file(stem, ".safetensors").is_file():
            raise InputError(f"weights file {_file(stem, '.safetensors')} not found")
    meta_path = _file(stem, ".json")
    if meta_path.is_file():
        meta = _read_json(meta_path)
        saved = str(meta.get("model", key)).lower()
        if saved != key:
            raise InputError(f"weights {_file(stem, '.safetensors')} are for model {saved!r}, not {key!r}")
        saved_config = meta.get("config", {})
        if not isinstance(saved_config, Mapping):
            raise ReadError(f"model config {meta_path}: 'config' must be an object of constructor options, got "
                            f"{type(saved_config).__name__}")
        config = {**dict(saved_config), **config}
    else:  # no card: the name in the weights' own metadata (another model of the same shapes loaded silently)
        saved_name = _saved_model_name(_file(stem, ".safetensors"))
        if saved_name is not None and saved_name.lower() != key:
            raise InputError(f"weights {_file(stem, '.safetensors')} are for model {saved_name!r}, not {key!r}")
    model = _build(factory, key, config)
    load_weights(model, _file(stem, ".safetensors"))
    if meta_path.is_file():
        _apply_predict_defaults(model, meta.get("predict") or {}, meta_path)
        model.card = dict(meta.get("card") or {})  # save_model writes it again unless given another
    return model


def _apply_predict_defaults(model: nn.Module, values: Mapping[str, Any], source: Path) -> None:
    """Set the inference defaults a card records under ``"predict"`` (e.g. a nowcasting model's ``min_rain``);
    only the names the model lists in ``predict_defaults`` are accepted."""
    allowed = tuple(getattr(model, "predict_defaults", ()))
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise InputError(f"{source}: unknown 'predict' setting(s) {unknown} for {type(model).__name__} "
                         f"(it has {list(allowed) or 'none'})")
    for k, v in values.items():
        default = getattr(type(model), k, None)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                isinstance(v, bool) or not isinstance(v, (int, float))):
            raise InputError(f"{source}: 'predict' setting {k} must be a number like its default {default!r}, "
                             f"got {v!r}")
        setattr(model, k, v)


def _predict_defaults(model: nn.Module) -> dict[str, Any]:
    """The inference defaults of ``model`` that differ from its class's (written to the card by save_model)."""
    return {k: getattr(model, k) for k in getattr(model, "predict_defaults", ())
            if getattr(model, k) != getattr(type(model), k)}


def _check_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: weights {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(state[k].shape) != tuple(own[k].shape)
    )
    if not (missing or unexpected or shapes):
        return

    def show(items: list[str]) -> str:
        return ", ".join(items[:8]) + (f", ... ({len(items)} in all)" if len(items) > 8 else "")

    parts = []
    if shapes:
        parts.append(f"shape mismatch for {show(shapes)}")
    if missing:
        parts.append(f"missing keys {show(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {show(unexpected)}")
    raise InputError(
        f"weights from {source} do not fit {type(model).__name__}: " + "; ".join(parts)
        + " (was the model created with the same config?)"
    )


def load_weights(model: nn.Module, weights: str | Path | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a state dict (or a ``.safetensors`` file / stem) into ``model`` strictly; returns the model.

    Raises :class:`~skydiff.errors.InputError` naming the missing, unexpected and mis-shaped keys. Weights stored
    in float64 make a float32 model float64 (loaded exactly, not rounded).
    """
    if isinstance(weights, Mapping):
        state, source = dict(weights), "the given state dict"
    else:
        from safetensors.torch import load_file

        path = _file(_stem(weights), ".safetensors")
        if not path.is_file():
            raise InputError(f"weights file {path} not found")
        try:
            state = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ReadError(f"cannot read weights {path}: {exc}") from None
        source = str(path)
    _check_state(model, state, source)
    stored = {t.dtype for t in state.values() if t.is_floating_point()}
    mine = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if stored == {torch.float64} and mine == {torch.float32}:  # weights saved in float64 (NEUVE): kept exact, not
        model.to(torch.float64)  # rounded into a float32 model (its heights moved by up to 3e-5 m)
    model.load_state_dict(state, strict=True)
    return model


def save_model(model: nn.Module, path: str | Path, card: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` (state dict) and ``<stem>.json`` (name, config, model card).

    ``path`` is the stem (a ``.safetensors`` / ``.json`` suffix is stripped). The model must come from the
    registry (have ``model_name`` and ``config``). ``card=None`` keeps the card of weights the model was loaded
    from (description, data licence and attribution), else writes an empty one. Returns the two paths.
    :func:`load_model` reads them back.
    """
    from safetensors.torch import save_file

    name = getattr(model, "model_name", "")
    config = getattr(model, "config", None)
    if not name or config is None:
        raise InputError("save_model needs a registered skydiff model (with model_name and config)")
    wts, js = weights_paths(path)  # (a folder is refused there)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    from . import __version__

    card = dict(card if card is not None else (getattr(model, "card", None) or {}))
    stored = sorted({str(t.dtype).removeprefix("torch.") for t in state.values() if t.is_floating_point()})
    if "weights_dtype" in card and stored:  # a kept card said float16 for a model re-saved in float32
        card["weights_dtype"] = stored[0] if len(stored) == 1 else stored
    meta = {
        "model": name,
        "config": config,
        "format": FORMAT_VERSION,
        "skydiff_version": __version__,
        "card": _strict_json(card),
    }
    predict = _predict_defaults(model)
    if predict:
        meta["predict"] = predict
    from .io.atomic import atomic_path

    # atomic: both files are written under temporary names in the target folder; neither is replaced unless both
    # were written, then the weights are moved into place first (inner block) and the json card second
    try:
        text = json.dumps(meta, indent=2, sort_keys=True, default=_json_number) + "\n"
    except (TypeError, ValueError) as exc:
        raise InputError(f"the model card and config must be JSON-serialisable (numbers, strings, lists, dicts): "
                         f"{exc}") from None
    with atomic_path(js) as tmp_j, atomic_path(wts) as tmp_w:
        save_file(state, str(tmp_w), metadata={"model": name, "format": str(FORMAT_VERSION)})
        tmp_j.write_text(text)
        umask = os.umask(0)
        os.umask(umask)
        for t in (tmp_w, tmp_j):  # the permissions of a normally created file (safetensors writes 0600)
            os.chmod(t, 0o666 & ~umask)
    return wts, js


def _json_number(v: Any) -> Any:
    """numpy scalars (a config built with ``np.int64(8)``, which the constructors accept) as Python numbers."""
    if isinstance(v, np.generic) and v.dtype.kind in "biuf":
        return v.item()
    raise TypeError(f"Object of type {type(v).__name__} is not JSON serializable")


def load_model(path: str | Path, **config: Any) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (``config`` overrides the saved one) and load its weights."""
    stem = _stem(path)
    meta_path = _file(stem, ".json")
    if not meta_path.is_file():
        raise InputError(f"model config {meta_path} not found (save_model writes it beside the .safetensors)")
    meta = _read_json(meta_path)
    if "model" not in meta:
        raise InputError(f"model config {meta_path} has no 'model' entry")
    return create_model(str(meta["model"]), pretrained=stem, **config)
