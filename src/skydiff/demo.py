"""``skydiff demo``: the whole nowcasting chain on an embedded synthetic case (and on real KNMI data if present).

Steps: generate a synthetic radar sequence (:func:`skydiff.synthetic.rain_sequence`), estimate motion with
Lucas-Kanade from the last three frames, extrapolate 12 steps with :func:`skydiff.advect`, score against the
sequence's own future beside persistence and an oracle that knows the true motion, and save the nowcast
(netCDF), a score table (CSV) and figures. With a data folder (``--data`` or ``SKYDIFF_DATA``) holding the shared
KNMI 2010 files, the same is done on real radar frames.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

N_PAST = 6
N_LEAD = 12
THRESHOLDS = (1.0, 5.0, 10.0)
KNMI_REFERENCE = "201008260530"  # last observation of the real-data demo case (KNMI, 2010-08-26 05:30 UTC)


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _score_models(runs: dict[str, np.ndarray], truth: np.ndarray, timestep: float) -> Any:
    import pandas as pd

    from .verify import score_table

    # every model on the same pixels (as skydiff evaluate): extrapolation leaves NaN where rain would flow in from
    # outside the grid, persistence never does, so each scored on its own valid pixels compared different pixels
    common = np.isfinite(truth) & np.logical_and.reduce([np.isfinite(fc) for fc in runs.values()])
    truth = np.where(common, truth, np.nan)
    tables = []
    for name, fc in runs.items():
        fc = np.where(common, fc, np.nan)
        t = score_table(fc, truth, thresholds=THRESHOLDS, leadtimes_min=timestep * np.arange(1, len(fc) + 1))
        t.insert(0, "model", name)
        tables.append(t)
    return pd.concat(tables, ignore_index=True)


def _summary(table: Any, leads: tuple[float, ...] = (15.0, 30.0, 60.0)) -> str:
    rows = table[(table["threshold"] == 1.0) & (table["leadtime_min"].isin(leads))]
    piv = rows.pivot_table(index="model", columns="leadtime_min", values=["csi", "mae"], sort=False)
    piv.columns = [f"{s.upper()} +{int(m)} min" for s, m in piv.columns]
    return piv.to_string(float_format=lambda v: f"{v:.3f}")


def _run_case(
    name: str,
    da: Any,
    out: Path,
    quiet: bool,
    true_motion: np.ndarray | None = None,
) -> Any:
    from .io import atomic_path, write_nowcast
    from .nowcast import forecast
    from .plot import plot_nowcast, plot_scores, plot_sequence, plot_spectra
    from .verify import rapsd

    timestep = float(da.attrs.get("timestep") or 5.0)
    past = da.isel(time=slice(0, N_PAST))
    truth = da.values[N_PAST : N_PAST + N_LEAD]
    t0 = time.perf_counter()
    fc, vel = forecast(past, N_LEAD, model="extrapolation", motion="lk", return_velocity=True)
    t_fc = time.perf_counter() - t0
    runs = {"extrapolation (LK)": fc, "persistence": forecast(past, N_LEAD, model="persistence")}
    if true_motion is not None:
        runs["extrapolation (true motion)"] = forecast(past, N_LEAD, model="extrapolation", velocity=true_motion)
    table = _score_models(runs, truth, timestep)

    leads = timestep * np.arange(1, N_LEAD + 1)
    write_nowcast(
        out / f"{name}_nowcast.nc", fc, reference_time=da.time.values[N_PAST - 1], timestep=timestep, like=da,
        velocity=vel, model="extrapolation (motion: lk)", overwrite=True,
    )
    with atomic_path(out / f"{name}_scores.csv") as tmp:
        table.to_csv(tmp, index=False)
    plot_sequence(past.values, past.time.values, ncols=N_PAST, path=out / f"{name}_input.png",
                  title=f"{name}: input frames")
    plot_nowcast(past.values[-1], vel, fc, leadtimes_min=leads, observed=truth, path=out / f"{name}_nowcast.png",
                 title=f"{name}: LK + semi-Lagrangian extrapolation (top) vs observed (bottom)", panels=3)
    plot_scores(table[table["threshold"] == 1.0], scores=("csi", "ets", "mae"), hue="model",
                path=out / f"{name}_scores.png", title=f"{name}: scores at 1 mm/h against lead time")
    spectra = {}
    both = np.isfinite(truth[-1]) & np.isfinite(fc[-1])  # the same no-data area in both spectra
    for label, field in [("observed +60 min", truth[-1]), ("nowcast +60 min", fc[-1])]:
        f = np.where(both, field, 0.0)
        freq_psd = rapsd(f, return_freq=True)
        psd, freq = (freq_psd[0], freq_psd[1])
        spectra[label] = (np.asarray(freq), np.asarray(psd))
    px_km = float(da.attrs.get("xpixelsize", 1000.0)) / 1000.0
    try:
        plot_spectra(spectra, pixel_km=px_km, path=out / f"{name}_spectra.png", title=f"{name}: RAPSD at +60 min")
    except InputError:  # a small grid the rain has left by +60 min: nothing to draw (it failed the demo)
        _log(f"    no spectrum figure: no rain at +60 min on the {da.sizes['y']} x {da.sizes['x']} px grid", quiet)
    _log(f"    nowcast of {N_LEAD} x {timestep:g} min on {da.sizes['y']} x {da.sizes['x']} px in {t_fc:.2f} s", quiet)
    return table


_MARK = ".skydiff-demo"  # written into the output folder: files of that folder with the demo's names are the demo's
_PRODUCTS = ("nowcast.nc", "scores.csv", "input.png", "nowcast.png", "scores.png", "spectra.png")


def _claim_folder(out: Path) -> None:
    """Create ``out`` for the demo, or refuse a folder that is not the demo's own (no mark) and holds a file with
    a name the demo writes (``synthetic_nowcast.nc`` ...): the demo replaces its own earlier output only."""
    from .errors import InputError

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file, not a folder")
    if out.is_dir() and not (out / _MARK).is_file():
        clash = [f"{case}_{p}" for case in ("synthetic", "knmi") for p in _PRODUCTS if (out / f"{case}_{p}").exists()]
        if clash:
            raise InputError(f"{out} holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}, not written by "
                             "the demo; give the demo another --out (it replaces the files of its own folder only)")
    out.mkdir(parents=True, exist_ok=True)
    (out / _MARK).write_text("files here named synthetic_* and knmi_* are replaced by `skydiff demo`\n")


def run_demo(out: str | os.PathLike[str] = "skydiff-demo", data: str | None = None, quiet: bool = False,
             size: int = 256) -> dict[str, Any]:
    """Run the demo; returns ``{case name: score table}`` and writes everything into ``out``."""
    from .synthetic import rain_sequence

    from .errors import InputError

    if data is not None and not Path(data).is_dir():  # before any work: a mistyped --data is not a skipped case
        raise InputError(f"the data folder {data} is not a folder (data= / --data names the shared data folder, "
                         "the one holding radar/KNMI/2010/08)")
    out = Path(out)
    _claim_folder(out)
    results: dict[str, Any] = {}

    _log(f"[1/2] synthetic case: generating {N_PAST + N_LEAD} frames of {size} x {size} px ...", quiet)
    da, v_true = rain_sequence(n_frames=N_PAST + N_LEAD, shape=(size, size), seed=42, return_motion=True)
    results["synthetic"] = _run_case("synthetic", da, out, quiet, true_motion=v_true)
    print("synthetic case (CSI at 1 mm/h, MAE; every model on the same pixels):")
    print(_summary(results["synthetic"]))

    data = data or os.environ.get("SKYDIFF_DATA")
    knmi = Path(data) / "radar" / "KNMI" / "2010" / "08" if data else None
    if knmi is not None and knmi.is_dir():
        from .io import read_radar

        files = sorted(knmi.glob("RAD_NL25_RAP_5min_*.h5"))
        names = [f.name for f in files]
        ref = f"RAD_NL25_RAP_5min_{KNMI_REFERENCE}.h5"
        i = names.index(ref) if ref in names else -1
        sel = files[i - N_PAST + 1 : i + N_LEAD + 1] if i - N_PAST + 1 >= 0 else []
        if len(sel) != N_PAST + N_LEAD:  # (a negative start index took the wrong files)
            _log(f"[2/2] real case skipped: {knmi} lacks the {N_PAST} files up to {ref} and the {N_LEAD} after it",
                 quiet)
        else:
            _log(f"[2/2] real case: KNMI 2010-08-26, last observation 05:30 UTC ({len(sel)} files) ...", quiet)
            da_real = read_radar(sel)
            results["knmi"] = _run_case("knmi", da_real, out, quiet)
            print("KNMI 2010-08-26 05:30 UTC (CSI at 1 mm/h, MAE; every model on the same pixels):")
            print(_summary(results["knmi"]))
    elif knmi is not None:
        _log(f"[2/2] real case skipped: no folder {knmi} (the KNMI 2010 radar files of the shared data)", quiet)
    else:
        _log("[2/2] real case skipped: set SKYDIFF_DATA (or --data) to the shared data folder to run it", quiet)
    print(f"figures, scores and nowcasts written to {out}/")
    return results
