"""Realistic synthetic radar rain sequences: the embedded default case of ``skydiff demo`` (no download).

:func:`rain_sequence` returns an ``xarray.DataArray`` laid out like the output of :func:`skydiff.io.read_radar`
(dims ``("time", "y", "x")``, float32 mm/h, the same attributes), and optionally the true motion field.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi
from scipy import special

from .errors import InputError, ShapeError

#: reference wavelength (km) at which ``lifetime`` is the e-folding time of the latent field
LIFETIME_SCALE_KM = 32.0
#: exponent of the lifetime-scale law tau(L) = lifetime * (L / 32 km) ** LIFETIME_EXPONENT (linear in L)
LIFETIME_EXPONENT = 1.0
#: rain/no-rain threshold (mm/h); dry pixels are exactly 0
RAIN_THRESHOLD = 0.1
#: spin-up steps run before the first returned frame (lets the advection smoothing reach equilibrium)
SPINUP_STEPS = 4

PROJECTION = "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752 +x_0=0 +y_0=0"
#: y coordinate (m) of the domain centre in :data:`PROJECTION` (about 59 N, 0 E: the North Sea)
_Y_CENTRE = -3_300_000.0


def rain_sequence(
    n_frames: int = 24,
    shape: tuple[int, int] = (256, 256),
    *,
    timestep: float = 5,
    seed: int | None = 0,
    motion: tuple[float, float] = (3.0, 1.5),
    swirl: float = 0.75,
    pixel_km: float = 1.0,
    beta: float = 3.0,
    outer_scale: float = 128.0,
    lifetime: float = 120.0,
    wet_fraction: float = 0.3,
    rain_median: float = 1.0,
    rain_log_std: float = 0.9,
    return_motion: bool = False,
) -> Any:
    """Generate a synthetic radar rain-rate sequence (mm/h) that is advected, evolving and intermittent.

    The generator (all random numbers from ``numpy.random.default_rng(seed)``):

    1. **Latent field** ``z``: a stationary Gaussian random field on a periodic domain (a torus) larger than
       the output, ``(H + max(64, H/2), W + max(64, W/2))`` rounded up to a fast FFT size, so that wrapped-around
       rain is hidden for a while. Its 2-D power spectrum is ``|F(k)|^2 ~ (|k|^2 + k0^2)^(-beta/2)`` with
       ``k0 = 1/outer_scale`` (cycles/km): a power law ``|k|^-beta`` (``beta = 3``: the 2-D power spectrum,
       i.e. pysteps' RAPSD, falls as ``k^-3``, the usual value for radar rain) flattened at scales above
       ``outer_scale`` km so that one giant mode does not decide whether the whole domain rains. The mean
       (k = 0) mode is zero and the variance 1.
    2. **Temporal evolution**: each Fourier mode follows an AR(1) process per time step,
       ``z_k(t+1) = phi_k z_k(t) + sqrt(1 - phi_k^2) eps_k``, ``phi_k = exp(-timestep / tau(L))`` with the
       scale-dependent lifetime ``tau(L) = lifetime * (L / 32 km)`` for wavelength ``L = 1/|k|`` km
       (defaults: 15 min at 4 km, 2 h at 32 km, 16 h at 256 km; lifetime proportional to scale as in
       S-PROG-type cascade statistics): small scales decorrelate faster, so the sequence evolves in the
       Lagrangian frame while large structures persist. The noise ``eps`` has the same spectrum as ``z``, so
       the spectrum is stationary. With the defaults the Lagrangian correlation of the rain rates is about
       0.9 after one 5-min step, 0.65-0.8 after 30 min and 0.5-0.65 after one hour.
    3. **Advection**: before each AR(1) update ``z`` is advected one time step with :func:`skydiff.advect`
       (backward semi-Lagrangian, bilinear, pysteps semantics) along a steady motion field: the uniform drift
       ``motion = (u, v)`` pixels per step plus a smooth non-divergent perturbation (stream function made of
       random Fourier modes with wavenumbers 1-2 on the torus: large-scale rotation and deformation) whose
       largest speed is ``swirl`` pixels per step. The motion field is periodic on the torus and the field is
       padded periodically (``np.pad(mode="wrap")``) by more than one step's displacement before advecting,
       so no departure point leaves the grid and no NaN appears. Repeated bilinear interpolation smooths the
       smallest scales a little (a few pixels); the AR(1) noise keeps re-injecting them, and
       ``SPINUP_STEPS`` steps before the first frame let this reach equilibrium.
    4. **Rain rate**: the output window ``[0:H, 0:W]`` of the torus is standardised over the whole sequence.
       Pixels below the ``1 - wet_fraction`` quantile of ``z`` (over all frames) are dry (R = 0), so the
       fraction of pixels with ``R > 0.1`` mm/h is ``wet_fraction`` over the sequence (it varies a little
       from frame to frame). Wet pixels are mapped monotonically (by their Gaussian quantile) onto a
       log-normal distribution truncated at 0.1 mm/h: ``ln R ~ N(ln rain_median, rain_log_std^2)`` with
       ``R > 0.1``. Rain thus starts at ~0.1 mm/h at the edges of the cells, the median wet rain rate is
       ~1 mm/h and the sequence peaks at ~25-55 mm/h (defaults, 256 x 256 x 24 frames).

    The nonlinear step 4 makes the rain field's spectrum shallower than the latent one: with the defaults the
    RAPSD (pysteps' ``rapsd``) of the rain rates has a log-log slope of about -2.5 to -2.9 between
    wavelengths of 4 and 64 pixels (``beta = 3`` for the latent field).

    Parameters
    ----------
    n_frames, shape:
        Number of frames and ``(H, W)`` in pixels (each at least 16).
    timestep:
        Minutes between frames (sets the evolution rate and the time coordinate).
    seed:
        Seed of the numpy Generator; the same seed gives the same sequence.
    motion:
        Uniform drift ``(u, v)`` in pixels per time step ([0] = x to the right, [1] = y downwards (rows)).
    swirl:
        Largest speed (pixels per step) of the spatially varying part of the motion; 0 = uniform motion.
    pixel_km:
        Pixel size in km (sets the physical scales of ``outer_scale``/``lifetime`` and the coordinates).
    beta:
        Spectral exponent of the latent field's 2-D power spectrum (``|k|^-beta``).
    outer_scale:
        Wavelength (km) above which the spectrum flattens.
    lifetime:
        E-folding lifetime (minutes) of the 32-km wavelength; other scales scale linearly with wavelength.
    wet_fraction:
        Fraction of pixels with ``R > 0.1`` mm/h, in ``(0, 1)``.
    rain_median, rain_log_std:
        Median (mm/h) and log standard deviation of the (truncated) log-normal rain-rate distribution.
    return_motion:
        Also return the true motion field ``(2, H, W)`` (numpy float64, pixels per time step).

    Returns
    -------
    ``xarray.DataArray`` ``(time, y, x)`` float32 mm/h with ``time`` from 2025-01-01T00:00 every ``timestep``
    minutes, ``x``/``y`` pixel-centre coordinates in metres in a polar stereographic projection (``y``
    decreasing: row 0 is the northern edge), and the attributes of :func:`skydiff.io.read_radar`; or
    ``(da, velocity)`` with ``return_motion=True``.
    """
    import xarray as xr

    n_frames, (h, w) = _check_args(n_frames, shape, timestep, motion, swirl, pixel_km, beta, outer_scale, lifetime,
                                   wet_fraction, rain_median, rain_log_std)
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be a non-negative integer or None, got {seed!r}") from None
    hp = sfft.next_fast_len(h + max(64, h // 2), real=True)
    wp = sfft.next_fast_len(w + max(64, w // 2), real=True)

    # spectral amplitude and AR(1) coefficients on the rfft grid (cycles per km)
    ky = sfft.fftfreq(hp, d=pixel_km)[:, None]
    kx = sfft.rfftfreq(wp, d=pixel_km)[None, :]
    k = np.hypot(kx, ky)
    amp = (k**2 + (1.0 / outer_scale) ** 2) ** (-beta / 4.0)
    amp[0, 0] = 0.0
    # variance of irfft2(rfft2(white) * amp) = mean of amp^2 over the full (hermitian) spectrum
    weight = np.full(kx.shape, 2.0)
    weight[:, 0] = 1.0
    if wp % 2 == 0:
        weight[:, -1] = 1.0
    amp /= math.sqrt(float(np.sum(weight * amp**2)) / (hp * wp))
    with np.errstate(divide="ignore"):
        wavelength = np.where(k > 0, 1.0 / np.where(k > 0, k, 1.0), np.inf)
    tau = lifetime * (wavelength / LIFETIME_SCALE_KM) ** LIFETIME_EXPONENT
    phi = np.exp(-float(timestep) / tau)
    innov = amp * np.sqrt(1.0 - phi**2)

    velocity = _motion_field(rng, (hp, wp), motion, swirl)
    pad = int(math.ceil(float(np.abs(velocity).max()))) + 2
    vel_padded = np.pad(velocity, ((0, 0), (pad, pad), (pad, pad)), mode="wrap")

    def noise() -> np.ndarray:
        return sfft.rfft2(rng.standard_normal((hp, wp)))

    z = sfft.irfft2(noise() * amp, s=(hp, wp))
    latent = np.empty((n_frames, h, w))
    for t in range(-SPINUP_STEPS, n_frames):
        adv = _advect_step(np.pad(z, pad, mode="wrap"), vel_padded)[pad:-pad, pad:-pad]
        z = sfft.irfft2(sfft.rfft2(adv) * phi + noise() * innov, s=(hp, wp))
        if t >= 0:
            latent[t] = z[:h, :w]

    rain = _to_rain(latent, wet_fraction, rain_median, rain_log_std)
    da = _as_dataarray(xr, rain, timestep, pixel_km)
    if return_motion:
        return da, np.ascontiguousarray(velocity[:, :h, :w], dtype=np.float64)
    return da


# --------------------------------------------------------------------------------------------------------------


def _check_args(n_frames, shape, timestep, motion, swirl, pixel_km, beta, outer_scale, lifetime, wet_fraction,
                rain_median, rain_log_std):
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise InputError(f"n_frames must be an integer >= 1, got {n_frames!r}")
    try:
        h, w = (int(s) for s in shape)
        if (h, w) != tuple(shape):
            raise ValueError
    except (TypeError, ValueError):
        raise ShapeError(f"shape must be a pair of integers (H, W), got {shape!r}") from None
    if h < 16 or w < 16:
        raise ShapeError(f"shape must be at least (16, 16), got {(h, w)}")
    try:
        mot = np.asarray(motion, dtype=float)
    except (TypeError, ValueError):
        mot = np.array([np.nan])
    if mot.shape != (2,) or not np.all(np.isfinite(mot)):
        raise InputError(f"motion must be a finite pair (u, v) in pixels per time step, got {motion!r}")

    def number(name: str, value: Any) -> float:
        if isinstance(value, bool):
            value = None
        try:
            x = float(value)
        except (TypeError, ValueError):
            x = math.nan
        if not math.isfinite(x):
            raise InputError(f"{name} must be a finite number, got {value!r}")
        return x

    for name, value in (("timestep", timestep), ("pixel_km", pixel_km), ("beta", beta),
                        ("outer_scale", outer_scale), ("lifetime", lifetime), ("rain_median", rain_median),
                        ("rain_log_std", rain_log_std)):
        if number(name, value) <= 0:
            raise InputError(f"{name} must be a positive number, got {value!r}")
    if number("swirl", swirl) < 0:
        raise InputError(f"swirl must be a number >= 0, got {swirl!r}")
    if not 0.0 < number("wet_fraction", wet_fraction) < 1.0:
        raise InputError(f"wet_fraction must be in (0, 1), got {wet_fraction!r}")
    return int(n_frames), (h, w)


def _motion_field(rng: np.random.Generator, shape: tuple[int, int], motion, swirl: float) -> np.ndarray:
    """Uniform drift plus a periodic non-divergent perturbation of largest speed ``swirl`` (px/step)."""
    hp, wp = shape
    y = np.arange(hp)[:, None] * (2 * np.pi / hp)
    x = np.arange(wp)[None, :] * (2 * np.pi / wp)
    u = np.zeros(shape)
    v = np.zeros(shape)
    for my in range(-2, 3):
        for mx in range(0, 3):
            if (mx == 0 and my <= 0) or mx * mx + my * my > 5:
                continue
            a = rng.normal() / (mx * mx + my * my)
            ph = rng.uniform(0, 2 * np.pi)
            # psi = a cos(mx x + my y + ph); u = d psi / d y, v = -d psi / d x (in pixels, up to a scale)
            s = -a * np.sin(mx * x + my * y + ph)
            u += s * (my * 2 * np.pi / hp)
            v -= s * (mx * 2 * np.pi / wp)
    speed = np.hypot(u, v).max()
    scale = swirl / speed if speed > 0 else 0.0
    vel = np.stack([u * scale + float(motion[0]), v * scale + float(motion[1])])
    return vel


def _advect_step(field: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """One backward semi-Lagrangian step with :func:`skydiff.advect`; scipy fallback while it is unavailable."""
    from .advection import advect

    try:
        return np.asarray(advect(field, velocity, 1)[0])
    except NotImplementedError:
        return _advect_step_scipy(field, velocity)


def _advect_step_scipy(field: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """pysteps' semi-Lagrangian step (n_iter=1, midpoint rule, bilinear) with scipy (fallback only)."""
    yy, xx = np.mgrid[0 : field.shape[0], 0 : field.shape[1]].astype(float)
    xm, ym = xx - velocity[0] / 2, yy - velocity[1] / 2
    um = ndi.map_coordinates(velocity[0], [ym, xm], order=1, mode="nearest", prefilter=False)
    vm = ndi.map_coordinates(velocity[1], [ym, xm], order=1, mode="nearest", prefilter=False)
    return ndi.map_coordinates(field, [yy - vm, xx - um], order=1, mode="constant", cval=np.nan, prefilter=False)


def _to_rain(latent: np.ndarray, wet_fraction: float, median: float, log_std: float) -> np.ndarray:
    """Threshold the latent field at its (1 - wet_fraction) quantile; map wet pixels onto a truncated log-normal."""
    z = (latent - latent.mean()) / latent.std()
    z_thr = float(np.quantile(z, 1.0 - wet_fraction))
    wet = z > z_thr
    p_thr = special.ndtr(z_thr)
    q = (special.ndtr(z[wet]) - p_thr) / (1.0 - p_thr)  # rank among wet pixels, in (0, 1]
    mu = math.log(median)
    p_low = special.ndtr((math.log(RAIN_THRESHOLD) - mu) / log_std)  # truncation at 0.1 mm/h
    p = np.clip(p_low + q * (1.0 - p_low), p_low, 1.0 - 1e-12)
    rain = np.zeros(z.shape, dtype=np.float32)
    values = np.exp(mu + log_std * special.ndtri(p))
    # strictly above the threshold, also after rounding to float32
    rain[wet] = np.maximum(values, np.nextafter(np.float32(RAIN_THRESHOLD), np.float32(1.0)))
    return rain


def _as_dataarray(xr: Any, rain: np.ndarray, timestep: float, pixel_km: float) -> Any:
    n, h, w = rain.shape
    dx = float(pixel_km) * 1000.0
    x = (np.arange(w) - w / 2 + 0.5) * dx
    y = _Y_CENTRE - (np.arange(h) - h / 2 + 0.5) * dx
    step = np.timedelta64(int(round(float(timestep) * 60_000_000_000)), "ns")
    time = np.datetime64("2025-01-01T00:00", "ns") + np.arange(n) * step
    da = xr.DataArray(
        rain,
        dims=("time", "y", "x"),
        coords={
            "time": time,
            "y": ("y", y, {"units": "m", "standard_name": "projection_y_coordinate"}),
            "x": ("x", x, {"units": "m", "standard_name": "projection_x_coordinate"}),
        },
        name="precip_rate",
        attrs={
            "units": "mm/h",
            "timestep": float(timestep),
            "xpixelsize": dx,
            "ypixelsize": dx,
            "projection": PROJECTION,
            "institution": "skydiff synthetic",
            "source_files": "",
            "gaps": "",
            "n_gaps": 0,
        },
    )
    return da


__all__ = ["rain_sequence", "PROJECTION"]
