"""Side-by-side verification of nowcast models on radar archives (LUPIN's protocol by default).

:func:`evaluate` runs every model on the same cases and scores them on the same pixels:

Cases
    Every window of ``n_in + leadtimes`` frames exactly one time step apart (time gaps are never bridged) of
    every source, every ``stride`` steps, optionally a centred ``crop``. Each model gets the last frames it
    needs of the ``n_in`` inputs (``n_in`` defaults to the most any model needs: 6 for LUPIN, 12 with SmaAt-UNet;
    so by default the case set depends on the models compared: fix ``n_in`` to compare runs with other model lists).
Masking
    A pixel counts for a case and lead time only where the observation and *every* model's nowcast are finite
    (the union of the NaN masks), so every model is scored on exactly the same pixels.
Scores (pooled over all cases, i.e. micro-averaged)
    Categorical at each threshold (event ``x >= threshold``, mm/h): CSI, POD, FAR (ratio), ETS, precision,
    accuracy, frequency bias, from contingency tables summed over the cases per lead time; continuous: MSE,
    MAE, ME (forecast - observation, mm/h) over all counted pixels per lead time. (LUPIN's notebook averages
    MSE/MAE/ME per sample first and uses the event ``x > threshold``; the difference is documented, not
    reproduced.)

Published protocols (``protocols=("smaat", "spatspark")``)
    Besides LUPIN's scores, the same nowcasts can be scored with the NL-50 protocols of SmaAt-UNet (+30 min,
    i.e. lead index 5, ``> 0.5 mm/h``, pMSE in (mm/5min)^2 with 47.83, HSS without the factor 2) and of
    SpaT-SparK (all leads, 47.18, the cumulative x12 thresholds), with their quirks
    (:mod:`skydiff.verify.protocols`), on the same pixels; ``Evaluation.protocol_scores`` holds them.

The result is a :class:`Evaluation`: a long :class:`pandas.DataFrame` (one row per model, lead time and
threshold; the continuous scores repeated on every threshold row), mean wall seconds per nowcast per model,
markdown tables, an atomic CSV writer and a figure of each score against lead time.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ShapeError, check_device, check_int, check_rain_rate, positive_finite
from ..io.units import is_rain_rate
from .interface import NN_TIMESTEP_MIN, default_motion_frames, forecast, get_model, input_frames, is_neural

__all__ = ["Evaluation", "evaluate", "CATEGORICAL", "CONTINUOUS", "PROTOCOLS"]

PROTOCOLS = ("smaat", "spatspark")

CATEGORICAL = ("csi", "pod", "far", "ets", "precision", "acc", "bias")
CONTINUOUS = ("mse", "mae", "me")


@dataclass
class Evaluation:
    """Scores of several nowcast models on the same cases.

    ``scores``: DataFrame with columns ``source, model, leadtime_min, threshold, n_cases, n_pixels`` +
    :data:`CONTINUOUS` + :data:`CATEGORICAL` (``source`` is ``"all"`` for the pooled scores, or a group label);
    ``timing``: mean wall seconds per nowcast per model (the first nowcast of each model included: imports,
    compilation and weight loading); ``cases``: the (source, time of the last input) of every case; ``n_in``: the
    input frames of every case's window (which, with the lead times, decides which cases exist).
    """

    scores: Any
    timing: dict[str, float]
    cases: list[tuple[str, str]] = field(default_factory=list)
    leadtimes_min: list[float] = field(default_factory=list)
    thresholds: list[float] = field(default_factory=list)
    protocol_scores: Any = None
    """DataFrame (``protocol, model, threshold, threshold_mm_h, pmse, accuracy, precision, recall, f1, csi,
    far, hss``) of the published protocols asked for, or None."""
    n_in: int = 0

    def protocol_table(self, protocol: str, digits: int = 5) -> str:
        """A markdown table of one published protocol: one row per model and nominal threshold."""
        if self.protocol_scores is None or protocol not in set(self.protocol_scores["protocol"]):
            raise InputError(f"no scores for protocol {protocol!r} (evaluate(..., protocols=[{protocol!r}]))")
        df = self.protocol_scores[self.protocol_scores["protocol"] == protocol]
        cols = ["pmse", "accuracy", "precision", "recall", "f1", "csi", "far", "hss"]
        lines = ["| model | threshold (real mm/h) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
        for _, r in df.iterrows():
            vals = [f"{r[c]:.{digits}f}" if c == "pmse" else f"{r[c]:.3f}" for c in cols]
            lines.append(f"| {r['model']} | {r['threshold']:g} ({r['threshold_mm_h']:.2f}) | " + " | ".join(vals)
                         + " |")
        return "\n".join(lines)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.scores["model"]))

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(self.scores["source"]))

    def score(self, model: str, name: str, threshold: float | None = None, source: str = "all") -> np.ndarray:
        """One score per lead time for ``model`` (``threshold`` needed for categorical scores)."""
        df = self.scores[(self.scores["model"] == model) & (self.scores["source"] == source)]
        if df.empty:
            raise InputError(f"no scores for model {model!r} and source {source!r}")
        if name in CATEGORICAL:
            if threshold is None:
                raise InputError(f"score {name!r} needs a threshold (one of {self.thresholds})")
            df = df[np.isclose(df["threshold"], float(threshold))]
            if df.empty:
                raise InputError(f"no {name!r} scores at threshold {threshold:g}; the thresholds are {self.thresholds}")
        elif name not in df.columns:
            raise InputError(f"no score {name!r}; the scores are {', '.join(CONTINUOUS + CATEGORICAL)}")
        else:
            df = df[df["threshold"] == df["threshold"].iloc[0]]
        return df.sort_values("leadtime_min")[name].to_numpy()

    def table(self, score: str, threshold: float | None = None, digits: int = 3, source: str = "all") -> str:
        """A markdown table: one row per model, one column per lead time."""
        head = "| model | " + " | ".join(f"+{t:g} min" for t in self.leadtimes_min) + " |"
        lines = [head, "|---" * (len(self.leadtimes_min) + 1) + "|"]
        for m in self.models:
            vals = self.score(m, score, threshold, source)
            lines.append(f"| {m} | " + " | ".join(f"{v:.{digits}f}" for v in vals) + " |")
        return "\n".join(lines)

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write the scores to ``path`` atomically (:func:`skydiff.io.atomic_path`)."""
        from ..io.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            self.scores.to_csv(tmp, index=False, float_format="%.6g")
        return path

    def plot(self, path: str | os.PathLike[str] | None = None, threshold: float | None = None,
             scores: Sequence[str] = ("csi", "ets", "pod", "far", "mae", "me")) -> Any:
        """Each score against lead time, one line per model (categorical scores at ``threshold``, default the
        first); saved atomically when ``path`` is given."""
        from ..plot import plot_scores

        thr = self.thresholds[0] if threshold is None else float(threshold)
        df = self.scores[np.isclose(self.scores["threshold"], thr) & (self.scores["source"] == "all")]
        if df.empty:  # (an empty figure was written, titled with that threshold)
            raise InputError(f"no scores at threshold {thr:g} mm/h; the thresholds evaluated are {self.thresholds}")
        df = df.drop(columns=["threshold", "source"])
        return plot_scores(df, scores=list(scores), path=path,
                           title=f"{len(self.cases)} cases; categorical scores at {thr:g} mm/h")


