"""Matplotlib figures for rain fields, motion fields, nowcasts and verification scores.

Everything here builds :class:`matplotlib.figure.Figure` objects directly (with an Agg canvas) instead of going
through :mod:`matplotlib.pyplot`, so it works headless, never opens a window and never leaves figures registered
with pyplot: a figure is freed as soon as the caller drops it.

Conventions (the same as the rest of skydiff):

- rain fields are ``(H, W)`` arrays or tensors in mm/h; NaN means "no data" and is drawn light grey;
- motion fields are ``(2, H, W)`` in pixels per time step, ``[0]`` = x (columns, to the right) and ``[1]`` = y
  (rows, downward); images are drawn with ``origin="upper"`` (row 0 at the top, like radar composites with
  ``yorigin="upper"``), so a positive ``[1]`` component points *down* on the figure. A DataArray whose ``y``
  coordinate increases (north in the last row, ``yorigin="lower"``) is flipped to north-up when drawn, and so are
  the plain arrays (fields and motion) drawn in one figure with it: they are taken to be on its grid, in its row
  order. For a figure of plain arrays only, :func:`north_up` does the same (rows flipped, ``[1]`` negated); do not
  pass its output beside the DataArray itself (it would be flipped twice).

Figure-level functions (:func:`plot_nowcast`, :func:`plot_scores`, :func:`plot_spectra`, :func:`plot_sequence`)
return the :class:`~matplotlib.figure.Figure` and, when ``path`` is given, save it atomically (written to a
temporary file in the same directory, then moved over ``path``; parent directories are created). Axes-level
functions (:func:`plot_field`, :func:`plot_motion`) draw on an existing axis and return the artist they drew.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap, hsv_to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from ._compat import nan_filled, tensor_numpy
from .errors import InputError, ShapeError, positive_finite
from .verify.continuous import CONTINUOUS_SCORES

__all__ = [
    "RAIN_BOUNDS",
    "DPI",
    "rain_cmap",
    "motion_to_rgb",
    "plot_field",
    "plot_motion",
    "plot_nowcast",
    "plot_scores",
    "plot_spectra",
    "plot_sequence",
    "save_figure",
    "plot_assimilation",
    "plot_qq",
    "plot_spectrum_ratio",
    "north_up",
]

#: Class bounds of the rain colour scale, mm/h.
RAIN_BOUNDS: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0)
#: Resolution used for every figure (on screen and saved).
DPI = 110

_RAIN_COLOURS = (
    "#b4dcf5",  # 0.1 - 0.5  very light
    "#6aaee8",  # 0.5 - 1    light
    "#2166c4",  # 1 - 2
    "#2e9e3c",  # 2 - 5      moderate
    "#9ccd2a",  # 5 - 10
    "#f6e12b",  # 10 - 20    heavy
    "#f79a1f",  # 20 - 30
    "#e2341d",  # 30 - 50
    "#a8102f",  # 50 - 100   very heavy
)
_RAIN_OVER = "#c23bd4"  # > 100 mm/h
_NODATA = "#d3d3d3"  # light grey
_PANEL_IN = 3.0  # width of one map panel, inches


# --------------------------------------------------------------------------------------------------- helpers
def _y_dim(x: Any) -> Any:
    """The north-south dimension of a DataArray (``y``, ``lat``/``latitude``, or a coordinate with ``axis = "Y"``
    or a y/latitude ``standard_name``: :func:`skydiff.io.netcdf._axis_of`), else None."""
    from .io.netcdf import _axis_of

    return next((d for d in getattr(x, "dims", ()) if _axis_of(x, d) == "Y"), None)


def _y_increases(like: Any) -> bool:
    """Whether a DataArray's y (or latitude) coordinate increases down its rows (north in the last row), or its
    attributes say ``yorigin = "lower"``."""
    coords = getattr(like, "coords", None)
    yd = _y_dim(like)
    if coords is not None and yd is not None and yd in coords and getattr(like, "sizes", {}).get(yd, 0) > 1:
        y = np.asarray(coords[yd].values, dtype=np.float64)
        return bool(y[-1] > y[0])
    return str(getattr(like, "attrs", {}).get("yorigin", "upper")).lower() == "lower"


def north_up(like: Any, *fields: Any, velocity: Any = None) -> tuple[Any, ...]:
    """The fields (arrays ``(..., H, W)``) and motion ``(2, H, W)`` of the grid of ``like`` (a DataArray from
    :func:`skydiff.io.read_radar`) as the map functions draw them north-up: rows flipped and the row component
    ``[1]`` negated when ``like``'s y increases down its rows; unchanged otherwise. Returns ``(*fields, velocity)``."""
    if not _y_increases(like):
        return (*fields, velocity)
    flipped = tuple(None if f is None else np.flip(np.asarray(f), axis=-2) for f in fields)
    if velocity is not None:
        velocity = np.flip(np.asarray(velocity), axis=-2) * np.array([1.0, -1.0]).reshape(2, 1, 1)
    return (*flipped, velocity)


def _as_array(x: Any, name: str, like: Any = None) -> np.ndarray:
    """numpy float array from an array, tensor (any device, with grad), masked array (masked = NaN) or array-like;
    a DataArray whose y increases down its rows is flipped north-up, and so is a plain array drawn in one figure
    with such a DataArray ``like`` (its rows are the same rows)."""
    flip = _is_flipped(x)
    axis = list(x.dims).index(_y_dim(x)) if flip else 0
    if not flip and not hasattr(x, "dims") and like is not None and _is_flipped(like):
        return np.flip(_as_array(x, name), axis=-2) if np.ndim(x) >= 2 else _as_array(x, name)
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = tensor_numpy(x)
    x = nan_filled(x)
    x = getattr(x, "values", x) if flip else x
    if np.iscomplexobj(x):
        raise InputError(f"{name} must be real, got complex values")
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric array, got {type(x).__name__}") from exc
    return np.flip(arr, axis=axis) if flip else arr


