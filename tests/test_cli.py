"""The skydiff command: nowcast, verify, demo and clear errors."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys

import numpy as np
import pytest

from skydiff.cli import main


def test_help_and_version(capsys):
    assert main([]) == 0
    assert "nowcast" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    for sub in ("nowcast", "verify", "demo"):
        with pytest.raises(SystemExit) as e:
            main([sub, "--help"])
        assert e.value.code == 0


def test_demo_synthetic_only(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SKYDIFF_DATA", raising=False)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--size", "96", "-q"]) == 0
    out = capsys.readouterr().out
    assert "extrapolation (LK)" in out and "persistence" in out
    for f in ("synthetic_nowcast.nc", "synthetic_nowcast.png", "synthetic_scores.csv", "synthetic_scores.png"):
        assert (tmp_path / "demo" / f).stat().st_size > 0
    # run again into its own folder: fine; into a folder of the user's that holds a file of a demo name: refused,
    # the file kept (it was overwritten)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--size", "96", "-q"]) == 0
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "synthetic_scores.csv").write_text("my scores\n")
    capsys.readouterr()
    assert main(["demo", "--out", str(mine), "--size", "96", "-q"]) == 2
    assert "not written by the demo" in capsys.readouterr().err
    assert (mine / "synthetic_scores.csv").read_text() == "my scores\n"


def test_demo_scores_every_model_on_the_same_pixels(tmp_path, capsys, monkeypatch):
    """Extrapolation leaves NaN where rain would flow in, persistence does not: each was scored on its own pixels
    (65 536 for persistence vs 52 800 for LK at +60 min on the synthetic case)."""
    import pandas as pd

    monkeypatch.delenv("SKYDIFF_DATA", raising=False)
    assert main(["demo", "--out", str(tmp_path / "d"), "--size", "96", "-q"]) == 0
    t = pd.read_csv(tmp_path / "d" / "synthetic_scores.csv")
    n = t[t.threshold == 1.0].pivot_table(index="leadtime_min", columns="model", values="n")
    assert (n.nunique(axis=1) == 1).all() and n.iloc[-1, 0] < 96 * 96


def test_demo_skips_a_knmi_folder_without_the_case_files(tmp_path, capsys):
    """Fewer than 6 files up to 05:30 made a negative start index and took the wrong files."""
    knmi = tmp_path / "data" / "radar" / "KNMI" / "2010" / "08"
    knmi.mkdir(parents=True)
    for hhmm in ("0525", "0530", "0535"):
        (knmi / f"RAD_NL25_RAP_5min_20100826{hhmm}.h5").write_bytes(b"")
    assert main(["demo", "--out", str(tmp_path / "d"), "--size", "96", "--data", str(tmp_path / "data")]) == 0
    assert "real case skipped" in capsys.readouterr().err


@pytest.mark.realdata
def test_nowcast_and_verify_on_knmi(knmi2010, tmp_path, capsys):
    from skydiff.io import read_nowcast

    names = [f.name for f in knmi2010]
    i = names.index("RAD_NL25_RAP_5min_201008260530.h5")
    inputs = [str(p) for p in knmi2010[i - 2 : i + 1]]
    out_nc, out_png = tmp_path / "nc.nc", tmp_path / "nc.png"
    rc = main(["nowcast", *inputs, "--leadtimes", "6", "--out", str(out_nc), "--plot", str(out_png), "-q"])
    assert rc == 0
    nc = read_nowcast(out_nc)
    assert nc.shape == (6, 765, 700)
    # provenance: the files of the frames used (extrapolation's LK: the last 3 of the 4 given), and the reference
    # time a coordinate for any CF reader
    four = [str(p) for p in knmi2010[i - 3 : i + 1]]
    assert main(["nowcast", *four, "--leadtimes", "1", "--out", str(tmp_path / "p.nc"), "-q"]) == 0
    assert read_nowcast(tmp_path / "p.nc").attrs["observation_files"].splitlines() == four[1:]
    import xarray as xr

    with xr.open_dataset(out_nc) as ds:
        assert "forecast_reference_time" in ds["precip_rate"].coords
    assert str(nc["time"].values[0])[:16] == "2010-08-26T05:35"
    assert out_png.stat().st_size > 10_000
    # refuses to overwrite without --overwrite
    capsys.readouterr()
    assert main(["nowcast", *inputs, "--out", str(out_nc), "-q"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # verify against the observed frames
    obs = [str(p) for p in knmi2010[i + 1 : i + 7]]
    csv = tmp_path / "scores.csv"
    assert main(["verify", str(out_nc), *obs, "--thresholds", "1", "5", "--csv", str(csv), "-q"]) == 0
    text = capsys.readouterr().out
    assert "csi" in text
    import pandas as pd

    table = pd.read_csv(csv)
    assert len(table) == 12 and set(table["threshold"]) == {1.0, 5.0}
    assert table[table.threshold == 1.0]["csi"].iloc[0] > 0.5
    # a nowcast of the same shape on another domain (shifted 50 km east) is refused: it was scored pixel by pixel
    import xarray as xr

    with xr.open_dataset(out_nc) as ds:
        shifted = ds.load().assign_coords(x=ds["x"] + 50_000.0)
    shifted.to_netcdf(tmp_path / "shifted.nc")
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "shifted.nc"), *obs, "-q"]) == 2
    assert "different grids" in capsys.readouterr().err
    # a nowcast of a block of the grid (--bbox) is scored on that block of the observations (it was refused)
    with xr.open_dataset(out_nc) as ds:
        block = ds.load().isel(y=slice(300, 428), x=slice(250, 378))
    block.to_netcdf(tmp_path / "block.nc")
    csv2 = tmp_path / "block.csv"
    assert main(["verify", str(tmp_path / "block.nc"), *obs, "--thresholds", "1", "--csv", str(csv2), "-q"]) == 0
    from skydiff.io import read_radar

    o = read_radar(obs[0]).values[0, 300:428, 250:378]
    f = block["precip_rate"].values[0]
    ok = np.isfinite(o) & np.isfinite(f)
    hits, fa, miss = [int(((f >= 1) & (o >= 1) & ok).sum()), int(((f >= 1) & (o < 1) & ok).sum()),
                      int(((f < 1) & (o >= 1) & ok).sum())]
    row = pd.read_csv(csv2).iloc[0]
    assert row["csi"] == pytest.approx(hits / (hits + fa + miss))
    with xr.open_dataset(tmp_path / "block.nc") as ds:  # half a pixel off the observations' grid: refused
        ds.load().assign_coords(x=ds["x"] + 500.0).to_netcdf(tmp_path / "half.nc")
    assert main(["verify", str(tmp_path / "half.nc"), *obs, "-q"]) == 2
    assert "different grids" in capsys.readouterr().err


@pytest.mark.realdata
def test_nowcast_neural_model_trims_the_no_data_frame(knmi2010, tmp_path, monkeypatch):
    """The shipped RainNet on the whole KNMI 765 x 700 grid (data on 26 % of it): the default run (networks on the
    box around the data) and --whole-grid give the same nowcast, NaN outside the radar range in both."""
    import numpy as np

    from skydiff.io import read_nowcast

    names = [f.name for f in knmi2010]
    i = names.index("RAD_NL25_RAP_5min_201008260530.h5")
    inputs = [str(p) for p in knmi2010[i - 3 : i + 1]]
    a, b = tmp_path / "trim.nc", tmp_path / "whole.nc"
    # (--min-rain 0: without the shipped output cut, which would turn 0.199 vs 0.201 mm/h into 0 vs 0.201)
    assert main(["nowcast", *inputs, "--model", "rainnet", "--leadtimes", "2", "--min-rain", "0", "--out", str(a),
                 "-q"]) == 0
    assert main(["nowcast", *inputs, "--model", "rainnet", "--leadtimes", "2", "--min-rain", "0", "--whole-grid",
                 "--out", str(b), "-q"]) == 0
    ta, tb = read_nowcast(a).values, read_nowcast(b).values
    assert ta.shape == tb.shape == (2, 765, 700)
    assert np.array_equal(np.isnan(ta), np.isnan(tb)) and 0.6 < np.isnan(ta).mean() < 0.8
    assert np.nanmax(tb) > 1.0 and np.nanmax(np.abs(ta - tb)) < 0.01
    d = tmp_path / "box.nc"  # --bbox (projection metres) and --resample: a region at a 10-min step
    i0 = names.index("RAD_NL25_RAP_5min_201008260600.h5")
    assert main(["nowcast", *[str(p) for p in knmi2010[i0 - 6: i0 + 1]], "--bbox", "100000", "300000", "-3900000",
                 "-3700000", "--resample", "10", "--leadtimes", "2", "--out", str(d), "-q"]) == 0
    box = read_nowcast(d)
    assert box.sizes["y"] == box.sizes["x"] == 200 and float(box.x.min()) >= 100000 and float(box.y.max()) <= -3700000
    assert list(box.lead_time.values) == [10.0, 20.0]
    assert box.attrs["processing"] == ("cropped to --bbox 100000 300000 -3900000 -3700000; resampled linearly in "
                                       "time from 5 min to 10 min (--resample)")
    c = tmp_path / "cut.nc"  # --min-rain: light outputs set to 0, the rest as before
    assert main(["nowcast", *inputs, "--model", "rainnet", "--leadtimes", "2", "--min-rain", "0.2", "--out", str(c),
                 "-q"]) == 0
    tc = read_nowcast(c).values
    assert np.array_equal(np.isnan(ta), np.isnan(tc)) and np.nanmin(tc[tc > 0]) >= 0.2
    # (not bit-equal: with one OpenMP thread two identical RainNet runs differed by ~1e-7 here)
    assert np.allclose(tc[ta >= 0.2], ta[ta >= 0.2], rtol=1e-4, atol=1e-4) and 0 < np.sum((ta > 0) & (ta < 0.2))
    # LUPIN on a region: its own motion (4D-Var) by default, --motion lk replaces it; the file says which
    import xarray as xr

    box = ["--bbox", "380000", "540000", "-4150000", "-3990000", "--leadtimes", "2", "-q"]
    region = [str(p) for p in knmi2010[i0 - 5: i0 + 1]]
    import skydiff.plot

    titles = []
    monkeypatch.setattr(skydiff.plot, "plot_nowcast", lambda *a, title="", **k: titles.append(title))
    got = {}
    for flag, want in (([], "lupin (motion: 4dvar)"), (["--motion", "lk"], "lupin (motion: lk)")):
        out = tmp_path / f"lupin{len(flag)}.nc"
        png = tmp_path / f"lupin{len(flag)}.png"
        assert main(["nowcast", *region, "--model", "lupin", *flag, *box, "--out", str(out), "--plot", str(png)]) == 0
        with xr.open_dataset(out) as ds:
            assert ds.attrs["model"] == want
            got[want] = np.asarray(ds["precip_rate"].values)
        assert titles[-1].endswith(f"(lupin, motion {want.split(': ')[1]}")  # the figure says it too (was "None")
    assert np.nanmax(np.abs(got["lupin (motion: lk)"] - got["lupin (motion: 4dvar)"])) > 0.1  # another motion


@pytest.mark.realdata
def test_cli_errors_are_one_line_messages(knmi2010, tmp_path, capsys):
    names = [f.name for f in knmi2010]
    i = names.index("RAD_NL25_RAP_5min_201008260530.h5")
    # gap in time: 05:10, 05:15, 05:20 and 05:30 without 05:25
    gap = [str(knmi2010[k]) for k in (i - 4, i - 3, i - 2, i)]
    assert main(["nowcast", *gap, "--out", str(tmp_path / "a.nc"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "skydiff: error:" in err and "Traceback" not in err and "05:25" in err
    # too few frames
    assert main(["nowcast", str(knmi2010[i]), "--out", str(tmp_path / "b.nc"), "-q"]) == 2
    assert "frames" in capsys.readouterr().err
    # unreadable file
    bad = tmp_path / "RAD_NL25_RAP_5min_201008260530.h5"
    bad.write_text("not hdf5")
    assert main(["nowcast", str(bad), str(bad), "--out", str(tmp_path / "c.nc"), "-q"]) == 2
    assert "skydiff: error:" in capsys.readouterr().err
    # missing file
    assert main(["nowcast", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "d.nc"), "-q"]) == 2
    assert "nope.h5" in capsys.readouterr().err
    # mixed precision asked of a model without a network
    assert main(["nowcast", *gap, "--precision", "bfloat16", "--out", str(tmp_path / "e.nc"), "-q"]) == 2
    assert "neural-network models" in capsys.readouterr().err
    assert main(["nowcast", *gap, "--whole-grid", "--out", str(tmp_path / "f.nc"), "-q"]) == 2
    assert "--whole-grid applies to the neural-network models" in capsys.readouterr().err
    assert main(["nowcast", *gap, "--min-rain", "0.1", "--out", str(tmp_path / "g.nc"), "-q"]) == 2
    assert "--min-rain 0.1 applies to the neural-network models" in capsys.readouterr().err
    assert main(["nowcast", *gap, "--model", "rainnet", "--motion", "vet", "--out", str(tmp_path / "g3.nc"),
                 "-q"]) == 2
    assert "--motion applies to extrapolation and the networks that move rain" in capsys.readouterr().err
    assert main(["nowcast", *gap, "--prob-match", "cdf", "--out", str(tmp_path / "g2.nc"), "-q"]) == 2
    assert "--prob-match cdf applies to the neural-network models" in capsys.readouterr().err
    assert main(["nowcast", *gap, "--bbox", "0", "1", "0", "1", "--out", str(tmp_path / "h.nc"), "-q"]) == 2
    assert "holds no pixel" in capsys.readouterr().err
    assert main(["nowcast", *gap, "--resample", "5", "--allow-gaps", "--out", str(tmp_path / "h.nc"), "-q"]) == 2
    assert "--resample and --allow-gaps" in capsys.readouterr().err
    # --allow-gaps: the motion is estimated from the frames after the last gap (LK took a 10-min pair for one
    # 5-min step: 47 % too fast); a network needs its frames one step apart
    box = ["--bbox", "150000", "278000", "-4078000", "-3950000", "--leadtimes", "1", "-q"]
    gap2 = [str(knmi2010[k]) for k in (i - 4, i - 3, i - 1, i)]  # 05:10, 05:15, 05:25, 05:30
    assert main(["nowcast", *gap2, "--allow-gaps", *box, "--out", str(tmp_path / "ga.nc")]) == 0
    assert main(["nowcast", *gap2[-2:], "--motion-frames", "2", *box, "--out", str(tmp_path / "gb.nc")]) == 0
    from skydiff.io import read_nowcast

    va = read_nowcast(tmp_path / "ga.nc", with_velocity=True)[1]
    vb = read_nowcast(tmp_path / "gb.nc", with_velocity=True)[1]
    np.testing.assert_allclose(np.asarray(va), np.asarray(vb))
    assert main(["nowcast", *gap2, "--allow-gaps", "--model", "rainnet", *box, "--out", str(tmp_path / "gc.nc")]) == 2
    assert "needs 4 frames 5 min apart, but only the last 2 are" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("a.nc", "b.nc", "c.nc", "d.nc", "e.nc", "f.nc", "g.nc", "h.nc"))
    # never the input file, even with --overwrite (a copy, so the shared data are never at risk)
    frames = [tmp_path / knmi2010[k].name for k in (i - 2, i - 1, i)]
    for src, dst in zip((knmi2010[i - 2], knmi2010[i - 1], knmi2010[i]), frames):
        shutil.copy(src, dst)
    before = frames[-1].read_bytes()
    assert main(["nowcast", *map(str, frames), "--out", str(frames[-1]), "--overwrite", "--model", "persistence",
                 "-q"]) == 2
    assert "one of the input files" in capsys.readouterr().err and frames[-1].read_bytes() == before
    assert main(["nowcast", *map(str, frames), "--motion-frames", "1", "--out", str(tmp_path / "g.nc"), "-q"]) == 2
    assert "--motion-frames must be >= 2" in capsys.readouterr().err
    # options are checked before any file is read (here: files that do not exist), and none is silently ignored
    ghost = [str(tmp_path / "missing" / f"f{k}.h5") for k in range(3)]
    for extra, msg in ((["--model", "nope"], "unknown"), (["--model", "persistence", "--weights", "w"], "--weights"),
                       (["--model", "rainnet", "--motion-frames", "3"], "moves no rain along a motion"),
                       (["--model", "lupin", "--motion-frames", "3"], "add --motion METHOD"),
                       (["--model", "persistence", "--motion", "vet"], "--motion applies to")):
        assert main(["nowcast", *ghost, *extra, "--out", str(tmp_path / "x.nc"), "-q"]) == 2
        assert msg in capsys.readouterr().err.lower() if msg == "unknown" else msg in capsys.readouterr().err
    # numbers out of range are refused while parsing (they were found after the files were read)
    for cmd, extra, msg in (("nowcast", ["--leadtimes", "0"], "--leadtimes: must be >= 1, got 0"),
                            ("nowcast", ["--min-rain", "-1"], "--min-rain: must be >= 0"),
                            ("nowcast", ["--resample", "0"], "--resample: must be > 0"),
                            ("verify", ["--thresholds", "-1"], "--thresholds: must be > 0"),
                            ("evaluate", ["--stride", "0"], "--stride: must be >= 1")):
        with pytest.raises(SystemExit) as exit_:
            main([cmd, *ghost, *extra])
        assert exit_.value.code == 2 and msg in capsys.readouterr().err
    assert main(["evaluate", *ghost, "--models", "lupin", "--weights", f"lupin={tmp_path / 'none'}", "-q"]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.realdata
def test_data_build_nl(knmi2010, tmp_path, capsys):
    import h5py

    out = tmp_path / "nl.h5"
    files = [str(p) for p in knmi2010[:30]]
    assert main(["data", "build-nl", *files, "--out", str(out), "--n-in", "4", "--n-out", "2", "-q"]) == 0
    with h5py.File(out) as f:
        n = sum(f[k]["images"].shape[0] for k in ("train", "test"))
        assert f["train"]["images"].shape[1:] == (6, 288, 288)
    assert n > 0
    assert main(["data", "build-nl", *files, "--out", str(out), "-q"]) == 2  # no overwrite
    assert "overwrite" in capsys.readouterr().err
    # never an input file, even with --overwrite (audit of the ninth session: build-nl and evaluate replaced it)
    frames = [tmp_path / knmi2010[k].name for k in range(6)]
    for src, dst in zip(knmi2010[:6], frames):
        shutil.copy(src, dst)
    before = frames[0].read_bytes()
    assert main(["data", "build-nl", *map(str, frames), "--out", str(frames[0]), "--overwrite", "-q"]) == 2
    assert "one of the input files" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path), "--models", "persistence", "--csv", str(frames[0]), "--overwrite",
                 "-q"]) == 2
    assert "one of the input files" in capsys.readouterr().err and frames[0].read_bytes() == before


@pytest.mark.realdata
def test_assimilate_4dvar_on_knmi(knmi2010, tmp_path):
    from skydiff.io import read_nowcast

    names = [f.name for f in knmi2010]
    i = names.index("RAD_NL25_RAP_5min_201008260330.h5")
    files = [str(p) for p in knmi2010[i - 3 : i + 1]]
    out, png = tmp_path / "motion.nc", tmp_path / "motion.png"
    assert main(["assimilate", *files, "--max-iter", "3", "--out", str(out), "--plot", str(png), "-q"]) == 0
    nc, vel = read_nowcast(out, with_velocity=True)
    assert nc.shape == (3, 765, 700) and vel.shape == (2, 765, 700)
    assert np.isfinite(vel.values).all() and float(np.abs(vel.values).max()) > 0.1
    assert png.stat().st_size > 10_000
    box = tmp_path / "box.nc"  # --bbox as for nowcast: a 100 x 120 km region (x and y in projection metres)
    assert main(["assimilate", *files, "--max-iter", "3", "--bbox", "380000", "480000", "-4150000", "-4030000",
                 "--out", str(box), "-q"]) == 0
    nb, vb = read_nowcast(box, with_velocity=True)
    assert nb.shape[1:] == vb.shape[1:] and 90 <= nb.shape[2] <= 110 and 110 <= nb.shape[1] <= 130
    # provenance: the files of the frames assimilated (all six inputs were listed for the last three used)
    six = [str(p) for p in knmi2010[i - 5 : i + 1]]
    assert main(["assimilate", *six, "--frames", "5", "--max-iter", "3", "--bbox", "380000", "480000", "-4150000",
                 "-4030000", "--out", str(tmp_path / "five.nc"), "-q"]) == 0  # (> 4 frames: a first guess of 4)
    assert read_nowcast(tmp_path / "five.nc").attrs["observation_files"].splitlines() == six[-5:]


def test_train_command_synthetic(tmp_path, capsys):
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        '[model]\nname = "rainnet"\nbase_channels = 4\n'
        '[data]\nsource = "synthetic"\nn_in = 4\nn_out = 1\ncrop = 32\nbatch_size = 2\nshape = [48, 56]\n'
        "n_frames = 12\nn_sequences = 2\nn_val_sequences = 1\n"
        "[training]\nmax_steps = 2\npatience = -1\nprogress_bar = false\n"
    )
    out = tmp_path / "run"
    assert main(["train", "rainnet", "--config", str(cfg), "--out", str(out)]) == 0
    assert (out / "rainnet.safetensors").exists() and (out / "checkpoints" / "last.ckpt").exists()
    # resumes from the last checkpoint and continues to 3 steps
    assert main(["train", "rainnet", "--config", str(cfg), "--out", str(out), "--max-steps", "3"]) == 0
    assert "3 steps" in capsys.readouterr().out
    assert main(["train", "nope", "--config", str(cfg), "--out", str(out)]) == 2


def test_progress_step_with_a_bar_ends_its_line_first(capsys):
    """A step that may draw a tqdm bar (downscaling, reading many files) ends its line at once, so the bar's carriage
    returns cannot overwrite it, and its time follows on a line of its own; other steps keep one line."""
    from skydiff.cli import _Progress, _many_files

    prog = _Progress(2)
    prog.step("downscaling", bar=True)
    print("BAR", file=sys.stderr)
    prog.step("writing")
    prog.done()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[1/2] downscaling ..."
    assert lines[1] == "BAR"
    assert lines[2].startswith("[1/2] done in ") and lines[2].endswith(" s")
    assert lines[3].startswith("[2/2] writing ... ") and lines[3].endswith(" s")
    assert not _many_files(["a.h5", "b.h5"]) and _many_files(["x"] * 21) and _many_files(["radar/*.h5"])


def test_openmp_spin_count_is_lowered_only_before_torch_loads():
    """skydiff lowers GNU OpenMP's spin count (workers that spin steal shared cores: RESULTS §5) when it is imported
    before torch - always so for the `skydiff` command - and keeps a value the user set; after torch it leaves the
    environment alone (OpenMP has read it already)."""
    import subprocess

    code = "import os, sys; {pre}import skydiff; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}

    def run(pre: str, **extra: str) -> str:
        out = subprocess.run([sys.executable, "-c", code.format(pre=pre)], env={**env, **extra}, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip().splitlines()[-1]

    assert run("") == "3000"
    assert run("", GOMP_SPINCOUNT="77") == "77"
    assert run("import torch; ") == "None"


def test_readme_quick_tour_reads_enough_frames_for_every_network(shared_data):
    # the tour's glob once matched 4 frames, and forecast(da, 6, model="lupin") then refused them
    import glob
    import re
    from pathlib import Path

    from skydiff.nowcast.interface import _NN_MIN_FRAMES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    tour = readme[readme.index("## Quick tour"):]
    pattern = re.search(r'read_radar\("\.\./shared/data/([^"]+)"\)', tour).group(1)
    files = glob.glob(str(shared_data / pattern))
    assert len(files) >= max(_NN_MIN_FRAMES.values()), (pattern, len(files), _NN_MIN_FRAMES)


def test_weights_paths_a_checkpoint_and_a_stem_with_dots(tmp_path, capsys):
    # a .ckpt was looked up as <stem>.json and its .safetensors sibling silently loaded instead
    from skydiff.registry import create_model, load_model, save_model

    assert main(["nowcast", str(tmp_path / "a.h5"), str(tmp_path / "b.h5"), "--model", "rainnet", "--weights",
                 str(tmp_path / "run.ckpt"), "--out", str(tmp_path / "x.nc"), "-q"]) == 2
    assert "Lightning training checkpoint" in capsys.readouterr().err
    m = create_model("rainnet", base_channels=4, depth=2)
    save_model(m, tmp_path / "rainnet_v1.2")
    assert (tmp_path / "rainnet_v1.2.safetensors").is_file() and (tmp_path / "rainnet_v1.2.json").is_file()
    assert type(load_model(tmp_path / "rainnet_v1.2")) is type(m)


def test_assimilate_refuses_fewer_than_two_frames_before_reading(tmp_path, capsys):
    assert main(["assimilate", str(tmp_path / "a.h5"), "--frames", "0", "--out", str(tmp_path / "m.nc"), "-q"]) == 2
    assert "--frames must be >= 2" in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_refused_before_any_work(tmp_path, capsys):
    """An unwritable --out failed with a raw PermissionError after the whole run (a downscaling: after sampling)."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    outs = [str(blocker / "sub" / "w.nc")]
    if sys.platform.startswith("linux") and os.path.isdir("/proc"):
        outs.append("/proc/skydiff-test.nc")  # a folder that takes no new files, even for root
    for out in outs:
        t0 = __import__("time").perf_counter()
        assert main(["dycore", "run", "schaer", "--out", out, "-q"]) == 2  # a 5 h run if not refused
        assert __import__("time").perf_counter() - t0 < 30
        err = capsys.readouterr().err
        assert "cannot write" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "x"


