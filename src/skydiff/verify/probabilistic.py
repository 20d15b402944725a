"""Ensemble scores: continuous ranked probability score (CRPS), point-wise and pooled, NaN-aware, in torch.

For an ensemble ``x_1 … x_M`` and an observation ``y`` the CRPS of the empirical distribution is estimated with
one of two estimators (name the one you report):

- ``"nrg"`` (energy form; equal to ``properscoring.crps_ensemble`` and ``scoringrules`` ``estimator="nrg"``)::

      CRPS = (1/M) Σ_i |x_i − y| − 1/(2 M²) Σ_i Σ_j |x_i − x_j|

- ``"fair"`` (default; unbiased for a finite ensemble, Ferro 2014; ``scoringrules`` ``estimator="fair"``)::

      CRPS = (1/M) Σ_i |x_i − y| − 1/(2 M (M − 1)) Σ_i Σ_j |x_i − x_j|

The double sum is evaluated in ``O(M log M)`` from the sorted members,
``Σ_i Σ_j |x_i − x_j| = 2 Σ_k (2k − M − 1) x_(k)`` (``k = 1 … M``), which is exact and differentiable
(``torch.sort`` passes gradients to the members).

Missing data: a point whose observation or any member is NaN is left out (not counted). Infinite values count:
a point where the observation or a member is ±inf scores +inf (0 where all are the same infinity), so that a
diverged member shows as an infinite mean, not as a NaN that reads like "no valid point". Inputs may be numpy
arrays or torch tensors; the output follows the conventions of :mod:`skydiff.verify.continuous` (numpy in →
python float / numpy array out; torch in → tensor on the inputs' device).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError, ShapeError
from .continuous import _device_of, _float_tensor, _is_torch, _nan, _out
from .spatial import _check_scale

__all__ = ["crps_ensemble", "crps_pooled", "CRPS_ESTIMATORS"]

#: Estimators accepted by :func:`crps_ensemble`.
CRPS_ESTIMATORS = ("fair", "nrg")


def _members_obs(
    members: Any, obs: Any, member_dim: int
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(members moved to dim 0, obs, numpy_out)`` with a common dtype/device; shapes checked."""
    numpy_out = not _is_torch(members, obs)
    device = _device_of(members, obs)
    m = _float_tensor(members, "members", device)
    o = _float_tensor(obs, "obs", device)
    if m.ndim < 1:
        raise ShapeError("members must have a member dimension, got a scalar")
    if isinstance(member_dim, bool) or not isinstance(member_dim, (int, np.integer)):
        raise InputError(f"member_dim must be an integer axis, got {member_dim!r}")
    if not -m.ndim <= int(member_dim) < m.ndim:
        raise ShapeError(f"member_dim={member_dim} is out of range for members of shape {tuple(m.shape)}")
    m = torch.movedim(m, int(member_dim), 0)
    if tuple(m.shape[1:]) != tuple(o.shape):
        raise ShapeError(
            f"members without the member dimension must have the shape of obs: members {tuple(m.shape)} "
            f"(member_dim={member_dim} moved first) vs obs {tuple(o.shape)}"
        )
    dtype = torch.promote_types(m.dtype, o.dtype)
    return m.to(dtype), o.to(dtype), numpy_out


