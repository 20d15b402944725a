"""Small helpers shared across skydiff: quiet pysteps import, numpy/torch conversion."""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

import numpy as np
import torch


def import_pysteps() -> Any:
    """Import pysteps without its configuration banner on stdout."""
    os.environ.setdefault("PYSTEPS_SILENT_IMPORT", "1")
    with contextlib.redirect_stdout(io.StringIO()):
        import pysteps  # noqa: F401

    return pysteps


def native_array(x: Any) -> np.ndarray:
    """``numpy.asarray(x)`` as torch can take it: masked pixels NaN (:func:`nan_filled`), big-endian data (HDF5,
    FITS) in native byte order, long double as float64; a 0-d array stays 0-d."""
    arr = np.asarray(nan_filled(x))
    if arr.dtype.kind == "f" and arr.dtype.itemsize > 8:
        arr = arr.astype(np.float64)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def to_tensor(x: Any, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Return ``x`` as a torch tensor (no copy when it already is one with the right dtype/device); numpy input
    through :func:`native_array` (masked = NaN, native byte order, 0-d kept 0-d)."""
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype or x.dtype, device=device or x.device)
    arr = native_array(x)
    if dtype is None and arr.dtype.kind in "iub":
        arr = arr.astype(np.float64)
    t = torch.from_numpy(np.ascontiguousarray(arr).reshape(arr.shape))
    return t.to(dtype=dtype or t.dtype, device=device or "cpu")


def check_real(x: Any, name: str, kinds: str = "biuf") -> None:
    """InputError unless ``x`` (a tensor, or an array as numpy reads it) holds real numbers: a tensor that is not
    complex (nor bool unless ``"b"`` in ``kinds``), an array of a numpy dtype kind in ``kinds`` (b bool, i/u
    integers, f floats). Complex input would otherwise lose its imaginary part in a cast."""
    if isinstance(x, torch.Tensor):
        ok, dtype = not x.is_complex() and (x.dtype != torch.bool or "b" in kinds), x.dtype
    else:
        dtype = np.asarray(x).dtype
        ok = dtype.kind in kinds
    if not ok:
        from .errors import InputError

        raise InputError(f"{name} must be a real numeric array or tensor, got dtype {dtype}")


def tensor_numpy(t: Any) -> np.ndarray:
    """A tensor (any device, with grad) as a numpy array; bfloat16, which numpy has no type for, as float32.
    Anything else (arrays, lists, numbers, DataArrays) as ``numpy.asarray`` gives it, except that a masked array's
    masked pixels are NaN (no data; :func:`nan_filled`), not their fill values."""
    if not isinstance(t, torch.Tensor):
        return np.asarray(nan_filled(t))
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


def nan_filled(x: Any) -> Any:
    """A numpy masked array (or a list/tuple holding one, e.g. frames read one by one with netCDF4) as a float64
    array with NaN (no data) at its masked pixels, instead of their fill values; anything else unchanged."""
    if isinstance(x, (list, tuple)) and any(isinstance(f, np.ma.MaskedArray) for f in x):
        x = np.ma.stack([np.ma.asarray(f) for f in x])
    if isinstance(x, np.ma.MaskedArray):
        return np.ma.filled(x.astype(np.float64), np.nan)
    return x


def is_numpy(x: Any) -> bool:
    return not isinstance(x, torch.Tensor)


PRECISIONS = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(precision: str | None, device: torch.device | str | None = None) -> torch.dtype | None:
    """A ``precision`` argument (``None``/``"full"``, ``"bfloat16"``, ``"float16"``) -> the ``torch.autocast`` dtype
    of the networks' layers (None = full precision), or a clear error. One meaning for every skydiff model that
    takes it (nowcasting networks, the diffusion downscaler). With a CPU ``device`` that lacks native instructions
    for that dtype (AVX512-BF16 or AMX for bfloat16, AMX-FP16 for float16) a warning says that it will be slower
    than full precision (measured 2-9x slower on an AVX2 CPU, benchmarks/RESULTS.md §5)."""
    from .errors import InputError

    if precision is None or precision == "full":
        return None
    if precision not in PRECISIONS:
        raise InputError(f"precision must be None or 'full' (the model's dtype), 'bfloat16' or 'float16', got "
                         f"{precision!r}")
    if device is not None and torch.device(device).type == "cpu" and cpu_lacks_fast(precision):
        from .errors import warn

        warn(f"precision={precision!r} on this CPU (no native {precision} instructions) runs the networks slower "
             "than full precision; leave precision at None on this machine")
    return PRECISIONS[precision]


def cpu_lacks_fast(precision: str) -> bool:
    """True when this CPU is known to lack native ``"bfloat16"``/``"float16"`` matrix instructions (False when
    torch cannot tell)."""
    checks = {"bfloat16": ("_is_avx512_bf16_supported", "_is_amx_tile_supported"),
              "float16": ("_is_amx_fp16_supported",)}[precision]
    try:
        return not any(bool(getattr(torch.cpu, name)()) for name in checks)
    except Exception:  # noqa: BLE001 - private torch helpers: unknown means no warning
        return False
