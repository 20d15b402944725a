"""Device and dtype following: results on the inputs' device and in their (floating) dtype.

The CPU tests check the dtype for float32 and float64 inputs (and the device where a non-CPU device can be
emulated with a ``meta`` tensor); the tests marked ``cuda`` run the same code with CUDA tensors and are skipped
where no CUDA device is present (as tests/test_cuda.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from skydiff.errors import InputError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DTYPES = (torch.float32, torch.float64)


def _blob_frames(t: int = 3, h: int = 20, w: int = 20) -> np.ndarray:
    """A Gaussian rain blob (mm/h) moving 1 px/step to the right."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    return np.stack([8.0 * np.exp(-((yy - 10) ** 2 + (xx - 7 - k) ** 2) / 12.0) for k in range(t)])


# --- advection: the numba kernels are CPU-only -------------------------------------------------------------------

def test_advect_trajectory_numba_refuses_non_cpu_tensors():
    from skydiff.advection import advect_trajectory

    # a meta tensor stands in for a CUDA one: the refusal comes before any data is read
    state = torch.empty(3, 8, 8, device="meta")
    with pytest.raises(InputError, match="CPU only"):
        advect_trajectory(state, [1.0], backend="numba")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_advect_trajectory_keeps_dtype(dtype, backend):
    from skydiff.advection import advect_trajectory

    g = torch.Generator().manual_seed(0)
    state = torch.rand(3, 10, 12, generator=g, dtype=dtype)
    state[1:] = state[1:] * 0.5
    out = advect_trajectory(state, [0.5, 0.5], backend=backend)
    assert out.dtype == dtype and out.device == state.device and out.shape == (3, 3, 10, 12)


# --- motion ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [*DTYPES, torch.int64])
def test_estimate_batch_dtype(dtype):
    from skydiff.motion import estimate, estimate_batch

    frames = torch.as_tensor(_blob_frames()).to(dtype)[None]
    v = estimate_batch(frames, "none")
    want = dtype if dtype.is_floating_point else torch.get_default_dtype()
    assert v.dtype == want and v.shape == (1, 2, 20, 20)
    assert estimate(frames[0], "none").dtype == want  # as estimate()


@pytest.mark.parametrize("dtype", DTYPES)
def test_fourdvar_reference_keeps_dtype(dtype, one_thread):
    from skydiff.motion import fourdvar_reference

    frames = torch.as_tensor(_blob_frames()).to(dtype)
    res = fourdvar_reference(frames, max_iter=2, n_substeps=2)
    for t in (res.velocity, res.trajectory_w, res.trajectory_I):
        assert isinstance(t, torch.Tensor) and t.dtype == dtype and t.device == frames.device
    res_np = fourdvar_reference(_blob_frames(), max_iter=2, n_substeps=2)
    assert isinstance(res_np.velocity, np.ndarray) and res_np.velocity.dtype == np.float64
    torch.testing.assert_close(res.velocity.double(), torch.from_numpy(res_np.velocity),
                               rtol=0, atol=1e-3 if dtype == torch.float32 else 1e-12)


# --- verification: results without any valid value ----------------------------------------------------------------

def _empty_scores(x: torch.Tensor) -> list[torch.Tensor]:
    from skydiff.verify import crps_ensemble, ks_normal, negative_fraction, wet_fraction

    return [wet_fraction(x), negative_fraction(x), ks_normal(x), crps_ensemble(x[None].expand(3, -1, -1), x)]


@pytest.mark.parametrize("dtype", DTYPES)
def test_scores_without_valid_values_keep_dtype(dtype):
    x = torch.full((4, 5), float("nan"), dtype=dtype)
    for v in _empty_scores(x):
        assert v.dtype == dtype and v.device == x.device and bool(torch.isnan(v))


@cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_scores_without_valid_values_stay_on_cuda(dtype):
    x = torch.full((4, 5), float("nan"), dtype=dtype, device="cuda")
    for v in _empty_scores(x):
        assert v.device.type == "cuda" and v.dtype == dtype and bool(torch.isnan(v))


# --- downscaling -------------------------------------------------------------------------------------------------

