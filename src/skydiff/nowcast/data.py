"""Training and evaluation data for nowcasting models.

Sequence datasets
-----------------
:class:`RadarSequences` turns radar series (``xarray.DataArray`` from :func:`skydiff.io.read_radar`, files, or
the lazily read :class:`RadarSource` parts of :func:`shared_split`) into a ``torch.utils.data.Dataset`` of
``n_in`` input and ``n_out`` target frames. Every source is read **once** into memory as float32, trimmed to the
bounding box of its valid pixels and transformed once, so ``__getitem__`` is a slice, a NaN mask and a copy
(about 1-2 ms for 10 frames of 288 × 288 on one core).

* Windows are **regular in time**: ``n_in + n_out`` consecutive frames exactly ``timestep`` minutes apart; a
  window never spans a gap or crosses a ``times`` boundary.
* Crops: random (training, ``random_crop=True``) or fixed (evaluation: the centre crop, or a grid of
  non-overlapping tiles, ``eval_crops="grid"``). A crop must have at least ``min_valid_fraction`` valid
  (non-NaN) pixels over the window's frames (default 0.9 with a crop, 0 for whole frames).
* ``min_rain_fraction``: keep only windows whose target frames have at least this fraction of their valid pixels
  ``>= rain_threshold`` mm/h (with ``n_out = 0``: the input frames). With fixed crops the rule is evaluated on the
  crop itself (one decision per window and crop); with random crops on the whole (trimmed) frame, because the
  crop is only drawn in ``__getitem__``.
* Samples are dicts: ``inputs`` (n_in, h, w) float32, ``targets`` (n_out, h, w) float32 (transformed, NaN
  replaced by ``nan_value``), ``mask`` (n_in + n_out, h, w) bool (True = valid data), ``time`` (ISO string of the
  last input), plus ``source`` (index of the source) and ``origin`` (row, column of the crop's top-left pixel
  in the source's full grid).

Transforms (:func:`apply_transform` / :func:`inverse_transform`, numpy or torch; R = rain rate in mm/h, negative
rates clipped to 0 first):

========  ==========================================================================================
``log``   ``ln(R + 0.01)``: LUPIN's ``log`` scaler (reference §1, ``SHMUDataset.scaler``, R in mm/h);
          RainNet uses the same formula on 5-min depths in mm (§3). Inverse ``max(exp(x) - 0.01, 0)``.
``dbr``   pysteps' dB transform: ``10 log10 R`` for R >= 0.1 mm/h, -15 dBR below; inverse sets values below
          -10 dBR to 0 (so rates below 0.1 mm/h come back as 0). :func:`skydiff.io.rainrate_to_dbr`.
``nl50``  SmaAt-UNet / NL-50 scaling (§7.1, §8.1): ``R / 12 / 47.83`` (mm per 5 min ÷ 47.83).
``None``  rain rate in mm/h unchanged.
========  ==========================================================================================

Splits
------
:func:`select_times`, :func:`split_by_time` and :func:`split_tail` cut DataArrays by time (half-open ranges
``[start, end)``). :func:`shared_split` returns the suggested train / validation / test split of the shared real
data (``SKYDIFF_DATA``, README "Suggested use") as lazily read :class:`RadarSource` parts, or as DataArrays with
``load=True``.

NL-50-style files
-----------------
:func:`build_nl_dataset` writes radar sequences in the SmaAt-UNet HDF5 layout (reference §8.2-8.3, §7.1) and
:class:`NLDataset` reads them (or the authors' NL-50 / NL-20 files) back.
"""

from __future__ import annotations

import datetime as _dt
import glob as _glob
import json
import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import Dataset

from ..errors import InputError, ReadError, ShapeError, check_rain_rate, warn
from ..io.units import dbr_to_rainrate, is_rain_rate, rainrate_to_dbr

__all__ = [
    "RadarSequences",
    "RadarSource",
    "NLDataset",
    "apply_transform",
    "inverse_transform",
    "select_times",
    "split_by_time",
    "split_tail",
    "shared_split",
    "build_nl_dataset",
    "TRANSFORMS",
    "LOG_OFFSET",
    "NL50_NORMALISATION",
    "NL50_CROP",
]

LOG_OFFSET = 0.01
"""Offset of the ``log`` transform ``ln(R + 0.01)`` (LUPIN / RainNet)."""
NL50_NORMALISATION = 47.83
"""SmaAt-UNet's normalisation: stored value = mm per 5 min / 47.83 (the NL-50 train maximum, §7.1)."""
NL50_CROP = (284, 572, 225, 513)
"""(row0, row1, col0, col1) of the 288 × 288 NL-50-style cut-out of the 765 × 700 KNMI grid (§8.4)."""
TRANSFORMS = ("log", "dbr", "nl50", None)
_DBR_THRESHOLD = 0.1
_DBR_ZERO = -15.0
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


# ------------------------------------------------------------------------------------------ transforms
def _transform_name(kind: Any) -> str | None:
    if kind is None:
        return None
    if isinstance(kind, str):
        k = kind.strip().lower()
        if k in ("none", "identity", "mm/h", ""):
            return None
        if k in ("log", "dbr", "nl50"):
            return k
    raise InputError(f"unknown transform {kind!r}; use 'log' (ln(R + 0.01)), 'dbr' (pysteps dB), 'nl50' or None")


def _as_float(x: Any) -> np.ndarray | torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if x.is_floating_point() else x.float()
    a = np.asarray(x)
    return a if np.issubdtype(a.dtype, np.floating) else a.astype(np.float32)


def apply_transform(rainrate: Any, kind: str | None = "log") -> Any:
    """Rain rate (mm/h, numpy or torch) → model space; see the module docstring. NaN stays NaN.

    Negative rates are clipped to 0 first (``ln`` would otherwise give NaN below -0.01 mm/h).
    """
    kind = _transform_name(kind)
    x = _as_float(rainrate)
    is_t = isinstance(x, torch.Tensor)
    x = torch.clamp(x, min=0.0) if is_t else np.maximum(x, 0)  # both keep NaN
    if kind is None:
        return x
    if kind == "log":
        return torch.log(x + LOG_OFFSET) if is_t else np.log(x + np.asarray(LOG_OFFSET, x.dtype))
    if kind == "dbr":
        out = rainrate_to_dbr(x, threshold=_DBR_THRESHOLD, zerovalue=_DBR_ZERO)
        return out if is_t else out.astype(x.dtype, copy=False)
    return x * (1.0 / (12.0 * NL50_NORMALISATION)) if is_t else x * np.asarray(
        1.0 / (12.0 * NL50_NORMALISATION), x.dtype)


def inverse_transform(x: Any, kind: str | None = "log") -> Any:
    """Model space → rain rate in mm/h (numpy or torch), the inverse of :func:`apply_transform`.

    ``log``: ``max(exp(x) - 0.01, 0)``; ``dbr``: ``10**(x/10)``, 0 below -10 dBR (rates < 0.1 mm/h → 0);
    ``nl50``: ``x * 47.83 * 12``; ``None``: unchanged. NaN stays NaN.
    """
    kind = _transform_name(kind)
    v = _as_float(x)
    is_t = isinstance(v, torch.Tensor)
    if kind is None:
        return v
    if kind == "log":
        return torch.clamp(torch.exp(v) - LOG_OFFSET, min=0.0) if is_t else np.maximum(
            np.exp(v) - np.asarray(LOG_OFFSET, v.dtype), 0)
    if kind == "dbr":
        out = dbr_to_rainrate(v, threshold=10.0 * math.log10(_DBR_THRESHOLD))
        return out if is_t else out.astype(v.dtype, copy=False)
    return v * (12.0 * NL50_NORMALISATION) if is_t else v * np.asarray(12.0 * NL50_NORMALISATION, v.dtype)


def _transform_inplace(data: np.ndarray, kind: str | None) -> None:
    """Transform a float32 (T, H, W) array frame by frame in place (clips negatives; NaN kept)."""
    for t in range(data.shape[0]):
        f = data[t]
        np.maximum(f, 0, out=f)
        if kind == "log":
            f += np.float32(LOG_OFFSET)
            np.log(f, out=f)
        elif kind == "dbr":
            f[...] = rainrate_to_dbr(f, threshold=_DBR_THRESHOLD, zerovalue=_DBR_ZERO)
        elif kind == "nl50":
            f *= np.float32(1.0 / (12.0 * NL50_NORMALISATION))


# ------------------------------------------------------------------------------------------ time helpers
def _dt64(value: Any, what: str = "time") -> np.datetime64:
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[ns]")
    try:
        import pandas as pd

        ts = pd.Timestamp(value)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{what} must be a date/time (ISO string, datetime, numpy.datetime64), got {value!r}") from exc
    if ts is pd.NaT:
        raise InputError(f"{what} must be a date/time, got {value!r}")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.to_datetime64(), "ns")


