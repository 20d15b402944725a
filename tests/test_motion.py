"""Tests of skydiff.motion: registry, input checks, dB transform and accuracy of the pysteps methods."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

import skydiff.motion as motion
from skydiff.errors import InputError, ShapeError, SkydiffWarning
from skydiff.motion import interface

N = 128
U, V = 1.6, -0.7  # true translation, pixels per step (x, y)
MARGIN = 12  # pixels near the border excluded from the accuracy checks


def _rain_field(n: int = N, seed: int = 1) -> np.ndarray:
    """Smooth, intermittent synthetic rain field (mm/h): ~55 % wet, peaks ~40 mm/h."""
    rng = np.random.default_rng(seed)
    z = ndi.gaussian_filter(rng.standard_normal((n, n)), 6, mode="wrap")
    z /= z.std()
    return np.clip(np.where(z > -0.3, np.exp(1.2 * (z + 0.3)) - 0.9, 0.0), 0.0, None)


def _translated(n_frames: int) -> np.ndarray:
    base = _rain_field()
    # ndi.shift moves content by +shift: (rows, cols) = (k v, k u) -> velocity (u, v) in pysteps' convention
    return np.stack([ndi.shift(base, (k * V, k * U), order=3, mode="nearest") for k in range(n_frames)]).clip(0)


@pytest.fixture(scope="module")
def translated() -> np.ndarray:
    return _translated(3)


def _rainy_interior(frame: np.ndarray) -> np.ndarray:
    mask = frame > 0.1
    mask[:MARGIN] = mask[-MARGIN:] = False
    mask[:, :MARGIN] = mask[:, -MARGIN:] = False
    return mask


def _rel_error(vel: np.ndarray, true: np.ndarray, mask: np.ndarray) -> float:
    """Mean vector error over the mask divided by the mean true speed there."""
    err = np.hypot(vel[0] - true[0], vel[1] - true[1])[mask].mean()
    return float(err / np.hypot(true[0], true[1])[mask].mean())


def _true_translation() -> np.ndarray:
    return np.stack([np.full((N, N), U), np.full((N, N), V)])


# --------------------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------------------


def test_builtin_methods_registered():
    names = motion.methods()
    for name in ("lk", "vet", "darts", "proesmans", "farneback", "constant", "none"):
        assert name in names
    assert names == tuple(sorted(names))


@pytest.mark.parametrize(
    "name, canonical",
    [("LK", "lk"), ("LucasKanade", "lk"), ("Vet", "vet"), ("ZERO", "none"), ("none", "none"), (None, "none")],
)
def test_get_method_case_insensitive_and_aliases(name, canonical):
    rec = motion.get_method(name)
    assert rec.name == canonical
    assert callable(rec)


def test_unknown_method_lists_available():
    with pytest.raises(InputError, match="unknown motion method 'hornschunck'.*lk.*vet"):
        motion.get_method("hornschunck")
    with pytest.raises(InputError, match="available"):
        motion.estimate(np.ones((2, 8, 8)), "foo")


def test_a_dataarray_is_read_by_its_dims_and_units():
    """estimate() took a (y, x, time) DataArray as (T, H, W) and dBZ as mm/h; forecast() did neither."""
    import xarray as xr

    rng = np.random.default_rng(0)
    frames = np.stack([np.roll(ndimage_blob(rng), k, axis=1) for k in range(3)])
    da = xr.DataArray(frames, dims=("time", "y", "x"), attrs={"units": "mm/h"})
    ref = motion.estimate(da, "constant")
    np.testing.assert_allclose(motion.estimate(da.transpose("y", "x", "time"), "constant"), ref)
    with pytest.raises(InputError, match="units 'dBZ'"):
        motion.estimate(da.assign_attrs(units="dBZ"), "constant")
    assert motion.estimate(da.assign_attrs(units="dBZ"), "constant", transform=None).shape == (2, 24, 24)


def test_estimate_batch_bad_input_is_clear():
    """numpy input raised AttributeError, an empty batch numpy's ValueError, n_frames=2.5 a TypeError and
    n_frames=-1 dropped the first frame silently."""
    x = torch.rand(2, 3, 16, 16)
    for bad, kw, match in ((x.numpy(), {}, "real torch tensor"), (x[:0], {}, "empty batch"),
                           (x, {"n_frames": 2.5}, "n_frames"), (x, {"n_frames": -1}, "n_frames")):
        with pytest.raises((InputError, ShapeError), match=match):
            motion.estimate_batch(bad, "constant", **kw)


def ndimage_blob(rng):
    from scipy import ndimage as ndi

    z = ndi.gaussian_filter(rng.standard_normal((24, 24)), 3.0, mode="wrap")
    return np.maximum(10.0 * z / z.std(), 0.0)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Let a test register methods without leaving them behind."""
    monkeypatch.setattr(interface, "_REGISTRY", dict(interface._REGISTRY))
    monkeypatch.setattr(interface, "_LOOKUP", dict(interface._LOOKUP))


