"""skydiff.nowcast.data: sequence datasets, splits, the NL-50-style builder and reader."""

from __future__ import annotations

import os
import time
import warnings

import numpy as np
import pytest
import torch
import xarray as xr

from skydiff.errors import InputError, ShapeError, SkydiffWarning
from skydiff.nowcast.data import (
    NL50_NORMALISATION,
    NLDataset,
    RadarSequences,
    apply_transform,
    build_nl_dataset,
    inverse_transform,
    select_times,
    shared_split,
    split_by_time,
    split_tail,
)
from skydiff.synthetic import rain_sequence

T0 = np.datetime64("2021-06-01T12:00", "ns")
STEP = np.timedelta64(5, "m")


def make_da(values, times=None, step=5):
    values = np.asarray(values, np.float32)
    if times is None:
        times = T0 + np.arange(values.shape[0]) * STEP
    return xr.DataArray(values, dims=("time", "y", "x"), coords={"time": np.asarray(times, "datetime64[ns]")},
                        attrs={"timestep": step, "units": "mm/h"}, name="precip_rate")


@pytest.fixture(scope="module")
def syn():
    return rain_sequence(24, shape=(64, 80), seed=3)


@pytest.fixture(scope="module")
def knmi_da(knmi2010):
    from skydiff.io import read_radar

    return read_radar(knmi2010[:24])