def test_verify_refuses_a_nowcast_among_the_observations(knmi2010, tmp_path, capsys):
    """A nowcast written into the folder of its input frames was read as observations: `verify` scored it against
    itself (CSI 1, MAE 0 at every lead time)."""
    folder = tmp_path / "run"
    folder.mkdir()
    for f in sorted(knmi2010)[-3:]:
        shutil.copy(f, folder)
    out = folder / "nowcast.nc"
    assert main(["nowcast", str(folder), "--leadtimes", "2", "--out", str(out), "-q"]) == 0
    assert main(["verify", str(out), str(folder), "-q"]) == 2
    err = capsys.readouterr().err
    assert "are nowcasts, not observations" in err and "nowcast.nc" in err


def test_persistence_from_a_single_file(knmi2010, tmp_path):
    """One frame has no time step (NaN): `--model persistence` failed with 'timestep must be a positive number'."""
    out = tmp_path / "p.nc"
    assert main(["nowcast", str(sorted(knmi2010)[-1]), "--model", "persistence", "--leadtimes", "1",
                 "--out", str(out), "-q"]) == 0
    assert out.is_file()


def test_sigterm_during_training_saves_the_state_and_exits_non_zero(tmp_path, monkeypatch, capsys):
    """Lightning raises SIGTERMException (a SystemExit without a code) on SIGTERM: the run ended with status 0 and
    nothing saved (a batch scheduler's preemption looked like success)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from skydiff import cli
    from skydiff._checkpoint import SaveOnInterrupt

    saved = []

    class Trainer:
        world_size = 1

        def save_checkpoint(self, path):
            saved.append(path)

    SaveOnInterrupt(tmp_path / "last.ckpt").on_exception(Trainer(), None, SIGTERMException())
    assert saved == [str(tmp_path / "last.ckpt")]
    # at an epoch's last batch: skipped where a validation follows (resumed, it would be skipped), saved where none
    from types import SimpleNamespace

    for validates, n_saved in ((True, 1), (False, 2)):
        t = Trainer()
        t.enable_validation = validates
        t.fit_loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(is_last_batch=True)))
        SaveOnInterrupt(tmp_path / "last.ckpt").on_exception(t, None, SIGTERMException())
        assert len(saved) == n_saved

    def terminated(args):
        raise SIGTERMException()

    monkeypatch.setattr(cli, "cmd_demo", terminated)
    assert main(["demo", "--out", str(tmp_path / "d")]) == 143
    assert "terminated (SIGTERM)" in capsys.readouterr().err


def test_train_refuses_a_model_name_that_differs_from_the_config(tmp_path, capsys):
    """`skydiff train lcnn --config rainnet.toml` trained an L-CNN with the RainNet config, the card saying lcnn."""
    cfg = tmp_path / "rainnet.toml"
    cfg.write_text('out = "%s"\n[model]\nname = "rainnet"\n' % (tmp_path / "run"))
    assert main(["train", "lcnn", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "[model] name = 'rainnet', the command line 'lcnn'" in err
    assert not (tmp_path / "run").exists()
    # ... also a JSON config and a sample config's name (the check parsed every file as TOML)
    js = tmp_path / "smaat.json"
    js.write_text('{"out": "%s", "model": {"name": "smaat"}}' % (tmp_path / "run"))
    assert main(["train", "rainnet", "--config", str(js)]) == 2
    assert "[model] name = 'smaat', the command line 'rainnet'" in capsys.readouterr().err
    assert main(["train", "smaat", "--config", "rainnet"]) == 2
    assert "the command line 'smaat'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.realdata
def test_assimilate_dry_frames_writes_zero_motion(shared_data, tmp_path):
    # dry frames: 4D-Var optimises nothing; the summary line read the shape of the (absent) optimised level
    from skydiff.io import read_nowcast

    d = shared_data / "radar" / "KNMI" / "2021" / "2021-01-01-2005"
    files = [d / f"2021010122{m}.hf5" for m in ("45", "50", "55")] + [d / "202101012300.hf5"]
    if not all(f.is_file() for f in files):
        pytest.skip("KNMI 2021-01-01 22:45-23:00 files not found in the shared data")
    out = tmp_path / "dry.nc"
    assert main(["assimilate", *map(str, files), "--bbox", "225000", "257000", "-3966000", "-3934000",
                 "--out", str(out), "-q"]) == 0
    nc, vel = read_nowcast(out, with_velocity=True)
    assert nc.shape[0] == 3 and float(np.abs(vel.values).max()) == 0.0


def test_nowcast_checks_the_network_before_reading(tmp_path, capsys, monkeypatch):
    """Lead times and precision a network refuses, and weights of another model, were refused after the reading."""
    import skydiff.io

    def no_reading(*a, **k):
        raise AssertionError("read the input before checking the options")

    monkeypatch.setattr(skydiff.io, "read_radar", no_reading)
    f = tmp_path / "a.h5"
    f.write_bytes(b"x")
    out = str(tmp_path / "o.nc")
    for extra, msg in ((["--model", "smaat", "--leadtimes", "24"], "predicts 12 lead time"),
                       (["--model", "smaat", "--precision", "bfloat16"], "does not run in bfloat16")):
        assert main(["nowcast", str(f), *extra, "--out", out, "-q"]) == 2
        assert msg in capsys.readouterr().err


def test_downscale_coarsen_check_on_a_dry_field(tmp_path, capsys):
    """The spectrum check against the field before --coarsen raised on a dry field, after sampling: no output."""
    import xarray as xr

    f = tmp_path / "dry.nc"
    xr.Dataset({"rain": (("time", "y", "x"), np.zeros((1, 32, 32), "f4"), {"units": "mm/h"})},
               coords={"time": np.array(["2020-01-01"], "M8[ns]"), "y": np.arange(32.0)[::-1] * 1e3,
                       "x": np.arange(32.0) * 1e3}).to_netcdf(f)
    out = tmp_path / "o.nc"
    assert main(["downscale", str(f), "--coarsen", "4", "--members", "2", "--steps", "4", "--out", str(out)]) == 0
    assert out.is_file() and "spectrum" not in capsys.readouterr().out


def _acc_files(tmp_path, n=4):
    """n single-field CF files in mm per 5 min, with no accumulation time (the file does not say)."""
    import xarray as xr

    base = np.zeros((40, 40), "f4")
    base[12:28, 10:26] = 2.0 / 12
    paths = []
    for i in range(n):
        ds = xr.Dataset({"rr": (("y", "x"), np.roll(base, i, axis=1), {"units": "mm"})},
                        coords={"time": np.datetime64("2021-01-01T12:00") + np.timedelta64(5 * i, "m"),
                                "y": ("y", np.arange(40.0)[::-1] * 1e3, {"units": "m"}),
                                "x": ("x", np.arange(40.0) * 1e3, {"units": "m"})})
        ds.to_netcdf(tmp_path / f"acc_{i}.nc")
        paths.append(str(tmp_path / f"acc_{i}.nc"))
    return paths


def test_importer_options_on_the_command_line(tmp_path, capsys):
    """An accumulation without an accumulation time needed accutime=, which the CLI had no way to pass."""
    import xarray as xr

    files = _acc_files(tmp_path)
    out = tmp_path / "n.nc"
    assert main(["nowcast", *files, "--out", str(out), "-q", "--leadtimes", "2"]) == 2
    assert "--importer-option accutime=MINUTES" in capsys.readouterr().err
    assert main(["nowcast", *files, "--out", str(out), "-q", "--leadtimes", "2",
                 "--importer-option", "accutime=5", "--importer-option", "variable=rr"]) == 0
    with xr.open_dataset(out) as ds:
        assert float(ds["precip_rate"].max()) == pytest.approx(2.0, rel=1e-5)  # 2/12 mm per 5 min = 2 mm/h
    for bad, msg in ((["accutime"], "expected KEY=VALUE"), (["accutime=5", "accutime=10"], "given twice"),
                     (["importer=netcdf"], "use --importer")):
        capsys.readouterr()
        with pytest.raises(SystemExit) if msg == "expected KEY=VALUE" else contextlib.nullcontext():
            code = main(["nowcast", *files, "--out", str(tmp_path / "x.nc"), "-q",
                         *[a for b in bad for a in ("--importer-option", b)]])
            assert code == 2
        assert msg in capsys.readouterr().err
    # evaluate reads the files it is given with them; --shared data has its own settings
    assert main(["evaluate", *files, "--models", "persistence", "--leadtimes", "1", "--n-in", "1", "-q",
                 "--importer-option", "accutime=5"]) == 0
    assert "3 cases" in capsys.readouterr().out
    assert main(["evaluate", "--shared", "test", "--importer-option", "accutime=5", "-q"]) == 2
    assert "not --shared" in capsys.readouterr().err


def test_device_option_is_checked_before_reading(tmp_path, capsys):
    import torch

    files = _acc_files(tmp_path)
    for cmd in (["nowcast", *files, "--out", str(tmp_path / "n.nc")], ["evaluate", *files],
                ["downscale", files[0], "--out", str(tmp_path / "d.nc")]):
        assert main([*cmd, "--device", "bogus", "-q"]) == 2
        assert "unknown device 'bogus'" in capsys.readouterr().err
        if not torch.cuda.is_available():
            assert main([*cmd, "--device", "cuda", "-q"]) == 2
            assert "CUDA is not available" in capsys.readouterr().err
    # an explicit CPU device computes there: the same nowcast as without
    import xarray as xr

    for dev in (None, "cpu"):
        assert main(["nowcast", *files, "--out", str(tmp_path / f"{dev}.nc"), "-q", "--leadtimes", "2",
                     "--importer-option", "accutime=5", *(["--device", dev] if dev else [])]) == 0
    with xr.open_dataset(tmp_path / "None.nc") as a, xr.open_dataset(tmp_path / "cpu.nc") as b:
        np.testing.assert_array_equal(a["precip_rate"].values, b["precip_rate"].values)


def test_demo_refuses_a_data_folder_that_is_not_there(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--data", str(tmp_path / "nope"), "-q"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # before any work


def test_importer_option_edge_cases(tmp_path, capsys):
    import xarray as xr

    files = _acc_files(tmp_path)
    # a variable named by digits stays a name (JSON made it the number 123)
    for f in files:
        with xr.open_dataset(f) as ds:
            ds = ds.load()
        ds.rename(rr="123").to_netcdf(f)
    assert main(["nowcast", *files, "--out", str(tmp_path / "n.nc"), "-q", "--leadtimes", "1",
                 "--importer-option", "variable=123", "--importer-option", "accutime=5"]) == 0
    # build-nl's own settings are not reader options (a clash was a TypeError traceback)
    assert main(["data", "build-nl", *files, "--out", str(tmp_path / "o.h5"), "--importer-option", "n_in=3"]) == 2
    assert "n_in= is not an importer option" in capsys.readouterr().err
    # evaluate: the same files in two sources are refused (their cases were scored twice)
    folder = tmp_path / "seq"
    folder.mkdir()
    for f in files:
        shutil.copy(f, folder)
    assert main(["evaluate", str(folder), str(folder / "acc_0.nc"), "--models", "persistence", "-q"]) == 2
    assert "in two of the sources" in capsys.readouterr().err


def test_system_errors_paths_naming_folders_and_absurd_sizes_are_one_line_errors(tmp_path, capsys):
    """Found by an audit: a folder that cannot be made (or a full disk) gave a traceback, an --out ending in '/'
    was written as a file, 100 000 threads crashed the process, max_epochs = 0 exported untrained weights."""
    (tmp_path / "file").write_text("mine")
    assert main(["demo", "--out", str(tmp_path / "file" / "demo"), "--quiet"]) == 1
    assert "skydiff: error: system error: " in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"
    assert main(["nowcast", str(tmp_path / "in.nc"), "--out", str(tmp_path / "newdir") + "/"]) == 2
    assert "names a folder" in capsys.readouterr().err
    assert main(["dycore", "run", "schaer", "--threads", "100000", "--hours", "0.001"]) == 2
    assert "CPU cores" in capsys.readouterr().err
    from skydiff.errors import InputError
    from skydiff.nowcast.training import resolve_config

    with pytest.raises(InputError, match="max_epochs must be -1 .* got 0"):
        resolve_config({"model": {"name": "rainnet"}, "data": {"source": "synthetic"},
                        "training": {"max_epochs": 0}})
