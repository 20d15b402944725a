"""ERA5 files for downscaling: reading (:func:`read_era5`) and VIMD from a dataset (:func:`vimd`).

:func:`read_era5` reads one netCDF file or every ``*.nc`` file of a folder (as downloaded from the CDS, or the
WAM2layers test files in ``$SKYDIFF_DATA/era5``) into one :class:`xarray.Dataset` with ERA5's variable names and
these conversions:

- ``tp`` (m accumulated over the hour ending at the valid time) → **mm/h**; ``e`` (m of water equivalent,
  negative = evaporation, ERA5's sign) → mm/h; WAM2layers' ``precip`` (kg m⁻² s⁻¹) → ``tp`` in mm/h and
  ``evap`` (kg m⁻² s⁻¹, positive = evaporation) → ``e`` in mm/h with ERA5's sign;
- coordinate names are unified to ``time``, ``level``, ``latitude``, ``longitude`` (CDS' newer ``valid_time``,
  ``pressure_level``, ``model_level``, ``lat``, ``lon`` are renamed);
- ``ds.attrs["level_type"]`` is ``"pressure"`` (``level`` in hPa), ``"model"`` (ERA5 L137 model-level numbers) or
  ``"none"``.

:func:`vimd` computes the vertically integrated moisture divergence of such a dataset by the model-level,
pressure-level or flux route of :mod:`skydiff.downscale.moisture`, in kg m⁻² h⁻¹ (= mm/h), positive = divergence.
The ERA5 L137 hybrid coefficients are read from a CSV (ECMWF's table with columns ``n``, ``a [Pa]``, ``b``; by
default ``$SKYDIFF_DATA/era5/era5_L137_model_level_table.csv``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ReadError
from .moisture import model_level_pressure, moisture_flux, spherical_divergence

__all__ = ["read_era5", "read_l137_table", "vimd", "default_l137_table"]

_RENAME = {
    "valid_time": "time",
    "pressure_level": "level",
    "model_level": "level",
    "isobaricInhPa": "level",
    "hybrid": "level",
    "lat": "latitude",
    "lon": "longitude",
}
_PRESSURE_UNITS = {"millibars": 100.0, "hpa": 100.0, "mbar": 100.0, "pa": 1.0}
#: The lowest level must reach within this many Pa of the surface, the highest above this pressure.
_MAX_GAP_SURFACE = 100e2
_MIN_TOP = 300e2


def default_l137_table() -> Path:
    """The L137 half-level coefficients shipped with skydiff (``skydiff/downscale/l137_coefficients.csv``: the
    columns ``n``, ``a [Pa]``, ``b`` of ECMWF's published "L137 model level definitions"), so that model-level
    VIMD works without the project's data folder."""
    return Path(__file__).resolve().parent / "l137_coefficients.csv"


def read_l137_table(path: str | os.PathLike[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Half-level coefficients ``(a [Pa], b)`` of the ERA5 L137 model levels, 138 values each (half levels 0 … 137).

    ``path`` is a CSV with a header row and the columns ``n``, ``a [Pa]``, ``b`` first (ECMWF's L137 table);
    default :func:`default_l137_table`.
    """
    p = Path(path) if path is not None else default_l137_table()
    if not p.is_file():
        raise ReadError(
            f"L137 model-level table {p} not found; pass table=<csv with columns n, a [Pa], b> "
            "(ECMWF's 'L137 model level definitions')"
        )
    try:
        raw = np.genfromtxt(p, delimiter=",", skip_header=1, usecols=(0, 1, 2), dtype=np.float64, encoding="utf-8-sig")
    except Exception as exc:
        raise ReadError(f"cannot read the L137 table {p}: {exc}") from None
    if raw.ndim != 2 or raw.shape[1] != 3 or not np.all(np.isfinite(raw)):
        raise ReadError(f"L137 table {p} must have numeric columns n, a [Pa], b")
    order = np.argsort(raw[:, 0])
    n, a, b = raw[order, 0], raw[order, 1], raw[order, 2]
    if not np.array_equal(n, np.arange(len(n))):
        raise ReadError(f"L137 table {p}: the half-level numbers must run 0 … N without gaps")
    return a, b


def _open(path: Path) -> Any:
    from ..io.netcdf import open_netcdf

    with open_netcdf(path, "an ERA5 netCDF file") as ds:
        return ds.load()


def read_era5(path: str | os.PathLike[str]) -> Any:
    """Read ERA5 netCDF data (one file, or all ``*.nc`` files of a folder merged) with tp in mm/h.

    Parameters
    ----------
    path:
        A ``.nc`` file or a folder of them (e.g. ``$SKYDIFF_DATA/era5/model-levels-2022-08-31``). Files of one
        folder must share the time/latitude/longitude grid.

    Returns
    -------
    xarray.Dataset
        ERA5 variable names (``tp``, ``e``, ``sp``, ``tcw``, ``q``, ``u``, ``v``, ... and WAM2layers' ``fx_upper``
        etc.), ``tp`` and ``e`` in mm/h (see the module docstring), ``attrs["level_type"]``.

    Raises
    ------
    ReadError
        Missing path, no netCDF file in the folder, unreadable file or files that cannot be merged.
    """
    import xarray as xr

    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob("*.nc"))
        if not files:
            raise ReadError(f"no .nc files in {p}")
    elif p.is_file():
        files = [p]
    else:
        raise ReadError(f"ERA5 path {p} does not exist")
    parts = []
    for f in files:
        ds = _open(f)
        ds = ds.rename({k: v for k, v in _RENAME.items() if k in ds.variables})
        parts.append(ds)
    try:
        ds = xr.merge(parts, compat="override", join="exact", combine_attrs="drop_conflicts")
    except Exception as exc:
        raise ReadError(f"the ERA5 files in {p} do not share one grid and cannot be merged: {exc}") from None

    if "tp" in ds:
        units = str(ds["tp"].attrs.get("units", "m")).strip().lower()
        if units not in ("m", "mm h-1", "mm/h"):
            raise ReadError(f"tp in {p} has units {units!r}; expected 'm' (hourly accumulation) or 'mm h-1'")
        if units == "m":
            ds["tp"] = ds["tp"] * 1000.0
    elif "precip" in ds:
        ds["tp"] = ds["precip"] * 3600.0
    if "tp" in ds:
        ds["tp"].attrs = {"units": "mm h-1", "long_name": "total precipitation rate (hour ending at the valid time)"}
    if "e" in ds:  # as tp: an hourly accumulation in m, a rate in mm/h (written back) or a flux in kg m-2 s-1
        units = _unit_text(ds["e"], "m")
        if units in ("m", "m of water equivalent"):
            ds["e"] = ds["e"] * 1000.0
        elif units in ("kg m-2 s-1", "mm s-1"):
            ds["e"] = ds["e"] * 3600.0
        elif units not in ("mm h-1", "mm/h"):
            raise ReadError(f"e in {p} has units {units!r}; expected 'm' (hourly accumulation), 'mm h-1' or "
                            "'kg m-2 s-1'")
    elif "evap" in ds:
        ds["e"] = -ds["evap"] * 3600.0
    if "e" in ds:
        ds["e"].attrs = {"units": "mm h-1", "long_name": "evaporation (ERA5 sign: negative = evaporation)"}

    level_type = "none"
    if "level" in ds.coords:
        units = str(ds["level"].attrs.get("units", "")).strip().lower()
        if units in _PRESSURE_UNITS:
            level_type = "pressure"
        else:
            lv = np.asarray(ds["level"].values)
            # no units: integer numbers up to 137 are L137 model levels, anything else pressures (hPa)
            is_model = bool(np.all(lv == np.round(lv)) and lv.min() >= 1 and lv.max() <= 137)
            level_type = "model" if is_model else "pressure"
    ds.attrs["level_type"] = level_type
    ds.attrs["source"] = str(p)
    return ds


def _need(ds: Any, names: tuple[str, ...], route: str) -> None:
    missing = [n for n in names if n not in ds]
    if missing:
        raise InputError(f"ERA5 dataset lacks {', '.join(missing)} needed for VIMD from {route}")


def _grid(ds: Any) -> tuple[np.ndarray, np.ndarray]:
    for c in ("latitude", "longitude"):
        if c not in ds.coords:
            raise InputError(f"ERA5 dataset has no {c!r} coordinate")
    return np.asarray(ds["latitude"].values, np.float64), np.asarray(ds["longitude"].values, np.float64)


def _levels_da(ds: Any, name: str) -> Any:
    da = ds[name]
    if "level" not in da.dims:
        raise InputError(f"{name} has no 'level' dimension (dims {da.dims}); VIMD from levels needs q, u, v on levels")
    return da.transpose(..., "level", "latitude", "longitude")


def _check_column(p_levels: torch.Tensor, sp: torch.Tensor, route: str) -> None:
    top = float(p_levels.min())
    if top > _MIN_TOP:
        raise InputError(
            f"the highest {route} level is at {top / 100:.0f} hPa: levels up to at least {_MIN_TOP / 100:.0f} hPa "
            "are needed for a vertical moisture integral"
        )
    lowest = p_levels.amax(dim=-3) if p_levels.ndim >= 3 else p_levels.max()
    gap = float((sp - lowest).max())
    if gap > _MAX_GAP_SURFACE:
        raise InputError(
            f"the lowest {route} level lies {gap / 100:.0f} hPa above the surface somewhere: the moist lower "
            f"troposphere is missing (levels within {_MAX_GAP_SURFACE / 100:.0f} hPa of the surface are needed)"
        )


def _unit_text(da: Any, default: str) -> str:
    """A variable's units, lower case, single-spaced, without ERA5's ``**`` (``kg m**-2 s**-1`` -> ``kg m-2 s-1``)."""
    return " ".join(str(da.attrs.get("units", default)).lower().replace("**", "").split())


def _direct_vimd(ds: Any) -> Any:
    """ERA5's own VIMD in kg m-2 h-1: ``vimd`` (accumulated over the hour, kg m-2: the same number) or ``mvimd``
    (mean rate, kg m-2 s-1: x 3600); ERA5's sign (positive = divergence), as :func:`vimd` computes it."""
    name = "vimd" if "vimd" in ds else "mvimd"
    da = ds[name]
    units = _unit_text(da, "kg m-2")
    factor = {"kg m-2": 1.0, "kg m-2 h-1": 1.0, "mm h-1": 1.0, "mm/h": 1.0, "kg m-2 s-1": 3600.0}.get(units)
    if factor is None:
        raise ReadError(f"{name} has units {units!r}; expected kg m-2 (hourly accumulation) or kg m-2 s-1")
    out = (da * factor).rename("vimd")
    out.attrs = {"units": "kg m-2 h-1", "long_name": f"vertically integrated moisture divergence (ERA5 {name}; "
                 "positive = divergence)", "route": "direct"}
    return out


def vimd(
    ds: Any,
    route: str = "auto",
    *,
    table: str | os.PathLike[str] | tuple[Any, Any] | None = None,
    p_top: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> Any:
    """VIMD of an ERA5 dataset in kg m⁻² h⁻¹ (= mm/h), positive = divergence (ERA5 ``vimd`` sign).

    Parameters
    ----------
    ds:
        Dataset from :func:`read_era5` (dims ``time``, [``level``,] ``latitude``, ``longitude``).
    route:
        ``"model"`` (``q``, ``u``, ``v`` on L137 model levels + ``sp`` + the L137 table), ``"pressure"``
        (``q``, ``u``, ``v`` on pressure levels + ``sp``; levels below ground are masked), ``"flux"``
        (``viwve``/``viwvn`` or WAM2layers' ``fx_upper + fx_lower``, ``fy_upper + fy_lower``), ``"direct"``
        (ERA5's own ``vimd``, hourly accumulation in kg m-2, or ``mvimd`` in kg m-2 s-1), or ``"auto"`` (levels
        when ``q``, ``u``, ``v`` are present, else fluxes, else ERA5's own VIMD).
    table:
        L137 coefficients for the model route: a CSV path or a pair ``(a_half, b_half)``; default
        :func:`default_l137_table`.
    p_top:
        Top of the vertical integral in Pa (default: the highest level).
    dtype:
        Computation dtype (float64 by default).

    Returns
    -------
    xarray.DataArray ``vimd`` with the dataset's time/latitude/longitude, ``attrs["route"]``.

    Raises
    ------
    InputError
        Missing variables, no ``level`` dimension, too few levels, levels that stop far above the surface or
        below 300 hPa, unknown route.
    """
    import xarray as xr

    if not isinstance(ds, xr.Dataset):
        raise InputError(f"vimd needs an xarray.Dataset from read_era5, got {type(ds).__name__}")
    if route not in ("auto", "model", "pressure", "flux", "direct"):
        raise InputError(f"route must be 'auto', 'model', 'pressure', 'flux' or 'direct', got {route!r}")
    lat, lon = _grid(ds)
    if route == "auto":
        if all(n in ds for n in ("q", "u", "v")):
            lt = ds.attrs.get("level_type", "none")
            if lt not in ("model", "pressure"):
                raise InputError("cannot tell whether the levels are model or pressure levels; pass route=")
            route = lt
        elif all(n in ds for n in ("viwve", "viwvn")) or all(
            n in ds for n in ("fx_upper", "fx_lower", "fy_upper", "fy_lower")
        ):
            route = "flux"
        elif "vimd" in ds or "mvimd" in ds:  # ERA5's own (hourly accumulation, or mean rate)
            route = "direct"
        else:
            part = [n for n in ("q", "u", "v") if n in ds]
            missing = f"; of q, u, v it lacks {', '.join(n for n in ('q', 'u', 'v') if n not in ds)}" if part else ""
            raise InputError(
                "ERA5 dataset has neither q, u, v on levels nor vertically integrated fluxes (viwve/viwvn or "
                f"fx_upper/fx_lower/fy_upper/fy_lower){missing}; variables present: {sorted(ds.data_vars)}"
            )

    if route == "direct":
        return _direct_vimd(ds)
    if route == "flux":
        if "viwve" in ds and "viwvn" in ds:
            fxa, fya = ds["viwve"], ds["viwvn"]
        else:
            _need(ds, ("fx_upper", "fx_lower", "fy_upper", "fy_lower"), "fluxes")
            fxa, fya = ds["fx_upper"] + ds["fx_lower"], ds["fy_upper"] + ds["fy_lower"]
        fxa = fxa.transpose(..., "latitude", "longitude")
        fya = fya.transpose(..., "latitude", "longitude")
        fx = torch.as_tensor(fxa.values, dtype=dtype)
        fy = torch.as_tensor(fya.values, dtype=dtype)
        template = fxa
    else:
        _need(ds, ("q", "u", "v", "sp"), f"{route} levels")
        q, u, v = (_levels_da(ds, n) for n in ("q", "u", "v"))
        if q.sizes["level"] < 2:
            raise InputError(f"VIMD from {route} levels needs at least 2 levels, got {q.sizes['level']}")
        levels = np.asarray(q["level"].values, np.float64)
        if len(np.unique(levels)) != len(levels):
            raise InputError(f"repeated levels in the dataset: {levels.tolist()}")
        order = np.argsort(levels)  # top → bottom for model numbers and for pressures
        q, u, v = (x.isel(level=order) for x in (q, u, v))
        levels = levels[order]
        sp_da = ds["sp"].transpose(..., "latitude", "longitude")
        sp = torch.as_tensor(sp_da.values, dtype=dtype)
        qt, ut, vt = (torch.as_tensor(x.values, dtype=dtype) for x in (q, u, v))
        if route == "model":
            if np.any(levels != np.round(levels)) or levels.min() < 1:
                raise InputError(f"model levels must be positive integers (L137 numbers), got {levels.tolist()}")
            a, b = (table if isinstance(table, tuple) else read_l137_table(table))
            if levels.max() > len(a) - 1:
                raise InputError(f"model level {int(levels.max())} is beyond the table's {len(a) - 1} levels")
            p = model_level_pressure(sp, levels.astype(np.int64), a, b)
        else:
            units = str(ds["level"].attrs.get("units", "hPa")).strip().lower()
            scale = _PRESSURE_UNITS.get(units)
            if scale is None:
                raise InputError(f"unknown pressure-level units {units!r} (expected hPa/millibars or Pa)")
            p = torch.as_tensor(levels * scale, dtype=dtype)
        _check_column(p, sp, route)
        fx, fy = moisture_flux(qt, ut, vt, p, sp, p_top=p_top)
        template = sp_da
    out = spherical_divergence(fx, fy, lat, lon) * 3600.0
    da = xr.DataArray(out.numpy(), coords=template.coords, dims=template.dims, name="vimd")
    da.attrs = {
        "units": "kg m-2 h-1",
        "long_name": "vertically integrated moisture divergence (instantaneous; positive = divergence)",
        "route": route,
    }
    return da
