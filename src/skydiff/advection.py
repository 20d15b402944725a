"""Differentiable backward semi-Lagrangian advection — the operator the rest of skydiff stands on.

:func:`advect` extrapolates a field along a steady motion field with the semantics and conventions of
``pysteps.extrapolation.semilagrangian.extrapolate`` (Germann & Zawadzki 2002):

- velocity ``(2, H, W)`` in pixels per time step, ``[0]`` = x (columns), ``[1]`` = y (rows), constant in time;
- backward trajectories integrated with the midpoint rule, ``n_iter`` sub-steps per lead time (``n_iter=0``:
  forward Euler), velocity sampled bilinearly with edge-clamped coordinates;
- every lead time interpolates the *original* field once (no cumulative numerical diffusion), bilinearly
  without extrapolation: departure points outside ``[0, W-1] x [0, H-1]`` get ``outval``;
- NaN in the field propagates to every output pixel whose interpolation stencil touches it.

It is exactly differentiable with respect to the field and the velocity (float64 ``gradcheck`` tests), runs on
CPU and CUDA (device and dtype follow the inputs), and accepts numpy (pysteps-like) or batched torch inputs.

Two implementations give the same numbers:

- ``backend="torch"``: ``torch.nn.functional.grid_sample`` and autograd; used on CUDA, for ``interp="bicubic"``
  and as the reference;
- ``backend="numba"``: fused CPU kernels (one pass per pixel over all lead times) with a hand-written exact
  adjoint, used by default on CPU for bilinear interpolation (several times faster than the torch path).

``interp="bicubic"`` uses cubic convolution with a = -0.5 (Catmull-Rom, third-order accurate; *not*
``grid_sample``'s a = -0.75, which is less accurate than bilinear on smooth fields), not pysteps' cubic B-spline
(``interp_order=3``); both are third order and agree closely on smooth fields. Like pysteps,
bicubic output is reset to the field minimum where a bilinearly advected "above-minimum" mask is < 0.5 and to
NaN where an advected finite-data mask is < 0.5, which suppresses cubic overshoot at rain edges.

:func:`advect_trajectory` integrates a state that carries its own velocity (non-linear self-advection, with an
optional model-error term: 4D-Var's weak-constraint trajectory, the dynamical core's transport);
:func:`timestep_increments` turns lead times into increments (pysteps' ``timesteps``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as nnf

from ._compat import check_real, native_array
from .errors import InputError, ShapeError

__all__ = ["advect", "advect_trajectory", "timestep_increments"]

_INTERP = ("bilinear", "bicubic")
_BACKENDS = ("auto", "torch", "numba")


def timestep_increments(steps: int | Sequence[float]) -> np.ndarray:
    """Lead-time increments in units of the velocity time step (pysteps' ``timesteps`` argument).

    An int ``n`` means lead times ``1, 2, ..., n``; a sequence gives strictly increasing lead times (floats
    allowed), e.g. ``[0.5, 1, 2]``.
    """
    if isinstance(steps, (bool, np.bool_, str, bytes)):
        raise InputError(f"steps must be a positive int or an increasing sequence of lead times, got {steps!r}")
    if isinstance(steps, (int, np.integer)):
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        return np.ones(int(steps))
    try:
        lead = np.asarray(list(steps), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"steps must be a positive int or a sequence of lead times, got {steps!r}") from exc
    if lead.ndim != 1 or lead.size == 0:
        raise InputError("steps must be a non-empty 1-D sequence of lead times")
    if not np.all(np.isfinite(lead)) or lead[0] <= 0 or np.any(np.diff(lead) <= 0):
        raise InputError(f"lead times must be positive, finite and strictly increasing, got {lead.tolist()}")
    return np.diff(np.concatenate([[0.0], lead]))


def advect(
    field: Any,
    velocity: Any,
    steps: int | Sequence[float],
    *,
    n_iter: int = 1,
    interp: str = "bilinear",
    outval: float | str = float("nan"),
    backend: str = "auto",
) -> Any:
    """Backward semi-Lagrangian extrapolation of ``field`` along a steady ``velocity``.

    Parameters
    ----------
    field
        numpy ``(H, W)``, or torch ``(B, C, H, W)`` (also ``(H, W)``). NaN marks no data and propagates.
    velocity
        numpy/torch ``(2, H, W)`` or torch ``(B, 2, H, W)``; pixels per time step, ``[0]`` = x (columns),
        ``[1]`` = y (rows). Must be finite.
    steps
        Number of lead times (1..steps) or an increasing sequence of lead times in velocity time steps.
    n_iter
        Midpoint iterations per lead time (pysteps' ``n_iter``, default 1); 0 = forward Euler.
    interp
        ``"bilinear"`` (pysteps' default ``interp_order=1``) or ``"bicubic"``.
    outval
        Value for departure points outside the grid (default NaN), ``"min"`` for the field's minimum (its
        gradient flows to the minimum pixel too), or
        ``"edge"`` for the value at the nearest edge point (pysteps' ``map_coordinates_mode="nearest"``; used
        for motion fields and model states, where an inflow boundary must not pull values toward a constant).
    backend
        ``"auto"`` (numba kernels on CPU for bilinear, torch otherwise), ``"torch"`` or ``"numba"``.

    Returns
    -------
    numpy in: ``(steps, H, W)`` numpy array. torch in: ``(B, steps, C, H, W)`` for a ``(B, C, H, W)`` field, or
    ``(steps, H, W)`` for a 2-D field; same device and dtype as the field (torch's default float dtype for an
    integer tensor).

    Examples
    --------
    >>> import numpy as np, skydiff
    >>> R = np.zeros((8, 8)); R[2, 2] = 1.0
    >>> V = np.ones((2, 8, 8))            # one pixel right and one pixel down per step
    >>> float(skydiff.advect(R, V, 2)[1][4, 4])
    1.0
    """
    numpy_in = not isinstance(field, torch.Tensor)
    if interp not in _INTERP:
        raise InputError(f"interp must be one of {_INTERP}, got {interp!r}")
    if backend not in _BACKENDS:
        raise InputError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if not isinstance(n_iter, (int, np.integer)) or isinstance(n_iter, bool) or n_iter < 0:
        raise InputError(f"n_iter must be an int >= 0, got {n_iter!r}")
    td = timestep_increments(steps)

    F, squeeze = _as_field(field)
    V = _as_velocity(velocity, F)
    if not torch.is_floating_point(F):
        F = F.to(torch.float64 if numpy_in else torch.get_default_dtype())
    V = V.to(dtype=F.dtype, device=F.device)
    if V.shape[0] == 1 and F.shape[0] > 1:
        V = V.expand(F.shape[0], -1, -1, -1)
    if V.shape[0] != F.shape[0]:
        raise ShapeError(f"batch sizes differ: field has {F.shape[0]}, velocity has {V.shape[0]}")
    if not bool(torch.isfinite(V).all()):
        raise InputError("velocity contains NaN or infinite values; fill or mask them before advecting")

    edge = isinstance(outval, str) and outval == "edge"
    # outval="min": each field's own minimum (pysteps' nanmin per field). One field: a constant fill, plus its
    # gradient below when the field needs one; a batch: filled with 0 and each minimum added below
    fill_min, per_field = None, False
    if edge:
        outv = float("nan")  # unused
    elif isinstance(outval, str) and outval == "min":
        mins = torch.where(torch.isfinite(F), F, torch.full_like(F, float("inf"))).amin(dim=(-2, -1))  # (B, C)
        if bool(torch.isinf(mins).all()):
            raise InputError("outval='min' but the field has no finite values")
        mins = torch.where(torch.isinf(mins), torch.full_like(mins, float("nan")), mins)  # an all-NaN field
        per_field = mins.numel() > 1
        fill_min = mins if (per_field or F.requires_grad) else None
        outv = 0.0 if per_field else float(mins.detach().reshape(()))
    elif isinstance(outval, str):
        raise InputError(f"outval must be a number, 'min' or 'edge', got {outval!r}")
    else:
        try:
            outv = float(outval)
        except (TypeError, ValueError):
            raise InputError(f"outval must be a number, 'min' or 'edge', got {outval!r}") from None

    use_numba = backend == "numba" or (backend == "auto" and F.device.type == "cpu" and interp == "bilinear")
    if use_numba:
        if interp != "bilinear":
            raise InputError("backend='numba' supports interp='bilinear' only; use backend='torch' for bicubic")
        if F.device.type != "cpu":
            raise InputError("backend='numba' runs on the CPU only; CUDA tensors use backend='torch'")
    # half precision is computed in float32 and returned in the field's dtype: numba has none, and grid_sample's
    # pixel positions in bfloat16 would be off by up to 1.5 px on a 1000-px grid
    half = F.dtype in (torch.float16, torch.bfloat16)
    F32, V32 = (F.float(), V.float()) if half else (F, V)
    if use_numba:
        out = _NumbaAdvect.apply(F32, V32, td, int(n_iter), outv, edge)
    else:
        out = _advect_torch(F32, V32, td, int(n_iter), interp, outv, edge)
    out = out.to(F.dtype) if half else out
    if fill_min is not None:
        # the result is affine in the fill value: out = A(F) + outv * B with B = the advection of a zero field
        # filled with 1 (1 exactly where the departure point is outside). The kernels hold outv constant; adding
        # (m - m.detach()) * B (zero in value) gives the gradient through the field's minimum m as well; a batch
        # was filled with 0 and gets each field's m * B
        with torch.no_grad():
            B = advect(torch.zeros_like(F), V.detach(), steps, interp=interp, n_iter=n_iter, outval=1.0,
                       backend=backend)
        m = fill_min.to(out.dtype).reshape(F.shape[0], 1, F.shape[1], 1, 1)
        out = out + (m if per_field else m - m.detach()) * B

    if squeeze:
        out = out[0, :, 0]
    if numpy_in:
        return out.detach().cpu().numpy()
    return out


# --------------------------------------------------------------------------------------------------------------
# input handling


def _as_field(field: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(field, torch.Tensor):
        F = field
        check_real(F, "field")
    else:
        arr = native_array(field)  # masked pixels are no data (NaN), not their fill values
        check_real(arr, "field")
        if arr.dtype.kind in "iub":
            arr = arr.astype(np.float64)
        F = torch.from_numpy(np.ascontiguousarray(arr))
        if F.ndim != 2:
            raise ShapeError(f"numpy field must be 2-D (H, W), got shape {tuple(F.shape)}")
    if F.ndim == 2:
        H, W = F.shape
        F4, squeeze = F[None, None], True
    elif F.ndim == 4:
        F4, squeeze = F, False
    else:
        raise ShapeError(f"field must be (H, W) or (B, C, H, W), got shape {tuple(F.shape)}")
    H, W = F4.shape[-2:]
    if H < 2 or W < 2:
        raise ShapeError(f"field must be at least 2 x 2 pixels, got {H} x {W}")
    if F4.shape[0] == 0 or F4.shape[1] == 0:
        raise ShapeError(f"field has an empty batch or no channels: shape {tuple(F4.shape)}")
    return F4, squeeze


def _as_velocity(velocity: Any, F: torch.Tensor) -> torch.Tensor:
    if isinstance(velocity, torch.Tensor):
        V = velocity
        check_real(V, "velocity", "iuf")
    else:
        arr = np.asarray(velocity)
        check_real(arr, "velocity", "iuf")
        V = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float64))
    H, W = F.shape[-2:]
    if V.ndim == 3:
        V = V[None]
    if V.ndim != 4 or V.shape[1] != 2:
        raise ShapeError(
            f"velocity must be (2, H, W) or (B, 2, H, W) with [0] = x and [1] = y in pixels per step, "
            f"got shape {tuple(V.shape)}"
        )
    if tuple(V.shape[-2:]) != (H, W):
        raise ShapeError(f"velocity grid {tuple(V.shape[-2:])} does not match the field grid {(H, W)}")
    return V


def _step_factors(td: np.ndarray, n_iter: int) -> np.ndarray:
    return td / n_iter if n_iter > 1 else td.copy()


# --------------------------------------------------------------------------------------------------------------
# torch (grid_sample) implementation: reference, CUDA, bicubic


def _advect_torch(
    F: torch.Tensor, V: torch.Tensor, td: np.ndarray, n_iter: int, interp: str, outv: float, edge: bool = False
) -> torch.Tensor:
    B, C, H, W = F.shape
    dev, dt = F.device, F.dtype
    # grid_sample works in normalised coordinates: x_n = 2 x / (W - 1) - 1 (align_corners=True)
    scale = torch.tensor([2.0 / (W - 1), 2.0 / (H - 1)], dtype=dt, device=dev)
    ys = torch.linspace(-1.0, 1.0, H, dtype=dt, device=dev)
    xs = torch.linspace(-1.0, 1.0, W, dtype=dt, device=dev)
    base = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # (1, H, W, 2), [...,0] = x
    Vn = V * scale.view(1, 2, 1, 1)  # velocity in normalised units per step

    def sample_vel(D: torch.Tensor) -> torch.Tensor:  # D (B, H, W, 2) normalised displacement
        s = nnf.grid_sample(Vn, base + D, mode="bilinear", padding_mode="border", align_corners=True)
        return s.permute(0, 2, 3, 1)

    cst = _step_factors(td, n_iter)
    D = torch.zeros(B, H, W, 2, dtype=dt, device=dev)
    w = Vn.permute(0, 2, 3, 1) * float(td[0])
    grids, disp = [], []
    for t in range(len(td)):
        c = float(cst[t])
        if n_iter > 0:
            for _ in range(n_iter):
                w = sample_vel(D - 0.5 * w) * c
                D = D - w
                w = sample_vel(D) * c
        else:
            if t > 0:
                w = sample_vel(D) * c
            D = D - w
        grids.append(base + D)
        disp.append(D)
    grid = torch.stack(grids, dim=1).reshape(B * len(td), H, W, 2)  # (B*T, H, W, 2)
    T = len(td)

    Fin = F
    if interp == "bicubic":
        finite = torch.isfinite(F)
        fmin = torch.where(finite, F, torch.full_like(F, float("inf"))).amin(dim=(-2, -1), keepdim=True)
        mask_min = (F > fmin).to(dt)
        mask_fin = finite.to(dt)
        Fin = torch.where(finite, F, torch.zeros_like(F))
    Fr = Fin[:, None].expand(B, T, C, H, W).reshape(B * T, C, H, W)
    if interp == "bicubic":
        out = _cubic_sample(Fr, (grid[..., 0] + 1.0) * (0.5 * (W - 1)), (grid[..., 1] + 1.0) * (0.5 * (H - 1)))
    elif bool((nan := torch.isnan(Fr)).any()):  # no data sampled apart (the same NaN footprint), so that an output
        # masked by the loss sends 0, not 0 * NaN, to the velocity
        out = nnf.grid_sample(torch.where(nan, torch.zeros_like(Fr), Fr), grid, mode="bilinear",
                              padding_mode="border", align_corners=True)
        out = torch.where(_stencil_nan(nan, grid.detach()), torch.full_like(out, float("nan")), out)
    else:
        out = nnf.grid_sample(Fr, grid, mode="bilinear", padding_mode="border", align_corners=True)
    if interp == "bicubic":
        masks = torch.cat([mask_min, mask_fin], dim=1)[:, None].expand(B, T, 2 * C, H, W).reshape(B * T, 2 * C, H, W)
        mw = nnf.grid_sample(masks, grid, mode="bilinear", padding_mode="border", align_corners=True)
        fmin_r = fmin[:, None].expand(B, T, C, 1, 1).reshape(B * T, C, 1, 1)
        out = torch.where(mw[:, :C] < 0.5, fmin_r.expand_as(out), out)
        out = torch.where(mw[:, C:] < 0.5, torch.full_like(out, float("nan")), out)
    # departure points outside [0, W-1] x [0, H-1] get outval
    if not edge:  # (edge: grid_sample's border padding / clamped cubic indices already give the edge value)
        # tested on each pixel's displacement in pixels against its own exact integer bounds [-j, W-1-j], not on
        # the absolute position: base + D near +-1 is quantised to eps * (W-1)/2 px and (grid + 1) to eps * (W-1)
        # px (1.2e-4 px at 1000 px in float32), so a grid-size tolerance was needed and took points up to
        # 8 eps max(H, W) px outside as inside. The displacement's rounding is relative to its own size and grows
        # with the number of sub-steps (a point exactly on the last column came out ~1e-16 beyond it in float64)
        n_sub = np.arange(1, T + 1) * max(n_iter, 1)
        tol = torch.tensor(np.tile(torch.finfo(dt).eps * (4.0 + 0.5 * n_sub), B), dtype=dt, device=dev)
        tol = tol.view(B * T, 1, 1)
        Dp = torch.stack(disp, dim=1).reshape(B * T, H, W, 2)
        dx = Dp[..., 0] * (0.5 * (W - 1))
        dy = Dp[..., 1] * (0.5 * (H - 1))
        jx = torch.arange(W, dtype=dt, device=dev)
        iy = torch.arange(H, dtype=dt, device=dev)[:, None]
        tx, ty = tol * dx.abs(), tol * dy.abs()
        outside = ((dx < -jx - tx) | (dx > (W - 1) - jx + tx) | (dy < -iy - ty) | (dy > (H - 1) - iy + ty))[:, None]
        out = torch.where(outside, torch.full_like(out, outv), out)
    return out.reshape(B, T, C, H, W)


def _stencil_nan(nan: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Where a bilinear sample at ``grid`` (normalised, align_corners) has a no-data pixel among its 2 x 2 corners
    ``floor(x) .. floor(x) + 1`` (clamped into the grid), as the numba kernels decide: ``nan`` (N, C, H, W) bool,
    ``grid`` (N, H, W, 2). In pixel coordinates, snapped to whole pixels within the rounding of the normalised
    ones: sampling NaN through grid_sample put an exact pixel position ~1e-16 off (float64), and the footprint
    then differed from the numba kernels' at zero displacement."""
    N, C, H, W = nan.shape
    tol = 1e-9 if grid.dtype == torch.float64 else 1e-4

    def corner(g: torch.Tensor, n: int) -> torch.Tensor:
        p = (g + 1.0) * (0.5 * (n - 1))
        r = torch.round(p)
        p = torch.where((p - r).abs() < tol, r, p).clamp(0.0, n - 1.0)
        return p.floor().long().clamp(max=max(n - 2, 0))

    x0, y0 = corner(grid[..., 0], W), corner(grid[..., 1], H)
    any4 = nan.clone()  # any4[y, x]: a NaN among (y..y+1, x..x+1)
    if W > 1:
        any4[..., :, :-1] |= nan[..., :, 1:]
    if H > 1:
        any4[..., :-1, :] |= any4[..., 1:, :].clone()
    idx = (y0 * W + x0).reshape(N, 1, H * W).expand(N, C, H * W)
    return any4.reshape(N, C, H * W).gather(2, idx).reshape(N, C, H, W)


def _cubic_weights(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Cubic convolution weights with a = -0.5 (Catmull-Rom; third-order accurate) for offsets -1, 0, 1, 2."""
    t2 = t * t
    t3 = t2 * t
    return (
        -0.5 * t3 + t2 - 0.5 * t,
        1.5 * t3 - 2.5 * t2 + 1.0,
        -1.5 * t3 + 2.0 * t2 + 0.5 * t,
        0.5 * t3 - 0.5 * t2,
    )


def _cubic_sample(F: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bicubic (Catmull-Rom) sample of F (N, C, H, W) at pixel coordinates x, y (N, H', W'), edge-replicated.

    Written by hand because ``grid_sample(mode="bicubic")`` uses a = -0.75, which is only first-order accurate
    (less accurate than bilinear on smooth fields).
    """
    N, C, H, W = F.shape
    x0 = torch.floor(x.detach())
    y0 = torch.floor(y.detach())
    wx = _cubic_weights(x - x0)
    wy = _cubic_weights(y - y0)
    x0 = x0.long()
    y0 = y0.long()
    flat = F.reshape(N, C, H * W)
    out = None
    for a in range(4):
        yi = (y0 + (a - 1)).clamp(0, H - 1)
        row = None
        for b in range(4):
            xi = (x0 + (b - 1)).clamp(0, W - 1)
            idx = (yi * W + xi).reshape(N, 1, -1).expand(N, C, -1)
            v = torch.gather(flat, 2, idx).reshape(N, C, *x.shape[1:]) * wx[b][:, None]
            row = v if row is None else row + v
        term = row * wy[a][:, None]
        out = term if out is None else out + term
    return out


# --------------------------------------------------------------------------------------------------------------
# numba implementation with a hand-written adjoint


class _NumbaAdvect(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, F: torch.Tensor, V: torch.Tensor, td: np.ndarray, n_iter: int, outv: float, edge: bool
    ) -> torch.Tensor:
        from . import _sl_kernels as K

        Fn = K.as_c(F.detach().numpy())
        # velocity samples dominate the cost; float64 avoids a conversion per corner load (measured faster)
        Vn = np.ascontiguousarray(V.detach().numpy(), dtype=np.float64)
        B, C, H, W = Fn.shape
        T = len(td)
        out = np.empty((B, T, C, H, W), dtype=Fn.dtype)
        cst = _step_factors(td, n_iter)
        K.sl_forward(Fn, Vn, td, cst, n_iter, outv, edge, out)
        ctx.save_for_backward(F, V)
        ctx.td, ctx.n_iter, ctx.edge = td, n_iter, edge
        return torch.from_numpy(out)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gout: torch.Tensor) -> tuple[Any, ...]:
        from . import _sl_kernels as K

        F, V = ctx.saved_tensors
        need_f, need_v = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_f or need_v):
            return None, None, None, None, None, None
        Fn = K.as_c(F.detach().numpy())
        nan = np.isnan(Fn) if need_v else None  # no data: 0 there, so that an output masked by the loss (upstream
        if nan is not None and nan.any():  # gradient 0) sends 0, not 0 * NaN, to the velocity
            Fn = np.where(nan, 0.0, Fn).astype(Fn.dtype)
        Vn = np.ascontiguousarray(V.detach().numpy(), dtype=np.float64)
        # no copy: an upstream gradient that is a broadcast view (e.g. from .sum()) is read through its strides
        G = gout.detach().to(F.dtype).numpy()
        B, C, H, W = Fn.shape
        P = min(K.n_parts(), B * H)
        # one accumulation buffer per thread; a gradient that is not needed gets a dummy of the right rank,
        # which the kernel never touches
        gF = np.zeros((P, B, C, H, W) if need_f else (P, 1, 1, 1, 1), dtype=Fn.dtype)
        gV = np.zeros((P, B, 2, H, W) if need_v else (P, 1, 1, 1, 1), dtype=np.float64)
        K.sl_backward(
            Fn, Vn, ctx.td, _step_factors(ctx.td, ctx.n_iter), ctx.n_iter, ctx.edge, G, need_f, need_v, gF, gV
        )
        grad_f = torch.from_numpy(gF.sum(axis=0)) if need_f else None
        grad_v = torch.from_numpy(gV.sum(axis=0).astype(Fn.dtype, copy=False)) if need_v else None
        return grad_f, grad_v, None, None, None, None



# --------------------------------------------------------------------------------------------------------------
# a whole self-advection trajectory in one autograd node (4D-Var's model, the dynamical core's transport)


def advect_trajectory(
    state: torch.Tensor, dts: Sequence[float], model_error: torch.Tensor | None = None, *, backend: str = "auto"
) -> torch.Tensor:
    """Integrate a state that carries its own velocity: ``K = len(dts)`` semi-Lagrangian steps.

    ``state`` is ``(C, H, W)`` with ``C >= 2``; its last two channels are the velocity (u = x, v = y, pixels per
    unit time) that advects *every* channel, itself included (non-linear self-advection). Step ``k`` is
    ``X_{k+1} = advect(X_k, X_k[-2:], [dts[k]], outval="edge")`` (one midpoint iteration, bilinear), and
    ``model_error`` ``(K - 1, 2, H, W)``, if given, is added to the velocity channels after every step but the last
    (the weak-constraint control of 4D-Var).

    Returns ``(K + 1, C, H, W)``: the initial state and the state after every step. Differentiable with respect to
    ``state`` and ``model_error``. On the CPU the whole trajectory is one autograd node over the numba kernels of
    :func:`advect` (forward once, exact adjoint swept backward once, no per-step Python/autograd overhead); the
    ``"torch"`` backend (CUDA) chains :func:`advect` calls, with identical results.
    """
    if not isinstance(state, torch.Tensor) or not state.is_floating_point():
        raise InputError(f"state must be a floating-point torch tensor (C, H, W), got {type(state).__name__}"
                         + (f" of dtype {state.dtype}" if isinstance(state, torch.Tensor) else ""))
    if state.ndim != 3 or state.shape[0] < 2:
        raise ShapeError(f"state must be (C, H, W) with C >= 2 (velocity last), got {tuple(state.shape)}")
    C, H, W = state.shape
    if H < 2 or W < 2:
        raise ShapeError(f"state must be at least 2 x 2 pixels, got {H} x {W}")
    try:
        dts = [float(d) for d in dts]
    except (TypeError, ValueError):
        raise InputError(f"dts must be a sequence of time steps, got {dts!r}") from None
    if not all(math.isfinite(d) and d > 0 for d in dts):
        raise InputError(f"dts must be positive and finite, got {dts}")
    K = len(dts)
    if K == 0:
        return state[None]
    if model_error is not None and tuple(model_error.shape) != (K - 1, 2, H, W):
        raise ShapeError(f"model_error must be {(K - 1, 2, H, W)}, got {tuple(model_error.shape)}")
    if backend not in _BACKENDS:
        raise InputError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    use_numba = backend == "numba" or (backend == "auto" and state.device.type == "cpu")
    if backend == "numba" and state.device.type != "cpu":
        raise InputError("backend='numba' runs on the CPU only; CUDA tensors use backend='torch'")
    if not bool(torch.isfinite(state[-2:]).all()) or (model_error is not None
                                                      and not bool(torch.isfinite(model_error).all())):
        raise InputError("the velocity channels (state[-2:]) and model_error must be finite")
    if use_numba and state.dtype in (torch.float32, torch.float64):
        eta = model_error if model_error is not None else state.new_zeros(0)
        return _NumbaTrajectory.apply(state, eta, tuple(dts), model_error is not None)
    X = state[None]
    out = [state]
    for k, dt in enumerate(dts):
        X = advect(X, X[:, -2:], [dt], outval="edge", backend="torch")[:, 0]
        if model_error is not None and k < K - 1:
            X = torch.cat([X[:, :-2], X[:, -2:] + model_error[k][None]], dim=1)
        out.append(X[0])
    return torch.stack(out)


class _NumbaTrajectory(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, X0: torch.Tensor, eta: torch.Tensor, dts: tuple, has_eta: bool) -> torch.Tensor:
        from . import _sl_kernels as K

        C, H, W = X0.shape
        n = len(dts)
        states = np.empty((n + 1, C, H, W), dtype=np.float64)
        states[0] = X0.detach().numpy()
        E = eta.detach().to(torch.float64).numpy() if has_eta else None
        for k, dt in enumerate(dts):
            td = np.array([dt])
            X = states[k][None]
            K.sl_forward(X, X[:, C - 2 :], td, td, 1, math.nan, True, states[k + 1][None, None])  # in place
            if has_eta and k < n - 1:
                states[k + 1, C - 2 :] += E[k]
        ctx.states, ctx.dts, ctx.has_eta = states, dts, has_eta
        ctx.in_dtype = X0.dtype
        return torch.from_numpy(states).to(X0.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, gout: torch.Tensor) -> tuple[Any, ...]:
        from . import _sl_kernels as K

        states, dts, has_eta = ctx.states, ctx.dts, ctx.has_eta
        n = len(dts)
        _, C, H, W = states.shape
        G = gout.detach().to(torch.float64).numpy()
        P = min(K.n_parts(), H)
        gF = np.zeros((P, 1, C, H, W), dtype=np.float64)  # combine_parts zeroes them again after every step
        gV = np.zeros((P, 1, 2, H, W), dtype=np.float64)
        g = G[n].copy()  # adjoint of X_n
        g_prev = np.empty_like(g)
        g_eta = np.zeros((max(n - 1, 0), 2, H, W), dtype=np.float64) if has_eta else None
        for k in range(n - 1, -1, -1):
            if has_eta and k < n - 1:
                g_eta[k] = g[C - 2 :]
            td = np.array([dts[k]])
            X = states[k][None]
            K.sl_backward(X, X[:, C - 2 :], td, td, 1, True, g[None, None], True, True, gF, gV)
            K.combine_parts(gF, gV, G[k], g_prev)  # adjoint of X_k
            g, g_prev = g_prev, g
        grad_x = torch.from_numpy(g).to(ctx.in_dtype) if ctx.needs_input_grad[0] else None
        grad_e = torch.from_numpy(g_eta).to(ctx.in_dtype) if (has_eta and ctx.needs_input_grad[1]) else None
        return grad_x, grad_e, None, None
