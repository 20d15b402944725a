"""skydiff.nowcast.evaluate and `skydiff evaluate`: side-by-side scores on the same cases and pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from skydiff import InputError, ShapeError
from skydiff.cli import main
from skydiff.nowcast import forecast
from skydiff.nowcast.evaluation import CATEGORICAL, evaluate
from skydiff.synthetic import rain_sequence


def _da(frames, step_min=5, start="2024-05-01T12:00", gap_at=None):
    t = np.datetime64(start, "ns") + np.arange(len(frames)) * np.timedelta64(step_min, "m")
    if gap_at is not None:
        t[gap_at:] += np.timedelta64(step_min, "m")
    return xr.DataArray(np.asarray(frames, dtype=np.float32), dims=("time", "y", "x"), coords={"time": t},
                        attrs={"source": "synthetic"})


@pytest.fixture(scope="module")
def seq():
    return rain_sequence(12, (64, 72), seed=3).values


def test_scores_match_a_direct_computation(seq):
    ev = evaluate(_da(seq), ["extrapolation", "persistence"], leadtimes=3, n_in=3, thresholds=(1.0,), stride=3)
    # windows of 6 regular frames among 12, every 3 steps: starts 0, 3, 6
    assert len(ev.cases) == 3 and ev.leadtimes_min == [5.0, 10.0, 15.0]
    assert set(CATEGORICAL) <= set(ev.scores.columns)
    # recompute persistence's pooled MAE and hits by hand on the union mask
    n = s_abs = 0.0
    hits = 0
    for s in (0, 3, 6):
        inp, obs = seq[s : s + 3], seq[s + 3 : s + 6]
        fe = forecast(inp, 3)
        fp = forecast(inp, 3, model="persistence")
        ok = np.isfinite(obs) & np.isfinite(fe) & np.isfinite(fp)
        n += ok[0].sum()
        s_abs += np.abs(fp[0] - obs[0])[ok[0]].sum()
        hits += ((fp[2] >= 1) & (obs[2] >= 1) & ok[2]).sum()
    assert ev.score("persistence", "mae")[0] == pytest.approx(s_abs / n, rel=1e-5)
    row = ev.scores[(ev.scores.model == "persistence") & (ev.scores.leadtime_min == 15.0)]
    assert row["n_pixels"].iloc[0] > 0
    csi = ev.score("persistence", "csi", 1.0)
    assert 0 < csi[2] <= 1
    # extrapolation beats persistence on a moving synthetic field
    assert ev.score("extrapolation", "mae")[2] < ev.score("persistence", "mae")[2]
    assert hits > 0
    assert "| extrapolation |" in ev.table("csi", 1.0)


def test_the_window_length_is_reported_and_can_be_fixed(seq, tmp_path, capsys):
    """The case set follows the longest model input unless n_in is given (the headline's 83 test cases came from
    SmaAt-UNet's 12 frames; without it 107); the CLI said neither."""
    from skydiff.cli import main

    short = evaluate(_da(seq), ["persistence"], leadtimes=2)
    fixed = evaluate(_da(seq), ["persistence"], leadtimes=2, n_in=4)
    assert (short.n_in, len(short.cases)) == (1, 10) and (fixed.n_in, len(fixed.cases)) == (4, 7)
    folder = tmp_path / "seq"
    folder.mkdir()
    da = _da(seq)
    np.savez(folder / "seq.npz", precip=da.values, time=da.time.values, unit="mm/h")
    capsys.readouterr()
    assert main(["evaluate", str(folder), "--models", "persistence", "--leadtimes", "2", "--n-in", "4", "-q"]) == 0
    assert "7 cases (4 + 2-frame windows)" in capsys.readouterr().out


def test_gaps_and_timestep_are_respected(seq):
    ev = evaluate(_da(seq, gap_at=6), ["persistence"], leadtimes=2, n_in=2)
    # a gap after frame 6: windows of 4 only within 0..5 and 6..11 -> 3 + 3 cases
    assert len(ev.cases) == 6
    with pytest.raises(InputError, match="2-min time step"):
        evaluate(_da(seq, step_min=2), ["persistence"], leadtimes=2, n_in=2)
    with pytest.raises(InputError, match="no case of"):
        evaluate(_da(seq[:4]), ["persistence"], leadtimes=6, n_in=2)
    # 10-min frames evaluated at their own step: extrapolation works, a 5-min network refuses (it ran silently)
    ev10 = evaluate(_da(seq, step_min=10), ["persistence"], leadtimes=2, n_in=2, timestep=10)
    assert ev10.leadtimes_min == [10.0, 20.0]
    with pytest.raises(InputError, match="trained on 5-min steps"):
        evaluate(_da(seq, step_min=10), ["rainnet"], leadtimes=1, timestep=10, max_cases=1)
    # resample=True: the 2-min frames become 5-min ones (linear in time) and are scored at 5 min
    two = _da(seq, step_min=2)
    evr = evaluate(two, ["persistence"], leadtimes=1, n_in=2, resample=True)
    from skydiff.io import resample_time

    ref = evaluate(resample_time(two, 5), ["persistence"], leadtimes=1, n_in=2)
    assert len(evr.cases) == len(ref.cases) > 0 and evr.leadtimes_min == [5.0]
    pd.testing.assert_frame_equal(evr.scores, ref.scores)
    with pytest.raises(InputError, match="resample must be True or False"):
        evaluate(two, ["persistence"], leadtimes=1, n_in=2, resample=5)


def test_bad_arguments(seq):
    da = _da(seq)
    with pytest.raises(InputError, match="unknown|not registered|Unknown"):
        evaluate(da, ["transformer"])
    with pytest.raises(InputError, match="listed twice"):
        evaluate(da, ["persistence", "persistence"])
    with pytest.raises(InputError, match="weights given"):
        evaluate(da, ["persistence"], weights={"lupin": "x.safetensors"})
    with pytest.raises(InputError, match="n_in=1"):
        evaluate(da, ["extrapolation"], n_in=1)
    with pytest.raises(ShapeError, match="crop"):
        evaluate(da, ["persistence"], crop=100, n_in=2, leadtimes=2)
    with pytest.raises(InputError, match="precision must be"):
        evaluate(da, ["persistence"], n_in=2, leadtimes=2, precision="int8")
    # a valid precision leaves models without a network untouched
    assert len(evaluate(da, ["persistence"], n_in=2, leadtimes=2, precision="bfloat16").cases) > 0
    with pytest.raises(InputError, match="min_rain"):
        evaluate(da, ["persistence"], n_in=2, leadtimes=2, min_rain=-1.0)
    # a repeated threshold gave every model one row per repeat: the tables showed +5 min under "+10 min"
    with pytest.raises(InputError, match="thresholds must differ"):
        evaluate(da, ["persistence"], n_in=2, leadtimes=2, thresholds=[1.0, 1.0])
    for bad in (float("nan"), float("inf"), -5):
        with pytest.raises(InputError, match="timestep must be a positive number of minutes"):
            evaluate(da, ["persistence"], n_in=2, leadtimes=2, timestep=bad)
    ev = evaluate(da, ["persistence"], n_in=2, leadtimes=2, thresholds=[1.0])
    with pytest.raises(InputError, match="no scores at threshold 7 mm/h"):
        ev.plot(threshold=7.0)  # (an empty figure titled "at 7 mm/h" was written)


def test_min_rain_reaches_the_networks_only(seq):
    """evaluate(min_rain=X): the networks' output below X is 0 (MAE changes, CSI above X does not); models without a
    network are untouched; None leaves each model's own default."""
    da = _da(seq)
    kw = dict(n_in=4, leadtimes=2, stride=4)
    cut = evaluate(da, ["rainnet", "persistence"], min_rain=0.5, **kw)
    own = evaluate(da, ["rainnet", "persistence"], **kw)  # the shipped card's 0.2
    none = evaluate(da, ["rainnet", "persistence"], min_rain=0.0, **kw)
    for a, b in ((cut, none), (own, none)):
        np.testing.assert_array_equal(a.score("persistence", "mae"), b.score("persistence", "mae"))
        np.testing.assert_array_equal(a.score("rainnet", "csi", 1.0), b.score("rainnet", "csi", 1.0))
        assert not np.array_equal(a.score("rainnet", "mae"), b.score("rainnet", "mae"))


def test_real_knmi_cli(knmi2010, tmp_path, capsys):
    folder = tmp_path / "knmi"
    folder.mkdir()
    for f in knmi2010[66:76]:  # 05:30 .. 06:15, 10 frames
        (folder / f.name).symlink_to(f)
    csv, png = tmp_path / "scores.csv", tmp_path / "scores.png"
    rc = main(["evaluate", str(folder), "--models", "extrapolation", "persistence", "--leadtimes", "3",
               "--crop", "256", "--stride", "2", "--csv", str(csv), "--plot", str(png), "-q"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "CSI at 1 mm/h" in out and "| extrapolation |" in out
    df = pd.read_csv(csv)
    assert set(df.model) == {"extrapolation", "persistence"} and df.n_cases.iloc[0] == 3  # starts 0, 2, 4 of 10 frames (3 in + 3 out)
    e = df[(df.model == "extrapolation") & (df.threshold == 1) & (df.leadtime_min == 15)].csi.iloc[0]
    p = df[(df.model == "persistence") & (df.threshold == 1) & (df.leadtime_min == 15)].csi.iloc[0]
    assert e > p  # real moving rain: extrapolation beats persistence at +15 min
    assert png.stat().st_size > 10_000
    # outputs are never overwritten without --overwrite
    assert main(["evaluate", str(folder), "--csv", str(csv), "-q"]) == 2
    assert "exists" in capsys.readouterr().err
    # the same files given one by one are one sequence too (they were one sequence per file: no case)
    csv2 = tmp_path / "scores_files.csv"
    rc = main(["evaluate", *[str(f) for f in knmi2010[66:76]], "--models", "extrapolation", "persistence",
               "--leadtimes", "3", "--crop", "256", "--stride", "2", "--csv", str(csv2), "-q"])
    assert rc == 0
    pd.testing.assert_frame_equal(pd.read_csv(csv2).drop(columns="source"), df.drop(columns="source"))
    # 10-min frames (every other file): refused at 5 min, scored with --timestep 10 (networks still refuse it)
    ten = [str(f) for f in knmi2010[60:80:2]]
    assert main(["evaluate", *ten, "--models", "persistence", "--leadtimes", "2", "--crop", "64", "-q"]) == 2
    assert "--timestep" in capsys.readouterr().err
    csv3 = tmp_path / "ten.csv"
    assert main(["evaluate", *ten, "--models", "persistence", "--leadtimes", "2", "--crop", "64", "--timestep", "10",
                 "--csv", str(csv3), "-q"]) == 0
    assert sorted(pd.read_csv(csv3).leadtime_min.unique()) == [10.0, 20.0]
    assert main(["evaluate", *ten, "--models", "rainnet", "--leadtimes", "1", "--crop", "64", "--timestep", "10",
                 "--max-cases", "1", "-q"]) == 2
    assert "trained on 5-min steps" in capsys.readouterr().err
    # ... or resampled to 5 min (linear in time): 10 files over 90 min give 19 frames, the even ones the files
    csv4 = tmp_path / "resampled.csv"
    assert main(["evaluate", *ten, "--models", "persistence", "--leadtimes", "2", "--crop", "64", "--resample",
                 "--csv", str(csv4), "-q"]) == 0
    assert sorted(pd.read_csv(csv4).leadtime_min.unique()) == [5.0, 10.0]


def test_groups_pool_separately(seq):
    a = _da(seq[:8])
    a.attrs["source"] = "A"
    b = _da(seq[4:])
    b.attrs["source"] = "B"
    ev = evaluate([a, b], ["persistence"], leadtimes=2, n_in=2, group=lambda name: name)
    assert ev.groups == ["all", "A", "B"]
    only_a = evaluate(a, ["persistence"], leadtimes=2, n_in=2)
    np.testing.assert_allclose(ev.score("persistence", "mae", source="A"), only_a.score("persistence", "mae"))
    n = ev.scores.groupby("source").n_cases.first()
    assert n["all"] == n["A"] + n["B"] == 10
    with pytest.raises(InputError, match="no scores"):
        ev.score("persistence", "mae", source="C")


def test_published_protocols_as_options(seq, capsys):
    """protocols=("smaat", "spatspark") score the same nowcasts as the protocol functions do on the stacked cases."""
    from skydiff.verify import smaat_protocol, spatspark_protocol, to_nl50

    long = np.concatenate([seq, seq[::-1]])  # 24 frames: 3 inputs + 6 leads, cases every 5 steps
    ev = evaluate(_da(long), ["persistence", "extrapolation"], leadtimes=6, n_in=3, stride=5,
                  protocols=("smaat", "spatspark"))
    ps = ev.protocol_scores
    assert set(ps["protocol"]) == {"smaat", "spatspark"} and len(ps) == 2 * (1 + 3)
    starts = range(0, len(long) - 9 + 1, 5)
    f = np.stack([forecast(long[s : s + 3], 6, model="persistence") for s in starts])
    e = np.stack([forecast(long[s : s + 3], 6) for s in starts])
    o = np.stack([long[s + 3 : s + 9] for s in starts])
    bad = np.isnan(f) | np.isnan(e) | np.isnan(o)  # every model is scored on the same pixels
    assert bad.any() and not bad.all()
    f, o = np.where(bad, np.nan, f), np.where(bad, np.nan, o)
    ref_a = smaat_protocol(to_nl50(f), to_nl50(o), lead_index=5)
    ref_b = spatspark_protocol(to_nl50(f), to_nl50(o))
    got_a = ps[(ps.protocol == "smaat") & (ps.model == "persistence")].iloc[0]
    assert got_a["pmse"] == pytest.approx(ref_a["mse"], rel=1e-6)
    assert got_a["csi"] == pytest.approx(ref_a["scores"][0.5]["csi"], rel=1e-6, nan_ok=True)
    got_b = ps[(ps.protocol == "spatspark") & (ps.model == "persistence") & (ps.threshold == 1.0)].iloc[0]
    assert got_b["pmse"] == pytest.approx(ref_b["mse"], rel=1e-6)
    assert got_b["hss"] == pytest.approx(ref_b["scores"][1.0]["hss"], rel=1e-6, abs=1e-12)
    assert got_b["threshold_mm_h"] == pytest.approx(0.33, abs=0.01)  # the cumulative x12 quirk
    assert "| extrapolation | 0.5 (0.50) |" in ev.protocol_table("smaat")
    with pytest.raises(InputError, match="unknown protocol"):
        evaluate(_da(long), ["persistence"], leadtimes=6, n_in=3, protocols=["nl50"])
    with pytest.raises(InputError, match="6 lead times"):
        evaluate(_da(long), ["persistence"], leadtimes=3, n_in=3, protocols=["smaat"])
    with pytest.raises(InputError, match="no scores for protocol"):
        evaluate(_da(long), ["persistence"], leadtimes=6, n_in=3, stride=5).protocol_table("smaat")


def test_evaluate_audit_of_2026_11_29():
    """(y, x, time) data was cut along its rows as if they were times; accumulations were scored as mm/h; a group
    labelled "all" counted its cases twice in the pooled scores; misc. argument checks."""
    from skydiff.nowcast.evaluation import evaluate
    from skydiff.synthetic import rain_sequence

    da = rain_sequence(8, (48, 48), seed=1)
    kw = dict(leadtimes=2, n_in=2)
    ref = evaluate(da, ["persistence"], **kw)
    moved = evaluate(da.transpose("y", "x", "time"), ["persistence"], **kw)
    np.testing.assert_allclose(moved.score("persistence", "mae"), ref.score("persistence", "mae"))
    with pytest.raises(InputError, match="units 'mm'"):
        evaluate(da.assign_attrs(units="mm"), ["persistence"], **kw)
    with pytest.raises(InputError, match="'all'"):
        evaluate(da, ["persistence"], group=lambda name: "all", **kw)
    for bad, match in ((dict(thresholds="10"), "thresholds"), (dict(crop=32.9), "crop"),
                       (dict(max_cases=0), "max_cases"), (dict(n_in=2.9), "n_in")):
        with pytest.raises(InputError, match=match):
            evaluate(da, ["persistence"], **{**kw, **bad})
    with pytest.raises(InputError, match="listed twice"):
        evaluate(da, ["persistence", "eulerian"], **kw)
    with pytest.raises(InputError, match="threshold 2"):
        ref.score("persistence", "csi", 2.0)
    with pytest.raises(InputError, match="5-min"):
        evaluate(da, ["persistence"], timestep=10, protocols=["smaat"], leadtimes=6, n_in=1)


def test_networks_at_another_time_step_are_refused_before_reading(tmp_path):
    msg = "networks \\(rainnet\\) were trained on 5-min steps; timestep is 2 min.*--resample"
    with pytest.raises(InputError, match=msg):
        evaluate(tmp_path / "nothing-read", ["rainnet", "persistence"], timestep=2.0)
