"""Distribution scores for downscaled / generated fields: extreme percentiles, wet and negative fractions,
Q-Q quantiles and the Kolmogorov–Smirnov distance to N(0, 1), NaN-aware, in torch.

All functions pool every valid (non-NaN) value of their input(s), over all dimensions (members, times, pixels).
Where ``pred`` and ``obs`` are on the same pixels — the same shape, or an ensemble ``(M, *obs.shape)`` — a pixel
counts only where both are valid (an obs pixel where every member is NaN is left out too), as in the rest of
:mod:`skydiff.verify`; inputs of unrelated shapes are pooled each on its own. Percentiles and quantiles use linear
interpolation between order statistics, numpy's default (``numpy.nanpercentile(..., method="linear")``), computed
with a sort so that they also work on inputs larger than :func:`torch.quantile` accepts. Outputs follow
:mod:`skydiff.verify.continuous`: numpy in → python float / numpy array out; torch in → tensor on the inputs'
device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._compat import tensor_numpy
from ..errors import InputError, ShapeError
from .categorical import _check_threshold
from .continuous import _device_of, _float_tensor, _is_torch, _nan, _out

__all__ = [
    "percentile_bias",
    "wet_fraction",
    "negative_fraction",
    "ks_normal",
    "qq",
    "QQ_LEVELS",
]

#: Default probability levels of :func:`qq` (as in the downscaling literature's Q-Q plots).
QQ_LEVELS: tuple[float, ...] = (0.5, 0.9, 0.95, 0.99, 0.999, 0.9999)


def _valid_flat(x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1)
    return flat[~torch.isnan(flat)]


def _levels(levels: Any, name: str = "levels") -> torch.Tensor:
    arr = np.atleast_1d(np.asarray(tensor_numpy(levels), dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D sequence of probabilities, got {levels!r}")
    if not np.all((arr >= 0) & (arr <= 1)):
        raise InputError(f"{name} must lie in [0, 1], got {arr.tolist()}")
    return torch.from_numpy(arr)


def _quantiles(values: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Linear-interpolation quantiles (numpy's default) of a 1-D NaN-free tensor; NaN for an empty one."""
    n = values.numel()
    probs = probs.to(device=values.device, dtype=values.dtype)
    if n == 0:
        return torch.full(probs.shape, float("nan"), dtype=values.dtype, device=values.device)
    xs, _ = torch.sort(values)
    pos = probs * (n - 1)
    lo = torch.floor(pos).long().clamp(0, n - 1)
    hi = torch.clamp(lo + 1, max=n - 1)
    frac = pos - lo.to(values.dtype)
    return xs[lo] + frac * (xs[hi] - xs[lo])


