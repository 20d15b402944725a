"""Continuous verification scores (MSE, RMSE, MAE, ME), NaN-aware, in torch.

Conventions shared by every function of :mod:`skydiff.verify` (the helpers that implement them live here):

- **Inputs** may be numpy arrays (or anything ``numpy.asarray`` accepts) or torch tensors. When at least one input
  is a torch tensor the results are torch tensors on that tensor's device (numpy partners are moved there);
  when all inputs are numpy the results are python ``float`` for scalars and ``numpy.ndarray`` otherwise.
- **Dtypes**: integer/boolean inputs are converted to float (float64 for numpy, torch's default dtype for
  tensors); float16/bfloat16 are computed (and returned) in float32; forecast and observation are promoted to a
  common floating dtype. numpy masked arrays count their masked pixels as NaN (no data).
- **Shapes**: forecast and observation must have exactly the same shape (no broadcasting) or
  :class:`~skydiff.errors.ShapeError` is raised.
- **Missing data**: a pixel where the forecast *or* the observation is NaN is masked out: it is not counted in
  any sum or count. ``+inf``/``-inf`` are *not* missing values; they take part in the computation as numbers.
- **dims**: ``None`` reduces (pools) over all dimensions; an int or a tuple of ints reduces over those
  dimensions only, e.g. ``dims=(-2, -1)`` gives one value per field of a ``(batch, H, W)`` stack; ``dims=()``
  reduces nothing (pixel-wise values).
- A score whose denominator is zero because no pixel is valid is NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._compat import native_array, to_tensor
from ..errors import InputError, ShapeError

__all__ = ["continuous", "CONTINUOUS_SCORES"]

#: Names (and order) of the keys returned by :func:`continuous`.
CONTINUOUS_SCORES = ("mse", "rmse", "mae", "me")


# ----------------------------------------------------------------------------------------------------------
# helpers shared by the verify package
# ----------------------------------------------------------------------------------------------------------
def _float_tensor(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """Convert ``x`` to a floating torch tensor (on ``device`` when given)."""
    if isinstance(x, torch.Tensor):
        t = x
        if t.is_complex():
            raise InputError(f"{name} must be real-valued, got a complex tensor")
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        elif t.dtype in (torch.float16, torch.bfloat16):  # sums over a field overflow or round off in half precision
            t = t.to(torch.float32)
    else:
        try:
            arr = native_array(x)  # masked pixels NaN (no data), native byte order
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise InputError(f"{name} could not be converted to an array: {exc}") from exc
        if arr.dtype.kind == "c":
            raise InputError(f"{name} must be real-valued, got a complex array")
        if arr.dtype.kind not in "fiub":
            raise InputError(f"{name} must be numeric, got an array of dtype {arr.dtype}")
        if arr.dtype.kind == "f" and arr.dtype.itemsize < 4:
            arr = arr.astype(np.float32)
        t = to_tensor(arr)
        if not t.is_floating_point():
            t = t.to(torch.float64)
    if device is not None and t.device != torch.device(device):
        t = t.to(device)
    return t


def _nan(t: torch.Tensor) -> torch.Tensor:
    """The score of an input without valid values: a NaN scalar in ``t``'s dtype, on its device."""
    return torch.full((), float("nan"), dtype=t.dtype, device=t.device)


def _is_torch(*xs: Any) -> bool:
    return any(isinstance(x, torch.Tensor) for x in xs)


def _device_of(*xs: Any) -> torch.device | None:
    devices = {x.device for x in xs if isinstance(x, torch.Tensor)}
    if len(devices) > 1:
        raise InputError(f"inputs are on different devices: {sorted(str(d) for d in devices)}")
    return devices.pop() if devices else None