def _reference(*xs: Any) -> Any:
    """The first DataArray on a y grid among the inputs of one figure: plain arrays beside it are drawn in its row
    order (north-up), so that all panels show the same rows the same way up."""
    return next((x for x in xs if hasattr(x, "dims") and _y_dim(x) is not None), None)


def _field(x: Any, name: str = "field", like: Any = None) -> np.ndarray:
    arr = _as_array(x, name, like)
    if arr.ndim != 2:
        raise ShapeError(f"{name} must be a 2-D (H, W) rain field, got shape {tuple(arr.shape)}")
    return arr


def _is_flipped(x: Any) -> bool:
    """Whether :func:`_as_array` draws ``x`` with its rows flipped (a DataArray whose y increases down its rows)."""
    return hasattr(x, "dims") and _y_dim(x) is not None and _y_increases(x)


def _velocity(x: Any, name: str = "velocity", like: Any = None) -> np.ndarray:
    """Motion ``(2, H, W)`` as drawn north-up: a y-increasing DataArray has its rows flipped *and* its row
    component negated (as :func:`north_up` does); a plain array beside a field ``like`` that is drawn flipped is
    flipped with it, so that the arrows stay on their rain."""
    own = _is_flipped(x)  # (_as_array flips its rows)
    flip = own or (like is not None and not hasattr(x, "dims") and _is_flipped(like))
    arr = _as_array(x, name)
    if arr.ndim != 3 or arr.shape[0] != 2:
        raise ShapeError(
            f"{name} must have shape (2, H, W) ([0] = x/columns, [1] = y/rows, pixels per step), "
            f"got shape {tuple(arr.shape)}"
        )
    if flip:
        if not own:
            arr = np.flip(arr, axis=-2)
        arr = arr * np.array([1.0, -1.0]).reshape(2, 1, 1)
    return arr


def _stack(x: Any, name: str, like: Any = None) -> np.ndarray:
    """(n, H, W) stack from an array/tensor or a sequence of 2-D fields (plain ones drawn in ``like``'s row order)."""
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ShapeError(f"{name} is empty: need at least one (H, W) field")
        fields = [_field(f, f"{name}[{i}]", like) for i, f in enumerate(x)]
        shapes = {f.shape for f in fields}
        if len(shapes) != 1:
            raise ShapeError(f"all fields of {name} must have the same shape, got {sorted(shapes)}")
        return np.stack(fields)
    arr = _as_array(x, name, like)
    if arr.ndim != 3:
        raise ShapeError(f"{name} must be a 3-D (n, H, W) stack of rain fields, got shape {tuple(arr.shape)}")
    if arr.shape[0] == 0:
        raise ShapeError(f"{name} is empty: need at least one (H, W) field")
    return arr


_MAX_SHOWN = 1000  # image pixels along the longer side at most (a figure panel has a few hundred)


def _reduction(shape: tuple[int, ...]) -> int:
    """Block size that brings a grid to at most :data:`_MAX_SHOWN` pixels along its longer side."""
    return max(1, math.ceil(max(shape[-2:]) / _MAX_SHOWN))