def _joint_valid(p: torch.Tensor, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The values of ``p`` and ``o`` to pool: masked jointly where they lie on the same pixels (same shape, or
    ``p`` an ensemble ``(M, *o.shape)``), else each on its own."""
    if o.ndim and o.numel() and p.shape[p.ndim - o.ndim:] == o.shape and p.ndim in (o.ndim, o.ndim + 1):
        on, pn = torch.isnan(o), torch.isnan(p)
        pv = p[~pn & ~on.expand_as(p)]
        p_any = (~pn).reshape(-1, *o.shape).any(0)
        return pv, o[~on & p_any]
    return _valid_flat(p), _valid_flat(o)


def _single(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    return _float_tensor(x, name), not _is_torch(x)


def percentile_bias(
    pred: Any, obs: Any, q: float | Sequence[float] = (99, 99.9), *, wet_only: bool = False, threshold: float = 0.1
) -> dict[str, Any]:
    """Relative bias of extreme percentiles, ``(p_q(pred) − p_q(obs)) / p_q(obs)``.

    Parameters
    ----------
    pred, obs:
        Arrays/tensors in mm/h, e.g. ``pred`` an ensemble ``(M, T, H, W)`` and ``obs`` ``(T, H, W)``: all valid
        values pooled, a pixel counted only where both are valid (see the module docstring).
    q:
        Percentile(s) in [0, 100].
    wet_only:
        ``False`` (default): percentiles of all values (dry pixels included). ``True``: of the wet values
        ``≥ threshold`` only (each input its own wet values).
    threshold:
        Wet threshold in mm/h for ``wet_only``.

    Returns
    -------
    dict
        ``{"p99": bias, "p99.9": bias, ...}`` (key ``f"p{q:g}"``), relative (0.05 = 5 % too high); NaN where
        the observed percentile is 0 or no value is valid.
    """
    numpy_out = not _is_torch(pred, obs)
    threshold = _check_threshold(threshold)
    device = _device_of(pred, obs)
    p = _float_tensor(pred, "pred", device)
    o = _float_tensor(obs, "obs", device)
    dtype = torch.promote_types(p.dtype, o.dtype)
    qs = np.atleast_1d(np.asarray(tensor_numpy(q), dtype=np.float64))
    if qs.ndim != 1 or qs.size == 0 or not np.all((qs >= 0) & (qs <= 100)):
        raise InputError(f"q must be percentile(s) in [0, 100], got {q!r}")
    probs = torch.from_numpy(qs / 100.0)
    pv, ov = _joint_valid(p.to(dtype), o.to(dtype))
    if wet_only:
        pv, ov = pv[pv >= threshold], ov[ov >= threshold]
    qp, qo = _quantiles(pv, probs), _quantiles(ov, probs)
    nan = torch.full((), float("nan"), dtype=dtype, device=qo.device)
    rel = torch.where(qo != 0, (qp - qo) / torch.where(qo != 0, qo, torch.ones_like(qo)), nan)
    return {f"p{float(v):g}": _out(rel[i], numpy_out) for i, v in enumerate(qs)}


def wet_fraction(x: Any, threshold: float = 0.1) -> Any:
    """Fraction of the valid (non-NaN) values that are wet, ``x ≥ threshold`` (mm/h); NaN if none is valid."""
    threshold = _check_threshold(threshold)
    t, numpy_out = _single(x, "x")
    v = _valid_flat(t)
    frac = (v >= threshold).to(t.dtype).mean() if v.numel() else _nan(t)
    return _out(frac, numpy_out)


def negative_fraction(x: Any) -> Any:
    """Fraction of the valid (non-NaN) values that are negative, ``x < 0``; NaN if none is valid."""
    t, numpy_out = _single(x, "x")
    v = _valid_flat(t)
    frac = (v < 0).to(t.dtype).mean() if v.numel() else _nan(t)
    return _out(frac, numpy_out)


def ks_normal(x: Any) -> Any:
    """Kolmogorov–Smirnov distance of the valid values of ``x`` to the standard normal N(0, 1).

    ``D = sup_z |F_n(z) − Φ(z)|`` with ``F_n`` the empirical CDF of all valid (non-NaN) values pooled; the same
    statistic as ``scipy.stats.kstest(x, "norm").statistic``. Ties (e.g. many identical values of dry pixels)
    are handled exactly: the jump of ``F_n`` at a tied value counts in full. NaN if no value is valid.
    """
    t, numpy_out = _single(x, "x")
    v = _valid_flat(t)
    n = v.numel()
    if n == 0:
        return _out(_nan(t), numpy_out)
    xs, _ = torch.sort(v.to(torch.float64))
    cdf = torch.special.ndtr(xs)
    i = torch.arange(1, n + 1, dtype=torch.float64, device=xs.device)
    d_plus = (i / n - cdf).max()
    d_minus = (cdf - (i - 1) / n).max()
    d = torch.maximum(d_plus, d_minus).to(t.dtype)
    return _out(d, numpy_out)


def qq(pred: Any, obs: Any = "normal", levels: Any = QQ_LEVELS) -> tuple[Any, Any]:
    """Quantiles of ``pred`` and of ``obs`` at the same probability levels, for a Q-Q plot.

    Parameters
    ----------
    pred:
        Array/tensor of any shape (all valid values pooled).
    obs:
        Array/tensor (pooled with ``pred``'s NaN mask where on the same pixels, see the module docstring), or
        ``"normal"`` for the quantiles ``Φ⁻¹(level)`` of
        N(0, 1) (to check that pseudo-precipitation is standard normal).
    levels:
        Probabilities in [0, 1] (default :data:`QQ_LEVELS`: 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999), or an int
        ``n`` for ``n`` evenly spaced plotting positions ``(i − 0.5) / n``.

    Returns
    -------
    (q_pred, q_obs)
        1-D arrays/tensors of ``len(levels)`` values (NaN when an input has no valid value).
    """
    numpy_out = not _is_torch(pred) and not (_is_torch(obs) if not isinstance(obs, str) else False)
    if isinstance(levels, (int, np.integer)) and not isinstance(levels, bool):
        if levels < 1:
            raise InputError(f"levels as an int must be ≥ 1, got {levels}")
        probs = (torch.arange(int(levels), dtype=torch.float64) + 0.5) / int(levels)
    else:
        probs = _levels(levels)
    if isinstance(obs, str):
        if obs != "normal":
            raise InputError(f"obs must be an array/tensor or 'normal', got {obs!r}")
        p = _float_tensor(pred, "pred")
        qp = _quantiles(_valid_flat(p), probs)
        qo = torch.special.ndtri(probs.to(torch.float64)).to(device=p.device, dtype=p.dtype)
        return _out(qp, numpy_out), _out(qo, numpy_out)
    device = _device_of(pred, obs)
    p = _float_tensor(pred, "pred", device)
    o = _float_tensor(obs, "obs", device)
    if p.numel() == 0 or o.numel() == 0:
        raise ShapeError("pred and obs must not be empty")
    dtype = torch.promote_types(p.dtype, o.dtype)
    pv, ov = _joint_valid(p.to(dtype), o.to(dtype))
    return _out(_quantiles(pv, probs), numpy_out), _out(_quantiles(ov, probs), numpy_out)
