"""The Arakawa C-grid of the 2-D (x-r) dynamical core and its small staggered operators.

Layout (computational coordinates: ``x`` horizontal, periodic; ``r`` in ``[0, top]`` terrain-following):

- cell centres ``c``: ``(nz, nx)`` at ``x_c[i] = x0 + (i + 1/2) dx``, ``r_c[k] = (k + 1/2) dr`` (density, theta, pressure);
- u points ``u``: ``(nz, nx)`` at ``x_u[i] = x_c[i] + dx/2`` (the face between centres ``i`` and ``i+1``), ``r_c``;
- w points ``w``: ``(nz + 1, nx)`` at ``x_c``, ``r_w[k] = k dr`` (``k = 0`` ground, ``k = nz`` model top).

Every operator is a small pure function ``tensor -> tensor`` whose name says which staggering it maps
from and to (``c2u``: centres to u points, ``c2w``: centres to the interior w faces ``k = 1 .. nz-1``, ...).
Dims are always ``(..., level, x)``; x is periodic (``torch.roll``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError, positive_finite

__all__ = [
    "Grid",
    "avg_c2u",
    "diff_c2u",
    "avg_u2c",
    "diff_u2c",
    "avg_c2w",
    "diff_c2w",
    "avg_w2c",
    "diff_w2c",
    "upwind3_face",
    "upwind3_gradient",
]


@dataclass(frozen=True)
class Grid:
    """A periodic-in-x, terrain-following C-grid.

    Parameters
    ----------
    nx, nz
        Number of columns and of layers.
    dx
        Column spacing (m).
    top
        Height of the (flat) model top (m); the computational coordinate ``r`` runs over ``[0, top]``.
    x0
        Position of the left edge (m); default ``-nx dx / 2`` puts ``x = 0`` (the mountain crest) mid-domain.
    """

    nx: int
    nz: int
    dx: float
    top: float
    x0: float | None = None

    def __post_init__(self) -> None:
        for name in ("nx", "nz"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 4:
                raise InputError(f"grid {name} must be an integer >= 4, got {v!r}")
        for name in ("dx", "top"):
            v = getattr(self, name)
            if not positive_finite(v):
                raise InputError(f"grid {name} must be a positive finite number of metres, got {v!r}")

    @property
    def dr(self) -> float:
        """Layer thickness in the computational coordinate (m)."""
        return self.top / self.nz

    @property
    def left(self) -> float:
        return -self.nx * self.dx / 2 if self.x0 is None else float(self.x0)

    @property
    def length(self) -> float:
        """Domain length (m)."""
        return self.nx * self.dx

    def x_c(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """Cell-centre (and w-point) x positions (m), shape ``(nx,)``."""
        return self.left + (torch.arange(self.nx, dtype=dtype, device=device) + 0.5) * self.dx

    def x_u(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """u-point x positions (m), shape ``(nx,)``."""
        return self.left + (torch.arange(self.nx, dtype=dtype, device=device) + 1.0) * self.dx

    def r_c(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """Layer-centre computational heights (m), shape ``(nz,)``."""
        return (torch.arange(self.nz, dtype=dtype, device=device) + 0.5) * self.dr

    def r_w(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> torch.Tensor:
        """w-face computational heights (m), shape ``(nz + 1,)`` (0 = ground, ``top``)."""
        return torch.arange(self.nz + 1, dtype=dtype, device=device) * self.dr


# --- horizontal (periodic) -------------------------------------------------------------------------------


def avg_c2u(phi_c: torch.Tensor) -> torch.Tensor:
    """Centre (or w-column) values -> u points: ``(phi[i] + phi[i+1]) / 2``."""
    return 0.5 * (phi_c + torch.roll(phi_c, -1, dims=-1))


def diff_c2u(phi_c: torch.Tensor, dx: float) -> torch.Tensor:
    """``d phi / dx`` at u points from centre values: ``(phi[i+1] - phi[i]) / dx``."""
    return (torch.roll(phi_c, -1, dims=-1) - phi_c) / dx


def avg_u2c(phi_u: torch.Tensor) -> torch.Tensor:
    """u-point values -> centres: ``(phi[i-1/2] + phi[i+1/2]) / 2``."""
    return 0.5 * (phi_u + torch.roll(phi_u, 1, dims=-1))


def diff_u2c(phi_u: torch.Tensor, dx: float) -> torch.Tensor:
    """``d phi / dx`` at centres from u-point values (flux divergence)."""
    return (phi_u - torch.roll(phi_u, 1, dims=-1)) / dx


def upwind3_face(phi: torch.Tensor, vel: torch.Tensor) -> torch.Tensor:
    """Third-order upwind-biased value of ``phi`` (centred points) on the faces ``i + 1/2`` for face velocity ``vel``."""
    pm1 = torch.roll(phi, 1, dims=-1)
    p1 = torch.roll(phi, -1, dims=-1)
    p2 = torch.roll(phi, -2, dims=-1)
    centred = (7.0 * (phi + p1) - (pm1 + p2)) / 12.0
    diss = (p2 - pm1 - 3.0 * (p1 - phi)) / 12.0
    return centred + torch.sign(vel) * diss


def upwind3_gradient(phi: torch.Tensor, vel: torch.Tensor, dx: float) -> torch.Tensor:
    """Third-order upwind-biased ``d phi / dx`` at the points of ``phi`` for advecting velocity ``vel`` there."""
    pm2 = torch.roll(phi, 2, dims=-1)
    pm1 = torch.roll(phi, 1, dims=-1)
    p1 = torch.roll(phi, -1, dims=-1)
    p2 = torch.roll(phi, -2, dims=-1)
    pos = (2.0 * p1 + 3.0 * phi - 6.0 * pm1 + pm2) / (6.0 * dx)
    neg = (-p2 + 6.0 * p1 - 3.0 * phi - 2.0 * pm1) / (6.0 * dx)
    return torch.where(vel >= 0, pos, neg)


# --- vertical (bounded) -----------------------------------------------------------------------------------


def avg_c2w(phi_c: torch.Tensor) -> torch.Tensor:
    """Centre values -> interior w faces ``k = 1 .. nz-1``: shape ``(nz - 1, nx)``."""
    return 0.5 * (phi_c[..., 1:, :] + phi_c[..., :-1, :])


def diff_c2w(phi_c: torch.Tensor, dr: float) -> torch.Tensor:
    """``d phi / dr`` on the interior w faces from centre values, shape ``(nz - 1, nx)``."""
    return (phi_c[..., 1:, :] - phi_c[..., :-1, :]) / dr


def avg_w2c(phi_w: torch.Tensor) -> torch.Tensor:
    """All w faces ``(nz + 1, nx)`` -> centres ``(nz, nx)``."""
    return 0.5 * (phi_w[..., 1:, :] + phi_w[..., :-1, :])


def diff_w2c(phi_w: torch.Tensor, dr: float) -> torch.Tensor:
    """``d phi / dr`` at centres from all w faces (vertical flux divergence)."""
    return (phi_w[..., 1:, :] - phi_w[..., :-1, :]) / dr