def _block_max(a: np.ndarray, k: int) -> np.ndarray:
    """NaN-aware maximum over k x k blocks (all-NaN blocks stay NaN), so that small heavy cells of a big grid stay
    visible and the image the figure holds stays small (a whole MRMS grid took GBs and showed 1 cell in 40)."""
    if k <= 1:
        return a
    h, w = a.shape[-2:]
    hp, wp = -h % k, -w % k
    a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, hp), (0, wp)], constant_values=np.nan)
    blocks = a.reshape(*a.shape[:-2], (h + hp) // k, k, (w + wp) // k, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        return np.nanmax(blocks, axis=(-3, -1))


def _extent(shape: tuple[int, ...]) -> tuple[float, float, float, float]:
    """imshow extent in the pixel coordinates of the full grid (row 0 at the top), whatever the image size."""
    h, w = shape[-2:]
    return (-0.5, w - 0.5, h - 0.5, -0.5)


def _count(value: Any, name: str) -> int:
    """A positive integer argument (panels, columns), else InputError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
            or int(value) != value or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def _map_axes(ax: Axes, shape: tuple[int, int]) -> None:
    """Pixel extent, row 0 at the top, square pixels, no ticks."""
    h, w = shape
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def _panel_size(shape: tuple[int, int]) -> tuple[float, float]:
    h, w = shape
    ratio = min(max(h / max(w, 1), 0.25), 4.0)
    return _PANEL_IN, _PANEL_IN * ratio


def save_figure(fig: Figure, path: str | os.PathLike[str]) -> Path:
    """Save ``fig`` to ``path`` atomically and return the path.

    The image is written to a hidden temporary file in the target directory and moved over ``path`` with
    :func:`os.replace` (:func:`skydiff.io.atomic_path`), so readers never see a half-written file and an existing
    file is replaced in one step. Parent directories are created. The format follows the suffix (PNG when there is
    none).
    """
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise InputError(f"cannot save a figure as {fmt!r} ({path}); use one of {sorted(supported)}")
    from .io.atomic import atomic_path

    with atomic_path(path) as tmp:
        # the format is passed explicitly (the temporary name ends in .tmp); 0o666 & ~umask like a normal file
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=DPI, facecolor=fig.get_facecolor())
    return path


def _finish(fig: Figure, path: str | os.PathLike[str] | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def _nice_floor(x: float) -> float:
    """``x`` rounded down to one significant digit (4.7 -> 4, 0.36 -> 0.3); 1 for non-positive input."""
    if not np.isfinite(x) or x <= 0:
        return 1.0
    e = 10.0 ** math.floor(math.log10(x))
    return float(f"{max(1, math.floor(x / e * (1 + 1e-9))) * e:.1g}")


# --------------------------------------------------------------------------------------------------- colours
def rain_cmap() -> tuple[ListedColormap, BoundaryNorm]:
    """Discrete radar-like colour scale for rain rates in mm/h.

    Returns ``(cmap, norm)`` for ``imshow(..., cmap=cmap, norm=norm)``: classes bounded by :data:`RAIN_BOUNDS`
    (0.1, 0.5, 1, 2, 5, 10, 20, 30, 50, 100 mm/h), transparent below 0.1 mm/h (dry), magenta above 100 mm/h and
    light grey for NaN (no data).
    """
    cmap = ListedColormap(list(_RAIN_COLOURS), name="skydiff_rain").with_extremes(
        under=(1.0, 1.0, 1.0, 0.0), over=_RAIN_OVER, bad=_NODATA
    )
    norm = BoundaryNorm(list(RAIN_BOUNDS), ncolors=cmap.N)
    return cmap, norm


def motion_to_rgb(velocity: Any, vmax: float | None = None) -> tuple[np.ndarray, float]:
    """Colour image of a motion field: hue = direction, saturation = speed / ``vmax``.

    Returns ``(rgb, vmax)`` with ``rgb`` of shape ``(H, W, 3)`` in [0, 1]. Zero motion is white, speeds at or
    above ``vmax`` (default: the largest speed) fully saturated (darkened when above), NaN light grey. The hue is
    measured in image coordinates (x to the right, y downward), so the colour of a pixel matches the direction
    in which it moves on a figure drawn with ``origin="upper"``.
    """
    v = _velocity(velocity)
    vx, vy = v[0], v[1]
    speed = np.hypot(vx, vy)
    finite = np.isfinite(speed)
    if vmax is None:
        vmax = float(np.max(speed[finite])) if finite.any() else 0.0
        vmax = vmax if vmax > 0 else 1.0  # no motion: any scale
    elif not positive_finite(vmax):
        raise InputError(f"vmax must be a positive number (px per step), got {vmax!r}")
    vmax = float(vmax)
    hue = np.mod(np.arctan2(np.nan_to_num(vy), np.nan_to_num(vx)) / (2 * np.pi), 1.0)
    rel = np.nan_to_num(speed / vmax)
    sat = np.clip(rel, 0.0, 1.0)
    val = np.where(rel > 1.0 + 1e-9, 0.75, 1.0)
    rgb = hsv_to_rgb(np.stack([hue, sat, val], axis=-1))
    rgb[~finite] = (0.827, 0.827, 0.827)
    return rgb, vmax


def _wheel_inset(ax: Axes, vmax: float) -> Axes:
    n = 101
    c = (n - 1) / 2
    y, x = np.mgrid[0:n, 0:n]
    dx, dy = (x - c) / c, (y - c) / c
    rgb, _ = motion_to_rgb(np.stack([dx, dy]), vmax=1.0)
    alpha = (np.hypot(dx, dy) <= 1.0).astype(float)
    ins = ax.inset_axes((0.74, 0.74, 0.24, 0.24))
    ins.imshow(np.concatenate([rgb, alpha[..., None]], axis=-1), origin="upper", interpolation="bilinear")
    ins.set_axis_off()
    ins.text(
        0.5, -0.04, f"rim {vmax:.3g} px/step", transform=ins.transAxes, ha="center", va="top", fontsize=6,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.0},
    )
    return ins


# --------------------------------------------------------------------------------------------------- axes level
def plot_field(
    ax: Axes | None, field: Any, *, title: str | None = None, colorbar: bool = True, nodata_legend: bool = True
) -> Any:
    """Draw one rain field (mm/h, NaN = no data) on ``ax`` with the :func:`rain_cmap` scale.

    ``ax=None`` draws on a new single-panel figure. Returns the ``AxesImage`` (its ``.figure`` is the figure),
    usable for a shared colorbar. A "no data" legend entry is added when the field has NaN and
    ``nodata_legend`` (multi-panel figures turn it off and show one for the whole figure).
    """
    arr = _field(field)
    if ax is None:
        ax = _new_figure(*_panel_size(arr.shape)).add_subplot()
    cmap, norm = rain_cmap()
    # ±inf are values, not missing data: +inf in the top (> 100 mm/h) class, -inf dry like any negative value
    shown = np.where(np.isinf(arr), np.sign(arr) * 10.0 * RAIN_BOUNDS[-1], arr)
    im = ax.imshow(np.ma.masked_invalid(_block_max(shown, _reduction(arr.shape))), cmap=cmap, norm=norm,
                   origin="upper", interpolation="nearest", extent=_extent(arr.shape))
    _map_axes(ax, arr.shape)
    if title is not None:
        ax.set_title(title, fontsize=9)
    if nodata_legend and np.isnan(arr).any():
        ax.legend(
            handles=[_nodata_patch()],
            loc="lower left",
            fontsize=6,
            framealpha=0.8,
            handlelength=1.0,
            borderpad=0.3,
        )
    if colorbar:
        _rain_colorbar(ax.figure, im, ax)
    return im


def _nodata_patch() -> Patch:
    return Patch(facecolor=_NODATA, edgecolor="0.5", linewidth=0.5, label="no data")


def _figure_nodata_legend(fig: Figure, *arrays: np.ndarray | None) -> None:
    if any(a is not None and np.isnan(a).any() for a in arrays):
        fig.legend(handles=[_nodata_patch()], loc="outside lower right", fontsize=7, frameon=False, handlelength=1.0)


def _rain_colorbar(fig: Any, im: Any, ax: Any) -> Any:
    cb = fig.colorbar(im, ax=ax, extend="max", spacing="uniform", shrink=0.9, pad=0.02, aspect=25)
    cb.set_label("rain rate (mm/h)", fontsize=8)
    cb.set_ticks(list(RAIN_BOUNDS))
    cb.set_ticklabels([f"{b:g}" for b in RAIN_BOUNDS])
    cb.ax.tick_params(labelsize=7)
    return cb


def plot_motion(
    ax: Axes | None,
    velocity: Any,
    *,
    background: Any = None,
    step: int | None = None,
    kind: str = "quiver",
    title: str | None = None,
    colorbar: bool = True,
    vmax: float | None = None,
    nodata_legend: bool = True,
) -> Any:
    """Draw a motion field ``(2, H, W)`` (pixels per step) on ``ax``.

    ``kind="quiver"``: arrows every ``step`` pixels (default: about 25 arrows along the longer side) over the
    optional rain field ``background`` (``(H, W)``, mm/h; its colorbar when ``colorbar``). Arrows are scaled in
    pixels per step so that the longest ones about fill the spacing; a reference arrow (``"N px/step"``) sits at
    the lower right. A positive ``[0]`` points right, a positive ``[1]`` points down.

    ``kind="wheel"``: the motion as a colour image (hue = direction, saturation = speed up to ``vmax``, see
    :func:`motion_to_rgb`) with a colour-wheel inset as legend; ``background`` is outlined at 1 mm/h.

    ``ax=None`` draws on a new figure. Returns the ``Quiver`` (quiver) or the ``AxesImage`` (wheel).
    """
    ref = _reference(background, velocity)
    v = _velocity(velocity, like=ref)
    _, h, w = v.shape
    bg = None
    if background is not None:
        bg = _field(background, "background", ref)
        if bg.shape != (h, w):
            raise ShapeError(f"background has shape {bg.shape} but velocity is (2, {h}, {w})")
    if kind not in ("quiver", "wheel"):
        raise InputError(f"kind must be 'quiver' or 'wheel', got {kind!r}")
    if step is not None:
        step = _count(step, "step")
    if ax is None:
        width, height = _panel_size((h, w))
        ax = _new_figure(width + (0.8 if colorbar and bg is not None else 0.0), height).add_subplot()

    if kind == "wheel":
        k = _reduction((h, w))  # a big grid: every k-th motion vector, block maxima of the background
        rgb, vmax_used = motion_to_rgb(v[:, ::k, ::k], vmax=vmax)
        art = ax.imshow(rgb, origin="upper", interpolation="nearest", extent=_extent((h, w)))
        if bg is not None and np.nanmax(np.nan_to_num(bg, nan=0.0)) > 1.0:
            b = np.nan_to_num(_block_max(bg, k), nan=0.0)
            yy, xx = np.mgrid[0:b.shape[0], 0:b.shape[1]] * k + (k - 1) / 2.0
            ax.contour(xx, yy, b, levels=[1.0], colors="0.25", linewidths=0.6)
        _map_axes(ax, (h, w))
        _wheel_inset(ax, vmax_used)
        ax.set_title(title if title is not None else "motion (hue: direction, saturation: speed)", fontsize=9)
        return art

    if bg is not None:
        plot_field(ax, bg, colorbar=colorbar, nodata_legend=nodata_legend)
    else:
        _map_axes(ax, (h, w))
    step = step if step is not None else max(1, int(round(max(h, w) / 25)))
    r0, c0 = min(step // 2, h - 1), min(step // 2, w - 1)
    rows, cols = np.arange(r0, h, step), np.arange(c0, w, step)
    yy, xx = np.meshgrid(rows, cols, indexing="ij")
    u, vv = v[0][np.ix_(rows, cols)], v[1][np.ix_(rows, cols)]
    speed = np.hypot(u, vv)
    ok = np.isfinite(speed)
    vref = float(np.percentile(speed[ok], 99)) if ok.any() else 0.0
    if not vref > 0:
        vref = float(np.max(speed[ok])) if ok.any() and np.max(speed[ok]) > 0 else 1.0
    # arrow length in pixels = speed / scale; the 99th-percentile speed spans 0.9 of the arrow spacing
    scale = vref / (0.9 * step)
    q = ax.quiver(
        xx[ok],
        yy[ok],
        u[ok],
        vv[ok],
        angles="xy",
        scale_units="xy",
        scale=scale,
        color="black",
        width=0.004,
        headwidth=4,
        headlength=4.5,
        headaxislength=4,
        minlength=0.1,
        zorder=3,
    )
    uref = _nice_floor(vref)
    ax.add_patch(
        Rectangle(
            (0.66, 0.0), 0.34, 0.1, transform=ax.transAxes, facecolor="white", alpha=0.85, edgecolor="none", zorder=4
        )
    )
    qk = ax.quiverkey(
        q, 0.71, 0.05, uref, f"{uref:g} px/step", labelpos="E", coordinates="axes", fontproperties={"size": 7}
    )
    qk.set_zorder(5)
    if title is not None:
        ax.set_title(title, fontsize=9)
    return q


# --------------------------------------------------------------------------------------------------- figures
def _lead_labels(leadtimes_min: Any, n: int) -> list[float]:
    arr = np.atleast_1d(_as_array(leadtimes_min, "leadtimes_min"))
    if arr.ndim != 1:
        raise ShapeError(f"leadtimes_min must be 1-D, got shape {tuple(arr.shape)}")
    if not np.isfinite(arr).all():  # titled "+nan min" before
        raise InputError(f"leadtimes_min must be finite minutes, got {arr.tolist()}")
    if arr.size == 1 and n > 1:  # a time step: leads step, 2 step, ...
        arr = arr[0] * np.arange(1, n + 1)
    if arr.size != n:
        raise ShapeError(f"leadtimes_min has {arr.size} values but the nowcast has {n} lead times")
    return [float(a) for a in arr]


def plot_nowcast(
    last_obs: Any,
    velocity: Any,
    nowcast: Any,
    *,
    leadtimes_min: Any,
    observed: Any = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
    panels: int = 3,
) -> Figure:
    """Summary figure of one nowcast.

    Top row: the last observation ``(H, W)`` with the motion arrows, then the nowcast ``(n_lead, H, W)`` at
    ``panels`` lead times spread over the run (first, ..., last). The motion colour wheel comes after the arrows
    in the same row, or, when ``observed`` ``(n_lead, H, W)`` is given, below them at the start of a second row
    holding the observed fields at the same lead times. ``leadtimes_min`` gives the lead time of each nowcast
    step in minutes (a sequence of ``n_lead`` values, or one number = the time step).
    """
    ref = _reference(last_obs, velocity, nowcast, observed)
    obs0 = _field(last_obs, "last_obs", ref)
    v = _velocity(velocity, like=ref)
    fc = _stack(nowcast, "nowcast", ref)
    h, w = obs0.shape
    if v.shape[1:] != (h, w):
        raise ShapeError(f"velocity has shape {v.shape} but last_obs is ({h}, {w})")
    if fc.shape[1:] != (h, w):
        raise ShapeError(f"nowcast has shape {fc.shape} but last_obs is ({h}, {w})")
    n = fc.shape[0]
    leads = _lead_labels(leadtimes_min, n)
    ob = None
    if observed is not None:
        ob = _stack(observed, "observed", ref)
        if ob.shape != fc.shape:
            raise ShapeError(f"observed has shape {ob.shape} but nowcast has shape {fc.shape}")
    panels = _count(panels, "panels")
    idx = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(panels, n))})

    nrows = 1 if ob is None else 2
    ncols = len(idx) + (2 if ob is None else 1)
    pw, ph = _panel_size((h, w))
    fig = _new_figure(ncols * pw + 0.9, nrows * (ph + 0.35) + (0.35 if title else 0.0))
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))

    plot_motion(
        axes[0, 0], v, background=obs0, kind="quiver", title="last observation + motion", colorbar=False,
        nodata_legend=False,
    )
    wheel_ax = axes[0, 1] if ob is None else axes[1, 0]
    plot_motion(wheel_ax, v, background=obs0, kind="wheel", title="motion")
    first = 2 if ob is None else 1
    im = None
    for j, i in enumerate(idx):
        im = plot_field(
            axes[0, first + j], fc[i], title=f"nowcast +{leads[i]:g} min", colorbar=False, nodata_legend=False
        )
        if ob is not None:
            plot_field(
                axes[1, first + j], ob[i], title=f"observed +{leads[i]:g} min", colorbar=False, nodata_legend=False
            )
    _rain_colorbar(fig, im, axes.ravel().tolist())
    _figure_nodata_legend(fig, obs0, fc[idx], None if ob is None else ob[idx])
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


_SCORE_LABELS = {
    "csi": "CSI",
    "pod": "POD",
    "far": "FAR",
    "ets": "ETS",
    "hss": "HSS",
    "fss": "FSS",
    "bias": "frequency bias",
    "mae": "MAE (mm/h)",
    "rmse": "RMSE (mm/h)",
    "me": "mean error (mm/h)",
    "corr": "correlation",
}
_UNIT_INTERVAL = {"csi", "pod", "far", "fss"}  # (not HSS or ETS: skill scores may be negative)
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _group_label(col: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "all"
    if col == "threshold":
        return f"≥{value:g} mm/h" if isinstance(value, (int, float, np.number)) else str(value)
    return str(value)


def _varies(df: Any, score: str, by: str, col: str, keys: list[str]) -> bool:
    """Whether ``score`` takes other values along ``col`` for some ``by`` (and value of the other key column)."""
    index = [by, *[k for k in keys if k != col and df[k].notna().any()]]
    spread = df.groupby(index, dropna=False)[score].agg(lambda v: float(np.nanmax(v) - np.nanmin(v)) if len(v) else 0.0)
    return bool((spread > 1e-12 * max(1.0, float(np.nanmax(np.abs(df[score]))))).any())


def plot_scores(
    table: Any,
    *,
    scores: str | Sequence[str] = ("csi", "mae"),
    path: str | os.PathLike[str] | None = None,
    by: str = "leadtime_min",
    hue: str = "model",
    title: str | None = None,
) -> Figure:
    """Verification scores against lead time, one subplot per score.

    ``table`` is a pandas DataFrame (or anything ``pandas.DataFrame`` accepts) with the column ``by`` (default
    ``leadtime_min``), optionally ``model`` and ``threshold``, and one column per score. One line per value of
    ``hue`` (``"model"`` or ``"threshold"``, colours); when the other of the two columns is present with several
    values it varies the line style. Rows where a score is NaN are left out of that score's plot; duplicate
    rows for the same line and lead time are averaged.
    """
    import pandas as pd

    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(table)
    if isinstance(scores, str):
        scores = (scores,)
    scores = list(scores)
    if not scores:
        raise InputError("scores is empty: name at least one score column")
    if by not in df.columns:
        raise InputError(f"table has no column {by!r} (columns: {list(df.columns)})")
    missing = [s for s in scores if s not in df.columns]
    if missing:
        raise InputError(f"table has no score column(s) {missing} (columns: {list(df.columns)})")
    import pandas as pd

    text = [c for c in [*scores, by] if not pd.api.types.is_numeric_dtype(df[c])]
    if text:
        raise InputError(f"score table column(s) {text} are not numeric")
    if hue not in ("model", "threshold"):
        raise InputError(f"hue must be 'model' or 'threshold', got {hue!r}")
    other = "threshold" if hue == "model" else "model"
    hue_col = hue if hue in df.columns else None
    style_col = other if other in df.columns and df[other].nunique(dropna=True) > 1 else None
    keys = [c for c in (hue_col, style_col) if c is not None]

    def _levels(col: str | None) -> list[Any]:
        """Values of ``col``: numbers sorted, anything else in order of appearance; NaN/None last."""
        if col is None:
            return [None]
        vals = list(pd.unique(df[col]))
        missing = [x for x in vals if x is None or _isnan(x)]
        present = [x for x in vals if not (x is None or _isnan(x))]
        if all(isinstance(x, (int, float, np.number)) for x in present):
            present = sorted(present)
        return present + missing[:1]

    levels = {c: _levels(c) for c in keys}

    def _index(col: str, value: Any) -> int:
        for i, lv in enumerate(levels[col]):
            if lv == value or (_isnan(lv) and _isnan(value)):
                return i
        return 0

    ncols = min(len(scores), 3)
    nrows = math.ceil(len(scores) / ncols)
    fig = _new_figure(4.0 * ncols, 3.0 * nrows + (0.3 if title else 0.0))
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, score in zip(axes, scores):
        sub = df.dropna(subset=[score, by])
        # per subplot, only the columns that vary there matter (e.g. MAE rows have no threshold): colour by
        # ``hue`` when it has values here, else by the other column; line style by the other one if it varies
        colour_col = hue_col if hue_col is not None and sub[hue_col].notna().any() else None
        style_eff = style_col if style_col is not None and sub[style_col].nunique(dropna=False) > 1 else None
        # a continuous score repeated on each threshold's rows (skydiff verify's table) draws one line, not one per
        # threshold
        colour_col, style_eff = (None if c == "threshold" and score in CONTINUOUS_SCORES
                                 and not _varies(sub, score, by, c, keys) else c for c in (colour_col, style_eff))
        if colour_col is None and style_eff is not None:
            colour_col, style_eff = style_eff, None
        sub_keys = [c for c in (colour_col, style_eff) if c is not None]
        groups = sub.groupby(sub_keys, dropna=False, sort=False) if sub_keys else [((), sub)]
        lines = []
        for key, grp in groups:
            key = key if isinstance(key, tuple) else (key,)
            values = dict(zip(sub_keys, key))
            ci = _index(colour_col, values[colour_col]) if colour_col else 0
            si = _index(style_eff, values[style_eff]) if style_eff else 0
            series = grp.groupby(by)[score].mean().sort_index()
            label = ", ".join(_group_label(c, values[c]) for c in sub_keys) or score
            lines.append(((ci, si), series, label))
        for (ci, si), series, label in sorted(lines, key=lambda t: t[0]):
            ax.plot(
                series.index.to_numpy(dtype=float),
                series.to_numpy(dtype=float),
                color=f"C{ci % 10}",
                linestyle=_LINESTYLES[si % len(_LINESTYLES)],
                marker=_MARKERS[ci % len(_MARKERS)],
                markersize=3.5,
                linewidth=1.4,
                label=label,
            )
        name = score.lower()
        ax.set_title(_SCORE_LABELS.get(name, score), fontsize=10)
        ax.set_ylabel(_SCORE_LABELS.get(name, score), fontsize=9)
        ax.set_xlabel("lead time (min)" if by == "leadtime_min" else by, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(True, color="0.88", linewidth=0.6)
        if name in _UNIT_INTERVAL:
            ax.set_ylim(0.0, 1.02)
        if lines and sub_keys:
            ax.legend(fontsize=7, framealpha=0.85)
        if not lines:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")
    for ax in axes[len(scores):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def _isnan(x: Any) -> bool:
    try:
        return bool(np.isnan(x))
    except (TypeError, ValueError):
        return False


def _curves(curves: Any, name: str, xname: str, yname: str,
            pixel_km: float) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Validate ``{label: (x, y)}`` of 1-D arrays of one length (and ``pixel_km``) -> ``[(label, x, y), ...]``."""
    if not isinstance(curves, Mapping) or not curves:
        raise InputError(f"{name} must be a non-empty dict {{label: ({xname}, {yname})}}")
    if not positive_finite(pixel_km):
        raise InputError(f"pixel_km must be a positive number, got {pixel_km!r}")
    out = []
    for label, pair in curves.items():
        try:
            xv, yv = pair
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name}[{label!r}] must be a pair ({xname}, {yname})") from exc
        x = _as_array(xv, f"{name}[{label!r}] {xname}")
        y = _as_array(yv, f"{name}[{label!r}] {yname}")
        if x.ndim != 1 or y.ndim != 1 or x.shape != y.shape:
            raise ShapeError(f"{name}[{label!r}]: {xname} and {yname} must be 1-D of the same length, got {x.shape} "
                             f"and {y.shape}")
        out.append((str(label), x, y))
    return out


