"""Terrain-following vertical coordinates ``z(x, r)`` and their metric terms by automatic differentiation.

Every coordinate is an ``nn.Module`` with ``height(x, r, terrain, top) -> z`` (m), elementwise in the tensors
``x`` (m) and ``r`` (computational height in ``[0, top]``, m). The metric terms

- Jacobian ``sigma = (dz/dr)_x`` (dimensionless; the layer thickness is ``sigma * dr``),
- slope ``(dz/dx)_r`` (dimensionless),

are obtained by forward-mode automatic differentiation of that function (:func:`coordinate_metrics`, built on
``torch.func.jvp``), never by finite differences. Terrains are differentiable functions of ``x`` as well.

Coordinates (additive form ``z = r + sum_n h_n(x) b_n(r)``):

- ``btf``    basic terrain-following, Gal-Chen & Somerville (1975): ``z = r + h (1 - r/top)``;
- ``hybrid`` Gal-Chen hybrid: ``b = 1 - r/z_flat`` below ``z_flat``, flat above;
- ``sleve``  Schär et al. (2002): ``z = r + h1 b1 + h2 b2``, ``b_i = sinh((top - r)/s_i) / sinh(top/s_i)``;
- ``sleve2`` Leuenberger et al. (2010): ``b_i = sinh((top/s_i)^n - (r/s_i)^n) / sinh((top/s_i)^n)``;
- ``neuve``  learned (Whittaker et al. 2025): ``z = h + (top - h) G(x, eta) / G(x, 1)``, ``eta = r/top``,
  ``G = integral_0^eta g``, where the integrand ``g`` interpolates positive knot values ``softplus(MLP(terrain
  features at x))`` linearly in ``eta`` and is integrated exactly: ``dz/deta > 0`` for any weights.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError, positive_finite
from ..registry import register_model

__all__ = [
    "Terrain",
    "schaer_terrain",
    "VerticalCoordinate",
    "BasicTerrainFollowing",
    "Hybrid",
    "Sleve",
    "Sleve2",
    "Neuve",
    "Metrics",
    "coordinate_metrics",
    "check_monotonic",
    "make_coordinate",
    "COORDINATES",
    "WEIGHTS_DIR",
]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


# --- terrain ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Terrain:
    """A Schär-type terrain ``h(x) = h0 exp(-(x/a)^2) cos^2(pi x / lam)`` (m) and its large-scale part.

    ``h_large = h0/2 exp(-(x/a)^2)`` is the natural SLEVE split (the mean of cos^2); ``h_small = h - h_large``.
    ``lam = 0`` (or ``inf``) drops the corrugations (a Gaussian ridge, ``h_large = h/2``). ``h0 = 0``: flat ground.
    """

    h0: float = 250.0
    a: float = 5000.0
    lam: float = 4000.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.h0) or self.h0 < 0:
            raise InputError(f"terrain height h0 must be a finite number >= 0 m, got {self.h0!r}")
        if not (math.isfinite(self.a) and self.a > 0):
            raise InputError(f"terrain half-width a must be > 0 m, got {self.a!r}")
        if math.isnan(self.lam) or self.lam < 0:
            raise InputError(f"terrain corrugation wavelength lam must be >= 0 m (0 or inf: none), got {self.lam!r}")

    def envelope(self, x: torch.Tensor) -> torch.Tensor:
        return self.h0 * torch.exp(-((x / self.a) ** 2))

    def h(self, x: torch.Tensor) -> torch.Tensor:
        """Terrain height (m) at ``x`` (m)."""
        if self.lam == 0 or math.isinf(self.lam):
            return self.envelope(x)
        return self.envelope(x) * torch.cos(math.pi * x / self.lam) ** 2

    def h_large(self, x: torch.Tensor) -> torch.Tensor:
        """Large-scale part of the terrain (m), SLEVE's ``h1``."""
        return 0.5 * self.envelope(x)

    def h_small(self, x: torch.Tensor) -> torch.Tensor:
        """Small-scale part ``h - h_large`` (m), SLEVE's ``h2``."""
        return self.h(x) - self.h_large(x)


def schaer_terrain(h0: float = 250.0, a: float = 5000.0, lam: float = 4000.0) -> Terrain:
    """The Schär (2002) terrain (defaults: h0 = 250 m, a = 5 km, lambda = 4 km)."""
    return Terrain(float(h0), float(a), float(lam))


# --- coordinates ------------------------------------------------------------------------------------------


class VerticalCoordinate(nn.Module):
    """Base class: ``height(x, r, terrain, top)`` -> physical height ``z`` (m), elementwise."""

    name = "coordinate"

    def height(self, x: torch.Tensor, r: torch.Tensor, terrain: Terrain, top: float) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, r: torch.Tensor, terrain: Terrain, top: float) -> torch.Tensor:
        return self.height(x, r, terrain, top)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in getattr(self, "config", {}).items())