def test_register_and_call(scratch_registry):
    seen = {}

    def fn(frames, scale=1.0):
        seen["frames"] = frames
        return np.full((2, *frames.shape[1:]), scale)

    rec = motion.register("MyFlow", fn, min_frames=2, max_frames=4, aliases=("mine",))
    assert rec.name == "myflow" and rec.aliases == ("mine",)
    assert "myflow" in motion.methods()
    frames = np.ones((6, 10, 12))
    frames[-1, 0, 0] = 5.0
    out = motion.estimate(frames, "MINE", scale=2.5)
    assert out.shape == (2, 10, 12) and np.all(out == 2.5)
    assert seen["frames"].shape == (4, 10, 12)  # the last max_frames frames
    assert seen["frames"].dtype == np.float64
    assert rec(frames).shape == (2, 10, 12)  # the record is callable like estimate()


def test_register_rejects_clash_and_bad_arguments(scratch_registry):
    def fn(frames):
        return np.zeros((2, *frames.shape[1:]))

    with pytest.raises(InputError, match="already registered"):
        motion.register("LK", fn, min_frames=2)
    with pytest.raises(InputError, match="already registered"):
        motion.register("other", fn, min_frames=2, aliases=("zero",))
    with pytest.raises(InputError, match="min_frames"):
        motion.register("x1", fn, min_frames=0)
    with pytest.raises(InputError, match="max_frames"):
        motion.register("x2", fn, min_frames=3, max_frames=2)
    with pytest.raises(InputError, match="callable"):
        motion.register("x3", 42, min_frames=1)
    with pytest.raises(InputError, match="backend"):
        motion.register("x4", fn, min_frames=1, backend="jax")
    # overwrite replaces the method and all its old names
    motion.register("lk", fn, min_frames=2, overwrite=True)
    assert "lucaskanade" not in interface._LOOKUP
    assert np.all(motion.estimate(np.random.default_rng(0).random((2, 8, 8)), "lk") == 0)


