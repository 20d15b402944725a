"""The downscaling product: :func:`downscale`, plus netCDF output and a quick-look figure for the CLI.

>>> from skydiff.downscale import downscale
>>> ens = downscale(lowres_mm_per_h, factor=4, model="radar", members=8)      # doctest: +SKIP
>>> ens.shape            # (8, T, 4h, 4w) for lowres (T, h, w); (8, 4h, 4w) for (h, w)   # doctest: +SKIP

Models (shipped weights in ``skydiff/downscale/weights``):

==============  ==================  ============================================================================
``model``       registry name       what
==============  ==================  ============================================================================
``"radar"``     ``edm-radar``       4 km → 1 km radar rain, EDM diffusion in pseudo-precipitation space
``"radar-tp"``  ``edm-radar-tp``    the TP-only baseline: the same diffusion model in ``log1p`` rain space
``"era5"``      ``edm-era5``        ERA5 hourly TP 1° → 0.25°, PP space from TP + VIMD (``vimd=`` required)
==============  ==================  ============================================================================

A registry name, a path to saved weights or an :class:`~skydiff.downscale.diffusion.EDMDownscaler` instance also
work.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._compat import autocast_dtype, nan_filled
from ..errors import InputError, ShapeError, check_device, check_int, warn
from ..io.units import MAX_PLAUSIBLE_RAIN_MM_H, XY_DIMS, is_rain_rate, time_dim, warn_implausible_rain
from ..registry import create_model, load_model, weights_paths, weights_version
from .diffusion import TILE, TILE_OVERLAP, EDMDownscaler  # (importing it registers the edm-* models)

__all__ = ["downscale", "get_downscaler", "MODELS", "write_downscaled", "plot_downscaled", "read_lowres"]

MODELS = {"radar": "edm-radar", "radar-tp": "edm-radar-tp", "era5": "edm-era5"}
# fewer Heun steps give a warning: on 16 radar validation tiles (edm-radar) the p99.9 of the ensemble was +42 % at
# 6 steps, +14 % at 8 and +3 % at 12 against 18 steps (edm-radar-tp: +25 %, +10 %, +2 %)
MIN_GOOD_STEPS = 12
MAX_PLAUSIBLE_MM_H = MAX_PLAUSIBLE_RAIN_MM_H  # a downscaled rain rate above this is an unconverged sample, refused
# downscale(conserve=...): restore the input's block means where the learned PP decoder saturates ("heavy", chosen by
# the validation rule of benchmarks/RESULTS.md §8 "Heavy rain"), everywhere by rescaling blocks (True) or by a smooth
# additive correction ("smooth"), or nowhere (False)
CONSERVE_DEFAULT: bool | str = "heavy"
CONSERVE_MODES = ("heavy", "smooth")  # the string values of conserve=
# downscale(trim_dry=True) samples only the box around the wet low-res pixels widened by this many of them (32 km at
# 4 km): beyond 8 low-res pixels from rain the untrimmed radar model put rain on 1e-6 of the pixels (<= 0.03 mm/h)
DRY_MARGIN = 8
_CACHE: dict[str, EDMDownscaler] = {}


def get_downscaler(model: Any = "radar") -> EDMDownscaler:
    """The (cached) downscaler for a short name, registry name, weights path or instance."""
    if isinstance(model, EDMDownscaler):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise InputError(f"model must be a name ({', '.join(MODELS)}), a weights path or an EDMDownscaler, "
                         f"got {type(model).__name__}")
    key = os.fspath(model)
    name = MODELS.get(key.lower(), key.lower())
    if name not in MODELS.values() and weights_paths(Path(key).expanduser())[0].is_file():  # a weights path:
        key = str(weights_version(Path(key).expanduser()))  # cached per file version (weights saved again are read)
    if key not in _CACHE:
        if name in MODELS.values():  # registered by the diffusion module imported above
            m = create_model(name, pretrained=True)
        elif Path(os.fspath(model)).with_suffix(".json").is_file():
            m = load_model(os.fspath(model))
        else:
            raise InputError(f"unknown downscaling model {os.fspath(model)!r}; use one of {', '.join(MODELS)} or a "
                             "weights path")
        if not isinstance(m, EDMDownscaler):
            raise InputError(f"{os.fspath(model)!r} is not a downscaling model")
        _CACHE[key] = m.eval()
    return _CACHE[key]


def _warn_decoder_saturation(m: EDMDownscaler, lo: torch.Tensor, limit: float | None, conserve: Any) -> None:
    """Warn when low-resolution rain reaches ``limit``, the rate where the model's learned PP decoder saturates
    (unless the block means are restored anyway)."""
    if conserve or limit is None or not lo.numel():  # (conserve True or "heavy" restores those blocks)
        return
    n = int((lo >= limit).sum())
    if n:
        warn(f"{n} low-resolution pixel(s) at or above {limit:.3g} mm/h: the learned pseudo-precipitation decoder of "
             f"{m.model_name!r} saturates there, so the downscaled block means come out low (shipped radar model, "
             "uniform 4 x 4 blocks: -19 % at 58 mm/h, -30 % at 80 mm/h); pass conserve='heavy' (those blocks) or "
             "conserve=True (all; CLI: --conserve heavy|all) to restore the block means")


def _as_tensor(x: Any, name: str) -> tuple[torch.Tensor, str]:
    if isinstance(x, torch.Tensor):
        return x, "torch"
    try:
        import xarray as xr

        if isinstance(x, xr.DataArray):
            if "member" in x.dims:  # (the output's own dimension)
                raise ShapeError(f"{name} has a 'member' dimension (an ensemble, e.g. an earlier downscaling): "
                                 "select one member (.isel(member=i)) or rename the dimension")
            units = str(x.attrs.get("units", "mm/h"))
            if not is_rain_rate(units):
                raise InputError(f"{name} must be in mm/h; the DataArray has units {units!r} (read_lowres and "
                                 "skydiff.io.read_radar convert rain units to mm/h)")
            return torch.from_numpy(np.ascontiguousarray(time_first(x).values, dtype=np.float32)), "xarray"
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(nan_filled(x))  # masked pixels are no data (NaN, refused with a count), not their fill values
    if a.dtype == object or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{name} must be a numeric array (numpy, torch or xarray), got dtype {a.dtype}")
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), "numpy"


_YX = {xy: xy[::-1] for xy in XY_DIMS}


def time_first(da: Any) -> Any:
    """A DataArray with its time dimension first (:func:`skydiff.io.units.time_dim`: ``time``, ``valid_time`` or
    the one with datetimes) and a recognised ``(x, y)`` / ``(lon, lat)`` pair in ``(y, x)`` order (rows, columns):
    :func:`downscale` reads the last two dimensions as the grid and the one before as time. A time dimension that
    would end up in the grid (a 2-D field over time and one space dimension) is a :class:`ShapeError`."""
    dims = list(da.dims)
    td = time_dim(da)
    if td is not None and dims[0] != td:
        dims.remove(td)
        dims.insert(0, td)
    if td is not None and td in dims[-2:]:
        raise ShapeError(f"the DataArray's dimensions {tuple(da.dims)} leave its time dimension {td!r} among the "
                         "last two, which are read as the grid (y, x)")
    if tuple(dims[-2:]) in _YX:
        dims[-2:] = _YX[tuple(dims[-2:])]
    return da.transpose(*dims) if dims != list(da.dims) else da


def _check_rain(x: torch.Tensor, name: str, allow_negative: bool = False) -> None:
    if x.ndim not in (2, 3):
        raise ShapeError(f"{name} must be (h, w) or (T, h, w), got shape {tuple(x.shape)}")
    if x.ndim == 3 and x.shape[0] == 0:
        raise ShapeError(f"{name} has no time steps (shape {tuple(x.shape)})")
    if x.shape[-1] < 2 or x.shape[-2] < 2:
        raise ShapeError(f"{name} needs at least 2 × 2 pixels, got {tuple(x.shape[-2:])}")
    n_nan = int(torch.isnan(x).sum())
    n_inf = int(torch.isinf(x).sum())
    if n_nan or n_inf:
        raise InputError(f"{name} has {n_nan} NaN and {n_inf} infinite value(s) of {x.numel()}: fill or crop the "
                         "no-data pixels first (downscaling needs complete fields)")
    if not allow_negative:
        n_neg = int((x < 0).sum())
        if n_neg:
            raise InputError(f"{name} has {n_neg} negative rain rate(s) of {x.numel()} (min {float(x.min()):.3g} "
                             "mm/h): rain must be >= 0 mm/h")


def downscale(lowres: Any, factor: int = 4, model: Any = "radar", members: int = 8, steps: int = 18,
              seed: int | None = None, progress: bool = True, *, vimd: Any = None, static: Any = None,
              s_churn: float = 0.0, batch_size: int = 64, conserve: bool | str = CONSERVE_DEFAULT,
              label: str | None = "auto", trim_dry: bool = True, tile: int | None = TILE,
              tile_overlap: int = TILE_OVERLAP, precision: str | None = None, decoder: str | None = None,
              device: str | torch.device | None = None) -> Any:
    """Stochastic downscaling of low-resolution rain to a ``factor``-times finer grid.

    Parameters
    ----------
    lowres
        Rain rate in mm/h, ``(h, w)`` or ``(T, h, w)``; numpy array, torch tensor (computation on its device) or
        xarray DataArray. No NaN, no negative values.
    factor
        Refinement factor; must equal the model's (4 for the shipped models).
    model
        ``"radar"`` (default), ``"radar-tp"``, ``"era5"``, a registry name, a weights path or an
        :class:`~skydiff.downscale.diffusion.EDMDownscaler`. A named model runs on the input's device; an instance
        is not moved: it samples on its own device, and the result comes back on the input's.
    members
        Ensemble size.
    steps
        Heun sampling steps (``2 steps - 1`` network evaluations per field).
    seed
        Random seed for a reproducible ensemble (None: torch's global generator).
    progress
        tqdm bar over the sampling steps.
    vimd
        Low-resolution VIMD in mm/h, same shape as ``lowres`` (for ``model="era5"``).
    static
        Static high-resolution fields ``(n_static, H, W)`` for models trained with them.
    s_churn
        EDM stochastic churn (0 = deterministic Heun from random initial noise).
    batch_size
        Fields per network call.
    conserve
        ``True``: rescale every member so that its ``factor × factor`` block means equal ``lowres`` exactly
        (:func:`~skydiff.downscale.baselines.match_block_means`). ``"heavy"``: only the blocks at or above the
        rate where the model's learned PP decoder saturates (:meth:`~skydiff.downscale.pseudo.PseudoPrecip.
        learned_decoder_limit`: 48 mm/h for the shipped radar model, ~4.7 mm/h for the ERA5 one; nothing for models
        without a learned PP decoder; the default,
        :data:`CONSERVE_DEFAULT`, chosen on validation tiles: ``benchmarks/RESULTS.md`` §8 "Heavy rain").
        ``"smooth"``: every block, exactly, by a smooth additive correction of the rain pixels
        (:func:`~skydiff.downscale.baselines.smooth_block_means`), which unlike rescaling leaves the amplitude of
        the small scales as sampled. ``False``: none.
    label
        For a model conditioned on the high-resolution product (``EDMDownscaler(labels=...)``, e.g. ``"knmi-rap"``,
        ``"knmi-dbz"``, ``"fmi"``, ``"mrms"``): the product whose small-scale texture to imitate; None = unknown
        (the training mixture). ``"auto"`` (default): the product of an xarray input read by
        :func:`skydiff.io.read_radar` (:func:`resolve_label`), else unknown; always None for a model without
        labels. A model without labels refuses a named label.
    trim_dry
        For models on rain alone (not VIMD or static fields): sample only the bounding box of the wet low-res
        pixels (over all times) widened by ``DRY_MARGIN`` = 8 low-res pixels; the output is 0 mm/h outside it, and
        an input without rain gives a dry ensemble at once. The networks are convolutional, so this only saves
        time where much of the grid is dry (a radar composite read with no-data as 0, a CONUS MRMS frame);
        measured on a KNMI composite: the untrimmed model put rain farther than 8 low-res pixels from any rain on
        1e-6 of those pixels, at most 0.03 mm/h. The draw differs from an untrimmed one with the same seed (the
        noise has another shape). ``False``: always the whole grid.
    tile, tile_overlap
        Fields larger than ``tile`` high-res pixels are denoised in overlapping windows of that size, blended at
        every sampling step (:meth:`~skydiff.downscale.diffusion.EDMDownscaler.sample`): the network normalises
        over its whole input and was trained on 32 × 32 crops and scored on 64 × 64 tiles; one pass over a whole
        KNMI composite raised the rain mass by ~27 % (``benchmarks/RESULTS.md`` §8). None: one pass.
    precision
        None or ``"full"`` (default), ``"bfloat16"`` or ``"float16"``: the U-Net's layers run in that type
        (``torch.autocast``), the sampler and the decoding in full precision. ``"bfloat16"`` sampled ~2x faster on
        a CPU with AVX512-BF16; what it changes in the scores: ``benchmarks/RESULTS.md`` §8.
    decoder
        For models in pseudo-precipitation space: ``"learned"`` (the shipped models' own) or ``"inverse"`` (the
        exact inverse of a TP-only encoder). The shipped ``pp-radar``'s learned decoder returns rates within 2 %
        up to 48 mm/h and saturates above (100 → 81, 200 → 115 mm/h in a round trip), so heavy rain comes out
        low: uniform 4 × 4 blocks of 58 / 80 mm/h gave block means 19 / 30 % low, real validation tiles 17 % at
        ≥ 48 mm/h; ``conserve="heavy"`` (the default) restores the block means there (with ``conserve=False`` a
        warning says where). ``"inverse"`` is no cure there: the sampled PP tail is too wide for heavy rain, and
        decoded exactly it gave block means 33-40 % high at 20-40 mm/h and > 1 000 mm/h peaks at 58 mm/h. On
        validation tiles (little heavy rain) it gave a better spectrum and CRPS but a p99.9 bias 1 point higher than
        the learned decoder (``benchmarks/RESULTS.md`` §8).
    device
        Where to sample (``"cuda"``, ``"cuda:1"``, ``"cpu"``); None (default): the input's device (the CPU for numpy
        and xarray input). A named model moves there; the result comes back as the input came.

    Returns
    -------
    Same kind as the input (numpy, torch on the input's device, or xarray DataArray with dims ``member`` and the
    input's own dimension names, e.g. ``time``, ``y``, ``x``): ``(members, T, h·factor, w·factor)`` or
    ``(members, h·factor, w·factor)``, rain rate in mm/h, >= 0.

    Raises
    ------
    ShapeError
        Input not 2-D or 3-D.
    InputError
        NaN/infinite or negative rain (with counts), a factor that differs from the model's, missing VIMD for a
        model that needs it, unknown model or precision, and a result above 1 000 mm/h (no rain rate: a model
        or decoder out of its range). A ``vimd`` of another shape than the input is a ShapeError.
    """
    x, kind = _as_tensor(lowres, "lowres")
    _check_rain(x, "lowres")
    warn_implausible_rain(x, "lowres")
    autocast_dtype(precision)  # a bad precision is refused even where nothing is sampled (a dry input)
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or int(factor) < 1:
        raise InputError(f"factor must be an integer >= 1, got {factor!r}")
    m = get_downscaler(model)
    asked = label
    label = resolve_label(label, getattr(lowres, "attrs", None), m.labels)
    if asked == "auto" and m.labels and label is None:
        warn(f"lowres names no radar product ({'a plain array' if kind != 'xarray' else 'no product attributes'}):"
             f" {m.model_name!r} samples the texture of its training mixture; pass label= one of "
             f"{', '.join(map(repr, m.labels))} for the product the field comes from (it sets the small-scale "
             "spectrum, benchmarks/RESULTS.md section 8), or label=None to keep the mixture without this warning")
    if int(factor) != m.factor:
        raise InputError(f"model {m.model_name!r} downscales by a factor of {m.factor}, not {int(factor)}; "
                         f"pass factor={m.factor} or train a model for factor {int(factor)}")
    single = x.ndim == 2
    home = x.device  # where the result goes back to
    xb = (x[None] if single else x).to(check_device(device, "downscaling") or home, torch.float32)
    v = None
    if not m.use_vimd and vimd is not None:
        raise InputError(f"model {m.model_name!r} downscales rain alone; it takes no vimd (the 'era5' model does)")
    if m.use_vimd:
        if vimd is None:
            raise InputError(f"model {m.model_name!r} needs low-resolution VIMD (mm/h): pass vimd=")
        v, _ = _as_tensor(vimd, "vimd")
        _check_rain(v, "vimd", allow_negative=True)
        if tuple(v.shape) != tuple(x.shape):
            raise ShapeError(f"vimd shape {tuple(v.shape)} differs from lowres shape {tuple(x.shape)}")
        v = (v[None] if single else v).to(xb)
    st = None
    if static is not None:
        st, _ = _as_tensor(static, "static")
        st = st.to(xb)
    in_device, model_device = xb.device, next(m.parameters()).device
    if device is not None and isinstance(model, EDMDownscaler) and model_device != in_device:
        raise InputError(f"device={device!r}, but the model given samples on its own device ({model_device}); move "
                         "it there (model.to(device)) or leave device out")
    if model_device != in_device:
        if isinstance(model, EDMDownscaler):  # the caller's own model is not moved: the data goes to it
            xb, v, st = (None if t is None else t.to(model_device) for t in (xb, v, st))
        else:  # the cached shipped model follows the input
            m = m.to(in_device)
    # every sampling option is checked here, also where a dry input leaves nothing to sample
    members, steps, batch_size, seed, tile, tile_overlap = m.check_sampling(
        members, steps, batch_size, seed, s_churn, 1.0, tile, tile_overlap)
    m.label_index(label, xb.shape[0])
    m.check_decoder(decoder)
    if not (isinstance(conserve, (bool, np.bool_, int, str)) and conserve in (True, False, *CONSERVE_MODES)):
        raise InputError(f"conserve must be True, False, 'heavy' or 'smooth', got {conserve!r}")
    conserve = conserve if conserve in CONSERVE_MODES else bool(conserve)  # (1 / numpy bools as True / False)
    limit = m.saturation_limit(decoder)
    _warn_decoder_saturation(m, xb, limit, conserve)
    if steps < MIN_GOOD_STEPS:
        warn(f"steps={steps}: with fewer than {MIN_GOOD_STEPS} Heun steps the samples are not converged (on "
             "real radar tiles the 99.9th percentile came out 14 % too high at 8 steps, 42 % at 6); the default is 18")
    box = _wet_box(xb, DRY_MARGIN) if trim_dry and v is None and st is None else (slice(None), slice(None))
    if box is None:  # no rain anywhere: a dry ensemble (the model's own sample is dry up to rare specks)
        out = xb.new_zeros(members, *xb.shape[:-2], xb.shape[-2] * m.factor, xb.shape[-1] * m.factor)
    else:
        rs, cs = box
        part = m.sample(xb[..., rs, cs], members=members, steps=steps, lo_vimd=v, static=st, seed=seed,
                        progress=progress, s_churn=s_churn, batch_size=batch_size, label=label, tile=tile,
                        tile_overlap=tile_overlap, precision=precision, decoder=decoder)
        if part.shape[-2:] == (xb.shape[-2] * m.factor, xb.shape[-1] * m.factor):
            out = part
        else:
            f = m.factor
            out = part.new_zeros(*part.shape[:-2], xb.shape[-2] * f, xb.shape[-1] * f)
            out[..., rs.start * f:rs.stop * f, cs.start * f:cs.stop * f] = part
    raw_top = float(out.max()) if out.numel() else 0.0
    if conserve is True:
        from .baselines import match_block_means

        out = match_block_means(out, xb, m.factor)
    elif conserve == "heavy" and limit is not None and bool((xb >= limit).any()):
        from .baselines import match_block_means

        out = match_block_means(out, xb, m.factor, where=xb >= limit)
    elif conserve == "smooth":
        from .baselines import smooth_block_means

        out = smooth_block_means(out, xb, m.factor)
    if not bool(torch.isfinite(out).all()):  # (NaN > 1000 is False: the check below let NaN through)
        raise InputError(f"the downscaled field holds {int((~torch.isfinite(out)).sum())} non-finite value(s) "
                         f"(input up to {float(xb.max()):.4g} mm/h, conserve={conserve!r}): the input is beyond what "
                         "the model can take (is it rain in mm/h?)")
    top = float(out.max()) if out.numel() else 0.0
    if top > MAX_PLAUSIBLE_MM_H:  # after the block-mean correction, which can scale a sample's peaks up
        raise InputError(_implausible(top, raw_top, float(xb.max()), steps, conserve))
    if single:
        out = out[:, 0]
    out = out.to(home)
    if kind == "torch":
        return out.to(lowres.dtype) if lowres.is_floating_point() else out
    arr = out.cpu().numpy()
    if kind == "xarray":
        return _to_xarray(arr, time_first(lowres), m.factor)
    return arr


def _implausible(top: float, raw_top: float, lo_top: float, steps: int, conserve: Any) -> str:
    """Why the downscaled rain reached ``top`` > MAX_PLAUSIBLE_MM_H (``raw_top``: before the block-mean correction,
    ``lo_top``: the input's largest rate), for the refusal."""
    head = f"the downscaled rain reaches {top:.3g} mm/h (> {MAX_PLAUSIBLE_MM_H:g} mm/h, not physical)"
    if steps < MIN_GOOD_STEPS:
        return f"{head} with steps={steps}: the sampler has not converged; use more steps (default 18)"
    if raw_top <= MAX_PLAUSIBLE_MM_H:
        return (f"{head} after restoring the block means (conserve={conserve!r}; the samples reached "
                f"{raw_top:.3g} mm/h): the input reaches {lo_top:.3g} mm/h, and the model's samples put such a "
                "block's rain into a few pixels, which the correction scales up; pass conserve=False (CLI: "
                "--conserve none) to keep the samples as drawn (their block means come out low there)")
    return (f"{head} from input rain of up to {lo_top:.3g} mm/h, with steps={steps}: the model's samples put heavy "
            "rain into a few pixels (uniform 4 x 4 blocks of 50-200 mm/h gave peaks of 250 to over 4 000 mm/h with the "
            "shipped models; such rain is rare in their training data); more steps or another model may help")


def _wet_box(x: torch.Tensor, margin: int) -> tuple[slice, slice] | None:
    """Rows and columns of the bounding box of the pixels of ``x`` (..., h, w) with rain at some time, widened by
    ``margin`` pixels; None without rain."""
    wet = (x > 0).reshape(-1, *x.shape[-2:]).any(dim=0)
    rows, cols = torch.nonzero(wet.any(dim=1)).flatten(), torch.nonzero(wet.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    h, w = wet.shape
    return (slice(max(0, int(rows[0]) - margin), min(h, int(rows[-1]) + 1 + margin)),
            slice(max(0, int(cols[0]) - margin), min(w, int(cols[-1]) + 1 + margin)))


def _fine_coord(c: np.ndarray, f: int) -> np.ndarray:
    c = np.asarray(c, np.float64)
    if c.size < 2:
        return np.arange(c.size * f, dtype=np.float64)
    d = (c[-1] - c[0]) / (c.size - 1)
    start = c[0] - d / 2 + d / (2 * f)
    return start + np.arange(c.size * f) * d / f


# the input's value range: downscaled peaks exceed it (netCDF readers would mask them as missing)
_RANGE_ATTRS = ("valid_min", "valid_max", "valid_range", "actual_range")


def _to_xarray(arr: np.ndarray, like: Any, f: int) -> Any:
    import xarray as xr

    dims = list(like.dims)
    ydim, xdim = dims[-2], dims[-1]
    coords: dict[str, Any] = {"member": np.arange(arr.shape[0])}
    for name, c in like.coords.items():  # time-like coordinates (also one along lead_time, e.g. the valid time)
        if set(c.dims) <= set(dims[:-2]) and name != "member":  # (scalar ones too: a forecast_reference_time; not
            # the member of an input taken from an earlier ensemble: the output has members of its own)
            coords[name] = (c.dims, c.values, dict(c.attrs))
    for d in (ydim, xdim):
        if d in like.coords and np.issubdtype(like[d].dtype, np.number):
            coords[d] = (d, _fine_coord(like[d].values, f), dict(like[d].attrs))
    attrs = {k: (int(v) if isinstance(v, (bool, np.bool_)) else v) for k, v in like.attrs.items()
             if isinstance(v, (str, int, float, np.bool_))  # (netCDF has no booleans)
             and k not in _RANGE_ATTRS}
    for k in ("xpixelsize", "ypixelsize"):
        if k in attrs and isinstance(attrs[k], (int, float)):
            attrs[k] = attrs[k] / f
    attrs.update(units="mm/h", downscaling_factor=f)
    return xr.DataArray(arr, dims=["member", *dims], coords=coords, name="precip_rate", attrs=attrs)


# ------------------------------------------------------------------------------------------ CLI helpers
RAIN_NAMES = ("precip_rate", "precipitation", "tp", "rain", "rr")  # variable names read as rain without units


def _rain_factor(name: Any, attrs: Any) -> float | None:
    """The factor to mm/h of a variable's rain unit (None: not rain): mm/h and its spellings, kg m-2 s-1 or mm/s,
    and m (ERA5's hourly accumulation ``tp``) for a variable named or described as precipitation only (an
    elevation is in m too)."""
    u = str(attrs.get("units", "")).replace(" ", "").replace("**", "").replace("^", "").lower()  # ERA5: kg m**-2 s**-1
    if is_rain_rate(u):
        return 1.0
    if u == "m":
        text = " ".join(str(attrs.get(k, "")) for k in ("standard_name", "long_name")).lower()
        return 1000.0 if str(name).lower() in RAIN_NAMES or "precipitation" in text else None
    return {"kgm-2s-1": 3600.0, "mms-1": 3600.0, "mm/s": 3600.0}.get(u)


def read_lowres(path: str | os.PathLike[str], variable: str | None = None) -> Any:
    """Read low-resolution rain (mm/h) from a radar file (:func:`skydiff.io.read_radar`) or a netCDF file.

    In a netCDF file without ``variable``: the one 2-D/3-D variable in rain units (mm/h, m per hour as ERA5's
    ``tp``, kg m-2 s-1), or failing that the one named like rain (``precip_rate``, ``tp``, ``rain`` ...; read as
    mm/h when it has no units); several candidates, or none, are an :class:`InputError` naming them. ``variable``
    without units is read as mm/h. A ``time`` dimension is moved first (and ``(x, y)`` to ``(y, x)``).

    Returns an ``xarray.DataArray`` ``(time, y, x)`` (or ``(y, x)``) with NaN where the file has no data.
    """
    from ..errors import ReadError
    from ..io import read_radar
    from ..io.netcdf import open_netcdf

    p = Path(path)
    if p.is_dir():
        raise ReadError(f"{p} is a folder; read_lowres takes one file (a netCDF of rain or a radar file)")
    if not p.is_file():
        raise ReadError(f"input file {p} not found")
    if p.suffix.lower() not in (".nc", ".nc4", ".netcdf"):
        if variable is not None:  # (it was ignored without a word)
            raise InputError(f"variable={variable!r} selects a variable of a netCDF file; {p.name} is a radar file "
                             "read by its pysteps importer")
        return read_radar(str(p))
    with open_netcdf(p) as ds:
        fields = {n: v for n, v in ds.data_vars.items() if v.ndim in (2, 3)}
        if variable is not None:
            if variable not in ds.data_vars:
                raise ReadError(f"{p} has no variable {variable!r}; variables: {', '.join(map(str, ds.data_vars))}")
            name = variable
        else:
            rain = [n for n, v in fields.items() if _rain_factor(n, v.attrs) is not None]
            named = [n for n in fields if str(n).lower() in RAIN_NAMES]
            found = rain or named
            if len(found) != 1:
                what = "several candidates: " + ", ".join(map(str, found)) if found else (
                    "no 2-D/3-D variable in rain units (mm/h, m, kg m-2 s-1) or named like rain; variables: "
                    + (", ".join(f"{n} ({ds[n].attrs.get('units', 'no units')})" for n in ds.data_vars) or "none"))
                raise InputError(f"{p}: which variable is rain? {what}; pass variable= (CLI: --variable NAME)")
            name = found[0]
        da = ds[name].load()
        gm = str(da.attrs.get("grid_mapping") or "")
        if gm in ds.variables and not da.attrs.get("projection"):  # the CF grid mapping as a projection string
            from ..io.netcdf import _proj_from_crs_attrs

            proj = _proj_from_crs_attrs(dict(ds[gm].attrs))
            if proj:
                da.attrs["projection"] = proj
    if da.ndim not in (2, 3):
        raise ShapeError(f"{p}: variable {name!r} has dimensions {da.dims}; low-resolution rain is (y, x) or "
                         "(time, y, x)")
    units = da.attrs.get("units")
    factor = 1.0 if units is None else _rain_factor(name, da.attrs)  # (no units: mm/h, for a chosen or rain name)
    if factor is None:
        raise InputError(f"{p}: variable {name!r} has units {units!r}; expected mm/h (or kg m-2 s-1, or m per hour "
                         "for a precipitation variable)")
    if factor != 1.0:
        da = da * factor
        da.attrs["units"] = "mm/h"
    return time_first(da).astype(np.float32)


def resolve_label(label: str | None, attrs: Any, labels: tuple[str, ...]) -> str | None:
    """The product label to sample with: ``"auto"`` = the product of a field read by :func:`skydiff.io.read_radar`
    (:func:`skydiff.downscale.data.product_label` of its ``attrs``) when it is one of the model's ``labels``,
    else None (unknown: the training mixture); ``"unknown"`` = None; a name is returned as given (the model
    refuses names it lacks). A model without labels gets None from ``"auto"``."""
    if label == "unknown" or label is None:
        return None
    if label != "auto":
        return label
    from .data import product_label

    found = product_label(attrs) if labels else None
    return found if found in labels else None


def read_era5_lowres(path: str | os.PathLike[str]) -> tuple[Any, Any]:
    """ERA5 hourly TP and VIMD (both mm/h) from a file or folder (:func:`skydiff.downscale.era5.read_era5`), for
    the ``era5`` model: ``(tp, vimd)`` DataArrays ``(time, y, x)`` with ``y``/``x`` = latitude/longitude in degrees.

    VIMD comes from the variables present (:func:`skydiff.downscale.era5.vimd`, route ``"auto"``: q, u, v on model
    or pressure levels with ``sp``, or vertically integrated fluxes). :class:`InputError` names what is missing.
    """
    from .era5 import read_era5, vimd

    ds = read_era5(path)
    if "tp" not in ds:
        raise InputError(f"{path}: no total precipitation 'tp' among the ERA5 variables {sorted(ds.data_vars)}")
    v = vimd(ds)
    out = []
    for da, name in ((ds["tp"], "tp"), (v, "vimd")):
        da = da.rename(latitude="y", longitude="x").astype(np.float32)
        lon = np.asarray(da["x"].values, np.float64)
        da.attrs = {"units": "mm/h", "long_name": name, "cartesian_unit": "degrees",
                    **({"xpixelsize": float(abs(lon[1] - lon[0]))} if lon.size > 1 else {})}
        out.append(da.rename(name))
    return out[0], out[1]


def coarsen_lowres(da: Any, n: int) -> Any:
    """Block means of ``n × n`` pixels over the last two dimensions of a DataArray, whatever their names
    (``xarray.DataArray.coarsen``; the last rows and columns that do not fill a block are dropped; a block with any
    NaN is NaN), ``xpixelsize`` and ``ypixelsize`` scaled by ``n``.

    For checking a downscaler on one's own fields: coarsen by the model's factor, downscale, compare with the
    original (what the benchmarks do with :func:`skydiff.downscale.data.block_mean`)."""
    n = check_int("coarsen", n, 1)
    if not hasattr(da, "dims") or not hasattr(da, "coarsen") or da.ndim < 2:
        raise InputError(f"coarsen_lowres needs a DataArray of at least 2 dimensions, got {type(da).__name__}"
                         f"{'' if not hasattr(da, 'dims') else f' with dims {da.dims}'}")
    if da.dtype.kind not in "fiu":
        raise InputError(f"coarsen_lowres needs numbers, got dtype {da.dtype}")
    h, w = da.shape[-2:]
    if h < n or w < n:
        raise ShapeError(f"cannot coarsen {h} x {w} pixels by {n}")
    if h % n or w % n:
        warn(f"coarsening {h} x {w} pixels by {n} drops the last {h % n} row(s) and {w % n} column(s) that fill no "
             "block")
    ydim, xdim = da.dims[-2:]
    out = da.coarsen({ydim: n, xdim: n}, boundary="trim").reduce(np.mean)  # np.mean: NaN propagates
    out.attrs = dict(da.attrs)
    if isinstance(out.attrs.get("xpixelsize"), (int, float)):
        out.attrs["xpixelsize"] = out.attrs["xpixelsize"] * n
    if isinstance(out.attrs.get("ypixelsize"), (int, float)):
        out.attrs["ypixelsize"] = out.attrs["ypixelsize"] * n
    out.attrs["coarsened"] = f"{n} x {n} block means of {h} x {w} pixels"
    return out


def write_downscaled(path: str | os.PathLike[str], ens: Any, *, model: str = "", factor: int = 4,
                     steps: int = 18, source: str = "", overwrite: bool = False,
                     conserve: bool | str | None = None, label: str | None = None, precision: str | None = None,
                     decoder: str | None = None) -> Path:
    """Write an ensemble DataArray from :func:`downscale` (xarray input) as CF netCDF, atomically.

    Variable ``precip_rate`` (``member``, [``time``,] ``y``, ``x``), float32, units mm/h, standard name
    ``lwe_precipitation_rate``. An existing file is only replaced with ``overwrite=True``. ``conserve`` (the
    setting of :func:`downscale`) is recorded as the global attribute ``block_means_conserved`` when given, and
    ``label`` (the radar product imitated; None = unknown) as ``product_label`` for a labelled model, and
    ``precision`` (of :func:`downscale`) as ``network_precision`` and ``decoder`` as ``pp_decoder`` when given. A
    numpy array or tensor ``(members, [T,] Y, X)`` gets those dimension names.
    """
    import xarray as xr

    out = Path(path)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if isinstance(ens, xr.DataArray):
        da = ens.copy()
        # the input's attributes, less what would be wrong here: NaN numbers, a grid_mapping naming a variable this
        # file does not have (written below from the projection, when there is one)
        da.attrs = {k: v for k, v in da.attrs.items()
                    if k != "grid_mapping" and not (isinstance(v, float) and not np.isfinite(v))}
    else:
        arr = np.asarray(ens.detach().cpu() if isinstance(ens, torch.Tensor) else ens)
        dims = {3: ("member", "y", "x"), 4: ("member", "time", "y", "x")}.get(arr.ndim)
        if dims is None:
            raise ShapeError(f"an ensemble array must be (members, [T,] Y, X), got shape {arr.shape}")
        da = xr.DataArray(arr, dims=dims, name="precip_rate")
    da = da.astype(np.float32)
    da.attrs.update(units="mm/h", standard_name="lwe_precipitation_rate",
                    long_name=f"downscaled rain rate, ensemble of {da.sizes.get('member', 1)} members")
    ds = da.to_dataset(name="precip_rate")
    proj = str(da.attrs.get("projection") or "")
    if proj and "x" in ds.dims and "y" in ds.dims:  # a CF grid mapping, as write_nowcast writes
        from ..io.netcdf import _crs_attrs

        try:
            crs = _crs_attrs(proj)
        except InputError:
            crs = None
        if crs:
            ds["crs"] = xr.DataArray(np.int32(0), attrs=crs)
            ds["precip_rate"].attrs["grid_mapping"] = "crs"
    from .. import __version__

    ds.attrs.update(Conventions="CF-1.8", title="skydiff diffusion downscaling", source=f"skydiff {__version__}",
                    downscaling_model=str(model), downscaling_factor=int(factor), sampling_steps=int(steps),
                    input_file=str(source))
    if conserve is not None:
        ds.attrs["block_means_conserved"] = {True: "yes", False: "no"}.get(conserve, str(conserve))
    if label is not None:
        ds.attrs["product_label"] = str(label)
    if precision is not None:
        ds.attrs["network_precision"] = str(precision)
    if decoder is not None:
        ds.attrs["pp_decoder"] = str(decoder)
    from ..io.atomic import atomic_path

    with atomic_path(out) as tmp:
        enc = {"precip_rate": {"zlib": True, "complevel": 4, "dtype": "float32"}}
        # coordinates have no missing values (CF): no _FillValue, which xarray gives every float variable
        enc.update({c: {"_FillValue": None} for c in ds.coords if ds[c].dtype.kind == "f"})
        ds.to_netcdf(tmp, format="NETCDF4", encoding=enc)
    return out


def plot_downscaled(path: str | os.PathLike[str], lowres: Any, ens: Any, *, time_index: int = -1,
                    original: Any = None) -> Path:
    """Quick-look PNG: the low-resolution input, two members and the ensemble mean (one time); ``original``: also
    the high-resolution field the input was coarsened from (e.g. ``skydiff downscale --coarsen``)."""
    from ..plot import _as_array, _new_figure, plot_field, save_figure

    lo, e = _as_array(lowres, "lowres"), _as_array(ens, "ens")  # arrays, DataArrays or tensors on any device
    hi = None if original is None else _as_array(original, "original")
    if lo.ndim == 3:
        lo, e = lo[time_index], e[:, time_index]
        hi = None if hi is None else hi[time_index]
    panels = [("low resolution input", lo)] + ([] if hi is None else [("original (before coarsening)", hi)])
    panels.append(("member 1", e[0]))
    if e.shape[0] > 1:
        panels.append(("member 2", e[1]))
    panels.append((f"ensemble mean ({e.shape[0]})", e.mean(0)))
    fig = _new_figure(3.2 * len(panels), 3.4)
    for i, (t, a) in enumerate(panels):
        plot_field(fig.add_subplot(1, len(panels), i + 1), a, title=t, colorbar=i == len(panels) - 1)
    return save_figure(fig, path)