def _range(times: Any) -> tuple[np.datetime64 | None, np.datetime64 | None]:
    """(start, end) of a half-open time range from a tuple/list of two (None = open) or a slice."""
    if isinstance(times, slice):
        if times.step is not None:
            raise InputError("a times slice cannot have a step")
        lo, hi = times.start, times.stop
    elif isinstance(times, (tuple, list)) and len(times) == 2:
        lo, hi = times
    else:
        raise InputError(f"times must be (start, end) or slice(start, end) with None for an open end, got {times!r}")
    a = None if lo is None else _dt64(lo, "times start")
    b = None if hi is None else _dt64(hi, "times end")
    if a is not None and b is not None and not a < b:
        raise InputError(f"empty time range: start {_iso(a)} is not before end {_iso(b)}")
    return a, b


def _iso(t: Any) -> str:
    return str(np.datetime64(t, "s"))


def _time_values(da: xr.DataArray) -> np.ndarray:
    if not isinstance(da, xr.DataArray):
        raise InputError(f"expected an xarray.DataArray (as returned by read_radar), got {type(da).__name__}")
    if "time" not in da.coords:
        raise InputError("the DataArray has no 'time' coordinate")
    return np.atleast_1d(np.asarray(da["time"].values, dtype="datetime64[ns]"))


def select_times(da: xr.DataArray, start: Any = None, end: Any = None) -> xr.DataArray:
    """Frames of ``da`` with ``start <= time < end`` (None = open end)."""
    a, b = (None if start is None else _dt64(start, "start")), (None if end is None else _dt64(end, "end"))
    t = _time_values(da)
    keep = np.ones(t.size, bool)
    if a is not None:
        keep &= t >= a
    if b is not None:
        keep &= t < b
    return da.isel(time=np.flatnonzero(keep))


def split_by_time(da_or_list: Any, boundaries: Any) -> list[Any]:
    """Cut at the given times: ``[t < b0], [b0 <= t < b1], ..., [t >= bn]`` (``len(boundaries) + 1`` parts).

    A DataArray gives a list of DataArrays (possibly with 0 frames); a list of DataArrays gives a list of lists,
    each holding the non-empty pieces of every event (a piece never joins two events).
    """
    if isinstance(boundaries, (str, np.datetime64, _dt.datetime)) or not isinstance(boundaries, Sequence):
        boundaries = [boundaries]
    bs = [_dt64(b, "boundary") for b in boundaries]
    if any(not bs[i] < bs[i + 1] for i in range(len(bs) - 1)):
        raise InputError("split boundaries must be strictly increasing")
    edges: list[Any] = [None, *bs, None]

    def cut(da: xr.DataArray) -> list[xr.DataArray]:
        return [select_times(da, edges[i], edges[i + 1]) for i in range(len(bs) + 1)]

    if isinstance(da_or_list, xr.DataArray):
        return cut(da_or_list)
    items = list(da_or_list)
    out: list[list[xr.DataArray]] = [[] for _ in range(len(bs) + 1)]
    for da in items:
        for i, piece in enumerate(cut(da)):
            if piece.sizes["time"]:
                out[i].append(piece)
    return out


def _tail_count(n: int, fraction: float) -> int:
    return min(n, max(1 if n > 1 else 0, int(math.ceil(fraction * n - 1e-9))))