class BasicTerrainFollowing(VerticalCoordinate):
    """Gal-Chen & Somerville (1975): ``z = r + h(x) (1 - r/top)``."""

    name = "btf"

    def __init__(self) -> None:
        super().__init__()
        self.config: dict[str, Any] = {}

    def height(self, x: torch.Tensor, r: torch.Tensor, terrain: Terrain, top: float) -> torch.Tensor:
        return r + terrain.h(x) * (1.0 - r / top)


class Hybrid(VerticalCoordinate):
    """Gal-Chen hybrid: ``z = r + h(x) max(0, 1 - r/z_flat)`` (levels flat above ``z_flat``, m)."""

    name = "hybrid"

    def __init__(self, z_flat: float = 10000.0) -> None:
        super().__init__()
        if not z_flat > 0:
            raise InputError(f"hybrid z_flat must be > 0 m, got {z_flat!r}")
        self.z_flat = float(z_flat)
        self.config = {"z_flat": self.z_flat}

    def height(self, x: torch.Tensor, r: torch.Tensor, terrain: Terrain, top: float) -> torch.Tensor:
        zf = min(self.z_flat, top)
        return r + terrain.h(x) * torch.clamp(1.0 - r / zf, min=0.0)


def _sinh_ratio(a: torch.Tensor | float, b: torch.Tensor) -> torch.Tensor:
    """``sinh(a - b) / sinh(a)`` for ``a >= b >= 0``, written with exponentials that cannot overflow."""
    a = torch.as_tensor(a, dtype=b.dtype, device=b.device)
    return (torch.exp(-b) - torch.exp(b - 2.0 * a)) / (-torch.expm1(-2.0 * a))


class Sleve2(VerticalCoordinate):
    """SLEVE2 (Leuenberger et al. 2010): ``b_i = sinh((top/s_i)^n - (r/s_i)^n) / sinh((top/s_i)^n)``.

    Parameters
    ----------
    s1, s2
        Decay scales (m) of the large- and small-scale terrain parts.
    n
        Decay exponent (1 = the original SLEVE; Leuenberger's optimum 1.35).
    """

    name = "sleve2"

    def __init__(self, s1: float = 4000.0, s2: float = 1000.0, n: float = 1.35) -> None:
        super().__init__()
        if not positive_finite(s1, s2, n):
            raise InputError(f"SLEVE decay scales and exponent must be finite numbers > 0, got s1={s1!r}, s2={s2!r}, "
                             f"n={n!r}")
        if n < 1:  # (r/s)^n has an infinite slope at the ground for n < 1: dz/dr there is not finite
            raise InputError(f"the SLEVE2 exponent n must be >= 1 (1 = SLEVE, Leuenberger's optimum 1.35), got {n!r}")
        self.s1, self.s2, self.n = float(s1), float(s2), float(n)
        self.config = {"s1": self.s1, "s2": self.s2, "n": self.n}

    def decay(self, r: torch.Tensor, s: float, top: float) -> torch.Tensor:
        rs = torch.clamp(r / s, min=0.0)
        b = rs if self.n == 1.0 else rs.pow(self.n)
        return _sinh_ratio((top / s) ** self.n, b)

    def height(self, x: torch.Tensor, r: torch.Tensor, terrain: Terrain, top: float) -> torch.Tensor:
        return r + terrain.h_large(x) * self.decay(r, self.s1, top) + terrain.h_small(x) * self.decay(r, self.s2, top)


class Sleve(Sleve2):
    """SLEVE (Schär et al. 2002): SLEVE2 with ``n = 1``; defaults ``s1 = 10 km``, ``s2 = 2.5 km`` (top/2, top/8 at 20 km)."""

    name = "sleve"

    def __init__(self, s1: float = 10000.0, s2: float = 2500.0) -> None:
        super().__init__(s1, s2, 1.0)
        self.config = {"s1": self.s1, "s2": self.s2}


