"""Public API of skydiff.motion.fourdvar: recovery of a known motion, registry, input checks, status."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import skydiff
from skydiff import InputError, SkydiffWarning
from skydiff.motion import estimate
from skydiff.motion.fourdvar import fourdvar


def blobs(H=64, W=64):
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    return (
        5 * np.exp(-(((xx - 30) / 9.0) ** 2 + ((yy - 28) / 6.0) ** 2))
        + 3 * np.exp(-(((xx - 15) / 5.0) ** 2 + ((yy - 40) / 8.0) ** 2))
        + 2 * np.exp(-(((xx - 45) / 6.0) ** 2 + ((yy - 15) / 5.0) ** 2))
    )


@pytest.fixture(scope="module")
def translated():
    base = blobs()
    V = np.stack([np.full(base.shape, 1.5), np.full(base.shape, -0.8)])
    frames = np.concatenate([base[None], skydiff.advect(base, V, 3, outval=0.0)])
    return frames, V, base > 0.5


def test_recovers_a_known_translation(translated):
    frames, V, rainy = translated
    with pytest.warns(SkydiffWarning, match="did not converge"):
        res = fourdvar(frames, max_iter=50)
    epe = np.hypot(res.velocity[0] - V[0], res.velocity[1] - V[1])[rainy].mean()
    assert epe < 0.25, epe  # measured 0.10 px/step for a 1.7 px/step motion
    assert res.velocity.shape == (2, 64, 64)
    assert res.cost_history[-1] < res.cost_history[0]
    assert res.converged is False and "max_iter" in res.status


def test_registry_numpy_and_torch(translated):
    frames, V, rainy = translated
    v = estimate(frames, method="4dvar", max_iter=10)
    assert isinstance(v, np.ndarray) and v.shape == (2, 64, 64) and np.isfinite(v).all()
    vt = estimate(torch.tensor(frames, dtype=torch.float32), method="4dvar", max_iter=5)
    assert isinstance(vt, torch.Tensor) and vt.shape == (2, 64, 64)


def test_bad_input():
    with pytest.raises(skydiff.SkydiffError):
        fourdvar(blobs()[None])
    with pytest.raises(InputError):
        fourdvar(np.stack([blobs()] * 3), times=[0, 5])
    with pytest.raises(InputError):
        fourdvar(np.stack([blobs()] * 3), times=[0, 10, 5])
    with pytest.raises(InputError):
        fourdvar(np.full((3, 32, 32), np.nan))


def test_dataarray_times_layouts_and_a_weak_window_without_model_errors(translated):
    """Found by an audit: fourdvar(DataArray) took its values as frames one step apart whatever its times; cftime
    dates (non-standard calendars) skipped every time check (reversed frames gave the reversed motion); a
    (time, x, y) array came back transposed; a weak-constraint window of one model step crashed."""
    import cftime
    import xarray as xr

    from skydiff.nowcast import forecast

    frames, V, rainy = translated
    minutes = np.array([0, 5, 15])  # irregular: the third frame is 2 intervals after the second
    irr = np.concatenate([frames[:2], skydiff.advect(frames[1], V, 2, outval=0.0)[-1:]])
    t = np.datetime64("2021-01-01T00:00", "ns") + minutes * np.timedelta64(1, "m")
    da = xr.DataArray(irr, dims=("time", "y", "x"), coords={"time": t}, attrs={"units": "mm/h"})
    kw = dict(max_iter=5, levels=2)
    with pytest.warns(SkydiffWarning):
        own = fourdvar(da, **kw)
        given = fourdvar(irr, times=minutes, **kw)
    np.testing.assert_allclose(own.velocity, given.velocity, rtol=1e-6, atol=1e-8)
    with pytest.warns(SkydiffWarning):
        np.testing.assert_allclose(estimate(da, "4dvar", **kw), given.velocity, rtol=1e-6, atol=1e-8)
    with pytest.warns(SkydiffWarning):  # (the times matter: as frames one step apart it differs)
        assert not np.allclose(fourdvar(irr, **kw).velocity, given.velocity, rtol=1e-3)
    # cftime dates: checked by their spacing (reversed frames gave the reversed motion before), with a warning
    noleap = da.assign_coords(time=[cftime.DatetimeNoLeap(2021, 1, 1, 0, m) for m in minutes])
    with pytest.warns(SkydiffWarning, match="cftime dates .*noleap"):
        np.testing.assert_allclose(fourdvar(noleap, **kw).velocity, given.velocity, rtol=1e-6, atol=1e-8)
    for call in (lambda: estimate(noleap, "lk"), lambda: forecast(noleap, 1),
                 lambda: estimate(noleap.isel(time=[2, 1, 0]), "4dvar")):
        with pytest.raises(InputError, match="regular time step|not strictly increasing"), \
                pytest.warns(SkydiffWarning, match="cftime"):
            call()
    d360 = da.assign_coords(time=[cftime.Datetime360Day(2021, 2, 30, 0, m) for m in (0, 5, 10)])
    with pytest.warns(SkydiffWarning, match="cftime dates .*360_day.*1970-01-01"):
        assert forecast(d360, 1).shape == (1, 64, 64)
    # (time, x, y) is read by name: the same motion, in (y, x) layout
    regular = xr.DataArray(frames, dims=("time", "y", "x"), attrs={"units": "mm/h"})
    np.testing.assert_allclose(estimate(regular.transpose("time", "x", "y"), "lk"), estimate(regular, "lk"))
    # weak constraint, 2 frames, 1 sub-step: no model-error field to solve for (it crashed on the empty one)
    with pytest.warns(SkydiffWarning):
        weak = fourdvar(frames[:2], constraint="weak", n_substeps=1, **kw)
    assert np.isfinite(weak.velocity).all()