def split_tail(da_or_list: Any, fraction: float = 0.2) -> tuple[Any, Any]:
    """Split off the last ``fraction`` of every event's frames (``ceil(fraction * T)``, at least 1) by time.

    Returns ``(head, tail)``: DataArrays for a DataArray, lists for a list. Typical use: a validation part that
    follows its training part in time, so that no validation window overlaps a training window.
    """
    if not 0.0 < float(fraction) < 1.0:
        raise InputError(f"fraction must be in (0, 1), got {fraction}")

    def one(da: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
        t = np.sort(_time_values(da))
        k = _tail_count(t.size, float(fraction))
        if k == 0:
            return da, da.isel(time=slice(0, 0))
        head, tail = split_by_time(da, [t[t.size - k]])
        return head, tail

    if isinstance(da_or_list, xr.DataArray):
        return one(da_or_list)
    heads, tails = [], []
    for da in da_or_list:
        h, t = one(da)
        if h.sizes["time"]:
            heads.append(h)
        if t.sizes["time"]:
            tails.append(t)
    return heads, tails


# ------------------------------------------------------------------------------------------ sources
@dataclass
class RadarSource:
    """A part of a radar archive, read on demand: ``files`` (one grid) and an optional time range.

    ``times`` = (start, end), half-open, applied to the times read from the files (None = open end);
    ``options`` go to :func:`skydiff.io.read_radar` (e.g. ``importer``); ``resample`` (minutes) resamples the
    series with :func:`skydiff.io.resample_time` (linear in time) after reading, e.g. MRMS' 2-min frames to 5 min.
    :class:`RadarSequences` reads each source once; :meth:`load` returns the DataArray.
    """

    name: str
    files: tuple[str, ...]
    times: tuple[Any, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    resample: float | None = None

    def load(self, timestep: float | None = None) -> xr.DataArray:
        from ..io import read_radar

        if not self.files:
            raise ReadError(f"source {self.name!r} has no files")
        opts = dict(self.options)
        if timestep is not None:
            opts["timestep"] = timestep
        if self.resample is not None:
            opts.pop("timestep", None)  # the files are at their own step; the resampled series is at the new one
        da = read_radar(list(self.files), **opts)
        if self.resample is not None:
            from ..io import resample_time

            da = resample_time(da, self.resample)
        if self.times is not None:
            a, b = _range(self.times)
            da = select_times(da, a, b)
        return da

    def __repr__(self) -> str:
        rng = "" if self.times is None else f", times=[{self.times[0]}, {self.times[1]})"
        rs = "" if self.resample is None else f", resampled to {self.resample:g} min"
        return f"RadarSource({self.name!r}, {len(self.files)} files{rng}{rs})"


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _source_items(source: Any) -> list[Any]:
    if isinstance(source, (xr.DataArray, RadarSource)) or _is_path(source):
        return [source]
    if isinstance(source, dict):
        raise InputError("pass one split's list (e.g. shared_split(...)['train']), not the whole dict")
    if isinstance(source, (list, tuple)):
        items = list(source)
        if not items:
            raise InputError("source is empty: give a DataArray, a list of them, RadarSource parts or file paths")
        if all(_is_path(x) for x in items):
            return [items]  # the files of one series
        for x in items:
            ok = isinstance(x, (xr.DataArray, RadarSource)) or _is_path(x) or (
                isinstance(x, (list, tuple)) and all(_is_path(p) for p in x))
            if not ok:
                raise InputError(f"unsupported source item of type {type(x).__name__}: use DataArrays, "
                                 "RadarSource parts, paths or lists of paths")
        return items
    raise InputError(f"unsupported source of type {type(source).__name__}: use a DataArray (read_radar), a list of "
                     "them, RadarSource parts or file paths")


def _load_item(item: Any, timestep: float | None) -> tuple[str, xr.DataArray]:
    if isinstance(item, xr.DataArray):
        return str(item.name or "DataArray"), item
    if isinstance(item, RadarSource):
        return item.name, item.load(timestep)
    from ..io import read_radar

    kw = {} if timestep is None else {"timestep": timestep}
    name = str(item) if _is_path(item) else f"{len(item)} files from {item[0]}"
    return name, read_radar(item if _is_path(item) else [str(p) for p in item], **kw)


def _frames_of(da: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """(times, values view (T, H, W)) of a DataArray in read_radar's layout."""
    times = _time_values(da)
    if da.ndim != 3 or "time" not in da.dims:
        raise ShapeError(f"expected a DataArray with dims (time, y, x), got dims {da.dims}")
    if da.dims[0] != "time":
        others = [d for d in da.dims if d != "time"]
        da = da.transpose("time", *others)
    units = str(da.attrs.get("units", "mm/h"))
    if not is_rain_rate(units):
        raise InputError(f"radar sequences must be rain rates in mm/h, the DataArray {da.name or ''} has units "
                         f"{units!r} (skydiff.io.read_radar converts reflectivity and accumulations)")
    values = np.asarray(da.values)
    low = np.nanmin(values, initial=0.0)  # one pass; 0 for no data at all
    if low < 0:
        raise InputError(f"radar sequences must be rain rates >= 0 mm/h, found {float(low):.3g}")
    if not np.isfinite(np.nanmax(values, initial=0.0)):
        raise InputError("radar sequences hold infinite rain rates (mark missing data as NaN)")
    return times, values


def _step_ns(da: xr.DataArray, times: np.ndarray, timestep: float | None) -> int | None:
    step = timestep
    if step is None:
        v = da.attrs.get("timestep")
        try:
            step = float(v) if v is not None and math.isfinite(float(v)) and float(v) > 0 else None
        except (TypeError, ValueError):
            step = None
    if step is None and times.size > 1:
        d = np.diff(times).astype(np.int64)
        d = d[d > 0]
        if d.size:
            vals, counts = np.unique(d, return_counts=True)
            return int(vals[np.argmax(counts)])
    return None if step is None else int(round(float(step) * 60e9))


def _regular_starts(times: np.ndarray, step_ns: int | None, length: int, stride: int) -> tuple[np.ndarray, int]:
    """Start indices of windows of ``length`` frames exactly ``step_ns`` apart, every ``stride`` within each run.

    Also returns the length of the longest regular run.
    """
    n = times.size
    if n == 0:
        return np.zeros(0, np.int64), 0
    if n == 1 or step_ns is None:
        return (np.zeros(1, np.int64) if length == 1 else np.zeros(0, np.int64)), 1
    bad = (np.diff(times).astype(np.int64) != step_ns).astype(np.int64)
    cb = np.concatenate([[0], np.cumsum(bad)])
    run_starts = np.concatenate([[0], np.flatnonzero(bad) + 1])
    run_ends = np.concatenate([run_starts[1:], [n]])
    longest = int((run_ends - run_starts).max())
    if length > n:
        return np.zeros(0, np.int64), longest
    s = np.arange(n - length + 1)
    ok = cb[s + length - 1] - cb[s] == 0
    ok &= (s - run_starts[cb[s]]) % stride == 0
    return s[ok], longest


def _integral(img: np.ndarray) -> np.ndarray:
    ii = np.zeros((img.shape[0] + 1, img.shape[1] + 1), np.int64)
    np.cumsum(np.cumsum(img, axis=0, dtype=np.int64), axis=1, out=ii[1:, 1:])
    return ii


def _box(ii: np.ndarray, rows: np.ndarray, cols: np.ndarray, h: int, w: int) -> np.ndarray:
    return ii[rows + h, cols + w] - ii[rows, cols + w] - ii[rows + h, cols] + ii[rows, cols]


def _crop_hw(crop: Any) -> tuple[int, int] | None:
    if crop is None:
        return None
    if isinstance(crop, (int, np.integer)) and not isinstance(crop, bool):
        h = w = int(crop)
    elif isinstance(crop, (tuple, list)) and len(crop) == 2:
        h, w = (int(c) for c in crop)
    else:
        raise InputError(f"crop must be None, an int or (height, width), got {crop!r}")
    if h < 1 or w < 1:
        raise InputError(f"crop sizes must be positive, got {crop!r}")
    return h, w


@dataclass
class _Src:
    name: str
    data: np.ndarray  # (T, H, W) float32, transformed, NaN = no data
    times: np.ndarray  # datetime64[ns]
    offset: tuple[int, int]  # (row, col) of data[.., 0, 0] in the full grid
    positions: np.ndarray  # (P, 2) fixed crop positions (eval) / anchors (random)
    candidates: np.ndarray  # flat indices of random crop positions (random mode)
    n_cols: int  # W - w + 1
    info: dict[str, Any]
    teacher: dict[int, np.ndarray] = field(default_factory=dict)  # window start -> (2, H, W) float16 flow


# ------------------------------------------------------------------------------------------ RadarSequences
class RadarSequences(Dataset):
    """Windows of ``n_in + n_out`` regular frames from radar series, held in memory (see the module docstring).

    Parameters
    ----------
    source
        A DataArray from :func:`skydiff.io.read_radar`; a list of them (several events or sources, each windowed
        separately); :class:`RadarSource` parts (e.g. ``shared_split(...)["train"]``); a path / glob / directory,
        or a list of paths (read together as one series). Each source is read once; the caller's arrays are not
        modified.
    n_in, n_out
        Input frames (>= 1) and target frames (>= 0).
    crop
        None (whole frames), an int or (h, w).
    random_crop
        True: a random crop per ``__getitem__`` (training; among positions whose time-typical valid fraction
        reaches ``min_valid_fraction``, checked on the actual window, up to ``max_tries`` draws, then a known
        good position). False: fixed crops, see ``eval_crops``.
    eval_crops
        With fixed crops: "centre" (one crop per window, centred on the valid data's bounding box; for the KNMI
        grid this is the NL-50 cut-out rows 284:572, cols 225:513) or "grid" (non-overlapping tiles, the tiling
        centred; each (window, tile) pair is one sample).
    transform
        "log" (default, ln(R + 0.01)), "dbr", "nl50" or None; see :func:`apply_transform`.
    stride
        Step between window starts within each regular run.
    min_rain_fraction, rain_threshold
        Keep windows whose targets have at least this fraction of valid pixels >= rain_threshold (mm/h).
    min_valid_fraction
        Least fraction of valid pixels of a crop over the window's frames (default 0.9 with a crop, else 0).
    times
        (start, end) or slice: use only frames with ``start <= time < end`` (a split filter).
    timestep
        Minutes between frames (default: the source's ``attrs["timestep"]``, else the most common difference).
    seed
        Random crops are drawn from ``numpy.random.default_rng([seed, epoch, index])``: deterministic, independent
        of DataLoader workers; call :meth:`set_epoch` each epoch for new crops. ``seed=None``: fresh randomness.
    nan_value
        Value written where there is no data, in the transformed space (the mask says where). Default: the
        transform of 0 mm/h (dry, as :meth:`predict` reads no data; a plain 0 would be 0.99 mm/h in log space).
    return_mask
        Include the ``mask`` entry.
    trim
        Keep only the bounding box of pixels valid in some frame (saves memory, ~3× on KNMI); only with a crop.
    sampling
        With random crops: ``"window"`` (default) — one sample per window and epoch, the crop anywhere with enough
        valid data (the rain filter applies to the whole frame); ``"tiles"`` — one sample per (window, tile of the
        centred crop grid) whose targets pass the valid-data and rain filters, the crop drawn within half a crop
        of its tile. ``"tiles"`` puts the crops where it rains and uses large grids fully: a CONUS MRMS frame
        holds ~1,500 tiles of 128 × 128, most of them dry.
    teacher
        An optical-flow method (e.g. ``"lk"``, :func:`skydiff.motion.estimate`): its motion of the last
        ``teacher_frames`` input frames of each window, computed once on the **whole** (trimmed) grid of the
        source, not on the crop, and returned cropped like the frames as ``sample["teacher"]`` (2, h, w) in px per
        step (NaN where it is not available). A motion target for sparse rain: on a 128 × 128 crop holding a few
        small light-rain cells, flow estimated on the crop alone is unreliable (tens of px per step on nearly dry
        crops), while the whole composite gives it the motion of all the rain around. Sources larger than
        ``teacher_max_pixels`` get no teacher (all NaN): LK on a CONUS MRMS frame takes minutes. Costs ~1 s per
        window on the KNMI grid, once; held in memory as float16. Not with ``augment`` (the flow would have to
        be rotated too).
    teacher_frames, teacher_kwargs, teacher_max_pixels
        Frames the teacher uses (default: the method's, 3 for LK), keyword arguments of its method (e.g.
        ``{"grid_stride": 4}`` for LK, as the shipped LUPIN runs it) and the largest grid it runs on.
    augment
        With random crops: also apply one of the 8 symmetries of the square (rotations by 90° and mirror images;
        the 4 that keep the shape for non-square crops), drawn like the crop. Rain moving east becomes rain moving
        north etc., which is physically as plausible: 8× more distinct training samples from a small archive.

    Raises
    ------
    InputError
        Bad arguments, or no window fits (the message gives frame counts, the longest regular run, and how many
        windows the valid-data and rain filters removed).
    ShapeError
        A crop larger than a source's grid.
    """

    def __init__(
        self,
        source: Any,
        n_in: int,
        n_out: int,
        *,
        crop: int | tuple[int, int] | None = None,
        random_crop: bool = True,
        eval_crops: str = "centre",
        transform: str | None = "log",
        stride: int = 1,
        min_rain_fraction: float = 0.0,
        rain_threshold: float = 0.1,
        min_valid_fraction: float | None = None,
        times: Any = None,
        timestep: float | None = None,
        seed: int | None = 0,
        nan_value: float | None = None,
        return_mask: bool = True,
        max_tries: int = 10,
        trim: bool = True,
        augment: bool = False,
        sampling: str = "window",
        teacher: str | None = None,
        teacher_frames: int | None = None,
        teacher_kwargs: Mapping[str, Any] | None = None,
        teacher_max_pixels: int = 4_000_000,
    ) -> None:
        super().__init__()
        for nm, v, lo in (("n_in", n_in, 1), ("n_out", n_out, 0), ("stride", stride, 1)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise InputError(f"{nm} must be an integer >= {lo}, got {v!r}")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.stride = int(stride)
        self.length = self.n_in + self.n_out
        self.crop = _crop_hw(crop)
        self.random_crop = bool(random_crop) and self.crop is not None
        if eval_crops not in ("centre", "center", "grid"):
            raise InputError(f"eval_crops must be 'centre' or 'grid', got {eval_crops!r}")
        self.eval_crops = "grid" if eval_crops == "grid" else "centre"
        if sampling not in ("window", "tiles"):
            raise InputError(f"sampling must be 'window' or 'tiles', got {sampling!r}")
        self.sampling = sampling
        self.transform = _transform_name(transform)
        if not 0.0 <= float(min_rain_fraction) <= 1.0:
            raise InputError(f"min_rain_fraction must be in [0, 1], got {min_rain_fraction}")
        self.min_rain_fraction = float(min_rain_fraction)
        self.rain_threshold = float(rain_threshold)
        if min_valid_fraction is None:
            min_valid_fraction = 0.9 if self.crop is not None else 0.0
        if not 0.0 <= float(min_valid_fraction) <= 1.0:
            raise InputError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")
        self.min_valid_fraction = float(min_valid_fraction)
        self.time_range = None if times is None else _range(times)
        if timestep is not None and not (float(timestep) > 0 and math.isfinite(float(timestep))):
            raise InputError(f"timestep must be a positive number of minutes, got {timestep!r}")
        self.seed = seed
        self.epoch = 0
        # default: the transform of 0 mm/h, i.e. dry, as predict() reads no data (0 in log space is 0.99 mm/h)
        self.nan_value = float(apply_transform(np.float64(0.0), self.transform) if nan_value is None else nan_value)
        self.return_mask = bool(return_mask)
        self.max_tries = max(1, int(max_tries))
        self.trim = bool(trim)
        self.augment = bool(augment) and self.random_crop
        self.teacher = str(teacher).lower() if teacher else None
        self.teacher_max_pixels = int(teacher_max_pixels)
        if self.teacher is not None:
            from ..motion import methods
            from .interface import default_motion_frames

            if self.teacher not in methods():
                raise InputError(f"unknown teacher {teacher!r}; available: {', '.join(methods())}")
            if self.augment:
                raise InputError("teacher and augment cannot be combined (the flow is not rotated with the crop)")
            if teacher_kwargs is not None and not isinstance(teacher_kwargs, Mapping):
                raise InputError(f"teacher_kwargs must be a mapping of keyword arguments, got {teacher_kwargs!r}")
            self.teacher_kwargs = dict(teacher_kwargs or {})
            self.teacher_frames = int(teacher_frames or default_motion_frames(self.teacher))
            if not 2 <= self.teacher_frames <= self.n_in:
                raise InputError(f"teacher_frames must be in [2, n_in={self.n_in}], got {self.teacher_frames}")

        self._sources: list[_Src] = []
        index: list[np.ndarray] = []
        for item in _source_items(source):
            name, da = _load_item(item, timestep)
            src, idx = self._prepare(name, da, timestep)
            del da
            k = len(self._sources)
            self._sources.append(src)
            if idx.size:
                index.append(np.column_stack([np.full(len(idx), k, np.int64), idx]))
        self._index = np.concatenate(index) if index else np.zeros((0, 3), np.int64)
        steps = [(s.name, s.info["step_min"]) for s in self._sources if s.info.get("samples") and s.info["step_min"]]
        if timestep is None and len({v for _, v in steps}) > 1:
            raise InputError("the sources are at different time steps (" + ", ".join(
                f"{k}: {v:g} min" for k, v in steps) + "): a window's step would depend on its source; "
                "resample them to one (skydiff.io.resample_time) or pass timestep= (minutes) to keep windows of "
                "frames that far apart")
        if len(self._index) == 0:
            lines = "; ".join(
                f"{s.name}: {s.info['frames']} frames, longest regular run {s.info['longest_run']}, "
                f"{s.info['regular_windows']} regular windows, {s.info['dropped_valid']} dropped for valid data "
                f"< {self.min_valid_fraction:g}, {s.info['dropped_rain']} for rain < {self.min_rain_fraction:g}"
                + (f" ({s.info['note']})" if s.info.get("note") else "")
                for s in self._sources)
            raise InputError(f"no window of {self.n_in} + {self.n_out} = {self.length} regular frames fits: {lines}")

    # -------------------------------------------------------------------------------------- preparation
    def _prepare(self, name: str, da: xr.DataArray, timestep: float | None) -> tuple[_Src, np.ndarray]:
        times, vals = _frames_of(da)
        order = np.argsort(times, kind="stable")
        if np.any(times[order][1:] == times[order][:-1]):
            raise InputError(f"{name}: duplicate times")
        keep = order
        if self.time_range is not None:
            a, b = self.time_range
            t = times[order]
            m = np.ones(t.size, bool)
            if a is not None:
                m &= t >= a
            if b is not None:
                m &= t < b
            keep = order[m]
        times = times[keep]
        step = _step_ns(da, times if times.size > 1 else _time_values(da), timestep)
        T = times.size
        H, W = vals.shape[1:]
        if self.crop is not None:
            h, w = self.crop
            if h > H or w > W:
                raise ShapeError(f"crop {h}×{w} is larger than the grid of {name} ({H}×{W})")
        else:
            h, w = H, W
        # bounding box of pixels valid in some frame, grown to the crop size
        r0, r1, c0, c1 = 0, H, 0, W
        if self.trim and self.crop is not None and T:
            any_valid = np.zeros((H, W), bool)
            for k in keep:
                any_valid |= ~np.isnan(vals[k])
            rows, cols = np.flatnonzero(any_valid.any(1)), np.flatnonzero(any_valid.any(0))
            if rows.size:
                r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1

            def grow(a0: int, a1: int, size: int, full: int) -> tuple[int, int]:
                if a1 - a0 >= size:
                    return a0, a1
                a0 = max(0, min(a0 - (size - (a1 - a0)) // 2, full - size))
                return a0, a0 + size

            r0, r1 = grow(int(r0), int(r1), h, H)
            c0, c1 = grow(int(c0), int(c1), w, W)
        view = vals[:, r0:r1, c0:c1]
        data = np.empty((T, r1 - r0, c1 - c0), np.float32)
        for i, k in enumerate(keep):
            data[i] = view[k]
        del view, vals
        H, W = data.shape[1:]

        # per-frame statistics on the raw rain rates, then transform in place
        valid_sum = np.zeros((H, W), np.int64)
        frame_valid = np.zeros(T, np.int64)
        frame_rain = np.zeros(T, np.int64)
        for t in range(T):
            v = ~np.isnan(data[t])
            valid_sum += v
            frame_valid[t] = np.count_nonzero(v)
            frame_rain[t] = np.count_nonzero(data[t] >= self.rain_threshold)

        # crop positions
        info: dict[str, Any] = {"name": name, "frames": T, "shape": (H, W), "offset": (int(r0), int(c0))}
        nr, nc = H - h + 1, W - w + 1
        candidates = np.zeros(0, np.int64)
        if self.crop is None:
            positions = np.zeros((1, 2), np.int64)
        else:
            typical = valid_sum * 2 >= max(T, 1)  # valid in at least half of the frames
            ii = _integral(typical)
            need = self.min_valid_fraction * h * w
            rr, cc = np.divmod(np.arange(nr * nc, dtype=np.int64), nc)
            frac_ok = _box(ii, rr, cc, h, w) >= need - 1e-9
            candidates = np.flatnonzero(frac_ok)
            cr, ccol = (H - h) // 2, (W - w) // 2
            if frac_ok[cr * nc + ccol] or candidates.size == 0:
                centre = (cr, ccol)
            else:
                d = (rr[candidates] - cr) ** 2 + (cc[candidates] - ccol) ** 2
                j = candidates[np.argmin(d)]
                centre = (int(j // nc), int(j % nc))
            grid: list[tuple[int, int]] = []
            if self.eval_crops == "grid" or self.random_crop:
                gr, gc = H // h, W // w
                orow, ocol = (H - gr * h) // 2, (W - gc * w) // 2
                grid = [(orow + i * h, ocol + j * w) for i in range(gr) for j in range(gc)]
            if self.random_crop and self.sampling == "tiles":
                pos = grid or [centre]
            elif self.random_crop:
                pos = [centre] + [g for g in grid if g != centre]
            elif self.eval_crops == "grid":
                pos = grid
            else:
                pos = [centre]
            positions = np.asarray(pos, np.int64).reshape(-1, 2)
        P = len(positions)

        # valid and rainy pixel counts per frame and position
        pv = np.zeros((T + 1, P), np.int64)
        pr = np.zeros((T + 1, P), np.int64)
        for t in range(T):
            f = data[t]
            for p, (r, c) in enumerate(positions):
                sub = f[r:r + h, c:c + w]
                pv[t + 1, p] = np.count_nonzero(~np.isnan(sub))
                pr[t + 1, p] = np.count_nonzero(sub >= self.rain_threshold)
        np.cumsum(pv, axis=0, out=pv)
        np.cumsum(pr, axis=0, out=pr)
        fv = np.concatenate([[0], np.cumsum(frame_valid)])
        fr = np.concatenate([[0], np.cumsum(frame_rain)])

        _transform_inplace(data, self.transform)

        all_starts, longest = _regular_starts(times, step, self.length, 1)
        if self.length > 1 and step is None:
            info["note"] = "fewer than two frames: no time step"
        info.update(longest_run=longest, regular_windows=int(all_starts.size),
                    step_min=None if step is None else step / 60e9)
        starts = all_starts if self.stride == 1 else _regular_starts(times, step, self.length, self.stride)[0]
        L = self.length
        if self.n_out > 0:
            ta, tb = starts + self.n_in, starts + L
        else:
            ta, tb = starts, starts + L
        valid_ok = (pv[starts + L] - pv[starts]) >= self.min_valid_fraction * L * h * w - 1e-9  # (S, P)
        # a frame without any data (an outage stored as a NaN field) would be fed to the network as dry rain, and the
        # window-wide fraction above lets one such frame in ten through: such windows are dropped
        empty = np.concatenate([[0], np.cumsum(frame_valid == 0)])
        valid_ok &= ((empty[starts + L] - empty[starts]) == 0)[:, None]
        info["frames_without_data"] = int(empty[-1])
        if self.min_rain_fraction > 0:
            def rain_ok(rain: np.ndarray, valid: np.ndarray) -> np.ndarray:
                return (rain >= self.min_rain_fraction * valid - 1e-9) & (valid > 0)
        else:
            def rain_ok(rain: np.ndarray, valid: np.ndarray) -> np.ndarray:
                return np.ones(rain.shape, bool)
        if self.random_crop and self.sampling == "window":
            any_ok = valid_ok.any(1)
            anchor = np.argmax(valid_ok, axis=1)
            r_ok = rain_ok(fr[tb] - fr[ta], fv[tb] - fv[ta])
            keep_w = any_ok & r_ok
            idx = np.column_stack([starts[keep_w], anchor[keep_w]])
            info["dropped_valid"] = int((~any_ok).sum())
            info["dropped_rain"] = int((any_ok & ~r_ok).sum())
        else:
            r_ok = rain_ok(pr[tb] - pr[ta], pv[tb] - pv[ta])
            both = valid_ok & r_ok
            s_i, p_i = np.nonzero(both)
            idx = np.column_stack([starts[s_i], p_i])
            info["dropped_valid"] = int((~valid_ok).sum())
            info["dropped_rain"] = int((valid_ok & ~r_ok).sum())
        info["samples"] = int(len(idx))
        src = _Src(name=name, data=data, times=times, offset=(int(r0), int(c0)), positions=positions,
                   candidates=candidates, n_cols=nc, info=info)
        if self.teacher is not None and len(idx):
            src.teacher = self._teacher_flows(data, np.unique(idx[:, 0]), name)
            info["teacher_windows"] = len(src.teacher)
        return src, idx.astype(np.int64).reshape(-1, 2)

    def _teacher_flows(self, data: np.ndarray, starts: np.ndarray, name: str) -> dict[int, np.ndarray]:
        """Whole-grid optical flow of the last ``teacher_frames`` inputs of each window start (float16)."""
        from ..motion import estimate

        if data.shape[1] * data.shape[2] > self.teacher_max_pixels:
            warnings.warn(f"{name}: grid {data.shape[1]}×{data.shape[2]} larger than teacher_max_pixels="
                          f"{self.teacher_max_pixels}: no motion teacher for its windows", stacklevel=3)
            return {}
        from tqdm.auto import tqdm

        out: dict[int, np.ndarray] = {}
        k = self.teacher_frames
        # one bar per source: a whole-grid 4D-Var takes seconds per window, and this runs before training starts
        for s in tqdm(starts.tolist(), desc=f"{name}: {self.teacher} motion of each window", unit="window",
                      leave=False, mininterval=5.0):
            frames = inverse_transform(data[s + self.n_in - k: s + self.n_in], self.transform)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = np.asarray(estimate(np.asarray(frames, np.float32), self.teacher, **self.teacher_kwargs),
                               np.float32)
            out[int(s)] = v.astype(np.float16)
        return out

    # -------------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(len(self._index))

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of another epoch (deterministic given ``seed``)."""
        self.epoch = int(epoch)

    @property
    def sources(self) -> list[dict[str, Any]]:
        """Per source: name, frames, trimmed shape, offset, regular windows, samples, windows dropped by filters."""
        return [dict(s.info) for s in self._sources]

    @property
    def nbytes(self) -> int:
        """Memory held by the frames (bytes)."""
        return int(sum(s.data.nbytes for s in self._sources))

    def __repr__(self) -> str:
        crop = "full frames" if self.crop is None else (
            f"{self.crop[0]}×{self.crop[1]} {'random' if self.random_crop else self.eval_crops} crops")
        return (f"RadarSequences({len(self)} samples, {self.n_in} → {self.n_out}, {crop}, "
                f"transform={self.transform!r}, {len(self._sources)} sources, {self.nbytes / 2**20:.0f} MiB)")

    def _window_slice(self, src: _Src, s: int, r: int, c: int) -> np.ndarray:
        h, w = self.crop if self.crop is not None else src.data.shape[1:]
        return src.data[s:s + self.length, r:r + h, c:c + w]

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self._index)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"index {i} out of range for {n} samples")
        k, s, p = (int(v) for v in self._index[i])
        src = self._sources[k]
        invalid = out = None
        if self.random_crop and src.candidates.size:
            h, w = self.crop  # type: ignore[misc]
            allowed_bad = self.length * h * w * (1.0 - self.min_valid_fraction) + 1e-9
            rng = np.random.default_rng(None if self.seed is None else [int(self.seed), self.epoch, i])
            r = c = -1
            H, W = src.data.shape[1:]
            r0, c0 = (int(v) for v in src.positions[p])
            for _ in range(self.max_tries):
                if self.sampling == "tiles":  # within half a crop of the sample's tile
                    rr = min(max(r0 + int(rng.integers(-(h // 2), h // 2 + 1)), 0), H - h)
                    cc = min(max(c0 + int(rng.integers(-(w // 2), w // 2 + 1)), 0), W - w)
                else:
                    j = int(src.candidates[rng.integers(src.candidates.size)])
                    rr, cc = divmod(j, src.n_cols)
                x = np.array(self._window_slice(src, s, rr, cc), dtype=np.float32, copy=True)
                bad = np.isnan(x)
                if np.count_nonzero(bad) <= allowed_bad:
                    r, c, invalid, out = rr, cc, bad, x
                    break
            if r < 0:
                r, c = (int(v) for v in src.positions[p])
        else:
            r, c = (int(v) for v in src.positions[p])
        if out is None:
            out = np.array(self._window_slice(src, s, r, c), dtype=np.float32, copy=True)
            invalid = np.isnan(out)
        if self.augment:
            rng_a = np.random.default_rng(None if self.seed is None else [int(self.seed), self.epoch, i, 1])
            square = out.shape[-1] == out.shape[-2]
            k = int(rng_a.integers(4)) if square else 2 * int(rng_a.integers(2))
            flip = bool(rng_a.integers(2))
            out, invalid = (np.rot90(a, k, axes=(-2, -1)) for a in (out, invalid))
            if flip:
                out, invalid = out[..., ::-1], invalid[..., ::-1]
            out, invalid = np.ascontiguousarray(out), np.ascontiguousarray(invalid)
        if np.count_nonzero(invalid):
            out[invalid] = self.nan_value
        sample: dict[str, Any] = {
            "inputs": torch.from_numpy(out[: self.n_in]),
            "targets": torch.from_numpy(out[self.n_in:]),
        }
        if self.return_mask:
            sample["mask"] = torch.from_numpy(np.logical_not(invalid))
        if self.teacher is not None:
            h, w = out.shape[-2:]
            flow = src.teacher.get(s)
            sample["teacher"] = (torch.full((2, h, w), float("nan")) if flow is None
                                 else torch.from_numpy(flow[:, r:r + h, c:c + w].astype(np.float32)))
        sample["time"] = _iso(src.times[s + self.n_in - 1])
        sample["source"] = k
        sample["origin"] = torch.tensor([src.offset[0] + r, src.offset[1] + c])
        return sample

    def to_rainrate(self, x: Any) -> Any:
        """Invert this dataset's transform (model output → mm/h)."""
        return inverse_transform(x, self.transform)


# ------------------------------------------------------------------------------------------ shared split
_NAME_TIME = re.compile(r"(?<!\d)(\d{12})(?!\d)")


def _name_time(path: str | os.PathLike[str]) -> np.datetime64 | None:
    m = _NAME_TIME.search(os.path.basename(os.fspath(path)))
    if not m:
        return None
    try:
        return np.datetime64(_dt.datetime.strptime(m.group(1), "%Y%m%d%H%M"), "ns")
    except ValueError:
        return None


def _timed_files(folder: Path, pattern: str) -> list[tuple[np.datetime64, str]]:
    out = []
    for p in sorted(folder.glob(pattern)):
        t = _name_time(p)
        if t is not None and p.is_file() and not p.name.startswith("."):
            out.append((t, str(p)))
    return sorted(out)


def _part(name: str, files: list[tuple[np.datetime64, str]], start: Any = None, end: Any = None) -> RadarSource | None:
    a = None if start is None else _dt64(start)
    b = None if end is None else _dt64(end)
    sel = [f for t, f in files if (a is None or t >= a) and (b is None or t < b)]
    if not sel:
        return None
    times = None if a is None and b is None else (None if a is None else _iso(a), None if b is None else _iso(b))
    return RadarSource(name=name, files=tuple(sel), times=times)


_KNMI2010_TEST_START = np.datetime64("2010-08-26T05:00", "ns")  # the shared data README's split of that event


def shared_split(data_dir: str | os.PathLike[str] | None = None, *, val_fraction: float = 0.2,
                 load: bool = False, mrms: bool = False) -> dict[str, list[Any]]:
    """The suggested train / validation / test split of the shared real data (data README, "Suggested use").

    ``data_dir`` defaults to ``$SKYDIFF_DATA``. Returns ``{"train": [...], "validation": [...], "test": [...]}``
    of :class:`RadarSource` parts (nothing is read; give a list to :class:`RadarSequences`, which reads each part
    once), or of DataArrays with ``load=True`` (each part read once; about 2 GB for everything, mostly the 2021
    evenings on the full 765 × 700 grid; the parts are trimmed when :class:`RadarSequences` reads them).

    ============ ==========================================================================================
    train        KNMI 2010-08-26 00:00 up to the validation tail; FMI 20160928 up to its tail; KNMI January
                 2021 evenings 01-08 (one part per evening)
    validation   the last ``val_fraction`` of the frames (``ceil``) of KNMI 2010 before 05:00 (04:00-04:55)
                 and of FMI 20160928 (17:25-18:00); the last ``val_fraction`` of the January 2021 *evenings*
                 (09 and 10, whole 36-frame events: a 20 % tail of a 36-frame evening, 8 frames, would hold no
                 window of 9 or more frames)
    test         FMI 20170509; KNMI 2010 from 05:00 UTC; KNMI February 2021 (one part per evening)
    ============ ==========================================================================================

    Times are split half-open (``[start, end)``) on the times in the files, and the file lists are pre-filtered
    by the time stamps in the file names. Parts whose folders are missing are left out with a warning.
    The validation tails of single events are short: with ``n_in + n_out = 10`` KNMI 2010 gives 3 windows and FMI
    none.

    ``mrms=True`` adds NOAA MRMS 2019-06-10 00:00-01:10 (the whole 3500 × 7000 CONUS grid, thousands of storms)
    to the *training* part, resampled from its 2-min frames to 5-min steps: frames at 10-min multiples are
    copied, the :05 frames are the mean of the frames 1 min before and after (:func:`skydiff.io.resample_time`,
    linear in time) — 15 frames. Its 70 minutes hold only four 12-frame windows, too few to split a validation
    tail off by time, so MRMS adds no validation data (use crops by rain tile, ``RadarSequences(sampling="tiles")``,
    to draw its storms). Reading it takes ~30 s and ~3.5 GB of memory at the peak.
    """
    given = data_dir if data_dir is not None else os.environ.get("SKYDIFF_DATA") or None
    root = Path(given if given is not None else "../shared/data").expanduser()  # the README's default
    if not (root / "radar").is_dir():
        where = (f"{root}" if given is not None
                 else f"../shared/data (SKYDIFF_DATA is unset; that default is relative to {os.getcwd()})")
        raise ReadError(f"shared data not found at {where}: pass data_dir or set SKYDIFF_DATA to the folder "
                        "holding radar/")
    if not 0.0 < float(val_fraction) < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}")
    split: dict[str, list[Any]] = {"train": [], "validation": [], "test": []}
    missing: list[str] = []

    def tail_start(files: list[tuple[np.datetime64, str]]) -> np.datetime64:
        k = _tail_count(len(files), float(val_fraction))
        return files[len(files) - k][0]

    def add(key: str, part: RadarSource | None) -> None:
        if part is not None:
            split[key].append(part)

    # KNMI 2010: train/validation before 05:00, test from 05:00
    k10 = _timed_files(root / "radar" / "KNMI" / "2010" / "08", "RAD_NL25_*.h5")
    if k10:
        cut = _KNMI2010_TEST_START
        before = [f for f in k10 if f[0] < cut]
        if before:
            v0 = tail_start(before)
            add("train", _part("KNMI 2010-08-26 train", k10, None, v0))
            add("validation", _part("KNMI 2010-08-26 validation", k10, v0, cut))
        add("test", _part("KNMI 2010-08-26 test", k10, cut, None))
    else:
        missing.append("KNMI 2010")
    # FMI
    fmi = root / "radar" / "fmi" / "pgm"
    f16 = _timed_files(fmi / "20160928", "*.pgm*")
    if f16:
        v0 = tail_start(f16)
        add("train", _part("FMI 20160928 train", f16, None, v0))
        add("validation", _part("FMI 20160928 validation", f16, v0, None))
    else:
        missing.append("FMI 20160928")
    f17 = _timed_files(fmi / "20170509", "*.pgm*")
    if f17:
        add("test", _part("FMI 20170509", f17))
    else:
        missing.append("FMI 20170509")
    # KNMI 2021 evenings
    k21 = root / "radar" / "KNMI" / "2021"
    jan = sorted(p for p in k21.glob("2021-01-*") if p.is_dir())
    feb = sorted(p for p in k21.glob("2021-02-*") if p.is_dir())
    n_val = _tail_count(len(jan), float(val_fraction))
    for i, d in enumerate(jan):
        add("validation" if i >= len(jan) - n_val else "train", _part(f"KNMI {d.name}", _timed_files(d, "*")))
    for d in feb:
        add("test", _part(f"KNMI {d.name}", _timed_files(d, "*")))
    if mrms:
        files = sorted((root / "radar" / "mrms").rglob("PrecipRate_*.grib2*"))
        if files:
            add("train", RadarSource("MRMS 2019-06-10 (5-min, linear in time)", tuple(str(f) for f in files),
                                     resample=5.0))
        else:
            missing.append("MRMS")
    if not jan:
        missing.append("KNMI January 2021")
    if not feb:
        missing.append("KNMI February 2021")
    if missing:
        warn(f"shared_split: not found under {root}: {', '.join(missing)}")
    if load:
        return {k: [p.load() for p in v] for k, v in split.items()}
    return split


# ------------------------------------------------------------------------------------------ NL-50 files
def _knmi_stamp(t: np.datetime64) -> str:
    d = np.datetime64(t, "ms").astype(_dt.datetime)
    return f"{d.day:02d}-{_MONTHS[d.month - 1]}-{d.year:04d};{d:%H:%M:%S}.{d.microsecond // 1000:03d}"


def _parse_stamp(s: Any) -> str:
    if isinstance(s, bytes):
        s = s.decode()
    s = str(s).strip()
    for fmt in ("%d-%b-%Y;%H:%M:%S.%f", "%d-%b-%Y;%H:%M:%S"):
        try:
            return _dt.datetime.strptime(s, fmt).isoformat(timespec="seconds")
        except ValueError:
            pass
    return s


def _expand_files(files_or_dirs: Any) -> list[str]:
    items = [files_or_dirs] if _is_path(files_or_dirs) else list(files_or_dirs)
    out: list[str] = []
    for it in items:
        if not _is_path(it):
            raise InputError(f"expected file or folder paths, got {type(it).__name__}")
        p = os.fspath(it)
        if os.path.isdir(p):
            names = [n for n in os.listdir(p) if not n.startswith(".")]
            found = sorted(os.path.join(p, n) for n in names if os.path.isfile(os.path.join(p, n)))
            if not found:  # (the files of a folder are read, not those of its subfolders)
                subs = sorted(n for n in names if os.path.isdir(os.path.join(p, n)))
                raise ReadError(f"folder {p} holds no files" + (
                    f", only the folder(s) {', '.join(subs[:5])}{' ...' if len(subs) > 5 else ''}: give those"
                    if subs else ""))
            out += found
        elif any(ch in p for ch in "*?["):
            hits = sorted(_glob.glob(p))
            if not hits:
                raise ReadError(f"no file matches {p}")
            out += hits
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise ReadError(f"no such file or folder: {p}")
    if not out:
        raise ReadError("no files to read")
    return list(dict.fromkeys(out))


def build_nl_dataset(
    files_or_dirs: Any,
    out_path: str | os.PathLike[str],
    *,
    crop: tuple[int, int, int, int] = NL50_CROP,
    n_in: int = 12,
    n_out: int = 6,
    rain_rule: float = 0.5,
    rain_frame: str = "target",
    wet_threshold: float = 0.1,
    split_time: Any = None,
    test_fraction: float = 0.25,
    timestep: float = 5.0,
    normalisation: float = NL50_NORMALISATION,
    compression_opts: int = 4,
    overwrite: bool = False,
    chunk_files: int = 288,
    importer: Any = None,
    **read_options: Any,
) -> dict[str, Any]:
    """Write radar sequences in the SmaAt-UNet / NL-50 HDF5 layout (reference §8.2-8.3); returns a summary.

    Rebuild rule (§8.3), step by step:

    1. Read the files with :func:`skydiff.io.read_radar` (``files_or_dirs``: files, folders, globs, or a
       DataArray already read), ``chunk_files`` at a time; mm/h → mm per 5 min (``R / 12``); no data (NaN, the
       KNMI 65535) → 0.
    2. Cut out ``crop = (row0, row1, col0, col1)`` (default the 288 × 288 KNMI cut-out rows 284:572, cols
       225:513, §8.4) and divide by ``normalisation`` (47.83): stored value × 47.83 = mm/5min, × 47.83 × 12 = mm/h.
    3. Sort by time and split into runs of exactly ``timestep`` (5) minutes: unlike SmaAt's
       ``create_datasets.py`` no window spans a data gap.
    4. Slide windows of ``n_in + n_out`` frames (stride 1) along each run; keep a window when its *rain frame*
       has at least ``rain_rule`` of its pixels wet (NL-50: 0.5, NL-20: 0.2). NL-50 counts pixels > 0 of KNMI's
       accumulation product, whose smallest positive value is 0.01 mm per 5 min = 0.12 mm/h; skydiff counts pixels
       above ``wet_threshold`` (default 0.1 mm/h), the same on that product, and meaningful on rain rates from
       reflectivity (e.g. KNMI's 2021 files), which are > 0 at every pixel with data. ``rain_frame="target"`` (default)
       tests the real target, the window's last frame; ``"smaat"`` reproduces SmaAt's off-by-one and tests the
       frame *after* the window (§8.2), which must then exist in the same run (the last window of a run is
       dropped).
    5. Split by time: windows ending before ``split_time`` → ``train``, windows starting at or after it →
       ``test``; windows straddling it are dropped (counted in the summary). ``split_time=None``: the time of
       frame ``round((1 - test_fraction) · T)`` (the last quarter of the frames is test, as SmaAt's 2019 of
       2016-2019).

    Layout (SmaAt's ``create_datasets.py``): groups ``train`` and ``test``, each with ``images`` (N, n_in + n_out,
    H, W) float32, gzip, one chunk per sample, and ``timestamps`` (N, n_in + n_out, 1) variable-length strings in
    KNMI's format ``'26-AUG-2010;03:15:00.000'``; root attributes describe the rule, units and normalisation
    (``skydiff_summary`` holds the returned summary as JSON). SmaAt's ``precipitation_maps_oversampled_h5`` and
    :class:`NLDataset` read it.

    The file is written to a temporary file in the target folder and moved into place with ``os.replace``; an
    existing ``out_path`` is only replaced with ``overwrite=True``, and never when it is one of the inputs. When
    no window passes the rule an :class:`~skydiff.errors.InputError` says how many regular windows there were and
    the best rain fraction; when only one split is empty a warning is issued and that split is written with N = 0.
    Data volume: 0.33 MB per 288 × 288 frame is held in memory (a month of 5-min frames ≈ 3 GB).
    """
    from ..io import read_radar

    out = Path(out_path)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass overwrite=True to replace it")
    for nm, v, lo in (("n_in", n_in, 1), ("n_out", n_out, 1), ("chunk_files", chunk_files, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"{nm} must be an integer >= {lo}, got {v!r}")
    if not 0.0 <= float(rain_rule) <= 1.0:
        raise InputError(f"rain_rule must be a fraction in [0, 1], got {rain_rule}")
    wet_threshold = check_rain_rate("wet_threshold", wet_threshold)
    if rain_frame not in ("target", "smaat"):
        raise InputError(f"rain_frame must be 'target' or 'smaat', got {rain_frame!r}")
    if not (isinstance(crop, (tuple, list)) and len(crop) == 4):
        raise InputError(f"crop must be (row0, row1, col0, col1), got {crop!r}")
    r0, r1, c0, c1 = (int(v) for v in crop)
    if not (0 <= r0 < r1 and 0 <= c0 < c1):
        raise InputError(f"crop must be (row0, row1, col0, col1) with row0 < row1 and col0 < col1, got {crop!r}")
    if not normalisation > 0:
        raise InputError(f"normalisation must be positive, got {normalisation}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    split_given = None if split_time is None else _dt64(split_time, "split_time")  # before reading any file
    step_ns = int(round(float(timestep) * 60e9))
    L = int(n_in) + int(n_out)
    scale = np.float32(1.0 / (12.0 * float(normalisation)))

    # 1-2: read, cut out, convert
    frames: list[np.ndarray] = []
    times: list[np.ndarray] = []
    n_missing = 0
    n_files = 0

    grids: list[dict[str, Any]] = []  # the first chunk's: every later one must match (read_radar checks within one)

    def take(da: xr.DataArray, first_file: str = "") -> None:
        nonlocal n_missing
        from ..io.radar import _array_grid, _grid_desc, _same_grid

        g = _array_grid(da)
        if not grids:
            grids.append(g)
            if tuple(crop) == tuple(NL50_CROP) and tuple(da.shape[-2:]) != (765, 700):
                warn(f"build_nl_dataset: the NL-50 crop (rows {r0}:{r1}, cols {c0}:{c1}) is a region of the KNMI "
                     f"765 x 700 grid; these frames are on a {da.shape[-2]} x {da.shape[-1]} grid, so it cuts another "
                     "region (pass crop= (CLI: --crop) for this radar)")
        elif not _same_grid(grids[0], g):
            raise InputError(f"mixed grids: the files from {first_file or 'one chunk'} on are on another grid "
                             f"({_grid_desc(g)}) than the first ones ({_grid_desc(grids[0])}); build one data set "
                             "per radar")
        t, v = _frames_of(da)
        H, W = v.shape[1:]
        if r1 > H or c1 > W:
            raise ShapeError(f"crop rows {r0}:{r1}, cols {c0}:{c1} does not fit the {H}×{W} grid")
        cut = np.array(v[:, r0:r1, c0:c1], dtype=np.float32)
        nan = np.isnan(cut)
        n_missing += int(nan.sum())
        cut[nan] = 0.0
        np.maximum(cut, 0, out=cut)
        cut *= scale
        frames.append(cut)
        times.append(t)

    if isinstance(files_or_dirs, xr.DataArray):
        take(files_or_dirs)
        n_files = len([s for s in str(files_or_dirs.attrs.get("source_files", "")).split("\n") if s])
    else:
        paths = _expand_files(files_or_dirs)
        if os.path.realpath(out) in {os.path.realpath(q) for q in paths}:  # before reading: never replace an input
            raise InputError(f"refusing to write {out}: it is one of the input files")
        n_files = len(paths)
        for i in range(0, len(paths), int(chunk_files)):
            take(read_radar(paths[i:i + int(chunk_files)], importer, **read_options), str(paths[i]))
    t_all = np.concatenate(times)
    imgs = np.concatenate(frames) if len(frames) > 1 else frames[0]
    del frames
    order = np.argsort(t_all, kind="stable")
    t_all, imgs = t_all[order], imgs[order]
    if np.any(t_all[1:] == t_all[:-1]):
        i = int(np.flatnonzero(t_all[1:] == t_all[:-1])[0])
        raise InputError(f"duplicate time {_iso(t_all[i])} in the input files")
    T = t_all.size

    # 3-4: regular windows and the rain rule
    wet = np.float32(float(wet_threshold)) * scale  # in the stored units
    frac = np.array([np.count_nonzero(f > wet) for f in imgs], np.float64) / float(imgs.shape[1] * imgs.shape[2])
    starts, longest = _regular_starts(t_all, step_ns, L, 1)
    if rain_frame == "target":
        tested = starts + L - 1
        ok_frame = np.ones(starts.size, bool)
    else:
        tested = starts + L
        inside = tested < T
        nxt = np.minimum(tested, T - 1)
        ok_frame = inside & ((t_all[nxt] - t_all[np.minimum(tested - 1, T - 1)]).astype(np.int64) == step_ns)
        tested = nxt
    passed = ok_frame & (frac[tested] >= float(rain_rule) - 1e-12) if starts.size else np.zeros(0, bool)
    kept = starts[passed]
    rule = (f"keep a window of {L} = {n_in} + {n_out} frames exactly {float(timestep):g} min apart when "
            f"{'its last (target) frame' if rain_frame == 'target' else 'the frame after it (SmaAt off-by-one)'} "
            f"has >= {float(rain_rule):g} of its {r1 - r0}×{c1 - c0} pixels > {float(wet_threshold):g} mm/h")
    if starts.size == 0:
        steps = np.diff(t_all).astype(np.int64) / 60e9
        found = f"; the frames are {float(np.median(steps)):g} min apart (median)" if steps.size else ""
        raise InputError(f"no window of {L} = {n_in} + {n_out} frames exactly {float(timestep):g} min apart: {T} "
                         f"frame(s), longest regular run {longest}{found}; give more frames, fewer n_in/n_out, "
                         "or the timestep of the data (timestep=; CLI: --timestep)")
    if kept.size == 0:
        best = float(frac[tested[ok_frame]].max()) if ok_frame.any() else float("nan")
        raise InputError(
            f"no sample passes the rule ({rule}): {T} frames, longest regular run {longest}, {starts.size} regular "
            f"windows, best rain fraction of a tested frame {best:.3f}; lower rain_rule or give more data")

    # 5: split by time
    if split_time is None:
        k = min(T - 1, max(1, int(round((1.0 - float(test_fraction)) * T))))
        split_at = t_all[k]
        cut = _KNMI2010_TEST_START
        if t_all[0] < cut <= t_all[-1] and split_at > cut:  # (an earlier split keeps the test part out of train)
            warn(f"build_nl_dataset: split at {_iso(split_at)} (the last {float(test_fraction):g} of the frames), but "
                 f"the frames span {_iso(cut)}, where the shared data's KNMI 2010 test part begins (data README): "
                 f"pass split_time='{_iso(cut)}' (--split-time) to keep it out of train")
    else:
        split_at = split_given
    first, last = t_all[kept], t_all[kept + L - 1]
    is_train, is_test = last < split_at, first >= split_at
    groups = {"train": kept[is_train], "test": kept[is_test]}
    straddling = int((~is_train & ~is_test).sum())
    for g, s in groups.items():
        if s.size == 0:
            warn(f"build_nl_dataset: the {g} split is empty (split at {_iso(split_at)}); it is written with 0 samples")

    def span(s: np.ndarray) -> list[str] | None:
        return None if s.size == 0 else [_iso(t_all[s[0]]), _iso(t_all[s[-1] + L - 1])]

    summary: dict[str, Any] = {
        "path": str(out),
        "layout": "SmaAt-UNet: train/images, train/timestamps, test/images, test/timestamps",
        "n_in": int(n_in), "n_out": int(n_out), "sequence_length": L,
        "rule": rule, "rain_rule": float(rain_rule), "rain_frame": rain_frame,
        "crop": [r0, r1, c0, c1], "shape": [r1 - r0, c1 - c0],
        "normalisation": float(normalisation),
        "units": f"mm per 5 min / {float(normalisation):g} (x {float(normalisation):g} x 12 = mm/h)",
        "timestep_min": float(timestep),
        "n_files": n_files, "n_frames": T, "longest_run": longest,
        "time_range": [_iso(t_all[0]), _iso(t_all[-1])],
        "missing_pixels_set_to_zero": n_missing,
        "regular_windows": int(starts.size), "kept": int(kept.size), "rejected_by_rule": int(starts.size - kept.size),
        "split_time": _iso(split_at), "dropped_straddling_split": straddling,
        "train": {"count": int(groups["train"].size), "time_range": span(groups["train"])},
        "test": {"count": int(groups["test"].size), "time_range": span(groups["test"])},
    }

    # write atomically
    import h5py

    from ..io.atomic import atomic_path

    H, W = r1 - r0, c1 - c0
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            for g, s in groups.items():
                grp = f.create_group(g)
                n = int(s.size)
                ds = grp.create_dataset("images", shape=(n, L, H, W), maxshape=(None, L, H, W), dtype="float32",
                                        chunks=(1, L, H, W), compression="gzip", compression_opts=int(compression_opts))
                ts = grp.create_dataset("timestamps", shape=(n, L, 1), maxshape=(None, L, 1),
                                        dtype=h5py.string_dtype(), chunks=(max(1, min(n, 1024)), L, 1),
                                        compression="gzip", compression_opts=int(compression_opts))
                for j, st in enumerate(s):
                    ds[j] = imgs[st:st + L]
                if n:
                    stamps = np.array([[_knmi_stamp(t_all[st + q]) for q in range(L)] for st in s], dtype=object)
                    ts[...] = stamps[..., None]
            f.attrs["title"] = "NL-50-style radar sequences (SmaAt-UNet layout), written by skydiff"
            f.attrs["units"] = summary["units"]
            f.attrs["normalisation"] = float(normalisation)
            f.attrs["n_in"] = int(n_in)
            f.attrs["n_out"] = int(n_out)
            f.attrs["rule"] = rule
            f.attrs["skydiff_summary"] = json.dumps(summary)
        os.chmod(tmp, 0o644)
        if out.exists() and not overwrite:  # appeared while we were writing
            raise InputError(f"{out} exists; pass overwrite=True to replace it")
    return summary


class NLDataset(Dataset):
    """Samples of an NL-50-style HDF5 file (SmaAt-UNet layout; :func:`build_nl_dataset` or the authors' files).

    ``split``: "train" or "test". ``n_in`` input frames, then ``n_out`` targets (default: the rest of each stored
    sequence). ``transform``: "nl50" (default: the stored values, mm/5min ÷ 47.83, as SmaAt-UNet trains), None
    (mm/h = stored × normalisation × 12, normalisation from the file's attributes, else 47.83), "log" or "dbr".
    Items: ``inputs`` (n_in, H, W) float32, ``targets`` (n_out, H, W), ``time`` (ISO string of the last input)
    and ``index``. The file is opened lazily in each process (DataLoader workers); ``in_memory=True`` reads the
    split once into RAM.
    """

    def __init__(self, path: str | os.PathLike[str], split: str = "train", n_in: int = 12, n_out: int | None = None,
                 *, transform: str | None = "nl50", in_memory: bool = False) -> None:
        super().__init__()
        import h5py

        if split not in ("train", "test"):
            raise InputError(f"split must be 'train' or 'test', got {split!r}")
        self.path, self.split = str(path), split
        self.transform = _transform_name(transform)
        try:
            with h5py.File(self.path, "r") as f:
                if split not in f or "images" not in f[split]:
                    raise ReadError(f"{self.path} has no {split}/images dataset (not the SmaAt-UNet layout)")
                shape = f[split]["images"].shape
                if len(shape) != 4:
                    raise ShapeError(f"{split}/images has shape {shape}; expected (N, frames, H, W) sequences")
                self.normalisation = float(f.attrs.get("normalisation", NL50_NORMALISATION))
                stamps = f[split]["timestamps"][...] if "timestamps" in f[split] else None
                data = np.asarray(f[split]["images"][...], np.float32) if in_memory else None
        except OSError as exc:
            if isinstance(exc, ReadError):
                raise
            raise ReadError(f"cannot read {self.path}: {exc}") from exc
        self.n_samples, self.seq_len = int(shape[0]), int(shape[1])
        self.grid = (int(shape[2]), int(shape[3]))  # (H, W) of the stored frames
        if isinstance(n_in, bool) or not isinstance(n_in, (int, np.integer)) or n_in < 1:
            raise InputError(f"n_in must be an integer >= 1, got {n_in!r}")
        n_out = self.seq_len - int(n_in) if n_out is None else n_out
        if isinstance(n_out, bool) or not isinstance(n_out, (int, np.integer)) or n_out < 0:
            raise InputError(f"n_out must be an integer >= 0, got {n_out!r}")
        if n_in + n_out > self.seq_len:
            raise InputError(f"n_in + n_out = {n_in + n_out} exceeds the {self.seq_len} frames stored per sample")
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.times = None if stamps is None else [_parse_stamp(s) for s in stamps[:, self.n_in - 1, 0]]
        # (first, last) stored frame time of each sample, as datetimes (None without readable timestamps): what a
        # split by time needs (nowcast.training's validation part of the train group)
        self.spans: list[tuple[_dt.datetime, _dt.datetime]] | None = None
        if stamps is not None and self.n_samples:
            try:
                self.spans = [(_dt.datetime.fromisoformat(_parse_stamp(a)), _dt.datetime.fromisoformat(_parse_stamp(b)))
                              for a, b in zip(stamps[:, 0, 0], stamps[:, -1, 0])]
            except ValueError:
                self.spans = None
        self._data = data
        self._file: Any = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.n_samples

    def _images(self) -> Any:
        if self._data is not None:
            return self._data
        if self._file is None or self._pid != os.getpid():
            import h5py

            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.split]["images"]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None

    def __getitem__(self, i: int) -> dict[str, Any]:
        i = int(i)
        if i < 0:
            i += self.n_samples
        if not 0 <= i < self.n_samples:
            raise IndexError(f"index {i} out of range for {self.n_samples} samples")
        x = np.asarray(self._images()[i, : self.n_in + self.n_out], dtype=np.float32)
        if self.transform != "nl50":
            x = x * np.float32(self.normalisation * 12.0)
            if self.transform is not None:
                x = np.asarray(apply_transform(x, self.transform), np.float32)
        x = np.ascontiguousarray(x)
        return {
            "inputs": torch.from_numpy(x[: self.n_in]),
            "targets": torch.from_numpy(x[self.n_in:]),
            "time": self.times[i] if self.times is not None else "",
            "index": i,
        }

    def __repr__(self) -> str:
        return f"NLDataset({self.path!r}, split={self.split!r}, {self.n_samples} samples, {self.n_in} → {self.n_out})"