def plot_spectra(
    spectra: Mapping[str, tuple[Any, Any]],
    *,
    pixel_km: float = 1.0,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Log-log radially averaged power spectra, one curve per entry of ``spectra``.

    ``spectra`` maps a label to ``(freq, psd)``: 1-D arrays of the same length, ``freq`` in cycles per pixel (as
    from a RAPSD with unit pixel spacing). ``pixel_km`` converts to wavenumbers in 1/km on the bottom axis; the
    top axis shows the matching wavelength in km. Non-positive or non-finite points are skipped.
    """
    curves = _curves(spectra, "spectra", "freq", "psd", pixel_km)
    drawn = [np.isfinite(f) & np.isfinite(p) & (f > 0) & (p > 0) for _, f, p in curves]
    if not any(ok.any() for ok in drawn):  # (matplotlib failed on the log axes, deep inside the save)
        raise InputError(f"plot_spectra: no curve has a positive, finite point to draw on log axes "
                         f"({', '.join(str(c[0]) for c in curves)}: a dry field has no power)")
    fig = _new_figure(5.2, 3.9 + (0.3 if title else 0.0))
    ax = fig.add_subplot()
    for (label, f, p), ok in zip(curves, drawn):
        k = f[ok] / pixel_km
        order = np.argsort(k)
        ax.plot(k[order], p[ok][order], linewidth=1.5, label=label if ok.any() else f"{label} (no power)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("wavenumber (1/km)", fontsize=9)
    ax.set_ylabel("power spectral density", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    ax.grid(True, which="minor", color="0.94", linewidth=0.4)

    def _inv(x: Any) -> Any:
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, 1.0 / np.where(x > 0, x, 1.0), np.inf)

    top = ax.secondary_xaxis("top", functions=(_inv, _inv))
    top.set_xlabel("wavelength (km)", fontsize=9)
    top.tick_params(labelsize=8)
    ax.legend(fontsize=8, framealpha=0.85)
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def _time_label(t: Any, i: int) -> str:
    if t is None:
        return f"frame {i}"
    if isinstance(t, np.datetime64):
        t = t.astype("datetime64[s]").item()
    if hasattr(t, "strftime"):
        return t.strftime("%Y-%m-%d %H:%M")
    if isinstance(t, (int, float, np.number)):
        return f"t = {t:g}"
    return str(t)


def plot_sequence(
    fields: Any,
    times: Sequence[Any] | None = None,
    *,
    ncols: int = 6,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Grid of rain maps, ``ncols`` per row, with one shared mm/h colorbar.

    ``fields`` is an ``(n, H, W)`` array/tensor or a list of ``(H, W)`` fields; ``times`` (optional, ``n``
    values: datetimes, numpy datetime64, numbers or strings) label the panels.
    """
    stack = _stack(fields, "fields")
    n, h, w = stack.shape
    if times is not None:
        times = list(np.asarray(getattr(times, "values", times)).ravel()) if hasattr(times, "__array__") \
            or isinstance(times, np.ndarray) else list(times)
        if len(times) != n:
            raise ShapeError(f"times has {len(times)} values but there are {n} fields")
    ncols = min(_count(ncols, "ncols"), n)
    nrows = math.ceil(n / ncols)
    pw, ph = _panel_size((h, w))
    pw, ph = 0.8 * pw, 0.8 * ph
    fig = _new_figure(ncols * pw + 0.9, nrows * (ph + 0.3) + (0.35 if title else 0.0))
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    im = None
    for i, ax in enumerate(axes.ravel()):
        if i < n:
            label = _time_label(None if times is None else times[i], i)
            im = plot_field(ax, stack[i], title=label, colorbar=False, nodata_legend=False)
            ax.title.set_fontsize(8)
        else:
            ax.set_axis_off()
    _rain_colorbar(fig, im, axes.ravel().tolist())
    _figure_nodata_legend(fig, stack)
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def plot_assimilation(
    last_obs: Any,
    velocity: Any,
    cost_history: Any,
    forecast: Any,
    *,
    leadtime_min: float,
    full_resolution_cost: float | None = None,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Motion from an assimilation (e.g. 4D-Var): arrows over the last observation, the flow as a colour wheel,
    the cost against iteration, and a forecast from the estimated state at ``leadtime_min``.

    ``full_resolution_cost``: when the iterations ran on a coarser grid (4D-Var's ``finest_level > 0``), the cost of
    the upsampled solution at full resolution, drawn as a separate marker (it is another cost function, not one
    more iteration)."""
    ref = _reference(last_obs, velocity, forecast)
    obs = _field(last_obs, "last_obs", ref)
    vel = _velocity(velocity, like=ref)
    fc = _field(forecast, "forecast", ref)
    try:
        cost = np.asarray(cost_history, dtype=float).ravel()
        full = None if full_resolution_cost is None else float(full_resolution_cost)
    except (TypeError, ValueError):
        raise InputError("cost_history must be numbers and full_resolution_cost a number or None") from None
    if isinstance(leadtime_min, bool) or not isinstance(leadtime_min, (int, float, np.number)) or not np.isfinite(
            leadtime_min):
        raise InputError(f"leadtime_min must be a number of minutes, got {leadtime_min!r}")
    if vel.shape[1:] != obs.shape or fc.shape != obs.shape:
        raise ShapeError(
            f"last_obs {obs.shape}, velocity {vel.shape} and forecast {fc.shape} must share one grid"
        )
    pw, ph = _panel_size(obs.shape)
    fig = _new_figure(4 * pw + 0.8, ph + 0.6)
    axes = fig.subplots(1, 4)
    plot_motion(axes[0], vel, background=obs, title="last observation + motion", colorbar=False, nodata_legend=False)
    plot_motion(axes[1], vel, kind="wheel", title="motion (colour wheel)", colorbar=False)
    ax = axes[2]
    if cost.size:
        ax.semilogy(np.arange(cost.size), np.where(cost > 0, cost, np.nan), color="C0", label="iterations")
    if full is not None and full > 0:
        ax.semilogy([max(cost.size - 1, 0)], [full], "o", color="C1", label="full resolution")
        ax.legend(fontsize=7)
    ax.set_xlabel("iteration", fontsize=8)
    ax.set_ylabel("cost J", fontsize=8)
    ax.set_title("cost", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=7)
    im = plot_field(axes[3], fc, title=f"forecast +{leadtime_min:g} min", colorbar=False, nodata_legend=False)
    _rain_colorbar(fig, im, axes[3])
    _figure_nodata_legend(fig, obs, fc)
    if title:
        fig.suptitle(title, fontsize=10)
    return _finish(fig, path)


def plot_qq(
    pred: Any,
    obs: Any = "normal",
    *,
    levels: Any = 200,
    log: bool = False,
    units: str = "mm/h",
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Quantile-quantile plot of one or several predictions against the truth (or against N(0, 1)).

    ``pred`` is an array/tensor (any shape, all valid values pooled) or a dict ``{label: array}`` to compare
    several methods; ``obs`` is the truth (any shape) or ``"normal"`` to check a pseudo-precipitation field
    against the standard normal (x axis = Φ⁻¹ of the level). ``levels`` are the probabilities (or an int ``n``
    for ``n`` plotting positions ``(i − 0.5)/n``; the default 200 plus the levels 0.99, 0.999, 0.9999 are
    marked), computed with :func:`skydiff.verify.qq`. ``log=True`` uses log axes (non-positive quantiles are
    not drawn). The 1:1 line is dashed.
    """
    from .verify.distribution import QQ_LEVELS, qq

    preds = dict(pred) if isinstance(pred, Mapping) else {"prediction": pred}
    if not preds:
        raise InputError("pred must be an array or a non-empty dict {label: array}")
    normal = isinstance(obs, str)
    if normal and obs != "normal":
        raise InputError(f"obs must be an array or 'normal', got {obs!r}")
    fig = _new_figure(4.6, 4.4 + (0.3 if title else 0.0))
    ax = fig.add_subplot()
    lo, hi = np.inf, -np.inf
    for i, (label, values) in enumerate(preds.items()):
        qp, qo = qq(_as_array(values, f"pred[{label!r}]"), obs if normal else _as_array(obs, "obs"), levels)
        qp, qo = np.asarray(qp, dtype=float), np.asarray(qo, dtype=float)
        ok = np.isfinite(qp) & np.isfinite(qo)
        if log:
            ok &= (qp > 0) & (qo > 0)
        ax.plot(qo[ok], qp[ok], ".", markersize=4, color=f"C{i}", label=str(label))
        xp, xo = qq(_as_array(values, f"pred[{label!r}]"), obs if normal else _as_array(obs, "obs"), QQ_LEVELS[3:])
        xp, xo = np.asarray(xp, dtype=float), np.asarray(xo, dtype=float)
        okx = np.isfinite(xp) & np.isfinite(xo) & (((xp > 0) & (xo > 0)) if log else True)
        ax.plot(xo[okx], xp[okx], "o", markersize=7, markerfacecolor="none", color=f"C{i}")
        if ok.any():
            lo = min(lo, qo[ok].min(), qp[ok].min())
            hi = max(hi, qo[ok].max(), qp[ok].max())
    if np.isfinite(lo) and np.isfinite(hi):
        ax.plot([lo, hi], [lo, hi], "--", color="0.4", linewidth=1, label="1:1")
    elif log:  # (matplotlib failed on the log axes, deep inside the save)
        raise InputError("plot_qq(log=True): no pair of positive quantiles to draw (a dry field?); use log=False")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("N(0, 1) quantile" if normal else f"observed quantile ({units})", fontsize=9)
    ax.set_ylabel("predicted quantile" + ("" if normal else f" ({units})"), fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, color="0.88", linewidth=0.6)
    ax.legend(fontsize=8, framealpha=0.85, title="circles: p99, p99.9, p99.99", title_fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, path)


def plot_spectrum_ratio(
    ratios: Mapping[str, tuple[Any, Any]],
    *,
    pixel_km: float = 1.0,
    band_db: float = 1.0,
    path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """Spectrum ratio (prediction / truth) in dB against wavelength, one curve per method.

    ``ratios`` maps a label to ``(wavelengths_px, ratio_db)`` as returned by
    :func:`skydiff.verify.rapsd_ratio_db`; ``pixel_km`` (default 1: 1-km pixels) converts the wavelengths to km
    (log axis, long waves on the left). A grey band marks ±``band_db`` dB around 0 (the target tolerance).
    """
    curves = _curves(ratios, "ratios", "wavelengths", "ratio_db", pixel_km)
    if band_db is not None and (isinstance(band_db, bool) or not isinstance(band_db, (int, float, np.number))
                                or not np.isfinite(band_db) or band_db < 0):
        raise InputError(f"band_db must be a number of dB >= 0 (or None: no band), got {band_db!r}")
    fig = _new_figure(5.2, 3.8 + (0.3 if title else 0.0))
    ax = fig.add_subplot()
    for label, w, r in curves:
        ok = np.isfinite(w) & np.isfinite(r) & (w > 0)
        order = np.argsort(w[ok])
        ax.plot(w[ok][order] * pixel_km, r[ok][order], linewidth=1.5, label=label)
    if band_db and band_db > 0:
        ax.axhspan(-band_db, band_db, color="0.85", zorder=0, label=f"±{band_db:g} dB")
    ax.axhline(0.0, color="0.3", linewidth=0.8)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("wavelength (km)", fontsize=9)
    ax.set_ylabel("power ratio to truth (dB)", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(True, which="major", color="0.85", linewidth=0.6)
    ax.legend(fontsize=8, framealpha=0.85)
    if title:
        fig.suptitle(title, fontsize=11)
    return _finish(fig, path)
