"""Fractions skill score (FSS, Roberts & Lean 2008) in torch, with pysteps' definition and explicit NaN masking.

Definition (identical to ``pysteps.verification.spatialscores.fss`` on NaN-free fields)
---------------------------------------------------------------------------------------
1. Binary event fields ``I = [x >= threshold]`` (``event="ge"``, pysteps' FSS convention; ``event="gt"`` uses
   ``x > threshold``).
2. Fractions ``S = box(I)``: the mean of ``I`` over a ``scale × scale`` window, with zeros outside the domain
   (``scipy.ndimage.uniform_filter(I, size=scale, mode="constant", cval=0)``). The window of output pixel
   ``i`` covers input pixels ``i − scale//2 … i − scale//2 + scale − 1``, so for an even ``scale`` it extends
   one pixel further up/left than down/right, as in scipy. ``scale=1`` means no smoothing.
3. ``FSS = 1 − Σ (S_f − S_o)² / (Σ S_f² + Σ S_o²)`` over the pixels of a field; NaN when neither field has
   any event (0/0).

The box filter is computed with cumulative sums along both axes (O(H·W) for any scale); for hard event
indicators the window sums are exact small integers even in float32.

Missing data (NaN)
------------------
A pixel where the forecast or the observation is NaN is *missing* in both fields:

- it is not an event and does not count as a non-event either: the fraction at a pixel is the number of
  events in its window divided by the number of *non-missing* cells of the window, where cells outside the
  domain count as non-missing non-events (that is pysteps' zero padding, so that NaN-free fields give
  pysteps' numbers exactly): ``S = box(I·V) / (1 − box(1 − V))`` with ``V`` the valid mask;
- missing pixels are left out of the three sums of step 3.

With ``scale=1`` this is exactly FSS over the valid pixels only; missing pixels farther than ``scale − 1``
pixels (along rows or columns) from every event leave the FSS unchanged (nearer ones can share a window with
an event and change its fraction). (pysteps instead sets non-finite values to "no event" and keeps
them in the sums.) ``±inf`` are not missing: ``+inf`` is an event.

Differentiability
-----------------
With the default hard threshold the FSS is not differentiable (its result carries no gradient). Pass
``smooth=s > 0`` to use the soft indicator ``sigmoid((x − threshold)/s)`` instead; every later step (box filter,
sums, ratio) is a differentiable torch operation, so the "soft FSS" can serve as a training loss (``1 − fss``).
As ``s → 0`` it tends to the hard FSS, except at values exactly at the threshold (``sigmoid(0) = 1/2``: half an
event; e.g. zero rain at threshold 0). A field pair without any event (no value above the threshold, by the hard
rule, in either field: the hard denominator is 0) gives NaN with a zero gradient, as the hard FSS does
(``how="mean"`` leaves it out of the mean; ``"pooled"`` adds nothing for it), although its soft indicator is
nowhere exactly 0. A batch of dry pairs alone therefore has no soft FSS (NaN): a training loss should skip it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, ShapeError
from .categorical import _check_event, _check_threshold
from .continuous import _out, _pair, _valid

__all__ = ["fss", "fss_curve"]


def _box1d(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Window sum of length ``size`` along ``dim`` with zero padding and scipy's window placement."""
    x = x.movedim(dim, -1)
    left = size // 2
    right = size - 1 - left
    # one extra leading zero so that window sums are differences of the cumulative sum
    c = F.pad(x, (left + 1, right)).cumsum(-1)
    out = c[..., size:] - c[..., :-size]
    return out.movedim(-1, dim)


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """``scipy.ndimage.uniform_filter(x, size, mode="constant", cval=0)`` over the last two dimensions."""
    if size == 1:
        return x
    return _box1d(_box1d(x, size, -1), size, -2) / float(size * size)


def _check_scale(scale: Any, name: str = "scale") -> int:
    """A window size in pixels (FSS scale, CRPS pooling): a positive integer, else InputError naming ``name``."""
    if isinstance(scale, torch.Tensor):
        scale = scale.item()
    try:
        s = int(scale)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError(f"{name} must be a positive integer number of pixels, got {scale!r}") from exc
    if s != scale or s < 1:
        raise InputError(f"{name} must be a positive integer number of pixels, got {scale!r}")
    return s