def test_registered_keywords_are_checked_before_the_method_runs(scratch_registry):
    """A method that passes ``**kwargs`` on names what it takes with ``keywords=``: a typo is refused before it
    runs (on dry frames too, where nothing runs), a right name reaches it; the list may be given lazily."""
    calls = []

    def fn(frames, **kwargs):
        calls.append(kwargs)
        return np.zeros((2, *frames.shape[1:]))

    motion.register("passon", fn, min_frames=2, keywords=("window", "levels"))
    motion.register("lazy", fn, min_frames=2, keywords=lambda: frozenset({"window"}))
    motion.register("open", fn, min_frames=2)  # **kwargs and no keywords: anything goes through
    rainy = np.random.default_rng(0).random((3, 8, 8)) * 5.0
    for name in ("passon", "lazy"):
        for frames in (rainy, np.zeros((3, 8, 8))):
            with pytest.raises(InputError, match="unexpected keyword.*'windw'"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", SkydiffWarning)
                    motion.estimate(frames, name, windw=3)
    assert calls == []
    motion.estimate(rainy, "passon", window=3, levels=2)
    motion.estimate(rainy, "open", windw=3)
    assert calls == [{"window": 3, "levels": 2}, {"windw": 3}]
    with pytest.raises(InputError, match="keywords must be"):
        motion.register("bad", fn, min_frames=2, keywords="window")
    with pytest.raises(InputError, match="keywords must be"):
        motion.register("bad", fn, min_frames=2, keywords=[1, 2])


def test_torch_backend_receives_tensor(scratch_registry):
    seen = {}

    def fn(frames):
        seen["type"] = type(frames)
        seen["dtype"] = frames.dtype
        return torch.ones((2, *frames.shape[1:]), dtype=frames.dtype) * frames.mean()

    motion.register("torchy", fn, min_frames=2, backend="torch")
    x = torch.rand(3, 8, 8, dtype=torch.float32) + 1.0
    out = motion.estimate(x, "torchy")
    # the transformed data in float64 on the CPU, as numpy input gives them (rounded to float32 first, 4D-Var's
    # motion moved by 0.05 px); the result in the input's dtype
    assert seen["type"] is torch.Tensor and seen["dtype"] == torch.float64
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (2, 8, 8)
    torch.testing.assert_close(out, torch.from_numpy(motion.estimate(x.numpy(), "torchy")).float())
    out_np = motion.estimate(x.numpy(), "torchy")
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float64


# --------------------------------------------------------------------------------------------------------------
# transform and output handling (no pysteps needed)
# --------------------------------------------------------------------------------------------------------------


def _spy(monkeypatch, name):
    seen = {}

    def fn(frames, **kwargs):
        seen["frames"] = frames.copy()
        seen["kwargs"] = kwargs
        return np.ones((2, *frames.shape[1:]))

    rec = interface._REGISTRY[name]
    monkeypatch.setitem(interface._REGISTRY, name, dataclasses.replace(rec, fn=fn))
    return seen


def test_db_transform(monkeypatch):
    seen = _spy(monkeypatch, "lk")
    frames = np.array([[[1.0, 10.0], [0.05, np.nan]], [[0.1, 100.0], [0.0, 2.0]]])
    motion.estimate(frames, "lk")
    expected = np.array([[[0.0, 10.0], [-15.0, -15.0]], [[-10.0, 20.0], [-15.0, 10 * np.log10(2.0)]]])
    np.testing.assert_allclose(seen["frames"], expected)
    motion.estimate(frames, "lk", transform=None)
    np.testing.assert_array_equal(seen["frames"], np.nan_to_num(frames, nan=0.0))
    motion.estimate(frames, "lk", transform="dB", fd_kwargs={"max_corners": 5})
    assert seen["kwargs"] == {"fd_kwargs": {"max_corners": 5}}


def test_vet_uses_last_three_frames(monkeypatch):
    seen = _spy(monkeypatch, "vet")
    frames = np.arange(1, 6, dtype=float)[:, None, None] * np.ones((5, 4, 4))
    motion.estimate(frames, "vet", transform=None)
    np.testing.assert_array_equal(seen["frames"][:, 0, 0], [3.0, 4.0, 5.0])
    seen = _spy(monkeypatch, "proesmans")
    motion.estimate(frames, "proesmans", transform=None)
    np.testing.assert_array_equal(seen["frames"][:, 0, 0], [4.0, 5.0])


def test_nonfinite_output_replaced_with_warning(scratch_registry):
    def fn(frames):
        out = np.ones((2, *frames.shape[1:]))
        out[0, 0, 0] = np.nan
        out[1, 1, 1] = np.inf
        return out

    motion.register("leaky", fn, min_frames=2)
    with pytest.warns(SkydiffWarning, match="2 non-finite"):
        out = motion.estimate(np.random.default_rng(0).random((2, 4, 4)) + 1, "leaky")
    assert np.isfinite(out).all() and out[0, 0, 0] == 0 and out[1, 1, 1] == 0


def test_wrong_output_shape_raises(scratch_registry):
    motion.register("badshape", lambda frames: np.zeros((2, 3, 3)), min_frames=2)
    with pytest.raises(InputError, match="returned shape"):
        motion.estimate(np.random.default_rng(0).random((2, 4, 4)) + 1, "badshape")


# --------------------------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------------------------


def test_single_field_raises_shape_error():
    with pytest.raises(ShapeError, match="need at least 2 frames"):
        motion.estimate(np.ones((16, 16)), "lk")
    with pytest.raises(ShapeError, match="need at least 1 frames"):
        motion.estimate(np.ones((16, 16)), "none")


@pytest.mark.parametrize("shape", [(16,), (1, 2, 16, 16), (2, 1, 16)])
def test_bad_shapes(shape):
    with pytest.raises(ShapeError):
        motion.estimate(np.ones(shape), "lk")


@pytest.mark.parametrize(
    "method, n_frames, match",
    [
        ("lk", 1, "at least 2 frames, got 1"),
        ("vet", 1, "at least 2 frames, got 1"),
        ("proesmans", 1, "at least 2 frames"),
        ("farneback", 1, "at least 2 frames"),
        ("darts", 2, "at least 3 frames"),
        ("darts", 5, r"N_t \+ 2 = 6 frames"),
    ],
)
def test_too_few_frames(translated, method, n_frames, match):
    frames = _translated(n_frames) if n_frames > 3 else translated[:n_frames]
    with pytest.raises(InputError, match=match):
        motion.estimate(frames, method)


def test_darts_smaller_n_t_accepts_fewer_frames():
    frames = _translated(4)
    with pytest.raises(InputError, match="N_t"):
        motion.estimate(frames, "darts", N_t=3)
    out = motion.estimate(frames, "darts", N_t=2, N_x=8, N_y=8)
    assert out.shape == (2, N, N) and np.isfinite(out).all()


def test_all_nan_frame(translated):
    frames = translated.copy()
    frames[1] = np.nan
    with pytest.raises(InputError, match=r"frames \[1\] are entirely NaN"):
        motion.estimate(frames, "lk")
    # a frame that VET does not use is not checked
    frames4 = np.concatenate([np.full((1, N, N), np.nan), translated])
    with pytest.raises(InputError, match=r"frames \[0\]"):
        motion.estimate(frames4, "lk")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = motion.estimate(frames4, "vet", sectors=((16, 4), (16, 4)))
    assert np.isfinite(out).all()


def test_bad_values(translated):
    frames = translated.copy()
    frames[0, 5, 5] = np.inf
    with pytest.raises(InputError, match="infinite"):
        motion.estimate(frames, "lk")
    with pytest.raises(InputError, match="negative rain rates"):
        motion.estimate(translated - 20.0, "lk")
    # the same data are fine without the transform
    out = motion.estimate(translated - 20.0, "lk", transform=None)
    assert out.shape == (2, N, N)
    with pytest.raises(InputError, match="unknown transform"):
        motion.estimate(translated, "lk", transform="boxcox")
    with pytest.raises(InputError, match="real numeric"):
        motion.estimate(translated.astype(complex), "lk")
    with pytest.raises(InputError, match="real numeric"):
        motion.estimate(np.array([["a", "b"], ["c", "d"]]), "lk")


@pytest.mark.parametrize("method", ["lk", "vet", "proesmans", "farneback", "darts", "constant"])
def test_dry_frames_give_zero_with_warning(method):
    frames = np.full((6, 32, 32), 0.05)
    frames[:, :4, :4] = 0.0
    frames[:, 10, 10] = np.nan
    with pytest.warns(SkydiffWarning, match="no rain"):
        out = motion.estimate(frames, method)
    assert out.shape == (2, 32, 32) and np.all(out == 0)


@pytest.mark.parametrize("method, good, typo", [("lk", {"fd_kwargs": {}, "grid_stride": 2}, "fdkwargs"),
                                                ("vet", {"smooth_gain": 1e3}, "sigma"),
                                                ("proesmans", {"lam": 50.0}, "lamda"),
                                                ("darts", {"N_t": 2}, "Nt"),
                                                ("4dvar", {"sigma": 1.0, "times": None}, "sigmaa"),
                                                ("constant", {}, "fast")])
def test_keyword_typos_are_refused_on_dry_frames_too(method, good, typo):
    """No method runs on dry frames, so a misspelt keyword went unnoticed until a rainy day."""
    frames = np.zeros((6, 32, 32))
    with pytest.warns(SkydiffWarning, match="no rain"):
        motion.estimate(frames, method, **good)
    with pytest.raises(InputError, match=f"unexpected keyword.*{typo}"):
        motion.estimate(frames, method, **{typo: 1})


def test_no_data_without_transform_is_the_dry_value(translated):
    # transform=None for data already in dBR: no data takes their smallest (dry) value, as with the dB transform
    # (it was 0, i.e. 1 mm/h of rain in dBR, and moved the LK motion by 0.6 px)
    frames = translated.copy()
    frames[:, 20:40, 20:40] = np.nan
    dbr = np.where(frames >= 0.1, 10 * np.log10(np.maximum(frames, 0.1)), -15.0)
    dbr[np.isnan(frames)] = np.nan
    np.testing.assert_allclose(motion.estimate(dbr, "lk", transform=None), motion.estimate(frames, "lk"))


def test_constant_fields_without_transform_give_zero_with_warning():
    with pytest.warns(SkydiffWarning, match="constant"):
        out = motion.estimate(np.full((3, 16, 16), -15.0), "lk", transform=None)
    assert np.all(out == 0)


@pytest.mark.parametrize("method", ["none", "zero", "ZERO"])
def test_zero_method(translated, method):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = motion.estimate(translated, method)
        one = motion.estimate(translated[:1], method)
    assert out.shape == (2, N, N) and out.dtype == np.float64 and np.all(out == 0)
    assert one.shape == (2, N, N)


# --------------------------------------------------------------------------------------------------------------
# accuracy (pysteps)
# --------------------------------------------------------------------------------------------------------------


def test_lk_recovers_translation(translated):
    vel = motion.estimate(translated, "lk")
    assert isinstance(vel, np.ndarray) and vel.dtype == np.float64 and vel.shape == (2, N, N)
    assert _rel_error(vel, _true_translation(), _rainy_interior(translated[-1])) < 0.1


@pytest.mark.parametrize("stride", [2, 4, 7])
def test_lk_grid_stride_matches_the_full_resolution_interpolation(translated, stride):
    full = motion.estimate(translated, "lk")
    coarse = motion.estimate(translated, "lk", grid_stride=stride)
    assert coarse.shape == full.shape and np.isfinite(coarse).all()
    # pysteps' interpolation evaluated on every stride-th pixel, upsampled: equal there, close everywhere
    np.testing.assert_allclose(coarse[:, ::stride, ::stride], full[:, ::stride, ::stride], atol=1e-9)
    assert np.abs(coarse - full).mean() < 0.05 * np.abs(full).mean()
    assert _rel_error(coarse, _true_translation(), _rainy_interior(translated[-1])) < 0.1
    np.testing.assert_array_equal(motion.estimate(translated, "lk", grid_stride=stride, dense=True), coarse)
    with pytest.raises(InputError, match="grid_stride"):
        motion.estimate(translated, "lk", grid_stride=0)
    with pytest.raises(InputError, match="idwinterp2d"):
        motion.estimate(translated, "lk", grid_stride=stride, interp_method="rbfinterp2d")


def test_vet_recovers_translation(translated):
    vel = motion.estimate(translated, "vet")  # default sectors, 3 frames
    assert _rel_error(vel, _true_translation(), _rainy_interior(translated[-1])) < 0.1


def test_proesmans_refuses_grids_its_pyramid_cannot_halve():
    # pysteps' Proesmans aborts the whole process (double free) on grids below 2**(num_levels-1) pixels
    small = np.zeros((2, 24, 24))
    small[:, 8:14, 8:14] = 3.0
    with pytest.raises(ShapeError, match="at least 32 x 32"):
        motion.estimate(small, "proesmans")
    assert motion.estimate(small, "proesmans", num_levels=3).shape == (2, 24, 24)


def test_vet_result_converts_to_torch(translated):
    # VET's field has negative strides; torch.from_numpy refused it before
    vel = motion.estimate(torch.from_numpy(translated[-3:].copy()), "vet")
    assert isinstance(vel, torch.Tensor) and vel.shape == (2, *translated.shape[1:])


def test_unknown_keyword_is_an_input_error(translated):
    with pytest.raises(InputError, match="keyword arguments"):
        motion.estimate(translated, "lk", zzz=1)


@pytest.mark.parametrize("method", ["proesmans", "farneback"])
def test_other_methods_roughly_recover_translation(translated, method):
    vel = motion.estimate(translated, method)
    assert np.isfinite(vel).all()
    # looser bound: these methods smooth more (pysteps' own tests accept 0.45 and 28 resp.)
    assert _rel_error(vel, _true_translation(), _rainy_interior(translated[-1])) < 0.25


def test_constant_method_direction(translated):
    vel = motion.estimate(translated, "constant")
    assert np.ptp(vel[0]) == 0 and np.ptp(vel[1]) == 0
    # pysteps' "constant" searches nearest-neighbour (order 0) shifts: check the direction only
    assert vel[0, 0, 0] * U + vel[1, 0, 0] * V > 0


def test_vet_recovers_rotation():
    """Solid rotation of 2 degrees per step about the centre (speeds up to ~2 px/step at radius 58 px).

    Bound 0.2 (vs 0.1 for translations): VET represents the field on a coarse sector grid with bilinear
    interpolation and penalises curvature, so a rotation is only approximated; pysteps' own rotor test only
    checks the translations strictly. Evaluated on rainy pixels 15-58 px from the centre (relative errors
    near the centre, where the speed vanishes, are meaningless).
    """
    base = _rain_field(seed=3)
    c = (N - 1) / 2
    yy, xx = np.mgrid[0:N, 0:N].astype(float)
    theta = np.deg2rad(2.0)

    def rotated(angle):  # frame(x) = base(R(-angle)(x - c) + c): content turned by +angle
        xs = c + np.cos(angle) * (xx - c) + np.sin(angle) * (yy - c)
        ys = c - np.sin(angle) * (xx - c) + np.cos(angle) * (yy - c)
        return ndi.map_coordinates(base, [ys, xs], order=3, mode="nearest").clip(0), xs, ys

    f0, _, _ = rotated(0.0)
    f1, xs, ys = rotated(theta)
    true = np.stack([xx - xs, yy - ys])  # backward displacement of one step at the destination pixel
    vel = motion.estimate(np.stack([f0, f1]), "vet", sectors=((16, 8, 4), (16, 8, 4)))
    r = np.hypot(xx - c, yy - c)
    mask = (f1 > 0.1) & (r > 15) & (r < 58)
    assert mask.sum() > 2000
    assert _rel_error(vel, true, mask) < 0.2


def test_torch_in_torch_out(translated):
    x = torch.tensor(translated, dtype=torch.float32, requires_grad=True)
    vel = motion.estimate(x, "lk")
    assert isinstance(vel, torch.Tensor)
    assert vel.dtype == torch.float32 and vel.device == x.device and vel.shape == (2, N, N)
    assert not vel.requires_grad
    ref = motion.estimate(translated.astype(np.float32), "lk")
    np.testing.assert_allclose(vel.numpy(), ref, rtol=1e-5, atol=1e-5)
    zero = motion.estimate(torch.tensor(translated, dtype=torch.float64), "none")
    assert isinstance(zero, torch.Tensor) and zero.dtype == torch.float64 and torch.all(zero == 0)


def test_darts_on_a_grid_smaller_than_its_fourier_modes_is_a_shape_error():
    """pysteps' DARTS indexed past grids under 2 N + 1 pixels: a raw IndexError (CLI: a traceback)."""
    frames = np.random.default_rng(0).gamma(0.5, 2.0, (6, 40, 120))
    with pytest.raises(ShapeError, match="at least 101 x 101 pixels, got 40 x 120"):
        motion.estimate(frames, "darts")
    assert motion.estimate(frames, "darts", N_x=10, N_y=10).shape == (2, 40, 120)


def test_a_dataarray_time_coordinate_is_checked_and_passed_to_4dvar():
    """estimate() ignored a DataArray's times: reversed frames flipped the motion and a gap was taken as one step."""
    import pandas as pd
    import xarray as xr

    frames = _translated(3)
    times = pd.date_range("2021-01-01", periods=3, freq="5min")
    da = xr.DataArray(frames, dims=("time", "y", "x"), coords={"time": times}, attrs={"units": "mm/h"})
    ref = motion.estimate(da, "lk")
    np.testing.assert_allclose(ref, motion.estimate(frames, "lk"))
    with pytest.raises(InputError, match="not strictly increasing"):
        motion.estimate(da[::-1], "lk")
    gapped = da.assign_coords(time=times[:2].append(pd.DatetimeIndex(["2021-01-01 00:30"])))
    with pytest.raises(InputError, match=r"not at a regular time step \(steps 5, 25 min\).*'4dvar'"):
        motion.estimate(gapped, "lk")
    # only the frames a method uses count (VET: the last 3), and a zero motion needs none
    five = xr.DataArray(_translated(5), dims=("time", "y", "x"), attrs={"units": "mm/h"}, coords={
        "time": pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 00:20", "2021-01-01 00:25", "2021-01-01 00:30",
                                  "2021-01-01 00:35"])})
    np.testing.assert_allclose(motion.estimate(five, "vet"), motion.estimate(five.values, "vet"))
    assert not motion.estimate(gapped, "none").any()
    # 4D-Var takes irregular times: the DataArray's own are passed on, as fourdvar(times=...) does
    got = motion.estimate(gapped, "4dvar", max_iter=5)
    want = motion.fourdvar(frames, times=np.asarray(gapped.time.values), max_iter=5).velocity
    np.testing.assert_allclose(got, want)