def _tiny_edm(space: str = "log1p") -> torch.nn.Module:
    from skydiff.downscale.diffusion import EDMDownscaler

    torch.manual_seed(0)
    kw = {"pp_model": None} if space != "pp" else {"pp_model": "pp-radar", "pp_config": {"hidden": 4, "depth": 1}}
    return EDMDownscaler(factor=2, space=space, base_channels=8, mults=(1, 2), **kw).eval()


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_seeded_keeps_model_dtype(dtype, one_thread):
    m = _tiny_edm().to(dtype)
    lo = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(1), dtype=dtype) * 3
    a = m.sample(lo, members=2, steps=2, seed=0, progress=False, return_space=True)
    b = m.sample(lo, members=2, steps=2, seed=0, progress=False, return_space=True)
    assert a.dtype == dtype and a.device == lo.device and a.shape == (2, 1, 12, 12)
    assert torch.equal(a, b)


def test_pp_report_cpu():
    from skydiff.downscale.pseudo import PseudoPrecip, pp_report

    torch.manual_seed(0)
    rep = pp_report(PseudoPrecip(hidden=4, depth=1), _blob_frames())
    assert isinstance(rep["ks"], float) and isinstance(rep["ks_censored"], float) and rep["n"] == 3 * 20 * 20


@cuda
def test_pp_report_with_a_model_on_cuda():
    from skydiff.downscale.pseudo import PseudoPrecip, pp_report

    torch.manual_seed(0)
    m = PseudoPrecip(hidden=4, depth=1)
    cpu = pp_report(m, _blob_frames())
    gpu = pp_report(m.to("cuda"), _blob_frames())
    assert set(gpu) == set(cpu)
    for k in cpu:
        assert gpu[k] == pytest.approx(cpu[k], rel=1e-4, abs=1e-6, nan_ok=True), k


@cuda
def test_sample_seed_with_cpu_input_and_model_on_cuda():
    # a PP model moves the low-resolution input to its device: the seeded noise must be drawn there too
    m = _tiny_edm("pp").to("cuda")
    lo = torch.rand(1, 6, 6, generator=torch.Generator().manual_seed(1)) * 3
    a = m.sample(lo, members=2, steps=2, seed=0, progress=False, return_space=True)
    b = m.sample(lo.cuda(), members=2, steps=2, seed=0, progress=False, return_space=True)
    assert a.device.type == "cuda" and torch.equal(a, b)


# --- the dynamical core's training helpers ----------------------------------------------------------------------

def test_dycore_training_helpers_on_cpu():
    from skydiff.dycore.coordinates import Neuve, Sleve
    from skydiff.dycore.training import TRAIN_TERRAINS, _device, klemp_loss

    assert _device(Sleve()) == torch.device("cpu") and _device(Neuve()) == torch.device("cpu")
    loss, wmax = klemp_loss(Neuve().double(), TRAIN_TERRAINS[0], seconds=5.0, use_checkpoint=False)  # 1 sample
    assert loss.dtype == torch.float64 and loss.device.type == "cpu" and np.isfinite(wmax)


@cuda
def test_dycore_training_helpers_follow_a_coordinate_on_cuda():
    from skydiff.dycore.coordinates import Neuve, Sleve
    from skydiff.dycore.training import TRAIN_TERRAINS, fit_to_coordinate, klemp_loss, klemp_max_w

    torch.manual_seed(0)
    coord = Neuve().double()
    lc, _ = klemp_loss(coord, TRAIN_TERRAINS[0], seconds=5.0, use_checkpoint=False)
    gpu = Neuve().double()
    gpu.load_state_dict(coord.state_dict())
    gpu = gpu.to("cuda")
    lg, _ = klemp_loss(gpu, TRAIN_TERRAINS[0], seconds=5.0, use_checkpoint=False)
    assert lg.device.type == "cuda"
    lg.backward()
    assert all(p.grad is not None and p.grad.device.type == "cuda" for p in gpu.parameters())
    assert float(lg) == pytest.approx(float(lc), rel=1e-8)
    assert np.isfinite(klemp_max_w(gpu, TRAIN_TERRAINS[0], seconds=2.0))
    assert np.isfinite(fit_to_coordinate(gpu, Sleve(), TRAIN_TERRAINS[:1], steps=1))


