"""Vertically integrated moisture divergence (VIMD), functional and differentiable, in torch.

VIMD is the horizontal divergence of the vertically integrated water-vapour flux,

    F = (Fx, Fy) = (1/g) ∫ q (u, v) dp            [kg m⁻¹ s⁻¹]
    VIMD = ∇·F = 1/(R cos φ) [∂Fx/∂λ + ∂(Fy cos φ)/∂φ]   [kg m⁻² s⁻¹]

returned here in **kg m⁻² h⁻¹ (= mm/h of water)**, with ERA5's sign: **positive = divergence** (moisture
export), negative = convergence (which favours precipitation). ERA5's own ``vimd`` (parameter 213) is the same
quantity accumulated over the hour (kg m⁻²); values computed here are instantaneous at the valid time.

Three routes:

- :func:`moisture_flux` on **pressure levels** (``p`` of shape ``(L,)`` in Pa, levels below ground ``p > sp``
  carry nothing below the surface) or on **model levels** (``p`` the full-level pressures, e.g. from
  :func:`model_level_pressure` with the ERA5 L137 coefficients); then :func:`spherical_divergence`;
- :func:`spherical_divergence` of given vertically integrated fluxes (ERA5 ``viwve``/``viwvn`` or the summed
  WAM2layers layer fluxes);
- :func:`vimd` does either, from tensors, or from an :class:`xarray.Dataset` read by
  :func:`skydiff.downscale.era5.read_era5` (it then calls :func:`skydiff.downscale.era5.vimd`).

Vertical quadrature ("mid-point layers"): the column is cut at the mean pressures of neighbouring levels; level
``k`` carries the pressure thickness between its two cuts, clipped to ``[p_top, sp]``. The lowest level above
ground therefore extends down to the surface, except that a level just below ground keeps the part of its layer
between its upper cut and the surface (its values there: those of the level above when the product masks them
as NaN); the levels further down get zero weight. ``p_top`` defaults to
the pressure of the highest level (nothing is extrapolated above it). With only a subset of levels (the 22
stored ERA5 model levels, or 20 pressure levels) the integral is approximate.

Horizontal derivatives: centred differences inside the grid and one-sided differences at its edges (the grid
may be non-uniform and latitudes may decrease, as in ERA5 files). All functions take and return tensors (float32
or float64, any device) and are differentiable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._compat import check_real, tensor_numpy, to_tensor
from ..errors import InputError, ShapeError

__all__ = [
    "G",
    "EARTH_RADIUS",
    "model_level_pressure",
    "layer_thickness",
    "moisture_flux",
    "spherical_divergence",
    "vimd",
]

#: Standard gravity, m s⁻² (as in the IFS).
G = 9.80665
#: Earth radius used by the IFS / ERA5, m.
EARTH_RADIUS = 6371229.0


def _t(x: Any, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    if x is None:
        raise InputError(f"{name} is required")
    if isinstance(x, torch.Tensor):
        t = x
        check_real(t, name)
    else:
        arr = np.asarray(x)
        check_real(arr, name, "iuf")
        t = to_tensor(arr.astype(np.float64) if arr.dtype.kind != "f" else arr)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    elif t.dtype in (torch.float16, torch.bfloat16):  # R cos(phi) ~ 4e6 and 1e5 Pa overflow half precision
        t = t.to(torch.float32)
    if like is not None:
        t = t.to(dtype=like.dtype, device=like.device)
    return t


def model_level_pressure(sp: Any, levels: Any, a_half: Any, b_half: Any) -> torch.Tensor:
    """Full-level pressures of hybrid model levels, ``p_k = (p_{k−½} + p_{k+½}) / 2``, ``p_{n} = a_n + b_n·sp``.

    Parameters
    ----------
    sp:
        Surface pressure in Pa, shape ``(..., H, W)`` (e.g. ``(T, H, W)``).
    levels:
        Model-level numbers ``k`` (1 … ``len(a_half) − 1``, 1 = top), shape ``(L,)``, e.g. the 22 stored ERA5
        levels 20 … 137.
    a_half, b_half:
        Half-level coefficients ``a`` (Pa) and ``b`` (1) for half levels ``0 … N`` (ERA5 L137: 138 values,
        half level ``n`` is the bottom of model level ``n``).

    Returns
    -------
    Tensor ``(..., L, H, W)`` in Pa (dtype/device of ``sp``).
    """
    s = _t(sp, "sp")
    a = _t(a_half, "a_half", s)
    b = _t(b_half, "b_half", s)
    if a.ndim != 1 or a.shape != b.shape or a.numel() < 2:
        raise ShapeError(
            f"a_half and b_half must be 1-D of the same length ≥ 2, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    lv = tensor_numpy(levels)
    if lv.ndim != 1 or lv.size == 0 or lv.dtype.kind not in "iuf" or np.any(lv != np.round(lv)):
        raise InputError(f"levels must be a 1-D sequence of integer model-level numbers, got {levels!r}")
    lv = lv.astype(np.int64)
    n = a.numel() - 1
    if lv.min() < 1 or lv.max() > n:
        raise InputError(
            f"model levels must lie in 1 … {n} for a table of {n + 1} half levels, got {lv.min()} … {lv.max()}"
        )
    if s.ndim < 2:
        raise ShapeError(f"sp must be (..., H, W), got shape {tuple(s.shape)}")
    idx = torch.from_numpy(lv).to(s.device)
    a_full = 0.5 * (a[idx - 1] + a[idx])
    b_full = 0.5 * (b[idx - 1] + b[idx])
    shape = (len(lv), 1, 1)
    return a_full.reshape(shape) + b_full.reshape(shape) * s.unsqueeze(-3)


def layer_thickness(p: torch.Tensor, sp: torch.Tensor | None = None, p_top: float | None = None) -> torch.Tensor:
    """Pressure thickness (Pa) carried by each level with the mid-point layer rule (see the module docstring).

    ``p`` is ``(L,)`` (pressure levels) or ``(..., L, H, W)`` (model levels), ordered from the top (lowest
    pressure) to the bottom; ``sp`` ``(..., H, W)`` clips the column at the surface (a level just below it keeps
    the part of its layer above the surface, the levels further down get zero thickness). Returns a tensor that
    broadcasts against ``(..., L, H, W)``.
    """
    if p.ndim == 1:
        p = p.reshape(-1, 1, 1)
    if p.ndim < 3:
        raise ShapeError(f"p must be (L,) or (..., L, H, W), got shape {tuple(p.shape)}")
    nl = p.shape[-3]
    if nl < 2:
        raise InputError(f"at least 2 levels are needed for a vertical integral, got {nl}")
    upper_p, lower_p = p.narrow(-3, 0, nl - 1), p.narrow(-3, 1, nl - 1)
    if bool((lower_p <= upper_p).any()):
        raise InputError("levels must be ordered from the top (low pressure) to the bottom, strictly increasing in p")
    first = p.narrow(-3, 0, 1)
    if p_top is not None:
        try:
            ok = math.isfinite(float(p_top)) and float(p_top) >= 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"p_top must be a pressure in Pa >= 0, got {p_top!r}")
    top = first if p_top is None else torch.full_like(first, float(p_top))
    if sp is None:  # without a surface the lowest level reaches half a layer below itself
        last = p.narrow(-3, nl - 1, 1)
        bottom = last + 0.5 * (last - p.narrow(-3, nl - 2, 1))
    else:
        bottom = torch.full_like(first, float("inf"))
    cuts = torch.cat([top, 0.5 * (upper_p + lower_p), bottom], dim=-3)
    if p_top is not None:  # each layer clipped to [p_top, sp]: levels above p_top carry nothing
        cuts = torch.maximum(cuts, top)
    if sp is not None:
        cuts = torch.minimum(cuts, sp.to(p.dtype).unsqueeze(-3))
    return torch.clamp(cuts.narrow(-3, 1, nl) - cuts.narrow(-3, 0, nl), min=0.0)


def moisture_flux(
    q: Any, u: Any, v: Any, p: Any, sp: Any | None = None, *, p_top: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertically integrated water-vapour flux ``(Fx, Fy) = (1/g) Σ_k q_k (u_k, v_k) Δp_k`` in kg m⁻¹ s⁻¹.

    Parameters
    ----------
    q, u, v:
        Specific humidity (kg/kg) and wind components (m/s), shape ``(..., L, H, W)``, levels from the top down.
    p:
        Level pressures in Pa: ``(L,)`` for pressure levels or ``(..., L, H, W)`` for model levels.
    sp:
        Surface pressure in Pa ``(..., H, W)``; levels below the surface carry nothing below it and the lowest level
        above it reaches down to ``sp``. Required for pressure levels that may lie below ground.
    p_top:
        Top of the column in Pa (default: the highest level's pressure).

    Returns
    -------
    (fx, fy), each ``(..., H, W)``, eastward and northward.
    """
    qt = _t(q, "q")
    ut = _t(u, "u", qt)
    vt = _t(v, "v", qt)
    if qt.ndim < 3:
        raise ShapeError(f"q, u, v must be (..., L, H, W), got shape {tuple(qt.shape)}")
    if ut.shape != qt.shape or vt.shape != qt.shape:
        raise ShapeError(
            f"q, u, v must have the same shape, got {tuple(qt.shape)}, {tuple(ut.shape)}, {tuple(vt.shape)}"
        )
    _check_kg_kg(qt)
    pt = _t(p, "p", qt)
    if pt.ndim == 1:
        if pt.numel() != qt.shape[-3]:
            raise ShapeError(f"p has {pt.numel()} levels but q has {qt.shape[-3]} (dimension -3)")
    elif pt.shape != qt.shape:
        raise ShapeError(f"p must be (L,) or the shape of q {tuple(qt.shape)}, got {tuple(pt.shape)}")
    st = None if sp is None else _t(sp, "sp", qt)
    if st is not None and st.shape != qt.shape[:-3] + qt.shape[-2:]:
        raise ShapeError(
            f"sp must have the shape of q without the level dimension, got {tuple(st.shape)} for q {tuple(qt.shape)}"
        )
    _check_pa(pt, "p")
    if st is not None:
        _check_pa(st, "sp")
    if st is not None and bool(torch.isnan(st).any()):
        raise InputError("sp (surface pressure) holds NaN")
    dp = layer_thickness(pt, st, p_top)
    if st is not None:  # masked pressure-level products hold NaN below ground: the level above's values there
        below = pt.reshape(-1, 1, 1) > st.unsqueeze(-3) if pt.ndim == 1 else pt > st.unsqueeze(-3)
        below = below.expand_as(qt)
        qt, ut, vt = (_fill_down(x, below) for x in (qt, ut, vt))
    # levels without weight may hold NaN: 0 there, instead of 0 * NaN spreading NaN to the column and its neighbours
    weighted = dp > 0
    zero = torch.zeros((), dtype=qt.dtype, device=qt.device)
    fx = torch.where(weighted, qt * ut * dp, zero).sum(-3) / G
    fy = torch.where(weighted, qt * vt * dp, zero).sum(-3) / G
    return fx, fy


