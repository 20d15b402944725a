"""2-D compressible non-hydrostatic Euler equations in a terrain-following coordinate (tendencies).

Prognostic variables (a :class:`State`), perturbations about a discretely hydrostatic reference state:

- ``m``  = ``sigma (rho - rho_ref)`` at centres ``(nz, nx)`` (kg m^-3): mass per computational volume,
- ``th`` = ``sigma (rho theta - rho_ref theta_ref)`` at centres ``(nz, nx)`` (K kg m^-3),
- ``u``  horizontal wind at u points ``(nz, nx)`` (m/s),
- ``w``  vertical wind at the interior w faces ``(nz - 1, nx)`` (m/s); at the ground ``w = (dz/dx)_r u`` (free
  slip, contravariant ``w~ = w - (dz/dx)_r u = 0``), at the flat lid ``w = 0``.

Mass and ``rho theta`` are in flux form, ``d(sigma rho)/dt + d(sigma rho u)/dx + d(rho w~)/dr = 0``, so total mass
``sum(m) dx dr`` is conserved to round-off; momentum is in advective form. Pressure gradients use the Exner
function, ``-cp theta grad(pi)``, with the reference part removed exactly: the reference Exner ``pi_ref`` of every
column is integrated discretely, ``cp theta_ref,w (pi_ref[k] - pi_ref[k-1]) / (sigma_w dr) = -g``, so the vertical
force reduces to ``-cp theta d(pi')/dz + g theta'/theta_ref`` and the horizontal one to ``-cp theta (d pi'/dx)_z``,
evaluated at constant height by interpolating both neighbouring columns to the u-point height
(:func:`horizontal_gradient_z`).
Horizontal advection is 3rd-order upwind-biased (of ``theta'`` in the ``rho theta`` flux), vertical advection
2nd-order centred. A Rayleigh sponge relaxes ``u``, ``w`` and ``th`` (never ``m``) towards targets. An optional
explicit diffusion (``Model.diffusion``, m^2/s; 0 by default) filters the small scales (:func:`tendencies`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ..errors import InputError
from .coordinates import Terrain, VerticalCoordinate, check_monotonic, coordinate_metrics
from .grid import (
    Grid,
    avg_c2u,
    avg_c2w,
    avg_u2c,
    diff_c2u,
    diff_c2w,
    diff_u2c,
    diff_w2c,
    upwind3_face,
    upwind3_gradient,
)

__all__ = [
    "G",
    "RD",
    "CP",
    "CV",
    "P0",
    "State",
    "Geometry",
    "Reference",
    "Sponge",
    "Model",
    "geometry",
    "hydrostatic_exner",
    "column_state",
    "reference_state",
    "tendencies",
    "horizontal_gradient_z",
    "total_mass",
    "full_w",
]

G = 9.81  # m s^-2
RD = 287.0  # J kg^-1 K^-1
CP = 1004.5  # J kg^-1 K^-1
CV = CP - RD
P0 = 1.0e5  # Pa
KAPPA = RD / CP


class State(NamedTuple):
    """Prognostic perturbations (see the module docstring for units and shapes)."""

    m: torch.Tensor
    th: torch.Tensor
    u: torch.Tensor
    w: torch.Tensor


class Geometry(NamedTuple):
    """Positions (m) and AD metric terms at centres ``c`` ``(nz, nx)``, u points ``(nz, nx)`` and w faces ``(nz+1, nx)``."""

    x_c: torch.Tensor
    z_c: torch.Tensor
    sigma_c: torch.Tensor
    sigma_u: torch.Tensor
    slope_u: torch.Tensor
    z_w: torch.Tensor
    sigma_w: torch.Tensor
    slope_w: torch.Tensor


class Reference(NamedTuple):
    """Reference state: ``theta_c``, ``exner_c``, ``m_c = sigma rho_ref``, ``th_c = sigma rho_ref theta_ref`` at
    centres, and ``theta_w = avg(theta_c)`` at the interior w faces (the value used in the discrete balance)."""

    theta_c: torch.Tensor
    exner_c: torch.Tensor
    m_c: torch.Tensor
    th_c: torch.Tensor
    theta_w: torch.Tensor


class Sponge(NamedTuple):
    """Relaxation rates (s^-1) at centres, u points, interior w faces, and the targets of ``u`` and of
    ``th - theta_ref m`` (the potential-temperature perturbation times the mass: the sponge relaxes theta', not
    sigma rho theta, which compressed air in the sponge would turn into a spurious cold anomaly)."""

    mu_c: torch.Tensor
    mu_u: torch.Tensor
    mu_w: torch.Tensor
    u_target: torch.Tensor
    th_target: torch.Tensor


class Model(NamedTuple):
    """Everything the tendencies need besides the state; ``diffusion``: the coefficient ``K`` (m^2/s) of an explicit
    second-order diffusion of ``u``, ``w`` and ``theta'`` (0: none, the default; see :func:`tendencies`) and
    ``theta_rest`` the ``theta'`` it leaves alone (a balanced initial profile other than the reference, e.g. the
    Klemp inversion; None: 0)."""

    geom: Geometry
    ref: Reference
    sponge: Sponge
    dx: float
    dr: float
    diffusion: float = 0.0
    theta_rest: torch.Tensor | None = None  # theta' of the balanced initial columns (centres), where not 0


def geometry(
    grid: Grid,
    coordinate: VerticalCoordinate,
    terrain: Terrain,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    name: str | None = None,
) -> Geometry:
    """Heights and metric terms of ``coordinate`` on ``grid`` (AD, :func:`coordinate_metrics`); checks for folds."""
    xc, xu = grid.x_c(dtype, device), grid.x_u(dtype, device)
    rc, rw = grid.r_c(dtype, device)[:, None], grid.r_w(dtype, device)[:, None]
    mc = coordinate_metrics(coordinate, terrain, xc[None, :], rc, grid.top)
    mu = coordinate_metrics(coordinate, terrain, xu[None, :], rc, grid.top)
    mw = coordinate_metrics(coordinate, terrain, xc[None, :], rw, grid.top)
    label = name or getattr(coordinate, "name", type(coordinate).__name__)
    for m, xx, rr in ((mc, xc[None, :], rc), (mu, xu[None, :], rc), (mw, xc[None, :], rw)):
        check_monotonic(m, xx, rr, label)
    _check_bounds(mw.z.detach(), terrain.h(xc).detach(), grid.top, label)
    return Geometry(xc, mc.z, mc.sigma, mu.sigma, mu.slope, mw.z, mw.sigma, mw.slope)


def _check_bounds(z_w: torch.Tensor, h: torch.Tensor, top: float, name: str) -> None:
    """:class:`InputError` unless the lowest w faces lie on the terrain ``h`` and the highest at ``top`` (to 1 cm or
    1e-6 of the top): a coordinate that misses them would simulate another terrain or domain without a word."""
    tol = max(0.01, 1e-6 * top)
    for where, got, want in (("the ground", z_w[0], h), ("the model top", z_w[-1], torch.full_like(h, top))):
        miss = (got - want).abs()
        if float(miss.max()) > tol:
            i = int(miss.argmax())
            raise InputError(f"vertical coordinate {name!r} does not reach {where}: z = {float(got[i]):.2f} m where "
                             f"it should be {float(want[i]):.2f} m (column {i}); a coordinate must map r = 0 to the "
                             "terrain and r = top to the top")


def hydrostatic_exner(theta_c: torch.Tensor, sigma_w: torch.Tensor, dr: float, exner_bottom: torch.Tensor) -> torch.Tensor:
    """Discretely hydrostatic Exner function at centres.

    ``pi[k] = pi[k-1] - g sigma_w[k] dr / (cp avg(theta)[k])`` upwards from ``exner_bottom`` (the value in the
    lowest layer, shape ``(nx,)``); ``theta_c`` ``(nz, nx)`` (K), ``sigma_w`` all faces ``(nz + 1, nx)``.
    """
    theta_w = avg_c2w(theta_c)
    dpi = -G * sigma_w[1:-1] * dr / (CP * theta_w)
    return torch.cat([exner_bottom[None], exner_bottom[None] + torch.cumsum(dpi, dim=0)], dim=0)


def column_state(exner_c: torch.Tensor, theta_c: torch.Tensor, sigma_c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma rho, sigma rho theta)`` from Exner and theta by the equation of state ``rho theta = p0 pi^(cv/R) / R``."""
    rth = P0 * exner_c.pow(CV / RD) / RD
    return sigma_c * rth / theta_c, sigma_c * rth


