"""Tests of skydiff.synthetic.rain_sequence: layout, reproducibility, statistics, advection and evolution."""

from __future__ import annotations

import time

import numpy as np
import pytest
import xarray as xr

import skydiff
import skydiff.motion as motion
from skydiff.errors import InputError, ShapeError
from skydiff.synthetic import rain_sequence


@pytest.fixture(scope="module")
def default_case():
    """The demo case: 24 frames of 256 x 256 with the default parameters, and its true motion."""
    return rain_sequence(return_motion=True)


def test_layout_and_attrs(default_case):
    da, vel = default_case
    assert isinstance(da, xr.DataArray)
    assert da.dims == ("time", "y", "x")
    assert da.shape == (24, 256, 256)
    assert da.dtype == np.float32
    assert da.attrs["units"] == "mm/h"
    assert da.attrs["timestep"] == 5
    assert da.attrs["xpixelsize"] == 1000.0 and da.attrs["ypixelsize"] == 1000.0
    assert da.attrs["projection"].startswith("+proj=stere")
    assert da.attrs["institution"] == "skydiff synthetic"
    assert da.attrs["source_files"] == "" and da.attrs["gaps"] == "" and da.attrs["n_gaps"] == 0
    times = da["time"].values
    assert times[0] == np.datetime64("2025-01-01T00:00")
    assert np.all(np.diff(times) == np.timedelta64(5, "m"))
    dx, dy = np.diff(da["x"].values), np.diff(da["y"].values)
    np.testing.assert_allclose(dx, 1000.0)
    np.testing.assert_allclose(dy, -1000.0)  # row 0 is the northern edge
    assert da["x"].attrs["units"] == "m" and da["y"].attrs["units"] == "m"
    assert isinstance(vel, np.ndarray) and vel.shape == (2, 256, 256) and vel.dtype == np.float64
    assert np.isfinite(da.values).all() and (da.values >= 0).all()
    assert np.isfinite(vel).all()


def test_other_shape_timestep_and_pixel_size():
    da = rain_sequence(3, (40, 72), timestep=10, pixel_km=2.0, seed=1)
    assert da.shape == (3, 40, 72)
    assert da.attrs["timestep"] == 10 and da.attrs["xpixelsize"] == 2000.0
    assert np.all(np.diff(da["time"].values) == np.timedelta64(10, "m"))
    np.testing.assert_allclose(np.diff(da["x"].values), 2000.0)


def test_reproducible_by_seed():
    a, va = rain_sequence(4, (64, 64), seed=7, return_motion=True)
    b, vb = rain_sequence(4, (64, 64), seed=7, return_motion=True)
    c, vc = rain_sequence(4, (64, 64), seed=8, return_motion=True)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(va, vb)
    assert not np.array_equal(a.values, c.values)
    assert not np.array_equal(va, vc)


def test_wet_fraction_and_intensities(default_case):
    da, _ = default_case
    R = da.values
    wet = (R > 0.1).mean(axis=(1, 2))
    assert abs(wet.mean() - 0.3) < 0.01  # exact over the sequence by construction
    assert np.all((wet > 0.2) & (wet < 0.4))  # each frame within 20-40 %
    dry = R[R <= 0.1]
    assert np.all(dry == 0)  # intermittent: no drizzle below the threshold
    assert 0.5 < np.median(R[R > 0.1]) < 2.0
    assert 20.0 < R.max() < 80.0
    other = rain_sequence(4, (128, 128), wet_fraction=0.2, seed=3).values
    assert abs((other > 0.1).mean() - 0.2) < 0.01


def test_rapsd_power_law(default_case):
    """Rain-rate RAPSD slope between wavelengths 4 and 64 px: about -2.5 to -2.9 (documented); allow -3.4..-2.2."""
    da, _ = default_case
    R = da.values.astype(np.float64)
    psd = np.mean([np.abs(np.fft.fftshift(np.fft.fft2(r))) ** 2 for r in R], axis=0)
    n = R.shape[1]
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    ring = np.hypot(xx, yy).round().astype(int)
    radial = np.bincount(ring.ravel(), psd.ravel()) / np.bincount(ring.ravel())
    k = np.arange(radial.size) / n  # cycles per pixel
    sel = (k >= 1 / 64) & (k <= 1 / 4)
    slope = np.polyfit(np.log(k[sel]), np.log(radial[sel]), 1)[0]
    assert -3.4 < slope < -2.2, slope


