"""The two published NL-50 metric protocols, reproduced with their quirks (those of
the SmaAt-UNet and SpaT-SparK reference code).

SmaAt-UNet and SpaT-SparK report "pMSE", accuracy, precision, recall, F1, CSI, FAR and HSS on the NL-50 test
set, but they compute them differently, and neither computes them the textbook way. The functions here
reproduce each protocol exactly (defaults) and expose every quirk as a named option, so a table can say which
numbers it compares. Both take **normalised NL-50 values**, ``v = (mm per 5 min) / 47.83`` (what the models
output and the HDF5 files store; :func:`to_nl50` converts from mm/h), and return a dict that states the
factor and the *real* thresholds in mm/h that were used.

:func:`smaat_protocol` (Trebing et al. 2021; SmaAt-UNet's ``PrecipitationMetrics`` / paper-branch test code)
    - Task 12 -> 1: one frame at +30 min (pass ``(N, H, W)``, ``(N, 1, H, W)``, or ``(N, T, H, W)`` with
      ``lead_index``).
    - ``mse``: per-pixel MSE of the de-normalised fields in (mm/5min)^2,
      ``sum((47.83 (pred - target))^2) / (N * H * W)`` ("mse_pixel"); ``mse_reduction="image"`` gives their
      per-image value ``sum(...) / N`` (with ``denorm_factor=1`` their normalised loss).
    - Events ``v * 47.83 * 12 > 0.5`` (mm/h, strict), one confusion matrix summed over all pixels of all
      samples (micro average).
    - ``hss = (TP TN - FN FP) / ((TP + FN)(FN + TN) + (TP + FP)(FP + TN))``: **without the factor 2** of the
      Heidke skill score, i.e. half the standard value (``hss_factor=2`` gives the standard one).
    - A ratio with a zero denominator is NaN.
    - Note: SmaAt's master-branch ``PrecipitationMetrics`` sums per-batch *means* of the per-image sums and
      divides them by the pixel count of all samples, so its ``mse_pixel`` equals this value only for batches
      of one sample (with batch size ``b`` it is ``b`` times smaller).

:func:`spatspark_protocol` (Li et al. 2024; ``finetune_main.evaluate``)
    - Task 12 -> 12 (5 ... 60 min), all output frames scored together.
    - ``mse``: ``sum((47.18 (pred - target))^2) / (N * 12 * H * W)``: factor **47.18, not 47.83** (about 2.8 %
      lower than with 47.83), over all 12 frames; the reference hard-codes ``N = 1557`` (the NL-50 test count;
      ``n_samples=1557`` reproduces that, e.g. with its repeated filler samples) and ``mse_per_lead`` divides
      each frame's sum by ``N * H * W``.
    - Thresholds ``[0.2, 0.5, 1.0]`` with the **cumulative x12 quirk**: inside the threshold loop prediction
      and target are multiplied by 12 again for every threshold and never by 47.18, so threshold ``k`` (1-based)
      is applied to ``v * 12**k``. The real thresholds are ``key / 12**k * 12 * factor`` mm/h: 9.44, 1.97 and
      0.33 mm/h for the keys 0.2, 0.5 and 1.0 with the factor 47.18 (9.57, 1.99, 0.33 mm/h with the true NL-50
      factor 47.83). A table column "0.5 mm/h" from this code is really about 2 mm/h. ``cumulative=False`` uses
      the keys as real mm/h thresholds (``v * factor * 12 > key``).
    - Events strict (``>``), one confusion matrix summed over all pixels, samples *and lead times* (the code's
      ``'all'`` entry, ``averaging="micro"``); ``averaging="per_lead"`` averages the scores of the 12 per-frame
      matrices (the code's ``'single'`` entries) instead. The published table is not consistent with one
      confusion matrix (its F1 and CSI do not follow from its precision and recall; §7.2); which averaging (or
      per-metric epoch selection) produced it is not known.
    - Every ratio has ``+ 1e-8`` in its denominator (``eps``), so 0/0 gives 0 instead of NaN; HSS again without
      the factor 2.

Both return::

    {"protocol": "smaat" | "spatspark", "mse": float, "mse_per_lead": [float, ...],
     "mse_reduction": "pixel" | "image", "mse_units": str, "denorm_factor": float,
     "n_samples": int, "n_leads": int, "averaging": str, "hss_factor": float, "eps": float, "event": ">",
     "thresholds": [key, ...],                      # nominal thresholds (the table's column labels)
     "thresholds_mm_h": {key: real mm/h},           # what the events really were, in mm/h with denorm_factor
     "thresholds_normalised": {key: cut on v},      # event = v > cut
     "scores": {key: {"accuracy", "precision", "recall", "f1", "csi", "far", "hss"}},
     "scores_per_lead": {key: [{...} per lead]},
     "confusion": {key: {"tp", "fp", "fn", "tn"}}}  # summed over everything

Missing data: pixels where the prediction or the target is NaN are left out of the sums and the confusion
matrices, and the per-pixel MSE then divides by the number of valid pixels (``n_samples`` given: by
``n_samples * leads * H * W`` as the reference). Neither reference has NaN.

Large data sets: :class:`ProtocolAccumulator` (from :func:`protocol_accumulator`) takes batches with
``update(pred, target)`` and gives the same dict from ``compute()``; counts are kept as int64 tensors and sums
in float64 on the inputs' device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import InputError, ShapeError, warn
from .categorical import _check_threshold
from .continuous import _float_tensor

__all__ = [
    "smaat_protocol",
    "spatspark_protocol",
    "protocol_accumulator",
    "ProtocolAccumulator",
    "to_nl50",
    "from_nl50",
    "NL50_FACTOR",
    "SPATSPARK_FACTOR",
    "PROTOCOL_SCORES",
]

NL50_FACTOR = 47.83
"""NL-50 normalisation: the training maximum in mm per 5 min (SmaAt-UNet, reference §4, §7.1)."""
SPATSPARK_FACTOR = 47.18
"""The de-normalisation factor SpaT-SparK's evaluation uses (reference §7.2)."""
PROTOCOL_SCORES = ("accuracy", "precision", "recall", "f1", "csi", "far", "hss")
"""Keys of each ``scores[key]`` entry."""