def reference_state(
    geom: Geometry, grid: Grid, theta: Callable[[torch.Tensor], torch.Tensor], exner: Callable[[torch.Tensor], torch.Tensor]
) -> Reference:
    """Discretely balanced reference state for a potential-temperature profile ``theta(z)`` (K).

    ``exner(z)`` gives the (analytic) Exner value used in the lowest layer only; above it is integrated discretely.
    """
    theta_c = theta(geom.z_c)
    exner_c = hydrostatic_exner(theta_c, geom.sigma_w, grid.dr, exner(geom.z_c[0]))
    m_c, th_c = column_state(exner_c, theta_c, geom.sigma_c)
    return Reference(theta_c, exner_c, m_c, th_c, avg_c2w(theta_c))


def full_w(state: State, geom: Geometry) -> torch.Tensor:
    """w on all faces ``(nz + 1, nx)``: diagnosed free-slip value at the ground, prognostic inside, 0 at the lid."""
    w0 = geom.slope_w[0] * avg_u2c(state.u[0])
    return torch.cat([w0[None], state.w, torch.zeros_like(w0)[None]], dim=0)


def total_mass(state: State, ref: Reference, dx: float, dr: float) -> torch.Tensor:
    """Total mass per unit y-length (kg/m): ``sum(sigma rho) dx dr``."""
    return ((ref.m_c + state.m) * (dx * dr)).sum()


