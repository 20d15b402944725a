"""Lead-time score tables: one row per lead time and threshold, as a pandas DataFrame."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError, ShapeError
from .categorical import CATEGORICAL_SCORES, Contingency, _check_event, _check_threshold, _contingency_t
from .continuous import CONTINUOUS_SCORES, _cont_from_sums, _cont_sums, _pair
from .spatial import _check_scale, _fss_terms

__all__ = ["score_table"]


def _np(x: Any) -> np.ndarray:
    return np.asarray(x.detach().cpu().numpy(), dtype=np.float64)


def score_table(
    nowcast: Any,
    obs: Any,
    thresholds: Sequence[float] | None = (1, 5, 10),
    leadtimes_min: Sequence[float] | None = None,
    event: str = "ge",
    fss_scales: Sequence[int] = (),
) -> Any:
    """Verification scores of a nowcast per lead time, as a :class:`pandas.DataFrame`.

    Parameters
    ----------
    nowcast, obs:
        Arrays/tensors of shape ``(n_lead, H, W)``: ``nowcast[i]`` is verified against ``obs[i]``.
        NaN pixels (in either) are masked out, as everywhere in :mod:`skydiff.verify`.
    thresholds:
        Event thresholds for the categorical (and FSS) scores. One row is written per lead time *and*
        threshold (lead-major order). ``None`` or ``()`` gives one row per lead time with the continuous
        scores only.
    leadtimes_min:
        Lead times in minutes (length ``n_lead``), written to a ``leadtime_min`` column when given.
    event:
        ``"ge"`` (``x >= threshold``, default) or ``"gt"`` (pysteps' ``det_cat_fct``), see
        :func:`skydiff.verify.categorical`.
    fss_scales:
        Window sizes (pixels) for which an ``fss_<scale>`` column is added (FSS uses the same ``event``).

    Returns
    -------
    pandas.DataFrame
        Columns: ``step`` (1-based lead index), ``leadtime_min`` (if given), ``threshold`` (if any),
        ``n`` (number of valid pixels), ``mse, rmse, mae, me`` (continuous, repeated on each threshold row
        of a lead time), ``csi, pod, far, ets, hss, acc, precision, f1, bias, pofd`` and ``fss_<scale>``.
        All scores are per field (no averaging across lead times). Use ``DataFrame.to_csv`` to save it.
    """
    import pandas as pd

    _check_event(event)
    nt, ot, _ = _pair(nowcast, obs, ("nowcast", "obs"))
    if nt.ndim != 3:
        raise ShapeError(f"nowcast and obs must have shape (n_lead, H, W), got {tuple(nt.shape)}")
    n_lead = nt.shape[0]
    if n_lead == 0:
        raise ShapeError("nowcast and obs hold no lead time (shape (0, H, W))")

    def listed(x: Any, what: str) -> list[Any]:
        if isinstance(x, (str, bytes)) or not hasattr(x, "__iter__"):
            raise InputError(f"{what} must be a list of numbers, got {x!r}")
        return list(x)

    thrs = [] if thresholds is None else [_check_threshold(t) for t in listed(thresholds, "thresholds")]
    scales = [_check_scale(s) for s in listed(fss_scales, "fss_scales")]
    for what, vals in (("thresholds", thrs), ("fss_scales", scales)):
        if len(set(map(float, vals))) != len(vals):  # (each would give its rows twice)
            raise InputError(f"{what} must differ from each other, got {vals}")
    if scales and not thrs:
        raise InputError("fss_scales needs at least one threshold")
    if leadtimes_min is not None:
        try:
            lt = np.asarray(leadtimes_min, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise InputError(f"leadtimes_min must be numbers (minutes), got {leadtimes_min!r}") from None
        if lt.shape[0] != n_lead:
            raise ShapeError(f"leadtimes_min has {lt.shape[0]} values but the nowcast has {n_lead} lead times")

    dims = (1, 2)
    sums = _cont_sums(nt, ot, dims)
    n_valid = _np(sums[0])
    cont = {k: _np(v) for k, v in _cont_from_sums(*sums).items()}
    cat = {}
    fss_vals = {}
    for thr in thrs:
        tab = Contingency(*_contingency_t(nt, ot, thr, dims, event), threshold=thr, event=event)
        cat[thr] = {k: _np(v) for k, v in tab._scores_t().items()}
        for s in scales:
            num, den = _fss_terms(nt, ot, thr, s, event, None)
            fss_vals[(thr, s)] = _np(1.0 - num / den)

    rows = []
    for i in range(n_lead):
        base: dict[str, Any] = {"step": i + 1}
        if leadtimes_min is not None:
            base["leadtime_min"] = lt[i]
        cont_i = {"n": int(n_valid[i]), **{k: float(cont[k][i]) for k in CONTINUOUS_SCORES}}
        if not thrs:
            rows.append({**base, **cont_i})
            continue
        for thr in thrs:
            row = {**base, "threshold": thr, **cont_i}
            row.update({k: float(cat[thr][k][i]) for k in CATEGORICAL_SCORES})
            row.update({f"fss_{s}": float(fss_vals[(thr, s)][i]) for s in scales})
            rows.append(row)
    return pd.DataFrame(rows)
