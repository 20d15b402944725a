"""Radar input and nowcast output.

- :func:`read_radar` reads radar composites (any pysteps importer, plus skydiff's ``npz`` and CF ``netcdf``) into
  an ``xarray.DataArray`` of rain rate in mm/h on ``(time, y, x)``; :func:`check_regular` and
  :func:`require_frames` validate the series; :func:`crop_bbox` keeps a region; :func:`importer_names` lists the
  accepted importer names.
- :func:`write_nowcast` / :func:`read_nowcast` write and read CF-1.8 netCDF nowcasts (atomically).
- :func:`resample_time` — a regular series at another time step (linear in time; e.g. MRMS 2-min → 5-min).
- :func:`atomic_path` — write a file under a temporary name and move it into place (every skydiff writer).
- unit conversions (numpy and torch): :func:`dbz_to_rainrate`, :func:`rainrate_to_dbz`,
  :func:`accumulation_to_rainrate`, :func:`rainrate_to_dbr`, :func:`dbr_to_rainrate`, :func:`to_rainrate`.
"""

from __future__ import annotations

from .atomic import atomic_path
from .netcdf import read_nowcast, write_nowcast
from .radar import check_regular, crop_bbox, importer_names, read_radar, require_frames
from .timeseries import resample_time
from .units import (
    accumulation_to_rainrate,
    dbr_to_rainrate,
    dbz_to_rainrate,
    rainrate_to_dbr,
    rainrate_to_dbz,
    to_rainrate,
)

__all__ = [
    "atomic_path",
    "read_radar",
    "check_regular",
    "require_frames",
    "crop_bbox",
    "resample_time",
    "importer_names",
    "write_nowcast",
    "read_nowcast",
    "dbz_to_rainrate",
    "rainrate_to_dbz",
    "accumulation_to_rainrate",
    "rainrate_to_dbr",
    "dbr_to_rainrate",
    "to_rainrate",
]