def _crps_points(m: torch.Tensor, o: torch.Tensor, estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Point-wise CRPS (NaN where masked) and the validity mask; ``m`` is ``(M, ...)``."""
    if estimator not in CRPS_ESTIMATORS:
        raise InputError(f"estimator must be one of {CRPS_ESTIMATORS}, got {estimator!r}")
    n_mem = m.shape[0]
    if n_mem < 1:
        raise ShapeError("members has an empty member dimension")
    if estimator == "fair" and n_mem < 2:
        raise InputError("the fair CRPS needs at least 2 members; use estimator='nrg' for a single member")
    valid = ~(torch.isnan(o) | torch.isnan(m).any(0))
    infinite = valid & (torch.isinf(o) | torch.isinf(m).any(0))
    zero = torch.zeros((), dtype=m.dtype, device=m.device)
    # masked and infinite points are zeroed before the arithmetic so that gradients stay finite (inf - inf is NaN)
    finite = valid & ~infinite
    mz = torch.where(finite, m, zero)
    oz = torch.where(finite, o, zero)
    skill = (mz - oz).abs().mean(0)
    xs, _ = torch.sort(mz, dim=0)
    # Σ_i Σ_j |x_i − x_j| = 2 Σ_k w_k x_(k) with w_k = 2k − M − 1 (x sorted). Members of equal value share the mean
    # weight of their run (the value is the same): their gradients are equal, as |x_i − x_j|'s is 0 at a tie,
    # instead of one member pushed up and the other down by the sort order
    runs = xs.detach().movedim(0, -1).contiguous()
    first = torch.searchsorted(runs, runs, right=False)  # members below, and below or equal
    upto = torch.searchsorted(runs, runs, right=True)
    w = (first + upto - n_mem).to(m.dtype).movedim(-1, 0)
    pair_sum = 2.0 * (w * xs).sum(0)
    denom = 2.0 * n_mem * n_mem if estimator == "nrg" else 2.0 * n_mem * (n_mem - 1)
    crps = skill - pair_sum / denom
    if bool(infinite.any()):  # the CDFs differ over an infinite range unless all are the same infinity
        same = (m == o).all(0)
        crps = torch.where(infinite, torch.where(same, zero, torch.full_like(crps, float("inf"))), crps)
    return torch.where(valid, crps, _nan(m)), valid


def _reduced(crps: torch.Tensor, valid: torch.Tensor, reduce: bool, numpy_out: bool) -> Any:
    """The point-wise CRPS (``reduce=False``) or its mean over the valid points (NaN when there is none)."""
    if not reduce:
        return _out(crps, numpy_out)
    n = valid.sum()
    total = torch.where(valid, crps, torch.zeros((), dtype=crps.dtype, device=crps.device)).sum()
    mean = total / n.to(crps.dtype) if int(n) > 0 else total * float("nan")  # (NaN, still on the graph)
    return _out(mean, numpy_out)


def crps_ensemble(
    members: Any,
    obs: Any,
    *,
    estimator: str = "fair",
    member_dim: int = 0,
    reduce: bool = True,
) -> Any:
    """Continuous ranked probability score of an ensemble against observations.

    Parameters
    ----------
    members:
        Ensemble, array/tensor of shape ``obs.shape`` with one extra member dimension at ``member_dim``
        (e.g. ``(M, T, H, W)`` for ``obs`` of shape ``(T, H, W)``); same units as ``obs`` (e.g. mm/h).
    obs:
        Observations (any shape, including a scalar).
    estimator:
        ``"fair"`` (default, unbiased for finite ``M``; needs ``M ≥ 2``) or ``"nrg"`` (the energy form, equal
        to ``properscoring.crps_ensemble``). See :mod:`skydiff.verify.probabilistic`.
    member_dim:
        Position of the member dimension in ``members``.
    reduce:
        ``True`` (default): the mean over all valid points (a point is valid when neither the observation nor
        any member is NaN); NaN when no point is valid. ``False``: the point-wise CRPS of shape ``obs.shape``,
        NaN at invalid points.

    Returns
    -------
    float / numpy array for numpy input, tensor (inputs' device and dtype; float16/bfloat16 are computed and
    returned in float32) for torch input; units of ``obs``.
    Differentiable with respect to the members (and the observation).
    """
    m, o, numpy_out = _members_obs(members, obs, member_dim)
    crps, valid = _crps_points(m, o, estimator)
    return _reduced(crps, valid, reduce, numpy_out)


def _pool2d(x: torch.Tensor, pool: int, how: str, stride: int) -> torch.Tensor:
    """``pool × pool`` pooling of the last two dimensions every ``stride`` pixels (windows that do not fit dropped).

    A window containing a NaN gives NaN (it is then left out by the CRPS)."""
    x = x.unfold(-2, pool, stride).unfold(-2, pool, stride)  # (..., rows, columns, pool, pool), a view
    if how == "avg":
        return x.mean(dim=(-2, -1))
    # the maximum of the window without its NaN, then NaN for a window that has one: amax over a NaN window sent
    # 0/0 = NaN gradients to all its pixels (its backward spreads over the pixels equal to the NaN maximum)
    nan = torch.isnan(x)
    m = torch.where(nan, torch.full_like(x, float("-inf")), x).amax(dim=(-2, -1))
    return torch.where(nan.any(dim=-1).any(dim=-1), torch.full_like(m, float("nan")), m)


def crps_pooled(
    members: Any,
    obs: Any,
    pool: int = 4,
    how: str = "avg",
    estimator: str = "fair",
    *,
    member_dim: int = 0,
    reduce: bool = True,
    stride: int | None = None,
) -> Any:
    """CRPS after pooling members and observation over ``pool × pool`` windows (non-overlapping by default).

    After the "pooled CRPS" of Ravuri et al. (2021, DGMR) and Harris et al. (2022): it scores the spatial
    structure of the ensemble, not only its point-wise distribution. Harris et al.'s code pools *overlapping*
    windows (stride 2 for 4 × 4, stride 4 for 16 × 16) and reports the ``"nrg"`` estimator: pass ``stride`` and
    ``estimator="nrg"`` to compare with their figures (the default, non-overlapping windows, differs from theirs by
    a few per cent at 16 × 16). For downscaling from block means, average
    pooling at a multiple of the factor scores only how far the members' block means drift from the input (the
    pooled truth *is* the input); the maximum (``how="max"``) then measures structure.

    Parameters
    ----------
    members, obs:
        As for :func:`crps_ensemble`; the last two dimensions are the grid ``(H, W)``, so ``obs`` must be at
        least 2-D.
    pool:
        Window size in pixels (e.g. 4 or 16). When ``H`` or ``W`` is not a multiple of ``pool`` the trailing
        rows/columns that do not fill a window are left out (like ``torch.nn.functional.avg_pool2d``).
    how:
        ``"avg"`` (mean over the window) or ``"max"`` (maximum over the window). A window that contains a NaN
        (in the observation or a member) is left out.
    estimator, member_dim, reduce:
        As for :func:`crps_ensemble` (``reduce=False`` returns the pooled point-wise CRPS,
        ``(..., (H - pool) // stride + 1, (W - pool) // stride + 1)``).
    stride:
        Pixels between windows; ``None`` (default): ``pool`` (non-overlapping windows).
    """
    if how not in ("avg", "max"):
        raise InputError(f"how must be 'avg' or 'max', got {how!r}")
    p = _check_scale(pool, "pool")
    s = p if stride is None else _check_scale(stride, "stride")
    m, o, numpy_out = _members_obs(members, obs, member_dim)
    if o.ndim < 2:
        raise ShapeError(f"obs must have a grid (..., H, W) for pooling, got shape {tuple(o.shape)}")
    if o.shape[-1] < p or o.shape[-2] < p:
        raise ShapeError(f"pool={p} is larger than the grid {tuple(o.shape[-2:])}")
    mp, op = _pool2d(m, p, how, s), _pool2d(o, p, how, s)
    crps, valid = _crps_points(mp, op, estimator)
    return _reduced(crps, valid, reduce, numpy_out)
