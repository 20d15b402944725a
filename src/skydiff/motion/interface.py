"""Motion-estimation registry (pysteps style) and the :func:`estimate` entry point.

Every method is registered under a case-insensitive name (plus aliases) with the number of input frames it
needs. :func:`estimate` does the checks and the conversions that are common to all methods, so that a method
function only ever sees a clean, finite ``float64`` numpy array ``(T, H, W)`` with ``min_frames <= T <=
max_frames``:

1. shape check: ``(T, H, W)``; a single 2-D field raises :class:`~skydiff.errors.ShapeError`;
2. too few frames raise :class:`~skydiff.errors.InputError`; if more than ``max_frames`` are given, only the
   **last** ``max_frames`` frames are used (e.g. VET uses the last 3, Proesmans the last 2);
3. a frame that is entirely NaN (no data), infinite values, or (with ``transform="db"``) negative rain rates
   raise :class:`~skydiff.errors.InputError`;
4. if the frames contain no rain (``transform="db"``: no value >= 0.1 mm/h; ``transform=None``: no contrast
   at all), the result is a zero field and a :class:`~skydiff.errors.SkydiffWarning` is issued, instead of
   calling the method (pysteps would return zeros or fail depending on the method);
5. transform: ``"db"`` converts mm/h to dBR (``10 log10 R`` where ``R >= 0.1`` mm/h, else the zero value
   -15 dBR, pysteps' example convention); NaN (no data) is set to the zero value -15 dBR, i.e. treated as
   "no rain". ``None`` passes the values through unchanged with NaN set to their smallest value (the dry value of
   transformed data);
6. the method is called, its result checked to be ``(2, H, W)``; non-finite values are replaced by 0 with a
   warning; the output is numpy ``float64`` for numpy (or array-like) input, and a tensor on the input's
   device and dtype for torch input (the pysteps methods compute on the CPU, 4D-Var on the input's device; the
   registry's estimate is not differentiable).

Velocities are in pixels per time step of the input frames, ``[0]`` = x (columns), ``[1]`` = y (rows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from .._compat import check_real, import_pysteps, nan_filled
from ..errors import InputError, ShapeError, check_int, warn

#: rain/no-rain threshold of the dB transform (mm/h)
DB_THRESHOLD = 0.1
#: value given to dry (< threshold) and missing (NaN) pixels by the dB transform (dBR)
DB_ZEROVALUE = -15.0

_TRANSFORMS = {"db": "db", "dbr": "db", "decibel": "db"}


@dataclass(frozen=True)
class MotionMethod:
    """A registered motion-estimation method.

    ``fn(frames, **kwargs)`` receives a finite ``float64`` numpy array ``(T, H, W)`` (or, with
    ``backend="torch"``, a tensor on the caller's device) and returns the velocity ``(2, H, W)`` in pixels per
    time step. Calling the record runs :func:`estimate` with this method.
    """

    name: str
    fn: Callable[..., Any]
    min_frames: int
    max_frames: int | None = None
    aliases: tuple[str, ...] = ()
    backend: str = "numpy"
    zero: bool = field(default=False, repr=False)
    #: the keyword names ``fn`` accepts, or a function returning them (called when first needed, e.g. to import
    #: pysteps lazily); ``None``: read from ``fn``'s signature (any name accepted when it takes ``**kwargs``)
    keywords: Any = field(default=None, repr=False)

    def __call__(self, frames: Any, *, transform: str | None = "db", **kwargs: Any) -> Any:
        return estimate(frames, self.name, transform=transform, **kwargs)


_REGISTRY: dict[str, MotionMethod] = {}  # canonical name -> method
_LOOKUP: dict[str, str] = {}  # lower-case name or alias -> canonical name


def _key(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"a motion method name must be a non-empty string, got {name!r}")
    return name.strip().lower()


def register(
    name: str,
    fn: Callable[..., Any],
    *,
    min_frames: int,
    max_frames: int | None = None,
    aliases: tuple[str, ...] | list[str] = (),
    backend: str = "numpy",
    keywords: Any = None,
    overwrite: bool = False,
) -> MotionMethod:
    """Register a motion-estimation method under ``name`` (case-insensitive) and ``aliases``.

    Parameters
    ----------
    name, aliases:
        Names under which :func:`get_method` and :func:`estimate` find the method.
    fn:
        ``fn(frames, **kwargs) -> velocity (2, H, W)``; ``frames`` is a finite ``float64`` array ``(T, H, W)``
        already transformed by :func:`estimate`.
    min_frames:
        Fewest frames the method accepts (>= 1).
    max_frames:
        Most frames the method uses; when more are given, :func:`estimate` passes the last ``max_frames``.
        ``None``: no limit, all frames are passed.
    backend:
        ``"numpy"`` (default): ``fn`` gets a numpy ``float64`` array (torch input is moved to the CPU).
        ``"torch"``: ``fn`` gets a tensor (on the caller's device/dtype; numpy input becomes a ``float64`` CPU
        tensor) and may return a tensor, e.g. for a differentiable (4D-Var) method.
    keywords:
        The keyword names the method accepts (a collection of strings, or a function returning one or ``None``),
        against which :func:`estimate` checks ``**kwargs`` before running it — so that a typo is refused even on
        dry frames, where no method runs. Default ``None``: the names in ``fn``'s signature, or no check when
        ``fn`` takes ``**kwargs`` (give ``keywords`` when ``fn`` passes them on to another function).
    overwrite:
        Allow replacing a method registered under the same name or alias.

    Returns the :class:`MotionMethod` record.
    """
    canonical = _key(name)
    if not callable(fn):
        raise InputError(f"motion method {name!r}: fn must be callable, got {type(fn).__name__}")
    if isinstance(min_frames, bool) or not isinstance(min_frames, (int, np.integer)) or min_frames < 1:
        raise InputError(f"motion method {name!r}: min_frames must be an integer >= 1, got {min_frames!r}")
    if max_frames is not None and (
        isinstance(max_frames, bool) or not isinstance(max_frames, (int, np.integer)) or max_frames < min_frames
    ):
        raise InputError(
            f"motion method {name!r}: max_frames must be None or an integer >= min_frames={min_frames}, "
            f"got {max_frames!r}"
        )
    if backend not in ("numpy", "torch"):
        raise InputError(f"motion method {name!r}: backend must be 'numpy' or 'torch', got {backend!r}")
    if keywords is not None and not callable(keywords):
        if isinstance(keywords, str) or not all(isinstance(k, str) for k in keywords):
            raise InputError(f"motion method {name!r}: keywords must be a collection of names or a function, "
                             f"got {keywords!r}")
        keywords = frozenset(keywords)
    if isinstance(aliases, str):
        aliases = (aliases,)
    alias_keys = tuple(dict.fromkeys(_key(a) for a in aliases if _key(a) != canonical))
    keys = (canonical, *alias_keys)
    clashes = sorted({_LOOKUP[k] for k in keys if k in _LOOKUP})
    if clashes and not overwrite:
        raise InputError(
            f"motion method {name!r}: name or alias already registered by {clashes}; pass overwrite=True to "
            "replace it"
        )
    for old in clashes:  # remove every name of a replaced method
        rec = _REGISTRY.pop(old)
        for k in (rec.name, *rec.aliases):
            _LOOKUP.pop(k, None)
    rec = MotionMethod(
        name=canonical,
        fn=fn,
        min_frames=int(min_frames),
        max_frames=None if max_frames is None else int(max_frames),
        aliases=alias_keys,
        backend=backend,
        keywords=keywords,
    )
    _REGISTRY[canonical] = rec
    for k in keys:
        _LOOKUP[k] = canonical
    return rec


def _available() -> str:
    parts = []
    for n in sorted(_REGISTRY):
        al = _REGISTRY[n].aliases
        parts.append(f"{n} (alias {', '.join(al)})" if al else n)
    return ", ".join(parts)


def get_method(name: str) -> MotionMethod:
    """Return the registered method ``name`` (case-insensitive; aliases accepted).

    Unknown names raise :class:`~skydiff.errors.InputError` listing the available methods. The returned
    :class:`MotionMethod` is callable like :func:`estimate` without the ``method`` argument.
    """
    if name is None:
        name = "none"
    key = _key(name)
    if key not in _LOOKUP:
        raise InputError(f"unknown motion method {name!r}; available: {_available()}")
    return _REGISTRY[_LOOKUP[key]]


def methods() -> tuple[str, ...]:
    """Canonical names of the registered methods, sorted (aliases: ``get_method(name).aliases``)."""
    return tuple(sorted(_REGISTRY))


# --------------------------------------------------------------------------------------------------------------
# estimate
# --------------------------------------------------------------------------------------------------------------


def _as_numpy(frames: Any) -> np.ndarray:
    if isinstance(frames, torch.Tensor):
        check_real(frames, "frames")
        return frames.detach().to("cpu", torch.float64).numpy()
    try:
        arr = np.asarray(nan_filled(frames))
    except Exception as exc:  # ragged lists etc.
        raise InputError(f"frames cannot be converted to an array: {exc}") from None
    check_real(arr, "frames")
    return arr.astype(np.float64)


def _check_frames(arr: np.ndarray, rec: MotionMethod) -> None:
    need = rec.min_frames
    if arr.ndim == 2:
        raise ShapeError(
            f"motion method {rec.name!r}: need at least {need} frames as an array (T, H, W), got a single 2-D "
            f"field of shape {arr.shape}"
        )
    if arr.ndim != 3:
        raise ShapeError(f"frames must have shape (T, H, W), got {arr.ndim}-D shape {arr.shape}")
    t, h, w = arr.shape
    if h < 2 or w < 2:
        raise ShapeError(f"frames must be at least 2x2 pixels, got shape {arr.shape}")
    if t < need:
        raise InputError(f"motion method {rec.name!r}: need at least {need} frames, got {t}")


def _transform(arr: np.ndarray, transform: str | None, offset: int) -> tuple[np.ndarray, bool]:
    """Return the transformed finite frames and whether they are dry (nothing to track)."""
    if np.isinf(arr).any():
        raise InputError("frames contain infinite values (use NaN for missing data)")
    finite = np.isfinite(arr)
    empty = [offset + i for i in range(arr.shape[0]) if not finite[i].any()]
    if empty:
        raise InputError(f"frames {empty} are entirely NaN (no data); drop them or give other frames")
    if transform is None:
        vals = arr[finite]
        dry = bool(vals.max() == vals.min())
        # no data takes the smallest value, the dry one of already transformed data (0 is 1 mm/h in dBR)
        return np.where(finite, arr, vals.min()), dry
    with np.errstate(invalid="ignore"):
        if (arr < -1e-6).any():
            raise InputError(
                f"frames contain negative rain rates (min {np.nanmin(arr):.4g}); transform='db' expects mm/h "
                "(pass transform=None for data that are already transformed, e.g. dBR or dBZ)"
            )
        wet = arr >= DB_THRESHOLD
    out = np.full(arr.shape, DB_ZEROVALUE)
    out[wet] = 10.0 * np.log10(arr[wet])
    return out, not wet.any()


def _refuse_keywords(rec: Any, kwargs: dict[str, Any], exc: Exception) -> None:
    raise InputError(f"motion method {rec.name!r}: {exc}; check the keyword arguments "
                     f"({', '.join(sorted(kwargs)) or 'none given'})") from None


def _keywords_of(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword names a function takes after its first argument; None when it takes any (``**kwargs``)."""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def _accepted_keywords(rec: Any) -> frozenset[str] | None:
    """The keywords a method takes (its record's ``keywords``, else its function's signature), None when unknown."""
    if rec.keywords is None:
        return _keywords_of(rec.fn)
    known = rec.keywords() if callable(rec.keywords) else rec.keywords
    return None if known is None else frozenset(known)


def _wrapped_keywords(name: str, own: frozenset[str] = frozenset()) -> Callable[[], frozenset[str] | None]:
    """The keywords of a wrapper of pysteps' method ``name``: its own plus those of pysteps' function (looked up
    when first needed, so that pysteps is imported only then)."""
    def keywords() -> frozenset[str] | None:
        theirs = _keywords_of(_pysteps_motion(name))
        return None if theirs is None else own | theirs

    return keywords


def _check_keywords(rec: Any, kwargs: dict[str, Any]) -> None:
    """The keyword arguments checked against what the method takes, without running it (dry frames)."""
    known = _accepted_keywords(rec)
    unknown = sorted(set(kwargs) - known) if known is not None else []
    if unknown:
        _refuse_keywords(rec, kwargs, TypeError(f"unexpected keyword argument(s) {', '.join(map(repr, unknown))}"))


def estimate(frames: Any, method: str = "lk", *, transform: str | None = "db", **kwargs: Any) -> Any:
    """Estimate the motion field of a sequence of rain fields.

    Parameters
    ----------
    frames:
        ``(T, H, W)`` rain rates in mm/h (NaN = no data), oldest first; numpy array, array-like, tensor or an
        xarray.DataArray (its ``time`` dimension found by name, its ``units`` checked with ``transform="db"``).
    method:
        Registered method name (case-insensitive), see :func:`methods`: ``"lk"``/``"lucaskanade"``,
        ``"vet"``, ``"darts"``, ``"proesmans"``, ``"farneback"``, ``"constant"``, ``"4dvar"``/``"fourdvar"``
        (:func:`skydiff.motion.fourdvar`), ``"none"``/``"zero"`` (also ``None``).
        (pysteps' DARTS returns the right direction but 3-7x too slow a speed on a clean translation of a 128-px
        field, with its defaults or N_x = N_y = 20, ~100x on KNMI radar; the wrapper returns what pysteps does,
        with a warning.)
    transform:
        ``"db"`` (default): mm/h -> dBR with threshold 0.1 mm/h and zero value -15 dBR; NaN -> -15 dBR.
        ``None``: no transform (NaN -> the smallest value of the frames, their dry value), for data already in
        the units the method expects (e.g. dBR with its zero value).
    **kwargs:
        Passed to the method (for pysteps methods: pysteps' keyword arguments).

    Returns
    -------
    velocity ``(2, H, W)`` in pixels per time step ([0] = x, [1] = y), always finite: numpy ``float64`` for
    numpy input, a tensor on the input's device and dtype for floating torch input (torch's default float dtype
    for integer tensors).
    """
    rec = get_method(method)
    if transform is not None:
        if not isinstance(transform, str) or transform.lower() not in _TRANSFORMS:
            raise InputError(f"unknown transform {transform!r}; use 'db' or None")
        transform = _TRANSFORMS[transform.lower()]

    da_times = None
    if hasattr(frames, "dims") and hasattr(frames, "values"):  # xarray.DataArray: its units and dims by name
        from ..io.units import frames_of_dataarray

        da_times = _dataarray_times(frames, rec, kwargs)
        frames = frames_of_dataarray(frames, rate=transform == "db", hint=" (with transform='db'; pass "
                                     "transform=None for data already in the units the method expects)")
    is_torch = isinstance(frames, torch.Tensor)
    arr = _as_numpy(frames)
    _check_frames(arr, rec)
    t, h, w = arr.shape
    offset = 0
    if rec.max_frames is not None and t > rec.max_frames:
        offset = t - rec.max_frames
        arr = arr[offset:]
    if da_times is not None and rec.name == "4dvar" and "times" not in kwargs:
        kwargs["times"] = da_times[offset:]  # 4D-Var takes irregular times: the DataArray's own
    data, dry = _transform(arr, transform, offset)

    _check_keywords(rec, kwargs)  # a typo is refused before the method runs, and also on dry frames
    if rec.zero:
        vel: Any = np.zeros((2, h, w))
    elif dry:
        warn(
            f"motion method {rec.name!r}: the frames contain no rain"
            + (f" (no value >= {DB_THRESHOLD} mm/h)" if transform == "db" else " (constant fields)")
            + "; returning a zero motion field"
        )
        vel = np.zeros((2, h, w))
    else:
        if rec.backend == "torch":
            if is_torch:
                # the transformed data in float64 on the CPU (as numpy input and estimate_batch give them: rounded
                # to float32 first, 4D-Var's motion moved by 0.05 px); elsewhere the frames' precision, >= float32
                cpu = frames.device.type == "cpu"
                dt = torch.float64 if cpu or not frames.is_floating_point() else \
                    torch.promote_types(frames.dtype, torch.float32)
                x = torch.from_numpy(data).to(device=frames.device, dtype=dt)
            else:
                x = torch.from_numpy(data)
        else:
            x = data
        try:
            vel = rec.fn(x, **kwargs)
        except TypeError as exc:  # a keyword the method does not take (e.g. a typo in motion_kwargs)
            if "keyword argument" not in str(exc):
                raise
            _refuse_keywords(rec, kwargs, exc)

    if isinstance(vel, torch.Tensor):
        vel_np = vel.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            vel_np = np.asarray(vel, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(
                f"motion method {rec.name!r} returned {type(vel).__name__}, not a (2, H, W) array; check the "
                "keyword arguments (e.g. dense=False or full_output=True are not supported)"
            ) from None
    if vel_np.shape != (2, h, w):
        raise InputError(
            f"motion method {rec.name!r} returned shape {vel_np.shape}, expected {(2, h, w)}; check the keyword "
            "arguments"
        )
    bad = ~np.isfinite(vel_np)
    if bad.any():
        warn(f"motion method {rec.name!r} returned {int(bad.sum())} non-finite values; replaced by 0")
        vel_np = np.where(bad, 0.0, vel_np)

    if is_torch:
        dtype = frames.dtype if frames.is_floating_point() else torch.get_default_dtype()
        if isinstance(vel, torch.Tensor) and not bad.any() and vel.shape == (2, h, w):
            return vel.to(device=frames.device, dtype=dtype)
        return torch.from_numpy(np.ascontiguousarray(vel_np)).to(device=frames.device, dtype=dtype)
    return vel_np


def _dataarray_times(da: Any, rec: MotionMethod, kwargs: dict[str, Any]) -> np.ndarray | None:
    """The datetimes of a DataArray's time dimension (None without them), checked: strictly increasing, and for
    every method but 4D-Var (which takes irregular times) equally spaced (to 1 s) over the frames the method uses
    (its last ``max_frames``) — the methods assume frames one time step apart, so a reversed or gapped series gave
    a wrong motion without a word. Not for a zero-motion method, or 4D-Var given ``times`` of its own."""
    from ..io.units import datetimes_of, time_dim

    td = time_dim(da)
    if rec.zero or (rec.name == "4dvar" and "times" in kwargs) or td is None or td not in da.coords \
            or da.sizes[td] < 2:
        return None
    t = datetimes_of(da, td)
    if t is None:
        return None
    used = t if rec.max_frames is None else t[-rec.max_frames:]
    d = np.diff(used).astype("timedelta64[ms]").astype(np.float64) / 60_000.0  # minutes
    if np.any(d <= 0):
        raise InputError(f"the frames' times are not strictly increasing (steps {_minutes(d)} min): sort them "
                         "(DataArray.sortby) and drop duplicates")
    if rec.name != "4dvar" and d.max() - d.min() > 1.0 / 60.0:
        raise InputError(f"the frames are not at a regular time step (steps {_minutes(d)} min): motion method "
                         f"{rec.name!r} assumes frames one time step apart; fill or drop the gaps "
                         "(skydiff.io.resample_time), or use '4dvar', which takes irregular times")
    return t


def _minutes(d: np.ndarray) -> str:
    return ", ".join(f"{v:g}" for v in d[:8]) + (", ..." if d.size > 8 else "")


# --------------------------------------------------------------------------------------------------------------
# built-in methods (pysteps.motion)
# --------------------------------------------------------------------------------------------------------------


def _pysteps_motion(name: str) -> Callable[..., Any]:
    import_pysteps()
    from pysteps import motion

    return motion.get_method(name)


def _lk(frames: np.ndarray, grid_stride: int = 1, **kwargs: Any) -> np.ndarray:
    """pysteps' dense Lucas-Kanade. ``grid_stride`` s > 1 (a skydiff option): pysteps' inverse-distance
    interpolation of the declustered vectors (86 % of the time on a 560 x 560 grid) runs on every s-th row and
    column — equal to the full-resolution field there — and the field is bilinearly upsampled to the full grid (its
    vectors are declustered on a 20-px scale; measured in benchmarks/RESULTS.md §5)."""
    if kwargs.get("dense", True) is not True:
        raise InputError("motion method 'lk': dense=False (sparse vectors) is not supported by estimate()")
    grid_stride = check_int("grid_stride", grid_stride, 1)
    kwargs.setdefault("verbose", False)
    if grid_stride == 1:
        return _pysteps_motion("lk")(frames, **kwargs)
    from pysteps.utils.cleansing import decluster
    from pysteps.utils.interpolate import idwinterp2d

    decl_scale = kwargs.pop("decl_scale", 20)
    if kwargs.pop("interp_method", "idwinterp2d") != "idwinterp2d":
        raise InputError("motion method 'lk': grid_stride > 1 works with interp_method='idwinterp2d' (the default)")
    interp_kwargs = dict(kwargs.pop("interp_kwargs", None) or {})
    # idwinterp2d measures distances in grid spacings and then adds dist_offset (0.5 by default): on a grid s times
    # coarser the same offset in fine pixels is dist_offset / s, which gives the same weights as the full grid
    interp_kwargs["dist_offset"] = interp_kwargs.get("dist_offset", 0.5) / grid_stride
    kwargs.pop("dense", None)  # (True: checked above) the sparse vectors are asked for below
    h, w = frames.shape[-2:]
    xy, uv = _pysteps_motion("lk")(frames, dense=False, **kwargs)
    if xy.shape[0] and decl_scale > 1:
        xy, uv = decluster(xy, uv, decl_scale, 1, False)  # as pysteps' dense_lucaskanade does
    if xy.shape[0] == 0:
        return np.zeros((2, h, w))
    xs, ys = np.arange(0, w + grid_stride - 1, grid_stride), np.arange(0, h + grid_stride - 1, grid_stride)
    coarse = np.asarray(idwinterp2d(xy, uv, xs, ys, **interp_kwargs), np.float64)  # (2, len(ys), len(xs))
    # align_corners with (n - 1) * s + 1 points: coarse node i lands exactly on fine pixel i * s
    n_y, n_x = (len(ys) - 1) * grid_stride + 1, (len(xs) - 1) * grid_stride + 1
    up = torch.nn.functional.interpolate(torch.from_numpy(coarse)[None], size=(n_y, n_x), mode="bilinear",
                                         align_corners=True)
    return up[0, :, :h, :w].numpy()


def _vet(frames: np.ndarray, **kwargs: Any) -> np.ndarray:
    kwargs.setdefault("verbose", False)
    if kwargs.get("intermediate_steps", False):
        raise InputError("motion method 'vet': intermediate_steps=True is not supported by estimate()")
    if kwargs.get("indexing", "yx") != "yx":  # pysteps would read the (T, H, W) frames as (T, x, y): [0] = y
        raise InputError(f"motion method 'vet': indexing={kwargs['indexing']!r} is not supported by estimate(), "
                         "whose frames are (T, rows, columns) ('yx')")
    out = _pysteps_motion("vet")(frames, **kwargs)
    return out[0] if isinstance(out, tuple) else out


# the keywords pysteps' DARTS reads (it takes **kwargs and ignores any other, so a typo changed nothing)
DARTS_KEYWORDS = frozenset({"N_t", "N_x", "N_y", "M_x", "M_y", "fft_method", "lsq_method", "output_type",
                            "n_threads", "print_info", "verbose"})


def _darts(frames: np.ndarray, **kwargs: Any) -> np.ndarray:
    n_t = kwargs.get("N_t", 4)
    t = frames.shape[0]
    if not isinstance(n_t, (int, np.integer)) or n_t < 1:
        raise InputError(f"motion method 'darts': N_t must be an integer >= 1, got {n_t!r}")
    if t < n_t + 2:
        raise InputError(
            f"motion method 'darts': need at least N_t + 2 = {n_t + 2} frames (pysteps requires N_t < T - 1, "
            f"N_t={n_t}), got {t}; give more frames or a smaller N_t"
        )
    if kwargs.get("output_type", "spatial") != "spatial":
        raise InputError("motion method 'darts': only output_type='spatial' is supported by estimate()")
    n_x, n_y = kwargs.get("N_x", 50), kwargs.get("N_y", 50)  # pysteps' Fourier modes; it indexes past smaller grids
    h, w = frames.shape[-2:]
    if h < 2 * n_y + 1 or w < 2 * n_x + 1:
        raise ShapeError(f"motion method 'darts' with N_x={n_x}, N_y={n_y} Fourier modes needs grids of at least "
                         f"{2 * n_y + 1} x {2 * n_x + 1} pixels, got {h} x {w}; pass smaller N_x/N_y or use "
                         "another method")
    kwargs.setdefault("verbose", False)
    warn("motion method 'darts': pysteps' DARTS returns far too slow a motion (measured 3-7x on a clean synthetic "
         "translation, ~100x on KNMI radar where LK, VET and 4D-Var agree); prefer 'lk', 'vet' or '4dvar'")
    return _pysteps_motion("darts")(frames, **kwargs)


def _proesmans(frames: np.ndarray, **kwargs: Any) -> np.ndarray:
    if kwargs.get("full_output", False):
        raise InputError("motion method 'proesmans': full_output=True is not supported by estimate()")
    kwargs.setdefault("verbose", False)
    levels = kwargs.get("num_levels", 6)
    if isinstance(levels, (int, np.integer)) and levels >= 1 and min(frames.shape[-2:]) < 2 ** (levels - 1):
        # pysteps' Proesmans pyramid halves the grid num_levels - 1 times; smaller grids crash the process
        raise ShapeError(f"motion method 'proesmans' with num_levels={levels} needs grids of at least "
                         f"{2 ** (levels - 1)} x {2 ** (levels - 1)} pixels, got {tuple(frames.shape[-2:])}; "
                         "use a smaller num_levels or another method")
    return _pysteps_motion("proesmans")(frames, **kwargs)


def _farneback(frames: np.ndarray, **kwargs: Any) -> np.ndarray:
    kwargs.setdefault("verbose", False)
    return _pysteps_motion("farneback")(frames, **kwargs)


def _constant(frames: np.ndarray, **kwargs: Any) -> np.ndarray:
    return _pysteps_motion("constant")(frames)


def _zero(frames: np.ndarray, **kwargs: Any) -> np.ndarray:
    return np.zeros((2, *frames.shape[1:]))


def _has_pysteps_module(name: str) -> bool:
    """Whether pysteps ships ``pysteps/motion/<name>.py``, found without importing pysteps (slow, chatty)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("pysteps")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(loc) / "motion" / f"{name}.py").is_file() for loc in spec.submodule_search_locations)


def estimate_batch(frames: torch.Tensor, method: str = "lk", n_frames: int | None = None,
                   **kwargs: Any) -> torch.Tensor:
    """:func:`estimate` per sample of a batch: frames (B, T, H, W) torch -> motion (B, 2, H, W), same device/dtype
    (torch's default dtype for integer frames, as :func:`estimate`).

    Runs on the last ``n_frames`` frames of each sample (all when None), without gradient: on the CPU in float64,
    except a torch-backend method (4D-Var) with frames on another device, which runs there (a GPU's speed; the CPU
    path would move the frames to the host and back).
    """
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        raise InputError("estimate_batch takes a real torch tensor (B, T, H, W); for one (T, H, W) sequence or numpy "
                         "input use estimate()")
    check_real(frames, "frames")
    if frames.shape[0] == 0:
        raise ShapeError("estimate_batch got an empty batch (B = 0)")
    if n_frames is not None:
        n_frames = check_int("n_frames", n_frames, 1)
    arr = frames[:, -n_frames:] if n_frames else frames
    dtype = frames.dtype if frames.is_floating_point() else torch.get_default_dtype()
    if get_method(method).backend == "torch" and frames.device.type != "cpu":
        return torch.stack([estimate(a, method=method, **kwargs) for a in arr.detach()]).to(dtype=dtype)
    arr = arr.detach().to("cpu", torch.float64).numpy()
    vel = np.stack([estimate(a, method=method, **kwargs) for a in arr])
    return torch.from_numpy(vel).to(device=frames.device, dtype=dtype)


register("lk", _lk, min_frames=2, aliases=("lucaskanade",),
         keywords=_wrapped_keywords("lk", frozenset({"grid_stride"})))
register("vet", _vet, min_frames=2, max_frames=3, keywords=_wrapped_keywords("vet"))
# DARTS: pysteps requires N_t < T - 1 (default N_t = 4 -> T >= 6); checked against N_t in _darts. Measured (audit,
# 2026-11-29): on a clean (2, -1) px/step translation of a 128-px field pysteps' DARTS returns ~(0.29, -0.12) with
# its defaults and (0.75, -0.21) with N_x = N_y = 20: the right direction, 3-7x too slow (the wrapper equals pysteps)
register("darts", _darts, min_frames=3, keywords=DARTS_KEYWORDS)
register("proesmans", _proesmans, min_frames=2, max_frames=2, keywords=_wrapped_keywords("proesmans"))
register("constant", _constant, min_frames=2, max_frames=2, keywords=())
if _has_pysteps_module("farneback"):  # pysteps >= 1.14
    register("farneback", _farneback, min_frames=2, keywords=_wrapped_keywords("farneback"))
_REGISTRY["none"] = MotionMethod("none", _zero, min_frames=1, aliases=("zero",), zero=True, keywords=frozenset())
_LOOKUP["none"] = _LOOKUP["zero"] = "none"

__all__ = [
    "DB_THRESHOLD",
    "DB_ZEROVALUE",
    "MotionMethod",
    "estimate",
    "estimate_batch",
    "get_method",
    "methods",
    "register",
]