def _load(source: Any) -> tuple[str, Any]:
    """(name, DataArray (time, y, x)) from a DataArray, a RadarSource, a file/folder path or a list of files."""
    import xarray as xr

    from ..io import read_radar
    from .data import RadarSource

    if isinstance(source, xr.DataArray):
        name, da = str(source.attrs.get("source", source.name or "data")), source
    elif isinstance(source, RadarSource):
        name, da = source.name, source.load()
    elif isinstance(source, (str, os.PathLike)):  # a file, a folder or a glob pattern: read_radar expands it
        name, da = Path(source).name, read_radar(str(source))
    elif isinstance(source, Sequence) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
        name, da = Path(source[0]).parent.name, read_radar([str(s) for s in source])
    else:
        raise InputError(f"evaluate: cannot use {type(source).__name__} as a source (DataArray, RadarSource, path, "
                         "or a list of files)")
    # by name, not position: (y, x, time) data was cut along its rows as if they were times
    if da.ndim != 3 or "time" not in da.dims or "time" not in da.coords:
        raise ShapeError(f"evaluate: source {name!r} must be a DataArray on (time, y, x) with a time coordinate, "
                         f"got dims {da.dims}")
    if not np.issubdtype(np.asarray(da["time"].values).dtype, np.datetime64):
        raise InputError(f"evaluate: the time coordinate of source {name!r} holds no datetimes")
    da = da.transpose("time", ...)
    units = str(da.attrs.get("units", "mm/h"))
    if not is_rain_rate(units):  # forecast() checks this, but gets plain arrays here
        raise InputError(f"evaluate: source {name!r} has units {units!r}; the models take rain rates in mm/h "
                         "(skydiff.io.read_radar converts reflectivity and accumulations)")
    return name, da