def test_keywords_pysteps_would_ignore_are_refused():
    frames = _translated(6)
    with pytest.raises(InputError, match="unexpected keyword argument.*fft_metod"):
        motion.estimate(frames, "darts", N_x=10, N_y=10, fft_metod="numpy")
    for name in ("constant", "none"):
        with pytest.raises(InputError, match="unexpected keyword argument.*bogus"):
            motion.estimate(frames[-2:], name, bogus=1)
    # VET with indexing='xy' read (T, H, W) as (T, x, y): its [0] was the y component
    with pytest.raises(InputError, match="indexing='xy'"):
        motion.estimate(frames[-3:], "vet", indexing="xy")


def test_fourdvar_takes_numpy_scalars_and_refuses_bools():
    frames = _translated(3)
    a = motion.fourdvar(frames, sigma=np.float32(1.0), gtol=np.float32(1e-4), ftol=np.float64(3e-3), max_iter=3)
    b = motion.fourdvar(frames, sigma=1.0, gtol=float(np.float32(1e-4)), ftol=3e-3, max_iter=3)
    np.testing.assert_allclose(a.velocity, b.velocity)
    for kw in ({"sigma": True}, {"ftol": True}, {"gtol": False}):
        with pytest.raises(InputError, match=f"{next(iter(kw))} must be"):
            motion.fourdvar(frames, max_iter=3, **kw)


def test_darts_warns_of_its_slow_motion():
    with pytest.warns(SkydiffWarning, match="DARTS returns far too slow a motion"):
        motion.estimate(_translated(6), "darts", N_x=10, N_y=10)
