"""4D-Var motion estimation by automatic differentiation (Filoche, Charantonis, Béréziat & Brajard).

:func:`fourdvar` estimates the motion field of a short image sequence (typically 4 radar frames, 15 minutes)
by variational data assimilation of an advection model, as in §2.2 and §3 of *Variational assimilation of
geophysical images leveraging deep learning tools*:

State and model (§3.2)
    ``X = (w, I)``: the motion field ``w`` (2, H, W) and a passive tracer ``I`` (H, W) in a transformed
    intensity space. One model step of length ``dt`` (a fraction of the mean frame interval) advects the
    stacked fields ``[I, u, v]`` along ``w`` with :func:`skydiff.advect` (backward semi-Lagrangian, midpoint
    rule, bilinear, ``outval="edge"``): ``I_t + w . grad I = 0`` and ``w_t + w . grad w = 0``. ``n_substeps``
    model steps (default 5) are taken per mean observation interval, so 4 frames -> 15 steps. ``outval="edge"``
    gives inflow points the nearest edge value, so the boundary does not pull ``w`` (or ``I``) toward a
    constant (the paper's ``w = 0`` on the boundary would bias the motion of rain that enters the domain).
    On the CPU the whole trajectory runs as one autograd node (:func:`skydiff.advection.advect_trajectory`:
    the same numba kernels, forward once and the exact adjoint swept back once per cost evaluation).

Observations and time
    ``H X_t = I_t`` at the observation times. ``times`` (any unit, e.g. minutes, or ``datetime64``) may be
    irregular; they are converted to fractions ``tau`` of the mean interval ``(t_last - t_0) / (T - 1)``, and
    each interval is split into ``max(1, round(n_substeps * (tau_{i+1} - tau_i)))`` equal model steps. The
    velocity is therefore in **pixels per mean frame interval** ([0] = x/columns, [1] = y/rows, pysteps'
    convention). NaN (no data) pixels have zero weight in the cost. (Through
    ``skydiff.motion.estimate(frames, method="4dvar")`` the registry's checks and dB transform come first, and
    they set no-data pixels to -15 dBR as for every method, so there they count as dry.)

Cost (§2.2, §3.3), everything divided by the number of pixels N (a per-pixel mean, so the same weights hold at
every level of the multiscale pyramid and for any grid size)::

    J = 1/N [ 1/2 sum_t sum_px r_t (I_t - Y_t)^2 / sigma^2                       (observations, R^-1)
            + 1/2 alpha ||grad w_0||^2 + 1/2 beta ||div w_0||^2                  (background, B^-1)
            + 1/2 sum_k (q_alpha ||grad eta_k||^2 + q_beta ||div eta_k||^2 + q_gamma ||eta_k||^2) ]  (Q^-1)

- ``X_b = (0, Y_0)``: B^-1 on ``w`` is the paper's Tikhonov smoothness (Toeplitz B^-1): only derivatives of
  ``w_0`` are penalised, not its magnitude. The intensity part of the background is the first frame; its
  misfit ``||I_0 - Y_0||`` with the weights of R is the t = 0 observation term (counted once).
- R^-1 = ``r_t / sigma^2``: ``r = 1`` at wet pixels of ``Y_t`` (above the data minimum, i.e. >= 0.1 mm/h with
  the dB transform), ``dry_weight`` (default 0.1) at dry pixels, 0 at NaN pixels and (``mask_inflow``) at
  pixels whose model trajectory comes in through the boundary. Rain pixels carry the motion information; on a
  mostly dry radar image the flat dry area would otherwise dominate the sum. (On KNMI crops the skill was the
  same for dry weights 0.03 ... 0.3.) ``sigma`` (default 1) is in the working units (dBR by default).
- Inflow mask (``mask_inflow=True``): where the trajectory of a pixel starts outside the domain, the model
  can only fill in edge values while the radar sees rain that came from outside; such residuals would bend
  ``w`` near the upstream boundary. As VET masks departure points outside the grid, these pixels are left
  out: a tracer that is 1 inside and 0 on the border ring is run through the model with the first guess of
  each level, and pixels where it is < 1/2 at an observation time get zero weight (fixed during the level, so
  the cost stays smooth; the coarsest level is solved once without, then once with its own mask). On 11
  KNMI crops this lowered the +5/+10/+15 min RMSE from 0.291/0.419/0.497 to 0.269/0.396/0.481 mm/h. The
  tracer also starts at 0 where the first frame has no data (NaN): rain coming out of a no-data area is as
  unknowable as rain from outside (on synthetic cases with an upstream no-data band the mean motion error fell
  from 0.49-0.55 to 0.29-0.33 px). The motion registry (``estimate(..., "4dvar")``) fills no-data with the dry
  value before calling, so this applies to ``fourdvar()`` given NaN (and ``skydiff assimilate``).
- Differences are compact forward differences with zero-flux (Neumann) edges: ``||grad w||^2 = sum (w[i+1] -
  w[i])^2`` over both axes, and a staggered divergence. (The centred differences of
  :func:`skydiff.operators.gradient_norm` leave the 2-pixel checkerboard of ``w`` unpenalised -- its
  centred derivative is zero -- which an L-BFGS solution can pick up; the compact stencil has only
  constants in its null space.)
- ``constraint="strong"``: perfect model, ``eta = 0``; controls ``w_0`` (and ``I_0``).
  ``constraint="weak"``: a model-error field ``eta_k`` (2, H, W) is added to ``w`` after every model step but
  the last (``K - 1`` fields), so that the motion may change in time; Q^-1 penalises its roughness,
  divergence and magnitude (``q_gamma > 0`` makes Q^-1 definite, else a uniform acceleration would be free).

Intensity space
    ``transform="db"`` (default): mm/h -> dBR with the registry's convention (``10 log10 R`` for ``R >= 0.1``
    mm/h, else -15 dBR; :mod:`skydiff.motion.interface`), the same input VET and LK get; the default weights
    are tuned for this (like VET's ``smooth_gain``). ``transform=None``: the values are used as they are
    (e.g. already dBR/dBZ; NaN still masked); adapt ``sigma`` to other units.

Controls and optimisation
    ``optimize_init=True`` (default, as in the paper): ``I_0`` is a control too, initialised to the first
    frame. The semi-Lagrangian model smooths the tracer a little at every step; a free ``I_0`` absorbs that
    (and noise in the first frame) instead of distorting ``w``. It costs about 3x more iterations, but on the
    KNMI crops it gave RMSE 0.269/0.396/0.481 against 0.287/0.414/0.495 mm/h with ``I_0`` fixed.
    L-BFGS (``torch.optim.LBFGS``, strong-Wolfe line search, history 10) runs on a coarse-to-fine pyramid
    (``levels`` levels of NaN-aware 2x2 average pooling, default 4, coarsest >= 16 px). The coarse ``w`` (and
    ``eta``) is upsampled bilinearly x2 in size and multiplied by 2, the coarse correction ``I_0 - Y_0`` is
    upsampled and added to the finer first frame; coarse levels of the strong constraint use
    ``ceil(n_substeps / 2**level)`` steps per interval. Each level stops after ``max_iter`` iterations, when
    the largest per-pixel gradient component is <= ``gtol``, or when the best cost decreased by less than
    ``ftol`` (relative, default 3e-3) over the last 5 iterations; the parameters are left at the best point
    evaluated. On a 128 x 128 KNMI crop the pyramid is about 4x faster than a single level and more accurate
    (a single level stops in a worse local minimum when the rain moves several pixels per frame), see
    ``benchmarks/fourdvar_knmi.py``. By default (``finest_level=1``) the optimisation stops at half resolution:
    the motion field is smooth on the 2-pixel scale, and on the KNMI crops and full grid the full-resolution
    iterations (most of them spent on fine detail of ``I_0``) changed RMSE by <= 0.003 mm/h and CSI by <= 0.003
    while taking 2/3 of the time. ``finest_level=0`` minimises the full-resolution cost too.
    The problem is solved on the bounding box of the pixels that have data (plus 8 px, ``crop=True``; on the
    KNMI grid 433 x 435 of 765 x 700); outside it the motion is continued with edge values.

Defaults were chosen on KNMI 2010-08-26 before 05:00 UTC (11 crops of 128 x 128, 4 frames, +5/+10/+15 min
extrapolation skill): ``alpha = 300, beta = 100`` (100/30 and 300/0 gave the same skill, 1000/300 slightly
worse at +5 min); the benchmark reports the later, unseen part of the day.

The returned :class:`FourDVarResult` holds the velocity (``w`` at the last observation time by default, the
natural starting point of an extrapolation nowcast; ``velocity_at="first"`` gives ``w_0``), the trajectory of
``w`` and ``I`` at the observation times, the cost history and the per-level diagnostics. A run stopped by
``max_iter`` (or by the evaluation limit or a failed line search) returns its result with ``converged=False``
and a :class:`~skydiff.errors.SkydiffWarning`.

:func:`fourdvar_reference` is the plain autodiff implementation of the paper: the same cost, but a model
step written with pure torch indexing/gather bilinear interpolation (no :func:`skydiff.advect`), full
resolution only, no multiscale, no cropping. It exists for the speed comparison in
``benchmarks/fourdvar_knmi.py`` and as an independent check of the model (the tests compare both costs).

Device and dtype follow the input: CPU computations run in float64 (with skydiff's numba kernels float64 is
faster than float32, and L-BFGS is more robust); CUDA tensors keep their floating dtype.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as nnf

from .._compat import tensor_numpy
from ..advection import advect, advect_trajectory
from ..errors import InputError, ShapeError, positive_finite, warn
from . import interface

__all__ = ["FourDVarResult", "LevelInfo", "fourdvar", "fourdvar_reference"]

_CONSTRAINTS = ("strong", "weak")


# --------------------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------------------


_NOT_OPTIMISED = "not optimised"  # status of the pyramid levels below finest_level (cost evaluated only)


@dataclass
class LevelInfo:
    """Diagnostics of one level of the coarse-to-fine pyramid (level 0 = full resolution)."""

    level: int
    shape: tuple[int, int]
    n_iter: int
    n_eval: int
    cost_initial: float
    cost_final: float
    converged: bool
    status: str
    time_s: float

    @property
    def optimised(self) -> bool:
        """False for the levels below ``finest_level``, whose cost was only evaluated."""
        return not self.status.startswith(_NOT_OPTIMISED)


@dataclass
class FourDVarResult:
    """Result of :func:`fourdvar`.

    Attributes
    ----------
    velocity
        ``(2, H, W)`` pixels per mean frame interval, [0] = x, [1] = y; numpy float64 for numpy input, a tensor
        on the input's device (and floating dtype) for torch input.
    trajectory_w, trajectory_I
        ``(T, 2, H, W)`` motion and ``(T, H, W)`` tracer (in the working space, e.g. dBR) of the analysis at the
        observation times (same array type as ``velocity``).
    times
        Observation times as fractions of the mean interval (``tau``, starting at 0).
    cost_history
        Cost after every L-BFGS iteration of the finest optimised level (the first entry is its initial cost);
        with ``finest_level > 0`` the full-resolution cost of the upsampled solution is appended.
    cost_terms
        The final cost split into ``"obs"``, ``"background"`` and ``"model"`` parts.
    n_iter, n_eval
        L-BFGS iterations and cost evaluations, summed over all levels.
    converged, status
        Whether the finest level stopped on a tolerance (``status`` says which) or on a limit.
    time_s
        Wall-clock seconds of the whole estimate.
    levels
        One :class:`LevelInfo` per level, coarsest first.
    """

    velocity: Any
    trajectory_w: Any
    trajectory_I: Any
    times: np.ndarray
    cost_history: list[float]
    cost_terms: dict[str, float]
    n_iter: int
    n_eval: int
    converged: bool
    status: str
    time_s: float
    levels: list[LevelInfo] = field(default_factory=list)
    constraint: str = "strong"
    eval_times: list[float] = field(default_factory=list, repr=False)
    eval_costs: list[float] = field(default_factory=list, repr=False)

    @property
    def finest_optimised(self) -> LevelInfo | None:
        """The finest level L-BFGS ran on (the one ``cost_history`` follows)."""
        return next((lv for lv in reversed(self.levels) if lv.optimised), None)

    @property
    def full_resolution_cost(self) -> float | None:
        """With ``finest_level > 0``: the cost of the upsampled solution at full resolution (the last entry of
        ``cost_history``, another cost function than the iterations before it); else None."""
        return self.cost_history[-1] if self.levels and not self.levels[-1].optimised else None

    @property
    def iteration_costs(self) -> list[float]:
        """``cost_history`` without the appended full-resolution cost: the finest optimised level's iterations."""
        return self.cost_history[:-1] if self.full_resolution_cost is not None else list(self.cost_history)