def test_motion_field_is_smooth_drift(default_case):
    _, vel = default_case
    mean = vel.reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(mean, (3.0, 1.5), atol=0.5)
    speed_var = np.hypot(vel[0] - 3.0, vel[1] - 1.5)
    assert 0.2 < speed_var.max() <= 0.75 + 1e-9  # spatially varying, bounded by `swirl`
    assert np.abs(np.diff(vel, axis=2)).max() < 0.1  # smooth: < 0.1 px/step change per pixel
    uniform = rain_sequence(2, (32, 32), motion=(-1.0, 2.0), swirl=0.0, return_motion=True)[1]
    np.testing.assert_allclose(uniform[0], -1.0)
    np.testing.assert_allclose(uniform[1], 2.0)


def test_lucas_kanade_recovers_true_motion(default_case):
    """The sequence is advected: pysteps LK on consecutive frames finds the true motion (median rel. error)."""
    da, vel = default_case
    R = da.values.astype(np.float64)
    for t in (0, 8, 16, 22):
        est = motion.estimate(R[t : t + 2], "lk")
        wet = R[t + 1] > 0.1
        rel = np.hypot(est[0] - vel[0], est[1] - vel[1]) / np.hypot(vel[0], vel[1])
        assert np.median(rel[wet]) < 0.25, (t, np.median(rel[wet]))


def test_evolves_in_lagrangian_frame(default_case):
    """Frame-to-frame correlation after advecting with the true motion: high (> 0.5) but below 1."""
    da, vel = default_case
    R = da.values.astype(np.float64)
    corrs, euler = [], []
    for t in range(0, 23, 4):
        adv = skydiff.advect(R[t], vel, 1)[0]
        ok = np.isfinite(adv)
        corrs.append(np.corrcoef(adv[ok], R[t + 1][ok])[0, 1])
        euler.append(np.corrcoef(R[t].ravel(), R[t + 1].ravel())[0, 1])
    corrs = np.array(corrs)
    assert np.all(corrs > 0.5) and np.all(corrs < 0.99), corrs
    assert np.mean(corrs) > np.mean(euler) + 0.1  # advection explains a good part of the change
    # correlation keeps decreasing with lag (evolution, not just noise)
    lag6 = skydiff.advect(R[0], vel, 6)[-1]
    ok = np.isfinite(lag6)
    assert np.corrcoef(lag6[ok], R[6][ok])[0, 1] < np.mean(corrs)


def test_speed():
    """A guard against pathological slow-downs (e.g. a pure-Python pixel loop, which takes minutes), not a
    benchmark: about 1 s on an idle 2-core CPU, 2.5 s while other jobs load it, hence the generous bound."""
    rain_sequence(2, (256, 256))  # warm-up (numba kernels of skydiff.advect)
    best = np.inf
    for seed in range(2):
        t0 = time.perf_counter()
        rain_sequence(24, (256, 256), seed=seed)
        best = min(best, time.perf_counter() - t0)
    assert best < 8.0, best


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_frames=0), InputError, "n_frames"),
        (dict(n_frames=2.5), InputError, "n_frames"),
        (dict(shape=(8, 64)), ShapeError, "at least"),
        (dict(shape=(64,)), ShapeError, "pair"),
        (dict(shape=(64.5, 64)), ShapeError, "pair"),
        (dict(motion=(1.0, 2.0, 3.0)), InputError, "motion"),
        (dict(motion=(np.nan, 1.0)), InputError, "motion"),
        (dict(timestep=0), InputError, "timestep"),
        (dict(pixel_km=-1.0), InputError, "pixel_km"),
        (dict(beta="steep"), InputError, "beta"),
        (dict(swirl=-0.1), InputError, "swirl"),
        (dict(wet_fraction=0.0), InputError, "wet_fraction"),
        (dict(wet_fraction=1.2), InputError, "wet_fraction"),
        (dict(lifetime=np.inf), InputError, "lifetime"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    args = dict(n_frames=2, shape=(32, 32))
    args.update(kwargs)
    n_frames = args.pop("n_frames")
    shape = args.pop("shape")
    with pytest.raises(error, match=match):
        rain_sequence(n_frames, shape, **args)


def test_scipy_fallback_matches_advect():
    """The private scipy fallback (used only while skydiff.advect is unavailable) has pysteps' semantics too."""
    from skydiff.synthetic import _advect_step_scipy

    rng = np.random.default_rng(0)
    field = rng.random((40, 50))
    yy, xx = np.mgrid[0:40, 0:50]
    vel = np.stack([2.3 + 0.5 * np.sin(yy / 7.0), -1.2 + 0.4 * np.cos(xx / 9.0)])
    ref = skydiff.advect(field, vel, 1)[0]
    out = _advect_step_scipy(field, vel)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    ok = np.isfinite(ref)
    np.testing.assert_allclose(out[ok], ref[ok], atol=1e-10)