# --- nowcasting: the networks' motion in the input's dtype ----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_network_nowcast_and_motion_follow_the_input_dtype(dtype, one_thread):
    from skydiff.nowcast import forecast

    frames = torch.as_tensor(_blob_frames(6, 32, 32)).to(dtype)
    out, vel = forecast(frames, 2, model="lcnn", return_velocity=True)  # L-CNN returns its LK motion
    assert out.dtype == dtype and vel.dtype == dtype and vel.shape == (2, 32, 32)
    assert out.device == frames.device and vel.device == frames.device


@cuda
def test_downscale_leaves_a_callers_model_where_it_is():
    from skydiff.downscale import downscale

    m = _tiny_edm().to("cuda")
    lo = np.random.default_rng(0).gamma(1.0, 2.0, (6, 6)).astype(np.float32)
    a = downscale(lo, factor=2, model=m, members=2, steps=2, seed=0, progress=False, conserve=False)
    b = downscale(torch.from_numpy(lo), factor=2, model=m, members=2, steps=2, seed=0, progress=False,
                  conserve=False)
    assert isinstance(a, np.ndarray) and b.device.type == "cpu" and next(m.parameters()).device.type == "cuda"
    np.testing.assert_array_equal(a, b.numpy())


# --- device=: compute elsewhere than the input lives, the result back where it came from --------------------------

def test_check_device_errors():
    from skydiff.errors import check_device

    assert check_device(None) is None
    assert check_device("cpu") == torch.device("cpu")
    for bad, msg in (("bogus", "unknown device"), ("meta", "unsupported device"), (3.5, "unknown device")):
        with pytest.raises(InputError, match=msg):
            check_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            check_device("cuda")


def test_forecast_downscale_and_evaluate_take_a_device():
    from skydiff.downscale import downscale
    from skydiff.nowcast import forecast
    import xarray as xr

    from skydiff.nowcast.evaluation import evaluate

    frames = _blob_frames(4)
    ref = forecast(frames, 2)
    np.testing.assert_array_equal(forecast(frames, 2, device="cpu"), ref)
    t = torch.from_numpy(frames).float()
    out = forecast(t, 2, model="rainnet", device="cpu")
    assert out.device == t.device and out.dtype == torch.float32
    with pytest.raises(InputError, match="unknown device"):
        forecast(frames, 2, device="gpu0")
    lo = np.full((8, 8), 2.0, np.float32)
    a = downscale(lo, members=1, steps=12, seed=0, progress=False, label=None)
    b = downscale(lo, members=1, steps=12, seed=0, progress=False, label=None, device="cpu")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InputError, match="unknown device"):
        downscale(lo, members=1, steps=2, device="gpu0")
    with pytest.raises(InputError, match="unknown device"):
        evaluate(xr.DataArray(frames, dims=("time", "y", "x"), coords={"time": np.arange(4) * np.timedelta64(5, "m")
                                                                       + np.datetime64("2021-01-01T00:00")}),
                 ["persistence"], device="gpu0")


@cuda
def test_device_cuda_computes_there_and_returns_as_given():
    from skydiff.downscale import downscale
    from skydiff.nowcast import forecast

    frames = _blob_frames(12)
    for model in ("extrapolation", "rainnet"):
        cpu = forecast(frames, 2, model=model)
        gpu = forecast(frames, 2, model=model, device="cuda")
        assert isinstance(gpu, np.ndarray)
        np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=2e-3)
    out = forecast(torch.from_numpy(frames).float(), 2, model="rainnet", device="cuda")
    assert out.device.type == "cpu"
    lo = np.full((8, 8), 2.0, np.float32)
    ens = downscale(lo, members=1, steps=12, seed=0, progress=False, label=None, device="cuda")
    assert isinstance(ens, np.ndarray) and ens.shape == (1, 32, 32)
    from skydiff.downscale.interface import get_downscaler

    own = get_downscaler("radar").to("cpu")  # a model of the caller's is not moved: device= elsewhere is refused
    with pytest.raises(InputError, match="its own device"):
        downscale(lo, model=own, members=1, steps=12, progress=False, label=None, device="cuda")