# --------------------------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------------------------


def _frames_array(frames: Any) -> np.ndarray:
    arr = interface._as_numpy(frames)
    if arr.ndim == 2:
        raise ShapeError(f"4dvar: need at least 2 frames as an array (T, H, W), got a single 2-D field {arr.shape}")
    if arr.ndim != 3:
        raise ShapeError(f"4dvar: frames must have shape (T, H, W), got {arr.ndim}-D shape {arr.shape}")
    t, h, w = arr.shape
    if t < 2:
        raise InputError(f"4dvar: need at least 2 frames, got {t}")
    if h < 4 or w < 4:
        raise ShapeError(f"4dvar: frames must be at least 4 x 4 pixels, got {h} x {w}")
    return arr


def _times_tau(times: Any, n: int) -> np.ndarray:
    """Observation times -> fractions of the mean interval, starting at 0."""
    if times is None:
        return np.arange(n, dtype=np.float64)
    arr = tensor_numpy(times)
    if arr.dtype.kind == "M":
        arr = (arr - arr.reshape(-1)[0]) / np.timedelta64(1, "s")
    elif arr.dtype.kind == "m":
        arr = arr / np.timedelta64(1, "s")
    try:
        arr = np.asarray(arr, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"4dvar: times must be numbers or datetime64 values, got {times!r}") from None
    if arr.ndim != 1 or arr.size != n:
        raise ShapeError(f"4dvar: times must be a 1-D sequence with one time per frame ({n}), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"4dvar: times must be finite, got {arr.tolist()}")
    if np.any(np.diff(arr) <= 0):
        raise InputError(f"4dvar: times must be strictly increasing, got {arr.tolist()}")
    mean_dt = (arr[-1] - arr[0]) / (n - 1)
    return (arr - arr[0]) / mean_dt


def _schedule(tau: np.ndarray, n_substeps: int) -> tuple[list[float], list[int]]:
    """Model step lengths and, for every observation after the first, the number of steps done when it is seen."""
    dts: list[float] = []
    obs_after: list[int] = []
    for a, b in zip(tau[:-1], tau[1:]):
        m = max(1, int(round(n_substeps * (b - a))))
        dts.extend([(b - a) / m] * m)
        obs_after.append(len(dts))
    return dts, obs_after


# --------------------------------------------------------------------------------------------------------------
# cost function
# --------------------------------------------------------------------------------------------------------------


def _grad_sq(w: torch.Tensor) -> torch.Tensor:
    """Sum of squared compact forward differences of every channel (zero-flux edges)."""
    dx = w[..., :, 1:] - w[..., :, :-1]
    dy = w[..., 1:, :] - w[..., :-1, :]
    return dx.square().sum() + dy.square().sum()


def _div_sq(w: torch.Tensor) -> torch.Tensor:
    """Sum of the squared staggered divergence du/dx + dv/dy (forward differences) over the interior cells."""
    du = w[..., 0, :-1, 1:] - w[..., 0, :-1, :-1]
    dv = w[..., 1, 1:, :-1] - w[..., 1, :-1, :-1]
    return (du + dv).square().sum()


def _skydiff_step(X: torch.Tensor, dt: float) -> torch.Tensor:
    """One model step: advect [I, u, v] (1, 3, H, W) along w = X[:, 1:] with skydiff.advect."""
    return advect(X, X[:, 1:], [dt], outval="edge")[:, 0]


class _Cost:
    """The 4D-Var cost at one resolution.

    ``obs`` (T, H, W) observations in the working space (NaN filled), ``weights`` (T, H, W) = R^-1 * sigma^2
    (0 at NaN), ``dts``/``obs_after`` from :func:`_schedule`. ``step(X, dt)`` is the model step (skydiff's by
    default, the reference's in :func:`fourdvar_reference`).
    """

    def __init__(
        self,
        obs: torch.Tensor,
        weights: torch.Tensor,
        dts: Sequence[float],
        obs_after: Sequence[int],
        *,
        alpha: float,
        beta: float,
        sigma: float = 1.0,
        q_alpha: float = 0.0,
        q_beta: float = 0.0,
        q_gamma: float = 0.0,
        step: Callable[[torch.Tensor, float], torch.Tensor] = _skydiff_step,
    ) -> None:
        self.obs = obs
        self.weights = weights / float(sigma) ** 2
        self.dts = list(dts)
        self.obs_after = list(obs_after)
        self.alpha, self.beta = float(alpha), float(beta)
        self.q_alpha, self.q_beta, self.q_gamma = float(q_alpha), float(q_beta), float(q_gamma)
        self.step = step
        self.n_pix = obs.shape[-2] * obs.shape[-1]

    @property
    def n_model_errors(self) -> int:
        return len(self.dts) - 1

    def integrate(
        self, w0: torch.Tensor, I0: torch.Tensor, eta: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the model from (w0 (2,H,W), I0 (H,W)); return w (T, 2, H, W) and I (T, H, W) at the observation
        times."""
        if self.step is _skydiff_step:  # the whole trajectory in one fused autograd node
            traj = advect_trajectory(torch.cat([I0[None], w0], dim=0), self.dts, eta)
            # one indexing node per output: a slice per time (as before 2026-11-27) made the backward allocate and
            # add a zero gradient of the whole trajectory for every observation time
            idx = torch.tensor([0] + list(self.obs_after), device=traj.device)
            return traj[idx, 1:], traj[idx, 0]
        X = torch.cat([I0[None], w0], dim=0)[None]
        ws, Is = [w0], [I0]
        j = 0
        for k, dt in enumerate(self.dts):
            X = self.step(X, dt)
            if eta is not None and k < len(self.dts) - 1:
                X = torch.cat([X[:, :1], X[:, 1:] + eta[k][None]], dim=1)
            if j < len(self.obs_after) and k + 1 == self.obs_after[j]:
                ws.append(X[0, 1:])
                Is.append(X[0, 0])
                j += 1
        return torch.stack(ws), torch.stack(Is)

    def terms(
        self, w0: torch.Tensor, I0: torch.Tensor, eta: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _, Is = self.integrate(w0, I0, eta)
        res = Is - self.obs
        j_obs = 0.5 * (self.weights * res.square()).sum()
        j_b = 0.5 * (self.alpha * _grad_sq(w0) + self.beta * _div_sq(w0))
        if eta is not None:
            j_m = 0.5 * (
                self.q_alpha * _grad_sq(eta) + self.q_beta * _div_sq(eta) + self.q_gamma * eta.square().sum()
            )
        else:
            j_m = torch.zeros((), dtype=w0.dtype, device=w0.device)
        n = self.n_pix
        return j_obs / n, j_b / n, j_m / n

    def __call__(self, w0: torch.Tensor, I0: torch.Tensor, eta: torch.Tensor | None = None) -> torch.Tensor:
        j_o, j_b, j_m = self.terms(w0, I0, eta)
        return j_o + j_b + j_m


# --------------------------------------------------------------------------------------------------------------
# the plain reference model step (pure torch, gather-based bilinear interpolation)
# --------------------------------------------------------------------------------------------------------------


def _ref_bilinear(F: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample F (C, H, W) bilinearly at pixel coordinates x, y (H, W), clamped to the grid (edge values)."""
    C, H, W = F.shape
    x = x.clamp(0.0, W - 1.0)
    y = y.clamp(0.0, H - 1.0)
    x0 = torch.floor(x.detach()).long().clamp(max=W - 2)
    y0 = torch.floor(y.detach()).long().clamp(max=H - 2)
    fx = x - x0
    fy = y - y0
    flat = F.reshape(C, H * W)

    def at(yi: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        idx = (yi * W + xi).reshape(1, -1).expand(C, -1)
        return torch.gather(flat, 1, idx).reshape(C, H, W)

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bot = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    return top * (1 - fy) + bot * fy


def _reference_step(X: torch.Tensor, dt: float) -> torch.Tensor:
    """The model step of the plain implementation: midpoint backward trajectory + bilinear interpolation.

    The same scheme as ``skydiff.advect(X, w, [dt], n_iter=1, outval="edge")``: departure point
    ``x - dt * w(x - dt/2 * w(x))``, velocity and field sampled bilinearly with clamped coordinates.
    """
    F = X[0]
    _, H, W = F.shape
    yy, xx = torch.meshgrid(
        torch.arange(H, dtype=F.dtype, device=F.device), torch.arange(W, dtype=F.dtype, device=F.device), indexing="ij"
    )
    w = F[1:]
    mid = _ref_bilinear(w, xx - 0.5 * dt * w[0], yy - 0.5 * dt * w[1])
    out = _ref_bilinear(F, xx - dt * mid[0], yy - dt * mid[1])
    return out[None]


# --------------------------------------------------------------------------------------------------------------
# L-BFGS driver
# --------------------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    n_iter: int
    n_eval: int
    cost_initial: float
    cost_final: float
    history: list[float]
    converged: bool
    status: str
    eval_times: list[float]
    eval_costs: list[float]


def _minimise(
    fn: Callable[[], torch.Tensor],
    params: list[torch.Tensor],
    *,
    n_pix: int,
    max_iter: int,
    gtol: float,
    ftol: float,
    history_size: int,
    window: int = 5,
    time_limit: float | None = None,
    t_start: float | None = None,
    target: float | None = None,
) -> _Run:
    """Minimise ``fn()`` over ``params`` with torch's L-BFGS (strong Wolfe line search).

    Stops when the largest component of the per-pixel gradient is <= ``gtol`` (torch's ``tolerance_grad``,
    scaled by the number of pixels since ``fn`` is a per-pixel mean), when the best cost decreased by less than
    ``ftol`` (relative) over the last ``window`` iterations, after ``max_iter`` iterations, after ``time_limit``
    seconds, or when the cost reaches ``target``. The parameters are left at the best point evaluated.
    """
    t_start = time.perf_counter() if t_start is None else t_start
    costs: list[float] = []
    times: list[float] = []
    per_iter: dict[int, float] = {}
    best = {"J": math.inf, "x": [p.detach().clone() for p in params], "gmax": math.inf}
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=max_iter,
        max_eval=max(2 * max_iter, max_iter + 25),
        tolerance_grad=gtol / n_pix,  # J is a per-pixel mean: gtol applies to the per-pixel (summed) gradient
        tolerance_change=0.0,  # our own relative test over `window` iterations (below)
        history_size=history_size,
        line_search_fn="strong_wolfe",
    )
    group = opt.param_groups[0]
    state = opt.state[params[0]]

    class _Stop(Exception):
        def __init__(self, converged: bool, status: str) -> None:
            self.converged, self.status = converged, status

    def closure() -> torch.Tensor:
        it = int(state.get("n_iter", 0))
        if costs:
            if time_limit is not None and time.perf_counter() - t_start > time_limit:
                raise _Stop(False, "time limit reached")
            if target is not None and best["J"] <= target:
                raise _Stop(True, "target cost reached")
            # a new iteration starts: test the stagnation of the best cost over the last `window` iterations
            done = it - 1
            if it not in per_iter and done >= window and ftol > 0:
                hist = [per_iter[k] for k in sorted(per_iter)]
                j_now, j_old = min(hist), min(hist[: len(hist) - window])
                if j_old - j_now <= ftol * abs(j_now):
                    raise _Stop(True, f"relative cost decrease < ftol={ftol:g} over {window} iterations")
        opt.zero_grad(set_to_none=False)
        J = fn()
        if not bool(torch.isfinite(J)):
            raise _Stop(False, "non-finite cost")
        J.backward()
        v = float(J.detach())
        costs.append(v)
        times.append(time.perf_counter() - t_start)
        per_iter[it] = min(per_iter.get(it, math.inf), v)
        if v < best["J"]:
            best["J"] = v
            for b, p in zip(best["x"], params):
                b.copy_(p.detach())
            best["gmax"] = max(float(p.grad.abs().max()) for p in params if p.grad is not None and p.numel()) * n_pix
        return J

    stop = None
    try:
        opt.step(closure)
    except _Stop as exc:
        stop = exc
    with torch.no_grad():
        for b, p in zip(best["x"], params):
            p.copy_(b)
    n_iter = int(state.get("n_iter", 0))
    n_eval = len(costs)
    history = []
    run_best = math.inf
    for it in sorted(per_iter):
        run_best = min(run_best, per_iter[it])
        history.append(run_best)
    if stop is not None:
        converged, status = stop.converged, stop.status
    elif best["gmax"] <= gtol:
        converged, status = True, f"gradient tolerance gtol={gtol:g} reached"
    elif n_iter >= max_iter:
        converged, status = False, f"max_iter={max_iter} reached"
    elif n_eval >= group["max_eval"]:
        converged, status = False, f"max_eval={group['max_eval']} reached"
    else:
        converged, status = False, "line search made no progress"
    return _Run(
        n_iter=n_iter,
        n_eval=n_eval,
        cost_initial=costs[0] if costs else math.nan,
        cost_final=best["J"] if costs else math.nan,
        history=history,
        converged=converged,
        status=status,
        eval_times=times,
        eval_costs=costs,
    )


# --------------------------------------------------------------------------------------------------------------
# pyramid helpers
# --------------------------------------------------------------------------------------------------------------


def _pool2(Y: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NaN-aware 2x2 average pooling of (T, H, W) (odd sizes padded by edge replication)."""
    H, W = Y.shape[-2:]
    ph, pw = H % 2, W % 2
    y = torch.where(valid, Y, torch.zeros_like(Y))[None]
    m = valid.to(Y.dtype)[None]
    if ph or pw:
        y = nnf.pad(y, (0, pw, 0, ph), mode="replicate")
        m = nnf.pad(m, (0, pw, 0, ph), mode="replicate")
    s = nnf.avg_pool2d(y, 2)[0]
    c = nnf.avg_pool2d(m, 2)[0]
    ok = c > 0
    return torch.where(ok, s / c.clamp_min(1e-12), torch.zeros_like(s)), ok


def _upsample(v: torch.Tensor, shape: tuple[int, int], factor: float = 2.0) -> torch.Tensor:
    """(…, C, h, w) -> (…, C, H, W): bilinear x2 (pixel-centre aligned with 2x2 pooling), cropped, scaled."""
    lead = v.shape[:-2]
    x = v.reshape(-1, *v.shape[-3:]) if v.ndim >= 4 else v[None]
    up = nnf.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    up = up[..., : shape[0], : shape[1]] * factor
    return up.reshape(*lead, *shape)


def _inside_mask(cost: "_Cost", w0: torch.Tensor, eta: torch.Tensor | None,
                 valid0: torch.Tensor | None = None) -> torch.Tensor:
    """(T, H, W) 1 where the model trajectory ending at a pixel started inside the grid, on data, else 0.

    A tracer that is 1 inside and 0 on the 1-pixel border ring and (``valid0``) where the first frame has no
    data is integrated with the model (edge inflow): where it falls below 1/2 at an observation time, the model
    value comes from the boundary or from a no-data area (rain entering that the model cannot know), and the
    pixel is left out of the cost, as VET masks departure points outside the grid. Computed once per level
    from the first guess, so the cost stays smooth.
    """
    c0 = torch.zeros_like(w0[0])
    c0[1:-1, 1:-1] = 1.0
    if valid0 is not None:
        c0 = c0 * valid0.to(c0.dtype)
    with torch.no_grad():
        _, cs = cost.integrate(w0, c0, eta)
    return (cs > 0.5).to(w0.dtype)


def _weights(Y: torch.Tensor, valid: torch.Tensor, ymin: float, dry_weight: float, tol: float) -> torch.Tensor:
    wet = Y > ymin + tol
    r = torch.where(wet, torch.ones_like(Y), torch.full_like(Y, float(dry_weight)))
    return torch.where(valid, r, torch.zeros_like(Y))


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------


def _prepare(
    frames: Any, times: Any, transform: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool, float, bool, torch.Tensor | None]:
    """Checks and transform. Returns (Y with NaN, valid mask, tau, dry, ymin, torch_in, template tensor).

    A DataArray gives its values by dimension name (units checked with the dB transform) and, without ``times``,
    its own times (its ``.values`` alone were taken as frames one step apart, whatever its times)."""
    if hasattr(frames, "dims") and hasattr(frames, "values") and not hasattr(frames, "data_vars"):
        from ..io.units import datetimes_of, frames_of_dataarray

        if times is None:
            times = datetimes_of(frames)
        frames = frames_of_dataarray(frames, "4dvar: frames", rate=transform is not None,
                                     hint=" (with transform='db'; pass transform=None for data already in dBR)")
    is_torch = isinstance(frames, torch.Tensor)
    arr = _frames_array(frames)
    T = arr.shape[0]
    tau = _times_tau(times, T)
    if np.isinf(arr).any():
        raise InputError("4dvar: frames contain infinite values (use NaN for missing data)")
    valid = np.isfinite(arr)
    empty = [i for i in range(T) if not valid[i].any()]
    if empty:
        raise InputError(f"4dvar: frames {empty} are entirely NaN (no data); drop them (and their times)")
    if transform is not None:
        if not isinstance(transform, str) or transform.lower() not in interface._TRANSFORMS:
            raise InputError(f"4dvar: unknown transform {transform!r}; use 'db' or None")
        transform = interface._TRANSFORMS[transform.lower()]
    data, dry = interface._transform(arr, transform, 0)
    data = np.where(valid, data, np.nan)
    vals = data[valid]
    ymin = float(vals.min())
    return data, valid, tau, dry, ymin, is_torch, frames if is_torch else None


def _data_box(valid: np.ndarray, margin: int) -> tuple[slice, slice]:
    anyv = valid.any(axis=0)
    rows = np.flatnonzero(anyv.any(axis=1))
    cols = np.flatnonzero(anyv.any(axis=0))
    H, W = anyv.shape
    r0, r1 = max(0, rows[0] - margin), min(H, rows[-1] + 1 + margin)
    c0, c1 = max(0, cols[0] - margin), min(W, cols[-1] + 1 + margin)
    if r1 - r0 < 4:
        r0, r1 = max(0, min(r0, H - 4)), min(H, max(r1, 4))
    if c1 - c0 < 4:
        c0, c1 = max(0, min(c0, W - 4)), min(W, max(c1, 4))
    return slice(r0, r1), slice(c0, c1)


def _check_params(**kw: Any) -> None:
    for name in ("alpha", "beta", "q_alpha", "q_beta", "q_gamma", "dry_weight"):
        v = kw[name]
        if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool) or not v >= 0:
            raise InputError(f"4dvar: {name} must be a number >= 0, got {v!r}")
        if not math.isfinite(float(v)):
            raise InputError(f"4dvar: {name} must be finite, got {v!r}")
    if not positive_finite(kw["sigma"]):
        raise InputError(f"4dvar: sigma must be a positive number, got {kw['sigma']!r}")
    for name, lo in (("n_substeps", 1), ("levels", 1), ("max_iter", 1), ("history_size", 1)):
        v = kw[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise InputError(f"4dvar: {name} must be an integer >= {lo}, got {v!r}")
    for name in ("gtol", "ftol"):
        v = kw[name]
        if not isinstance(v, (int, float, np.floating, np.integer)) or isinstance(v, bool) or not v >= 0:
            raise InputError(f"4dvar: {name} must be a number >= 0, got {v!r}")


def _work_dtype(tmpl: Any, device: torch.device) -> torch.dtype:
    """4D-Var's working precision: float64 on the CPU; elsewhere the frames' floating dtype, at least float32 (in
    half precision the observation cost overflows and L-BFGS stops at once)."""
    if device.type == "cpu":
        return torch.float64
    if isinstance(tmpl, torch.Tensor) and tmpl.is_floating_point():
        return torch.promote_types(tmpl.dtype, torch.float32)
    return torch.float32


def _as_input(x: torch.Tensor, is_torch: bool, tmpl: Any) -> Any:
    """A result like the frames were given: torch input -> its device and (floating, else torch's default) dtype;
    numpy input -> a float64 array."""
    if is_torch:
        return x.detach().to(device=tmpl.device,
                             dtype=tmpl.dtype if tmpl.is_floating_point() else torch.get_default_dtype())
    return x.detach().cpu().numpy().astype(np.float64)


def fourdvar(
    frames: Any,
    *,
    times: Any = None,
    constraint: str = "strong",
    transform: str | None = "db",
    n_substeps: int = 5,
    alpha: float = 300.0,
    beta: float = 100.0,
    sigma: float = 1.0,
    dry_weight: float = 0.1,
    optimize_init: bool = True,
    q_alpha: float = 100.0,
    q_beta: float = 100.0,
    q_gamma: float = 0.25,
    levels: int = 4,
    finest_level: int = 1,
    max_iter: int = 300,
    gtol: float = 1e-4,
    ftol: float = 3e-3,
    history_size: int = 10,
    mask_inflow: bool = True,
    velocity_at: str = "last",
    init_velocity: Any = None,
    crop: bool = True,
    verbose: bool = False,
) -> FourDVarResult:
    """Estimate the motion of a frame sequence by 4D-Var assimilation of an advection model.

    Parameters
    ----------
    frames
        ``(T, H, W)``, T >= 2, oldest first: rain rates in mm/h with ``transform="db"`` (NaN = no data, masked
        in the cost). numpy array, array-like or tensor (the computation runs on the tensor's device).
    times
        Observation times (``T`` strictly increasing numbers in any unit, or ``datetime64``); default
        ``0, 1, ..., T-1``. The velocity is per *mean* interval.
    constraint
        ``"strong"`` (perfect model, the paper's rain setting) or ``"weak"`` (model-error controls on ``w`` at
        every model step, the paper's SST setting; for motion that changes within the window).
    transform
        ``"db"`` (default, mm/h -> dBR, threshold 0.1 mm/h, -15 dBR for dry pixels) or ``None``.
    n_substeps
        Model steps per mean frame interval (default 5: 15 steps for 4 frames). Coarse pyramid levels of the
        strong constraint use ``ceil(n_substeps / 2**level)`` (the displacement per step in coarse pixels is
        smaller by the same factor).
    alpha, beta
        Weights of ``||grad w_0||^2`` and ``||div w_0||^2`` (B^-1), per pixel, relative to the observation
        misfit in units of ``sigma``.
    sigma
        Observation error (working units, default 1 dBR).
    dry_weight
        R^-1 weight of dry pixels relative to wet ones (default 0.1).
    optimize_init
        Whether ``I_0`` is a control variable (default True, as in the paper) or fixed to the first frame.
    q_alpha, q_beta, q_gamma
        Weak constraint: weights of ``||grad eta||^2``, ``||div eta||^2``, ``||eta||^2`` (Q^-1) per model step,
        ``eta`` in full-resolution pixels per step per step at every pyramid level. (Until 2026-11-29 ``eta``'s
        magnitude was weighed in each level's own pixels, i.e. ``q_gamma / 4^level`` in these units; the default
        0.25, 1.0 before, keeps the weight of the default half-resolution optimisation.)
    levels
        Pyramid levels (default 4: 1/8, 1/4, 1/2, 1 resolution); fewer when the coarsest grid would be smaller
        than 16 pixels. ``levels=1``: no multiscale.
    finest_level
        Finest pyramid level that is optimised (default 1: half resolution; the solution is upsampled and its
        full-resolution cost evaluated). ``0`` also optimises at full resolution: 2.5-3.5x slower for the same
        nowcast skill on KNMI radar (see the module notes); use it when the full-resolution minimiser itself
        matters. Grids too small for a second pyramid level are always optimised at full resolution.
    max_iter, gtol, ftol, history_size
        L-BFGS per level: at most ``max_iter`` iterations; stop when the largest gradient component of the
        per-pixel cost (summed-cost units) is <= ``gtol``, or when the cost decreased by less than ``ftol``
        (relative) over the last 5 iterations; ``history_size`` correction pairs.
    mask_inflow
        Leave out of the cost the pixels whose model trajectory enters through the boundary or from where the
        first frame has no data (default True).
    velocity_at
        ``"last"`` (default): ``w`` at the last observation time (for extrapolation nowcasts); ``"first"``:
        ``w_0``.
    init_velocity
        Optional first guess of ``w_0`` (2, H, W) in pixels per mean interval (pooled to the coarsest level).
    crop
        Solve on the bounding box of the pixels with data (plus an 8-px margin); motion continued with edge
        values outside.
    verbose
        Print one line per level.

    Returns
    -------
    FourDVarResult

    Raises
    ------
    ShapeError
        Frames not ``(T, H, W)`` or smaller than 4 x 4; ``times`` or ``init_velocity`` of the wrong shape.
    InputError
        Fewer than 2 frames, an all-NaN frame, infinite values, negative rain rates (``"db"``), times not
        strictly increasing, bad parameters.

    Notes
    -----
    Reproducibility: on the CPU the same frames, parameters and thread count give the same bits in every process
    (tested); on CUDA the adjoint's ``grid_sample`` backward sums with atomic adds, so runs may differ in the last
    bits. Another thread count (``torch.set_num_threads``, or numba's, which sets how many buffers the
    adjoint sums) changes the order of parallel sums, and L-BFGS then takes a slightly different path: on the KNMI
    timing case of ``benchmarks/RESULTS.md`` §5 the mean of |u| and |v| was 3.52770 px per step with 2 threads
    and 3.52730 with 1 (strong constraint; 4e-10 px on a 64 x 64 synthetic case). The weak constraint is far more
    sensitive: its cost is nearly flat along trade-offs between ``w_0`` and ``eta``, and on that synthetic case 1
    and 2 numba threads gave motions up to 0.3 px apart (2.3 px before ``eta``'s magnitude was weighed alike at
    every level).
    """
    t0 = time.perf_counter()
    if constraint not in _CONSTRAINTS:
        raise InputError(f"4dvar: constraint must be one of {_CONSTRAINTS}, got {constraint!r}")
    if velocity_at not in ("last", "first"):
        raise InputError(f"4dvar: velocity_at must be 'last' or 'first', got {velocity_at!r}")
    _check_params(
        alpha=alpha, beta=beta, q_alpha=q_alpha, q_beta=q_beta, q_gamma=q_gamma, dry_weight=dry_weight,
        sigma=sigma, n_substeps=n_substeps, levels=levels, max_iter=max_iter, history_size=history_size,
        gtol=gtol, ftol=ftol,
    )  # fmt: skip
    if isinstance(finest_level, bool) or not isinstance(finest_level, (int, np.integer)) or finest_level < 0:
        raise InputError(f"4dvar: finest_level must be an integer >= 0, got {finest_level!r}")
    data, valid, tau, dry, ymin, is_torch, tmpl = _prepare(frames, times, transform)
    T, H, W = data.shape
    device = tmpl.device if tmpl is not None else torch.device("cpu")
    dtype = _work_dtype(tmpl, device)
    weak = constraint == "weak"

    w_init = None
    if init_velocity is not None:
        w_init = torch.as_tensor(
            init_velocity.detach()
            if isinstance(init_velocity, torch.Tensor)
            else np.ascontiguousarray(init_velocity, dtype=np.float64)
        )
        if tuple(w_init.shape) != (2, H, W):
            raise ShapeError(f"4dvar: init_velocity must have shape {(2, H, W)}, got {tuple(w_init.shape)}")
        w_init = w_init.to(device=device, dtype=dtype)
        if not bool(torch.isfinite(w_init).all()):
            raise InputError("4dvar: init_velocity contains non-finite values")

    def _out(x: torch.Tensor) -> Any:
        return _as_input(x, is_torch, tmpl)

    if dry or float(np.nanmax(data)) - ymin <= 0:
        warn("4dvar: the frames contain no rain (no contrast); returning a zero motion field")
        zero = torch.zeros(2, H, W, dtype=dtype)
        Yz = torch.from_numpy(np.where(valid, data, ymin))
        return FourDVarResult(
            velocity=_out(zero), trajectory_w=_out(zero[None].expand(T, -1, -1, -1)), trajectory_I=_out(Yz),
            times=tau, cost_history=[0.0], cost_terms={"obs": 0.0, "background": 0.0, "model": 0.0}, n_iter=0,
            n_eval=0, converged=True, status="no rain: zero motion", time_s=time.perf_counter() - t0,
            constraint=constraint,
        )  # fmt: skip

    # solve on the bounding box of the data
    box = _data_box(valid, 8) if crop else (slice(0, H), slice(0, W))
    Yfull = torch.from_numpy(np.where(valid, data, ymin)).to(device=device, dtype=dtype)
    Vfull = torch.from_numpy(valid).to(device)
    Y0 = Yfull[:, box[0], box[1]]
    V0 = Vfull[:, box[0], box[1]]
    if w_init is not None:
        w_init = w_init[:, box[0], box[1]]
    tol = 1e-6 * max(1.0, float(np.nanmax(data)) - ymin)

    # pyramid, finest first
    pyr = [(Y0, V0)]
    h, w = Y0.shape[-2:]
    while len(pyr) < levels and min(h, w) >= 32:
        Yc, Vc = _pool2(*pyr[-1])
        pyr.append((Yc, Vc))
        h, w = Yc.shape[-2:]
    if w_init is not None:
        for _ in range(len(pyr) - 1):
            pad = (0, w_init.shape[-1] % 2, 0, w_init.shape[-2] % 2)
            w_init = 0.5 * nnf.avg_pool2d(nnf.pad(w_init[None], pad, mode="replicate"), 2)[0]
    finest = min(int(finest_level), len(pyr) - 1)

    infos: list[LevelInfo] = []
    w_cur: torch.Tensor | None = None
    eta_cur: torch.Tensor | None = None
    dI_cur: torch.Tensor | None = None
    I_cur: torch.Tensor | None = None
    n_iter_total = n_eval_total = 0
    run: _Run | None = None
    final_run: _Run | None = None
    cost: _Cost | None = None
    history: list[float] = []
    for lev in range(len(pyr) - 1, -1, -1):
        tl = time.perf_counter()
        Yl, Vl = pyr[lev]
        hl, wl = Yl.shape[-2:]
        weights = _weights(Yl, Vl, ymin, dry_weight, tol)
        Yl = torch.where(Vl, Yl, torch.full_like(Yl, ymin))
        # coarse levels of the strong constraint: fewer model steps (the displacement in coarse pixels is
        # smaller); the weak constraint keeps one model-error field per step at every level
        n_sub = n_substeps if (weak or lev == 0) else max(1, math.ceil(n_substeps / 2**lev))
        dts, obs_after = _schedule(tau, n_sub)
        # eta is held in this level's pixels, 2^lev times smaller than in full-resolution pixels: its magnitude
        # term weighs 4^lev more, so that q_gamma means the same at every level (the derivative terms and
        # alpha/beta's are per-pixel ratios, the same at every level)
        cost = _Cost(
            Yl, weights, dts, obs_after, alpha=alpha, beta=beta, sigma=sigma, q_alpha=q_alpha, q_beta=q_beta,
            q_gamma=q_gamma * 4.0**lev,
        )  # fmt: skip
        has_guess = w_cur is not None or w_init is not None
        if w_cur is not None:
            w0 = _upsample(w_cur, (hl, wl))
        elif w_init is not None:
            w0 = w_init.clone()
        else:
            w0 = torch.zeros(2, hl, wl, dtype=dtype, device=device)
        w0 = w0.detach().requires_grad_(True)
        I0 = Yl[0].clone()
        if optimize_init and dI_cur is not None:  # carry the coarse correction of I_0 over
            I0 = I0 + _upsample(dI_cur[None], (hl, wl), 1.0)[0]
        I0 = I0.detach().requires_grad_(optimize_init)
        params = [w0] + ([I0] if optimize_init else [])
        eta = None
        if weak:
            if eta_cur is None:
                eta = torch.zeros(cost.n_model_errors, 2, hl, wl, dtype=dtype, device=device)
            else:
                eta = _upsample(eta_cur, (hl, wl))
            eta = eta.detach().requires_grad_(True)
            params.append(eta)

        def fn(cost: _Cost = cost, w0: torch.Tensor = w0, I0: torch.Tensor = I0, eta: Any = eta) -> torch.Tensor:
            return cost(w0, I0, eta)

        base_weights = cost.weights
        # the level without a first guess is solved twice: without, then with the inflow mask of its solution
        n_pass = 1 if (has_guess or not mask_inflow) else 2
        n_it = n_ev = 0
        for p in range(n_pass):
            if mask_inflow and (has_guess or p > 0):
                eta_d = None if eta is None else eta.detach()
                cost.weights = base_weights * _inside_mask(cost, w0.detach(), eta_d, Vl[0])
            if lev < finest:  # below the finest optimised level: evaluate only
                with torch.no_grad():
                    j = float(fn())
                run = _Run(0, 1, j, j, [j], True, f"{_NOT_OPTIMISED} (finest_level={finest})", [], [])
            else:
                run = _minimise(
                    fn, params, n_pix=hl * wl, max_iter=max_iter, gtol=gtol, ftol=ftol, history_size=history_size
                )
            n_it += run.n_iter
            n_ev += run.n_eval
        w_cur = w0.detach()
        I_cur = I0.detach()
        dI_cur = I_cur - Yl[0]
        eta_cur = eta.detach() if eta is not None else None
        n_iter_total += n_it
        n_eval_total += n_ev
        if lev >= finest:
            history = run.history
            final_run = run
        info = LevelInfo(
            level=lev, shape=(hl, wl), n_iter=n_it, n_eval=n_ev, cost_initial=run.cost_initial,
            cost_final=run.cost_final, converged=run.converged, status=run.status, time_s=time.perf_counter() - tl,
        )  # fmt: skip
        infos.append(info)
        if verbose:
            print(
                f"4dvar level {lev} {hl}x{wl}: {n_it} it, {n_ev} evals, J {run.cost_initial:.5g} -> "
                f"{run.cost_final:.5g}, {run.status}, {info.time_s:.2f} s",
                flush=True,
            )

    assert final_run is not None and cost is not None and w_cur is not None and I_cur is not None
    with torch.no_grad():
        traj_w, traj_I = cost.integrate(w_cur, I_cur, eta_cur)  # (T, 2, h, w), (T, h, w)
        j_o, j_b, j_m = cost.terms(w_cur, I_cur, eta_cur)
    if crop and (traj_w.shape[-2:] != (H, W)):
        r, c = box
        pad = (c.start, W - c.stop, r.start, H - r.stop)
        traj_w = nnf.pad(traj_w, pad, mode="replicate")
        traj_I = nnf.pad(traj_I[:, None], pad, value=float("nan"))[:, 0]
    vel = traj_w[-1] if velocity_at == "last" else traj_w[0]
    if finest > 0:
        history = history + [float(j_o + j_b + j_m)]
    if not final_run.converged:
        warn(
            f"4dvar did not converge: {final_run.status} (cost {final_run.cost_initial:.4g} -> "
            f"{final_run.cost_final:.4g}); returning the last iterate (increase max_iter or loosen gtol/ftol)"
        )
    return FourDVarResult(
        velocity=_out(vel), trajectory_w=_out(traj_w), trajectory_I=_out(traj_I), times=tau,
        cost_history=history, cost_terms={"obs": float(j_o), "background": float(j_b), "model": float(j_m)},
        n_iter=n_iter_total, n_eval=n_eval_total, converged=final_run.converged, status=final_run.status,
        time_s=time.perf_counter() - t0, levels=infos, constraint=constraint, eval_times=final_run.eval_times,
        eval_costs=final_run.eval_costs,
    )  # fmt: skip


def fourdvar_reference(
    frames: Any,
    *,
    times: Any = None,
    constraint: str = "strong",
    transform: str | None = "db",
    n_substeps: int = 5,
    alpha: float = 300.0,
    beta: float = 100.0,
    sigma: float = 1.0,
    dry_weight: float = 0.1,
    optimize_init: bool = True,
    q_alpha: float = 100.0,
    q_beta: float = 100.0,
    q_gamma: float = 0.25,
    max_iter: int = 300,
    gtol: float = 1e-4,
    ftol: float = 3e-3,
    history_size: int = 10,
    time_limit: float | None = None,
    target_cost: float | None = None,
) -> FourDVarResult:
    """The plain autodiff 4D-Var of the paper, kept as a reference for speed comparisons.

    The same cost as :func:`fourdvar` with ``mask_inflow=False`` (and the same L-BFGS and stop rules), but
    the model step is plain torch (:func:`_reference_step`: gather-based bilinear interpolation, adjoint by
    autograd), at full resolution only, from ``w_0 = 0``, without multiscale or cropping. ``time_limit``
    (seconds) stops it early (status ``"time limit reached"``), ``target_cost`` once the cost is at or below
    that value. ``eval_times``/``eval_costs`` of the result record every cost evaluation.
    """
    t0 = time.perf_counter()
    if constraint not in _CONSTRAINTS:
        raise InputError(f"4dvar: constraint must be one of {_CONSTRAINTS}, got {constraint!r}")
    _check_params(
        alpha=alpha, beta=beta, q_alpha=q_alpha, q_beta=q_beta, q_gamma=q_gamma, dry_weight=dry_weight,
        sigma=sigma, n_substeps=n_substeps, levels=1, max_iter=max_iter, history_size=history_size, gtol=gtol,
        ftol=ftol,
    )  # fmt: skip
    data, valid, tau, dry, ymin, is_torch, tmpl = _prepare(frames, times, transform)
    T, H, W = data.shape
    device = tmpl.device if tmpl is not None else torch.device("cpu")
    dtype = _work_dtype(tmpl, device)
    dts, obs_after = _schedule(tau, n_substeps)
    Y = torch.from_numpy(np.where(valid, data, ymin)).to(device=device, dtype=dtype)
    V = torch.from_numpy(valid).to(device)
    tol = 1e-6 * max(1.0, float(np.nanmax(data)) - ymin)
    cost = _Cost(
        Y, _weights(Y, V, ymin, dry_weight, tol), dts, obs_after, alpha=alpha, beta=beta, sigma=sigma,
        q_alpha=q_alpha, q_beta=q_beta, q_gamma=q_gamma, step=_reference_step,
    )  # fmt: skip
    w0 = torch.zeros(2, H, W, dtype=dtype, device=device, requires_grad=True)
    I0 = Y[0].clone().requires_grad_(optimize_init)
    eta = None
    params = [w0] + ([I0] if optimize_init else [])
    if constraint == "weak":
        eta = torch.zeros(cost.n_model_errors, 2, H, W, dtype=dtype, device=device, requires_grad=True)
        params.append(eta)
    run = _minimise(
        lambda: cost(w0, I0, eta), params, n_pix=H * W, max_iter=max_iter, gtol=gtol, ftol=ftol,
        history_size=history_size, time_limit=time_limit, t_start=t0, target=target_cost,
    )  # fmt: skip
    with torch.no_grad():
        traj_w, traj_I = cost.integrate(w0.detach(), I0.detach(), None if eta is None else eta.detach())
        j_o, j_b, j_m = cost.terms(w0.detach(), I0.detach(), None if eta is None else eta.detach())
    def conv(x: torch.Tensor) -> Any:
        return _as_input(x, is_torch, tmpl)

    return FourDVarResult(
        velocity=conv(traj_w[-1]), trajectory_w=conv(traj_w), trajectory_I=conv(traj_I), times=tau,
        cost_history=run.history, cost_terms={"obs": float(j_o), "background": float(j_b), "model": float(j_m)},
        n_iter=run.n_iter, n_eval=run.n_eval, converged=run.converged, status=run.status,
        time_s=time.perf_counter() - t0,
        levels=[LevelInfo(0, (H, W), run.n_iter, run.n_eval, run.cost_initial, run.cost_final, run.converged,
                          run.status, time.perf_counter() - t0)],
        constraint=constraint, eval_times=run.eval_times, eval_costs=run.eval_costs,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# registry entry
# --------------------------------------------------------------------------------------------------------------


def _registered(frames: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """``estimate(frames, method="4dvar", **kw)``: the frames arrive already transformed by :func:`estimate`
    (dBR, NaN -> -15 dBR, i.e. no-data pixels count as dry here; call :func:`fourdvar` directly to mask them)."""
    res = fourdvar(frames, transform=None, **kwargs)
    return res.velocity


interface.register("4dvar", _registered, min_frames=2, aliases=("fourdvar",), backend="torch",
                   keywords=interface._keywords_of(fourdvar) - {"transform"})