@register_model("neuve", kind="dycore", weights_dir=WEIGHTS_DIR)
class Neuve(VerticalCoordinate):
    """NEUVE: a learned, monotonic-by-construction terrain-following coordinate.

    ``z(x, eta) = h + (top - h) G(x, eta) / G(x, 1)`` with ``eta = r / top`` and ``G(x, eta) = integral_0^eta
    g(x, s) ds``. The integrand ``g`` is the piecewise-linear interpolant in ``eta`` of positive knot values
    ``g_k(x) = softplus(MLP(f(x)))_k + 1e-3`` at ``knots`` points ``eta_k = (k / (knots - 1))^stretch`` (denser
    near the ground), integrated exactly (piecewise quadratic), with terrain features ``f = (h_large, h_small) /
    feature_scale``. Hence ``dz/dr = (top - h) g / (top G(1)) > 0`` wherever ``h < top``, for any network weights.

    Parameters
    ----------
    hidden
        Width of the two hidden layers (tanh).
    knots
        Number of knots of the integrand in ``eta``.
    stretch
        Knot-spacing exponent (1 = uniform).
    feature_scale
        Terrain-height scale (m) dividing the features.
    """

    name = "neuve"
    model_name = "neuve"

    def __init__(self, hidden: int = 32, knots: int = 24, stretch: float = 1.5, feature_scale: float = 1000.0) -> None:
        super().__init__()
        for nm, v, lo in (("hidden", hidden, 1), ("knots", knots, 2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise InputError(f"neuve {nm} must be an integer >= {lo}, got {v!r}")
        if not positive_finite(stretch, feature_scale):
            raise InputError(f"neuve stretch and feature_scale must be finite numbers > 0, got {stretch!r}, "
                             f"{feature_scale!r}")
        self.config = {"hidden": hidden, "knots": knots, "stretch": float(stretch), "feature_scale": float(feature_scale)}
        self.feature_scale = float(feature_scale)
        eta = (torch.arange(knots, dtype=torch.float64) / (knots - 1)) ** float(stretch)
        self.register_buffer("eta_knots", eta, persistent=False)
        self.net = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, knots))
        with torch.no_grad():  # start as BTF: equal knot values
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.fill_(0.5413)  # softplus^-1(1)

    def knot_values(self, x: torch.Tensor, terrain: Terrain) -> torch.Tensor:
        """Positive integrand values ``g_k(x)``, shape ``x.shape + (knots,)``."""
        feats = torch.stack([terrain.h_large(x), terrain.h_small(x)], dim=-1) / self.feature_scale
        p = next(self.net.parameters())
        out = self.net(feats.to(p.dtype)).to(x.dtype)
        return F.softplus(out) + 1e-3

    def integral(self, g: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """``integral_0^eta`` of the piecewise-linear interpolant of ``g`` (``(..., knots)``) at ``eta`` (``(...)``)."""
        ek = self.eta_knots.to(eta.dtype)
        d = ek[1:] - ek[:-1]
        # covered length of every interval: the part of (e_k, e_k+1) below eta. Exactly one interval (the one with
        # e_k <= eta < e_k+1; the last one also at eta = 1) carries the derivative in eta: min/clamp split it at a
        # knot (a tie), which made dz/dr 1.5x too large at interior knots and 0.5x at the lid (found by an audit)
        t = eta.unsqueeze(-1) - ek[:-1]
        td = t.detach()
        upper = td < d
        upper[..., -1] = td[..., -1] <= d[-1]
        ell = torch.where((td >= 0) & upper, t, torch.where(td >= d, d.expand_as(t), torch.zeros_like(t)))
        g0, g1 = g[..., :-1], g[..., 1:]
        return (g0 * ell + (g1 - g0) * ell * ell / (2.0 * d)).sum(-1)

    def height(self, x: torch.Tensor, r: torch.Tensor, terrain: Terrain, top: float) -> torch.Tensor:
        x, r = torch.broadcast_tensors(x, r)
        g = self.knot_values(x, terrain)
        eta = r / top
        ratio = self.integral(g, eta) / self.integral(g, torch.ones_like(eta))
        h = terrain.h(x)
        return h + (top - h) * ratio


COORDINATES: dict[str, Callable[..., VerticalCoordinate]] = {
    "btf": BasicTerrainFollowing,
    "hybrid": Hybrid,
    "sleve": Sleve,
    "sleve2": Sleve2,
    "neuve": Neuve,
}


def make_coordinate(coordinate: str | VerticalCoordinate, pretrained: bool = True, **options: Any) -> VerticalCoordinate:
    """A coordinate by name (``btf``, ``hybrid``, ``sleve``, ``sleve2``, ``neuve``), the path of saved NEUVE weights
    (:func:`skydiff.registry.load_model`; e.g. from ``skydiff dycore train``), or pass-through of a module.

    ``neuve`` with ``pretrained=True`` loads the shipped trained coordinate (``dycore/weights/neuve.safetensors``).
    """
    if isinstance(coordinate, VerticalCoordinate):
        return coordinate
    if isinstance(coordinate, os.PathLike):  # (a Path was "unknown", its string form worked)
        coordinate = os.fspath(coordinate)
    if isinstance(coordinate, str) and coordinate.lower() not in COORDINATES and _is_weights(coordinate):
        from ..registry import load_model

        if options:
            raise InputError(f"a saved coordinate ({coordinate}) takes no options, got {sorted(options)}")
        loaded = load_model(coordinate)
        if not isinstance(loaded, VerticalCoordinate):
            raise InputError(f"{coordinate} holds a {type(loaded).__name__}, not a vertical coordinate")
        return loaded.double()
    if not isinstance(coordinate, str) or coordinate.lower() not in COORDINATES:
        raise InputError(f"unknown vertical coordinate {coordinate!r}; available: {', '.join(COORDINATES)} or the "
                         "path of saved NEUVE weights (e.g. from skydiff dycore train)")
    key = coordinate.lower()
    if key == "neuve":
        from ..registry import create_model

        return create_model("neuve", pretrained=pretrained, **options)  # type: ignore[return-value]
    try:
        return COORDINATES[key](**options)
    except TypeError as exc:
        raise InputError(f"bad option for coordinate {key!r}: {exc}") from None


def _is_weights(path: str) -> bool:
    """Whether ``path`` (a stem or ``.safetensors`` file) names saved skydiff weights (with their ``.json`` card)."""
    from ..registry import weights_paths

    return any(p.is_file() for p in weights_paths(path))


# --- metrics ----------------------------------------------------------------------------------------------


class Metrics(NamedTuple):
    """Height ``z`` (m), Jacobian ``sigma = dz/dr`` and slope ``dz/dx`` at the given points (same shape)."""

    z: torch.Tensor
    sigma: torch.Tensor
    slope: torch.Tensor


def coordinate_metrics(
    coordinate: VerticalCoordinate, terrain: Terrain, x: torch.Tensor, r: torch.Tensor, top: float
) -> Metrics:
    """Height and metric terms of ``coordinate`` at points ``(x, r)`` by forward-mode AD (``torch.func.jvp``).

    Parameters
    ----------
    x, r
        Broadcastable tensors of horizontal position and computational height (m). Gradients flow to the
        coordinate's parameters (training) and, if they require grad, to ``x`` and ``r``.
    """
    x, r = (t.contiguous().clone() for t in torch.broadcast_tensors(x, r))

    def f(xx: torch.Tensor, rr: torch.Tensor) -> torch.Tensor:
        return coordinate.height(xx, rr, terrain, top)

    name = getattr(coordinate, "name", type(coordinate).__name__)
    try:
        z, slope = torch.func.jvp(f, (x, r), (torch.ones_like(x), torch.zeros_like(r)))
        _, sigma = torch.func.jvp(f, (x, r), (torch.zeros_like(x), torch.ones_like(r)))
    except (RuntimeError, TypeError, ValueError) as exc:  # e.g. a height() through numpy, which jvp cannot follow
        raise InputError(f"vertical coordinate {name!r}: height(x, r, terrain, top) must be a torch function that "
                         "torch.func.jvp can differentiate (no numpy, no in-place writes to its inputs): "
                         f"{exc}") from None
    if not isinstance(z, torch.Tensor) or z.shape != x.shape:
        raise InputError(f"vertical coordinate {name!r}: height() must return a tensor of the points' shape "
                         f"{tuple(x.shape)}, got {tuple(getattr(z, 'shape', ()))}")
    return Metrics(z, sigma, slope)


def check_monotonic(metrics: Metrics, x: torch.Tensor, r: torch.Tensor, name: str) -> None:
    """Raise :class:`InputError` if the coordinate folds (``sigma <= 0``) or is not finite anywhere."""
    sig = metrics.sigma.detach()
    nonfinite = ~torch.isfinite(sig) | ~torch.isfinite(metrics.z.detach())
    bad = ~(sig > 0) | nonfinite
    if bool(bad.any()):
        x, r = torch.broadcast_tensors(x, r)
        if bool(nonfinite.any()):  # NaN/inf comes from a bad terrain or coordinate parameter, not from a fold
            idx = int(torch.nonzero(nonfinite.flatten())[0])
            raise InputError(
                f"vertical coordinate {name!r} gives non-finite heights or dz/dr ({float(sig.flatten()[idx]):.3g}) "
                f"at x = {float(x.flatten()[idx]) / 1000:.2f} km, r = {float(r.flatten()[idx]) / 1000:.2f} km "
                f"({int(nonfinite.sum())} points); check the terrain and coordinate parameters for NaN or inf"
            )
        idx = int(torch.nonzero(bad.flatten())[0])
        raise InputError(
            f"vertical coordinate {name!r} folds over this terrain: dz/dr = {float(sig.flatten()[idx]):.3g} <= 0 "
            f"at x = {float(x.flatten()[idx]) / 1000:.2f} km, r = {float(r.flatten()[idx]) / 1000:.2f} km "
            f"({int(bad.sum())} points); use lower terrain, larger decay scales or a different coordinate"
        )
