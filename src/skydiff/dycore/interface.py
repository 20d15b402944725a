"""``skydiff.dycore.run``: run a test case and return an ``xarray.Dataset``."""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch

from ..errors import InputError, check_device, positive_finite
from .cases import build, error_window, get_case, schaer_linear_w, w_error
from .coordinates import VerticalCoordinate, make_coordinate
from .equations import full_w
from .grid import avg_u2c
from .stepping import _round_down, check_dt, integrate, stable_dt

__all__ = ["run"]

_CASE_KEYS = {"dx", "nz", "top", "length", "h0", "a", "lam", "dtheta", "width"}


def _default_dt(limit: float) -> float:
    """95 % of a stability limit (s), rounded down (:func:`~skydiff.dycore.stepping._round_down`)."""
    return _round_down(0.95 * limit)


def _warn_terrain(cs: Any, options: dict[str, Any]) -> None:
    """Warn where terrain options have no effect (flat ground) or the grid cannot resolve the terrain asked for."""
    from ..errors import warn

    t, dx = cs.terrain, cs.grid.dx
    if t.h0 == 0 and {"a", "lam"} & set(options):
        warn(f"a and lam shape the terrain, but the case {cs.name!r} runs over flat ground here (h0 = 0): they have "
             "no effect" + ("; the perturbation's half-width is width=" if cs.name == "skamarock-klemp" else ""))
    elif t.h0 > 0 and (t.a < 2 * dx or 0 < t.lam < 4 * dx):
        warn(f"terrain a = {t.a:g} m, lam = {t.lam:g} m on dx = {dx:g} m: the grid cannot resolve it (a >= 2 dx "
             "and lam >= 4 dx are needed; narrower terrain is lost or aliased between the grid points)")


#: most time steps one run takes (1e8: years on a CPU; far more is a mistaken dt or hours)
MAX_STEPS = 1e8


