"""CF-1.8 netCDF output for nowcasts (:func:`write_nowcast`, :func:`read_nowcast`) and the reader behind
``read_radar(..., importer="netcdf")``.

File layout written by :func:`write_nowcast` (netCDF4/HDF5, one deterministic nowcast):

=========================== ====================== ==========================================================
variable                    dimensions             content
=========================== ====================== ==========================================================
``precip_rate``             (lead_time, y, x)      float32 rain rate, units ``mm h-1``, ``_FillValue`` NaN,
                                                   zlib-compressed, ``grid_mapping = "crs"``
``lead_time``               (lead_time)            minutes after the reference time (``forecast_period``)
``time``                    (lead_time)            valid times (``standard_name = "time"``)
``forecast_reference_time`` scalar                 time of the last observation used
``x``, ``y``                (x), (y)               pixel centres (``projection_x/y_coordinate``, metres), or
                                                   longitude/latitude for geographic grids
``crs``                     scalar                 CF grid mapping from pyproj plus ``crs_wkt``,
                                                   ``spatial_ref`` and ``proj4_params``
``velocity_x/_y``           (y, x), optional       motion field in pixels per time step (pysteps convention)
=========================== ====================== ==========================================================

Global attributes: ``Conventions``, ``title``, ``institution``, ``source`` (``skydiff <version>``), ``model``,
``history``, ``timestep`` (minutes), ``reference_time`` (ISO), the grid description (``xpixelsize``,
``ypixelsize``, ``cartesian_unit``, ``yorigin``) and, when a ``like`` observation is given, ``zr_a``, ``zr_b``
and its ``importer`` and ``source_files`` as ``observation_importer`` and ``observation_files`` (a nowcast read back
by :func:`read_nowcast` and written again keeps them, and its ``model``). A DataArray nowcast is written by its
dimension names and, unless ``leadtimes`` is given, at its own ``lead_time`` values. User ``attrs`` are added last.

Files are written atomically: to a temporary file in the target directory, then ``os.replace``d onto the
target, so readers never see a partial file and a failed write leaves any previous file untouched.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import xarray as xr

from .._compat import tensor_numpy
from ..errors import InputError, ReadError, ShapeError, warn
from .atomic import atomic_path
from .units import is_rain_rate, normalize_unit, positive_minutes

__all__ = ["write_nowcast", "read_nowcast"]

_EPOCH_UNITS = "seconds since 1970-01-01 00:00:00"


def open_netcdf(path: str | os.PathLike[str], what: str = "netCDF", **kwargs: Any) -> Any:
    """``xarray.open_dataset(path, **kwargs)`` with a one-line :class:`ReadError` for a file that cannot be read:
    missing, empty, not netCDF/HDF5 at all (xarray's own message lists the IO backends over several lines), or
    the first line of the library's message."""
    import xarray as xr

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ReadError(f"{what} file {p} not found")
    if os.path.getsize(p) == 0:
        raise ReadError(f"cannot read {p} as {what}: the file is empty (0 bytes)")
    try:
        return xr.open_dataset(p, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any library error becomes one line
        text = str(exc).strip()
        if "did not find a match in any of xarray's currently installed IO backends" in text:
            why = "it is not a netCDF (or HDF5) file"
        else:
            why = f"{type(exc).__name__}: " + (text.splitlines() or [""])[0]
        raise ReadError(f"cannot read {p} as {what}: {why}") from None

# names under which a precipitation variable is looked for in foreign CF files (in this order)
_PRECIP_NAMES = (
    "precip_rate",
    "precipitation_rate",
    "rainfall_rate",
    "rain_rate",
    "rainrate",
    "precip",
    "precipitation",
    "rr",
    "rain",
)
# units that are not pysteps units but convert to mm/h by a factor
_RATE_FACTORS = {"m s-1": 3.6e6, "mm s-1": 3600.0, "kg m-2 s-1": 3600.0, "m h-1": 1000.0}


# --------------------------------------------------------------------------------------------- helpers
def _to_numpy(x: Any) -> np.ndarray:
    return tensor_numpy(x.values if isinstance(x, xr.DataArray) else x)


def _nowcast_layout(da: xr.DataArray, leadtimes: Any) -> tuple[xr.DataArray, Any]:
    """A DataArray nowcast in (lead, y, x) order by its dimension names (a square (lead_time, x, y) array was
    written transposed), and its own ``lead_time`` coordinate as the lead times when none are given (a selection
    of lead times was relabelled 5, 10, 15 ...)."""
    if da.ndim == 3 and {"y", "x"} <= set(da.dims):
        lead = next(d for d in da.dims if d not in ("y", "x"))
        da = da.transpose(lead, "y", "x")
        if leadtimes is None and "lead_time" in da.coords and da["lead_time"].dims == (lead,):
            vals = np.asarray(da["lead_time"].values)
            if vals.dtype.kind == "m":
                vals = vals.astype("timedelta64[ns]").astype(np.float64) / 60e9
            leadtimes = vals.astype(np.float64)
    elif da.ndim == 2 and {"y", "x"} <= set(da.dims):
        da = da.transpose("y", "x")
    return da, leadtimes


def _to_datetime64(value: Any, what: str) -> np.datetime64:
    if isinstance(value, (bool, int, float, np.number)) and not isinstance(value, np.datetime64):
        raise InputError(f"{what} must be a datetime, numpy.datetime64 or ISO string, got the number {value!r}")
    try:
        if isinstance(value, str):
            t = np.datetime64(value.rstrip("Z").replace(" ", "T"), "ns")
        elif isinstance(value, _dt.datetime) and value.tzinfo is not None:
            t = np.datetime64(value.astimezone(_dt.timezone.utc).replace(tzinfo=None), "ns")
        else:
            t = np.datetime64(value, "ns")
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} must be a datetime, numpy.datetime64 or ISO string, got {value!r}") from exc
    if np.isnat(t):
        raise InputError(f"{what} is NaT")
    return t


def _iso(t: np.datetime64) -> str:
    return str(np.datetime64(t, "s"))


def _epoch_seconds(t: np.ndarray) -> np.ndarray:
    return (np.asarray(t, "datetime64[ns]") - np.datetime64("1970-01-01T00:00:00", "ns")) / np.timedelta64(1, "s")


def _unit_key(unit: str) -> str:
    return " ".join(str(unit).strip().lower().split())


def _precip_unit(unit: Any) -> tuple[str, float] | None:
    """(pysteps unit, factor) for a CF units string, or None when it is not a precipitation unit."""
    if unit is None:
        return None
    key = _unit_key(unit)
    if key in _RATE_FACTORS:
        return "mm/h", _RATE_FACTORS[key]
    try:
        return normalize_unit(key), 1.0
    except InputError:
        return None


def _find_precip_variable(ds: Any, variable: str | None = None) -> str | None:
    """Name of the rain variable of a netCDF4.Dataset / xarray.Dataset with a known unit: 3-D (time-like, y, x),
    or 2-D (y, x) in a file with a scalar ``time``."""

    def dims_of(name: str) -> tuple[str, ...]:
        return tuple(ds.variables[name].dimensions if hasattr(ds.variables[name], "dimensions") else ds[name].dims)

    def attr(name: str, key: str) -> Any:
        v = ds.variables[name]
        if hasattr(v, "ncattrs"):
            return v.getncattr(key) if key in v.ncattrs() else None
        return v.attrs.get(key)

    names = list(ds.variables)
    if variable is not None:
        return variable if variable in names else None
    cands = [n for n in names if len(dims_of(n)) == 3 and _precip_unit(attr(n, "units")) is not None]
    if not cands and "time" in names and dims_of("time") == ():  # one field at a scalar time (3-D variables first)
        cands = [n for n in names if len(dims_of(n)) == 2 and _precip_unit(attr(n, "units")) is not None]
    lower = {n.lower(): n for n in cands}
    for n in _PRECIP_NAMES:
        if n in lower:
            return lower[n]
    for n in cands:
        sn = str(attr(n, "standard_name") or "").lower()
        if "precipitation" in sn or "rainfall" in sn or "reflectivity" in sn:
            return n
    return cands[0] if len(cands) == 1 else None


def _proj_from_crs_attrs(attrs: dict[str, Any]) -> str:
    """PROJ string from a CF grid-mapping variable's attributes (skydiff's proj4_params first)."""
    for key in ("proj4_params", "proj4", "proj4text", "proj_string"):
        if attrs.get(key):
            return " ".join(str(attrs[key]).split())
    from pyproj import CRS

    for key in ("crs_wkt", "spatial_ref"):
        if attrs.get(key):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    return CRS.from_wkt(str(attrs[key])).to_proj4()
            except Exception:  # noqa: BLE001 - unparsable WKT: fall back to the CF attributes
                pass
    if attrs.get("grid_mapping_name"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return CRS.from_cf(dict(attrs)).to_proj4()
        except Exception:  # noqa: BLE001
            pass
    return ""


def _clean_attr(v: Any) -> Any:
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, bytes):
        v = v.decode(errors="replace")
    return v


# ----------------------------------------------------------------------------------- reading CF files
def _axis_of(ds: Any, dim: Any) -> str | None:
    """``"X"`` or ``"Y"`` for a dimension of a Dataset or DataArray whose name, coordinate ``axis`` or
    ``standard_name`` says so, else None."""
    attrs = ds[dim].attrs if dim in getattr(ds, "variables", ds.coords) else {}
    name, std = str(dim).lower(), str(attrs.get("standard_name", "")).lower()
    axis = str(attrs.get("axis", "")).upper()
    if axis == "X" or name in ("x", "lon", "longitude") or std in ("projection_x_coordinate", "longitude"):
        return "X"
    if axis == "Y" or name in ("y", "lat", "latitude") or std in ("projection_y_coordinate", "latitude"):
        return "Y"
    return None


def _nearest_ms(times: np.ndarray) -> np.ndarray:
    """datetime64[ns] rounded to the nearest millisecond: CF times in real-valued units ("hours since ..." with
    steps of 5/60) decode to 12:04:59.999999488, which made a regular 5-min series irregular (NaT kept)."""
    ns = times.astype(np.int64)
    rounded = (ns + 500_000) // 1_000_000 * 1_000_000  # (floor of x + 1/2: round half up, also before 1970)
    return np.where(np.isnat(times), times, rounded.astype("datetime64[ns]"))


def _is_time(v: Any) -> bool:
    """Whether an xarray variable holds decoded times: datetime64, or cftime dates (non-standard calendars)."""
    if np.issubdtype(v.dtype, np.datetime64):
        return True
    return v.dtype == object and v.size > 0 and hasattr(np.asarray(v.values).flat[0], "calendar")


def _time_dim(ds: Any, var: Any) -> str | None:
    """The dimension of ``var`` along which times run: one with a time coordinate, or the one ``time`` is on."""
    for d in var.dims:
        for c in (d, "time"):
            if c in ds.variables and ds[c].dims == (d,) and _is_time(ds[c]):
                return str(d)
    return None


def _cf_times(v: Any, path: str) -> np.ndarray:
    """datetime64[ns] of a decoded time variable. cftime dates of a non-standard calendar (noleap, 360_day, ...) are
    read date by date as the same dates of the standard calendar (so files agree with each other; an interval across
    a date the file's calendar lacks, 29 February of noleap, becomes a gap), with a warning; a date the standard
    calendar lacks (30 February) is a ReadError."""
    vals = np.asarray(v.values).ravel()
    if vals.dtype.kind == "M":
        return _nearest_ms(vals.astype("datetime64[ns]"))
    calendar = getattr(vals[0], "calendar", "?")
    out = np.empty(vals.size, "datetime64[ns]")
    for i, t in enumerate(vals):
        try:
            out[i] = np.datetime64(t.isoformat(), "ns")
        except ValueError:
            raise ReadError(f"{path}: its time {t} (calendar {calendar!r}) is no date of the standard "
                            "calendar") from None
    warn(f"times in the {calendar!r} calendar are read as the same dates of the standard calendar (intervals across "
         "dates one calendar lacks differ)")
    return _nearest_ms(out)


def read_cf_frames(path: str, variable: str | None = None,
                   unit: str | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a CF netCDF precipitation file: ``(data (T, H, W), times datetime64[ns] (T,), metadata)``.

    The metadata is pysteps-like (``unit``, ``accutime``, ``projection``, ``xpixelsize``, ..., plus the
    coordinate arrays ``x`` and ``y``). The time axis is the variable's first dimension; its times come from a
    ``time`` coordinate along it (``time`` itself, or ``time`` along ``lead_time`` in nowcast files).
    ``variable`` names the rain variable (default: found by name and units); ``unit`` says what its values are
    (``"mm/h"``, ``"mm"``, ``"dBZ"``, ...) in place of its ``units`` attribute, for files without one.
    """
    ds = open_netcdf(path, decode_timedelta=False)
    with ds:
        name = _find_precip_variable(ds, variable)
        if name is None:
            if variable is not None:
                raise ReadError(f"{path} has no variable {variable!r} (variables: {', '.join(map(str, ds.variables))})")
            raise ReadError(
                f"{path}: no precipitation variable on (time, y, x) with units mm/h, mm or dBZ found "
                f"(variables: {', '.join(map(str, ds.data_vars))}); pass variable=NAME (CLI: --importer-option "
                f"variable=NAME)"
            )
        var = ds[name]
        scalar_time = var.ndim == 2 and "time" in ds.variables and ds["time"].ndim == 0 and _is_time(ds["time"])
        if scalar_time:  # one field at a scalar time: (1, y, x)
            var = var.drop_vars("time", errors="ignore").expand_dims("time")
        if var.ndim != 3:
            raise ReadError(f"{path}: variable {name!r} has dimensions {var.dims}, expected (time, y, x) (or (y, x) "
                            "with a scalar time)")
        tdim = "time" if scalar_time else _time_dim(ds, var)
        if tdim is None:
            raise ReadError(f"{path}: cannot find the times of {name!r} (no 'time' coordinate of dates along any of "
                            f"its dimensions {var.dims})")
        if var.dims[0] != tdim:  # time stored elsewhere than first: moved first
            var = var.transpose(tdim, ...)
        if [_axis_of(ds, d) for d in var.dims[1:]] == ["X", "Y"]:  # stored (time, x, y): read as (time, y, x)
            var = var.transpose(var.dims[0], var.dims[2], var.dims[1])
        _, ydim, xdim = var.dims
        tcoord = ds["time"] if scalar_time or not (tdim in ds.variables and _is_time(ds[tdim])) else ds[tdim]
        times = _cf_times(tcoord, path)
        unit_info = _precip_unit(var.attrs.get("units") if unit is None else unit)
        if unit_info is None and unit is not None:
            raise InputError(f"unit={unit!r} is no precipitation unit (mm/h, mm, dBZ, kg m-2 s-1, ...)")
        if unit_info is None:
            raise ReadError(f"{path}: variable {name!r} has unknown units {var.attrs.get('units')!r}; pass unit= what "
                            "its values are (CLI: --importer-option unit=mm/h)")
        unit, factor = unit_info
        data = np.asarray(var.values, dtype=np.float64)
        if factor != 1.0:
            data = data * factor

        gattrs = {k: _clean_attr(v) for k, v in ds.attrs.items()}
        vattrs = {k: _clean_attr(v) for k, v in var.attrs.items()}
        meta: dict[str, Any] = {"unit": unit, "transform": None,
                                # a skydiff nowcast: frames at valid times of a forecast, not observations
                                "forecast": tdim == "lead_time" or "forecast_reference_time" in ds.variables}
        for key in ("accutime", "zr_a", "zr_b"):
            for src in (vattrs, gattrs):
                if key in src:
                    try:
                        meta[key] = float(src[key])
                    except (TypeError, ValueError):
                        pass
                    break
        if unit == "mm" and "accutime" not in meta:
            for key in ("timestep",):
                if key in gattrs:
                    meta["accutime"] = float(gattrs[key])
        meta["institution"] = str(vattrs.get("institution") or gattrs.get("institution", ""))

        # grid
        proj = ""
        gm = vattrs.get("grid_mapping")
        if gm and str(gm).split(":")[0].strip() in ds.variables:
            proj = _proj_from_crs_attrs(dict(ds[str(gm).split(":")[0].strip()].attrs))
        elif "crs" in ds.variables:
            proj = _proj_from_crs_attrs(dict(ds["crs"].attrs))
        if not proj:
            proj = " ".join(str(vattrs.get("projection") or gattrs.get("projection") or "").split())
        meta["projection"] = proj

        if xdim in ds.variables and ydim in ds.variables:
            x = np.asarray(ds[xdim].values, dtype=np.float64)
            y = np.asarray(ds[ydim].values, dtype=np.float64)
            xunit = _unit_key(ds[xdim].attrs.get("units", ""))
        else:
            x = np.arange(var.shape[2], dtype=np.float64)
            y = np.arange(var.shape[1], dtype=np.float64)[::-1].copy()
            xunit = "pixel"
        if xunit in ("m", "meter", "meters", "metre", "metres"):
            cu = "m"
        elif xunit in ("km", "kilometer", "kilometers", "kilometre", "kilometres"):
            cu = "km"
        elif xunit.startswith("degree"):
            cu = "degrees"
        else:
            cu = str(vattrs.get("cartesian_unit") or gattrs.get("cartesian_unit") or xunit or "m")
        meta["cartesian_unit"] = cu
        meta["x"], meta["y"] = x, y
        meta["xpixelsize"] = float(abs(x[1] - x[0])) if x.size > 1 else float(gattrs.get("xpixelsize", 1.0))
        meta["ypixelsize"] = float(abs(y[1] - y[0])) if y.size > 1 else float(gattrs.get("ypixelsize", 1.0))
        meta["yorigin"] = "upper" if (y.size > 1 and y[0] > y[-1]) else str(gattrs.get("yorigin", "lower"))
    return data, times, meta


# ----------------------------------------------------------------------------------------- writing
def _attr_value(v: Any) -> Any:
    """A 0-d array as its number (``da.max().values``), a bool as 0/1 (netCDF has no booleans)."""
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v.item()
    return int(v) if isinstance(v, (bool, np.bool_)) else v


def _storable_attr(v: Any) -> bool:
    """Whether netCDF4 stores ``v`` as an attribute: text, a number (not a bool, an int within 64 bits) or a flat
    non-empty list of numbers."""
    if isinstance(v, str):
        return True
    items = list(v) if isinstance(v, (list, tuple, np.ndarray)) else [v]
    if not items or (isinstance(v, np.ndarray) and v.ndim != 1):
        return False
    for x in items:
        if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
            return False
        if isinstance(x, int) and not -2**63 <= x < 2**64:
            return False
    return True


def _grid_from(like: Any, nowcast: Any, shape: tuple[int, int]) -> dict[str, Any]:
    """x, y (in metres or degrees), projection and descriptive attrs from ``like`` or an xarray nowcast."""
    src = like
    if like is None and isinstance(nowcast, xr.DataArray) and {"x", "y"} <= set(nowcast.coords):
        src = nowcast  # a DataArray nowcast without x/y coordinates is on pixel indices, as an array is
    g: dict[str, Any] = {"attrs": {}}
    if src is None:
        g["x"] = np.arange(shape[1], dtype=np.float64)
        g["y"] = np.arange(shape[0], dtype=np.float64)[::-1].copy()
        g["projection"] = ""
        g["cartesian_unit"] = "pixel"
        g["yorigin"] = "upper"
        return g
    if not isinstance(src, (xr.DataArray, xr.Dataset)):
        raise InputError(f"like must be the xarray.DataArray returned by read_radar, got {type(src).__name__}")
    if "x" not in src.coords or "y" not in src.coords:
        raise InputError("like has no 'x'/'y' coordinates (pass the DataArray returned by read_radar)")
    x = np.asarray(src["x"].values, dtype=np.float64)
    y = np.asarray(src["y"].values, dtype=np.float64)
    if (y.size, x.size) != tuple(shape):
        raise ShapeError(f"the nowcast grid {tuple(shape)} differs from the grid of like {(y.size, x.size)}")
    if src is like and isinstance(nowcast, xr.DataArray) and {"x", "y"} <= set(nowcast.coords):
        for n, mine in (("x", x), ("y", y)):  # like's coordinates go on the nowcast's values: they must be its own
            own = np.asarray(nowcast[n].values, dtype=np.float64)
            if own.shape != mine.shape or not np.allclose(own, mine, rtol=1e-9, atol=0.0):
                raise InputError(f"the nowcast's {n} coordinate ({own[0]:g} ... {own[-1]:g}) differs from like's "
                                 f"({mine[0]:g} ... {mine[-1]:g}): its values would be written on another grid "
                                 "(e.g. flipped); pass like=None to write the nowcast's own grid")
    attrs = dict(src.attrs)
    cu = str(attrs.get("cartesian_unit", "m"))
    xps = float(attrs.get("xpixelsize", abs(x[1] - x[0]) if x.size > 1 else 1.0))
    yps = float(attrs.get("ypixelsize", abs(y[1] - y[0]) if y.size > 1 else 1.0))
    projection = " ".join(str(attrs.get("projection", "")).split())
    if cu == "km":  # CF files are written in metres (the projection too: a km-scaled ellipsoid put pixels at the pole)
        from .radar import _scale_proj_to_m

        x, y, xps, yps, cu = x * 1000.0, y * 1000.0, xps * 1000.0, yps * 1000.0, "m"
        projection = _scale_proj_to_m(projection) if projection else projection
    g.update(
        x=x,
        y=y,
        projection=projection,
        cartesian_unit=cu,
        yorigin=str(attrs.get("yorigin", "upper" if (y.size > 1 and y[0] > y[-1]) else "lower")),
        xpixelsize=xps,
        ypixelsize=yps,
        attrs=attrs,
    )
    return g


def _crs_attrs(projection: str) -> dict[str, Any]:
    from pyproj import CRS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            crs = CRS.from_proj4(projection) if projection.lstrip().startswith("+") else CRS.from_user_input(projection)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot interpret the projection {projection!r} with pyproj: {exc}") from exc
        try:
            cf = crs.to_cf()
        except Exception:  # noqa: BLE001 - no CF grid mapping for this projection: WKT only
            cf = {}
        wkt = crs.to_wkt()
    out: dict[str, Any] = {}
    for k, v in cf.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = np.asarray(v, dtype=np.float64)
        out[k] = v
    if out.get("grid_mapping_name") == "polar_stereographic" and "latitude_of_projection_origin" not in out:
        # CF requires the pole (+-90); pyproj leaves it out for variant B (standard_parallel) definitions
        m = re.search(r"\+lat_0=([-+0-9.]+)", projection)
        if m:
            lat0 = float(m.group(1))
        else:
            lat0 = 90.0 if float(np.ravel([out.get("standard_parallel", 90.0)])[0]) >= 0 else -90.0
        out["latitude_of_projection_origin"] = lat0
    out["crs_wkt"] = wkt
    out["spatial_ref"] = wkt
    out["proj4_params"] = projection
    return out


def _netcdf_attr(v: Any) -> Any:
    """A value netCDF4 can store as an attribute (None dropped, bools as int, other objects as str)."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, float, str, np.integer, np.floating)):
        return v
    if isinstance(v, np.ndarray) and v.dtype.kind in "iuf":
        return v
    if isinstance(v, (list, tuple)) and all(isinstance(e, str) for e in v):
        return "\n".join(v)
    if isinstance(v, (list, tuple)) and all(isinstance(e, (int, float)) for e in v):
        return np.asarray(v)
    return str(v)


def _write_variables(nc: Any, content: dict[str, Any]) -> None:
    """Define and fill every variable of a nowcast file (split out so that tests can inject failures)."""
    n, h, w = content["data"].shape
    nc.createDimension("lead_time", n)
    nc.createDimension("y", h)
    nc.createDimension("x", w)

    v = nc.createVariable("lead_time", "f8", ("lead_time",), fill_value=False)
    v.setncatts(
        {"standard_name": "forecast_period", "long_name": "lead time after the forecast reference time",
         "units": "minutes", "axis": "T"}
    )
    v[:] = content["leadtimes"]

    v = nc.createVariable("time", "f8", ("lead_time",), fill_value=False)
    v.setncatts({"standard_name": "time", "long_name": "valid time", "units": _EPOCH_UNITS, "calendar": "standard"})
    v[:] = _epoch_seconds(content["valid_times"])

    v = nc.createVariable("forecast_reference_time", "f8", (), fill_value=False)
    v.setncatts(
        {"standard_name": "forecast_reference_time", "long_name": "time of the last observation used",
         "units": _EPOCH_UNITS, "calendar": "standard"}
    )
    v[...] = _epoch_seconds(np.asarray([content["reference_time"]]))[0]

    geographic = content["cartesian_unit"] == "degrees"
    v = nc.createVariable("y", "f8", ("y",), fill_value=False)
    if geographic:
        v.setncatts({"standard_name": "latitude", "long_name": "latitude of pixel centres", "units": "degrees_north",
                     "axis": "Y"})
    elif content["cartesian_unit"] == "m":
        v.setncatts({"standard_name": "projection_y_coordinate", "long_name": "y coordinate of pixel centres",
                     "units": "m", "axis": "Y"})
    else:  # pixel indices (no grid given): CF has no standard name for them
        v.setncatts({"long_name": "y pixel index (no georeference)", "units": "1", "axis": "Y"})
    v[:] = content["y"]
    v = nc.createVariable("x", "f8", ("x",), fill_value=False)
    if geographic:
        v.setncatts({"standard_name": "longitude", "long_name": "longitude of pixel centres", "units": "degrees_east",
                     "axis": "X"})
    elif content["cartesian_unit"] == "m":
        v.setncatts({"standard_name": "projection_x_coordinate", "long_name": "x coordinate of pixel centres",
                     "units": "m", "axis": "X"})
    else:
        v.setncatts({"long_name": "x pixel index (no georeference)", "units": "1", "axis": "X"})
    v[:] = content["x"]

    has_crs = bool(content["crs_attrs"])
    if has_crs:
        v = nc.createVariable("crs", "i4", (), fill_value=False)
        v.setncatts(content["crs_attrs"])

    v = nc.createVariable(
        "precip_rate", "f4", ("lead_time", "y", "x"), zlib=True, complevel=4, shuffle=True,
        chunksizes=(1, h, w), fill_value=np.float32(np.nan),
    )
    atts = {"standard_name": "lwe_precipitation_rate", "long_name": "precipitation rate (nowcast)",
            "units": "mm h-1", "coordinates": "time forecast_reference_time"}
    if has_crs:
        atts["grid_mapping"] = "crs"
    v.setncatts(atts)
    for i in range(n):
        v[i] = content["data"][i]

    if content["velocity"] is not None:
        vel = content["velocity"]
        for comp, idx, desc in (
            ("x", 0, "x (column) component, positive towards increasing column index"),
            ("y", 1, "y (row) component, positive towards increasing row index "
                     f"({'southward' if content['yorigin'] == 'upper' else 'northward'} on this grid)"),
        ):
            v = nc.createVariable(f"velocity_{comp}", "f4", ("y", "x"), zlib=True, complevel=4,
                                  fill_value=np.float32(np.nan))
            vatts = {
                "long_name": f"advection velocity, {desc}, in pixels per time step "
                             "(pysteps convention: velocity[0] = x, velocity[1] = y)",
                "units": "1",
                "comment": f"pixels per {content['timestep']:g} min time step",
            }
            if has_crs:
                vatts["grid_mapping"] = "crs"
            v.setncatts(vatts)
            v[:] = vel[idx]

    for k, val in content["global_attrs"].items():
        val = _netcdf_attr(val)
        if val is not None:
            nc.setncattr(k, val)


def write_nowcast(
    path: str | os.PathLike[str],
    nowcast: Any,
    *,
    reference_time: Any,
    timestep: float,
    like: xr.DataArray | None = None,
    leadtimes: Sequence[float] | None = None,
    velocity: Any = None,
    model: str | None = None,
    attrs: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> str:
    """Write a deterministic nowcast to a CF-1.8 netCDF4 file, atomically; returns the path written.

    Parameters
    ----------
    path
        Target file. An existing file is only replaced with ``overwrite=True`` (InputError otherwise).
    nowcast
        Rain rate in mm/h, ``(n_lead, H, W)`` numpy array, torch tensor (detached) or xarray DataArray
        (a 2-D field is one lead time). NaN = no data.
    reference_time
        Time of the last observation (datetime, numpy.datetime64 or ISO string, UTC).
    timestep
        Minutes between lead times (and the time unit of ``velocity``).
    like
        The DataArray returned by :func:`skydiff.io.read_radar`: grid (x, y), projection, institution and
        observation metadata are copied from it. Without it (and without coordinates on an xarray nowcast) the
        grid is written as pixel indices and no ``crs`` variable is written.
    leadtimes
        Lead times in minutes (default ``timestep * (1..n_lead)``).
    velocity
        Optional ``(2, H, W)`` motion field in pixels per time step, pysteps' layout ([0] = x, [1] = y).
    model
        Name of the nowcasting model (global attribute ``model``).
    attrs
        Extra global attributes (override the defaults).
    """
    from .. import __version__

    path = os.fspath(path)
    if os.path.isdir(path):
        raise InputError(f"cannot write the nowcast to {path}: it is a directory")
    if os.path.exists(path) and not overwrite:
        raise InputError(f"{path} already exists; pass overwrite=True to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise InputError(f"cannot write {path}: directory {directory} does not exist")

    if isinstance(nowcast, xr.DataArray):
        units = nowcast.attrs.get("units")
        if units is not None and not is_rain_rate(units):  # dBZ or mm were written as mm/h
            raise InputError(f"nowcast must be a rain rate in mm/h, the DataArray has units {units!r}")
        nowcast, leadtimes = _nowcast_layout(nowcast, leadtimes)
    data = _to_numpy(nowcast)
    if data.dtype.kind not in "iuf":
        raise InputError(f"nowcast must be numeric rain rates in mm/h, got {type(nowcast).__name__} of dtype "
                         f"{data.dtype}")
    with np.errstate(over="ignore", invalid="ignore"):
        data32 = data.astype(np.float32, copy=False)
        if (np.isinf(data32) & np.isfinite(data)).any():
            raise InputError(f"nowcast holds values beyond float32 (up to {np.nanmax(np.abs(data)):g}); they are "
                             "no rain rates")
        if (data < 0).any():
            warn(f"nowcast holds negative rain rates (down to {np.nanmin(data):g} mm/h); written as they are")
    data = data32
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ShapeError(f"nowcast must have shape (n_lead, H, W), got {data.shape}")
    n, h, w = data.shape
    if n < 1:
        raise ShapeError("nowcast has no lead times")
    if h < 1 or w < 1:
        raise ShapeError(f"nowcast has an empty grid {h} x {w}")
    timestep = positive_minutes(timestep)
    ref = _to_datetime64(reference_time, "reference_time")

    if leadtimes is None:
        lead = timestep * np.arange(1, n + 1, dtype=np.float64)
    else:
        try:
            lead = np.asarray(_to_numpy(leadtimes), dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError(f"leadtimes must be numbers of minutes, got {leadtimes!r}") from None
        if lead.size != n:
            raise ShapeError(f"{lead.size} leadtimes given for a nowcast with {n} lead times")
        if not np.all(np.isfinite(lead)) or np.any(np.diff(lead) <= 0) or lead[0] < 0:
            raise InputError("leadtimes must be finite, >= 0 and strictly increasing (minutes after reference_time)")
    valid = ref + np.round(lead * 60e9).astype("timedelta64[ns]")

    vel = None
    if velocity is not None:
        try:
            vel = _to_numpy(velocity).astype(np.float32, copy=False)
        except (TypeError, ValueError):
            raise InputError(f"velocity must be a numeric (2, H, W) array, got {type(velocity).__name__}") from None
        if vel.shape != (2, h, w):
            raise ShapeError(f"velocity must have shape (2, {h}, {w}) (pysteps layout), got {vel.shape}")

    grid = _grid_from(like, nowcast, (h, w))
    crs_attrs = _crs_attrs(grid["projection"]) if grid["projection"] else {}
    src_attrs = grid["attrs"]

    gattrs: dict[str, Any] = {
        "Conventions": "CF-1.8",
        "title": "precipitation nowcast",
        "institution": str(src_attrs.get("institution", "")) or "unknown",
        "source": f"skydiff {__version__}",
        "model": model or "unknown",
        "history": f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')} created by "
        f"skydiff.io.write_nowcast",
        "reference_time": _iso(ref),
        "timestep": int(timestep) if float(timestep).is_integer() else timestep,
        "cartesian_unit": grid["cartesian_unit"],
        "yorigin": grid["yorigin"],
    }
    if "xpixelsize" in grid:
        gattrs["xpixelsize"] = grid["xpixelsize"]
        gattrs["ypixelsize"] = grid["ypixelsize"]
    for key in ("zr_a", "zr_b", "accutime"):
        if key in src_attrs:
            gattrs[key] = src_attrs[key]
    # provenance: read_radar's attrs, or those of a nowcast read back by read_nowcast (written again)
    for key, own in (("importer", "observation_importer"), ("source_files", "observation_files")):
        if key in src_attrs or own in src_attrs:
            gattrs[own] = src_attrs.get(key, src_attrs.get(own))
    if model is None and isinstance(nowcast, xr.DataArray) and nowcast.attrs.get("model"):
        gattrs["model"] = str(nowcast.attrs["model"])
    if attrs:
        bad = [k for k in attrs if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.@+-]*", k)]
        if bad:
            raise InputError(f"attrs names must be netCDF attribute names (letters, digits, _ . @ + -, not starting "
                             f"with a digit), got {bad[:3]}")
        attrs = {k: _attr_value(v) for k, v in attrs.items()}
        bad = [k for k, v in attrs.items() if not _storable_attr(v)]
        if bad:
            raise InputError(f"attrs values must be text, numbers (integers within 64 bits) or flat lists of numbers, "
                             f"which netCDF stores; got {', '.join(f'{k}={attrs[k]!r}' for k in bad[:3])}")
        gattrs.update(attrs)

    content = {
        "data": data,
        "leadtimes": lead,
        "valid_times": valid,
        "reference_time": ref,
        "x": grid["x"],
        "y": grid["y"],
        "cartesian_unit": grid["cartesian_unit"],
        "yorigin": grid["yorigin"],
        "crs_attrs": crs_attrs,
        "velocity": vel,
        "timestep": timestep,
        "global_attrs": gattrs,
    }

    import netCDF4

    try:
        with atomic_path(path) as tmp:  # temporary file beside path, fsync, permissions kept, os.replace
            with netCDF4.Dataset(tmp, "w", format="NETCDF4", clobber=False) as nc:
                _write_variables(nc, content)
            if os.path.exists(path) and not overwrite:  # appeared while writing
                raise InputError(f"{path} already exists; pass overwrite=True to replace it")
    except PermissionError as exc:
        raise InputError(f"cannot write {path}: permission denied ({exc.strerror})") from None
    return path


def read_nowcast(path: str | os.PathLike[str], with_velocity: bool = False) -> Any:
    """Read a file written by :func:`write_nowcast`.

    Returns the nowcast as an ``xarray.DataArray`` named ``precip_rate`` with dims ``(lead_time, y, x)``,
    coordinates ``lead_time`` (minutes), ``time`` (valid times, along ``lead_time``), ``x``, ``y`` and attrs
    (``units`` "mm/h", ``projection``, ``reference_time``, ``timestep``, ``model``, ``institution``, the grid
    description and the file's global attributes). With ``with_velocity=True`` returns ``(nowcast, velocity)``
    where velocity is a ``(component, y, x)`` DataArray (component = ["x", "y"], pysteps layout) or None.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ReadError(f"file not found: {path}")
    ds = open_netcdf(path, decode_timedelta=False)
    with ds:
        if "precip_rate" not in ds.variables or ds["precip_rate"].dims != ("lead_time", "y", "x"):
            raise ReadError(f"{path} is not a skydiff nowcast file (no precip_rate on (lead_time, y, x))")
        for name in ("lead_time", "time", "x", "y"):
            if name not in ds.variables:
                raise ReadError(f"{path} is not a whole skydiff nowcast file (no {name!r} variable)")
        if not np.issubdtype(ds["time"].dtype, np.datetime64):
            raise ReadError(f"{path}: its 'time' variable has no CF time units (valid times unknown)")
        var = ds["precip_rate"].load()
        attrs = {k: _clean_attr(v) for k, v in ds.attrs.items()}
        proj = _proj_from_crs_attrs(dict(ds["crs"].attrs)) if "crs" in ds.variables else ""
        coords: dict[str, Any] = {
            "lead_time": ("lead_time", np.asarray(ds["lead_time"].values, dtype=np.float64), {"units": "minutes"}),
            "time": ("lead_time", np.asarray(ds["time"].values, dtype="datetime64[ns]")),
            "y": ("y", np.asarray(ds["y"].values, dtype=np.float64), dict(ds["y"].attrs)),
            "x": ("x", np.asarray(ds["x"].values, dtype=np.float64), dict(ds["x"].attrs)),
        }
        if "forecast_reference_time" in ds.variables:
            coords["forecast_reference_time"] = ((), np.asarray(ds["forecast_reference_time"].values,
                                                                dtype="datetime64[ns]"))
        attrs["units"] = "mm/h"
        attrs["projection"] = proj
        attrs.setdefault("cartesian_unit", "m")
        out = xr.DataArray(
            np.asarray(var.values, dtype=np.float32), dims=("lead_time", "y", "x"), coords=coords,
            name="precip_rate", attrs=attrs,
        )
        velocity = None
        if with_velocity and "velocity_x" in ds.variables and "velocity_y" in ds.variables:
            vel = np.stack([np.asarray(ds["velocity_x"].values), np.asarray(ds["velocity_y"].values)]).astype(
                np.float32
            )
            velocity = xr.DataArray(
                vel, dims=("component", "y", "x"),
                coords={"component": ["x", "y"], "y": coords["y"][1], "x": coords["x"][1]},
                name="velocity",
                attrs={"units": f"pixels per {attrs.get('timestep', '')} min time step".replace("  ", " "),
                       "convention": "pysteps: [0] = x (columns), [1] = y (rows)"},
            )
    if with_velocity:
        return out, velocity
    return out
