"""The ``skydiff`` command: ``nowcast``, ``verify``, ``evaluate``, ``assimilate``, ``train``, ``data``,
``downscale``, ``dycore``, ``demo``.

Every expected problem (bad files, gaps in time, wrong shapes or units) ends with a one-line
``skydiff: error: ...`` message and exit status 2, never a traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._compat import PRECISIONS
from .errors import InputError, SkydiffError, check_device

DEFAULT_THRESHOLDS = (1.0, 5.0, 10.0)


class _Progress:
    """Numbered progress lines on stderr (``[2/5] estimating motion ... 0.4 s``)."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total, self.i, self.quiet = total, 0, quiet
        self.t0 = time.perf_counter()
        self._open = self._bar = False

    def step(self, msg: str, bar: bool = False) -> None:
        """Start step ``msg``; ``bar=True`` when the step may draw a tqdm bar: the line is ended at once (the bar
        gets a line of its own instead of overwriting this one) and the time follows on a line of its own."""
        self.done()
        self.i += 1
        self.t0 = time.perf_counter()
        self._bar = bar
        if not self.quiet:
            print(f"[{self.i}/{self.total}] {msg} ...", end="\n" if bar else "", file=sys.stderr, flush=True)
        self._open = True

    def done(self) -> None:
        if self._open and not self.quiet:
            lead = f"[{self.i}/{self.total}] done in" if self._bar else ""
            print(f"{lead} {time.perf_counter() - self.t0:.1f} s", file=sys.stderr, flush=True)
        self._open = False


def _many_files(paths: Sequence[str]) -> bool:
    """Whether :func:`skydiff.io.read_radar` may draw its tqdm bar (it does for more than 20 files): many paths, a
    folder or a glob pattern."""
    return len(paths) > 20 or any(os.path.isdir(p) or glob.has_magic(p) for p in paths)


