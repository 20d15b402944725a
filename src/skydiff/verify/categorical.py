"""Categorical (dichotomous, yes/no event) verification: contingency tables, their scores, aggregation.

Event definition
----------------
A pixel is an *event* when its value reaches the threshold. Two conventions exist and both are offered:

- ``event="ge"`` (default): ``x >= threshold``. This is the convention of pysteps' ``fss`` and of
  :func:`skydiff.verify.fss`, so that FSS at scale 1 and the categorical scores count the same events.
- ``event="gt"``: ``x > threshold``. This is the convention of pysteps' ``det_cat_fct``; use it to reproduce
  pysteps' categorical numbers exactly (the two differ only for values exactly equal to the threshold,
  e.g. zero rain at threshold 0).

Missing data
------------
A pixel where the forecast or the observation is NaN is not counted in any of the four cells. (pysteps'
``det_cat_fct`` instead counts NaN as "no event": NaN/NaN becomes a correct negative, forecast rain with a
NaN observation a false alarm.)

Scores
------
With H hits, M misses, F false alarms, R correct negatives and N = H + M + F + R:

=============  ====================================================  ================================
key            formula                                               pysteps ``det_cat_fct`` key
=============  ====================================================  ================================
``pod``        H / (H + M)                                           POD
``far``        F / (H + F)   (false alarm *ratio*)                   FAR
``pofd``       F / (F + R)   (false alarm *rate*)                    FA
``csi``        H / (H + M + F)                                       CSI
``acc``        (H + R) / N                                           ACC
``bias``       (H + F) / (H + M)   (frequency bias)                  BIAS
``hss``        2 (HR − FM) / [(H + M)(M + R) + (H + F)(F + R)]       HSS
``ets``        (H − Hr) / (H + M + F − Hr),  Hr = (H + M)(H + F)/N   GSS (same value, other algebra)
``precision``  H / (H + F) = 1 − far                                 (1 − FAR)
``f1``         2H / (2H + F + M)                                     F1
=============  ====================================================  ================================

Undefined ratios (0/0, e.g. ``pod`` without observed events) are NaN; a positive number over zero is ``inf``
(``bias`` with forecast but no observed events). ``ets`` uses the textbook form, which coincides with
pysteps' GSS expression whenever the latter is defined; in the two degenerate cases where the latter is not —
no observed event with some false alarms, and every pixel observed as an event with some misses (no false
alarm, no correct negative) — it gives 0 where pysteps' expression gives NaN.

Aggregating over a data set
---------------------------
Two averages are in use and they differ (see :func:`aggregate`):

- ``how="pooled"`` (micro average): sum the contingency tables of all fields, then compute the scores once;
  for continuous scores, pool all valid pixels of all fields. This is what pysteps' ``*_accum`` functions do.
- ``how="mean"`` (macro average): compute the scores per field, then average them over the fields,
  ignoring fields where a score is NaN (e.g. CSI of a field without any event).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InputError, ShapeError
from .continuous import (
    _cont_from_sums,
    _cont_sums,
    _device_of,
    _float_tensor,
    _is_torch,
    _norm_dims,
    _out_dict,
    _pair,
    _sum,
    _valid,
)

__all__ = ["Contingency", "contingency", "categorical", "aggregate", "CATEGORICAL_SCORES"]

#: Names (and order) of the keys returned by :func:`categorical` and :meth:`Contingency.scores`.
CATEGORICAL_SCORES = ("csi", "pod", "far", "ets", "hss", "acc", "precision", "f1", "bias", "pofd")

_EVENTS = ("ge", "gt")


def _check_event(event: str) -> str:
    if event not in _EVENTS:
        raise InputError(f"event must be 'ge' (x >= threshold) or 'gt' (x > threshold), got {event!r}")
    return event


def _check_threshold(threshold: Any) -> float:
    if isinstance(threshold, torch.Tensor):
        if threshold.numel() != 1:
            raise InputError(f"threshold must be a single number, got a tensor of shape {tuple(threshold.shape)}")
        threshold = threshold.item()
    try:
        thr = float(threshold)
    except (TypeError, ValueError) as exc:
        raise InputError(f"threshold must be a number, got {threshold!r}") from exc
    if not (math.isfinite(thr) and thr >= 0):  # a negative rain threshold makes every pixel an event
        raise InputError(f"threshold must be a finite number >= 0 (rain rate), got {threshold!r}")
    return thr


def _is_event(x: torch.Tensor, threshold: float, event: str) -> torch.Tensor:
    return x >= threshold if event == "ge" else x > threshold


def _score_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64


@dataclass
class Contingency:
    """A 2×2 contingency table (counts as int64 torch tensors, scalar or one per field).

    Build it with :func:`contingency`. Tables add up with ``+`` (and ``sum(list_of_tables)``), which is how a
    table is accumulated over a data set; :meth:`sum` pools the per-field tables of a batch; :meth:`scores`
    computes the categorical scores (formulas in :mod:`skydiff.verify.categorical`).

    ``threshold`` and ``event`` record how the table was made; adding tables made with a different threshold
    or event raises :class:`~skydiff.errors.InputError`. ``as_numpy`` selects the output type of
    :meth:`scores` (python floats / numpy arrays when True, torch tensors when False).
    """

    hits: torch.Tensor
    misses: torch.Tensor
    false_alarms: torch.Tensor
    correct_negatives: torch.Tensor
    threshold: float | None = None
    event: str = "ge"
    as_numpy: bool = field(default=False, repr=False, compare=False)

    def _cells(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.hits, self.misses, self.false_alarms, self.correct_negatives

    @property
    def n(self) -> torch.Tensor:
        """Number of counted (valid) pixels, H + M + F + R."""
        return self.hits + self.misses + self.false_alarms + self.correct_negatives

    def __add__(self, other: Any) -> Contingency:
        if isinstance(other, (int, float)) and other == 0:  # so that sum([...]) works
            return self
        if not isinstance(other, Contingency):
            return NotImplemented
        if self.event != other.event:
            raise InputError(f"cannot add contingency tables with different events ({self.event!r}, {other.event!r})")
        if self.threshold is not None and other.threshold is not None and self.threshold != other.threshold:
            raise InputError(
                f"cannot add contingency tables with different thresholds ({self.threshold}, {other.threshold})"
            )
        if self.hits.shape != other.hits.shape:
            raise ShapeError(
                f"cannot add contingency tables of shapes {tuple(self.hits.shape)} and {tuple(other.hits.shape)}"
            )
        dev = self.hits.device
        cells = [a + b.to(dev) for a, b in zip(self._cells(), other._cells())]
        thr = self.threshold if self.threshold is not None else other.threshold
        return Contingency(*cells, threshold=thr, event=self.event, as_numpy=self.as_numpy and other.as_numpy)

    def __radd__(self, other: Any) -> Contingency:
        return self.__add__(other)

    def sum(self, dims: int | Sequence[int] | None = None) -> Contingency:
        """Sum the table over ``dims`` of its counts (``None``: all, i.e. pool a batch of per-field tables)."""
        dd = _norm_dims(dims, self.hits.ndim)
        cells = [_sum(c, dd) for c in self._cells()]
        return Contingency(*cells, threshold=self.threshold, event=self.event, as_numpy=self.as_numpy)

    def scores(self) -> dict[str, Any]:
        """The categorical scores ``{"csi","pod","far","ets","hss","acc","precision","f1","bias","pofd"}``.

        Computed in float64 (float32 on MPS). 0/0 gives NaN. See :mod:`skydiff.verify.categorical`.
        """
        return _out_dict(self._scores_t(), self.as_numpy)

    def _scores_t(self) -> dict[str, torch.Tensor]:
        dt = _score_dtype(self.hits.device)
        H, M, F, R = (c.to(dt) for c in self._cells())
        N = H + M + F + R
        hr = (H + M) * (H + F) / N
        return {
            "csi": H / (H + M + F),
            "pod": H / (H + M),
            "far": F / (H + F),
            "ets": (H - hr) / (H + M + F - hr),
            "hss": 2 * (H * R - F * M) / ((H + M) * (M + R) + (H + F) * (F + R)),
            "acc": (H + R) / N,
            "precision": H / (H + F),
            "f1": 2 * H / (2 * H + F + M),
            "bias": (H + F) / (H + M),
            "pofd": F / (F + R),
        }


def _contingency_t(
    ft: torch.Tensor, ot: torch.Tensor, threshold: float, dims: tuple[int, ...], event: str
) -> tuple[torch.Tensor, ...]:
    valid = _valid(ft, ot)
    fe = _is_event(ft, threshold, event) & valid
    oe = _is_event(ot, threshold, event) & valid
    fn = ~fe & valid
    on = ~oe & valid

    def count(m: torch.Tensor) -> torch.Tensor:
        return _sum(m.to(torch.int64), dims)

    return count(fe & oe), count(fn & oe), count(fe & on), count(fn & on)


def contingency(
    f: Any, o: Any, threshold: float, dims: int | Sequence[int] | None = None, event: str = "ge"
) -> Contingency:
    """Contingency table of the event ``f ≥ threshold`` (``event="ge"``) or ``f > threshold`` (``"gt"``).

    Pixels where ``f`` or ``o`` is NaN are not counted. ``dims=None`` counts over all pixels (scalar cells);
    ``dims=(-2, -1)`` gives one table per field of a ``(..., H, W)`` stack. The cells are int64 tensors on
    the inputs' device; :meth:`Contingency.scores` returns numpy/python values when both inputs were numpy.

    pysteps' ``det_cat_fct`` uses ``event="gt"`` (and counts NaN as "no event").
    """
    _check_event(event)
    thr = _check_threshold(threshold)
    ft, ot, numpy_out = _pair(f, o)
    dd = _norm_dims(dims, ft.ndim)
    return Contingency(*_contingency_t(ft, ot, thr, dd, event), threshold=thr, event=event, as_numpy=numpy_out)


def categorical(
    f: Any, o: Any, threshold: float, dims: int | Sequence[int] | None = None, event: str = "ge"
) -> dict[str, Any]:
    """Categorical scores of the event ``x ≥ threshold`` (``event="ge"``, default) or ``x > threshold`` ("gt").

    Returns ``{"csi","pod","far","ets","hss","acc","precision","f1","bias","pofd"}`` (formulas in
    :mod:`skydiff.verify.categorical`); ``far`` is the false-alarm *ratio* F/(H+F), ``pofd`` the false-alarm
    *rate* F/(F+R), ``ets`` equals pysteps' GSS. Undefined ratios (0/0) are NaN. NaN pixels (in ``f`` or ``o``)
    are not counted. ``dims`` as in :func:`contingency`. To reproduce pysteps' ``det_cat_fct`` use
    ``event="gt"``. Not differentiable (the event indicator is a step function).
    """
    return contingency(f, o, threshold, dims=dims, event=event).scores()


# ----------------------------------------------------------------------------------------------------------
# aggregation over a data set
# ----------------------------------------------------------------------------------------------------------
def _fields(fields_f: Any, fields_o: Any) -> tuple[list[tuple[torch.Tensor, torch.Tensor]] | None, Any, bool]:
    """Either a list of (f, o) tensor pairs (list input) or a stacked pair (array input)."""
    seq_f = isinstance(fields_f, (list, tuple))
    seq_o = isinstance(fields_o, (list, tuple))
    if seq_f != seq_o:
        raise InputError("fields_f and fields_o must both be sequences of fields or both be stacked arrays")
    if seq_f:
        if len(fields_f) != len(fields_o):
            raise ShapeError(f"got {len(fields_f)} forecast fields but {len(fields_o)} observation fields")
        if len(fields_f) == 0:
            raise InputError("no fields to aggregate")
        numpy_out = not _is_torch(*fields_f, *fields_o)
        device = _device_of(*fields_f, *fields_o)
        pairs = []
        for i, (a, b) in enumerate(zip(fields_f, fields_o)):
            names = (f"forecast field {i}", f"observation field {i}")
            a_t = _float_tensor(a, names[0], device)
            b_t = _float_tensor(b, names[1], device)
            pairs.append(_pair(a_t, b_t, names)[:2])
        return pairs, None, numpy_out
    ft, ot, numpy_out = _pair(fields_f, fields_o, ("fields_f", "fields_o"))
    if ft.ndim < 1:
        raise ShapeError("stacked fields need a leading field dimension, got a 0-d input")
    if ft.shape[0] == 0:
        raise InputError("no fields to aggregate")
    return None, (ft, ot), numpy_out


def aggregate(
    fields_f: Any,
    fields_o: Any,
    threshold: float | None = None,
    how: str = "pooled",
    event: str = "ge",
) -> dict[str, Any]:
    """Scores over a data set of fields, with an explicit choice of average.

    Parameters
    ----------
    fields_f, fields_o:
        Either stacked arrays/tensors whose first dimension indexes the fields (``(n_fields, H, W)``, or any
        ``(n_fields, ...)``; everything after the first dimension belongs to one field), or two equally long
        lists/tuples of fields (the fields may differ in shape; each forecast must match its observation).
    threshold:
        Event threshold for the categorical scores; ``None`` computes the continuous scores only.
    how:
        ``"pooled"`` (micro average): continuous scores over all valid pixels of all fields together;
        contingency tables summed over all fields before the categorical scores are computed (pysteps'
        accumulation). Larger fields and fields with more events weigh more.
        ``"mean"`` (macro average): every score computed per field, then averaged over the fields with
        NaN values ignored (e.g. the CSI of a field with no forecast or observed event). Note that the mean
        ``rmse`` is the mean of the per-field RMSEs, not the square root of the mean MSE.
        A score that is NaN in every field is NaN.
    event:
        ``"ge"`` (``x >= threshold``, default) or ``"gt"`` (``x > threshold``), see :func:`categorical`.

    Returns
    -------
    dict
        ``mse, rmse, mae, me`` and, when ``threshold`` is given, the keys of :func:`categorical`. Python
        floats for numpy input, 0-d tensors for torch input.
    """
    if how not in ("pooled", "mean"):
        raise InputError(f"how must be 'pooled' or 'mean', got {how!r}")
    _check_event(event)
    thr = None if threshold is None else _check_threshold(threshold)
    pairs, stacked, numpy_out = _fields(fields_f, fields_o)

    # per-field sufficient statistics, stacked along a leading field dimension
    if stacked is not None:
        ft, ot = stacked
        dd = tuple(range(1, ft.ndim))
        sums = _cont_sums(ft, ot, dd)
        tab = None
        if thr is not None:
            tab = Contingency(*_contingency_t(ft, ot, thr, dd, event), threshold=thr, event=event)
    else:
        per = [_cont_sums(a, b, tuple(range(a.ndim))) for a, b in pairs]
        dtype = per[0][0].dtype
        for p in per[1:]:
            dtype = torch.promote_types(dtype, p[0].dtype)
        sums = tuple(torch.stack([p[k].to(dtype) for p in per]) for k in range(4))
        tab = None
        if thr is not None:
            cells = [_contingency_t(a, b, thr, tuple(range(a.ndim)), event) for a, b in pairs]
            tab = Contingency(*(torch.stack([c[k] for c in cells]) for k in range(4)), threshold=thr, event=event)

    if how == "pooled":
        out = _cont_from_sums(*(s.sum(0) for s in sums))
        if tab is not None:
            out.update(tab.sum()._scores_t())
    else:
        out = {k: torch.nanmean(v, 0) for k, v in _cont_from_sums(*sums).items()}
        if tab is not None:
            out.update({k: torch.nanmean(v, 0) for k, v in tab._scores_t().items()})
    return _out_dict(out, numpy_out)