def _fss_terms(
    ft: torch.Tensor,
    ot: torch.Tensor,
    threshold: float,
    scale: int,
    event: str,
    smooth: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-field numerator Σ(S_f − S_o)² and denominator Σ S_f² + Σ S_o² (shape ``ft.shape[:-2]``)."""
    valid = _valid(ft, ot)
    vf = valid.to(ft.dtype)
    zero = torch.zeros((), dtype=ft.dtype, device=ft.device)

    def hard(x: torch.Tensor) -> torch.Tensor:
        return (x >= threshold) if event == "ge" else (x > threshold)

    def indicator(x: torch.Tensor) -> torch.Tensor:
        if smooth is None:
            return hard(x).to(ft.dtype) * vf
        xs = torch.where(valid, x, zero)  # keep NaN out of the graph (no NaN gradients)
        return torch.where(valid, torch.sigmoid((xs - threshold) / smooth), zero)

    i_f, i_o = indicator(ft), indicator(ot)
    s_f = _box_mean(i_f, scale)
    s_o = _box_mean(i_o, scale)
    if not bool(valid.all()):
        # fraction among non-missing cells; outside-domain cells count as non-missing non-events
        frac_valid = 1.0 - _box_mean(1.0 - vf, scale)
        one = torch.ones((), dtype=ft.dtype, device=ft.device)
        denom = torch.where(valid, frac_valid, one)  # ≥ 1/scale² at valid pixels
        s_f = torch.where(valid, s_f / denom, zero)
        s_o = torch.where(valid, s_o / denom, zero)
    num = ((s_f - s_o) ** 2).sum(dim=(-2, -1))
    den = (s_f**2).sum(dim=(-2, -1)) + (s_o**2).sum(dim=(-2, -1))
    if smooth is not None:
        # the soft indicator is never exactly 0, so a pair without any (hard) event would get a number anywhere in
        # [0, 1]; it is undefined, as for the hard FSS (den = 0 -> NaN with a zero gradient in _ratio)
        has_event = ((hard(ft) | hard(ot)) & valid).flatten(-2).any(-1)
        num = torch.where(has_event, num, zero)
        den = torch.where(has_event, den, zero)
    return num, den


def _fss_t(
    f: Any,
    o: Any,
    threshold: Any,
    scale: Any,
    event: str,
    how: str | None,
    smooth: float | None,
) -> tuple[torch.Tensor, bool]:
    _check_event(event)
    thr = _check_threshold(threshold)
    s = _check_scale(scale)
    if how not in (None, "pooled", "mean"):
        raise InputError(f"how must be None, 'pooled' or 'mean', got {how!r}")
    if smooth is not None:
        try:
            ok = math.isfinite(float(smooth)) and float(smooth) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"smooth must be a positive number (or None for a hard threshold), got {smooth!r}")
    ft, ot, numpy_out = _pair(f, o)
    if ft.ndim < 2:
        raise ShapeError(f"fss needs fields of shape (..., H, W), got shape {tuple(ft.shape)}")
    num, den = _fss_terms(ft, ot, thr, s, event, None if smooth is None else float(smooth))
    if how == "pooled":
        val = 1.0 - _ratio(num.sum(), den.sum())
    elif how == "mean":
        val = torch.nanmean(1.0 - _ratio(num, den))
    else:
        val = 1.0 - _ratio(num, den)
    return val, numpy_out


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den``, NaN where ``den`` is 0 (no event in either field), with a zero gradient there: a plain
    division sent 0/0 = NaN gradients back through the other fields of a ``how="mean"`` loss."""
    ok = den > 0
    safe = torch.where(ok, den, torch.ones_like(den))
    return torch.where(ok, num / safe, torch.full_like(den, float("nan")))


def fss(
    f: Any,
    o: Any,
    threshold: float,
    scale: int,
    event: str = "ge",
    how: str | None = None,
    smooth: float | None = None,
) -> Any:
    """Fractions skill score of ``f`` against ``o`` for one threshold and one neighbourhood size.

    Parameters
    ----------
    f, o:
        Fields of shape ``(H, W)`` or stacks ``(..., H, W)`` (numpy or torch, same shape).
    threshold:
        Event threshold; the event is ``x >= threshold`` (pysteps' FSS convention) unless ``event="gt"``.
    scale:
        Side of the square window in pixels (int ≥ 1; 1 = no smoothing; even sizes allowed, windows placed as in
        ``scipy.ndimage.uniform_filter``).
    event:
        ``"ge"`` (default) or ``"gt"``.
    how:
        For stacks: ``None`` (default) returns one FSS per field (shape ``f.shape[:-2]``); ``"pooled"`` sums
        numerator and denominator over all fields before the ratio (pysteps' ``fss_accum`` over several
        fields); ``"mean"`` averages the per-field FSS ignoring NaN (fields without events).
    smooth:
        ``None`` for the hard event indicator; a positive number ``s`` uses ``sigmoid((x − threshold)/s)``
        (differentiable "soft FSS").

    Returns
    -------
    FSS in [0, 1], NaN when neither field has an event: python float / numpy array for numpy input, tensor for
    torch input. The full definition and the NaN convention are in :mod:`skydiff.verify.spatial`.
    """
    val, numpy_out = _fss_t(f, o, threshold, scale, event, how, smooth)
    return _out(val, numpy_out)


def fss_curve(
    f: Any,
    o: Any,
    threshold: float,
    scales: Sequence[int],
    event: str = "ge",
    how: str | None = None,
    smooth: float | None = None,
) -> Any:
    """FSS for several window sizes: ``fss(f, o, threshold, s, ...)`` for every ``s`` in ``scales``, stacked.

    Returns an array/tensor of shape ``(len(scales),) + fss_shape`` (``fss_shape`` is ``()`` for single
    fields or ``how="pooled"/"mean"``, ``f.shape[:-2]`` otherwise): a numpy array for numpy input, a tensor
    for torch input. A typical choice is ``scales = [2**k for k in range(8)]``.
    """
    if isinstance(scales, (str, bytes)) or not isinstance(scales, (Sequence, np.ndarray, torch.Tensor)):
        raise InputError(f"scales must be a sequence of window sizes (e.g. [1, 2, 4, 8]), got {scales!r}; for one "
                         "window size use fss()")
    scales = list(scales)
    if not scales:
        raise InputError("scales must contain at least one window size")
    vals = []
    numpy_out = True
    for s in scales:
        v, numpy_out = _fss_t(f, o, threshold, s, event, how, smooth)
        vals.append(v)
    out = torch.stack(vals)
    if numpy_out:
        return out.detach().cpu().numpy()
    return out
