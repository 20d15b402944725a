"""The weights shipped in skydiff/nowcast/weights: they load, carry a model card, run out of the box through
`forecast` on any grid with NaN regions, and (on real KNMI radar) beat persistence."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from skydiff.nowcast import forecast
from skydiff.nowcast.models import WEIGHTS_DIR, create_model
from skydiff.verify import categorical

SHIPPED = ["lupin", "rainnet", "lcnn", "smaat", "spatspark"]
N_IN = {"lupin": 6, "rainnet": 4, "lcnn": 5, "smaat": 12, "spatspark": 12}


def _need(name: str) -> None:
    if not (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        pytest.skip(f"no shipped weights for {name} in this checkout")


def blob_sequence(T: int, H: int = 70, W: int = 90) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    out = [6.0 * np.exp(-(((xx - 25 - 2 * t) / 9.0) ** 2 + ((yy - 30 - t) / 7.0) ** 2)) for t in range(T)]
    return np.stack(out).astype(np.float32)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_runs_out_of_the_box(name, one_thread):
    _need(name)
    meta = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())
    assert meta["model"] == name and meta["card"]["stages"], "model card without training record"
    model = create_model(name, pretrained=True)
    assert model.n_input_frames == N_IN[name]
    frames = blob_sequence(N_IN[name])
    frames[:, :6, :9] = np.nan  # no data in every frame -> NaN out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = forecast(frames, 6, model=name)
    assert out.shape == (6, 70, 90)
    assert np.isnan(out[:, :6, :9]).all()
    rest = out.copy()
    rest[:, :6, :9] = 0
    assert np.isfinite(rest).all() and (rest >= 0).all()
    cut = float(meta.get("predict", {}).get("min_rain", 0.0))  # the card's output cut is the model's default
    assert model.min_rain == cut and not ((rest > 0) & (rest < cut)).any()


@pytest.mark.parametrize("name", ["lupin", "rainnet"])
def test_shipped_model_beats_persistence_on_knmi(name, knmi2010, one_thread):
    """KNMI 2010-08-26 05:30-06:25 UTC (the test part, never used in training): CSI at 1 mm/h at +30 min on the
    fully valid 288 x 288 cut-out, against persistence on the same pixels."""
    _need(name)
    from skydiff.io import read_radar

    files = knmi2010[66 - N_IN[name] + 1 : 73]  # inputs ending 05:30, targets 05:35 .. 06:00
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        R = read_radar([str(f) for f in files]).values[:, 284:572, 225:513].astype(np.float32)
    x, y = R[: N_IN[name]], R[N_IN[name] :]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc = forecast(x, 6, model=name)
    pers = np.repeat(x[-1:], 6, axis=0)
    csi_m = categorical(fc[5], y[5], 1.0)["csi"]
    csi_p = categorical(pers[5], y[5], 1.0)["csi"]
    assert csi_m > csi_p + 0.05, f"{name} CSI {csi_m:.3f} vs persistence {csi_p:.3f}"


def test_shipped_lupin_moves_rain_along_its_4dvar_motion(knmi2010, one_thread):
    """The card's prior is what predict() uses: the motion returned is skydiff's 4D-Var estimate of the last 4
    input frames (unblurred), and LUPIN beats LK extrapolation at +30 min on the KNMI test cut-out of the test above
    (test part; not a tuning case)."""
    _need("lupin")
    import torch

    from skydiff.io import read_radar
    from skydiff.motion import estimate_batch

    meta = json.loads((WEIGHTS_DIR / "lupin.json").read_text())
    assert meta["config"]["motion_prior"] == "4dvar" and meta["config"]["motion_blur_sigma"] == 0.0
    files = knmi2010[66 - 5 : 73]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        R = read_radar([str(f) for f in files]).values[:, 284:572, 225:513].astype(np.float32)
    x, y = R[:6], R[6:]
    m = create_model("lupin", pretrained=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fc, motion = m.predict(x, 6, return_motion=True)
        v = estimate_batch(torch.from_numpy(x[None]), "4dvar", 4)[0].numpy()  # (the last 4 of the frames)
        ext = forecast(x, 6, model="extrapolation")
    np.testing.assert_allclose(motion, v, atol=1e-4)
    assert categorical(fc[5], y[5], 1.0)["csi"] > categorical(ext[5], y[5], 1.0)["csi"]


def test_forecast_motion_replaces_a_networks_own(one_thread):
    """forecast(model="lupin", motion="lk"): LUPIN moves the rain along that method's motion instead of its 4D-Var
    (the same nowcast as passing that motion as velocity=); networks without a motion refuse motion=; the
    default (None) is the network's own motion."""
    _need("lupin")
    import torch

    from skydiff.errors import InputError
    from skydiff.motion import estimate

    x = blob_sequence(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lk, v_lk = forecast(x, 3, model="lupin", motion="lk", return_velocity=True)
        given = forecast(x, 3, model="lupin", velocity=estimate(x[-3:], "lk"))
        own, v_own = forecast(x, 3, model="lupin", return_velocity=True)
        v_4dvar = estimate(torch.from_numpy(x[-4:]), "4dvar").numpy()
    np.testing.assert_allclose(lk, given, atol=1e-5)
    np.testing.assert_allclose(v_lk, estimate(x[-3:], "lk"), atol=1e-5)
    assert np.abs(v_own - v_lk).max() > 0.05 and np.abs(v_own - v_4dvar).max() < 0.05
    with pytest.raises(InputError, match="moves no rain along a motion field"):
        forecast(blob_sequence(4), 2, model="rainnet", motion="lk")
    # motion_kwargs without motion=: LUPIN's own 4D-Var ran without them (ignored silently before)
    with pytest.raises(InputError, match="estimates its own motion without them: pass motion= .*'4dvar'"):
        forecast(x, 3, model="lupin", motion_kwargs={"frames": 3})


@pytest.mark.parametrize("name", SHIPPED)
def test_channels_last_inference_is_the_same_nowcast(name, one_thread):
    """predict() runs the CPU convolutions channels-last (faster); the nowcast equals the contiguous-layout one
    to float rounding, and the model's weights are left in their original layout."""
    _need(name)
    model = create_model(name, pretrained=True)
    frames = blob_sequence(N_IN[name], 64, 72)
    fast = model.predict(frames, 3)
    w = next(p for p in model.parameters() if p.ndim == 4)
    assert w.is_contiguous()  # restored
    model.predict_channels_last = False
    ref = model.predict(frames, 3)
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["lupin", "rainnet", "lcnn", "spatspark"])
def test_mixed_precision_is_close_to_full(name, one_thread):
    """predict(precision="bfloat16") runs the convolutions in bfloat16 (faster on CPUs with AVX512-BF16 and on
    GPUs) but keeps advection and outputs in float32: the nowcast stays close to the full-precision one and the
    no-data mask is the same."""
    _need(name)
    model = create_model(name, pretrained=True)
    frames = blob_sequence(N_IN[name], 64, 72)
    frames[:, :5, :7] = np.nan
    ref = model.predict(frames, 3)
    amp = model.predict(frames, 3, precision="bfloat16")
    assert amp.dtype == ref.dtype == np.float32
    assert np.array_equal(np.isnan(amp), np.isnan(ref))
    ok = np.isfinite(ref)
    err = np.abs(amp - ref)[ok]
    wet = ref[ok] >= 1.0
    # measured: mean |diff| 0.0003-0.007 mm/h, mean relative difference on rain >= 1 mm/h 0.2-2 % (RainNet most)
    assert err.mean() < 0.02, f"{name}: mean |bf16 - fp32| {err.mean():.4f} mm/h"
    assert (err[wet] / ref[ok][wet]).mean() < 0.05, f"{name}: relative bf16 error on rain >= 1 mm/h"
    assert (amp[ok] >= 0).all()


def test_mixed_precision_refused_for_smaat(one_thread):
    _need("smaat")
    from skydiff.errors import InputError

    model = create_model("smaat", pretrained=True)
    with pytest.raises(InputError, match="does not run in bfloat16"):
        model.predict(blob_sequence(N_IN["smaat"], 32, 32), 1, precision="bfloat16")
