"""Paired high-/low-resolution precipitation for downscaling.

Coarsening
----------
:func:`block_mean` averages non-overlapping ``factor × factor`` blocks (conservative coarsening: it keeps the
area mean and never makes negative rain). It is NaN-aware: a block with at least ``min_valid`` of its pixels
valid gets the mean of those; a block with fewer gets NaN.

Radar tiles
-----------
:func:`radar_pairs` cuts the shared radar archive (``SKYDIFF_DATA``, data README "Suggested use") into rainy,
fully valid ``tile × tile`` high-resolution tiles (1 km; 64 × 64 by default) and their ``factor``-times coarser
block means (4 km; 16 × 16):

============ ==========================================================================================
``train``    KNMI 2010-08-26 before 05:00 UTC, FMI 20160928, KNMI January 2021 evenings (the nowcasting
             train *and* validation parts of :func:`skydiff.nowcast.data.shared_split`), and MRMS
             2019-06-10 at the 10-min multiples 00:00 ... 01:10 (8 of the 36 two-minute frames; 0.01° ≈ 1 km)
``test``     held back: KNMI 2010-08-26 from 05:00 UTC, FMI 20170509, KNMI February 2021 evenings
``fit``      ``train`` without its validation tail: the nowcasting *train* part of
             :func:`~skydiff.nowcast.data.shared_split` (KNMI 2010 00:00-03:55, FMI 20160928 up to 17:20,
             KNMI January 2021 evenings 01-08) and MRMS 00:00 ... 00:50
``validation`` the rest of ``train``, later in time: KNMI 2010 04:00-04:55, FMI 20160928 17:25-18:00, KNMI
             January 2021 evenings 09 and 10 (the nowcasting validation part) and MRMS 01:00 and 01:10 (the
             last 20 % of its 8 frames, rounded up)
============ ==========================================================================================

``fit`` + ``validation`` = ``train`` in time (the same frames): a model meant to be compared on ``validation`` (to
choose a variant without touching the test part) trains on ``fit``; the shipped models train on all of ``train``.
For KNMI and FMI the tiles are the same too; MRMS draws its ``mrms_tiles_per_frame`` tiles per part (the random
draw depends on the part and on the source's place in ``sources``), so ``fit`` + ``validation`` hold other MRMS
tiles of the same frames than ``train``.

Tiles lie on a regular grid of non-overlapping tiles (stride = tile) over every frame; a tile is kept when all
its pixels are valid and at least ``min_wet_fraction`` of them are ``>= wet_threshold`` mm/h. MRMS frames
(3500 × 7000) hold thousands of rainy tiles each: at most ``mrms_tiles_per_frame`` are drawn at random (fixed
seed). The rainy tiles of each source are computed once and cached in ``cache_dir`` (default
``$SKYDIFF_CACHE``, else ``~/.cache/skydiff/tiles``) as ``tiles_<source>_<tile>_<...>.npz``, written atomically.

ERA5
----
:func:`era5_pairs`: hourly ERA5 TP (mm/h) on the shared 0.25° days (41 × 41, cut to 40 × 40) and its 4 × 4 block
means at 1° (10 × 10); with ``with_vimd=True`` also VIMD (mm/h, positive = divergence) at both resolutions,
from :mod:`skydiff.downscale.era5`.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ReadError, ShapeError, check_int

__all__ = ["block_mean", "TilePairs", "radar_pairs", "era5_pairs", "RADAR_SOURCES", "RADAR_PRODUCTS", "RADAR_LABELS",
           "radar_label", "product_label", "tile_grid"]

RADAR_SOURCES = {
    "train": ("knmi2010", "fmi2016", "knmi2021-01", "mrms"),
    "test": ("knmi2010-test", "fmi2017", "knmi2021-02"),
    "fit": ("knmi2010-fit", "fmi2016-fit", "knmi2021-01-fit", "mrms-fit"),
    "validation": ("knmi2010-val", "fmi2016-val", "knmi2021-01-val", "mrms-val"),
}
"""Names of the radar sources of each part (see the module docstring)."""

RADAR_PRODUCTS = ("knmi-rap", "knmi-dbz", "fmi", "mrms")
"""The radar products a labelled downscaler can imitate, in the order of its ``labels`` (the shipped ``edm-radar``)."""

RADAR_LABELS = {"knmi2010": "knmi-rap", "knmi2010-test": "knmi-rap", "fmi2016": "fmi", "fmi2017": "fmi",
                "knmi2021-01": "knmi-dbz", "knmi2021-02": "knmi-dbz", "mrms": "mrms"}
"""The radar *product* of each source, for downscalers conditioned on it (``EDMDownscaler(labels=...)``): KNMI's
real-time 5-min accumulation (``knmi-rap``, 2010: smooth at 1 km), KNMI reflectivity composites (``knmi-dbz``,
2021), FMI composites and MRMS precipitation rates; their 1-km fields differ in small-scale roughness."""


def radar_label(source: str) -> str:
    """The product label (:data:`RADAR_LABELS`) of a radar source name (``-fit`` / ``-val`` parts included)."""
    name = str(source)
    for suffix in ("-fit", "-val"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name not in RADAR_LABELS:
        raise InputError(f"no product label for radar source {source!r}; known sources: {sorted(RADAR_LABELS)}")
    return RADAR_LABELS[name]


def product_label(attrs: Any) -> str | None:
    """The product label (:data:`RADAR_PRODUCTS`) of a field read by :func:`skydiff.io.read_radar`, from its
    attributes (``importer``, ``source_unit``), or None when it is none of them.

    KNMI HDF5 files holding accumulations (``source_unit`` mm: the real-time 5-min ``RAD_NL25_RAP`` of 2010) are
    ``knmi-rap``, those holding reflectivity (dBZ: the 2021 composites) ``knmi-dbz``; FMI PGM/GeoTIFF composites
    ``fmi``; MRMS GRIB2 ``mrms``.
    """
    attrs = dict(attrs or {})
    importer = str(attrs.get("importer", ""))
    unit = str(attrs.get("source_unit", "")).strip().lower()
    if importer == "knmi_hdf5":
        return {"mm": "knmi-rap", "dbz": "knmi-dbz"}.get(unit)
    return {"fmi_pgm": "fmi", "fmi_geotiff": "fmi", "mrms_grib": "mrms"}.get(importer)


def _check_factor(factor: Any) -> int:
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or int(factor) < 1:
        raise InputError(f"factor must be an integer >= 1, got {factor!r}")
    return int(factor)


def block_mean(x: Any, factor: int, *, min_valid: float = 0.5) -> Any:
    """Mean over non-overlapping ``factor × factor`` blocks of the last two axes (NaN-aware).

    Parameters
    ----------
    x
        numpy array or torch tensor ``(..., H, W)`` (e.g. rain rate in mm/h); ``H`` and ``W`` must be multiples
        of ``factor``.
    factor
        Block size (integer >= 1).
    min_valid
        A block whose fraction of valid (non-NaN) pixels is below this gets NaN; otherwise the mean of its
        valid pixels (default 0.5; 1.0 = any missing pixel makes the block NaN).

    Returns
    -------
    Same type, dtype and device as ``x``, shape ``(..., H // factor, W // factor)``. Differentiable for tensors.

    Raises
    ------
    ShapeError
        Fewer than 2 dimensions, or ``H``/``W`` not divisible by ``factor``.
    """
    f = _check_factor(factor)
    if isinstance(min_valid, bool) or not isinstance(min_valid, (int, float, np.number)) or not (
            0.0 <= float(min_valid) <= 1.0):
        raise InputError(f"min_valid must be a fraction in [0, 1], got {min_valid!r}")
    is_t = isinstance(x, torch.Tensor)
    a = x if is_t else np.asarray(x)
    if (a.dtype.kind if not is_t else "f") not in "fiub" or (is_t and a.is_complex()):
        raise InputError(f"block_mean needs real numbers, got dtype {a.dtype}")
    if a.ndim < 2:
        raise ShapeError(f"block_mean needs an array (..., H, W), got shape {tuple(a.shape)}")
    H, W = int(a.shape[-2]), int(a.shape[-1])
    if H % f or W % f:
        raise ShapeError(f"grid {H} × {W} is not divisible by the factor {f}: crop it to "
                         f"{H - H % f} × {W - W % f} first")
    if not is_t and not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    if is_t and not a.is_floating_point():
        a = a.float()
    half = is_t and a.dtype in (torch.float16, torch.bfloat16)
    if half:  # summed in float32, returned in the input's dtype
        x_dtype, a = a.dtype, a.float()
    shape = (*a.shape[:-2], H // f, f, W // f, f)
    if is_t:
        b = a.reshape(shape)
        valid = ~torch.isnan(b)
        n = valid.sum(dim=(-3, -1)).to(a.dtype)
        s = torch.where(valid, b, torch.zeros((), dtype=a.dtype, device=a.device)).sum(dim=(-3, -1))
        out = s / n.clamp(min=1)
        bad = (n < float(min_valid) * f * f - 1e-9) | (n == 0)  # an all-NaN block is no data, not dry
        out = torch.where(bad, torch.full((), float("nan"), dtype=a.dtype, device=a.device), out)
        return out.to(x_dtype) if half else out
    b = a.reshape(shape)
    valid = ~np.isnan(b)
    n = valid.sum(axis=(-3, -1))
    s = np.where(valid, b, 0).sum(axis=(-3, -1), dtype=np.float64)  # (float16 sums overflowed at 65504)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (s / np.maximum(n, 1)).astype(a.dtype, copy=False)
    bad = (n < float(min_valid) * f * f - 1e-9) | (n == 0)
    out[bad] = np.nan
    return out


@dataclass
class TilePairs:
    """High-/low-resolution pairs.

    Attributes
    ----------
    hi
        ``(N, H, W)`` float32, the high-resolution field (mm/h; NaN = no data).
    lo
        ``(N, H // factor, W // factor)`` float32, its block means.
    factor
        The coarsening factor.
    source
        ``(N,)`` names of the sources.
    time
        ``(N,)`` datetime64[s] valid times.
    origin
        ``(N, 2)`` row, column of each tile's top-left pixel in its source grid.
    extra
        Other paired fields (e.g. ``"vimd_hi"``, ``"vimd_lo"`` for ERA5), same leading shape.
    """

    hi: np.ndarray
    lo: np.ndarray
    factor: int
    source: np.ndarray
    time: np.ndarray
    origin: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.hi.shape[0])

    def subset(self, index: Any) -> TilePairs:
        """The pairs at ``index`` (integer array, slice or boolean mask)."""
        return TilePairs(self.hi[index], self.lo[index], self.factor, self.source[index], self.time[index],
                         self.origin[index], {k: v[index] for k, v in self.extra.items()})

    def summary(self) -> dict[str, Any]:
        """Counts per source, shapes and rain statistics (JSON-able)."""
        names, counts = np.unique(self.source, return_counts=True)
        wet = float(np.nanmean(self.hi >= 0.1)) if len(self) else float("nan")
        return {"n": len(self), "hi_shape": list(self.hi.shape[1:]), "lo_shape": list(self.lo.shape[1:]),
                "factor": self.factor, "per_source": {str(n): int(c) for n, c in zip(names, counts)},
                "wet_fraction_hi": wet,
                "p99_hi": float(np.nanpercentile(self.hi, 99)) if len(self) else float("nan")}

    def __repr__(self) -> str:
        s = self.summary()
        return f"TilePairs({s['n']} pairs, {s['hi_shape']} -> {s['lo_shape']}, factor {self.factor}, {s['per_source']})"


def tile_grid(frame: np.ndarray, tile: int, *, wet_threshold: float = 0.1,
              min_wet_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Rainy, fully valid tiles of one frame on the regular grid of non-overlapping ``tile × tile`` tiles.

    Returns ``(tiles (n, tile, tile) float32, origins (n, 2) int)``.
    """
    H, W = frame.shape
    ny, nx = H // tile, W // tile
    if ny == 0 or nx == 0:
        return np.zeros((0, tile, tile), np.float32), np.zeros((0, 2), np.int64)
    a = np.asarray(frame[: ny * tile, : nx * tile], np.float32).reshape(ny, tile, nx, tile).transpose(0, 2, 1, 3)
    valid = ~np.isnan(a).any(axis=(-2, -1))
    with np.errstate(invalid="ignore"):
        wet = (a >= wet_threshold).mean(axis=(-2, -1))
    keep = valid & (wet >= min_wet_fraction)
    iy, ix = np.nonzero(keep)
    tiles = np.ascontiguousarray(a[iy, ix])
    np.maximum(tiles, 0, out=tiles)
    return tiles, np.stack([iy * tile, ix * tile], axis=1).astype(np.int64)


# ------------------------------------------------------------------------------------------ radar sources
def _data_root(data_dir: Any) -> Path:
    root = Path(data_dir if data_dir is not None else os.environ.get("SKYDIFF_DATA", "../shared/data")).expanduser()
    if not (root / "radar").is_dir():
        raise ReadError(f"shared data not found at {root}: pass data_dir or set SKYDIFF_DATA to the folder "
                        "holding radar/")
    return root


def _cache_root(cache_dir: Any) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("SKYDIFF_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "skydiff" / "tiles"


def _mrms_files(root: Path) -> list[str]:
    files = sorted((root / "radar" / "mrms").rglob("PrecipRate_*.grib2*"))
    out = []
    for p in files:
        stamp = p.name.split("_")[-1].split(".")[0]  # YYYYMMDD-HHMMSS
        try:
            mm, ss = int(stamp[-4:-2]), int(stamp[-2:])
        except ValueError:
            continue
        if mm % 10 == 0 and ss == 0:
            out.append(str(p))
    return out


def _source_parts(name: str, root: Path) -> list[Any]:
    """The :class:`~skydiff.nowcast.data.RadarSource` parts (or MRMS file lists) of one named source."""
    from ..nowcast.data import _tail_count, shared_split

    sub = ""
    for suffix in ("-fit", "-val"):
        if name.endswith(suffix):
            name, sub = name[: -len(suffix)], suffix[1:]
    if name == "mrms":
        files = _mrms_files(root)
        if not files:
            raise ReadError(f"no MRMS PrecipRate files at 10-min multiples under {root / 'radar' / 'mrms'}")
        k = _tail_count(len(files), 0.2)
        files = files[: len(files) - k] if sub == "fit" else files[len(files) - k:] if sub == "val" else files
        return [[f] for f in files]
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = shared_split(root)
    prefix = {
        "knmi2010": ("train", "KNMI 2010-08-26"), "fmi2016": ("train", "FMI 20160928"),
        "knmi2021-01": ("train", "KNMI 2021-01"), "knmi2010-test": ("test", "KNMI 2010-08-26 test"),
        "fmi2017": ("test", "FMI 20170509"), "knmi2021-02": ("test", "KNMI 2021-02"),
    }
    if name not in prefix:
        raise InputError(f"unknown radar source {name!r}; known: {', '.join(sorted(set(prefix) | {'mrms'}))}")
    part, pre = prefix[name]
    keys = ("train", "validation") if part == "train" else ("test",)
    if sub and part == "train":
        keys = ("train",) if sub == "fit" else ("validation",)
    elif sub:
        raise InputError(f"unknown radar source {name}-{sub!r}: only training sources have -fit / -val parts")
    parts = [p for k in keys for p in sp[k] if p.name.startswith(pre)]
    if not parts:
        raise ReadError(f"radar source {name!r} not found under {root}")
    return parts


def _cache_key(name: str, tile: int, wet_threshold: float, min_wet_fraction: float, per_frame: int | None,
               seed: int, root: Path) -> str:
    """The cache file of one source's tiles: its settings and the data folder (resolved; two folders shared one
    entry before). Files changed inside the same folder are not seen: clear the cache then."""
    where = os.path.realpath(os.fspath(root))
    h = hashlib.sha1(f"{name}|{tile}|{wet_threshold}|{min_wet_fraction}|{per_frame}|{seed}|{where}|v2".encode())
    return f"tiles_{name}_{tile}_{h.hexdigest()[:10]}.npz"


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from ..io.atomic import atomic_path

    with atomic_path(path, suffix=".tmp.npz") as tmp:
        np.savez(tmp, **arrays)


def _source_tiles(name: str, root: Path, tile: int, wet_threshold: float, min_wet_fraction: float,
                  per_frame: int | None, seed: int, cache: Path | None, progress: bool) -> dict[str, np.ndarray]:
    path = None if cache is None else cache / _cache_key(name, tile, wet_threshold, min_wet_fraction, per_frame, seed,
                                                         root)
    if path is not None and path.is_file():
        try:
            with np.load(path) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # a damaged cache entry: rebuilt
            from ..errors import warn

            warn(f"tile cache {path} is unreadable ({type(exc).__name__}); rebuilding it")
    from tqdm.auto import tqdm

    from ..io import read_radar

    rng = np.random.default_rng(seed)
    parts = _source_parts(name, root)
    tiles, origins, times = [], [], []
    import warnings

    for part in tqdm(parts, desc=f"tiles {name}", disable=not progress, leave=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            da = read_radar(part) if isinstance(part, list) else part.load()
        t = np.asarray(da["time"].values, dtype="datetime64[s]")
        vals = da.values
        for i in range(vals.shape[0]):
            tl, org = tile_grid(vals[i], tile, wet_threshold=wet_threshold, min_wet_fraction=min_wet_fraction)
            if per_frame is not None and tl.shape[0] > per_frame:
                pick = np.sort(rng.choice(tl.shape[0], per_frame, replace=False))
                tl, org = tl[pick], org[pick]
            tiles.append(tl)
            origins.append(org)
            times.append(np.full(tl.shape[0], t[i]))
        del vals, da
    out = {
        "hi": np.concatenate(tiles) if tiles else np.zeros((0, tile, tile), np.float32),
        "origin": np.concatenate(origins) if origins else np.zeros((0, 2), np.int64),
        "time": np.concatenate(times) if times else np.zeros(0, "datetime64[s]"),
    }
    if path is not None:
        _save_npz(path, **out)
    return out


def radar_pairs(
    part: str = "train",
    factor: int = 4,
    tile: int = 64,
    *,
    sources: Sequence[str] | None = None,
    wet_threshold: float = 0.1,
    min_wet_fraction: float = 0.1,
    max_tiles: int | None = None,
    mrms_tiles_per_frame: int | None = 400,
    seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> TilePairs:
    """Rainy high-resolution radar tiles (1 km, mm/h) and their block means, from the shared split.

    Parameters
    ----------
    part
        ``"train"``, ``"test"`` (held back: KNMI 2010 from 05:00, FMI 20170509, KNMI February 2021), or
        ``"fit"`` / ``"validation"`` (``train`` split by time; see the module docstring).
    factor
        Coarsening factor; ``tile`` must be a multiple of it.
    tile
        High-resolution tile size in pixels (default 64 → 16 × 16 at factor 4).
    sources
        Subset of :data:`RADAR_SOURCES` ``[part]`` (default all of them).
    wet_threshold, min_wet_fraction
        Keep a tile when at least ``min_wet_fraction`` of its pixels are ``>= wet_threshold`` mm/h.
    max_tiles
        Draw at most this many tiles at random (seed ``seed``), keeping the order (default all).
    mrms_tiles_per_frame
        At most this many random rainy tiles per MRMS frame (None = all).
    seed
        Random seed of the sampling.
    data_dir, cache_dir
        Shared data folder (default ``$SKYDIFF_DATA``) and tile cache (default ``$SKYDIFF_CACHE``, else
        ``~/.cache/skydiff/tiles``; ``False`` = no cache).
    progress
        tqdm bars while reading.

    Returns
    -------
    TilePairs
        ``hi`` (N, tile, tile), ``lo`` (N, tile/factor, tile/factor), both mm/h, no NaN.
    """
    if part not in RADAR_SOURCES:
        raise InputError(f"part must be one of {', '.join(map(repr, RADAR_SOURCES))}, got {part!r}")
    f = _check_factor(factor)
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise InputError(f"tile must be a positive integer, got {tile!r}")
    if tile % f:
        raise ShapeError(f"tile {tile} is not divisible by the factor {f}")
    names = tuple(RADAR_SOURCES[part]) if sources is None else tuple(sources)
    bad = [s for s in names if s not in RADAR_SOURCES[part]]
    if bad:
        raise InputError(f"source(s) {', '.join(bad)} are not in the {part} part; choose from "
                         f"{', '.join(RADAR_SOURCES[part])}")
    root = _data_root(data_dir)
    cache = None if cache_dir is False else _cache_root(cache_dir)
    his, srcs, times, origins = [], [], [], []
    for k, name in enumerate(names):
        per = mrms_tiles_per_frame if name.startswith("mrms") else None
        d = _source_tiles(name, root, int(tile), float(wet_threshold), float(min_wet_fraction), per, seed + k,
                          cache, progress)
        his.append(d["hi"].astype(np.float32, copy=False))
        srcs.append(np.full(d["hi"].shape[0], name))
        times.append(d["time"].astype("datetime64[s]"))
        origins.append(d["origin"])
    hi = np.concatenate(his)
    if hi.shape[0] == 0:
        raise InputError(f"no rainy tile in the {part} part with these settings (min_wet_fraction "
                         f"{min_wet_fraction}, wet_threshold {wet_threshold} mm/h)")
    pairs = TilePairs(hi, block_mean(hi, f), f, np.concatenate(srcs), np.concatenate(times), np.concatenate(origins))
    if max_tiles is not None and len(pairs) > check_int("max_tiles", max_tiles, 1):
        idx = np.sort(np.random.default_rng(seed).choice(len(pairs), int(max_tiles), replace=False))
        pairs = pairs.subset(idx)
    return pairs


# ------------------------------------------------------------------------------------------ ERA5
ERA5_DAYS = ("model-levels-2022-08-31", "pressure-levels-2020-01-01")


def era5_pairs(days: Sequence[str] | None = None, factor: int = 4, *, size: int = 40, with_vimd: bool = True,
               data_dir: str | os.PathLike[str] | None = None) -> TilePairs:
    """Hourly ERA5 TP (mm/h) at 0.25° on the shared days, cut to ``size × size``, and its block means.

    Parameters
    ----------
    days
        Folders under ``era5/`` (default both shared days, :data:`ERA5_DAYS`).
    factor
        Coarsening factor (4: 0.25° → 1°); ``size`` must be a multiple of it.
    size
        The 41 × 41 grid is cut to its first ``size`` rows and columns (default 40 → 10 × 10 at 1°).
    with_vimd
        Also return VIMD (mm/h = kg m⁻² h⁻¹, positive = divergence) as ``extra["vimd_hi"]`` / ``["vimd_lo"]``,
        computed by :func:`skydiff.downscale.era5.read_era5` / :func:`skydiff.downscale.vimd`.

    Returns
    -------
    TilePairs with ``hi`` (T, size, size) and ``lo`` (T, size/factor, size/factor).
    """
    f = _check_factor(factor)
    if size % f:
        raise ShapeError(f"size {size} is not divisible by the factor {f}")
    root = Path(data_dir if data_dir is not None else os.environ.get("SKYDIFF_DATA", "../shared/data")).expanduser()
    if not (root / "era5").is_dir():
        raise ReadError(f"ERA5 data not found at {root / 'era5'} (set SKYDIFF_DATA)")
    from .era5 import read_era5

    names = tuple(days) if days is not None else ERA5_DAYS
    tps, vis, times, srcs = [], [], [], []
    for name in names:
        folder = root / "era5" / name
        if not folder.is_dir():
            raise ReadError(f"ERA5 folder {folder} not found")
        ds = read_era5(folder)
        if "tp" not in ds:
            raise ReadError(f"{folder} has no tp")
        tp = np.asarray(ds["tp"].transpose("time", ...).values, np.float32)
        if tp.shape[-2] < size or tp.shape[-1] < size:
            raise ShapeError(f"ERA5 grid {tp.shape[-2:]} is smaller than size {size}")
        tps.append(np.maximum(tp[:, :size, :size], 0))
        if with_vimd:
            vimd = _era5_vimd(ds, folder)
            vis.append(vimd[:, :size, :size])
        times.append(np.asarray(ds["time"].values, dtype="datetime64[s]"))
        srcs.append(np.full(tp.shape[0], name))
    hi = np.concatenate(tps)
    extra = {}
    if with_vimd:
        v = np.concatenate(vis)
        extra = {"vimd_hi": v, "vimd_lo": block_mean(v, f)}
    return TilePairs(hi, block_mean(hi, f), f, np.concatenate(srcs), np.concatenate(times),
                     np.zeros((hi.shape[0], 2), np.int64), extra)


def _era5_vimd(ds: Any, folder: Path) -> np.ndarray:
    """VIMD (mm/h) of a dataset from :func:`read_era5`: its ``vimd`` variable, else computed with ``vimd(ds)``."""
    if "vimd" in ds:
        return np.asarray(ds["vimd"].transpose("time", ...).values, np.float32)
    from . import era5 as _era5

    fn = getattr(_era5, "vimd", None)
    if fn is None:
        from .moisture import vimd as fn  # type: ignore[no-redef]
    out = fn(ds)
    return np.asarray(getattr(out, "values", out), np.float32)