def run(
    case: str,
    coordinate: str | VerticalCoordinate = "sleve",
    hours: float | None = None,
    *,
    dt: float | None = None,
    dtype: torch.dtype | str = torch.float64,
    device: str | torch.device | None = None,
    progress: bool = False,
    coordinate_options: dict[str, Any] | None = None,
    compile: bool = False,
    diffusion: float = 0.0,
    **options: Any,
) -> Any:
    """Run a dycore test case.

    Parameters
    ----------
    case
        ``"schaer"``, ``"klemp2011"``, ``"skamarock-klemp"`` or ``"bubble"``.
    coordinate
        ``"btf"``, ``"hybrid"``, ``"sleve"``, ``"sleve2"``, ``"neuve"`` (the shipped trained coordinate) or a
        :class:`~skydiff.dycore.coordinates.VerticalCoordinate` module.
    hours
        Simulated time (h); default the case's (5 h for ``schaer`` and ``klemp2011``). Rounded to a whole number
        of time steps (the result's ``hours`` attribute is the time simulated); rounding to 0 steps is refused.
    dt
        Time step (s). Default: the case's, or 95 % of the explicit stability limit (rounded down to 1 ms) where
        the coordinate's thinnest layer needs a smaller one (e.g. ``"neuve"`` on ``schaer``: 0.74 s instead of
        0.75 s); the step used is the result's ``dt_s`` attribute. Compare coordinates at one given ``dt``. A
        given ``dt`` is checked against the stability limit before running.
    dtype, device
        ``torch.float64`` (default) or ``torch.float32`` (or the strings ``"float64"``/``"float32"``); CPU or CUDA.
    progress
        Show a progress bar over the time steps.
    coordinate_options
        Keyword options of the coordinate (e.g. ``{"s1": 8000, "s2": 2000}`` for SLEVE).
    compile
        Run the time steps compiled with ``torch.compile`` (~3.5x faster on one CPU thread after ~10 s of
        compilation; needs a C++ compiler, or Triton on CUDA; see :func:`skydiff.dycore.stepping.step_function`).
    diffusion
        Coefficient K (m^2/s) of an explicit second-order diffusion of u, w and theta' (along the coordinate
        surfaces and in height; 0, the default, is none and gives every figure of ``benchmarks/RESULTS.md`` §7-§7h).
        A numerical filter, as in Klemp's (2011) resting-atmosphere runs: K = 10 stops the late growth of the
        spurious Klemp circulation with SLEVE, K = 30 with the shipped NEUVE (§7i). It lowers the stability limit
        (``dt_limit_s``) where K is large.
    **options
        Case options: ``dx``, ``nz``, ``top``, ``length`` (m; a whole number of ``dx``), terrain ``h0``, ``a``,
        ``lam`` (m); ``dtheta`` (K, ``bubble``) and ``width`` (m, ``skamarock-klemp``) where the case has them.

    Returns
    -------
    xarray.Dataset
        ``w`` (m/s) on ``(level, x)`` (w faces, level 0 = ground), ``height`` (m) of every w point, ``u`` (m/s) and
        ``theta_prime`` (K, deviation from the reference profile) on ``(layer, x)`` with ``height_layer``; 1-D ``x``
        (m, 0 at the crest: with an even number of columns, the default, the crest lies midway between the two
        central columns at ±dx/2), ``terrain`` (m); attributes with the run settings, the time series
        ``max_abs_w`` (m/s; sampled every ``max_abs_w_sampled_every_steps`` steps, at most 200, like the attribute
        ``max_abs_w_over_run``) and, for ``schaer``, ``w_linear`` and the relative l2 error ``w_error`` (|x| <= 20 km,
        1 km <= z <= 10 km; where none can be taken - flat ground, a top below 1 km - ``w_error_note`` says why).
    """
    import xarray as xr

    given = dtype
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype)  # type: ignore[assignment]
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float32, torch.float64):
        raise InputError(f"dtype must be float32 or float64 (or torch.float32 / torch.float64), got {given!r}")
    device = check_device(device, "the dycore")
    unknown = set(options) - _CASE_KEYS
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(sorted(unknown))} for run(); case options: {', '.join(sorted(_CASE_KEYS))}")
    if coordinate_options is not None and not isinstance(coordinate_options, dict):
        raise InputError(f"coordinate_options must be a dict of keyword options, got {coordinate_options!r}")
    cs = get_case(case, **options)
    hours = cs.hours if hours is None else hours
    if not positive_finite(hours):
        raise InputError(f"hours must be a positive number, got {hours!r}")
    if dt is not None and not positive_finite(dt):
        raise InputError(f"time step dt must be a positive number of seconds, got {dt!r}")
    for flag, value in (("compile", compile), ("progress", progress)):
        if not isinstance(value, (bool, np.bool_)):  # compile="no" ran compiled
            raise InputError(f"{flag} must be True or False, got {value!r}")
    if coordinate_options and not isinstance(coordinate, str):
        raise InputError(f"coordinate_options {sorted(coordinate_options)} are for a coordinate given by name; this "
                         f"{type(coordinate).__name__} module has its options already (they would be ignored)")
    _warn_terrain(cs, options)
    coord = make_coordinate(coordinate, **(coordinate_options or {}))
    if not isinstance(coordinate, str):
        coord = copy.deepcopy(coord)  # .to() works in place on a module: leave the caller's one as it was
    coord = coord.to(device=device or torch.device("cpu"), dtype=dtype)  # (None: the CPU, also for a CUDA module)
    name = coordinate if isinstance(coordinate, str) else getattr(coord, "name", "custom")
    with torch.no_grad():
        model, state = build(cs, coord, dtype, device, diffusion=diffusion)
        umax = float(state.u.abs().max()) + 5.0
        if dt is None:  # the case's time step, or less where this coordinate's thinnest layer needs it
            dt = min(cs.dt, _default_dt(stable_dt(model, model.dx, umax)[0]))
        steps_f = hours * 3600.0 / dt
        if steps_f > MAX_STEPS:  # (dt = 1e-300 ran without end, showing 3.6e301 steps)
            raise InputError(f"hours = {hours:g} at dt = {dt:g} s is {steps_f:.3g} time steps, more than "
                             f"{MAX_STEPS:.0e}: use a larger dt or fewer hours")
        nsteps = int(round(steps_f))  # hours rounded to whole time steps
        if nsteps < 1:
            raise InputError(f"hours = {hours:g} ({hours * 3600.0:.3g} s) is shorter than one time step dt = {dt:g} s "
                             f"(it rounds to 0 steps); use hours >= {dt / 3600.0:.3g} or a smaller dt")
        limit = check_dt(model, float(dt), umax, str(name))
        x = model.geom.x_c.cpu().double().numpy()
        z_w = model.geom.z_w.cpu().double().numpy()
        reference = _schaer_reference(cs, x, z_w) if cs.name == "schaer" else None  # (before a long run can fail)
        times: list[float] = [0.0]
        wmax: list[float] = [float(full_w(state, model.geom).abs().max())]  # (free-slip w at the ground in a wind)

        def record(n: int, s: Any) -> None:
            times.append(n * dt)
            wmax.append(float(full_w(s, model.geom).abs().max()))

        t0 = time.perf_counter()
        every = max(1, min(200, nsteps // 20 or 1))
        state = integrate(state, model, float(dt), nsteps, check_every=every, wmax=cs.wmax, callback=record,
                          progress=progress, compile=compile)
        elapsed = time.perf_counter() - t0
        geom, ref = model.geom, model.ref
        w = full_w(state, geom).cpu().double().numpy()
        theta_p = ((state.th - ref.theta_c * state.m) / (ref.m_c + state.m)).cpu().double().numpy()
        u_c = avg_u2c(state.u).cpu().double().numpy()
        z_c = geom.z_c.cpu().double().numpy()
    ds = xr.Dataset(
        {
            "w": (("level", "x"), w, {"units": "m s-1", "long_name": "vertical velocity"}),
            "height": (("level", "x"), z_w, {"units": "m", "long_name": "height of the w points"}),
            "u": (("layer", "x"), u_c, {"units": "m s-1", "long_name": "horizontal velocity at cell centres"}),
            "theta_prime": (("layer", "x"), theta_p, {"units": "K", "long_name": "potential temperature minus reference"}),
            "height_layer": (("layer", "x"), z_c, {"units": "m", "long_name": "height of the cell centres"}),
            "terrain": (("x",), z_w[0], {"units": "m"}),
            "max_abs_w": (("time",), np.asarray(wmax), {"units": "m s-1", "long_name": "max |w| over the domain"}),
        },
        coords={
            "x": ("x", x, {"units": "m", "long_name": "distance from the mountain crest"}),
            "level": ("level", np.arange(w.shape[0])),
            "layer": ("layer", np.arange(u_c.shape[0])),
            "time": ("time", np.asarray(times), {"units": "s"}),
        },
        attrs={
            "case": cs.name,
            "coordinate": str(name),
            "hours": nsteps * float(dt) / 3600.0,  # the simulated time: hours rounded to whole time steps
            "dt_s": float(dt),
            "dt_limit_s": float(limit),
            "diffusion_m2_s": float(model.diffusion),
            "steps": nsteps,
            "dx_m": cs.grid.dx,
            "nz": cs.grid.nz,
            "top_m": cs.grid.top,
            "dtype": str(dtype).replace("torch.", ""),
            "wall_time_s": elapsed,
            "steps_per_second": nsteps / max(elapsed, 1e-9),
            "max_abs_w_over_run": float(max(wmax)),  # over the samples (a Klemp hour: 0.7 % below every step's)
            "max_abs_w_sampled_every_steps": every,
        },
    )
    if reference is not None:
        wl, why_not = reference
        ds["w_linear"] = (("level", "x"), wl, {"units": "m s-1", "long_name": "linear analytic steady w"})
        if why_not:
            ds.attrs["w_error_note"] = f"no w error: {why_not}"
        else:
            ds.attrs["w_error"] = w_error(w, wl, x[None, :], z_w)
        ds.attrs["w_error_window"] = "|x| <= 20 km, 1 km <= z <= 10 km, relative l2"
        ds.attrs["w_linear_method"] = "Klemp et al. (2015) App. A, beta = 0, times sqrt(rho_ref(0)/rho_ref(z))"
    return ds


def _schaer_reference(cs: Any, x: np.ndarray, z_w: np.ndarray) -> tuple[np.ndarray, str]:
    """The linear steady w of the Schär case on the model's w points, and why no relative error can be taken
    against it ('' when one can): a window without w points (a low model top) or a zero solution (flat ground)."""
    t = cs.terrain
    # Boussinesq (beta = 0) solution with the sqrt(rho(0)/rho(z)) amplitude growth of the compressible reference
    wl = schaer_linear_w(x[None, :], z_w, t.h0, t.a, t.lam, cs.u0, cs.n, density_theta0=cs.theta0)
    inside = error_window(x[None, :], z_w)  # w_error's default window
    if not inside.any():
        return wl, f"the error window (|x| <= 20 km, 1-10 km) holds no w points below the top {cs.grid.top:g} m"
    if not np.any(wl[inside] != 0):
        return wl, "the linear solution is w = 0 (flat ground, h0 = 0)"
    return wl, ""


def write_dataset(ds: Any, path: str) -> str:
    """Write a :func:`run` result to netCDF atomically (temporary file in the target folder, then ``os.replace``)."""
    from ..io.atomic import atomic_path

    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp)
    return str(path)


def plot_w(ds: Any, path: str | None = None, zmax: float = 12000.0) -> Any:
    """Contour plot of ``w`` (m/s) in physical height (and of ``w_linear`` beside it when present)."""
    from ..plot import _finish, _new_figure

    panels = [("w", f"{ds.attrs.get('case')} / {ds.attrs.get('coordinate')}, t = {ds.attrs.get('hours'):g} h")]
    if "w_linear" in ds:
        panels.append(("w_linear", "linear analytic"))
    fig = _new_figure(6.0 * len(panels), 4.0)
    x = np.broadcast_to(ds.x.values[None, :] / 1000.0, ds.height.shape)
    z = ds.height.values / 1000.0
    vmax = float(np.nanmax(np.abs(ds.w.values[z <= zmax / 1000.0]))) or 1.0
    levels = np.linspace(-vmax, vmax, 21)
    for i, (var, title) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        cs = ax.contourf(x, z, ds[var].values, levels=levels, cmap="RdBu_r", extend="both")
        ax.fill_between(ds.x.values / 1000.0, 0, ds.terrain.values / 1000.0, color="0.3")
        ax.set_ylim(0, zmax / 1000.0)
        ax.set_xlabel("x (km)")
        ax.set_ylabel("z (km)")
        ax.set_title(title, fontsize=9)
    fig.colorbar(cs, ax=fig.axes, label="w (m/s)")
    return _finish(fig, path)
