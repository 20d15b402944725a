"""Errors raised by skydiff.

Every problem with a user's input is reported with a :class:`SkydiffError` (or a subclass) whose message names
the problem: wrong shape, wrong units, NaN where none is allowed, gaps in time, an unreadable file. The CLI turns
these into one-line ``skydiff: error: ...`` messages instead of tracebacks.

The subclasses also inherit from the matching built-in exception (``ValueError``, ``OSError``) so that code
written against numpy/pysteps conventions keeps working.
"""

from __future__ import annotations

import warnings


class SkydiffError(Exception):
    """Base class of every error skydiff raises on purpose."""


class InputError(SkydiffError, ValueError):
    """An argument has the wrong value, type, units or contains NaN where none is allowed."""


class ShapeError(InputError):
    """An array has the wrong number of dimensions or the wrong shape."""


class ReadError(SkydiffError, OSError):
    """A file does not exist, cannot be read, or its format is not recognised."""


class TimeGapError(SkydiffError, ValueError):
    """A time series has missing or irregular time steps where a regular series is needed."""


class SkydiffWarning(UserWarning):
    """Warnings issued by skydiff (e.g. gaps reported when reading a radar series)."""


def check_int(name: str, value: object, lo: int, hi: int | None = None) -> int:
    """``value`` as an int if it is an integer (Python or numpy, not bool) ``>= lo`` (and ``<= hi``), else
    :class:`InputError`."""
    import numbers

    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < lo
            or (hi is not None and int(value) > hi)):
        bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise InputError(f"{name} must be an integer {bounds}, got {value!r}")
    return int(value)


MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes seeds up to 64 bits


def check_device(device: object, what: str = "skydiff") -> object:
    """``device`` as a :class:`torch.device` (``None`` stays None: the inputs' device); :class:`InputError` for an
    unknown device, or a CUDA device this machine does not have. ``what`` names the computation (its runs are on
    CPU and CUDA)."""
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)  # type: ignore[call-overload]
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {device!r}; use 'cpu' or 'cuda' (or 'cuda:<index>')") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"unsupported device {device!r}; {what} runs on 'cpu' or 'cuda'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r}: CUDA is not available on this machine; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def check_seed(value: object, name: str = "seed") -> int:
    """A random seed as an int in ``[0, 2**64 - 1]`` (what torch's generators take), else :class:`InputError`."""
    return check_int(name, value, 0, MAX_SEED)


def positive_finite(*values: object) -> bool:
    """Whether every value is a finite real number > 0 (Python or numpy, not bool)."""
    import math
    import numbers

    return all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)


def check_nonnegative(name: str, value: object, what: str = "number", unit: str = "") -> float:
    """``value`` as a float if it is a finite real number >= 0 (Python or numpy, not bool), else InputError saying
    ``{name} must be a finite {what} >= 0{unit}``."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a finite {what} >= 0{unit}, got {value!r}")
    return float(value)


def check_rain_rate(name: str, value: object) -> float:
    """``value`` as a float if it is a finite real number >= 0 (a rain rate in mm/h; not bool), else InputError."""
    return check_nonnegative(name, value, "rain rate", " mm/h")


def warn(message: str) -> None:
    """Issue a :class:`SkydiffWarning` pointing at the caller's caller."""
    warnings.warn(message, SkydiffWarning, stacklevel=3)


__all__ = ["SkydiffError", "InputError", "ShapeError", "ReadError", "TimeGapError", "SkydiffWarning", "warn", "check_int",
           "positive_finite", "check_rain_rate"]