def _frames_needed(name: str, motion: str, n_motion: int | None, weights: Any = None) -> int:
    m = get_model(name)
    need = input_frames(name, weights)
    if m.uses_motion:
        need = max(need, n_motion or default_motion_frames(motion))
    return need


def _runs_mixed(name: str) -> bool:
    """True for the neural-network models that accept ``predict(precision="bfloat16")``."""
    from ..registry import _lookup

    return is_neural(name) and not getattr(_lookup(get_model(name).name), "mixed_precision_refused", None)


def evaluate(
    sources: Any,
    models: Sequence[str] = ("extrapolation", "persistence"),
    *,
    leadtimes: int = 6,
    thresholds: Sequence[float] = (1.0, 5.0, 10.0),
    n_in: int | None = None,
    stride: int = 1,
    crop: int | Sequence[int] | None = None,
    max_cases: int | None = None,
    motion: str = "lk",
    motion_frames: int | None = None,
    weights: Mapping[str, Any] | None = None,
    timestep: float = 5.0,
    group: Callable[[str], str] | None = None,
    progress: bool | Callable[[str], None] = False,
    protocols: Sequence[str] = (),
    precision: str | None = None,
    min_rain: float | None = None,
    resample: bool = False,
    device: Any = None,
) -> Evaluation:
    """Verify nowcast ``models`` side by side on every regular window of the ``sources``.

    Parameters
    ----------
    sources
        One or a list of: ``xarray.DataArray`` (time, y, x) in mm/h (from :func:`skydiff.io.read_radar`),
        :class:`skydiff.nowcast.data.RadarSource` (e.g. ``shared_split()["test"]``), a folder or file path, or
        a list of files (one sequence).
    models
        Registered model names (:func:`skydiff.nowcast.available_models`).
    leadtimes
        Lead times in time steps (default 6: 5 ... 30 min).
    thresholds
        Event thresholds in mm/h.
    n_in
        Input frames per case (default: the most any model needs, so that the cases depend on ``models``; give it
        to keep the same cases across runs with other model lists).
    stride
        Steps between case start times (1 = every window).
    crop
        Score and run on a ``crop`` (int or (h, w)) at the centre of each frame's grid (not of its valid data:
        on the KNMI 2010 grid a 288 crop holds 2.9 % no-data, rows 238:526, cols 206:494, not the NL-50 cut-out
        rows 284:572, cols 225:513); LUPIN scores a 246 x 246 centre.
    max_cases
        Stop after this many cases (in source order).
    motion, motion_frames
        Motion method (and frames) of the models that estimate a motion themselves (extrapolation); the networks
        use their own (the shipped LUPIN 4D-Var, L-CNN Lucas-Kanade).
    weights
        ``{model: path}``: weights files for neural-network models (default: the shipped ones).
    precision
        Passed to the neural-network models' ``predict`` (``"bfloat16"``/``"float16"``: mixed precision; default
        full); SmaAt-UNet always runs in full precision.
    min_rain
        Passed to the neural-network models' ``predict``: their output below this (mm/h) is set to 0 (default None:
        each model's own, e.g. 0.2 for the shipped LUPIN; 0: no cut).
    timestep
        The models' time step in minutes; sources with another step are refused (no silent resampling).
    resample
        True: first resample every source to ``timestep`` with :func:`skydiff.io.resample_time` (linear in time,
        e.g. MRMS' 2-min frames to 5 min; target times inside a gap longer than twice the source's step are
        refused). Frames already on the step are copied unchanged, and a source already at ``timestep`` is left as
        it is (its missing frames stay gaps: no case is made of an interpolated frame).
    group
        Optional ``source name -> group label``: scores are also pooled per group (rows with ``source`` = the
        label besides ``source = "all"``), e.g. one group per radar network.
    progress
        True prints one line per source; a callable receives the lines.
    protocols
        Published NL-50 protocols to score as well: ``"smaat"`` (needs ``leadtimes >= 6``: it scores +30 min)
        and/or ``"spatspark"`` (every lead; its reference uses 12), see :mod:`skydiff.verify.protocols`.
    device
        Where the models compute (:func:`~skydiff.nowcast.forecast`'s ``device``, e.g. ``"cuda"``); None: the CPU.
        The scores are computed on the CPU either way.

    Raises
    ------
    InputError
        Unknown model, no case of ``n_in + leadtimes`` regular frames, a source with another time step, bad
        parameters.
    """
    import pandas as pd

    from ..verify import contingency

    if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, (list, tuple)):
        sources = [sources]
    elif sources and all(isinstance(x, (str, os.PathLike)) and not os.path.isdir(x) for x in sources):
        sources = [list(sources)]  # files named one by one: one sequence (as the docs say), not a source each
    if not sources:
        raise InputError("evaluate: no sources given")
    if isinstance(models, str):
        raise InputError(f"evaluate: models must be a list of names, got the string {models!r}")
    models = list(models)
    if not models:
        raise InputError("evaluate: no models given")
    resolved = [get_model(m).name for m in models]  # raises for unknown names
    if len(set(resolved)) != len(resolved):
        raise InputError(f"evaluate: a model is listed twice (aliases count): {models}")
    if isinstance(leadtimes, bool) or not isinstance(leadtimes, (int, np.integer)) or leadtimes < 1:
        raise InputError(f"evaluate: leadtimes must be a positive int, got {leadtimes!r}")
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or stride < 1:
        raise InputError(f"evaluate: stride must be a positive int, got {stride!r}")
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__iter__"):
        raise InputError(f"evaluate: thresholds must be a list of numbers (mm/h), got {thresholds!r}")
    try:
        thresholds = [float(t) for t in thresholds]
    except (TypeError, ValueError):
        raise InputError(f"evaluate: thresholds must be numbers (mm/h), got {thresholds!r}") from None
    if any(not math.isfinite(t) or t < 0 for t in thresholds) or not thresholds:
        raise InputError(f"evaluate: thresholds must be finite and >= 0, got {thresholds}")
    if any(np.isclose(a, b) for i, a in enumerate(thresholds) for b in thresholds[:i]):
        raise InputError(f"evaluate: thresholds must differ from each other, got {thresholds}")
    if not positive_finite(timestep):
        raise InputError(f"evaluate: timestep must be a positive number of minutes, got {timestep!r}")
    protocols = [str(p).lower() for p in ([protocols] if isinstance(protocols, str) else protocols)]
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise InputError(f"evaluate: unknown protocol(s) {bad}; available: {', '.join(PROTOCOLS)}")
    neural = [m for m in models if is_neural(m)]
    if neural and not math.isclose(float(timestep), NN_TIMESTEP_MIN):  # (refused per case after reading before)
        raise InputError(f"evaluate: the networks ({', '.join(neural)}) were trained on {NN_TIMESTEP_MIN:g}-min steps; "
                         f"timestep is {timestep:g} min. Resample the sources to {NN_TIMESTEP_MIN:g} min instead "
                         f"(resample=True, timestep={NN_TIMESTEP_MIN:g}; CLI: --resample --timestep "
                         f"{NN_TIMESTEP_MIN:g})")
    if protocols and not math.isclose(float(timestep), 5.0):
        raise InputError(f"evaluate: the NL-50 protocols score 5-min lead times; timestep is {timestep:g} min")
    if "smaat" in protocols and leadtimes < 6:
        raise InputError(f"evaluate: the smaat protocol scores +30 min (6 lead times), got leadtimes={leadtimes}")
    if not isinstance(resample, (bool, np.bool_)):
        raise InputError(f"evaluate: resample must be True or False (resample to timestep), got {resample!r}")
    device = check_device(device, "evaluate")
    weights = dict(weights or {})
    unknown = set(weights) - set(models)
    if unknown:
        raise InputError(f"evaluate: weights given for models not evaluated: {sorted(unknown)}")
    need = {m: _frames_needed(m, motion, motion_frames, weights.get(m)) for m in models}
    # ``motion`` is the extrapolation models': the networks move rain along their own, persistence along none
    motions = {m: None if is_neural(m) or not get_model(m).uses_motion else motion for m in models}
    from .._compat import autocast_dtype

    autocast_dtype(precision)  # a bad precision is refused before any case runs
    if min_rain is not None:
        check_rain_rate("evaluate: min_rain", min_rain)
    mixed = {m: precision not in (None, "full") and _runs_mixed(m) for m in models}
    if n_in is not None:
        check_int("evaluate: n_in", n_in, 1)
    if max_cases is not None:
        check_int("evaluate: max_cases", max_cases, 1)
    n_in = max(need.values()) if n_in is None else int(n_in)
    if n_in < max(need.values()):
        raise InputError(f"evaluate: n_in={n_in} but {max(need, key=need.get)} needs {max(need.values())} frames")
    if crop is not None:
        sizes = [crop] if np.ndim(crop) == 0 else list(crop)
        if len(sizes) not in (1, 2) or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) for c in sizes):
            raise InputError(f"evaluate: crop must be an int or (height, width) in pixels, got {crop!r}")
        ch, cw = int(sizes[0]), int(sizes[-1])
        if ch < 8 or cw < 8:
            raise InputError(f"evaluate: crop must be at least 8 x 8, got {(ch, cw)}")
    say = progress if callable(progress) else (print if progress else (lambda _msg: None))
    length = n_in + leadtimes
    step_ns = int(round(float(timestep) * 60e9))

    L = leadtimes
    # per pooling key ("all" and the groups): n, sum(f-o), sum|f-o|, sum (f-o)^2 per lead; contingency tables
    cont: dict[str, dict[str, np.ndarray]] = {}
    tables: dict[str, dict[str, dict[float, Any]]] = {}  # per-lead contingency tables (shape (L,)), summed
    n_cases: dict[str, int] = {}

    def _acc(key: str) -> None:
        if key not in cont:
            cont[key] = {m: np.zeros((L, 4)) for m in models}
            tables[key] = {m: {t: 0 for t in thresholds} for m in models}
            n_cases[key] = 0

    _acc("all")
    from ..verify import protocol_accumulator, to_nl50

    accs = {(p, m): protocol_accumulator(p, **({"lead_index": 5} if p == "smaat" else {}))
            for p in protocols for m in models}
    t_model = {m: 0.0 for m in models}
    cases: list[tuple[str, str]] = []
    from .data import _regular_starts

    for src in sources:
        if max_cases is not None and len(cases) >= max_cases:
            break
        name, da = _load(src)  # (time, y, x)
        keys = ["all"] + ([str(group(name))] if group is not None else [])  # the rows its cases pool into
        if len(keys) == 2 and keys[1] == "all":
            raise InputError(f"evaluate: group({name!r}) gave 'all', the label of the pooled scores; use another")
        if resample:
            from ..io import resample_time
            from ..io.radar import _infer_timestep

            n0 = da.sizes["time"]
            src_step = _infer_timestep(np.asarray(da["time"].values, dtype="datetime64[ns]"))
            if src_step is not None and not math.isclose(src_step, float(timestep)):
                # (a source already at the step is left as it is: a missing frame was made up and scored)
                da = resample_time(da, timestep)
                say(f"evaluate: {name}: {n0} frames resampled to {da.sizes['time']} at {timestep:g} min")
        times = da["time"].values.astype("datetime64[ns]")
        dts = np.diff(times).astype(np.int64)
        if dts.size and not np.any(dts == step_ns):
            got = float(np.median(dts)) / 60e9
            raise InputError(f"evaluate: source {name!r} has a {got:g}-min time step; the models use {timestep:g} min"
                             " (resample=True / skydiff evaluate --resample, or evaluate at its own step with "
                             "timestep= / skydiff evaluate --timestep; nothing is resampled silently)")
        starts, _ = _regular_starts(times, step_ns, length, int(stride))
        say(f"evaluate: {name}: {len(times)} frames, {len(starts)} cases")
        data = np.asarray(da.values, dtype=np.float32)
        H, W = data.shape[-2:]
        if crop is not None:
            if ch > H or cw > W:
                raise ShapeError(f"evaluate: crop {(ch, cw)} larger than the grid {(H, W)} of {name!r}")
            r0, c0 = (H - ch) // 2, (W - cw) // 2
            data = data[:, r0 : r0 + ch, c0 : c0 + cw]
        for s in starts:
            if max_cases is not None and len(cases) >= max_cases:
                break
            inp = data[s : s + n_in]
            obs = torch.from_numpy(np.ascontiguousarray(data[s + n_in : s + length]))
            fcs = {}
            for m in models:
                t0 = time.perf_counter()
                kw: dict[str, Any] = {"timestep": timestep, "device": device}  # (the networks refuse other steps)
                if m in weights:
                    kw["weights"] = weights[m]
                if mixed.get(m):
                    kw["precision"] = precision
                if min_rain is not None and is_neural(m):
                    kw["min_rain"] = min_rain
                if motion_frames is not None and motions[m] is not None:  # the models that estimate a motion
                    kw["motion_kwargs"] = {"frames": int(motion_frames)}
                try:
                    out = forecast(inp[-need[m]:], L, model=m, motion=motions[m], **kw)
                except InputError as exc:
                    raise InputError(f"evaluate: {m} on {name} at {str(times[s + n_in - 1])[:16]}: {exc}") from None
                t_model[m] += time.perf_counter() - t0
                fcs[m] = torch.as_tensor(np.asarray(out, dtype=np.float32))
            invalid = torch.isnan(obs)
            for f in fcs.values():
                invalid |= torch.isnan(f)
            o = obs.masked_fill(invalid, float("nan"))
            for key in keys:
                _acc(key)
                n_cases[key] += 1
            for m, f in fcs.items():
                f = f.masked_fill(invalid, float("nan"))
                ok = ~invalid
                d = (f - o).to(torch.float64)
                dd = torch.where(ok, d, torch.zeros_like(d))
                sums = np.stack([ok.sum(dim=(-2, -1)).numpy(), dd.sum(dim=(-2, -1)).numpy(),
                                 dd.abs().sum(dim=(-2, -1)).numpy(), dd.square().sum(dim=(-2, -1)).numpy()], axis=1)
                cts = {thr: contingency(f, o, thr, dims=(-2, -1)) for thr in thresholds}
                for p in protocols:
                    accs[(p, m)].update(to_nl50(f[None]), to_nl50(o[None]))
                for key in keys:
                    cont[key][m] += sums
                    for thr, ct in cts.items():
                        tables[key][m][thr] = tables[key][m][thr] + ct
            cases.append((name, str(times[s + n_in - 1])[:16]))
    if not cases:
        raise InputError(f"evaluate: no case of {length} consecutive frames {timestep:g} min apart in the sources "
                         f"({n_in} inputs + {leadtimes} lead times)")
    rows = []
    lead_min = [float(timestep) * (k + 1) for k in range(L)]
    for key in cont:
        for m in models:
            c = cont[key][m]
            n = c[:, 0]
            with np.errstate(invalid="ignore", divide="ignore"):
                me, mae, mse = c[:, 1] / n, c[:, 2] / n, c[:, 3] / n
            scores = {thr: tables[key][m][thr].scores() for thr in thresholds}
            for k in range(L):
                for thr in thresholds:
                    sc = {c: v[k] for c, v in scores[thr].items()}
                    row = {"source": key, "model": m, "leadtime_min": lead_min[k], "threshold": thr,
                           "n_cases": n_cases[key], "n_pixels": int(n[k]), "mse": mse[k], "mae": mae[k], "me": me[k]}
                    row.update({c: float(sc[c]) for c in CATEGORICAL})
                    rows.append(row)
    df = pd.DataFrame(rows)
    timing = {m: t_model[m] / len(cases) for m in models}
    prot = None
    if protocols:
        prows = []
        for (p, m), acc in accs.items():
            res = acc.compute()
            for key in res["thresholds"]:
                sc = res["scores"][key]
                prows.append({"protocol": p, "model": m, "threshold": float(key),
                              "threshold_mm_h": float(res["thresholds_mm_h"][key]), "pmse": float(res["mse"]),
                              **{c: float(sc[c]) for c in ("accuracy", "precision", "recall", "f1", "csi", "far",
                                                           "hss")}})
        prot = pd.DataFrame(prows)
    return Evaluation(scores=df, timing=timing, cases=cases, leadtimes_min=lead_min, thresholds=thresholds,
                      protocol_scores=prot, n_in=n_in)