def horizontal_gradient_z(phi_c: torch.Tensor, z_c: torch.Tensor, dx: float) -> torch.Tensor:
    """``(d phi / dx)`` at constant height on the u points, from centre values ``phi_c`` at heights ``z_c`` (m).

    Both neighbouring columns are linearly interpolated in z to the height of the u point, ``(z[i] + z[i+1]) / 2``,
    using the vertical gradient on the face *towards* that height (above in the lower column, below in the higher
    one; one-sided at the ground and the lid), so ``(phi[i+1] - phi[i] - dz/2 (g_i + g_{i+1})) / dx`` with the
    discrete slope ``dz = z[i+1] - z[i]``. It is exact for ``phi`` linear in z at any slope, and unlike the
    4-point-averaged ``(dphi/dx)_r - (dz/dx)_r (dphi/dz)`` it does not average the vertical gradient across the
    level, which on the steep Klemp (2011) terrain cut the spurious max |w| after 1 h ~5x (see RESULTS §7).
    """
    g_w = diff_c2w(phi_c, 1.0) / (z_c[1:] - z_c[:-1])
    g_up = torch.cat([g_w, g_w[-1:]], dim=0)  # gradient on the face above each centre
    g_dn = torch.cat([g_w[:1], g_w], dim=0)  # ... and below
    dz = diff_c2u(z_c, 1.0)
    up = dz >= 0
    g_left = torch.where(up, g_up, g_dn)
    g_right = torch.where(up, torch.roll(g_dn, -1, dims=-1), torch.roll(g_up, -1, dims=-1))
    return (diff_c2u(phi_c, 1.0) - 0.5 * dz * (g_left + g_right)) / dx


def _pow1p_minus1(x: torch.Tensor, k: float) -> torch.Tensor:
    """``(1 + x)^k - 1`` without cancellation for small ``x``: ``expm1(k log1p(x))``.

    Compiled by inductor (``compile=True``), ``expm1`` of float64 loses up to ~1e-7 relative for tiny arguments
    (measured for arguments 1e-9...1e-3: it behaves like ``exp(y) - 1``); there Kahan's
    ``expm1(y) = (e^y - 1) y / log(e^y)`` is used instead (measured exact to 4e-16, also its gradient).
    """
    y = k * torch.log1p(x)
    if not torch.compiler.is_compiling():
        return torch.expm1(y)
    u = torch.exp(y)
    d = torch.log(u)
    tiny = d == 0
    return torch.where(tiny, y, (u - 1.0) * (y / torch.where(tiny, torch.ones_like(d), d)))


def _laplacian(f: torch.Tensor, dx: float, dz: torch.Tensor, below: torch.Tensor | None = None,
               above: torch.Tensor | None = None) -> torch.Tensor:
    """Second differences of ``f`` ``(levels, x)``: along the coordinate surfaces (periodic, spacing ``dx``) plus in
    the vertical with the local layer depth ``dz`` (m, ``f``'s shape); ``below``/``above``: the values beyond the
    first/last level (default ``f``'s own there: no flux through the ground and the lid)."""
    dn = torch.cat([f[:1] if below is None else below, f[:-1]], dim=0)
    up = torch.cat([f[1:], f[-1:] if above is None else above], dim=0)
    return (torch.roll(f, 1, -1) - 2.0 * f + torch.roll(f, -1, -1)) / dx**2 + (up - 2.0 * f + dn) / dz**2