def _pair(
    f: Any, o: Any, names: tuple[str, str] = ("forecast", "observation")
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Return ``(f, o, numpy_out)``: both as tensors of a common float dtype and the same device and shape."""
    numpy_out = not _is_torch(f, o)
    device = _device_of(f, o)
    ft = _float_tensor(f, names[0], device)
    ot = _float_tensor(o, names[1], device)
    if ft.shape != ot.shape:
        raise ShapeError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(ft.shape)} and {tuple(ot.shape)}"
        )
    dtype = torch.promote_types(ft.dtype, ot.dtype)
    return ft.to(dtype), ot.to(dtype), numpy_out


def _norm_dims(dims: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    """Normalise ``dims`` to a sorted tuple of non-negative axes (``None`` = all axes)."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, (int, np.integer)):
        dims = (int(dims),)
    try:
        if any(isinstance(d, (bool, float, str)) for d in dims):
            raise TypeError
        dims = tuple(int(d) for d in dims)
    except (TypeError, ValueError) as exc:
        raise InputError(f"dims must be None, an int or a tuple of ints, got {dims!r}") from exc
    out = []
    for d in dims:
        if not -ndim <= d < ndim:
            raise ShapeError(f"dims {dims} out of range for an input with {ndim} dimension(s)")
        out.append(d % ndim)
    if len(set(out)) != len(out):
        raise InputError(f"dims contains a repeated dimension: {dims}")
    return tuple(sorted(out))


def _sum(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Sum over ``dims`` (an empty tuple means no reduction, unlike ``torch.sum(dim=())``)."""
    return x.sum(dim=dims) if dims else x


def _out(x: torch.Tensor, numpy_out: bool) -> Any:
    """Numpy output convention: python float for 0-d, ndarray otherwise; torch tensors pass through."""
    if not numpy_out:
        return x
    arr = x.detach().cpu().numpy()
    return float(arr) if arr.ndim == 0 else arr


def _out_dict(d: dict[str, torch.Tensor], numpy_out: bool) -> dict[str, Any]:
    return {k: _out(v, numpy_out) for k, v in d.items()}


def _valid(f: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """Boolean mask of the pixels where neither forecast nor observation is NaN."""
    return ~(torch.isnan(f) | torch.isnan(o))


# ----------------------------------------------------------------------------------------------------------
# continuous scores
# ----------------------------------------------------------------------------------------------------------
def _cont_sums(f: torch.Tensor, o: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Sufficient statistics ``(n, Σd, Σ|d|, Σd²)`` of ``d = f − o`` over the valid pixels."""
    valid = _valid(f, o)
    zero = torch.zeros((), dtype=f.dtype, device=f.device)
    # where() keeps the gradient finite: masked pixels get a zero gradient even though f − o is NaN there.
    d = torch.where(valid, f - o, zero)
    n = _sum(valid.to(f.dtype), dims)
    return n, _sum(d, dims), _sum(d.abs(), dims), _sum(d * d, dims)


def _cont_from_sums(n: torch.Tensor, s: torch.Tensor, sa: torch.Tensor, s2: torch.Tensor) -> dict[str, torch.Tensor]:
    mse = s2 / n
    # sqrt's gradient at mse = 0 (a perfect forecast) is inf, times d = 0: NaN; there the gradient is taken as 0
    zero = mse == 0  # (NaN, no valid pixel, stays NaN)
    rmse = torch.where(zero, torch.zeros_like(mse), torch.sqrt(torch.where(zero, torch.ones_like(mse), mse)))
    return {"mse": mse, "rmse": rmse, "mae": sa / n, "me": s / n}


def continuous(f: Any, o: Any, dims: int | Sequence[int] | None = None) -> dict[str, Any]:
    """Mean squared error, root mean squared error, mean absolute error and mean error of ``f`` against ``o``.

    With ``d = f − o`` over the valid pixels (neither ``f`` nor ``o`` NaN) and ``n`` their number:

    - ``mse  = Σ d² / n``
    - ``rmse = sqrt(mse)``
    - ``mae  = Σ |d| / n``
    - ``me   = Σ d / n`` (mean error, i.e. additive bias: positive when the forecast is too high)

    These equal pysteps' ``det_cont_fct`` MSE/RMSE/MAE/ME (which also ignores NaN pairs).

    Parameters
    ----------
    f, o:
        Forecast and observation, numpy arrays or torch tensors of the same shape.
    dims:
        Dimensions to reduce. ``None`` (default) pools all pixels into one value per score;
        ``dims=(-2, -1)`` gives one value per field of a ``(..., H, W)`` stack.

    Returns
    -------
    dict
        ``{"mse", "rmse", "mae", "me"}``: python floats / numpy arrays for numpy input, torch tensors (on the
        inputs' device) for torch input. Where no pixel is valid the scores are NaN.

    Notes
    -----
    The scores are built from differentiable torch operations: gradients flow to ``f`` (and ``o``) through
    ``mse``, ``rmse``, ``mae`` and ``me``; masked (NaN) pixels receive a zero gradient. The gradient of ``mae``
    at ``d = 0`` is 0 (torch's subgradient), and so is that of ``rmse`` where ``mse = 0`` (a perfect forecast;
    mathematically undefined there, and ``sqrt``'s infinite slope times ``d = 0`` gave NaN).
    """
    ft, ot, numpy_out = _pair(f, o)
    dd = _norm_dims(dims, ft.ndim)
    return _out_dict(_cont_from_sums(*_cont_sums(ft, ot, dd)), numpy_out)