def _fill_down(x: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
    """NaN at the levels below ground replaced by the value of the level above (levels on dimension -3, top
    first): a level just below the surface still carries the part of its layer above ground (mid-point rule),
    and a product that masks it would otherwise turn the column NaN (40 % of a pressure-level VIMD field)."""
    if not bool((torch.isnan(x) & below).any()):
        return x
    levels = list(x.unbind(-3))
    for k in range(1, len(levels)):
        levels[k] = torch.where(torch.isnan(levels[k]) & below.select(-3, k), levels[k - 1], levels[k])
    return torch.stack(levels, dim=-3)


def _check_pa(p: torch.Tensor, name: str) -> None:
    """Refuse pressures that are not in Pa: a column's largest pressure lies between ~11 hPa and ~1 100 hPa, so a
    maximum below 1 100 is hPa (ERA5 pressure levels are labelled in hPa) and one above 120 000 is no pressure."""
    finite = p[torch.isfinite(p)]
    if finite.numel() == 0:
        return
    top = float(finite.max())
    if top < 1100.0:
        raise InputError(f"{name} must be in Pa; its largest value is {top:g}, which looks like hPa "
                         f"(multiply by 100)")
    if top > 120000.0 or float(finite.min()) < 0.0:
        raise InputError(f"{name} must be pressures in Pa between 0 and 120 000, got values in "
                         f"[{float(finite.min()):g}, {top:g}]")


def _check_kg_kg(q: torch.Tensor) -> None:
    """Refuse specific humidity that is not in kg/kg: real values lie in [0, ~0.04]; g/kg (ERA5's GRIB tables show
    both) would give a VIMD 1000 times too large. Rounding makes tiny negative values (ERA5 model levels hold
    some of -1e-6), so only a clearly negative humidity is refused."""
    finite = q[torch.isfinite(q)]
    if finite.numel() == 0:
        return
    top, low = float(finite.max()), float(finite.min())
    if top > 0.1:
        raise InputError(f"q (specific humidity) must be in kg/kg; its largest value is {top:g}, which looks like "
                         "g/kg (divide by 1000)")
    if low < -1e-3:
        raise InputError(f"q (specific humidity) must be >= 0 kg/kg, got values down to {low:g}")


def _diff(f: torch.Tensor, coord: torch.Tensor, dim: int) -> torch.Tensor:
    """∂f/∂coord along ``dim``: centred inside, one-sided at both edges (non-uniform coordinates allowed)."""
    n = f.shape[dim]
    if n < 2:
        raise ShapeError(f"need at least 2 grid points along dimension {dim} for a derivative, got {n}")
    shape = [1] * f.ndim
    shape[dim] = -1
    c = coord.reshape(-1)

    first = (f.narrow(dim, 1, 1) - f.narrow(dim, 0, 1)) / (c[1] - c[0])
    last = (f.narrow(dim, n - 1, 1) - f.narrow(dim, n - 2, 1)) / (c[n - 1] - c[n - 2])
    if n == 2:
        return torch.cat([first, last], dim=dim)
    inner = (f.narrow(dim, 2, n - 2) - f.narrow(dim, 0, n - 2)) / (c[2:] - c[:-2]).reshape(shape)
    return torch.cat([first, inner, last], dim=dim)


def spherical_divergence(fx: Any, fy: Any, lat: Any, lon: Any, *, radius: float = EARTH_RADIUS) -> torch.Tensor:
    """Horizontal divergence on the sphere, ``1/(R cos φ) [∂Fx/∂λ + ∂(Fy cos φ)/∂φ]``.

    Parameters
    ----------
    fx, fy:
        Eastward and northward components, shape ``(..., H, W)`` (rows = latitudes, columns = longitudes).
    lat, lon:
        Latitudes ``(H,)`` and longitudes ``(W,)`` in degrees, each increasing or decreasing (e.g. decreasing
        latitudes); longitudes may cross 0/360 or the date line (unwrapped).
    radius:
        Sphere radius in m (default the IFS value 6 371 229 m).

    Returns
    -------
    Tensor ``(..., H, W)``: units of ``fx`` per metre (kg m⁻¹ s⁻¹ → kg m⁻² s⁻¹).
    """
    fxt = _t(fx, "fx")
    fyt = _t(fy, "fy", fxt)
    if fxt.ndim < 2 or fxt.shape != fyt.shape:
        raise ShapeError(f"fx and fy must be (..., H, W) of the same shape, got {tuple(fxt.shape)}, {tuple(fyt.shape)}")
    la, lo = _t(lat, "lat", fxt), _t(lon, "lon", fxt)
    if la.ndim > 1 or lo.ndim > 1:  # a regular lat-lon grid: 2-D coordinate arrays were reported as sizes
        raise ShapeError(f"lat and lon must be the 1-D coordinates of a regular grid (H,) and (W,), got shapes "
                         f"{tuple(la.shape)} and {tuple(lo.shape)}")
    la, lo = la.reshape(-1), lo.reshape(-1)
    h, w = fxt.shape[-2:]
    if la.numel() != h or lo.numel() != w:
        raise ShapeError(f"lat ({la.numel()}) and lon ({lo.numel()}) must match the grid (H, W) = ({h}, {w})")
    if bool((la.abs() >= 90).any()):
        raise InputError("latitudes must lie strictly between -90 and 90 degrees (cos φ = 0 at the poles)")
    if not (bool(torch.isfinite(la).all()) and bool(torch.isfinite(lo).all())):
        raise InputError("lat and lon must be finite")
    # longitudes across the date line or Greenwich on 0..360 (359.75, 0, 0.25): unwrapped, else the step there
    # was -359.75 degrees and the zonal derivative next to it collapsed
    lo = torch.from_numpy(np.unwrap(lo.detach().cpu().double().numpy(), period=360.0)).to(lo)
    phi = la * (math.pi / 180.0)
    lam = lo * (math.pi / 180.0)
    for name, c in (("lat", phi), ("lon", lam)):
        d = torch.diff(c)
        if c.numel() > 1 and not (bool((d > 0).all()) or bool((d < 0).all())):
            raise InputError(f"{name} must be strictly increasing or decreasing (no repeated or unsorted values)")
    cos = torch.cos(phi).reshape(h, 1)
    ddl = _diff(fxt, lam, -1)
    ddp = _diff(fyt * cos, phi, -2)
    return (ddl + ddp) / (radius * cos)


def vimd(
    q: Any = None,
    u: Any = None,
    v: Any = None,
    *,
    lat: Any = None,
    lon: Any = None,
    p: Any = None,
    sp: Any = None,
    fx: Any = None,
    fy: Any = None,
    p_top: float | None = None,
    **kwargs: Any,
) -> Any:
    """Vertically integrated moisture divergence in **kg m⁻² h⁻¹ (= mm/h)**, positive = divergence (ERA5 sign).

    Call it in one of three ways:

    - ``vimd(q, u, v, p=p, sp=sp, lat=lat, lon=lon)``: from ``(..., L, H, W)`` levels (pressure levels: ``p``
      of shape ``(L,)``; model levels: ``p`` full-level pressures, see :func:`model_level_pressure`);
    - ``vimd(fx=fx, fy=fy, lat=lat, lon=lon)``: from vertically integrated fluxes in kg m⁻¹ s⁻¹;
    - ``vimd(ds, route="auto")`` with an :class:`xarray.Dataset` from
      :func:`skydiff.downscale.era5.read_era5`: returns a :class:`xarray.DataArray` (see
      :func:`skydiff.downscale.era5.vimd`, which receives ``kwargs``).

    ``p_top`` (Pa, levels only) stops the column integral at that pressure, as in :func:`moisture_flux`.

    Returns
    -------
    A torch tensor ``(..., H, W)`` also for numpy input (the device of the inputs; float64 for numpy, the inputs'
    float dtype for tensors, half precision computed and returned in float32), or a DataArray for a Dataset input.
    """
    try:
        import xarray as xr
    except ImportError:  # pragma: no cover - xarray is a dependency
        xr = None
    if xr is not None and isinstance(q, xr.Dataset):
        from .era5 import vimd as vimd_dataset

        given = [k for k, x in (("u", u), ("v", v), ("p", p), ("sp", sp), ("lat", lat), ("lon", lon), ("fx", fx),
                                ("fy", fy)) if x is not None]
        if given:
            raise InputError(f"with a Dataset, vimd takes its fields from it; {given} would be ignored")
        return vimd_dataset(q, p_top=p_top, **kwargs)
    if kwargs:
        raise InputError(f"unexpected keyword(s) {sorted(kwargs)} (they are only for a Dataset input)")
    if lat is None or lon is None:
        raise InputError("lat and lon (degrees) are required to compute a divergence on the sphere")
    if fx is not None or fy is not None:
        if fx is None or fy is None:
            raise InputError("give both fx and fy (vertically integrated eastward / northward fluxes)")
        if q is not None:
            raise InputError("give either q, u, v (levels) or fx, fy (integrated fluxes), not both")
        fxt = _t(fx, "fx")
        fyt = _t(fy, "fy", fxt)
    else:
        if q is None or u is None or v is None or p is None:
            missing = [n for n, x in (("q", q), ("u", u), ("v", v), ("p", p)) if x is None]
            raise InputError(f"missing {', '.join(missing)}: give q, u, v and p (or fx and fy)")
        fxt, fyt = moisture_flux(q, u, v, p, sp, p_top=p_top)
    return spherical_divergence(fxt, fyt, lat, lon) * 3600.0
