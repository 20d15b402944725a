"""Tests of skydiff.verify against pysteps.verification and hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skydiff._compat import import_pysteps
from skydiff.errors import InputError, ShapeError
from skydiff.verify import (
    CATEGORICAL_SCORES,
    Contingency,
    aggregate,
    categorical,
    contingency,
    continuous,
    fss,
    fss_curve,
    rapsd,
    score_table,
)

import_pysteps()
from pysteps.utils.spectral import rapsd as ps_rapsd  # noqa: E402
from pysteps.verification.detcatscores import det_cat_fct  # noqa: E402
from pysteps.verification.detcontscores import det_cont_fct  # noqa: E402
from pysteps.verification.spatialscores import fss as ps_fss  # noqa: E402
from pysteps.verification.spatialscores import fss_accum, fss_compute, fss_init  # noqa: E402

TOL = 1e-6
# skydiff key -> pysteps det_cat_fct key
PS_CAT = {"csi": "CSI", "pod": "POD", "far": "FAR", "ets": "GSS", "hss": "HSS", "acc": "ACC", "f1": "F1",
          "bias": "BIAS", "pofd": "FA"}
PS_CAT_SCORES = [v.lower() for v in PS_CAT.values()]


def rain(shape, seed, p_rain=0.4, scale=3.0):
    """Rain-like field: lognormal intensities, many exact zeros, a little spatial structure."""
    rng = np.random.default_rng(seed)
    x = rng.lognormal(0.0, 1.0, shape) * scale / 2
    mask = rng.random(shape) < p_rain
    x = np.where(mask, x, 0.0)
    # mild smoothing (neighbours along both axes) so that FSS depends on scale
    return 0.5 * x + 0.25 * np.roll(x, 1, -1) + 0.25 * np.roll(x, -1, -2)


def assert_close(a, b, tol=TOL):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, equal_nan=True)


@pytest.fixture(scope="module")
def pair():
    return rain((60, 70), 1), rain((60, 70), 2)


@pytest.fixture(scope="module")
def stack():
    return rain((4, 40, 50), 3), rain((4, 40, 50), 4)


# ---------------------------------------------------------------------------------------------------------
# continuous
# ---------------------------------------------------------------------------------------------------------
def test_continuous_matches_pysteps(pair, stack):
    f, o = pair
    ours = continuous(f, o)
    ref = det_cont_fct(f, o, scores=["ME", "MAE", "MSE", "RMSE"])
    for k in ("me", "mae", "mse", "rmse"):
        assert isinstance(ours[k], float)
        assert_close(ours[k], ref[k.upper()])
    fs, os_ = stack
    ours = continuous(fs, os_, dims=(-2, -1))
    ref = det_cont_fct(fs, os_, scores=["ME", "MAE", "MSE", "RMSE"], axis=(1, 2))
    for k in ("me", "mae", "mse", "rmse"):
        assert ours[k].shape == (4,)
        assert_close(ours[k], ref[k.upper()])


def test_continuous_known_values():
    f = np.array([[1.0, 2.0], [3.0, 4.0]])
    o = np.array([[0.0, 2.0], [5.0, 4.0]])
    s = continuous(f, o)
    assert s == pytest.approx({"mse": 5 / 4, "rmse": math.sqrt(5 / 4), "mae": 3 / 4, "me": -1 / 4})
    assert continuous(f, f) == {"mse": 0.0, "rmse": 0.0, "mae": 0.0, "me": 0.0}
    assert np.isnan(continuous(np.full((2, 2), np.nan), o)["mse"])  # nothing valid -> NaN


def test_continuous_gradcheck():
    rng = np.random.default_rng(5)
    f = torch.tensor(rng.normal(size=(3, 4, 5)), dtype=torch.float64, requires_grad=True)
    o_np = rng.normal(size=(3, 4, 5))
    o_np[0, 1, 2] = np.nan
    o = torch.tensor(o_np)
    for key in ("mse", "mae"):
        assert torch.autograd.gradcheck(lambda x: continuous(x, o, dims=(-2, -1))[key], (f,))
        assert torch.autograd.gradcheck(lambda x: continuous(x, o)[key], (f,))
    # masked pixel gets a zero (not NaN) gradient
    continuous(f, o)["mse"].backward()
    assert f.grad[0, 1, 2] == 0 and torch.isfinite(f.grad).all()


# ---------------------------------------------------------------------------------------------------------
# categorical
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("thr", [0.0, 0.1, 1.0, 2.5, 6.0])
def test_categorical_matches_pysteps_gt(pair, thr):
    f, o = pair
    ours = categorical(f, o, thr, event="gt")
    ref = det_cat_fct(f, o, thr, scores=PS_CAT_SCORES)
    for k, pk in PS_CAT.items():
        assert_close(ours[k], ref[pk])
    assert_close(ours["precision"], 1 - ref["FAR"])


@pytest.mark.parametrize("thr", [0.3141, 1.2345, 4.4321])
def test_categorical_ge_equals_gt_off_values(pair, stack, thr):
    # thresholds not hit exactly by any value: "ge" and "gt" count the same events as pysteps
    f, o = pair
    assert not (np.any(f == thr) or np.any(o == thr))
    ours = categorical(f, o, thr)  # default event="ge"
    ref = det_cat_fct(f, o, thr, scores=PS_CAT_SCORES)
    for k, pk in PS_CAT.items():
        assert_close(ours[k], ref[pk])
    fs, os_ = stack
    ours = categorical(fs, os_, thr, dims=(-2, -1))
    ref = det_cat_fct(fs, os_, thr, scores=PS_CAT_SCORES, axis=(1, 2))
    for k, pk in PS_CAT.items():
        assert ours[k].shape == (4,)
        assert_close(ours[k], ref[pk])


def test_event_ge_vs_gt_at_zero():
    f = np.array([0.0, 0.0, 1.0, 2.0])
    o = np.array([0.0, 1.0, 0.0, 2.0])
    ge = contingency(f, o, 0.0, event="ge")  # every pixel is an event
    gt = contingency(f, o, 0.0, event="gt")
    assert (int(ge.hits), int(ge.misses), int(ge.false_alarms), int(ge.correct_negatives)) == (4, 0, 0, 0)
    assert (int(gt.hits), int(gt.misses), int(gt.false_alarms), int(gt.correct_negatives)) == (1, 1, 1, 1)


def test_categorical_known_values(pair):
    f, _ = pair
    s = categorical(f, f, 1.0)
    for k in ("csi", "pod", "acc", "precision", "f1", "bias", "ets", "hss"):
        assert s[k] == pytest.approx(1.0)
    assert s["far"] == 0.0 and s["pofd"] == 0.0
    # hand-computed table: H=2, M=1, F=1, R=4
    f = np.array([5, 5, 0, 5, 0, 0, 0, 0.0])
    o = np.array([5, 5, 5, 0, 0, 0, 0, 0.0])
    c = contingency(f, o, 1.0)
    assert [int(v) for v in (c.hits, c.misses, c.false_alarms, c.correct_negatives)] == [2, 1, 1, 4]
    s = c.scores()
    hr = 3 * 3 / 8
    assert s["csi"] == pytest.approx(0.5)
    assert s["pod"] == pytest.approx(2 / 3)
    assert s["far"] == pytest.approx(1 / 3)
    assert s["pofd"] == pytest.approx(1 / 5)
    assert s["acc"] == pytest.approx(6 / 8)
    assert s["bias"] == pytest.approx(1.0)
    assert s["f1"] == pytest.approx(4 / 6)
    assert s["ets"] == pytest.approx((2 - hr) / (4 - hr))
    assert s["hss"] == pytest.approx(2 * (8 - 1) / (3 * 5 + 3 * 5))


def test_undefined_ratios_are_nan():
    z = np.zeros((5, 5))
    s = categorical(z, z, 1.0)  # no events at all
    for k in ("csi", "pod", "far", "precision", "f1", "bias", "ets"):
        assert np.isnan(s[k]), k
    assert s["acc"] == 1.0 and s["pofd"] == 0.0


def test_contingency_add_and_sum(stack):
    fs, os_ = stack
    per = contingency(fs, os_, 1.0, dims=(-2, -1))
    assert per.hits.shape == (4,) and per.hits.dtype == torch.int64
    total = sum(contingency(fs[i], os_[i], 1.0) for i in range(4))
    pooled = contingency(fs, os_, 1.0)
    for c in (total, per.sum()):
        for a, b in zip((c.hits, c.misses, c.false_alarms, c.correct_negatives),
                        (pooled.hits, pooled.misses, pooled.false_alarms, pooled.correct_negatives)):
            assert int(a) == int(b)
    assert total.scores() == pytest.approx(pooled.scores())
    assert isinstance(total, Contingency) and isinstance(total.scores()["csi"], float)
    with pytest.raises(InputError, match="threshold"):
        contingency(fs, os_, 1.0) + contingency(fs, os_, 2.0)
    with pytest.raises(InputError, match="event"):
        contingency(fs, os_, 1.0) + contingency(fs, os_, 1.0, event="gt")


# ---------------------------------------------------------------------------------------------------------
# NaN masking
# ---------------------------------------------------------------------------------------------------------
def test_nan_masking_equals_valid_pixels_only(pair):
    f, o = (x.copy() for x in pair)
    rng = np.random.default_rng(9)
    f[rng.random(f.shape) < 0.1] = np.nan
    o[rng.random(o.shape) < 0.1] = np.nan
    valid = ~np.isnan(f) & ~np.isnan(o)
    assert_close(list(continuous(f, o).values()), list(continuous(f[valid], o[valid]).values()), 1e-12)
    for thr in (0.5, 2.0):
        ours = categorical(f, o, thr)
        ref = categorical(f[valid], o[valid], thr)
        assert_close([ours[k] for k in CATEGORICAL_SCORES], [ref[k] for k in CATEGORICAL_SCORES], 1e-12)
        # pysteps differs: det_cat_fct counts NaN as "no event" (NaN > thr is False), so NaN/NaN pixels
        # become correct negatives and forecast rain over a NaN observation a false alarm, i.e.
        # det_cat_fct(f, o, thr)["ACC"] != det_cat_fct(f[valid], o[valid], thr)["ACC"] in general.
        c = contingency(f, o, thr)
        assert int(c.n) == valid.sum()


def test_fss_nan_masking(pair):
    f, o = (x.copy() for x in pair)
    rng = np.random.default_rng(11)
    nan = rng.random(f.shape) < 0.05
    f_n = np.where(nan, np.nan, f)
    valid = ~nan
    # scale 1: exactly the FSS over the valid pixels only
    i_f = (f[valid] >= 1.0).astype(float)
    i_o = (o[valid] >= 1.0).astype(float)
    expect = 1 - np.sum((i_f - i_o) ** 2) / (np.sum(i_f**2) + np.sum(i_o**2))
    assert_close(fss(f_n, o, 1.0, 1), expect, 1e-12)
    # a NaN in the forecast masks the pixel in both fields: same result as the NaN in the observation
    o_n = np.where(nan, np.nan, o)
    for s in (2, 5):
        assert_close(fss(f_n, o, 1.0, s), fss(f, o_n, 1.0, s), 1e-12)
    # NaN pixels farther than scale//2 from any event change nothing
    a = np.zeros((40, 40))
    b = np.zeros((40, 40))
    a[5:12, 5:12] = 3.0
    b[7:14, 6:13] = 3.0
    a_n = a.copy()
    a_n[30:36, 25:38] = np.nan
    for s in (1, 3, 4, 7):
        assert_close(fss(a_n, b, 1.0, s), ps_fss(a, b, 1.0, s), 1e-12)
    # pysteps sets NaN to "no event" and keeps those pixels in its sums; near events that gives other values
    # (ps_fss(f_n, o, 1.0, 5) != fss(f_n, o, 1.0, 5)).


# ---------------------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------------------
def test_aggregate_pooled_vs_mean():
    # field 1: H=1, M=1, F=0, R=2 -> csi 1/2 ; field 2 (larger): H=3, M=0, F=1, R=2 -> csi 3/4
    f1 = np.array([[2.0, 0.0], [0.0, 0.0]])
    o1 = np.array([[2.0, 2.0], [0.0, 0.0]])
    f2 = np.array([[2.0, 2.0, 2.0], [2.0, 0.0, 0.0]])
    o2 = np.array([[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    pooled = aggregate([f1, f2], [o1, o2], threshold=1.0, how="pooled")
    mean = aggregate([f1, f2], [o1, o2], threshold=1.0, how="mean")
    assert pooled["csi"] == pytest.approx(4 / 6)  # H=4, M=1, F=1
    assert mean["csi"] == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert pooled["pod"] == pytest.approx(4 / 5)
    assert mean["pod"] == pytest.approx((1 / 2 + 1) / 2)
    # continuous: |errors| field 1 = [0, 2, 0, 0] (mae 1/2), field 2 = [0,0,0,2,0,0] (mae 1/3)
    assert pooled["mae"] == pytest.approx(4 / 10)
    assert mean["mae"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert pooled["mse"] == pytest.approx(8 / 10)
    assert mean["mse"] == pytest.approx((4 / 4 + 4 / 6) / 2)
    assert pooled["me"] == pytest.approx((-2 + 2) / 10)
    assert mean["rmse"] == pytest.approx((1.0 + math.sqrt(4 / 6)) / 2)
    # a field without events has NaN csi: ignored by "mean", contributes correct negatives to "pooled"
    z = np.zeros((2, 2))
    mean3 = aggregate([f1, f2, z], [o1, o2, z], threshold=1.0, how="mean")
    assert mean3["csi"] == pytest.approx(mean["csi"])
    pooled3 = aggregate([f1, f2, z], [o1, o2, z], threshold=1.0, how="pooled")
    assert pooled3["csi"] == pytest.approx(pooled["csi"])
    assert pooled3["acc"] == pytest.approx((4 + 4 + 4) / 14)


def test_aggregate_stacked_equals_list(stack):
    fs, os_ = stack
    for how in ("pooled", "mean"):
        a = aggregate(fs, os_, 1.0, how=how)
        b = aggregate(list(fs), list(os_), 1.0, how=how)
        assert a == pytest.approx(b)
    a = aggregate(fs, os_, 1.0, how="pooled")
    assert a == pytest.approx({**continuous(fs, os_), **categorical(fs, os_, 1.0)})
    m = aggregate(fs, os_, how="mean")
    assert set(m) == {"mse", "rmse", "mae", "me"}
    assert m["mse"] == pytest.approx(float(np.mean(continuous(fs, os_, dims=(1, 2))["mse"])))
    with pytest.raises(InputError, match="how"):
        aggregate(fs, os_, 1.0, how="median")


# ---------------------------------------------------------------------------------------------------------
# FSS
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("thr", [0.5, 1.0, 4.0])
def test_fss_matches_pysteps(pair, thr):
    f, o = pair
    for s in (1, 2, 3, 4, 5, 8, 11, 16, 80):  # odd, even, larger than the field
        assert_close(fss(f, o, thr, s), ps_fss(f, o, thr, s))


def test_fss_batch_and_pooled(stack):
    fs, os_ = stack
    for s in (3, 6):
        per = fss(fs, os_, 1.0, s)
        assert per.shape == (4,)
        assert_close(per, [ps_fss(fs[i], os_[i], 1.0, s) for i in range(4)])
        obj = fss_init(1.0, s)
        for i in range(4):
            fss_accum(obj, fs[i], os_[i])
        assert_close(fss(fs, os_, 1.0, s, how="pooled"), fss_compute(obj))
        assert_close(fss(fs, os_, 1.0, s, how="mean"), np.mean(per))
    curve = fss_curve(fs, os_, 1.0, [1, 2, 4, 8])
    assert curve.shape == (4, 4)
    assert_close(curve[2], fss(fs, os_, 1.0, 4))
    c1 = fss_curve(fs[0], os_[0], 1.0, [1, 2, 4])
    assert c1.shape == (3,) and np.all(np.diff(c1) > 0)


def test_fss_known_values():
    a = np.zeros((40, 40))
    a[10:20, 10:20] = 1.0
    b = np.roll(a, 5, axis=1)
    assert fss(a, b, 1.0, 1) == pytest.approx(0.5)
    assert fss(a, b, 0.5, 11) == pytest.approx(ps_fss(a, b, 0.5, 11))
    assert fss(a, a, 1.0, 7) == pytest.approx(1.0)
    assert np.isnan(fss(np.zeros((8, 8)), np.zeros((8, 8)), 1.0, 3))


def test_fss_smooth_is_differentiable(pair):
    f, o = pair
    ft = torch.tensor(f[:20, :20], requires_grad=True)
    ot = torch.tensor(o[:20, :20])
    val = fss(ft, ot, 1.0, 5, smooth=0.2)
    val.backward()
    assert ft.grad is not None and torch.isfinite(ft.grad).all() and ft.grad.abs().sum() > 0
    # the soft FSS tends to the hard one
    hard = fss(ft.detach(), ot, 1.0, 5)
    assert abs(float(fss(ft.detach(), ot, 1.0, 5, smooth=1e-4)) - float(hard)) < 1e-3
    small = torch.tensor(f[:8, :8], requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: fss(x, torch.tensor(o[:8, :8]), 1.0, 3, smooth=0.5), (small,))


def test_soft_fss_of_a_pair_without_events_is_undefined_like_the_hard_one():
    """The soft indicator is never 0, so a dry pair got any number in [0, 1] (0.41 here) and entered a "mean"."""
    z, h = np.zeros((8, 8)), np.full((8, 8), 0.5)
    for s in (0.01, 0.3):
        assert np.isnan(fss(z, h, 1.0, 3, smooth=s)) and np.isnan(fss(z, z, 1.0, 3, smooth=s))
    wet = np.zeros((8, 8))
    wet[3:5, 3:5] = 2.0
    x = torch.tensor(np.stack([h, wet]), requires_grad=True)
    o = torch.tensor(np.stack([z, wet]))
    m = fss(x, o, 1.0, 3, how="mean", smooth=0.3)
    assert float(m.detach()) == pytest.approx(float(fss(x[1].detach(), o[1], 1.0, 3, smooth=0.3)))
    assert float(fss(x.detach(), o, 1.0, 3, how="pooled", smooth=0.3)) == pytest.approx(float(m.detach()))
    m.backward()
    assert torch.isfinite(x.grad).all() and float(x.grad[0].abs().sum()) == 0.0


# ---------------------------------------------------------------------------------------------------------
# RAPSD
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(64, 64), (63, 63), (48, 80), (81, 50), (33, 64), (7, 4)])
def test_rapsd_matches_pysteps(shape):
    x = rain(shape, 21)
    ours, freq = rapsd(x, return_freq=True, d=2.0)
    ref, ref_freq = ps_rapsd(x, np.fft, return_freq=True, d=2.0)
    assert ours.shape == ref.shape
    l = max(shape)
    assert ours.shape == ((l // 2) if l % 2 == 0 else (l // 2 + 1),)
    assert_close(ours, ref, 1e-9)
    assert_close(freq, ref_freq, 1e-12)
    assert_close(rapsd(x, normalize=True), ps_rapsd(x, np.fft, normalize=True), 1e-9)


def test_rapsd_batch_nan_and_torch():
    x = rain((3, 32, 40), 22)
    out = rapsd(x)
    assert out.shape == (3, 20)
    assert_close(out[1], ps_rapsd(x[1], np.fft), 1e-9)
    xn = x[0].copy()
    xn[3, 4] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        rapsd(xn)
    assert_close(rapsd(xn, fill=0.0), rapsd(np.nan_to_num(xn, nan=0.0)), 1e-12)
    xt = torch.tensor(x[0], requires_grad=True)
    r, fr = rapsd(xt, return_freq=True)
    assert isinstance(r, torch.Tensor) and isinstance(fr, torch.Tensor)
    assert_close(r.detach().numpy(), out[0], 1e-12)
    r[1:].sum().backward()
    assert torch.isfinite(xt.grad).all()
    r32 = rapsd(torch.tensor(x[0], dtype=torch.float32))
    assert r32.dtype == torch.float32
    assert_close(r32.numpy(), out[0], 1e-4)
    with pytest.raises(ShapeError):
        rapsd(np.zeros(10))


# ---------------------------------------------------------------------------------------------------------
# numpy / torch, dtypes
# ---------------------------------------------------------------------------------------------------------
def test_numpy_and_torch_agree(stack):
    fs, os_ = stack
    ft, ot = torch.tensor(fs), torch.tensor(os_)
    for dims in (None, (-2, -1)):
        a = continuous(fs, os_, dims=dims)
        b = continuous(ft, ot, dims=dims)
        assert all(isinstance(v, torch.Tensor) for v in b.values())
        assert_close([np.asarray(a[k]) for k in a], [b[k].numpy() for k in a], 1e-12)
        a = categorical(fs, os_, 1.0, dims=dims)
        b = categorical(ft, ot, 1.0, dims=dims)
        assert_close([np.asarray(a[k]) for k in a], [b[k].numpy() for k in a], 1e-12)
    a = fss(fs, os_, 1.0, 4)
    b = fss(ft, ot, 1.0, 4)
    assert isinstance(a, np.ndarray) and isinstance(b, torch.Tensor)
    assert_close(a, b.numpy(), 1e-12)
    # mixed input: torch wins
    assert isinstance(continuous(fs, ot)["mse"], torch.Tensor)
    assert isinstance(fss_curve(ft[0], ot[0], 1.0, [1, 3]), torch.Tensor)


def test_float32_and_float64(stack):
    fs, os_ = stack
    f32, o32 = torch.tensor(fs, dtype=torch.float32), torch.tensor(os_, dtype=torch.float32)
    # compare against float64 computed on the float32-rounded values (same events)
    f64, o64 = f32.double(), o32.double()
    c32, c64 = continuous(f32, o32), continuous(f64, o64)
    assert c32["mse"].dtype == torch.float32
    for k in c32:
        assert_close(c32[k].numpy(), c64[k].numpy(), 1e-5)
    k32, k64 = categorical(f32, o32, 1.0), categorical(f64, o64, 1.0)
    assert all(torch.equal(k32[k], k64[k]) for k in CATEGORICAL_SCORES)  # same events, float64 scores
    for s in (1, 4, 9):
        v32 = fss(f32, o32, 1.0, s)
        assert v32.dtype == torch.float32
        assert_close(v32.numpy(), fss(f64, o64, 1.0, s).numpy(), 1e-5)
    # numpy float32 input works too
    assert_close(continuous(fs.astype(np.float32), os_.astype(np.float32))["mae"], continuous(fs, os_)["mae"], 1e-5)


# ---------------------------------------------------------------------------------------------------------
# lead-time table
# ---------------------------------------------------------------------------------------------------------
def test_score_table(stack, tmp_path):
    fs, os_ = stack
    df = score_table(fs, os_, thresholds=(0.5, 2.0), leadtimes_min=[5, 10, 15, 20], fss_scales=(1, 5))
    assert len(df) == 4 * 2
    assert list(df["step"]) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert list(df["leadtime_min"]) == [5, 5, 10, 10, 15, 15, 20, 20]
    row = df[(df["step"] == 3) & (df["threshold"] == 2.0)].iloc[0]
    cat = categorical(fs[2], os_[2], 2.0)
    cont = continuous(fs[2], os_[2])
    for k in CATEGORICAL_SCORES:
        assert row[k] == pytest.approx(cat[k], nan_ok=True)
    for k in cont:
        assert row[k] == pytest.approx(cont[k])
    assert row["fss_5"] == pytest.approx(fss(fs[2], os_[2], 2.0, 5))
    assert row["n"] == fs[2].size
    df.to_csv(tmp_path / "scores.csv", index=False)
    assert (tmp_path / "scores.csv").read_text().startswith("step,leadtime_min,threshold,n,mse")
    df2 = score_table(torch.tensor(fs), torch.tensor(os_), thresholds=None)
    assert len(df2) == 4 and "csi" not in df2 and "threshold" not in df2
    with pytest.raises(ShapeError, match="leadtimes_min"):
        score_table(fs, os_, leadtimes_min=[5, 10])
    with pytest.raises(ShapeError):
        score_table(fs[0], os_[0])
    for kw in ({"thresholds": (1.0, 1.0)}, {"thresholds": (1.0,), "fss_scales": (3, 3)}):
        with pytest.raises(InputError, match="must differ from each other"):  # (rows written twice)
            score_table(stack[0], stack[1], **kw)


# ---------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------
def test_bad_input():
    a, b = np.zeros((4, 5)), np.zeros((5, 4))
    for fn in (lambda: continuous(a, b), lambda: categorical(a, b, 1.0), lambda: contingency(a, b, 1.0),
               lambda: fss(a, b, 1.0, 3), lambda: aggregate([a], [b], 1.0), lambda: aggregate(a[None], b[None])):
        with pytest.raises(ShapeError, match="same shape"):
            fn()
    with pytest.raises(ShapeError):
        continuous(a, a, dims=(2,))
    with pytest.raises(ShapeError):
        fss(np.zeros(5), np.zeros(5), 1.0, 3)
    with pytest.raises(InputError, match="event"):
        categorical(a, a, 1.0, event="geq")
    with pytest.raises(InputError, match="scale"):
        fss(a, a, 1.0, 0)
    with pytest.raises(InputError, match="scale"):
        fss(a, a, 1.0, 2.5)
    with pytest.raises(InputError, match="threshold"):
        categorical(a, a, float("nan"))
    with pytest.raises(InputError, match="complex"):
        continuous(a.astype(complex), a)
    with pytest.raises(ShapeError, match="fields"):
        aggregate([a, a], [a], 1.0)


@pytest.mark.parametrize("thr", [-1.0, -0.1, float("nan"), float("inf"), torch.tensor(-1.0)])
def test_every_threshold_must_be_finite_and_non_negative(thr):
    # a negative rain threshold makes every pixel an event (CSI 1, FSS 1): refused everywhere, as is NaN
    from skydiff.verify import percentile_bias, protocol_accumulator, wet_fraction

    f, o = rain((16, 16), 3), rain((16, 16), 4)
    calls = [lambda: categorical(f, o, thr), lambda: contingency(f, o, thr), lambda: aggregate(f[None], o[None], thr),
             lambda: fss(f, o, thr, 3), lambda: fss_curve(f, o, thr, [1, 3]),
             lambda: score_table(f[None], o[None], thresholds=(1.0, thr)), lambda: wet_fraction(f, thr),
             lambda: percentile_bias(f, o, wet_only=True, threshold=thr),
             lambda: protocol_accumulator("smaat", threshold=thr),
             lambda: protocol_accumulator("spatspark", thresholds=(0.2, thr))]
    for call in calls:
        with pytest.raises(InputError, match=r"threshold must be a finite number >= 0.*got (-|nan|inf|tensor)"):
            call()
    assert categorical(f, o, 0.0, event="gt")["csi"] >= 0  # zero is allowed ("any rain" with event="gt")


@pytest.mark.parametrize("shape", [(0, 0), (2, 2), (2, 16), (5, 0)])
def test_rapsd_refuses_grids_without_a_wavelength(shape):
    with pytest.raises(ShapeError, match=r"at least 3 x 3 pixels.*got \(" + str(shape[0])):
        rapsd(np.ones(shape))
    with pytest.raises(ShapeError, match="empty stack"):
        rapsd(np.ones((0, 8, 8)))
    assert rapsd(np.ones((3, 3))).shape == (2,)  # the smallest grid: the mean and a 3 px wavelength


def test_rapsd_normalize_refuses_a_field_without_power():
    with pytest.raises(InputError, match="normalize=True: the field has no power"):
        rapsd(np.zeros((16, 16)), normalize=True)
    with pytest.raises(InputError, match="field 1 .*no power"):
        rapsd(np.stack([rain((16, 16), 5), np.zeros((16, 16))]), normalize=True)
    assert_close(rapsd(np.full((16, 16), 2.0), normalize=True)[:2], [1.0, 0.0])  # a constant field is fine
    with pytest.raises(InputError, match="fill must be a finite number, got nan"):
        rapsd(np.where(rain((16, 16), 5) > 1, np.nan, 0.0), fill=float("nan"))


def test_half_precision_tensors_are_scored_in_float32():
    """float16 sums over 90 000 pixels overflowed (continuous scores NaN), bfloat16 window sums rounded (FSS 1.0),
    and rapsd raised a raw 'Unsupported dtype Half'."""
    import skydiff.verify as sv

    f, o = torch.full((300, 300), 2.0), torch.zeros(300, 300)
    for dt in (torch.float16, torch.bfloat16):
        got = sv.continuous(f.to(dt), o.to(dt))
        assert float(got["mse"]) == pytest.approx(4.0) and float(got["mae"]) == pytest.approx(2.0)
    g = torch.zeros(300, 300)
    g[:150] = 2
    ref = float(sv.fss(g, torch.roll(g, 3, 0), 1.0, 51))
    assert float(sv.fss(g.bfloat16(), torch.roll(g, 3, 0).bfloat16(), 1.0, 51)) == pytest.approx(ref, abs=1e-6)
    assert ref < 1.0
    sv.rapsd(torch.rand(64, 64).half())
    assert all(np.isnan(v) for v in sv.percentile_bias(np.zeros(0), np.zeros(0)).values())


def test_rmse_gradient_at_a_perfect_forecast_is_zero_not_nan():
    import skydiff.verify as sv

    o = torch.rand(5, 5, dtype=torch.float64)
    f = o.clone().requires_grad_(True)
    sv.continuous(f, o)["rmse"].backward()
    assert torch.equal(f.grad, torch.zeros_like(o))
    g = (o + 0.1).requires_grad_(True)
    r = sv.continuous(g, o)["rmse"]
    r.backward()
    assert float(r.detach()) == pytest.approx(0.1) and torch.allclose(g.grad, torch.full_like(o, 0.1 / (25 * 0.1)))
    assert np.isnan(sv.continuous(np.full(3, np.nan), np.zeros(3))["rmse"])


# ------------------------------------------------------------------------------------------ audit of 2026-11-29
def test_masked_arrays_count_their_masked_pixels_as_no_data():
    """np.asarray dropped the mask: fill values (65535, 1e20) were scored as rain."""
    import skydiff.verify as V

    o = np.ma.masked_array([[1.0, 2.0], [3.0, 65535.0]], mask=[[0, 0], [0, 1]])
    f = np.array([[1.0, 2.0], [3.0, 4.0]])
    assert V.continuous(f, o)["rmse"] == 0.0
    assert V.wet_fraction(o, 100.0) == 0.0
    big_endian = np.array([[1.0, 2.0], [3.0, 4.0]], ">f8")  # (HDF5): torch.from_numpy refused it
    assert V.continuous(big_endian, f)["mae"] == 0.0
    assert V.crps_ensemble(np.array([1.0, 2.0, 3.0]), 2.0, estimator="nrg") == pytest.approx(2 / 9)  # scalar obs


def test_nan_safe_gradients_and_protocol_infinities():
    import skydiff.verify as V

    # soft FSS, how="mean": a field pair without events is left out, with no NaN gradient to the others
    o = torch.rand(2, 16, 16) * 3
    o[1] = 0
    x = (torch.rand(2, 16, 16) * 3).requires_grad_(True)
    with torch.no_grad():
        x[1] = 0
    (1 - V.fss(x, o, 1.0, 3, smooth=0.01, how="mean")).backward()
    assert torch.isfinite(x.grad).all() and x.grad[0].abs().sum() > 0
    # max-pooled CRPS: a NaN in a window leaves the window out without NaN gradients to its other pixels
    m = torch.rand(3, 8, 8, dtype=torch.float64, requires_grad=True)
    ob = torch.rand(8, 8, dtype=torch.float64)
    ob[0, 0] = float("nan")
    ob.requires_grad_(True)
    r = V.crps_pooled(m, ob, 4, "max")
    r.backward()
    assert torch.isfinite(r) and torch.isfinite(ob.grad).all() and torch.isfinite(m.grad).all()
    # no valid point: NaN that stays on the graph (backward works, as for continuous())
    mg = torch.rand(3, 4, 4, requires_grad=True)
    assert V.crps_ensemble(mg, torch.full((4, 4), float("nan"))).requires_grad
    # the NL-50 protocols score an infinite prediction (it was left out as missing: MSE 0)
    p = np.full((1, 4, 4), 0.01)
    t = p.copy()
    p[0, 0, 0] = np.inf
    assert V.smaat_protocol(p, t)["mse"] == np.inf
    acc = V.protocol_accumulator("smaat")
    acc.update((torch.rand(2, 8, 8) * 0.02).requires_grad_(True), torch.rand(2, 8, 8) * 0.02)
    assert not acc._sse.requires_grad  # no autograd graph kept across batches


def test_bad_verification_arguments_are_input_errors():
    import skydiff.verify as V

    a = np.ones((4, 4))
    for call, match in ((lambda: V.fss(a, a, 0.5, np.inf), "scale"),
                        (lambda: V.fss(a, a, 0.5, 3, smooth="x"), "smooth"),
                        (lambda: V.score_table(a[None], a[None], thresholds=1.0), "thresholds"),
                        (lambda: V.score_table(a[None], a[None], leadtimes_min=["x"]), "leadtimes_min"),
                        (lambda: V.categorical(a, a, 1.0, dims="ab"), "dims"),
                        (lambda: V.crps_ensemble(np.ones((3, 4)), a[0], member_dim=0.5), "member_dim"),
                        (lambda: V.rapsd_ratio_db(np.random.rand(2, 8, 8), np.random.rand(2, 8, 8), fill="a"),
                         "fill"),
                        (lambda: V.smaat_protocol(np.ones((2, 3, 4, 4)), np.ones((2, 3, 4, 4)), lead_index=1.0),
                         "lead_index"),
                        (lambda: V.smaat_protocol(np.ones((2, 4, 4)), np.ones((2, 4, 4)), hss_factor="x"),
                         "hss_factor"),
                        (lambda: V.fss_curve(a, a, 1.0, 3), "scales must be a sequence")):
        with pytest.raises(InputError, match=match):
            call()
    with pytest.raises(ShapeError, match="no lead time"):
        V.score_table(np.ones((0, 4, 4)), np.ones((0, 4, 4)), leadtimes_min=[])
