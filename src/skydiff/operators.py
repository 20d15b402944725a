"""Finite-difference operators on pixel grids: gradient, divergence, curl, Laplacian and smoothness norms.

All functions are plain, differentiable torch code (slicing and concatenation, no convolutions): torch in gives
torch out on the same device and dtype, with any number of leading batch dimensions; numpy (or anything
array-like) in gives numpy out. Integer input is promoted to floating point (float64 for numpy, torch's default
dtype for tensors).

Conventions (pysteps)
---------------------
A scalar field has shape ``(..., H, W)``: ``H`` rows (the y axis, row index increasing *downward*) and ``W``
columns (the x axis). A vector field has shape ``(..., 2, H, W)`` with component ``[0] = u`` along x (columns)
and ``[1] = v`` along y (increasing row index), in pixels (or in the units of ``spacing``). ``spacing`` is the
grid spacing, either one number for both axes or a pair ``(dx, dy)``; derivatives are divided by it.

Derivatives are second-order centred differences, ``df/dx[i] = (f[i+1] - f[i-1]) / (2 dx)`` and
``d2f/dx2[i] = (f[i+1] - 2 f[i] + f[i-1]) / dx**2``. At the edges the missing neighbour ``f[-1]`` (or ``f[n]``)
is a ghost value set by ``boundary``:

``"extrapolate"`` (default)
    Quadratic extrapolation from the three pixels nearest the edge, ``f[-1] = 3 f[0] - 3 f[1] + f[2]``. For first
    derivatives this is exactly the second-order one-sided difference ``(-3 f[0] + 4 f[1] - f[2]) / (2 dx)`` of
    ``numpy.gradient(f, edge_order=2)``. For the Laplacian it gives the edge pixel the second difference of its
    inner neighbour (first-order accurate there). Linear and quadratic polynomials are differentiated exactly at
    every pixel, edges included. Needs at least 3 pixels along each axis.
``"periodic"``
    The grid wraps around: ``f[-1] = f[n-1]`` and ``f[n] = f[0]``.
``"zero"``
    Dirichlet zero: ``f = 0`` outside the grid, so ``df/dx[0] = f[1] / (2 dx)`` and
    ``d2f/dx2[0] = (f[1] - 2 f[0]) / dx**2``. Components of vector fields are treated the same way.
``"neumann"``
    Zero flux through the edges (cell-centred Neumann): the ghost repeats the edge pixel, ``f[-1] = f[0]``, so
    ``df/dx[0] = (f[1] - f[0]) / (2 dx)`` and ``d2f/dx2[0] = (f[1] - f[0]) / dx**2``. With this boundary the
    Laplacian is symmetric negative semi-definite and sums to zero over the grid (a mass-conserving diffusion
    operator); use it when the Laplacian drives diffusion or a smoothness penalty.

Every axis is treated on its own, so corners need no special rule. All operators need grids of at least 3 x 3.

No data (NaN) is not masked: NaN propagates through the stencils as arithmetic does. A centred first difference
skips its centre pixel, so the gradient, divergence and curl *at* a NaN pixel can be finite while its neighbours
along each axis become NaN (as with ``numpy.gradient``); fill or mask no data before differentiating.

The curl ``dv/dx - du/dy`` is the vertical component of the vorticity in the right-handed pixel frame
(x right, y down, z *into* the screen): it is positive for rotation that looks *clockwise* on an image drawn
with row 0 at the top. The solid-body rotation ``u = -(y - y0), v = x - x0`` has curl ``+2`` everywhere. On a
north-up image (row 0 at the northern edge, as in pysteps) the meteorological relative vorticity
``dv_north/dx - du/dy_north`` is ``-curl``: positive curl is anticyclonic in the northern hemisphere.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence, Union

import numpy as np
import torch

from ._compat import is_numpy, native_array
from .errors import InputError, ShapeError

Boundary = Literal["extrapolate", "periodic", "zero", "neumann"]
Reduction = Literal["sum", "mean", "none"]
Spacing = Union[float, Sequence[float]]

BOUNDARIES: tuple[str, ...] = ("extrapolate", "periodic", "zero", "neumann")
REDUCTIONS: tuple[str, ...] = ("sum", "mean", "none")

__all__ = [
    "gradient",
    "divergence",
    "curl",
    "laplacian",
    "gradient_norm",
    "divergence_norm",
    "BOUNDARIES",
    "REDUCTIONS",
]


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------


def _as_tensor(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    """Return ``x`` as a floating-point tensor and whether it came in as numpy (or array-like)."""
    numpy_in = is_numpy(x)
    if numpy_in:
        try:
            arr = native_array(x)  # masked pixels NaN (no data), native byte order
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise InputError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}") from exc
        if arr.dtype.kind in "iub":
            arr = arr.astype(np.float64)
        if arr.dtype.kind != "f":
            raise InputError(f"{name} must hold real numbers, got numpy dtype {arr.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        t = x
        if t.is_complex():
            raise InputError(f"{name} must hold real numbers, got torch dtype {t.dtype}")
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
    return t, numpy_in


def _out(t: torch.Tensor, numpy_in: bool) -> Any:
    return t.detach().cpu().numpy() if numpy_in else t


def _check_scalar(f: torch.Tensor, name: str) -> None:
    if f.ndim < 2 or f.shape[-2] < 3 or f.shape[-1] < 3:
        raise ShapeError(
            f"{name} must be a scalar field of shape (..., H, W) with H >= 3 and W >= 3, "
            f"got shape {tuple(f.shape)}"
        )


def _check_vector(w: torch.Tensor, name: str) -> None:
    if w.ndim < 3 or w.shape[-3] != 2 or w.shape[-2] < 3 or w.shape[-1] < 3:
        raise ShapeError(
            f"{name} must be a vector field of shape (..., 2, H, W) (components [u, v] at dim -3) with "
            f"H >= 3 and W >= 3, got shape {tuple(w.shape)}"
        )


def _spacing(spacing: Spacing) -> tuple[float, float]:
    """Return ``(dx, dy)`` from a number or a pair, checking both are finite and positive."""
    if isinstance(spacing, torch.Tensor) and spacing.numel() == 1:
        spacing = float(spacing)
    if isinstance(spacing, np.ndarray) and spacing.ndim == 0:
        spacing = spacing.item()
    if isinstance(spacing, (int, float, np.number)) and not isinstance(spacing, bool):
        pair = (float(spacing), float(spacing))
    elif isinstance(spacing, (str, bytes, bool)):  # "12" was read as (dx, dy) = (1, 2)
        raise InputError(f"spacing must be a number or a pair (dx, dy), got {spacing!r}")
    else:
        try:
            vals = [float(s) for s in spacing]  # type: ignore[union-attr]
        except (TypeError, ValueError) as exc:
            raise InputError(f"spacing must be a number or a pair (dx, dy), got {spacing!r}") from exc
        if len(vals) != 2:
            raise InputError(f"spacing must be a number or a pair (dx, dy), got {len(vals)} values: {spacing!r}")
        pair = (vals[0], vals[1])
    if not all(math.isfinite(s) and s > 0 for s in pair):
        raise InputError(f"spacing must be finite and positive, got (dx, dy) = {pair}")
    return pair


def _check_boundary(boundary: str) -> None:
    if boundary not in BOUNDARIES:
        raise InputError(f"boundary must be one of {', '.join(map(repr, BOUNDARIES))}; got {boundary!r}")


def _pad(f: torch.Tensor, dim: int, boundary: str) -> torch.Tensor:
    """Pad ``f`` by one ghost value on each side of ``dim`` according to ``boundary``."""
    n = f.shape[dim]
    first, last = f.narrow(dim, 0, 1), f.narrow(dim, n - 1, 1)
    if boundary == "extrapolate":
        lo = 3 * first - 3 * f.narrow(dim, 1, 1) + f.narrow(dim, 2, 1)
        hi = 3 * last - 3 * f.narrow(dim, n - 2, 1) + f.narrow(dim, n - 3, 1)
    elif boundary == "periodic":
        lo, hi = last, first
    elif boundary == "zero":
        lo = hi = torch.zeros_like(first)
    else:  # neumann
        lo, hi = first, last
    return torch.cat((lo, f, hi), dim=dim)


def _d1(f: torch.Tensor, dim: int, h: float, boundary: str) -> torch.Tensor:
    """Centred first derivative along ``dim`` (with ghost values from ``boundary``)."""
    p = _pad(f, dim, boundary)
    n = f.shape[dim]
    return (p.narrow(dim, 2, n) - p.narrow(dim, 0, n)) * (0.5 / h)


def _d2(f: torch.Tensor, dim: int, h: float, boundary: str) -> torch.Tensor:
    """Centred second derivative along ``dim`` (with ghost values from ``boundary``)."""
    p = _pad(f, dim, boundary)
    n = f.shape[dim]
    return (p.narrow(dim, 2, n) + p.narrow(dim, 0, n) - 2 * f) * (1.0 / (h * h))


def _reduce(m: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return m.sum(dim=(-2, -1))
    if reduction == "mean":
        return m.mean(dim=(-2, -1))
    return m


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise InputError(f"reduction must be one of {', '.join(map(repr, REDUCTIONS))}; got {reduction!r}")


def _div(w: torch.Tensor, dx: float, dy: float, boundary: str) -> torch.Tensor:
    return _d1(w[..., 0, :, :], -1, dx, boundary) + _d1(w[..., 1, :, :], -2, dy, boundary)


# ---------------------------------------------------------------------------------------------------------------
# operators
# ---------------------------------------------------------------------------------------------------------------


def gradient(f: Any, spacing: Spacing = 1.0, boundary: Boundary = "extrapolate") -> Any:
    """Gradient of a scalar field.

    Parameters
    ----------
    f : torch.Tensor or numpy.ndarray, shape (..., H, W)
        Scalar field, H, W >= 3.
    spacing : float or (float, float)
        Grid spacing, one value for both axes or ``(dx, dy)``.
    boundary : {"extrapolate", "periodic", "zero", "neumann"}
        Edge treatment, see the module docstring.

    Returns
    -------
    torch.Tensor or numpy.ndarray, shape (..., 2, H, W)
        ``[0] = df/dx`` (along columns), ``[1] = df/dy`` (along increasing row index).
    """
    t, numpy_in = _as_tensor(f, "f")
    _check_scalar(t, "f")
    _check_boundary(boundary)
    dx, dy = _spacing(spacing)
    g = torch.stack((_d1(t, -1, dx, boundary), _d1(t, -2, dy, boundary)), dim=-3)
    return _out(g, numpy_in)


def divergence(w: Any, spacing: Spacing = 1.0, boundary: Boundary = "extrapolate") -> Any:
    """Divergence ``du/dx + dv/dy`` of a vector field.

    Parameters
    ----------
    w : torch.Tensor or numpy.ndarray, shape (..., 2, H, W)
        Vector field, ``[0] = u`` (x, columns), ``[1] = v`` (y, rows downward); H, W >= 3.
    spacing : float or (float, float)
        Grid spacing, one value for both axes or ``(dx, dy)``.
    boundary : {"extrapolate", "periodic", "zero", "neumann"}
        Edge treatment, see the module docstring.

    Returns
    -------
    torch.Tensor or numpy.ndarray, shape (..., H, W)
    """
    t, numpy_in = _as_tensor(w, "w")
    _check_vector(t, "w")
    _check_boundary(boundary)
    dx, dy = _spacing(spacing)
    return _out(_div(t, dx, dy, boundary), numpy_in)


def curl(w: Any, spacing: Spacing = 1.0, boundary: Boundary = "extrapolate") -> Any:
    """Curl (vertical vorticity in the pixel frame) ``dv/dx - du/dy`` of a vector field.

    Because y increases downward, positive values mean rotation that looks *clockwise* on an image drawn with
    row 0 at the top; on a north-up image the meteorological relative vorticity is ``-curl``. The solid-body
    rotation ``u = -(y - y0), v = x - x0`` has curl ``+2``.

    Parameters
    ----------
    w : torch.Tensor or numpy.ndarray, shape (..., 2, H, W)
        Vector field, ``[0] = u`` (x, columns), ``[1] = v`` (y, rows downward); H, W >= 3.
    spacing : float or (float, float)
        Grid spacing, one value for both axes or ``(dx, dy)``.
    boundary : {"extrapolate", "periodic", "zero", "neumann"}
        Edge treatment, see the module docstring.

    Returns
    -------
    torch.Tensor or numpy.ndarray, shape (..., H, W)
    """
    t, numpy_in = _as_tensor(w, "w")
    _check_vector(t, "w")
    _check_boundary(boundary)
    dx, dy = _spacing(spacing)
    c = _d1(t[..., 1, :, :], -1, dx, boundary) - _d1(t[..., 0, :, :], -2, dy, boundary)
    return _out(c, numpy_in)


def laplacian(f: Any, spacing: Spacing = 1.0, boundary: Boundary = "extrapolate") -> Any:
    """Laplacian ``d2f/dx2 + d2f/dy2`` of a scalar field (5-point stencil).

    Parameters
    ----------
    f : torch.Tensor or numpy.ndarray, shape (..., H, W)
        Scalar field, H, W >= 3.
    spacing : float or (float, float)
        Grid spacing, one value for both axes or ``(dx, dy)``.
    boundary : {"extrapolate", "periodic", "zero", "neumann"}
        Edge treatment, see the module docstring. ``"extrapolate"`` is exact for quadratics at the edges;
        ``"neumann"`` (zero flux) makes the operator conservative and symmetric, the choice for diffusion.

    Returns
    -------
    torch.Tensor or numpy.ndarray, shape (..., H, W)
    """
    t, numpy_in = _as_tensor(f, "f")
    _check_scalar(t, "f")
    _check_boundary(boundary)
    dx, dy = _spacing(spacing)
    return _out(_d2(t, -1, dx, boundary) + _d2(t, -2, dy, boundary), numpy_in)


def gradient_norm(
    w: Any, reduction: Reduction = "sum", spacing: Spacing = 1.0, boundary: Boundary = "extrapolate"
) -> Any:
    """Squared gradient norm of a vector field, the smoothness penalty of 4D-Var / LUPIN motion estimation.

    ``||grad w||^2 = (du/dx)^2 + (du/dy)^2 + (dv/dx)^2 + (dv/dy)^2`` per pixel.

    Parameters
    ----------
    w : torch.Tensor or numpy.ndarray, shape (..., 2, H, W)
        Vector field, ``[0] = u``, ``[1] = v``; H, W >= 3.
    reduction : {"sum", "mean", "none"}
        ``"none"`` returns the per-pixel map (..., H, W); ``"sum"`` / ``"mean"`` reduce over H and W only,
        keeping the batch dimensions (a 0-d result for a single (2, H, W) field).
    spacing : float or (float, float)
        Grid spacing, one value for both axes or ``(dx, dy)``.
    boundary : {"extrapolate", "periodic", "zero", "neumann"}
        Edge treatment, see the module docstring.

    Returns
    -------
    torch.Tensor or numpy.ndarray, shape (...) or (..., H, W)
    """
    t, numpy_in = _as_tensor(w, "w")
    _check_vector(t, "w")
    _check_boundary(boundary)
    _check_reduction(reduction)
    dx, dy = _spacing(spacing)
    m = (_d1(t, -1, dx, boundary).square() + _d1(t, -2, dy, boundary).square()).sum(dim=-3)
    return _out(_reduce(m, reduction), numpy_in)


def divergence_norm(
    w: Any, reduction: Reduction = "sum", spacing: Spacing = 1.0, boundary: Boundary = "extrapolate"
) -> Any:
    """Squared divergence ``(du/dx + dv/dy)^2`` of a vector field, a smoothness / mass-conservation penalty.

    Parameters
    ----------
    w : torch.Tensor or numpy.ndarray, shape (..., 2, H, W)
        Vector field, ``[0] = u``, ``[1] = v``; H, W >= 3.
    reduction : {"sum", "mean", "none"}
        ``"none"`` returns the per-pixel map (..., H, W); ``"sum"`` / ``"mean"`` reduce over H and W only,
        keeping the batch dimensions.
    spacing : float or (float, float)
        Grid spacing, one value for both axes or ``(dx, dy)``.
    boundary : {"extrapolate", "periodic", "zero", "neumann"}
        Edge treatment, see the module docstring.

    Returns
    -------
    torch.Tensor or numpy.ndarray, shape (...) or (..., H, W)
    """
    t, numpy_in = _as_tensor(w, "w")
    _check_vector(t, "w")
    _check_boundary(boundary)
    _check_reduction(reduction)
    dx, dy = _spacing(spacing)
    return _out(_reduce(_div(t, dx, dy, boundary).square(), reduction), numpy_in)
