"""Resampling a radar series to another time step (e.g. MRMS' 2-min frames to the 5-min step of the nowcast models).

:func:`resample_time` builds a regular series at ``minutes`` from the frames of a :func:`~skydiff.io.read_radar`
DataArray: target times that exist are copied unchanged; the others are interpolated **linearly in time** between
the two frames that bracket them (``method="linear"``) or take the nearer frame (``method="nearest"``). Linear
interpolation of rain fields that move blends two positions of a cell (for MRMS' 2-min frames and a 5-min target,
the frames 1 min either side, half and half: a smear of about one minute of motion, ~0.5-1 km); it never invents
rain where neither frame has it and keeps totals. A target time whose two bracketing frames lie more than ``max_gap``
apart is in a gap: it is refused (:class:`~skydiff.errors.TimeGapError`) rather than bridged. A NaN (no data) in
either bracketing frame gives NaN with ``method="linear"``; ``"nearest"`` takes the nearer frame's value.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from ..errors import InputError, TimeGapError, warn

__all__ = ["resample_time"]


def resample_time(
    da: xr.DataArray,
    minutes: float,
    *,
    method: str = "linear",
    max_gap: float | None = None,
    start: Any = None,
) -> xr.DataArray:
    """Resample a ``(time, y, x)`` rain series to a regular ``minutes`` step.

    Parameters
    ----------
    da
        A DataArray from :func:`skydiff.io.read_radar` (strictly increasing ``time``).
    minutes
        The new time step in minutes (> 0).
    method
        ``"linear"`` (default): interpolate linearly in time between the bracketing frames; ``"nearest"``: the
        nearer frame (ties: the earlier one).
    max_gap
        Largest distance (minutes) between the two bracketing frames that may be bridged (default: twice the
        series' most common step). Target times inside a larger gap raise :class:`TimeGapError`.
    start
        First target time (default: the first frame time rounded *up* to a multiple of ``minutes`` since
        midnight, so that 5-min series land on :00, :05, ...). Targets run up to the last frame.

    Returns
    -------
    A new DataArray on the target times, float32, with the attributes of ``da`` plus ``timestep`` (the new step),
    ``resampled`` (what was done) and ``bridged`` (the target times filled across a gap of the input, i.e. between
    frames more than 1.5 of its usual steps apart, space-separated; a :class:`~skydiff.errors.SkydiffWarning` names
    them too). NaN (no data) in either bracketing frame gives NaN.

    Raises
    ------
    InputError
        Not a DataArray with a time axis, bad ``minutes`` / ``method``, fewer than two frames, no target time.
    TimeGapError
        Unsorted or duplicate times, or a target time inside a gap larger than ``max_gap``.
    """
    if not isinstance(da, xr.DataArray) or "time" not in da.dims:
        raise InputError("resample_time needs a DataArray with a 'time' dimension (from skydiff.io.read_radar)")
    try:
        if isinstance(minutes, bool):
            raise TypeError
        step = float(minutes)
    except (TypeError, ValueError):
        raise InputError(f"minutes must be a positive number, got {minutes!r}") from None
    if not (math.isfinite(step) and step > 0):
        raise InputError(f"minutes must be a positive number, got {minutes!r}")
    if method not in ("linear", "nearest"):
        raise InputError(f"method must be 'linear' or 'nearest', got {method!r}")
    times = np.asarray(da["time"].values, dtype="datetime64[ns]")
    if times.size < 2:
        raise InputError(f"resampling needs at least two frames, got {times.size}")
    if np.any(np.diff(times) <= np.timedelta64(0, "ns")):
        raise TimeGapError("times are not strictly increasing (unsorted or duplicate times)")
    t_ns = times.astype(np.int64)
    d = np.diff(t_ns)
    vals, counts = np.unique(d, return_counts=True)
    typical = float(vals[np.argmax(counts)])
    if max_gap is not None and (isinstance(max_gap, bool) or not isinstance(max_gap, (int, float, np.number))
                                or math.isnan(max_gap) or max_gap <= 0):
        raise InputError(f"max_gap must be a number of minutes > 0 (inf: bridge every gap), got {max_gap!r}")
    gap_ns = 2.0 * typical if max_gap is None else float(max_gap) * 60e9
    step_ns = int(round(step * 60e9))
    if step_ns < 1:
        raise InputError(f"minutes must be at least a nanosecond, got {minutes!r}")
    if start is None:
        day = times[0].astype("datetime64[D]").astype("datetime64[ns]").astype(np.int64)
        first = day + -(-(t_ns[0] - day) // step_ns) * step_ns
    else:
        try:
            first = np.datetime64(start, "ns").astype(np.int64)
        except (TypeError, ValueError):
            raise InputError(f"start must be a time (e.g. '2021-02-02T18:00'), got {start!r}") from None
    # integer count: np.arange over int64 nanoseconds sizes itself in floating point and dropped the last target
    # when start lay months before the frames
    first = int(first)
    if first < int(t_ns[0]):  # the first target at or after the first frame, on the grid of start
        first += -(-(int(t_ns[0]) - first) // step_ns) * step_ns
    n_targets = max((int(t_ns[-1]) - first) // step_ns + 1, 0)
    targets = first + step_ns * np.arange(n_targets, dtype=np.int64)
    if targets.size == 0:
        raise InputError(f"no {step:g}-min time falls within {times[0]} ... {times[-1]}")

    j = np.searchsorted(t_ns, targets, side="right") - 1  # last frame at or before each target
    j = np.clip(j, 0, t_ns.size - 1)
    exact = t_ns[j] == targets
    k = np.minimum(j + 1, t_ns.size - 1)
    span = (t_ns[k] - t_ns[j]).astype(np.float64)
    bad = ~exact & (span > gap_ns + 0.5)
    if bad.any():
        shown = ", ".join(_iso(t) for t in targets[bad][:8])
        raise TimeGapError(
            f"cannot resample to {step:g} min: {int(bad.sum())} target time(s) fall in gaps longer than "
            f"{gap_ns / 60e9:g} min ({shown}); pass max_gap to bridge them or split the series")

    src = np.asarray(da.transpose("time", ...).values)
    out = np.empty((targets.size,) + src.shape[1:], np.float32)
    for i in range(targets.size):
        if exact[i]:
            out[i] = src[j[i]]
            continue
        w = (targets[i] - t_ns[j[i]]) / span[i]
        if method == "nearest":
            out[i] = src[j[i] if w <= 0.5 else k[i]]
        else:
            out[i] = (1.0 - w) * src[j[i]] + w * src[k[i]]
    coords = {c: da.coords[c] for c in da.coords if "time" not in da.coords[c].dims}
    coords["time"] = targets.astype("datetime64[ns]")
    res = xr.DataArray(out, dims=("time",) + tuple(x for x in da.dims if x != "time"), coords=coords,
                       name=da.name, attrs=dict(da.attrs))
    old = typical / 60e9
    res.attrs["timestep"] = step
    if "n_gaps" in res.attrs or "gaps" in res.attrs:  # read_radar's gap list: the new series has none
        res.attrs["n_gaps"], res.attrs["gaps"] = 0, ""
    res.attrs["resampled"] = (f"from {old:g}-min to {step:g}-min steps, {method} in time "
                              f"({int(exact.sum())} of {targets.size} frames copied, the others interpolated)")
    # targets made up across a gap of the input (bracketing frames more than 1.5 typical steps apart): say which
    bridged = ~exact & (span > 1.5 * typical)
    res.attrs["bridged"] = " ".join(_iso(t) for t in targets[bridged])
    if bridged.any():
        warn(f"resample_time filled {int(bridged.sum())} time(s) inside gaps of the input (frames up to "
             f"{span[bridged].max() / 60e9:g} min apart) by {method} interpolation: "
             f"{', '.join(_iso(t) for t in targets[bridged][:8])}{' ...' if bridged.sum() > 8 else ''} "
             "(listed in attrs['bridged']; max_gap=<the step> refuses them)")
    return res


def _iso(t_ns: Any) -> str:
    return str(np.datetime64(int(t_ns), "ns").astype("datetime64[s]"))
