"""Unit conversions for radar precipitation fields (pysteps conventions), for numpy arrays and torch tensors.

Every function accepts a numpy array (or scalar / anything ``np.asarray`` takes) or a ``torch.Tensor`` and returns
the same kind: numpy in, numpy out (float64 unless the input is already floating point); torch in, torch out on the
same device and dtype, built from differentiable torch operations so gradients flow through the conversion.
NaN (no data) stays NaN everywhere.

Conventions (see ``pysteps.utils.conversion`` and ``pysteps.utils.transformation``):

- reflectivity ``Z = a * R**b`` with ``Z = 10**(dBZ / 10)`` (mm^6 m^-3) and ``R`` in mm/h; Marshall-Palmer
  ``a = 200``, ``b = 1.6`` by default (FMI uses 223 / 1.53, MeteoSwiss 316 / 1.5);
- accumulations in mm over ``accutime`` minutes: ``R = mm / accutime * 60``;
- dBR: ``10 * log10(R)`` where ``R >= threshold`` (default 0.1 mm/h = -10 dBR), ``zerovalue`` (default -15 dBR)
  elsewhere; back-transform ``10**(dBR / 10)`` with values below ``threshold`` (default -10 dBR) set to 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._compat import nan_filled
from ..errors import InputError

__all__ = [
    "dbz_to_rainrate",
    "rainrate_to_dbz",
    "accumulation_to_rainrate",
    "rainrate_to_dbr",
    "dbr_to_rainrate",
    "to_rainrate",
    "normalize_unit",
    "is_rain_rate",
    "warn_implausible_rain",
]

# accepted spellings of the three pysteps units
_UNIT_ALIASES = {
    "mm/h": "mm/h",
    "mm h-1": "mm/h",
    "mm h**-1": "mm/h",
    "mm h^-1": "mm/h",
    "mm/hr": "mm/h",
    "mm hr-1": "mm/h",
    "mmh-1": "mm/h",
    "rainrate": "mm/h",
    "kg m-2 h-1": "mm/h",
    "mm": "mm",
    "kg m-2": "mm",
    "dbz": "dBZ",
}


# the spellings of mm/h, spaces removed (netCDF files also write "mm.h-1")
_RATE_SPELLINGS = frozenset({k.replace(" ", "") for k, v in _UNIT_ALIASES.items() if v == "mm/h"} | {"mm.h-1"})


_COMPACT_ALIASES = {k.replace(" ", ""): v for k, v in _UNIT_ALIASES.items()}


def is_rain_rate(unit: Any) -> bool:
    """Whether a ``units`` attribute spells a rain rate in mm/h (any spelling :func:`normalize_unit` knows)."""
    return str(unit).replace(" ", "").lower() in _RATE_SPELLINGS


TIME_DIM_NAMES = ("time", "valid_time")


def time_dim(da: Any) -> str | None:
    """The name of a DataArray's time dimension: ``time`` or ``valid_time`` (ERA5's CDS files), else the one
    dimension whose coordinate holds datetimes; None when there is none."""
    for name in TIME_DIM_NAMES:
        if name in da.dims:
            return name
    found = [d for d in da.dims if d in da.coords and np.issubdtype(da[d].dtype, np.datetime64)]
    return found[0] if found else None


def datetimes_of(da: Any, dim: str | None = None) -> np.ndarray | None:
    """The ``datetime64`` values of a DataArray's time dimension (``dim``, default :func:`time_dim`), None when it
    has none. cftime dates (a non-standard calendar), which every time check skipped as "no times", are given as
    the first date (1970-01-01 where the standard calendar has no such date) plus each frame's offset from it in
    their own calendar, with a warning: the spacing, what the checks read, is exact."""
    dim = time_dim(da) if dim is None else dim
    if dim is None or dim not in getattr(da, "coords", {}):
        return None
    t = np.asarray(da[dim].values).reshape(-1)
    if np.issubdtype(t.dtype, np.datetime64):
        return t
    first = t[0] if t.size else None
    if not (hasattr(first, "calendar") and hasattr(first, "year")):  # not cftime
        return None
    from ..errors import warn

    try:
        start = np.datetime64(first.strftime("%Y-%m-%dT%H:%M:%S"), "ns")
    except ValueError:  # e.g. 30 February of a 360-day calendar
        start = np.datetime64("1970-01-01T00:00:00", "ns")
    offsets = np.array([round((ti - first).total_seconds() * 1e9) for ti in t], dtype="timedelta64[ns]")
    warn(f"the time coordinate {dim!r} holds cftime dates (calendar {first.calendar!r}): read as {start} plus "
         "their offsets in that calendar (convert them with da.convert_calendar to keep the dates)")
    return start + offsets


#: the names of a grid's (x, y) dimensions or coordinates that skydiff recognises (read in (y, x) order: rows first)
XY_DIMS = (("x", "y"), ("lon", "lat"), ("longitude", "latitude"))


def frames_of_dataarray(da: Any, what: str = "frames", *, rate: bool = True, hint: str = "") -> np.ndarray:
    """The values of a ``(time, y, x)`` DataArray with its time dimension first (:func:`time_dim`) and its grid in
    ``(y, x)`` order (a ``(time, x, y)`` array, as some netCDF files store it, is transposed by its dimension
    names); with ``rate``, InputError when its ``units`` attribute is not a rain rate in mm/h (none: taken as
    mm/h)."""
    units = da.attrs.get("units")
    if rate and units is not None and not is_rain_rate(units):
        raise InputError(f"{what} must be a rain rate in mm/h, the DataArray has units {units!r}{hint}")
    td = time_dim(da)
    if td is not None and da.ndim == 3 and da.dims[0] != td:
        da = da.transpose(td, ...)
    if da.ndim >= 2 and tuple(da.dims[-2:]) in XY_DIMS:
        da = da.transpose(*da.dims[:-2], da.dims[-1], da.dims[-2])
    return np.ascontiguousarray(da.values)


# rain-rate fields whose rain (values >= 0.1 mm/h) has a median above this are probably reflectivity (dBZ) or dBR
# passed as mm/h: rain in a radar composite has a median of ~0.3-3 mm/h (the shared KNMI, FMI and MRMS data: <= 2)
REFLECTIVITY_MEDIAN_MM_H = 10.0
# ... and rates above this are no rain rate at all
MAX_PLAUSIBLE_RAIN_MM_H = 1000.0


def warn_implausible_rain(x: Any, what: str = "rain") -> None:
    """Warn (:class:`~skydiff.errors.SkydiffWarning`) when a field said to be rain rates in mm/h does not look so.

    Two checks on the finite values: a maximum above 1000 mm/h, and rain (values >= 0.1 mm/h, at least 100 of them;
    an even subsample of <= ~200 000 values for large inputs) whose median exceeds 10 mm/h — what dBZ (15-55 where
    it rains) read as mm/h looks like; real radar rain has a median of ~0.3-3 mm/h. dBR is *not* caught here (its
    rain has a median of ~2 like mm/h); its zero value (-15) is: the callers refuse negative rain rates. Nothing
    is changed or refused: a warning, since extreme but real fields exist.
    """
    from ..errors import warn

    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    flat = t.detach().reshape(-1)
    if not flat.numel():
        return
    top = float(torch.nan_to_num(flat, nan=-1.0, posinf=-1.0).max())  # (infinities are refused by the callers)
    if top > MAX_PLAUSIBLE_RAIN_MM_H:
        warn(f"{what} reach {top:.0f} mm/h: are they really rain rates in mm/h?")
        return
    sub = flat[:: max(1, flat.numel() // 200_000)]  # the median of an even subsample is enough here, and cheap
    wet = sub[sub >= 0.1]  # (NaN compares False)
    if wet.numel() >= 100:
        med = float(wet.float().median())
        if med > REFLECTIVITY_MEDIAN_MM_H:
            warn(f"{what}: the median rain rate where it rains is {med:.1f} mm/h (radar rain: ~0.3-3 mm/h); "
                 "are these reflectivities (dBZ) or dBR? convert them with skydiff.io.to_rainrate first")


def normalize_unit(unit: str) -> str:
    """Return the pysteps name ('mm/h', 'mm' or 'dBZ') of a unit string; InputError for anything else."""
    if not isinstance(unit, str):
        raise InputError(f"unit must be a string ('mm/h', 'mm' or 'dBZ'), got {type(unit).__name__}")
    key = unit.strip().lower().replace(" ", "")  # every spacing of a spelling, as is_rain_rate reads them
    if key in _RATE_SPELLINGS:  # (also netCDF's "mm.h-1", which read_radar's netCDF reader refused)
        return "mm/h"
    if key not in _COMPACT_ALIASES:
        raise InputError(f"unknown precipitation unit {unit!r}: expected one of 'mm/h', 'mm' (accumulation) or 'dBZ'")
    return _COMPACT_ALIASES[key]


def _as_array(x: Any) -> np.ndarray | torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())
    arr = np.asarray(nan_filled(x))  # masked pixels (e.g. netCDF4's fill values) are no data
    if arr.dtype.kind not in "fc":
        arr = arr.astype(np.float64)
    return arr


def _check_zr(a: float, b: float) -> tuple[float, float]:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError) as exc:
        raise InputError(f"Z-R coefficients must be numbers, got a={a!r}, b={b!r}") from exc
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        raise InputError(f"Z-R coefficients must be positive and finite, got a={a}, b={b}")
    return a, b


def dbz_to_rainrate(dbz: Any, a: float = 200.0, b: float = 1.6) -> Any:
    """Rain rate (mm/h) from reflectivity in dBZ: ``R = (10**(dBZ/10) / a)**(1/b)``.

    Computed as ``10**((dBZ/10 - log10 a) / b)``, smooth in ``dbz`` (torch gradients are finite everywhere).
    """
    a, b = _check_zr(a, b)
    x = _as_array(dbz)
    return 10.0 ** ((x / 10.0 - math.log10(a)) / b)


def rainrate_to_dbz(rainrate: Any, a: float = 200.0, b: float = 1.6) -> Any:
    """Reflectivity in dBZ from rain rate (mm/h): ``dBZ = 10*log10(a * R**b)``.

    ``R = 0`` gives ``-inf`` (and negative rates NaN), exactly as the formula; mask or threshold the output (or
    use :func:`rainrate_to_dbr`) before training on it.
    """
    a, b = _check_zr(a, b)
    x = _as_array(rainrate)
    if isinstance(x, torch.Tensor):
        return 10.0 * math.log10(a) + 10.0 * b * torch.log10(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * math.log10(a) + 10.0 * b * np.log10(x)


def accumulation_to_rainrate(mm: Any, accutime_min: float) -> Any:
    """Rain rate (mm/h) from an accumulation in mm over ``accutime_min`` minutes: ``mm / accutime * 60``."""
    return _as_array(mm) * (60.0 / positive_minutes(accutime_min, "accutime"))


def rainrate_to_dbr(rainrate: Any, threshold: float = 0.1, zerovalue: float = -15.0) -> Any:
    """pysteps' dB transform: ``10*log10(R)`` where ``R >= threshold`` (mm/h), ``zerovalue`` elsewhere; NaN kept.

    With torch the log is evaluated on ``max(R, threshold)`` so that the unused branch never produces NaN
    gradients.
    """
    try:
        threshold, zerovalue = float(threshold), float(zerovalue)
    except (TypeError, ValueError):
        raise InputError(f"threshold and zerovalue must be numbers, got {threshold!r} and {zerovalue!r}") from None
    if not threshold > 0 or not np.isfinite(threshold):
        raise InputError(f"the dBR threshold must be a positive rain rate in mm/h, got {threshold}")
    if not np.isfinite(zerovalue):  # NaN would make dry pixels look like no data
        raise InputError(f"zerovalue must be a finite dBR value, got {zerovalue}")
    x = _as_array(rainrate)
    if isinstance(x, torch.Tensor):
        db = 10.0 * torch.log10(torch.clamp(x, min=threshold))
        out = torch.where(x >= threshold, db, torch.full_like(x, zerovalue))
        return torch.where(torch.isnan(x), x, out)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(x >= threshold, 10.0 * np.log10(np.maximum(x, threshold)), zerovalue)
    return np.where(np.isnan(x), np.nan, out)


def dbr_to_rainrate(dbr: Any, threshold: float = -10.0) -> Any:
    """Inverse dB transform: ``10**(dBR/10)``, values below ``threshold`` (dBR) set to 0; NaN kept."""
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise InputError(f"threshold must be a number (dBR), got {threshold!r}") from None
    if math.isnan(threshold):  # (every comparison with NaN is false: nothing was thresholded)
        raise InputError("threshold must be a number (dBR), got NaN")
    x = _as_array(dbr)
    r = 10.0 ** (x / 10.0)
    if isinstance(x, torch.Tensor):
        return torch.where(x < threshold, torch.zeros_like(r), r)
    return np.where(x < threshold, 0.0, r)


def to_rainrate(
    data: Any,
    unit: str,
    accutime: float | None = None,
    zr_a: float | None = None,
    zr_b: float | None = None,
) -> Any:
    """Convert ``data`` given in ``unit`` ('mm/h', 'mm' or 'dBZ') to rain rate in mm/h.

    - 'mm/h': returned unchanged (as a floating-point array);
    - 'mm': accumulation over ``accutime`` minutes (required);
    - 'dBZ': Z-R relation with ``zr_a``/``zr_b`` (default Marshall-Palmer 200 / 1.6).

    Unknown units raise :class:`~skydiff.errors.InputError` naming the unit.
    """
    u = normalize_unit(unit)
    if u == "mm/h":
        return _as_array(data)
    if u == "mm":
        if accutime is None:
            raise InputError("converting an accumulation ('mm') to mm/h needs accutime (minutes)")
        return accumulation_to_rainrate(data, accutime)
    return dbz_to_rainrate(data, 200.0 if zr_a is None else zr_a, 1.6 if zr_b is None else zr_b)


def positive_minutes(value: Any, name: str = "timestep") -> float:
    """``value`` as a positive, finite number of minutes, or an :class:`InputError` naming ``name``."""
    if isinstance(value, (bool, np.bool_)):  # (True was taken as 1 minute)
        raise InputError(f"{name} must be a number of minutes, got {value!r}")
    try:
        minutes = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a number of minutes, got {value!r}") from exc
    if not (minutes > 0 and math.isfinite(minutes)):
        raise InputError(f"{name} must be a positive number of minutes, got {minutes}")
    return minutes