_REDUCTIONS = ("pixel", "image")
_AVERAGING = ("micro", "per_lead")


def to_nl50(rain_mm_h: Any, factor: float = NL50_FACTOR) -> Any:
    """Rain rate in mm/h -> normalised NL-50 value ``R / 12 / factor`` (numpy or torch, same type out)."""
    _check_factor(factor)
    if isinstance(rain_mm_h, torch.Tensor):
        return rain_mm_h / (12.0 * factor)
    return np.asarray(rain_mm_h, dtype=np.float64) / (12.0 * factor)


def from_nl50(v: Any, factor: float = NL50_FACTOR) -> Any:
    """Normalised NL-50 value -> rain rate in mm/h, ``v * factor * 12`` (numpy or torch, same type out)."""
    _check_factor(factor)
    if isinstance(v, torch.Tensor):
        return v * (12.0 * factor)
    return np.asarray(v, dtype=np.float64) * (12.0 * factor)


def _check_number(value: Any, name: str, positive: bool = True) -> float:
    """``value`` as a finite float (> 0 where ``positive``, else ≥ 0), else InputError naming ``name``."""
    what = "a positive number" if positive else "a number >= 0"
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be {what}, got {value!r}") from None
    if not math.isfinite(f) or f < 0 or (positive and f == 0):
        raise InputError(f"{name} must be {what}, got {value!r}")
    return f


def _check_factor(factor: Any) -> float:
    return _check_number(factor, "denorm_factor")