def starts_of(ds):
    """Window start index (in the source's frames) of every sample, from the ISO time of the last input."""
    t0 = ds._sources[0].times[0]
    return sorted({int((np.datetime64(ds[i]["time"]) - t0) // STEP) - (ds.n_in - 1) for i in range(len(ds))})


# ------------------------------------------------------------------------------------------ windows
def test_window_counts_with_and_without_gaps(syn):
    ds = RadarSequences(syn, 4, 2)
    assert len(ds) == 24 - 6 + 1
    assert starts_of(ds) == list(range(19))
    # drop frame 10: windows that would span it disappear
    gap = syn.isel(time=[i for i in range(24) if i != 10])
    dg = RadarSequences(gap, 4, 2)
    assert len(dg) == 5 + 8
    assert starts_of(dg) == list(range(5)) + list(range(11, 19))
    # stride counts from the start of each regular run
    assert starts_of(RadarSequences(gap, 4, 2, stride=3)) == [0, 3, 11, 14, 17]
    # a time off the regular grid (12:51) breaks windows like a gap
    t = syn["time"].values.copy()
    t[10] = t[10] + np.timedelta64(1, "m")
    assert len(RadarSequences(syn.assign_coords(time=t), 4, 2)) == 13
    # time filter [start, end): frames 5..16, windows never cross its ends
    tt = syn["time"].values
    assert len(RadarSequences(syn, 4, 2, times=(tt[5], tt[17]))) == 12 - 6 + 1
    assert len(RadarSequences(syn, 4, 2, times=slice(None, str(tt[6])))) == 1
    # several sources are windowed separately (no window joins two events)
    a, b = syn.isel(time=slice(0, 12)), syn.isel(time=slice(12, 24))
    dm = RadarSequences([a, b], 4, 2)
    assert len(dm) == 2 * (12 - 6 + 1)
    assert {dm[i]["source"] for i in range(len(dm))} == {0, 1}


def test_crop_shapes_and_positions(syn):
    ds = RadarSequences(syn, 4, 2, crop=32)
    s = ds[0]
    assert s["inputs"].shape == (4, 32, 32) and s["inputs"].dtype == torch.float32
    assert s["targets"].shape == (2, 32, 32) and s["mask"].shape == (6, 32, 32) and s["mask"].dtype == torch.bool
    assert s["time"] == str(np.datetime64(syn["time"].values[3], "s"))  # the last input of window 0
    s = RadarSequences(syn, 4, 2, crop=(24, 40))[3]
    assert s["inputs"].shape == (4, 24, 40) and s["targets"].shape == (2, 24, 40)
    # fixed centre crop and a grid of non-overlapping tiles
    dc = RadarSequences(syn, 4, 2, crop=32, random_crop=False)
    assert len(dc) == 19 and dc[0]["origin"].tolist() == [16, 24]
    dg = RadarSequences(syn, 4, 2, crop=32, random_crop=False, eval_crops="grid")
    assert len(dg) == 19 * 4
    assert {tuple(dg[i]["origin"].tolist()) for i in range(8)} == {(0, 8), (0, 40), (32, 8), (32, 40)}
    # whole frames, and batching through a DataLoader
    assert RadarSequences(syn, 4, 2)[0]["inputs"].shape == (4, 64, 80)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["inputs"].shape == (4, 4, 32, 32) and len(batch["time"]) == 4


def test_samples_equal_transformed_source(syn):
    raw = syn.values
    for kind in ("log", "dbr", "nl50", None):
        ds = RadarSequences(syn, 3, 2, crop=(20, 30), transform=kind, seed=1)
        for i in (0, 7):
            s = ds[i]
            r, c = s["origin"].tolist()
            st = int((np.datetime64(s["time"]) - syn["time"].values[0]) // STEP) - 2
            win = raw[st:st + 5, r:r + 20, c:c + 30]
            np.testing.assert_allclose(s["inputs"].numpy(), apply_transform(win[:3], kind), rtol=1e-6, atol=1e-6)
            back = ds.to_rainrate(s["targets"])
            if kind == "dbr":
                win = np.where(win[3:] >= 0.1, win[3:], 0.0)
            else:
                win = win[3:]
            np.testing.assert_allclose(back.numpy(), win, rtol=1e-5, atol=1e-5)


def test_transform_round_trip_numpy_and_torch():
    r = np.array([0.0, 0.05, 0.1, 0.5, 1.0, 12.5, 150.0, np.nan], np.float32)
    for kind in ("log", "nl50", None):
        back = inverse_transform(apply_transform(r, kind), kind)
        assert back.dtype == np.float32
        np.testing.assert_allclose(back, r, rtol=1e-5, atol=1e-6, equal_nan=True)
        bt = inverse_transform(apply_transform(torch.from_numpy(r), kind), kind)
        np.testing.assert_allclose(bt.numpy(), r, rtol=1e-5, atol=1e-6, equal_nan=True)
    # log is LUPIN's ln(R + 0.01); negative rates are clipped to 0
    np.testing.assert_allclose(apply_transform(np.array([0.0, 1.0, -3.0]), "log"), np.log([0.01, 1.01, 0.01]))
    # nl50: mm/h -> mm/5min / 47.83
    assert apply_transform(np.array([12 * NL50_NORMALISATION]), "nl50")[0] == pytest.approx(1.0)
    # dbr (pysteps): 10 log10 R above 0.1 mm/h, -15 below; the inverse maps -15 back to 0
    d = apply_transform(r, "dbr")
    np.testing.assert_allclose(d[:3], [-15.0, -15.0, -10.0], atol=1e-5)
    expect = np.where(np.isnan(r) | (r >= 0.1), r, 0.0)
    np.testing.assert_allclose(inverse_transform(d, "dbr"), expect, rtol=1e-5, equal_nan=True)
    dt = apply_transform(torch.from_numpy(r), "dbr")
    np.testing.assert_allclose(inverse_transform(dt, "dbr").numpy(), expect, rtol=1e-5, equal_nan=True)
    with pytest.raises(InputError, match="unknown transform"):
        apply_transform(r, "sqrt")


# ------------------------------------------------------------------------------------------ masks and filters
def test_mask_marks_nan_and_nan_value_fills(syn):
    v = syn.values.copy()
    v[:, :10, :] = np.nan  # outside the radar range in every frame
    v[7, 30:40, 50:70] = np.nan  # a missing block in one frame
    da = syn.copy(data=v)
    # default: no data reads as dry in the transformed space, as predict() reads it (0 in log space is 0.99 mm/h)
    for kind in ("log", "dbr", None):
        s = RadarSequences(da, 4, 2, transform=kind)[0]
        x = torch.cat([s["inputs"], s["targets"]]).numpy()
        np.testing.assert_allclose(inverse_transform(x[~s["mask"].numpy()], kind), 0.0)
    ds = RadarSequences(da, 4, 2, nan_value=-99.0)
    for i in (0, 3, 5):
        s = ds[i]
        st = i
        win = v[st:st + 6]
        np.testing.assert_array_equal(s["mask"].numpy(), ~np.isnan(win))
        x = torch.cat([s["inputs"], s["targets"]]).numpy()
        assert np.all(x[~s["mask"].numpy()] == -99.0)
        assert np.all(np.isfinite(x))
    # crops: trimmed to the valid rows (origin in the full grid) and >= 90 % valid by default
    dc = RadarSequences(da, 4, 2, crop=32, seed=2)
    assert dc.sources[0]["offset"] == (10, 0)
    for i in range(len(dc)):
        s = dc[i]
        assert s["origin"][0] >= 10 and s["mask"].float().mean() >= 0.9
    # when no crop position has enough valid data, the error says so
    v2 = syn.values.copy()
    v2[:, :40, :] = np.nan
    with pytest.raises(InputError, match="no window"):
        RadarSequences(syn.copy(data=v2), 4, 2, crop=32)
    assert len(RadarSequences(syn.copy(data=v2), 4, 2, crop=32, min_valid_fraction=0.5)) > 0


def test_windows_holding_a_frame_without_data_are_dropped(syn):
    """A frame stored as all NaN (an outage) was fed to the networks as dry rain inside any window whose other frames
    kept the window-wide valid fraction up (one frame in ten passes 0.9): such windows are dropped."""
    v = syn.values.copy()
    T = v.shape[0]
    v[9] = np.nan
    for kw in ({}, {"crop": 32, "seed": 0}, {"crop": 32, "random_crop": True, "seed": 0}):
        full = RadarSequences(syn, 4, 6, min_valid_fraction=0.9, **kw)
        ds = RadarSequences(syn.copy(data=v), 4, 6, min_valid_fraction=0.9, **kw)
        assert ds.sources[0]["frames_without_data"] == 1 and len(full) == T - 9
        assert len(ds) == len(full) - 10, kw  # the windows starting at frames 0..9 hold frame 9
        assert all(ds[i]["mask"].all() for i in range(len(ds)))
    v[9] = np.inf
    with pytest.raises(InputError, match="infinite"):
        RadarSequences(syn.copy(data=v), 4, 6)


def test_min_rain_fraction_filter():
    fr = np.array([0.9, 0.1, 0.0, 0.6, 0.6, 0.2, 0.8, 0.4, 0.7, 0.0, 0.55, 0.5])
    v = np.zeros((12, 20, 20), np.float32)
    flat = v.reshape(12, -1)
    for k, f in enumerate(fr):
        flat[k, : int(round(f * 400))] = 2.0
    flat[:, 396:] = np.nan  # fractions count valid pixels only
    flat[:, 390:396] = 0.05  # below the rain threshold
    da = make_da(v)
    valid = 396
    rainy = np.array([(flat[k, :396] >= 0.1).sum() for k in range(12)])
    ds = RadarSequences(da, 2, 2, min_rain_fraction=0.5)
    expect = [s for s in range(9) if rainy[s + 2:s + 4].sum() >= 0.5 * 2 * valid]
    assert starts_of(ds) == expect and 0 < len(expect) < 9
    assert ds.sources[0]["dropped_rain"] == 9 - len(expect)
    # the rain threshold matters: at 0.01 mm/h the drizzle counts too
    ds2 = RadarSequences(da, 2, 2, min_rain_fraction=0.5, rain_threshold=0.01)
    assert len(ds2) >= len(ds)
    # fixed crops evaluate the rule on the crop itself
    dcrop = RadarSequences(da, 2, 2, crop=10, random_crop=False, min_rain_fraction=0.5, min_valid_fraction=0.0)
    for i in range(len(dcrop)):
        t = dcrop[i]["targets"].numpy()
        m = dcrop[i]["mask"].numpy()[2:]
        assert (inverse_transform(t, "log")[m] >= 0.1).mean() >= 0.5


def test_deterministic_with_seed(syn):
    a = RadarSequences(syn, 4, 2, crop=24, seed=5)
    b = RadarSequences(syn, 4, 2, crop=24, seed=5)
    c = RadarSequences(syn, 4, 2, crop=24, seed=6)
    oa = [a[i]["origin"].tolist() for i in range(len(a))]
    assert oa == [b[i]["origin"].tolist() for i in range(len(b))]
    assert torch.equal(a[3]["inputs"], b[3]["inputs"])
    assert oa == [a[i]["origin"].tolist() for i in range(len(a))]  # repeated access gives the same crop
    assert oa != [c[i]["origin"].tolist() for i in range(len(c))]
    a.set_epoch(1)
    o1 = [a[i]["origin"].tolist() for i in range(len(a))]
    assert o1 != oa
    a.set_epoch(0)
    assert [a[i]["origin"].tolist() for i in range(len(a))] == oa


def test_throughput_288_crops():
    rng = np.random.default_rng(0)
    v = rng.exponential(1.0, (24, 330, 340)).astype(np.float32)
    v[:, :20] = np.nan
    ds = RadarSequences(make_da(v), 4, 6, crop=288, seed=0)
    assert ds[0]["inputs"].shape == (4, 288, 288)
    best = 0.0
    for _ in range(3):
        n, t = 0, time.perf_counter()
        while n < 150:
            ds[n % len(ds)]
            n += 1
        best = max(best, n / (time.perf_counter() - t))
        if best > 400:
            break
    print(f"RadarSequences: {best:.0f} samples/s (288x288, 4 -> 6, random crops, log)")
    assert best > 200


# ------------------------------------------------------------------------------------------ bad input
def test_bad_input_gives_clear_errors(syn):
    with pytest.raises(InputError, match="n_in"):
        RadarSequences(syn, 0, 2)
    with pytest.raises(InputError, match="n_out"):
        RadarSequences(syn, 4, -1)
    with pytest.raises(ShapeError, match="larger than the grid"):
        RadarSequences(syn, 4, 2, crop=100)
    with pytest.raises(InputError, match=r"no window of 20 \+ 10 = 30 regular frames fits.*24 frames"):
        RadarSequences(syn, 20, 10)
    with pytest.raises(InputError, match="unknown transform"):
        RadarSequences(syn, 4, 2, transform="boxcox")
    with pytest.raises(InputError, match="empty time range"):
        RadarSequences(syn, 4, 2, times=("2025-01-01T02:00", "2025-01-01T01:00"))
    with pytest.raises(InputError):
        RadarSequences([], 4, 2)
    with pytest.raises(InputError, match="crop"):
        RadarSequences(syn, 4, 2, crop=(0, 5))
    with pytest.raises(IndexError):
        RadarSequences(syn, 4, 2)[19]


# ------------------------------------------------------------------------------------------ splits
def test_split_helpers(syn):
    t = syn["time"].values
    parts = split_by_time(syn, [t[5], str(t[12])])
    assert [p.sizes["time"] for p in parts] == [5, 7, 12]
    assert parts[1]["time"].values[0] == t[5] and parts[2]["time"].values[0] == t[12]
    lists = split_by_time([syn.isel(time=slice(0, 8)), syn.isel(time=slice(8, 24))], t[10])
    assert [[p.sizes["time"] for p in part] for part in lists] == [[8, 2], [14]]
    head, tail = split_tail(syn, 0.2)
    assert head.sizes["time"] == 19 and tail.sizes["time"] == 5  # ceil(0.2 * 24)
    assert select_times(syn, t[3], t[6]).sizes["time"] == 3
    with pytest.raises(InputError):
        split_by_time(syn, [t[5], t[2]])


@pytest.mark.realdata
def test_shared_split_parts(shared_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkydiffWarning)
        sp = shared_split(shared_data)
    assert set(sp) == {"train", "validation", "test"}
    names = {k: [p.name for p in v] for k, v in sp.items()}
    assert "FMI 20170509" in names["test"] and "FMI 20160928 train" in names["train"]
    assert sum(n.startswith("KNMI 2021-02") for n in names["test"]) == 10
    assert [n for n in names["validation"] if n.startswith("KNMI 2021-01")] == ["KNMI 2021-01-09-2005",
                                                                                "KNMI 2021-01-10-2005"]
    assert not any("mrms" in n.lower() for v in names.values() for n in v)  # MRMS only on request
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkydiffWarning)
        sp_m = shared_split(shared_data, mrms=True)
    mr = [p for p in sp_m["train"] if p.name.startswith("MRMS")]
    assert len(mr) == 1 and mr[0].resample == 5.0 and len(mr[0].files) == 36
    assert all(not p.name.startswith("MRMS") for k in ("validation", "test") for p in sp_m[k])
    files = {k: {f for p in v for f in p.files} for k, v in sp.items()}
    assert not (files["train"] & files["test"]) and not (files["train"] & files["validation"])
    assert not (files["validation"] & files["test"])
    k10 = {k: sorted(os.path.basename(f)[-7:-3] for f in v if "RAD_NL25" in f) for k, v in files.items()}
    assert k10["train"][-1] == "0355" and k10["validation"] == [f"04{m:02d}" for m in range(0, 60, 5)]
    assert k10["test"][0] == "0500"
    # a part is read once, with its time range applied to the times in the files
    val = [p for p in sp["validation"] if p.name.startswith("KNMI 2010")][0]
    ds = RadarSequences([val], 4, 6, crop=288, random_crop=False)
    assert len(ds) == 3 and ds[0]["origin"].tolist() == [284, 225]


# ------------------------------------------------------------------------------------------ real KNMI data
@pytest.mark.realdata
def test_knmi_sequences_centre_crop_is_the_nl50_cutout(knmi_da):
    ds = RadarSequences(knmi_da, 4, 6, crop=288, random_crop=False)
    assert len(ds) == 24 - 10 + 1
    s = ds[0]
    assert s["origin"].tolist() == [284, 225] and bool(s["mask"].all())
    assert s["time"] == "2010-08-26T00:15:00"
    raw = knmi_da.values[0:10, 284:572, 225:513]
    np.testing.assert_allclose(s["targets"].numpy(), np.log(raw[4:] + 0.01), rtol=1e-6)
    # random crops stay >= 90 % valid although 74 % of the grid is outside the radar range
    dr = RadarSequences(knmi_da, 4, 6, crop=288, seed=1)
    assert dr.nbytes < knmi_da.values.nbytes / 2  # trimmed to the radar disk
    assert all(float(dr[i]["mask"].float().mean()) >= 0.9 for i in range(0, len(dr), 3))
    # rain filter on the NL-50 cut-out, checked independently
    dm = RadarSequences(knmi_da, 4, 6, crop=288, random_crop=False, min_rain_fraction=0.55)
    rain = (knmi_da.values[:, 284:572, 225:513] >= 0.1).mean(axis=(1, 2))
    expect = [st for st in range(15) if rain[st + 4:st + 10].mean() >= 0.55]
    assert starts_of(dm) == expect and 0 < len(expect) < 15


@pytest.mark.realdata
def test_build_nl_dataset_layout_counts_and_atomic_write(knmi_da, knmi2010, tmp_path):
    import h5py

    out = tmp_path / "nl.h5"
    split = "2010-08-26T01:00"
    with pytest.warns(SkydiffWarning, match="split is empty"):
        summ = build_nl_dataset(knmi_da, out, split_time=split, compression_opts=1)
    # independent count: 24 frames, 7 windows of 18; target (last) frame >= 50 % of pixels > 0
    cut = np.nan_to_num(knmi_da.values[:, 284:572, 225:513]) / 12.0 / NL50_NORMALISATION
    frac = (cut > 0).mean(axis=(1, 2))
    kept = [s for s in range(7) if frac[s + 17] >= 0.5]
    assert summ["regular_windows"] == 7 and summ["kept"] == len(kept) and len(kept) > 0
    assert summ["train"]["count"] == 0 and summ["dropped_straddling_split"] == len(kept)
    with h5py.File(out, "r") as f:
        assert set(f) == {"train", "test"} and set(f["train"]) == {"images", "timestamps"}
        img, ts = f["test"]["images"], f["test"]["timestamps"]
        assert img.dtype == np.float32 and img.shape == (0, 18, 288, 288) and ts.shape == (0, 18, 1)
        assert f.attrs["normalisation"] == pytest.approx(47.83)
    assert [p.name for p in tmp_path.iterdir()] == ["nl.h5"]  # no temporary file left

    # a split where both groups get samples; values and timestamps as SmaAt stores them
    with pytest.warns(SkydiffWarning, match="train split is empty"):
        summ = build_nl_dataset(knmi_da, out, split_time="2010-08-26T00:05", overwrite=True, compression_opts=1,
                                n_in=4, n_out=2)
    frac6 = [s for s in range(19) if frac[s + 5] >= 0.5]
    assert summ["kept"] == len(frac6) and summ["train"]["count"] == 0
    assert summ["test"]["count"] == len(frac6) - 1  # the window starting at 00:00 straddles the split
    with h5py.File(out, "r") as f:
        img = f["test"]["images"]
        assert img.shape == (len(frac6) - 1, 6, 288, 288) and img.compression == "gzip"
        np.testing.assert_allclose(img[0], cut[frac6[1]:frac6[1] + 6], rtol=1e-6)
        stamp = f["test"]["timestamps"][0, 0, 0]
        assert (stamp.decode() if isinstance(stamp, bytes) else stamp) == "26-AUG-2010;00:05:00.000"

    # no overwrite without overwrite=True; the file is untouched
    before = out.stat().st_mtime_ns
    with pytest.raises(InputError, match="exists"):
        build_nl_dataset(knmi_da, out)
    assert out.stat().st_mtime_ns == before

    # frames across the start of the shared KNMI 2010 test part: the default split (75 %) would train on it
    shifted = knmi_da.assign_coords(time=knmi_da.time + np.timedelta64(4, "h"))  # 04:00-05:55
    with pytest.warns(SkydiffWarning, match="KNMI 2010 test part begins"):
        s4 = build_nl_dataset(shifted, tmp_path / "s4.h5", n_in=4, n_out=2, rain_rule=0.0, compression_opts=1)
    assert s4["split_time"] == "2010-08-26T05:30:00"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s5 = build_nl_dataset(shifted, tmp_path / "s5.h5", n_in=4, n_out=2, rain_rule=0.0, compression_opts=1,
                              split_time="2010-08-26T05:00")
    assert s5["train"]["time_range"][1] < "2010-08-26T05:00"
    early = knmi_da.assign_coords(time=knmi_da.time + np.timedelta64(195, "m"))  # 03:15-05:10: the default split,
    with warnings.catch_warnings():  # 04:45, keeps all of the test part out of train: no warning (one said to move
        warnings.simplefilter("error")  # the split to 05:00, which would put 04:45-05:00 into train)
        s6 = build_nl_dataset(early, tmp_path / "s6.h5", n_in=4, n_out=2, rain_rule=0.0, compression_opts=1)
    assert s6["split_time"] == "2010-08-26T04:45:00"

    # from files (read in chunks), SmaAt's off-by-one rule, and a reader on top
    out2 = tmp_path / "files.h5"
    with pytest.warns(SkydiffWarning, match="test split is empty"):  # 9 frames: the test windows straddle
        s2 = build_nl_dataset(knmi2010[:9], out2, n_in=4, n_out=2, rain_rule=0.0, compression_opts=1, chunk_files=4)
    assert s2["n_files"] == 9 and s2["kept"] == 4 and s2["train"]["count"] == 2  # split at frame round(0.75 * 9)
    assert s2["split_time"] == "2010-08-26T00:35:00" and s2["dropped_straddling_split"] == 2
    with pytest.warns(SkydiffWarning, match="test split is empty"):
        s3 = build_nl_dataset(knmi2010[:9], tmp_path / "smaat.h5", n_in=4, n_out=2, rain_rule=0.0,
                              rain_frame="smaat", compression_opts=1)
    assert s3["kept"] == 3  # the last window has no frame after it

    ds = NLDataset(out, "test", n_in=4)
    assert len(ds) == len(frac6) - 1 and ds.n_out == 2
    s = ds[0]
    assert s["inputs"].shape == (4, 288, 288) and s["targets"].shape == (2, 288, 288)
    assert s["time"] == "2010-08-26T00:20:00"
    np.testing.assert_allclose(s["targets"].numpy(), cut[frac6[1] + 4:frac6[1] + 6], rtol=1e-6)
    mmh = NLDataset(out, "test", n_in=4, n_out=1, transform=None, in_memory=True)[0]
    np.testing.assert_allclose(mmh["targets"].numpy(), knmi_da.values[frac6[1] + 4:frac6[1] + 5, 284:572, 225:513],
                               rtol=1e-5, atol=1e-5)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["inputs"].shape == (2, 4, 288, 288)
    with pytest.raises(InputError, match="split"):
        NLDataset(out, "validation")
    with pytest.raises(InputError, match="exceeds"):
        NLDataset(out, "test", n_in=4, n_out=5)
    ds.close()


@pytest.mark.realdata
def test_build_nl_dataset_bad_input(knmi_da, tmp_path):
    with pytest.raises(InputError, match="n_in"):
        build_nl_dataset(knmi_da, tmp_path / "a.h5", n_in=0)
    with pytest.raises(ShapeError, match="does not fit"):
        build_nl_dataset(knmi_da, tmp_path / "a.h5", crop=(600, 888, 0, 288))
    with pytest.raises(InputError, match="no sample passes"):
        build_nl_dataset(knmi_da, tmp_path / "a.h5", rain_rule=1.0)
    with pytest.raises(InputError, match="no window of 18 = 12 [+] 6 frames.*longest regular run 10"):
        build_nl_dataset(knmi_da.isel(time=slice(0, 10)), tmp_path / "a.h5")  # 10 frames < 18
    with pytest.raises(InputError, match="frames are 10 min apart"):
        build_nl_dataset(knmi_da.isel(time=slice(0, 24, 2)), tmp_path / "a.h5", n_in=2, n_out=2)
    with pytest.raises(InputError, match="wet_threshold"):
        build_nl_dataset(knmi_da, tmp_path / "a.h5", wet_threshold=-1.0)
    with pytest.raises(InputError, match="split_time must be a date"):  # checked before any file is read
        build_nl_dataset([str(tmp_path / "missing.h5")], tmp_path / "a.h5", split_time="tomorrow-ish")
    assert not list(tmp_path.iterdir())


def test_build_nl_rain_rule_counts_rain_not_reflectivity_noise(tmp_path):
    # rain rates from reflectivity are > 0 at every pixel with data (KNMI 2021: >= 4e-4 mm/h): "> 0" passed every
    # window; the rule counts pixels above wet_threshold (0.1 mm/h: NL-50's "> 0" on the 0.12 mm/h-quantised product)
    t = np.datetime64("2021-01-01T00:00", "ns") + np.arange(8) * np.timedelta64(5, "m")
    v = np.full((8, 20, 20), 4e-4, np.float32)
    v[5:, :, :12] = 1.0  # frames 5-7 are 60 % rainy, the others dry
    da = xr.DataArray(v, dims=("time", "y", "x"), coords={"time": t}, attrs={"units": "mm/h"})
    summ = build_nl_dataset(da, tmp_path / "a.h5", crop=(0, 20, 0, 20), n_in=2, n_out=2, split_time=t[-1])
    assert summ["regular_windows"] == 5 and summ["kept"] == 3  # the windows whose last frame is 5, 6 or 7
    assert "> 0.1 mm/h" in summ["rule"]


def test_augmentation_is_a_symmetry_of_the_same_crop():
    from skydiff.synthetic import rain_sequence

    da = rain_sequence(8, (48, 56), seed=5)
    kw = dict(crop=(24, 24), transform=None, seed=3)
    plain = RadarSequences(da, 3, 2, **kw)
    aug = RadarSequences(da, 3, 2, augment=True, **kw)
    used = set()
    for i in range(len(plain)):
        a, b = plain[i], aug[i]
        x, y = a["inputs"].numpy(), b["inputs"].numpy()
        assert torch.equal(a["origin"], b["origin"])  # the same crop, only transformed
        found = [(k, f) for k in range(4) for f in (False, True)
                 if np.array_equal(y, (lambda r: r[..., ::-1] if f else r)(np.rot90(x, k, axes=(-2, -1))))]
        assert found, "augmented sample is not a rotation/mirror image of the plain one"
        assert np.array_equal(b["targets"].numpy(), (lambda r: r[..., ::-1] if found[0][1] else r)(
            np.rot90(a["targets"].numpy(), found[0][0], axes=(-2, -1))))
        used.add(found[0])
    assert len(used) >= 3
    # validation datasets (fixed crops) are never augmented
    assert not RadarSequences(da, 3, 2, random_crop=False, augment=True, **kw).augment


# ------------------------------------------------------------------------------------------ tile sampling
def test_tile_sampling_puts_crops_where_it_rains():
    """sampling="tiles": one sample per (window, rainy tile); crops stay within half a crop of their tile."""
    T, H, W = 12, 64, 128
    v = np.zeros((T, H, W), np.float32)
    v[:, 8:24, 72:88] = 3.0  # one rain cell, inside the tile at columns 64-95 of row 0-31
    da = make_da(v)
    win = RadarSequences(da, 4, 4, crop=32, min_rain_fraction=0.02, transform=None)
    til = RadarSequences(da, 4, 4, crop=32, min_rain_fraction=0.02, transform=None, sampling="tiles")
    assert len(win) == T - 8 + 1  # one per window
    # grid of 2 x 4 tiles of 32 x 32; only the tile (0, 64) holds >= 2 % rain in the targets
    assert len(til) == len(win)
    for ep in range(3):
        til.set_epoch(ep)
        for i in range(len(til)):
            r, c = til[i]["origin"].tolist()
            assert abs(r - 0) <= 16 and abs(c - 64) <= 16
    rain_win = np.mean([float((win[i]["targets"] > 0).any()) for i in range(len(win))])
    rain_til = np.mean([float((til[i]["targets"] > 0).any()) for i in range(len(til))])
    assert rain_til == 1.0 and rain_win < 1.0  # the window sampler mostly draws dry crops of this grid
    with pytest.raises(InputError, match="sampling"):
        RadarSequences(da, 4, 4, crop=32, sampling="tile")


# ------------------------------------------------------------------------------------------ cropping a region
def test_crop_bbox_keeps_the_pixels_whose_centres_lie_in_the_box():
    from skydiff.io import crop_bbox

    da = make_da(np.arange(2 * 5 * 6, dtype=np.float32).reshape(2, 5, 6))
    da = da.assign_coords(x=-100.0 + np.arange(6), y=45.0 - np.arange(5))  # y descending, as north-up radar grids
    c = crop_bbox(da, (-99.0, -97.5, 42.0, 44.0))
    assert c.sizes == {"time": 2, "y": 3, "x": 2}
    np.testing.assert_array_equal(c.x.values, [-99.0, -98.0])
    np.testing.assert_array_equal(c.y.values, [44.0, 43.0, 42.0])
    np.testing.assert_array_equal(c.values, da.values[:, 1:4, 1:3])
    assert "cropped" in c.attrs and c.attrs["timestep"] == 5
    with pytest.raises(InputError, match=r"holds no pixel .* x -100\.\.-95"):
        crop_bbox(da, (10, 20, 42, 44))
    for bad in ((1, 2, 3), (2, 1, 3, 4), ("a", 1, 2, 3), (0, float("nan"), 1, 2)):
        with pytest.raises(InputError, match="bbox"):
            crop_bbox(da, bad)
    # a grid on latitude/longitude (ERA5, as read_lowres gives it): cropped along those axes
    ll = da.rename(x="longitude", y="latitude")
    c2 = crop_bbox(ll, (-99.0, -97.5, 42.0, 44.0))
    assert c2.sizes == {"time": 2, "latitude": 3, "longitude": 2}
    np.testing.assert_array_equal(c2.values, c.values)
    with pytest.raises(InputError, match=r"holds no pixel .* longitude -100\.\.-95"):
        crop_bbox(ll, (10, 20, 42, 44))
    with pytest.raises(InputError, match="x and y .*coordinates.*got DataArray with coordinates time"):
        crop_bbox(da.drop_vars(["x", "y"]), (-99.0, -97.5, 42.0, 44.0))


# ------------------------------------------------------------------------------------------ resampling in time
def test_resample_time_linear_nearest_and_gaps():
    from skydiff.errors import TimeGapError
    from skydiff.io import resample_time

    t = np.datetime64("2019-06-10T00:00", "ns") + np.arange(8) * np.timedelta64(2, "m")  # 00:00 ... 00:14
    v = np.arange(8, dtype=np.float32)[:, None, None] * np.ones((1, 3, 4), np.float32)
    v[3, 0, 0] = np.nan
    da = make_da(v, times=t, step=2)
    r = resample_time(da, 5)
    assert r.attrs["timestep"] == 5.0 and "linear" in r.attrs["resampled"]
    assert [str(x)[11:16] for x in r.time.values] == ["00:00", "00:05", "00:10"]
    np.testing.assert_allclose(r.values[:, 1, 1], [0.0, 2.5, 5.0])  # 00:05 = mean of 00:04 and 00:06
    assert np.isnan(r.values[1, 0, 0]) and r.values[2, 0, 0] == 5.0  # NaN in a bracketing frame propagates
    rn = resample_time(da, 5, method="nearest")
    np.testing.assert_allclose(rn.values[:, 1, 1], [0.0, 2.0, 5.0])
    np.testing.assert_allclose(resample_time(da, 4).values[:, 2, 2], [0, 2, 4, 6])  # exact times copied
    gap = make_da(np.delete(v, [2, 3], axis=0), times=np.delete(t, [2, 3]), step=2)  # 00:04 and 00:06 missing
    with pytest.raises(TimeGapError, match="00:05"):
        resample_time(gap, 5)
    with pytest.warns(SkydiffWarning, match="00:05"):
        assert resample_time(gap, 5, max_gap=6).sizes["time"] == 3
    with pytest.raises(InputError, match="minutes"):
        resample_time(da, 0)
    with pytest.raises(InputError, match="method"):
        resample_time(da, 5, method="cubic")
    with pytest.raises(InputError, match="two frames"):
        resample_time(da.isel(time=[0]), 5)
    # a resampled series is a regular 5-min source for the datasets
    ds = RadarSequences(r, 2, 1, transform=None)
    assert len(ds) == 1


def test_radar_sequences_refuse_other_units_and_negative_rain():
    # audit of the ninth session: dBZ and negative values went into training silently (forecast() refused them)
    da = rain_sequence(8, (32, 32), seed=1)
    with pytest.raises(InputError, match="units 'dBZ'"):
        RadarSequences(da.assign_attrs(units="dBZ"), 3, 2)
    neg = da.copy()
    neg[0, 0, 0] = -1.0
    with pytest.raises(InputError, match=">= 0 mm/h"):
        RadarSequences(neg, 3, 2)
    assert len(RadarSequences(da, 3, 2, crop=(16, 16))) > 0


def test_build_nl_refuses_grids_that_differ_between_chunks(knmi2010, shared_data, tmp_path):
    """read_radar refuses mixed grids within one call, but the builder reads in chunks of files: KNMI and FMI files
    in different chunks were written into one data set."""
    fmi = sorted((shared_data / "radar" / "fmi" / "pgm" / "20160928").glob("*.pgm*"))[:3]
    if not fmi:
        pytest.skip("FMI 2016 files not found in the shared data")
    with pytest.raises(InputError, match="mixed grids: the files from .*fmi.* on are on a"):
        build_nl_dataset(list(knmi2010[:3]) + fmi, tmp_path / "mixed.h5", n_in=2, n_out=1, rain_rule=0.0,
                         chunk_files=3, crop=(0, 64, 0, 64))
    assert not (tmp_path / "mixed.h5").exists()


def test_build_nl_units_and_empty_folders(tmp_path):
    from skydiff.errors import ReadError
    from skydiff.nowcast.data import build_nl_dataset

    # the values are mm per 5 min / 47.83 whatever the time step (the units said "per 10 min" for timestep=10)
    da = rain_sequence(12, (40, 48), timestep=10, seed=0)
    s = build_nl_dataset(da, tmp_path / "ten.h5", crop=(0, 40, 0, 48), n_in=2, n_out=1, rain_rule=0.0,
                         timestep=10, split_time="2025-01-01T01:00", compression_opts=1)
    assert s["units"].startswith("mm per 5 min /")
    import h5py

    with h5py.File(tmp_path / "ten.h5") as f:
        stored = f["train/images"][0]
    np.testing.assert_allclose(stored[0], da.values[0] / (12 * 47.83), rtol=1e-5, atol=1e-7)
    (tmp_path / "empty").mkdir()
    (tmp_path / "nested" / "2021-01").mkdir(parents=True)
    with pytest.raises(ReadError, match="empty holds no files"):
        build_nl_dataset(tmp_path / "empty", tmp_path / "e.h5")
    with pytest.raises(ReadError, match="nested holds no files, only the folder.*2021-01: give those"):
        build_nl_dataset(tmp_path / "nested", tmp_path / "n.h5")


def test_build_nl_warns_when_the_nl50_crop_meets_another_grid(tmp_path):
    from skydiff.nowcast.data import build_nl_dataset

    da = rain_sequence(8, (600, 600), seed=0)  # not the KNMI 765 x 700 grid
    with pytest.warns(SkydiffWarning, match="NL-50 crop .* a 600 x 600 grid"):
        build_nl_dataset(da, tmp_path / "x.h5", n_in=2, n_out=1, rain_rule=0.0, split_time="2025-01-01T00:20",
                         compression_opts=1)