def _say(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# nowcast


def _check_outputs(paths: Sequence[str | None], overwrite: bool, *, plot: str | None = None,
                   inputs: Sequence[str] = ()) -> None:
    """Refuse, before any work, outputs that would lose something or fail late: an existing file without
    --overwrite, a folder, one path given twice, an input file (glob patterns and folders of inputs are
    expanded), and a --plot file type matplotlib cannot write."""
    given = [p for p in paths if p]
    for p in given:  # (out/newdir/ was written as a file named newdir)
        if p.endswith(("/", os.sep)):
            raise InputError(f"the output {p} names a folder (it ends in {p[-1]!r}): give a file name")
    real = [os.path.realpath(p) for p in given]
    if len(set(real)) < len(real):
        raise InputError(f"the output paths must differ, got {given}: one file would replace the other")
    srcs = {os.path.realpath(n) for n in _input_files(inputs)}
    for p, r in zip(given, real):
        if r in srcs:
            raise InputError(f"refusing to write {p}: it is one of the input files")
        if os.path.isdir(p):
            raise InputError(f"{p} is a folder; give a file name")
        if os.path.exists(p) and not overwrite:
            raise InputError(f"{p} exists; pass --overwrite to replace it")
        _check_writable(p)
    if plot:
        from matplotlib.figure import Figure

        ext = os.path.splitext(plot)[1].lstrip(".").lower() or "png"  # as skydiff.plot.save_figure
        kinds = Figure().canvas.get_supported_filetypes()
        if ext not in kinds:
            raise InputError(f"cannot save a figure as {plot!r}: use one of .{', .'.join(sorted(kinds))}")


def _nowcast_files(paths: Sequence[str]) -> list[str]:
    """The netCDF files among ``paths`` (globs and folders expanded) that hold a skydiff nowcast (a ``lead_time``
    dimension)."""
    import netCDF4

    found = []
    for n in _input_files(paths):
        if not n.lower().endswith((".nc", ".nc4", ".netcdf")) or not os.path.isfile(n):
            continue
        try:
            with netCDF4.Dataset(n) as ds:
                if "lead_time" in ds.dimensions:
                    found.append(n)
        except OSError:  # unreadable: the reader says so later
            pass
    return found


def _input_files(paths: Sequence[str]) -> list[str]:
    """The files named by input arguments: glob patterns and folders (their entries) expanded, in order."""
    names: list[str] = []
    for q in paths:
        for f in sorted(glob.glob(q)) if glob.has_magic(q) else [q]:
            names += sorted(os.path.join(f, c) for c in os.listdir(f)) if os.path.isdir(f) else [f]
    return names


def _check_writable(path: str) -> None:
    """Refuse an output whose folder cannot take a new file (probed by creating and removing a temporary file in
    the nearest existing folder; the writers create missing folders), before any work."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise InputError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {path}: the folder {folder} does not take new files "
                         f"({exc.strerror or exc})") from None


def _check_threads(n: Any) -> None:
    if n is not None and n < 1:
        raise InputError(f"--threads must be >= 1, got {n}")
    if n is not None and n > 4 * (os.cpu_count() or 1):  # (100 000 threads crashed the process)
        raise InputError(f"--threads {n} is far more than the {os.cpu_count()} CPU cores of this machine")


def _one_file_per_frame(da: Any) -> bool:
    return len(str(da.attrs.get("source_files", "")).splitlines()) == da.sizes["time"]


def _last_frames(da: Any, n: int, one_per_file: bool) -> Any:
    """The last ``n`` frames; with one file per frame, ``source_files`` lists the files of those frames only (the
    provenance written to the output), not all those read."""
    da = da.isel(time=slice(-n, None))
    if one_per_file:
        da.attrs["source_files"] = "\n".join(str(da.attrs["source_files"]).splitlines()[-da.sizes["time"]:])
    return da


def _motion_name(args: argparse.Namespace, motion: str) -> str:
    """The motion method a nowcast used: --motion, else the network's own, else extrapolation's lk."""
    from .nowcast.interface import own_motion

    return (None if args.motion is not None else own_motion(args.model, args.weights)) or motion


def cmd_nowcast(args: argparse.Namespace) -> int:
    from .io import check_regular, read_radar, require_frames, write_nowcast
    from .nowcast import forecast

    _check_outputs([args.out, args.plot], args.overwrite, plot=args.plot, inputs=args.files)
    from .nowcast.interface import is_neural

    for flag, asked in ((f"--precision {args.precision}", args.precision != "full"), ("--whole-grid", args.whole_grid),
                        (f"--min-rain {args.min_rain}", args.min_rain is not None),
                        (f"--prob-match {args.prob_match}", args.prob_match is not None)):
        if asked and not is_neural(args.model):
            raise InputError(f"{flag} applies to the neural-network models, not {args.model!r}")
    from .nowcast import get_model
    from .nowcast.interface import default_motion_frames, input_frames

    # every option is checked before the (possibly long) reading
    check_device(args.device, "a nowcast")
    spec = get_model(args.model)  # InputError naming the known models
    neural = is_neural(args.model)
    if args.weights and not neural:
        raise InputError(f"--weights is for the neural-network models; {args.model!r} has none")
    if args.weights:
        from .registry import weights_file

        weights_file(args.weights)
    if neural:  # the network and its weights (cached for the nowcast), its lead times and precision
        from .nowcast.interface import _network

        with warnings.catch_warnings():  # (a slow-precision warning comes with the nowcast itself)
            warnings.simplefilter("ignore")
            _network(spec.name, args.weights or None, "cpu").check_request(
                args.leadtimes, None if args.precision == "full" else args.precision)
    if args.motion_frames is not None and args.motion_frames < 2:
        raise InputError(f"--motion-frames must be >= 2 (motion needs two frames at least), got {args.motion_frames}")
    if args.motion is not None and not spec.uses_motion:
        raise InputError(f"--motion applies to extrapolation and the networks that move rain along a motion (lupin, "
                         f"lcnn), not {args.model!r}")
    if args.motion_frames is not None and (not spec.uses_motion or (neural and args.motion is None)):
        why = "uses its own motion: add --motion METHOD" if spec.uses_motion else "moves no rain along a motion"
        raise InputError(f"--motion-frames sets the frames of the motion estimated with --motion (or of "
                         f"extrapolation's); {args.model!r} {why}")
    motion = args.motion or "lk"  # extrapolation's default; the networks use their own unless --motion is given
    n_motion = args.motion_frames or default_motion_frames(motion)
    n_need = max(n_motion if spec.uses_motion else 1, input_frames(spec.name, args.weights or None))
    prog = _Progress(4 + bool(args.plot), args.quiet)
    prog.step(f"reading {len(args.files)} input path(s)", bar=_many_files(args.files))
    da = read_radar(args.files, importer=args.importer, progress=not args.quiet, **_read_options(args))
    prog.done()
    one_per_file = _one_file_per_frame(da)
    processing = []  # what was done to the frames before the nowcast (written to the file)
    km = _pixel_km(da.attrs)
    if neural and km is not None and not 0.5 <= km <= 2.0:
        _say(f"    note: the {args.model} network was trained on ~1-km radar pixels; this input has {km:.3g}-km "
             "pixels, so the motion and the textures it learned do not transfer as they are", args.quiet)
    if args.bbox is not None:
        from .io import crop_bbox

        da = crop_bbox(da, args.bbox)
        _say(f"    cropped to {da.sizes['y']} x {da.sizes['x']} pixels", args.quiet)
        processing.append(f"cropped to --bbox {' '.join(f'{v:.10g}' for v in args.bbox)}")
    if args.resample is not None:
        from .io import resample_time

        if args.allow_gaps:
            raise InputError("--resample and --allow-gaps do not go together: resampling bridges short gaps itself "
                             "and refuses long ones")
        step_read = da.attrs.get("timestep")
        da = resample_time(da, args.resample)  # TimeGapError (clear) inside a gap longer than twice the step
        was = f"{float(step_read):g} min" if isinstance(step_read, (int, float)) and np.isfinite(step_read) else "?"
        processing.append(f"resampled linearly in time from {was} to {args.resample:g} min (--resample)")
        one_per_file = False
        _say(f"    resampled to {args.resample:g} min (linear in time): {da.sizes['time']} frames", args.quiet)
    require_frames(da, n_need)
    da = _last_frames(da, n_need, one_per_file)
    if not args.allow_gaps:
        check_regular(da)
    timestep = da.attrs.get("timestep")
    timestep = 5.0 if timestep is None or not np.isfinite(float(timestep)) else float(timestep)  # (one file: NaN)
    if args.allow_gaps:  # the motion and the networks take only frames one step apart: those after the last gap
        t = da.time.values.astype("datetime64[ms]").astype(np.int64) / 60000.0
        gaps = np.flatnonzero(np.abs(np.diff(t) - timestep) > 1e-3)
        run = len(t) - (int(gaps[-1]) + 1 if gaps.size else 0)
        after = str(da.time.values[-run])[:16] if gaps.size else ""
        if gaps.size and neural and run < n_need:
            raise InputError(f"--allow-gaps: the {args.model} network needs {n_need} frames {timestep:g} min "
                             f"apart, but only the last {run} are (a gap before {after}); give regular frames")
        if gaps.size and spec.uses_motion and not neural and run < n_motion:
            if run < 2:
                raise InputError(f"--allow-gaps: the motion needs 2 frames {timestep:g} min apart at the end; the last "
                                 f"two are {t[-1] - t[-2]:g} min apart")
            _say(f"    note: motion from the last {run} frames (a gap before {after}; --motion-frames {n_motion} "
                 "asked): across a gap it would take the gap for one step", args.quiet)
            n_motion = run
    _say(
        f"    {da.sizes['time']} frames {str(da.time.values[0])[:16]} .. {str(da.time.values[-1])[:16]} UTC, "
        f"grid {da.sizes['y']} x {da.sizes['x']}, step {timestep:g} min",
        args.quiet,
    )
    used = _motion_name(args, motion)
    prog.step(f"estimating motion ({used}) and extrapolating {args.leadtimes} steps ({args.model})"
              if spec.uses_motion else f"nowcasting {args.leadtimes} steps ({args.model})")
    extra = {"weights": args.weights} if args.weights else {}
    if args.precision != "full":
        extra["precision"] = args.precision
    if args.whole_grid:
        extra["trim_nodata"] = False
    if args.min_rain is not None:
        extra["min_rain"] = args.min_rain
    if args.prob_match is not None:
        extra["prob_match"] = args.prob_match
    nowcast, velocity = forecast(
        da.values if args.allow_gaps else da,  # with gaps allowed, the nominal step is the files' time step
        args.leadtimes,
        timestep=timestep if args.allow_gaps else None,
        model=args.model,
        # given to LUPIN / L-CNN, it replaces their own motion; persistence and the like take none
        motion=(args.motion if neural else motion) if spec.uses_motion else None,
        motion_kwargs={"frames": n_motion} if spec.uses_motion and (args.motion or not neural) else None,
        return_velocity=True,
        device=args.device,
        **extra,
    )
    prog.step(f"writing {args.out}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)  # as --plot and the other commands do
    write_nowcast(
        args.out,
        nowcast,
        reference_time=da.time.values[-1],
        timestep=timestep,
        like=da,
        velocity=velocity,
        model=f"{args.model} (motion: {used})" if velocity is not None else args.model,
        attrs={"processing": "; ".join(processing)} if processing else None,
        overwrite=args.overwrite,
    )
    if args.plot:
        from .plot import plot_nowcast

        from .plot import north_up

        prog.step(f"plotting {args.plot}")
        vel = velocity if velocity is not None else np.zeros((2, *nowcast.shape[1:]))
        last, fc_up, vel = north_up(da, da.values[-1], nowcast, velocity=vel)  # north at the top
        plot_nowcast(
            last,
            vel,
            fc_up,
            leadtimes_min=timestep * np.arange(1, args.leadtimes + 1),
            path=args.plot,
            title=f"skydiff nowcast from {str(da.time.values[-1])[:16]} UTC ({args.model}"
            + (f", motion {used})" if velocity is not None else ")"),
        )
    prog.step("done")
    prog.done()
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# verify


def _format_table(df: Any, columns: Sequence[str]) -> str:
    cols = [c for c in columns if c in df.columns]
    return df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _check_same_grid(nc: Any, obs: Any) -> None:
    """InputError unless the nowcast and the observations lie on one grid: shape, and (where both files say)
    projection and x/y coordinates (a nowcast of another domain of the same shape was scored against the wrong
    pixels)."""
    from .io.radar import _array_grid, _same_grid

    a, b = _array_grid(nc), _array_grid(obs)
    if not (a["projection"] and b["projection"]):  # one file without a projection: coordinates and shape only
        a["projection"] = b["projection"] = ""
    if a["shape"] == b["shape"] and _same_grid(a, b):
        return

    def desc(g: dict[str, Any]) -> str:
        h, w = g["shape"]
        return (f"{h} x {w} from x = {float(g['x'][0]):.6g}, y = {float(g['y'][0]):.6g} "
                f"({g['projection'] or 'no projection'})")

    raise InputError(f"the observations and the nowcast lie on different grids: observations {desc(b)}, "
                     f"nowcast {desc(a)}")


def _obs_on_nowcast_grid(nc: Any, obs: Any) -> Any:
    """The observations cut to the nowcast's grid when that grid is a block of theirs (a nowcast made with --bbox),
    else unchanged (then _check_same_grid says what differs)."""
    if nc.sizes["y"] == obs.sizes["y"] and nc.sizes["x"] == obs.sizes["x"]:
        return obs
    from .io.radar import _array_grid

    a, b = _array_grid(nc), _array_grid(obs)
    if a["projection"] and b["projection"] and a["projection"] != b["projection"]:
        return obs
    cut = {}
    for dim in ("y", "x"):
        mine, theirs = np.asarray(nc[dim].values, float), np.asarray(obs[dim].values, float)
        if mine.size > theirs.size or mine.size == 0:
            return obs
        tol = 1e-6 * max(abs(float(theirs[1] - theirs[0])) if theirs.size > 1 else 1.0, 1e-12)
        start = np.flatnonzero(np.abs(theirs - mine[0]) <= tol)
        if start.size != 1 or start[0] + mine.size > theirs.size or \
                not np.allclose(theirs[start[0]:start[0] + mine.size], mine, rtol=0, atol=tol):
            return obs
        cut[dim] = slice(int(start[0]), int(start[0]) + mine.size)
    return obs.isel(cut)


def cmd_verify(args: argparse.Namespace) -> int:
    from .io import read_nowcast, read_radar
    from .verify import score_table

    _check_outputs([args.csv, args.plot], args.overwrite, plot=args.plot, inputs=[args.nowcast, *args.files])
    forecasts = _nowcast_files(args.files)
    if forecasts:  # read_radar reads nowcast files by their valid times: a folder holding the nowcast scored itself
        raise InputError(f"{len(forecasts)} of the observation files are nowcasts, not observations: "
                         f"{', '.join(forecasts[:3])}{' ...' if len(forecasts) > 3 else ''}; leave them out")
    nc = read_nowcast(args.nowcast)
    obs = read_radar(args.files, importer=args.importer, progress=not args.quiet, **_read_options(args))
    sub = _obs_on_nowcast_grid(nc, obs)
    if sub is not obs:
        _say(f"    the nowcast covers a {sub.sizes['y']} x {sub.sizes['x']} block of the observations' grid (--bbox): "
             "scored there", args.quiet)
        obs = sub
    _check_same_grid(nc, obs)
    valid = nc["time"].values.astype("datetime64[ns]")
    otimes = obs["time"].values.astype("datetime64[ns]")
    keep = [i for i, t in enumerate(valid) if t in set(otimes)]
    if not keep:
        raise InputError(
            f"no observation matches the nowcast's valid times {str(valid[0])[:16]} .. {str(valid[-1])[:16]}"
        )
    missing = [str(valid[i])[:16] for i in range(len(valid)) if i not in keep]
    if missing:
        _say(f"note: no observation for lead time(s) valid at {', '.join(missing)}; those rows are skipped", args.quiet)
    obs_sel = obs.sel(time=valid[keep]).values
    fc = nc.values[keep]
    lead = nc["lead_time"].values[keep]
    table = score_table(fc, obs_sel, thresholds=tuple(args.thresholds), leadtimes_min=lead)
    print(_format_table(table, ["leadtime_min", "threshold", "csi", "pod", "far", "ets", "mae", "rmse", "me"]))
    if args.csv:
        _atomic_csv(table, args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        from .plot import plot_scores

        plot_scores(table, scores=("csi", "ets", "mae"), hue="threshold", path=args.plot)
        print(f"wrote {args.plot}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .nowcast.evaluation import evaluate

    _check_outputs([args.csv, args.plot], args.overwrite, plot=args.plot, inputs=args.files or [])
    check_device(args.device, "evaluate")
    from .registry import weights_file

    weights = {}
    for item in args.weights or []:  # before any reading: the form, and that the file is there
        if "=" not in item:
            raise InputError(f"--weights takes MODEL=PATH, got {item!r}")
        k, v = item.split("=", 1)
        weights_file(v)
        weights[k] = v
    sources: list[Any]
    if args.shared and args.files:
        raise InputError("give either radar files/folders or --shared, not both")
    options = _read_options(args)
    if args.importer is not None:
        options["importer"] = args.importer
    if args.shared and options:
        raise InputError("--importer and --importer-option are for the files you give, not --shared (the shared "
                         "data is read with its own settings)")
    if args.shared:
        from .nowcast.data import shared_split

        sources = shared_split(args.data)[args.shared]
        if not sources:
            raise InputError(f"the shared data has no {args.shared!r} part under {args.data or '$SKYDIFF_DATA'}")
    else:
        if not args.files:
            hint = (f" (--data {args.data} names the shared data folder that --shared reads; to evaluate on a folder "
                    f"of your own, give it as an argument: skydiff evaluate {args.data} --models ...)"
                    if args.data else "")
            raise InputError("give radar files/folders (one folder = one sequence) or --shared test|validation|train"
                             + hint)
        # each folder is a sequence, and the files given one by one (or by a pattern) are one sequence together
        # (until 2026-11-27 every file was a sequence of its own, so a list of files had no case at all)
        folders = [f for f in args.files if Path(f).is_dir()]
        files = [f for f in args.files if not Path(f).is_dir()]
        sources = folders + ([files] if files else [])
        _refuse_overlap(sources)
        if options:  # read with the importer and its options
            from .nowcast.data import RadarSource

            sources = [RadarSource(Path(src).name if isinstance(src, str) else Path(src[0]).parent.name,
                                   (src,) if isinstance(src, str) else tuple(src), options=options)
                       for src in sources]
    ev = evaluate(
        sources, args.models, leadtimes=args.leadtimes, thresholds=args.thresholds, stride=args.stride,
        crop=args.crop, max_cases=args.max_cases, motion=args.motion, weights=weights,
        progress=(lambda m: _say(m, args.quiet)), protocols=args.protocols or (),
        precision=None if args.precision == "full" else args.precision, min_rain=args.min_rain,
        timestep=args.timestep, resample=args.resample, n_in=args.n_in, device=args.device,
    )  # fmt: skip
    print(f"{len(ev.cases)} cases ({ev.n_in} + {len(ev.leadtimes_min)}-frame windows), lead times "
          f"{', '.join(f'{t:g}' for t in ev.leadtimes_min)} min\n")
    for thr in ev.thresholds:
        for sc in ("csi", "ets"):
            print(f"{sc.upper()} at {thr:g} mm/h\n\n{ev.table(sc, thr)}\n")
    print(f"MAE (mm/h)\n\n{ev.table('mae')}\n")
    for p in args.protocols or ():
        print(f"{p} protocol (NL-50, with its quirks: skydiff.verify.protocols)\n\n{ev.protocol_table(p)}\n")
    print("mean seconds per nowcast: " + ", ".join(f"{m} {t:.2f}" for m, t in ev.timing.items()))
    if args.csv:
        ev.to_csv(args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        ev.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def _refuse_overlap(sources: list[Any]) -> None:
    """InputError when a file belongs to two evaluation sources (a folder given twice, or a folder and a file in it):
    its cases were scored twice."""
    from .io.radar import _expand

    seen: dict[str, int] = {}
    for i, src in enumerate(sources):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (a file named twice within a source: read_radar says so when reading)
            listed = _expand(src)
        for path, _ in listed:
            j = seen.setdefault(os.path.realpath(path), i)
            if j != i:
                raise InputError(f"{path} is in two of the sources given (each folder, and the files given together, "
                                 "is one sequence): its cases would be scored twice")


def _atomic_csv(df: Any, path: str) -> None:
    from .io.atomic import atomic_path

    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


# ----------------------------------------------------------------------------------------------------------------
# assimilate (4D-Var motion)


def cmd_assimilate(args: argparse.Namespace) -> int:
    from .advection import advect
    from .io import read_radar, require_frames, write_nowcast
    from .motion.fourdvar import fourdvar

    _check_outputs([args.out, args.plot], args.overwrite, plot=args.plot, inputs=args.files)
    if args.frames < 2:
        raise InputError(f"--frames must be >= 2 (4D-Var fits a motion to two frames at least), got {args.frames}")
    prog = _Progress(3 + bool(args.plot), args.quiet)
    prog.step(f"reading {len(args.files)} input path(s)", bar=_many_files(args.files))
    da = read_radar(args.files, importer=args.importer, progress=not args.quiet, **_read_options(args))
    prog.done()
    if args.bbox is not None:
        from .io import crop_bbox

        da = crop_bbox(da, args.bbox)
        _say(f"    cropped to {da.sizes['y']} x {da.sizes['x']} pixels", args.quiet)
    require_frames(da, 2)
    da = _last_frames(da, args.frames, _one_file_per_frame(da))
    t = da.time.values.astype("datetime64[s]").astype(np.int64) / 60.0
    step_min = float((t[-1] - t[0]) / (len(t) - 1))
    prog.step(
        f"4D-Var ({args.constraint} constraint) on {da.sizes['time']} frames of {da.sizes['y']} x {da.sizes['x']}"
    )
    guess = None
    if da.sizes["time"] > 4:  # long windows: first guess from the last 4 frames (from zero, 4D-Var got trapped in a
        # slow local minimum: 7 KNMI frames gave 3.0 px/step at cost 10.7, started from this guess 4.3 at cost 6.1)
        tg = t[-4:] - t[-4]
        first = fourdvar(da.values[-4:], times=tg, constraint=args.constraint, max_iter=args.max_iter,
                         velocity_at="first")
        guess = first.velocity * (step_min / float((tg[-1] - tg[0]) / 3))  # per mean interval of the whole window
    res = fourdvar(da.values, times=t - t[0], constraint=args.constraint, max_iter=args.max_iter, init_velocity=guess)
    prog.done()
    # with finest_level > 0 the full-resolution cost of the upsampled solution is another cost function, said apart
    # (it was printed and drawn as if the iterations had ended there, so the cost seemed to rise)
    hist, full, opt = res.iteration_costs, res.full_resolution_cost, res.finest_optimised
    if opt is None:  # nothing optimised: frames without rain give zero motion at once
        _say(f"    no L-BFGS iterations: {res.status}", args.quiet)
    else:
        _say(
            f"    {res.n_iter} L-BFGS iterations over {len(res.levels)} levels, "
            f"{'converged' if res.converged else 'NOT converged'} ({res.status}), "
            f"cost {hist[0]:.4g} -> {hist[-1]:.4g} on the {opt.shape[0]} x {opt.shape[1]} level"
            + (f" (full resolution: {full:.4g})" if full is not None else "") + f", {res.time_s:.1f} s",
            args.quiet,
        )
    prog.step(f"forecasting {args.leadtimes} steps of {step_min:g} min and writing {args.out}")
    fc = advect(da.values[-1], res.velocity, args.leadtimes)
    write_nowcast(
        args.out,
        fc,
        reference_time=da.time.values[-1],
        timestep=step_min,
        like=da,
        velocity=res.velocity,
        model=f"extrapolation (motion: 4dvar, {args.constraint} constraint)",
        attrs={
            "fourdvar_iterations": int(res.n_iter),
            "fourdvar_converged": int(bool(res.converged)),
            "fourdvar_status": str(res.status),
            "fourdvar_final_cost": float(res.cost_history[-1]),
        },
        overwrite=args.overwrite,
    )
    if args.plot:
        from .plot import north_up, plot_assimilation

        prog.step(f"plotting {args.plot}")
        last, fc_last, vel = north_up(da, da.values[-1], fc[-1], velocity=res.velocity)  # north at the top
        plot_assimilation(
            last, vel, hist, fc_last, leadtime_min=step_min * args.leadtimes,
            full_resolution_cost=full, path=args.plot,
            title=(f"4D-Var motion ({args.constraint}), {str(da.time.values[0])[:16]} .. "
                   f"{str(da.time.values[-1])[11:16]} UTC"),
        )
    prog.done()
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


def _number(low: float, kind: type = int, above: bool = False) -> Any:
    """An argparse ``type``: a number of ``kind`` >= ``low`` (> ``low`` with ``above``), so that a bad value is
    refused while the command line is parsed, before any file is read."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {'an integer' if kind is int else 'a number'}: {text!r}") from None
        if not (value > low if above else value >= low) or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be {'>' if above else '>='} {low:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


# ----------------------------------------------------------------------------------------------------------------
# train


def cmd_train(args: argparse.Namespace) -> int:
    from .nowcast.training import sample_config, train

    config = args.config
    if config is None:
        name = f"lupin_{args.stage or 'motion'}" if args.model == "lupin" else args.model
        config = sample_config(name)
    overrides: dict[str, Any] = {}
    for key, val in (
        ("out", args.out),
        ("devices", int(args.devices) if args.devices and str(args.devices).isdigit() else args.devices),
        ("strategy", args.strategy),
        ("num_nodes", args.num_nodes),
        ("accelerator", args.accelerator),
        ("training.max_epochs", args.max_epochs),
        ("training.max_steps", args.max_steps),
        ("training.stage", args.stage),
    ):
        if val is not None:
            overrides[key] = val
    if args.config is not None:  # a .toml or .json file or a sample config's name (unreadable: train()'s error)
        from .nowcast.training import load_config

        try:
            named = load_config(args.config).get("model", {}).get("name")
        except (InputError, AttributeError):
            named = None
        if named is not None and str(named).lower() != str(args.model).lower():
            raise InputError(f"{args.config} trains [model] name = {named!r}, the command line {args.model!r}: "
                             "make them agree")
    overrides["model.name"] = args.model
    summary = train(config, overrides=overrides)
    if summary.get("weights"):
        print(f"weights: {summary['weights']}")
    print(
        f"{summary.get('model')} {summary.get('stage') or ''}: {summary.get('epochs')} epoch(s), "
        f"{summary.get('global_step')} steps, best val loss {summary.get('best_val_loss')}, "
        f"{summary.get('time_s', 0):.0f} s; outputs in {summary.get('out')}"
    )
    return 0


# ----------------------------------------------------------------------------------------------------------------
# data


def cmd_data_build_nl(args: argparse.Namespace) -> int:
    from .nowcast.data import build_nl_dataset

    _check_outputs([args.out], args.overwrite, inputs=args.files)
    _say(f"building an NL-50-style HDF5 file from {len(args.files)} input path(s) ...", args.quiet)
    summary = build_nl_dataset(
        args.files,
        args.out,
        n_in=args.n_in,
        n_out=args.n_out,
        rain_rule=args.rain_rule,
        wet_threshold=args.wet_threshold,
        split_time=args.split_time,
        test_fraction=args.test_fraction,
        rain_frame=args.rain_frame,
        overwrite=args.overwrite,
        importer=args.importer,
        timestep=args.timestep,
        **_read_options(args, reserved=_own_parameters(build_nl_dataset)),
        **({} if args.crop is None else {"crop": tuple(args.crop)}),
    )
    print(summary.get("rule", ""))
    for key in ("split_time", "regular_windows", "kept", "rejected_by_rule", "dropped_straddling_split"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    for part in ("train", "test"):
        info = summary.get(part)
        n = info.get("n", info.get("count")) if isinstance(info, dict) else info
        print(f"{part}: {n if n is not None else info}")
    print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------------------------------------------
# demo


def cmd_dycore_run(args: argparse.Namespace) -> int:
    from .dycore.interface import plot_w, run, write_dataset

    import torch

    _check_outputs([args.out, args.plot], args.overwrite, plot=args.plot)
    _check_threads(args.threads)
    torch.set_num_threads(args.threads)  # the dycore's small tensors run fastest on one thread
    options = {k: getattr(args, k) for k in ("dx", "nz", "h0", "a", "lam", "length", "top", "dtheta", "width")
               if getattr(args, k) is not None}
    ds = run(args.case, coordinate=args.coordinate, hours=args.hours, dt=args.dt, dtype=args.dtype,
             device=args.device, progress=not args.quiet, compile=args.compile, diffusion=args.diffusion, **options)
    msg = (f"{ds.attrs['case']} / {ds.attrs['coordinate']}: {ds.attrs['steps']} steps of {ds.attrs['dt_s']:g} s in "
           f"{ds.attrs['wall_time_s']:.1f} s; max |w| over the run {ds.attrs['max_abs_w_over_run']:.4g} m/s (sampled "
           f"every {ds.attrs['max_abs_w_sampled_every_steps']} steps)")
    if "w_error" in ds.attrs:
        msg += f"; w error vs linear solution {ds.attrs['w_error']:.4f}"
    elif "w_error_note" in ds.attrs:
        msg += f"; {ds.attrs['w_error_note']}"
    print(msg)
    if args.out:
        write_dataset(ds, args.out)
        _say(f"wrote {args.out}", args.quiet)
    if args.plot:
        plot_w(ds, args.plot)
        _say(f"wrote {args.plot}", args.quiet)
    return 0


def cmd_dycore_train(args: argparse.Namespace) -> int:
    from .dycore.training import train_neuve

    from .registry import weights_paths

    _check_outputs([str(p) for p in weights_paths(args.out)], args.overwrite)
    summary = train_neuve(out=args.out, iterations=args.iterations, seconds=args.seconds, seed=args.seed,
                          progress=not args.quiet, init=args.init, compile=args.compile, lr=args.lr,
                          terrains=args.terrain or None, objective=args.objective,
                          schaer_seconds=args.schaer_seconds, resume=not args.restart,
                          eval_seconds=args.eval_seconds, overwrite=args.overwrite, slope_max=args.slope_max)
    resumed = f" (continued after iteration {summary['resumed_from']})" if summary.get("resumed_from") else ""
    print(f"neuve: {summary['iterations']} iterations in {summary['time_s']:.0f} s{resumed}; weights "
          f"{summary['weights']}")
    for k, v in summary.get("evaluation", {}).items():
        print(f"  {k}: {v}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out=args.out, data=args.data, quiet=args.quiet, size=args.size)
    return 0


# ----------------------------------------------------------------------------------------------------------------
# downscale


def _score_against_original(ens: Any, original: Any, lo: Any, args: argparse.Namespace) -> None:
    """With --coarsen equal to --factor: the ensemble against the field before coarsening, beside bicubic
    interpolation (skydiff.verify, NaN pixels left out): CRPS (fair estimator; one member: its MAE), the MAE of
    bicubic interpolation and their ratio, and the worst RAPSD ratio in dB over wavelengths >= 2 px."""
    from .downscale.baselines import bicubic
    from .verify import crps_ensemble, rapsd_ratio_db

    truth = np.asarray(original.values, np.float32)
    e = np.asarray(ens.values, np.float32)
    bic = np.asarray(bicubic(np.asarray(lo.values, np.float32), args.factor, clamp=True))
    mae_bic = float(np.nanmean(np.abs(bic - truth)))
    crps = float(crps_ensemble(e, truth)) if e.shape[0] > 1 else float(np.nanmean(np.abs(e[0] - truth)))
    parts = [f"CRPS {crps:.4f} mm/h ({'fair' if e.shape[0] > 1 else 'one member: MAE'})",
             f"bicubic MAE {mae_bic:.4f} mm/h" + (f" (ratio {crps / mae_bic:.3f})" if mae_bic > 0 else "")]
    if not np.isnan(truth).any() and min(truth.shape[-2:]) >= 8 and float(truth.max()) > float(truth.min()):
        _, db = rapsd_ratio_db(e, truth)  # (a constant, e.g. dry, truth has no spectrum to compare with)
        parts.append(f"spectrum max |dB| {float(np.max(np.abs(np.asarray(db)))):.2f}")
    _say("    against the field before --coarsen: " + "; ".join(parts), args.quiet)


def _resolution_note(args: argparse.Namespace, model: str, attrs: Any) -> None:
    """Say so when the input's pixels differ by more than 25 % from those the shipped model learned from."""
    km = _pixel_km(attrs)
    trained = {"edm-radar": (4.0, "4-km", "1 km"), "edm-radar-tp": (4.0, "4-km", "1 km"),
               "edm-era5": (111.2, "1° (~111-km)", "0.25°")}.get(model)
    if km is None or trained is None or 0.75 <= km / trained[0] <= 1.25:
        return
    _say(f"    note: the {args.model} model was trained to downscale {trained[1]} fields to {trained[2]}; this "
         f"input has {km:.3g}-km pixels, so the {km / args.factor:.3g}-km output is beyond what it learned"
         + ("" if args.coarsen else f" (--coarsen {args.factor} first to check it on your own field)"), args.quiet)


def _pixel_km(attrs: Any) -> float | None:
    """The pixel size in km from read_radar's attributes (``xpixelsize`` in m, km or degrees), or None."""
    try:
        size = float(attrs["xpixelsize"])
    except (KeyError, TypeError, ValueError):
        return None
    unit = str(attrs.get("cartesian_unit", "m")).lower()
    km = {"m": size / 1000.0, "km": size, "degrees": size * 111.2}.get(unit)
    return km if km is not None and np.isfinite(km) and km > 0 else None


def _downscale_label(args: argparse.Namespace, attrs: Any, labels: tuple[str, ...]) -> str | None:
    """The product label --label asks for (skydiff.downscale.interface.resolve_label), said when 'auto' chose."""
    from .downscale.interface import resolve_label

    label = resolve_label(args.label, attrs, labels)
    if args.label == "auto" and labels:
        if label is not None:
            _say(f"    label {label} (the input's radar product; --label unknown for the training mixture)", args.quiet)
        else:
            _say("    label unknown (the input is none of the products " + ", ".join(labels) + "): the training "
                 "mixture's texture", args.quiet)
    return label


def cmd_downscale(args: argparse.Namespace) -> int:
    from .downscale.interface import (
        CONSERVE_DEFAULT,
        MODELS,
        coarsen_lowres,
        downscale,
        get_downscaler,
        plot_downscaled,
        read_era5_lowres,
        read_lowres,
        write_downscaled,
    )

    name = MODELS.get(str(args.model).lower(), str(args.model).lower())
    era5 = name == "edm-era5"
    if os.path.isdir(args.input) and not era5:
        raise InputError(f"{args.input} is a folder; give a netCDF file of low-resolution rain (a folder of ERA5 "
                         "files only with --model era5)")
    _check_outputs([args.out, args.plot], args.overwrite, plot=args.plot, inputs=[args.input])
    if not args.out and not args.plot:
        raise InputError("nothing to write: give --out FILE.nc and/or --plot FILE.png")
    for flag, value in (("--members", args.members), ("--steps", args.steps), ("--factor", args.factor)):
        if value < 1:  # before reading the input and loading the model
            raise InputError(f"{flag} must be >= 1, got {value}")
    check_device(args.device, "downscaling")
    prog = _Progress(2 + bool(args.out) + bool(args.plot), args.quiet)
    prog.step(f"reading {args.input}" + (" (ERA5 TP, and VIMD from the variables present)" if era5 else ""))
    if era5:
        if args.variable is not None:  # (ignored without a word)
            raise InputError("--variable is for a netCDF of rain; --model era5 reads TP and the VIMD variables itself")
        lo, vimd = read_era5_lowres(args.input)
    else:
        lo, vimd = read_lowres(args.input, variable=args.variable), None
        if lo.name is not None:
            prog.done()
            _say(f"    variable {lo.name!r}, " + " x ".join(f"{n} {d}" for d, n in lo.sizes.items()), args.quiet)
    if args.bbox is not None:
        from .io import crop_bbox

        lo = crop_bbox(lo, args.bbox)
        vimd = None if vimd is None else crop_bbox(vimd, args.bbox)
    original = None
    if args.coarsen is not None:
        n = args.coarsen
        original = lo
        lo = coarsen_lowres(lo, n)
        ydim, xdim = lo.dims[-2:]  # the blocks' pixels
        original = original.isel({ydim: slice(0, lo.sizes[ydim] * n), xdim: slice(0, lo.sizes[xdim] * n)})
        vimd = None if vimd is None else coarsen_lowres(vimd, n)
    if lo.size == 0:
        raise InputError(f"{args.input}: variable {lo.name!r} is empty (shape {tuple(lo.shape)})")
    nan = np.isnan(lo.values)
    if nan.all():
        raise InputError(f"{args.input}: every value of {lo.name!r} is NaN (no data); nothing to downscale")
    if nan.any():
        if not args.fill_nan:
            raise InputError(f"{args.input} has {int(nan.sum())} no-data (NaN) pixel(s) of {nan.size}; pass "
                             "--fill-nan to downscale them as 0 mm/h and mark them NaN in the output")
        lo = lo.fillna(0.0)
        vimd = None if vimd is None else vimd.fillna(0.0)
    conserve = (CONSERVE_DEFAULT if args.conserve is None
                else {"all": True, "none": False}.get(args.conserve, args.conserve))
    prog.done()  # the notes below on their own lines
    _resolution_note(args, name, lo.attrs)
    label = _downscale_label(args, lo.attrs, get_downscaler(args.model).labels)
    prog.step(f"downscaling {tuple(lo.shape)} by {args.factor} with {args.model!r}, {args.members} members, "
              f"{args.steps} steps", bar=True)
    ens = downscale(lo, factor=args.factor, model=args.model, members=args.members, steps=args.steps,
                    seed=args.seed, progress=not args.quiet, label=label, conserve=conserve, vimd=vimd,
                    precision=args.precision, decoder=args.decoder, device=args.device)
    if nan.any():
        f = args.factor
        mask = np.repeat(np.repeat(nan, f, axis=-2), f, axis=-1)
        ens = ens.where(~mask[None])
    if original is not None and args.coarsen == args.factor:
        prog.done()
        _score_against_original(ens, original, lo, args)
    if args.out:
        prog.step(f"writing {args.out}")
        if era5:  # back to ERA5's names (CF)
            ens = ens.rename(y="latitude", x="longitude")
            ens["latitude"].attrs.update(units="degrees_north", standard_name="latitude")
            ens["longitude"].attrs.update(units="degrees_east", standard_name="longitude")
        write_downscaled(args.out, ens, model=args.model, factor=args.factor, steps=args.steps, source=args.input,
                         overwrite=args.overwrite, conserve=conserve, label=label, precision=args.precision,
                         decoder=args.decoder)
    if args.plot:
        prog.step(f"plotting {args.plot}")
        plot_downscaled(args.plot, lo.where(~nan) if nan.any() else lo, ens,
                        original=original if original is not None and args.coarsen == args.factor else None)
    prog.done()
    return 0


# ----------------------------------------------------------------------------------------------------------------
# entry point


def _add_reading(parser: argparse.ArgumentParser) -> None:
    """--importer and --importer-option (skydiff.io.read_radar's importer and options) of the commands that read radar
    files."""
    parser.add_argument("--importer", default=None, help="pysteps importer name when it cannot be detected")
    parser.add_argument(
        "--importer-option", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
        help="an option for the reader, repeatable: e.g. variable=rr (the rain variable of a netCDF file), accutime=5 "
        "(minutes of an accumulation in mm that does not say), qty=DBZH, window_size=4; VALUE is read as JSON "
        "(a number, true/false) or else as text",
    )


def _key_value(text: str) -> tuple[str, Any, str]:
    """(key, value read as JSON or else text, value as text) of KEY=VALUE."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip().isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value
    return key.strip(), parsed if isinstance(parsed, (int, float, bool, str)) else value, value


# importer options whose values are names, kept as text (variable=123 is the variable named "123")
_TEXT_OPTIONS = ("variable", "unit", "qty", "product", "product_name")


def _read_options(args: argparse.Namespace, reserved: Any = ()) -> dict[str, Any]:
    """The --importer-option pairs as read_radar's keyword arguments; a key given twice, or one of read_radar's own
    settings or the command's (``reserved``), is an InputError."""
    out: dict[str, Any] = {}
    for key, value, text in args.importer_option:
        if key in out:
            raise InputError(f"--importer-option {key}= is given twice")
        if key in ("importer", "timestep", "progress", "workers", "paths", *reserved):
            raise InputError(f"--importer-option {key}= is not an importer option"
                             f"{' (use --importer)' if key == 'importer' else ''}")
        out[key] = text if key in _TEXT_OPTIONS else value
    return out


def _own_parameters(fn: Any) -> tuple[str, ...]:
    """The named parameters of ``fn`` (those --importer-option must not set: they are the command's own settings)."""
    import inspect

    return tuple(n for n, p in inspect.signature(fn).parameters.items() if p.kind is not p.VAR_KEYWORD)


def _add_device(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--device", default=None, help=f"torch device for {what}, e.g. cuda or cuda:1 (default cpu); "
                        "files are read and written on the CPU")


def _add_bbox(parser: argparse.ArgumentParser, verb: str, example: str = "") -> None:
    """The --bbox option (skydiff.io.crop_bbox) of the commands that read radar grids."""
    parser.add_argument(
        "--bbox", type=float, nargs=4, default=None, metavar=("XMIN", "XMAX", "YMIN", "YMAX"),
        help=f"{verb} only the pixels inside this box, in the x/y units of the input (projection metres; degrees "
        f"of longitude/latitude for MRMS){example}",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skydiff",
        description="Differentiable precipitation nowcasting: read radar, estimate motion, extrapolate, verify.",
    )
    p.add_argument("--version", action="version", version=f"skydiff {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    n = sub.add_parser(
        "nowcast",
        help="nowcast from radar files",
        description="Read radar files (any pysteps importer, detected from the files), estimate motion from the "
        "last frames, extrapolate them with skydiff.advect and write a CF netCDF file (and a figure).",
    )
    n.add_argument("files", nargs="+", help="radar files, directories or glob patterns (5-min series)")
    n.add_argument("--leadtimes", type=_number(1), default=12,
                   help="number of lead times (steps of the input, default 12)")
    n.add_argument("--motion", default=None,
                   help="motion method: lk, vet, darts, proesmans, 4dvar, ... (default: lk for extrapolation; the "
                        "network's own for lupin (4dvar) and lcnn (lk); given, it replaces theirs)")
    n.add_argument(
        "--motion-frames", type=int, default=None,
        help="most recent frames used for motion (>= 2; default 3, 4 for 4dvar, 6 for darts, 2 for proesmans)"
    )
    n.add_argument(
        "--model", default="extrapolation",
        help="nowcasting model: extrapolation, persistence, lupin, rainnet, smaat, lcnn, spatspark "
             "(default extrapolation)",
    )
    n.add_argument("--weights", default=None, help="a .safetensors file for a neural model (default: shipped)")
    n.add_argument(
        "--precision", default="full", choices=["full", *PRECISIONS],
        help="neural models: run the convolutions in bfloat16/float16 (mixed precision; ~2x faster on a CPU with "
        "AVX512-BF16, outputs differ by ~1e-2 relative; not for smaat; default full)",
    )
    n.add_argument(
        "--whole-grid", action="store_true",
        help="neural models: run the networks on the whole grid (default: only on the box around the pixels with "
        "data plus 64 px, faster when much of the grid has no data; RainNet's nowcast is the same, LUPIN's and "
        "SmaAt's differ at single pixels by up to ~3.3 and ~1.1 mm/h (mean ~0.01 mm/h): LUPIN's 4D-Var motion "
        "and SmaAt's upsampling depend on the grid they see)",
    )
    n.add_argument(
        "--min-rain", type=_number(0, float), default=None, metavar="MM_PER_H",
        help="neural models: output rain rates below this are set to 0 (after the network; default: the model's "
        "own, 0 unless its card sets one)",
    )
    n.add_argument(
        "--prob-match", default=None, choices=["none", "cdf"],
        help="neural models: cdf gives every lead time the rain-rate distribution of the last observed frame "
        "(pysteps-style CDF matching, after the network; sharper, but lowered CSI on the validation part, see "
        "benchmarks/RESULTS.md section 5; default: the model's own, none)",
    )
    _add_reading(n)
    _add_device(n, "the nowcast (the motion of Lucas-Kanade and the other pysteps methods on the CPU either way)")
    n.add_argument("--out", default="nowcast.nc", help="output netCDF (default nowcast.nc)")
    n.add_argument("--plot", default=None, help="also write a figure (PNG)")
    n.add_argument("--allow-gaps", action="store_true", help="do not stop on gaps in the time series")
    _add_bbox(n, "nowcast", ", e.g. --bbox -100 -90 35 45 for a part of CONUS")
    n.add_argument(
        "--resample", type=_number(0, float, above=True), default=None, metavar="MINUTES",
        help="resample the frames to this time step first, linearly in time (e.g. 5 for MRMS's 2-min frames and "
        "the neural models, which were trained on 5-min steps); lead times are then in steps of MINUTES",
    )
    n.add_argument("--overwrite", action="store_true", help="replace existing output files")
    n.add_argument("-q", "--quiet", action="store_true")
    n.set_defaults(func=cmd_nowcast)

    v = sub.add_parser(
        "verify",
        help="score a nowcast against observations",
        description="Score a skydiff nowcast netCDF file against radar observations at its valid times: a table "
        "of continuous and categorical scores per lead time and threshold (and a CSV / figure).",
    )
    v.add_argument("nowcast", help="netCDF written by `skydiff nowcast`")
    v.add_argument("files", nargs="+", help="observation files, directories or glob patterns")
    v.add_argument("--thresholds", type=_number(0, float, above=True), nargs="+", default=list(DEFAULT_THRESHOLDS),
                   help="mm/h")
    _add_reading(v)
    v.add_argument("--csv", default=None, help="write the table as CSV")
    v.add_argument("--plot", default=None, help="write score curves (PNG)")
    v.add_argument("--overwrite", action="store_true", help="replace existing output files")
    v.add_argument("-q", "--quiet", action="store_true")
    v.set_defaults(func=cmd_verify)

    ev = sub.add_parser(
        "evaluate",
        help="score nowcast models side by side on radar sequences",
        description="Run several nowcast models on every regular window of radar sequences and score them on the "
        "same pixels (LUPIN's protocol: lead times 5-30 min; CSI, POD, FAR, ETS, precision, accuracy at 1, 5 and "
        "10 mm/h; MSE, MAE, ME): tables, a CSV and a figure of each score against lead time.",
    )
    ev.add_argument("files", nargs="*", help="radar files (together one sequence) or folders (each one sequence)")
    ev.add_argument("--models", nargs="+", default=["extrapolation", "persistence"],
                    help="models to compare (e.g. lupin rainnet lcnn extrapolation persistence)")
    ev.add_argument("--shared", choices=["test", "validation", "train"], default=None,
                    help="use this part of the shared data split (skydiff.nowcast.data.shared_split)")
    ev.add_argument("--data", default=None, help="shared data folder (default $SKYDIFF_DATA)")
    _add_reading(ev)
    _add_device(ev, "the models (the scores on the CPU)")
    ev.add_argument("--weights", nargs="+", default=None, metavar="MODEL=PATH", help="weights files to use")
    ev.add_argument("--leadtimes", type=_number(1), default=6, help="lead times in steps of --timestep (default 6)")
    ev.add_argument("--timestep", type=_number(0, float, above=True), default=5.0, metavar="MIN",
                    help="the sources' time step in minutes (default 5; the networks need 5, extrapolation and "
                         "persistence take any)")
    ev.add_argument("--resample", action="store_true",
                    help="resample every source to --timestep first (linear in time, skydiff.io.resample_time; e.g. "
                         "MRMS' 2-min frames to 5 min); sources at another step are refused without it")
    ev.add_argument("--thresholds", type=_number(0, float, above=True), nargs="+", default=list(DEFAULT_THRESHOLDS),
                    help="mm/h")
    ev.add_argument("--stride", type=_number(1), default=1, help="steps between case start times (default 1)")
    ev.add_argument("--crop", type=_number(1), default=None, help="score a centred square crop of this size")
    ev.add_argument("--max-cases", type=_number(1), default=None)
    ev.add_argument("--n-in", type=_number(1), default=None, metavar="N",
                    help="input frames per case window (default: the most any model takes, so the cases depend on "
                         "--models; e.g. 12 keeps the windows of a run with SmaAt-UNet)")
    ev.add_argument("--motion", default="lk", help="motion method of the extrapolation models (default lk)")
    ev.add_argument("--precision", default="full", choices=["full", *PRECISIONS],
                    help="neural models except SmaAt: mixed-precision convolutions (default full)")
    ev.add_argument("--min-rain", type=_number(0, float), default=None, metavar="MM_PER_H",
                    help="neural models: output below this set to 0 (default: each model's own; 0: no cut)")
    ev.add_argument("--protocols", nargs="+", default=None, choices=["smaat", "spatspark"],
                    help="also score with the published NL-50 protocols (smaat: +30 min, needs --leadtimes >= 6; "
                    "spatspark: all leads, e.g. --leadtimes 12)")
    ev.add_argument("--csv", default=None, help="write the scores as CSV")
    ev.add_argument("--plot", default=None, help="write score curves (PNG)")
    ev.add_argument("--overwrite", action="store_true", help="replace existing output files")
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=cmd_evaluate)

    a = sub.add_parser(
        "assimilate",
        help="estimate motion by 4D-Var and forecast from it",
        description="Estimate the motion of the last radar frames by 4D-Var (variational assimilation of an "
        "advection model, differentiated with skydiff.advect), write it with an extrapolation forecast to netCDF "
        "and plot arrows, a colour wheel, the cost curve and the forecast. Irregular times are allowed.",
    )
    a.add_argument("files", nargs="+", help="radar files, directories or glob patterns")
    a.add_argument("--frames", type=int, default=4,
                   help="most recent frames assimilated (default 4); more than 4: the motion of the last 4 is the "
                        "first guess. One steady motion is fitted to the whole window: on a KNMI case 7 frames "
                        "(30 min) forecast better than 4 (RMSE +15 min 0.35 vs 0.40 mm/h; RESULTS section 4)")
    a.add_argument("--constraint", choices=("strong", "weak"), default="strong")
    a.add_argument("--max-iter", type=_number(1), default=300, help="L-BFGS iterations per level (default 300)")
    a.add_argument("--leadtimes", type=_number(1), default=3, help="forecast steps (default 3)")
    _add_reading(a)
    _add_bbox(a, "assimilate", ", e.g. --bbox -100 -90 35 45 for a part of CONUS (a whole MRMS grid is 24.5 M pixels)")
    a.add_argument("--out", default="motion.nc")
    a.add_argument("--plot", default=None, help="also write a figure (PNG)")
    a.add_argument("--overwrite", action="store_true")
    a.add_argument("-q", "--quiet", action="store_true")
    a.set_defaults(func=cmd_assimilate)

    tr = sub.add_parser(
        "train",
        help="train a nowcasting model (Lightning)",
        description="Train lupin, rainnet, smaat, lcnn, spatspark-pretrain or spatspark from a TOML/JSON config "
        "(default: the packaged sample config of the model; LUPIN's stages are lupin_motion, lupin_tendency, "
        "lupin_joint; SpaT-SparK is pretrained with spatspark-pretrain (self-supervised, input frames only), then "
        "fine-tuned with spatspark and training.init_from = the pretraining output). Checkpoints go to "
        "OUT/checkpoints and an interrupted run resumes from OUT/checkpoints/last.ckpt. Multi-GPU / multi-node: "
        "--devices 4 --strategy ddp --num-nodes 2 (launch with torchrun or srun; see skydiff.nowcast.training).",
    )
    tr.add_argument("model", help="lupin, rainnet, smaat, lcnn, spatspark-pretrain or spatspark")
    tr.add_argument("--config", default=None, help="TOML or JSON config, or a sample config name")
    tr.add_argument("--stage", default=None, help="LUPIN stage: motion, tendency or joint")
    tr.add_argument("--out", default=None, help="output folder (default runs/<model>[_<stage>])")
    tr.add_argument("--max-epochs", type=int, default=None)
    tr.add_argument("--max-steps", type=int, default=None)
    tr.add_argument("--devices", default=None, help="Lightning devices (e.g. 1, 4, auto)")
    tr.add_argument("--accelerator", default=None, help="cpu, gpu, auto")
    tr.add_argument("--strategy", default=None, help="e.g. ddp, ddp_spawn")
    tr.add_argument("--num-nodes", type=int, default=None)
    tr.set_defaults(func=cmd_train)

    dt = sub.add_parser("data", help="build training data sets", description="Build training data sets.")
    dsub = dt.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    nl = dsub.add_parser(
        "build-nl",
        help="write KNMI radar files in the SmaAt-UNet / NL-50 HDF5 layout",
        description="Cut the 288 x 288 NL-50 window out of KNMI composites, keep sequences whose target frame is "
        "at least --rain-rule rainy, split train/test by time and write the SmaAt-UNet HDF5 layout atomically.",
    )
    nl.add_argument("files", nargs="+", help="KNMI files, directories or glob patterns")
    nl.add_argument("--out", required=True, help="output HDF5 file")
    nl.add_argument("--n-in", type=int, default=12)
    nl.add_argument("--n-out", type=int, default=6)
    nl.add_argument("--rain-rule", type=float, default=0.5, help="minimum rainy fraction of the target frame")
    nl.add_argument("--wet-threshold", type=float, default=0.1,
                    help="a pixel is rainy above this rate in mm/h (default 0.1: NL-50's '> 0' on KNMI's accumulation "
                         "product, whose smallest value is 0.12 mm/h)")
    nl.add_argument("--split-time", default=None, help="ISO time: windows ending before it are train, after it test "
                    "(default: the time of the first frame of the last --test-fraction of the frames)")
    nl.add_argument("--test-fraction", type=_number(0, float, above=True), default=0.25,
                    help="without --split-time: the fraction of the frames, at the end, that is test (default 0.25)")
    nl.add_argument("--rain-frame", choices=["target", "smaat"], default="target",
                    help="which frame the rain rule tests: the target frame (default) or the frame after it, as "
                         "SmaAt-UNet's code does (off by one)")
    _add_reading(nl)
    nl.add_argument("--timestep", type=_number(0, float, above=True), default=5.0,
                    help="minutes between the frames of a window (default 5)")
    nl.add_argument("--crop", type=_number(0), nargs=4, metavar=("ROW0", "ROW1", "COL0", "COL1"), default=None,
                    help="the pixel block kept (default the NL-50 crop of the KNMI grid: 284 572 225 513)")
    nl.add_argument("--overwrite", action="store_true")
    nl.add_argument("-q", "--quiet", action="store_true")
    nl.set_defaults(func=cmd_data_build_nl)

    ds = sub.add_parser(
        "downscale",
        help="stochastic diffusion downscaling of low-resolution rain",
        description="Downscale low-resolution rain (mm/h; a radar file readable by skydiff or a netCDF file) to a "
        "FACTOR-times finer grid with an EDM diffusion model: an ensemble written as CF netCDF.",
    )
    ds.add_argument("input", metavar="IN", help="low-resolution rain: radar file or netCDF (mm/h); with --model "
                    "era5 an ERA5 file or folder with tp and what VIMD needs (q, u, v on levels + sp, or fluxes)")
    ds.add_argument("--factor", type=int, default=4, help="refinement factor (default 4, the shipped models')")
    ds.add_argument("--members", type=int, default=8, help="ensemble members (default 8)")
    ds.add_argument("--model", default="radar", help="radar (default), radar-tp, era5 or a weights path")
    ds.add_argument("--coarsen", type=int, default=None, metavar="N",
                    help="first take N x N block means of the input (e.g. 4: check the model on your own field "
                         "against the original)")
    ds.add_argument("--steps", type=int, default=18, help="Heun sampling steps (default 18)")
    ds.add_argument("--seed", type=int, default=None, help="random seed for a reproducible ensemble")
    _add_device(ds, "the sampling")
    ds.add_argument("--label", default="auto",
                    help="for a model conditioned on the radar product (the default radar model): the product to "
                         "imitate (knmi-rap, knmi-dbz, fmi, mrms), 'unknown' for the training mixture, or 'auto' "
                         "(default): the input file's product when it is one of them (KNMI, FMI and MRMS files), "
                         "else unknown")
    ds.add_argument("--variable", default=None, help="netCDF variable (default: the first rain-like one)")
    ds.add_argument("--conserve", nargs="?", const="all", default=None, choices=["all", "heavy", "smooth", "none"],
                    help="make every member's FACTOR x FACTOR block means equal the input: all blocks by rescaling "
                         "(--conserve or --conserve all) or by a smooth additive correction (smooth), only those at "
                         "or above the rate where the model's learned PP decoder saturates (heavy), or none "
                         "(default: the library's, skydiff.downscale.interface.CONSERVE_DEFAULT)")
    ds.add_argument("--no-conserve", dest="conserve", action="store_const", const="none",
                    help="the same as --conserve none")
    ds.add_argument("--precision", default="full", choices=["full", *PRECISIONS],
                    help="the U-Net's layers in this type (torch.autocast; the sampler stays in full precision): "
                         "bfloat16 samples ~2x faster on a CPU with AVX512-BF16, scores unchanged within 0.02 dB "
                         "and 1e-5 mm/h of CRPS on 200 validation tiles (default full)")
    ds.add_argument("--decoder", default=None, choices=["learned", "inverse"],
                    help="pseudo-precipitation decoder (PP models): the model's own (default; the shipped radar "
                         "model's learned one saturates above ~48 mm/h, where --conserve heavy, the default, restores "
                         "the block means) or inverse (the exact inverse of a TP-only encoder; see "
                         "skydiff.downscale.downscale)")
    ds.add_argument("--fill-nan", action="store_true", help="downscale no-data pixels as 0, NaN in the output")
    _add_bbox(ds, "downscale")
    ds.add_argument("--out", default=None, help="output netCDF (ensemble, member × [time ×] y × x)")
    ds.add_argument("--plot", default=None, help="quick-look PNG")
    ds.add_argument("--overwrite", action="store_true")
    ds.add_argument("-q", "--quiet", action="store_true")
    ds.set_defaults(func=cmd_downscale)

    dy = sub.add_parser("dycore", help="2-D non-hydrostatic dynamical core test cases",
                        description="Run the differentiable 2-D dynamical core, or train the NEUVE coordinate.")
    dysub = dy.add_subparsers(dest="dycore_command", metavar="SUBCOMMAND")
    dr = dysub.add_parser("run", help="run a test case", description="Run a dycore test case and save w (netCDF/PNG).")
    dr.add_argument("case", help="schaer, klemp2011, skamarock-klemp or bubble")
    dr.add_argument("--coordinate", default="sleve",
                    help="btf, hybrid, sleve, sleve2, neuve (the shipped one; default sleve) or the path of NEUVE "
                         "weights from skydiff dycore train")
    dr.add_argument("--hours", type=float, default=None, help="simulated hours (default: the case's)")
    dr.add_argument("--dt", type=float, default=None,
                    help="time step in s (default: the case's, or 95%% of the stability limit where the coordinate "
                         "needs less; compare coordinates at one given --dt)")
    dr.add_argument("--dx", type=float, default=None, help="column spacing in m")
    dr.add_argument("--nz", type=int, default=None, help="number of layers")
    dr.add_argument("--length", type=float, default=None, help="domain length in m")
    dr.add_argument("--top", type=float, default=None, help="model top in m")
    dr.add_argument("--h0", type=float, default=None, help="mountain height in m")
    dr.add_argument("--a", type=float, default=None, help="mountain half-width in m")
    dr.add_argument("--lam", type=float, default=None, help="terrain corrugation wavelength in m (0: none)")
    dr.add_argument("--dtheta", type=float, default=None,
                    help="amplitude of the initial theta perturbation in K (skamarock-klemp: 0.01, bubble: 2)")
    dr.add_argument("--width", type=float, default=None,
                    help="half-width of the skamarock-klemp perturbation in m (default 5000)")
    dr.add_argument("--diffusion", type=_number(0, float), default=0.0,
                    help="explicit diffusion of u, w and theta' in m^2/s (default 0: none; Klemp 2011 ran with "
                         "some, e.g. 10)")
    dr.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default cpu)")
    dr.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    dr.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    dr.add_argument("--compile", action="store_true",
                    help="compile the time step with torch.compile (~3.5x faster after ~10 s; needs a C++ compiler)")
    dr.add_argument("--out", default=None, help="netCDF output file")
    dr.add_argument("--plot", default=None, help="PNG of w")
    dr.add_argument("--overwrite", action="store_true")
    dr.add_argument("-q", "--quiet", action="store_true")
    dr.set_defaults(func=cmd_dycore_run)
    dtr = dysub.add_parser("train", help="train the NEUVE coordinate by backpropagation through the solver",
                           description="Train NEUVE (Klemp-2011 loss on training terrains; held-out terrains "
                                       "evaluated). The state after every iteration is kept in OUT.ckpt: a run that "
                                       "stops is continued by the same command (--restart starts again).")
    dtr.add_argument("--out", default="runs/dycore/neuve",
                     help="output stem of the weights (default runs/dycore/neuve)")
    dtr.add_argument("--iterations", type=int, default=15)
    dtr.add_argument("--seconds", type=float, default=300.0, help="simulated window per iteration (s)")
    dtr.add_argument("--seed", type=int, default=0)
    dtr.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    dtr.add_argument("--slope-max", type=_number(0, float, above=True), default=None, metavar="DZ_DX",
                     help="also penalise coordinate surfaces above the crest steeper than this in the Klemp loss "
                     "(steeper ones grew a spurious flow over hours with weak diffusion, RESULTS §7j; default none)")
    dtr.add_argument("--terrain", type=float, nargs=3, action="append", default=[], metavar=("H0", "A", "LAM"),
                     help="a training terrain in m (repeatable; default the three of skydiff.dycore.training)")
    dtr.add_argument("--init", default=None, help="continue from these NEUVE weights (stem or .safetensors)")
    dtr.add_argument("--objective", choices=["klemp", "schaer", "both"], default="klemp",
                     help="loss: Klemp spurious w (default), the Schär w error against the linear solution "
                          "(h0 25 m, error after --seconds over 1-5 km; skydiff.dycore.training.schaer_loss), or both "
                          "in turn (Schär window --schaer-seconds)")
    dtr.add_argument("--schaer-seconds", type=float, default=3600.0,
                     help="with --objective both: the Schär window (s, default 3600)")
    dtr.add_argument("--eval-seconds", type=float, default=900.0,
                     help="Klemp runs of this many s give the max |w| on the held-out terrains (default 900)")
    dtr.add_argument("--compile", action="store_true",
                     help="compile the solver's time step (torch.compile; ~5x faster gradients on one CPU thread)")
    dtr.add_argument("--overwrite", action="store_true", help="replace existing weights at --out")
    dtr.add_argument("--restart", action="store_true",
                     help="ignore an unfinished run's OUT.ckpt and start again (default: continue it)")
    dtr.add_argument("-q", "--quiet", action="store_true")
    dtr.set_defaults(func=cmd_dycore_train)

    d = sub.add_parser(
        "demo",
        help="the whole chain on an embedded synthetic case (and real data if SKYDIFF_DATA is set)",
        description="Generate a realistic synthetic rain sequence, nowcast it by Lucas-Kanade motion + "
        "semi-Lagrangian extrapolation, score it against its own future beside persistence, and save figures. "
        "With SKYDIFF_DATA (or --data) pointing at the shared data, also run on real KNMI radar files.",
    )
    d.add_argument("--out", default="skydiff-demo", help="output folder (default ./skydiff-demo)")
    d.add_argument("--data", default=None, help="shared data folder (default: $SKYDIFF_DATA if set)")
    d.add_argument("--size", type=int, default=256, help="synthetic grid size in pixels (default 256)")
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def _show_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"skydiff: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    from .errors import SkydiffWarning

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    if not hasattr(args, "func"):  # a command group without its sub-command, e.g. `skydiff data`
        parser.parse_args([args.command, "--help"])
        return 0
    old_show = warnings.showwarning
    warnings.showwarning = _show_warning  # one-line warnings on the command line
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", SkydiffWarning)
            return int(args.func(args) or 0)
    except SkydiffError as exc:
        if args.debug:
            raise
        print(f"\nskydiff: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, MemoryError, OverflowError) as exc:  # a full disk, a folder that cannot be made, a size too
        if args.debug:  # large to allocate: the system's reason, without a traceback (nothing was replaced: writes
            raise  # are atomic)
        what = {MemoryError: "not enough memory", OverflowError: "a number too large"}.get(type(exc), "system error")
        print(f"\nskydiff: error: {what}: {exc or type(exc).__name__} (check the output folder, free space and the "
              "sizes asked for)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nskydiff: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        if type(exc).__name__ != "SIGTERMException":  # Lightning's, raised on SIGTERM with no exit code (0)
            raise
        print("\nskydiff: terminated (SIGTERM)", file=sys.stderr)
        return 143
    finally:
        warnings.showwarning = old_show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