class ProtocolAccumulator:
    """Accumulates a metric protocol over batches; build it with :func:`protocol_accumulator`.

    ``update(pred, target)`` takes normalised NL-50 fields ``(N, T, H, W)`` (or ``(N, H, W)`` = one lead);
    ``compute()`` returns the result dict described in :mod:`skydiff.verify.protocols`. Every batch must have
    the same number of leads ``T``.
    """

    def __init__(
        self,
        protocol: str,
        *,
        denorm_factor: float,
        thresholds: Sequence[float],
        cumulative: bool,
        mse_reduction: str,
        hss_factor: float,
        averaging: str,
        eps: float,
        n_samples: int | None,
        lead_index: int | None = None,
    ) -> None:
        self.protocol = str(protocol)
        self.denorm_factor = _check_factor(denorm_factor)
        if isinstance(thresholds, (np.ndarray, torch.Tensor)):
            thresholds = thresholds.tolist() if thresholds.ndim else [thresholds.item()]
        ths = [_check_threshold(t) for t in (thresholds if isinstance(thresholds, Sequence) else [thresholds])]
        if not ths:
            raise InputError(f"thresholds must hold at least one threshold, got {thresholds!r}")
        self.thresholds = ths
        self.cumulative = bool(cumulative)
        if mse_reduction not in _REDUCTIONS:
            raise InputError(f"mse_reduction must be one of {_REDUCTIONS}, got {mse_reduction!r}")
        self.mse_reduction = mse_reduction
        if averaging not in _AVERAGING:
            raise InputError(f"averaging must be one of {_AVERAGING}, got {averaging!r}")
        self.averaging = averaging
        self.hss_factor = _check_number(hss_factor, "hss_factor")
        self.eps = _check_number(eps, "eps", positive=False)
        if lead_index is not None and (isinstance(lead_index, bool) or not isinstance(lead_index, (int, np.integer))):
            raise InputError(f"lead_index must be an integer index of a lead time or None, got {lead_index!r}")
        if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer))
                                      or n_samples < 1):
            raise InputError(f"n_samples must be a positive integer or None, got {n_samples!r}")
        self.n_samples_fixed = None if n_samples is None else int(n_samples)
        self.lead_index = None if lead_index is None else int(lead_index)
        # multiplier applied to v before comparing with each key (the reference's arithmetic)
        if self.cumulative:
            self.multipliers = [12.0**(k + 1) for k in range(len(ths))]
        else:
            self.multipliers = [12.0 * self.denorm_factor] * len(ths)
        self._n = 0
        self._leads: int | None = None
        self._hw: tuple[int, int] | None = None
        self._sse: torch.Tensor | None = None  # (T,) float64
        self._valid: torch.Tensor | None = None  # (T,) int64
        self._conf: torch.Tensor | None = None  # (n_thr, T, 4) int64: tp, fp, fn, tn
        self._warned = False

    # --- input -------------------------------------------------------------------------------------------------

    def _prepare(self, pred: Any, target: Any) -> tuple[torch.Tensor, torch.Tensor]:
        dev = next((x.device for x in (pred, target) if isinstance(x, torch.Tensor)), None)
        p = _float_tensor(pred, "pred", dev)
        t = _float_tensor(target, "target", dev)
        if p.shape != t.shape:
            raise ShapeError(f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}")
        if p.ndim == 3:
            p, t = p[:, None], t[:, None]
        elif p.ndim != 4:
            raise ShapeError(f"{self.protocol} protocol expects (N, T, H, W) or (N, H, W) normalised fields, got "
                             f"shape {tuple(p.shape)}")
        if self.lead_index is not None:
            li = self.lead_index
            if not -p.shape[1] <= li < p.shape[1]:
                raise InputError(f"lead_index {li} is out of range for {p.shape[1]} lead(s)")
            li %= p.shape[1]
            p, t = p[:, li:li + 1], t[:, li:li + 1]
        elif self.protocol == "smaat" and p.shape[1] != 1:
            raise ShapeError(f"the SmaAt protocol scores one frame (+30 min); got {p.shape[1]} leads: pass "
                             "lead_index (e.g. 5 for +30 min of 6 targets at 5-min steps)")
        if p.shape[0] < 1:
            raise ShapeError("pred and target hold no samples")
        # detached: an accumulator over an evaluation must not keep every batch's autograd graph alive
        p, t = p.detach().to(torch.float64), t.detach().to(torch.float64)
        if not self._warned:
            finite = torch.isfinite(t)
            # 2 normalised units = 96 mm in 5 min: no real NL-50 value, but an ordinary rain rate in mm/h
            if bool(finite.any()) and float(t[finite].abs().max()) > 2.0:
                warn(f"{self.protocol} protocol: targets reach {float(t[finite].abs().max()):.3g}; the protocol "
                     "expects normalised NL-50 values (mm/5min / 47.83), not mm/h (see skydiff.verify.to_nl50)")
                self._warned = True
        return p, t

    def update(self, pred: Any, target: Any) -> ProtocolAccumulator:
        """Add a batch ``(N, T, H, W)`` / ``(N, H, W)`` of normalised predictions and targets; returns self."""
        p, t = self._prepare(pred, target)
        N, T, H, W = p.shape
        if self._leads is None:
            self._leads, self._hw = T, (H, W)
            self._sse = torch.zeros(T, dtype=torch.float64, device=p.device)
            self._valid = torch.zeros(T, dtype=torch.int64, device=p.device)
            self._conf = torch.zeros(len(self.thresholds), T, 4, dtype=torch.int64, device=p.device)
        elif T != self._leads:
            raise ShapeError(f"every batch must have {self._leads} lead(s), got {T}")
        assert self._sse is not None and self._valid is not None and self._conf is not None
        p_dev = p.to(self._sse.device)
        t_dev = t.to(self._sse.device)
        valid = ~(torch.isnan(p_dev) | torch.isnan(t_dev))  # NaN = no data; an infinite prediction is scored (inf)
        d = torch.where(valid, (p_dev - t_dev) * self.denorm_factor, torch.zeros((), dtype=p_dev.dtype,
                                                                                 device=p_dev.device))
        self._sse += (d * d).sum(dim=(0, 2, 3))
        self._valid += valid.sum(dim=(0, 2, 3))
        for k, (thr, mult) in enumerate(zip(self.thresholds, self.multipliers)):
            pe = (p_dev * mult > thr) & valid
            te = (t_dev * mult > thr) & valid
            tp = (pe & te).sum(dim=(0, 2, 3))
            fp = (pe & ~te & valid).sum(dim=(0, 2, 3))
            fn = (~pe & te & valid).sum(dim=(0, 2, 3))
            tn = (~pe & ~te & valid).sum(dim=(0, 2, 3))
            self._conf[k] += torch.stack([tp, fp, fn, tn], dim=-1)
        self._n += N
        return self

    # --- output ------------------------------------------------------------------------------------------------

    def _scores(self, tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
        e = self.eps

        def ratio(a: float, b: float) -> float:
            b = b + e
            return a / b if b != 0 else float("nan")

        prec = ratio(tp, tp + fp)
        rec = ratio(tp, tp + fn)
        if e > 0:  # SpaT-SparK: 2 TP / (2 TP + FP + FN + eps)
            f1 = ratio(2 * tp, 2 * tp + fp + fn)
        else:  # SmaAt: 2 P R / (P + R), NaN when undefined
            f1 = 2 * prec * rec / (prec + rec) if (prec + rec) > 0 else float("nan")
        hss_num = float(tp * tn - fn * fp)  # exact in python integers before the division
        hss = self.hss_factor * ratio(hss_num, float((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))
        return {
            "accuracy": ratio(tp + tn, tp + tn + fp + fn),
            "precision": prec,
            "recall": rec,
            "f1": f1,
            "csi": ratio(tp, tp + fn + fp),
            "far": ratio(fp, tp + fp),
            "hss": hss,
        }

    def real_thresholds_mm_h(self) -> dict[float, float]:
        """Nominal threshold -> the real threshold in mm/h (with ``denorm_factor``)."""
        return {thr: thr * ((12.0 * self.denorm_factor) / mult) for thr, mult in zip(self.thresholds, self.multipliers)}

    def compute(self) -> dict[str, Any]:
        """The result dict (see the module docstring)."""
        if self._leads is None:
            raise InputError(f"{self.protocol} protocol: no data (call update first)")
        assert self._sse is not None and self._valid is not None and self._conf is not None and self._hw is not None
        T = self._leads
        H, W = self._hw
        N = self.n_samples_fixed if self.n_samples_fixed is not None else self._n
        sse = self._sse.cpu().tolist()
        nvalid = self._valid.cpu().tolist()
        if self.mse_reduction == "pixel":
            if self.n_samples_fixed is not None:
                denom_all, denom_lead = [N * T * H * W], [N * H * W] * T
            else:
                denom_all, denom_lead = [sum(nvalid)], nvalid
            units = "(mm/5min)^2 per pixel" if self.denorm_factor != 1.0 else "normalised^2 per pixel"
        else:
            denom_all, denom_lead = [N], [N] * T
            units = "(mm/5min)^2 per sample (sum over pixels and leads)" if self.denorm_factor != 1.0 else \
                "normalised^2 per sample (sum over pixels and leads)"

        def div(a: float, b: float) -> float:
            return a / b if b else float("nan")

        conf = self._conf.cpu().tolist()  # python ints: exact products
        scores: dict[float, dict[str, float]] = {}
        per_lead: dict[float, list[dict[str, float]]] = {}
        confusion: dict[float, dict[str, int]] = {}
        for k, thr in enumerate(self.thresholds):
            leads = [self._scores(*conf[k][j]) for j in range(T)]
            tot = [sum(conf[k][j][c] for j in range(T)) for c in range(4)]
            per_lead[thr] = leads
            confusion[thr] = dict(zip(("tp", "fp", "fn", "tn"), tot))
            if self.averaging == "micro":
                scores[thr] = self._scores(*tot)
            else:
                scores[thr] = {s: _nanmean([d[s] for d in leads]) for s in PROTOCOL_SCORES}
        real = self.real_thresholds_mm_h()
        return {
            "protocol": self.protocol,
            "mse": div(sum(sse), denom_all[0]),
            "mse_per_lead": [div(a, b) for a, b in zip(sse, denom_lead)],
            "mse_reduction": self.mse_reduction,
            "mse_units": units,
            "denorm_factor": self.denorm_factor,
            "n_samples": int(N),
            "n_leads": int(T),
            "averaging": self.averaging,
            "hss_factor": self.hss_factor,
            "eps": self.eps,
            "event": ">",
            "cumulative_thresholds": self.cumulative,
            "thresholds": list(self.thresholds),
            "thresholds_mm_h": real,
            "thresholds_normalised": {thr: thr / mult for thr, mult in zip(self.thresholds, self.multipliers)},
            "scores": scores,
            "scores_per_lead": per_lead,
            "confusion": confusion,
        }


def _nanmean(values: list[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return sum(v) / len(v) if v else float("nan")


def protocol_accumulator(protocol: str, **options: Any) -> ProtocolAccumulator:
    """A :class:`ProtocolAccumulator` for ``"smaat"`` or ``"spatspark"`` with that protocol's defaults.

    ``options`` are the keyword options of :func:`smaat_protocol` / :func:`spatspark_protocol`.
    """
    key = str(protocol).lower()
    if key == "smaat":
        allowed = {"denorm_factor", "threshold", "mse_reduction", "hss_factor", "averaging", "eps", "n_samples",
                   "lead_index"}
        _check_options(key, options, allowed)
        thr = options.pop("threshold", 0.5)
        kw: dict[str, Any] = {"denorm_factor": NL50_FACTOR, "mse_reduction": "pixel", "hss_factor": 1.0,
                              "averaging": "micro", "eps": 0.0, "n_samples": None, "lead_index": None, **options}
        return ProtocolAccumulator("smaat", thresholds=[thr], cumulative=False, **kw)
    if key == "spatspark":
        allowed = {"denorm_factor", "thresholds", "cumulative", "mse_reduction", "hss_factor", "averaging", "eps",
                   "n_samples"}
        _check_options(key, options, allowed)
        kw = {"denorm_factor": SPATSPARK_FACTOR, "thresholds": (0.2, 0.5, 1.0), "cumulative": True,
              "mse_reduction": "pixel", "hss_factor": 1.0, "averaging": "micro", "eps": 1e-8, "n_samples": None,
              **options}
        return ProtocolAccumulator("spatspark", **kw)
    raise InputError(f"unknown protocol {protocol!r}; use 'smaat' or 'spatspark'")


def _check_options(name: str, options: dict[str, Any], allowed: set[str]) -> None:
    bad = sorted(set(options) - allowed)
    if bad:
        raise InputError(f"{name} protocol has no option(s) {', '.join(bad)}; options: {', '.join(sorted(allowed))}")


def smaat_protocol(
    pred: Any,
    target: Any,
    *,
    denorm_factor: float = NL50_FACTOR,
    threshold: float = 0.5,
    mse_reduction: str = "pixel",
    hss_factor: float = 1.0,
    averaging: str = "micro",
    eps: float = 0.0,
    n_samples: int | None = None,
    lead_index: int | None = None,
) -> dict[str, Any]:
    """SmaAt-UNet's NL-50 protocol (see :mod:`skydiff.verify.protocols`): 12 -> 1 frame at +30 min.

    Parameters
    ----------
    pred, target
        Normalised NL-50 values (mm/5min / 47.83), ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, T, H, W)`` with
        ``lead_index`` selecting the scored frame; numpy or torch.
    denorm_factor
        mm/5min per normalised unit (47.83); also used for the threshold (``v * factor * 12 > threshold``).
    threshold
        Event threshold in mm/h (0.5), strict ``>``.
    mse_reduction
        ``"pixel"`` (their ``mse_pixel``, the reported pMSE) or ``"image"`` (per-image sum, their ``mse_denorm``;
        with ``denorm_factor=1`` their normalised ``mse``).
    hss_factor
        1 (default) reproduces their HSS, 2 gives the standard Heidke skill score.
    averaging
        ``"micro"`` (default: one matrix over all pixels) or ``"per_lead"`` (mean of per-lead scores; the same
        for one lead).
    eps
        Added to every score denominator (0: a zero denominator gives NaN, as theirs).
    n_samples
        Fixed sample count for the MSE denominator (default: the number of samples passed).
    lead_index
        Index into axis 1 of ``(N, T, H, W)`` inputs with ``T > 1`` (e.g. 5 = +30 min of 6 targets).

    Returns the result dict of the module docstring (``scores[threshold]`` holds the categorical scores).
    """
    acc = protocol_accumulator("smaat", denorm_factor=denorm_factor, threshold=threshold,
                               mse_reduction=mse_reduction, hss_factor=hss_factor, averaging=averaging, eps=eps,
                               n_samples=n_samples, lead_index=lead_index)
    return acc.update(pred, target).compute()


def spatspark_protocol(
    pred: Any,
    target: Any,
    *,
    denorm_factor: float = SPATSPARK_FACTOR,
    thresholds: Sequence[float] = (0.2, 0.5, 1.0),
    cumulative: bool = True,
    mse_reduction: str = "pixel",
    hss_factor: float = 1.0,
    averaging: str = "micro",
    eps: float = 1e-8,
    n_samples: int | None = None,
) -> dict[str, Any]:
    """SpaT-SparK's NL-50 protocol (see :mod:`skydiff.verify.protocols`): 12 -> 12 frames scored together.

    Parameters
    ----------
    pred, target
        Normalised NL-50 values (mm/5min / 47.83), ``(N, T, H, W)`` (T = 12 in the paper) or ``(N, H, W)``.
    denorm_factor
        47.18 (the reference's factor; 47.83 is the true NL-50 one). Scales the MSE, and with
        ``cumulative=False`` also the thresholds.
    thresholds
        Nominal thresholds, in the order of the reference's loop (0.2, 0.5, 1.0).
    cumulative
        True (default) reproduces the cumulative x12 quirk (threshold ``k`` applied to ``v * 12**k``); False
        uses the thresholds as mm/h (``v * denorm_factor * 12 > thr``).
    mse_reduction
        ``"pixel"`` (pMSE, ``/ (N * T * H * W)``) or ``"image"`` (their ``val_loss``: ``/ N``).
    hss_factor
        1 reproduces their HSS (no factor 2); 2 gives the standard Heidke skill score.
    averaging
        ``"micro"`` (their ``'all'``) or ``"per_lead"`` (mean over the lead times of their ``'single'`` scores).
    eps
        Added to every score denominator (1e-8 as theirs; 0 gives NaN for 0/0).
    n_samples
        Fixed sample count in the MSE denominator (the reference hard-codes 1557).

    Returns the result dict of the module docstring; ``thresholds_mm_h`` holds the real thresholds
    (about 9.4, 2.0 and 0.33 mm/h by default).
    """
    acc = protocol_accumulator("spatspark", denorm_factor=denorm_factor, thresholds=tuple(thresholds),
                               cumulative=cumulative, mse_reduction=mse_reduction, hss_factor=hss_factor,
                               averaging=averaging, eps=eps, n_samples=n_samples)
    return acc.update(pred, target).compute()