def tendencies(state: State, model: Model) -> State:
    """Time tendencies of every prognostic variable (same shapes and units per second).

    With ``model.diffusion = K > 0`` each of ``u``, ``w`` and ``theta' - theta_rest`` (the deviation from the
    balanced initial columns, so that a state at rest stays at rest) also diffuses, ``K`` times
    :func:`_laplacian` (along the coordinate surfaces and in height): a numerical filter of the non-dissipative
    scheme, as Klemp (2011) ran his resting-atmosphere test with eddy diffusion (RESULTS §7i: K = 10 m^2/s stops
    the late growth of the spurious Klemp circulation with SLEVE, K = 30 with the shipped NEUVE).
    """
    geom, ref, sp, dx, dr = model.geom, model.ref, model.sponge, model.dx, model.dr
    m_full = ref.m_c + state.m
    rho = m_full / geom.sigma_c
    theta = (ref.th_c + state.th) / m_full
    theta_p = (state.th - ref.theta_c * state.m) / m_full  # theta - theta_ref, without cancellation
    exner_p = ref.exner_c * _pow1p_minus1(state.th / ref.th_c, RD / CV)
    u, w_int = state.u, state.w

    # contravariant vertical velocity w~ = w - (dz/dx)_r u on the faces (0 at ground and lid)
    u_c = avg_u2c(u)
    u_w = avg_c2w(u_c)
    wt_int = w_int - geom.slope_w[1:-1] * u_w
    zero = torch.zeros_like(u_c[:1])
    wt = torch.cat([zero, wt_int, zero], dim=0)

    # mass and rho-theta fluxes
    fx = geom.sigma_u * avg_c2u(rho) * u
    fr = torch.cat([zero, avg_c2w(rho) * wt_int, zero], dim=0)
    dm = -diff_u2c(fx, dx) - diff_w2c(fr, dr)
    theta_u = avg_c2u(ref.theta_c) + upwind3_face(theta_p, u)
    theta_w = avg_c2w(theta)
    dth = -diff_u2c(fx * theta_u, dx) - diff_w2c(torch.cat([zero, fr[1:-1] * theta_w, zero], dim=0), dr)

    # u: advection, pressure gradient (dpi'/dx)_z = (dpi'/dx)_r - (dz/dx)_r / sigma (dpi'/dr)
    rdot = wt / geom.sigma_w
    rdot_u = avg_c2u(rdot)
    du_dr = torch.cat([zero, diff_c2w(u, 1.0), zero], dim=0)
    adv_u = u * upwind3_gradient(u, u, dx) + 0.5 * (rdot_u[1:] * du_dr[1:] + rdot_u[:-1] * du_dr[:-1]) / dr
    dpi_w = diff_c2w(exner_p, dr)
    pgf_u = -CP * avg_c2u(theta) * horizontal_gradient_z(exner_p, geom.z_c, dx)
    du = -adv_u + pgf_u - sp.mu_u * (u - sp.u_target)

    # w (interior faces): advection, vertical pressure gradient and buoyancy about the reference
    w = torch.cat([geom.slope_w[:1] * u_c[:1], w_int, zero], dim=0)
    adv_w = u_w * upwind3_gradient(w_int, u_w, dx) + rdot[1:-1] * (w[2:] - w[:-2]) / (2.0 * dr)
    pgf_w = -CP * theta_w * dpi_w / geom.sigma_w[1:-1] + G * (theta_w - ref.theta_w) / ref.theta_w
    dw = -adv_w + pgf_w - sp.mu_w * w_int

    dth = dth - sp.mu_c * (state.th - ref.theta_c * state.m - sp.th_target)
    if model.diffusion > 0:
        k = model.diffusion
        du = du + k * _laplacian(u, dx, geom.sigma_u * dr)
        dw = dw + k * _laplacian(w_int, dx, geom.sigma_w[1:-1] * dr, below=w[:1], above=zero)
        dev = theta_p if model.theta_rest is None else theta_p - model.theta_rest
        dth = dth + k * m_full * _laplacian(dev, dx, geom.sigma_c * dr)
    return State(dm, dth, du, dw)
