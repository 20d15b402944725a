"""Tests of skydiff.io: unit conversions, read_radar on the real KNMI / FMI / MRMS files, CF netCDF nowcasts."""

from __future__ import annotations

import os
import random
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from skydiff.errors import InputError, ReadError, ShapeError, SkydiffWarning, TimeGapError
from skydiff.io import (
    accumulation_to_rainrate,
    check_regular,
    dbr_to_rainrate,
    dbz_to_rainrate,
    importer_names,
    rainrate_to_dbr,
    rainrate_to_dbz,
    read_nowcast,
    read_radar,
    require_frames,
    resample_time,
    to_rainrate,
    write_nowcast,
)
from skydiff.io import netcdf as sk_netcdf


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def knmi2021(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "radar" / "KNMI" / "2021" / "2021-01-01-2005").glob("*.hf5"))
    if not files:
        pytest.skip("KNMI 2021 files not found in the shared data")
    return files


@pytest.fixture(scope="module")
def fmi2016(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "radar" / "fmi" / "pgm" / "20160928").glob("*.pgm.gz"))
    if not files:
        pytest.skip("FMI 2016 files not found in the shared data")
    return files


@pytest.fixture(scope="module")
def knmi6(knmi2010: list[Path]) -> xr.DataArray:
    """Six consecutive KNMI 2010 frames (00:00-00:25), passed in shuffled order."""
    files = [str(f) for f in knmi2010[:6]]
    random.Random(3).shuffle(files)
    return read_radar(files)


def _pysteps_importer(name: str):
    from skydiff._compat import import_pysteps

    import_pysteps()
    from pysteps.io import get_method

    return get_method(name, "importer")


def _no_warnings():
    return warnings.catch_warnings()


# ------------------------------------------------------------------------------------------------ units
def test_units_known_values_and_round_trips():
    # Z = 200 R^1.6: R = 1 mm/h <-> 10 log10(200) dBZ
    assert np.isclose(dbz_to_rainrate(10 * np.log10(200.0)), 1.0)
    assert np.isclose(rainrate_to_dbz(1.0), 10 * np.log10(200.0))
    r = np.array([0.05, 0.1, 1.0, 7.5, 120.0])
    assert np.allclose(dbz_to_rainrate(rainrate_to_dbz(r)), r)
    assert np.allclose(dbz_to_rainrate(rainrate_to_dbz(r, 223.0, 1.53), 223.0, 1.53), r)
    # FMI coefficients give a different rate for the same reflectivity
    assert not np.isclose(dbz_to_rainrate(30.0, 223.0, 1.53), dbz_to_rainrate(30.0))
    assert np.isclose(accumulation_to_rainrate(0.5, 5), 6.0)
    assert np.isclose(to_rainrate(0.5, "mm", accutime=5), 6.0)
    assert np.isclose(to_rainrate(23.0, "dBZ", zr_a=223.0, zr_b=1.53), dbz_to_rainrate(23.0, 223.0, 1.53))
    assert np.allclose(to_rainrate([1, 2], "mm/h"), [1.0, 2.0])
    # dBR (pysteps: threshold 0.1 mm/h, zerovalue -15, back-transform threshold -10)
    rr = np.array([0.0, 0.05, 0.1, 1.0, 10.0, np.nan])
    dbr = rainrate_to_dbr(rr)
    assert np.allclose(dbr[:5], [-15.0, -15.0, -10.0, 0.0, 10.0]) and np.isnan(dbr[5])
    back = dbr_to_rainrate(dbr)
    assert np.allclose(back[:5], [0.0, 0.0, 0.1, 1.0, 10.0]) and np.isnan(back[5])
    # NaN propagates everywhere
    assert np.isnan(dbz_to_rainrate(np.nan)) and np.isnan(to_rainrate(np.nan, "mm", accutime=5))


def test_units_errors():
    with pytest.raises(InputError, match="furlongs"):
        to_rainrate(1.0, "furlongs")
    with pytest.raises(InputError, match="accutime"):
        to_rainrate(1.0, "mm")
    with pytest.raises(InputError):
        accumulation_to_rainrate(1.0, 0)
    with pytest.raises(InputError):
        dbz_to_rainrate(1.0, a=-1)
    # sixteenth-session audit: numpy's ValueError for a text threshold; NaN zerovalue made dry look like no data
    from skydiff.io.units import is_rain_rate, normalize_unit

    for kw in ({"threshold": "x"}, {"zerovalue": float("nan")}):
        with pytest.raises(InputError):
            rainrate_to_dbr(np.ones(3), **kw)
    with pytest.raises(InputError, match="threshold"):
        dbr_to_rainrate(np.ones(3), threshold="x")
    # every spelling is_rain_rate accepts is normalised (netCDF's "mm.h-1" was refused, and its file unreadable)
    for unit in ("mm.h-1", "mm / h", "MM/ H", "mm h-1", "kg m-2 h-1"):
        assert is_rain_rate(unit) and normalize_unit(unit) == "mm/h"
    assert normalize_unit("kg  m-2") == "mm" and normalize_unit(" dBZ ") == "dBZ"


def test_units_torch_differentiable():
    dbz = torch.tensor([-10.0, 0.0, 20.0, 45.0], dtype=torch.float64, requires_grad=True)
    r = dbz_to_rainrate(dbz)
    assert isinstance(r, torch.Tensor) and r.dtype == torch.float64
    assert np.allclose(r.detach().numpy(), dbz_to_rainrate(dbz.detach().numpy()))
    r.sum().backward()
    assert torch.all(torch.isfinite(dbz.grad)) and torch.all(dbz.grad > 0)

    rate = torch.tensor([0.0, 0.05, 0.5, 5.0], dtype=torch.float32, requires_grad=True)
    out = rainrate_to_dbr(rate)
    assert out.dtype == torch.float32
    assert np.allclose(out.detach().numpy(), rainrate_to_dbr(rate.detach().numpy()))
    out.sum().backward()
    assert torch.all(torch.isfinite(rate.grad))
    assert rate.grad[0] == 0 and rate.grad[3] > 0
    assert torch.allclose(dbr_to_rainrate(out.detach()), torch.tensor([0.0, 0.0, 0.5, 5.0]), atol=1e-6)
    assert torch.allclose(to_rainrate(torch.tensor([0.5]), "mm", accutime=5), torch.tensor([6.0]))
    assert torch.isnan(rainrate_to_dbr(torch.tensor([float("nan")])))[0]


# --------------------------------------------------------------------------------------- KNMI 2010 (ACRR)
@pytest.mark.realdata
def test_knmi2010_acrr(knmi2010, knmi6):
    da = knmi6
    assert isinstance(da, xr.DataArray) and da.name == "precip_rate"
    assert da.dims == ("time", "y", "x") and da.shape == (6, 765, 700) and da.dtype == np.float32
    times = da["time"].values
    expected = np.array(["2010-08-26T00:%02d" % m for m in range(0, 30, 5)], dtype="datetime64[ns]")
    assert np.array_equal(times, expected)  # parsed from the files, sorted although passed shuffled
    a = da.attrs
    assert a["units"] == "mm/h" and a["timestep"] == 5 and a["importer"] == "knmi_hdf5"
    assert a["source_unit"] == "mm" and a["accutime"] == 5
    assert a["projection"].startswith("+proj=stere") and "KNMI" in a["institution"]
    assert a["cartesian_unit"] == "m" and a["xpixelsize"] == 1000.0 and a["ypixelsize"] == 1000.0
    assert a["yorigin"] == "upper" and a["n_gaps"] == 0 and a["gaps"] == ""
    files = a["source_files"].split("\n")
    assert [os.path.basename(f) for f in files] == [p.name for p in knmi2010[:6]]
    # pixel centres in metres, y decreasing for yorigin='upper'
    assert np.isclose(da.x.values[0], 500.0) and np.isclose(da.x.values[-1], 699500.0)
    assert np.isclose(da.y.values[0], -3650500.0) and np.all(np.diff(da.y.values) < 0)
    # NaN outside the radar disk, valid inside
    assert np.isnan(da.values[:, 0, 0]).all() and np.isfinite(da.values[:, 428, 369]).all()
    assert np.isfinite(da.values[:, 284:572, 225:513]).all()
    v = da.values[np.isfinite(da.values)]
    assert v.min() >= 0 and 1.0 < v.max() < 300.0
    # one frame against the raw pysteps importer: mm per 5 min -> mm/h
    raw, _, meta = _pysteps_importer("knmi_hdf5")(str(knmi2010[3]), qty="ACRR")
    assert meta["unit"] == "mm"
    np.testing.assert_allclose(da.values[3], (raw * 12.0).astype(np.float32), rtol=1e-6, equal_nan=True)


@pytest.mark.realdata
def test_reflectivity_passed_as_mm_h_warns(knmi6):
    """dBZ (or dBR) handed over as mm/h is the classic silent mistake: the nowcasting and downscaling entry points
    warn; real rain rates (the same KNMI frames) do not."""
    from skydiff.downscale import downscale
    from skydiff.io.units import warn_implausible_rain
    from skydiff.nowcast.interface import check_frames

    rain = knmi6.values[:, 300:364, 300:364].astype(np.float64)
    assert np.isfinite(rain).all() and (rain >= 0.1).sum() > 1000
    dbz = np.where(rain >= 0.1, rainrate_to_dbz(np.maximum(rain, 0.1)), 0.0)  # reflectivity, 0 where dry
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_implausible_rain(rain, "frames")
        check_frames(rain)
    with pytest.warns(SkydiffWarning, match="median rain rate .* are these reflectivities"):
        check_frames(dbz)
    with pytest.warns(SkydiffWarning, match="lowres: the median rain rate"), pytest.raises(InputError, match="factor"):
        downscale(dbz[0], factor=3)  # warned before the factor is refused (nothing is sampled)
    with pytest.warns(SkydiffWarning, match="2000 mm/h: are they really"):
        warn_implausible_rain(np.full((4, 4), 2000.0), "frames")


def test_a_quantity_the_file_does_not_hold_is_refused(knmi2010, knmi2021):
    """qty="DBZH" on a KNMI accumulation read its data as dBZ: mm/h of nonsense and +inf where no data was."""
    with pytest.raises(InputError, match="holds ACRR, not qty='DBZH'"):
        read_radar(knmi2010[0], qty="DBZH")
    with pytest.raises(InputError, match="holds DBZH, not qty='ACRR'"):
        read_radar(knmi2021[0], qty="ACRR")
    assert read_radar(knmi2010[0], qty="ACRR").attrs["source_unit"] == "mm"


def test_knmi2021_reflectivity_detected(knmi2021, knmi6):
    files = [str(f) for f in knmi2021[:4]][::-1]
    da = read_radar(files)
    assert da.shape == (4, 765, 700)
    assert da.attrs["source_unit"] == "dBZ" and da.attrs["zr_a"] == 200.0 and da.attrs["zr_b"] == 1.6
    assert str(da.time.values[0])[:16] == "2021-01-01T20:05" and da.attrs["timestep"] == 5
    raw, _, meta = _pysteps_importer("knmi_hdf5")(str(knmi2021[1]), qty="DBZH")
    ref = ((10 ** (raw / 10.0)) / 200.0) ** (1 / 1.6)
    np.testing.assert_allclose(da.values[1], ref.astype(np.float32), rtol=1e-5, equal_nan=True)
    assert np.isnan(da.values[:, 0, 0]).all() and np.isfinite(da.values[:, 428, 369]).all()
    assert np.nanmax(da.values) < 300.0 and np.nanpercentile(da.values, 99.9) < 20.0
    # the km grid of 2010 and the metre grid of 2021 are the same grid
    np.testing.assert_allclose(da.x.values, knmi6.x.values)
    np.testing.assert_allclose(da.y.values, knmi6.y.values)
    # ... but accumulations (2010, ACRR in mm) and reflectivity (2021, DBZH) are two products, not one series
    # (they were merged silently)
    with pytest.raises(InputError, match=r"different products: 1 in 'mm' .*; 1 in 'dBZ'"):
        read_radar([knmi6.attrs["source_files"].splitlines()[0], files[0]])
    assert da.attrs["projection"] == knmi6.attrs["projection"]


# ------------------------------------------------------------------------------------------------- FMI
@pytest.mark.realdata
def test_fmi_pgm_gzip(fmi2016):
    files = [str(f) for f in fmi2016[:3]]
    da = read_radar([files[2], files[0], files[1]])
    assert da.shape == (3, 1226, 760)
    assert da.attrs["importer"] == "fmi_pgm" and da.attrs["zr_a"] == 223.0 and da.attrs["zr_b"] == 1.53
    assert np.array_equal(
        da.time.values, np.array(["2016-09-28T14:45", "2016-09-28T14:50", "2016-09-28T14:55"], "datetime64[ns]")
    )
    assert da.attrs["timestep"] == 5 and da.attrs["cartesian_unit"] == "m"
    assert np.isclose(da.attrs["xpixelsize"], 999.674053)
    raw, _, meta = _pysteps_importer("fmi_pgm")(files[0], gzipped=True)
    ref = ((10 ** (raw / 10.0)) / 223.0) ** (1 / 1.53)
    np.testing.assert_allclose(da.values[0], ref.astype(np.float32), rtol=1e-5, equal_nan=True)
    frac = np.nanmean(da.values > 1.0)
    assert 0.005 < frac < 0.3 and np.nanmax(da.values) < 500.0
    assert np.isnan(da.values).any()  # outside the composite
    # user Z-R coefficients win over the importer's
    mp = read_radar(files[0], zr_a=200.0, zr_b=1.6)
    assert mp.attrs["zr_a"] == 200.0 and not np.allclose(mp.values[0], da.values[0], equal_nan=True)
    # explicit importer name works too (gzipped detected)
    ex = read_radar(files[0], importer="fmi_pgm")
    np.testing.assert_array_equal(ex.values, da.values[:1])


# ------------------------------------------------------------------------------------ gaps and grids
@pytest.mark.realdata
def test_gap_warning_and_check_regular(knmi2010, knmi6):
    files = [knmi2010[i] for i in (0, 1, 3, 4)]
    with pytest.warns(SkydiffWarning, match="2010-08-26T00:10:00"):
        da = read_radar(files)
    assert da.sizes["time"] == 4 and da.attrs["timestep"] == 5
    assert da.attrs["n_gaps"] == 1 and da.attrs["gaps"] == "2010-08-26T00:10:00"
    with pytest.raises(TimeGapError, match="00:10"):
        check_regular(da)
    assert check_regular(knmi6) is knmi6
    with pytest.raises(TimeGapError):
        check_regular(knmi6, timestep=2)
    assert require_frames(da, 4) is da
    with pytest.raises(InputError, match="5"):
        require_frames(da, 5)
    for bad in (0, -5, float("nan"), "5"):  # used to pass, or fail deep inside
        with pytest.raises(InputError, match="timestep must be"):
            check_regular(knmi6, timestep=bad)
    with pytest.raises(InputError, match="number of frames"):
        require_frames(da, "a")
    from skydiff.io import resample_time

    with pytest.raises(InputError, match="start must be a time"):
        resample_time(knmi6, 5, start="nonsense")
    # a user timestep sets the regular series
    with _no_warnings():
        warnings.simplefilter("error")
        one = read_radar(knmi2010[0], timestep=5)
    assert one.attrs["timestep"] == 5 and one.attrs["n_gaps"] == 0


@pytest.mark.realdata
def test_mixed_grids(knmi2010, fmi2016):
    with pytest.raises(InputError, match="mixed grids") as exc:
        read_radar([knmi2010[0], fmi2016[0]])
    assert knmi2010[0].name in str(exc.value) and fmi2016[0].name in str(exc.value)


@pytest.mark.realdata
def test_duplicate_times(knmi2010, tmp_path):
    copy = tmp_path / "copy_of_first.h5"
    shutil.copy(knmi2010[0], copy)
    with pytest.raises(InputError, match="duplicate time 2010-08-26T00:00:00"):
        read_radar([knmi2010[0], copy])


@pytest.mark.realdata
def test_glob_and_directory(knmi2010, tmp_path):
    for f in knmi2010[:3]:
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "README.txt").write_text("not radar data\n")
    pattern = str(tmp_path / "RAD_NL25_*.h5")
    assert read_radar(pattern).sizes["time"] == 3
    with pytest.warns(SkydiffWarning, match="README"):
        da = read_radar(tmp_path)
    assert da.sizes["time"] == 3
    threaded = read_radar(pattern, workers=2)
    np.testing.assert_array_equal(threaded.values, da.values)


# ------------------------------------------------------------------------------------------ read errors
def test_read_errors(tmp_path):
    with pytest.raises(ReadError, match="not found"):
        read_radar(tmp_path / "missing.h5")
    with pytest.raises(ReadError, match="no file matches"):
        read_radar(str(tmp_path / "nothing_*.h5"))
    with pytest.raises(ReadError, match="empty"):
        read_radar([])
    text = tmp_path / "fake.h5"
    text.write_text("this is just text\n")
    with pytest.raises(ReadError, match="cannot detect the format") as exc:
        read_radar(text)
    assert "knmi_hdf5" in str(exc.value) and "fmi_pgm" in str(exc.value)
    with pytest.raises(ReadError, match="not an HDF5 file"):
        read_radar(text, importer="knmi_hdf5")
    named = tmp_path / "RAD_NL25_RAP_5min_201008260000.h5"
    named.write_text("still text\n")
    with pytest.raises(ReadError, match="not an HDF5 file"):
        read_radar(named)
    blob = tmp_path / "data.xyz"
    blob.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ReadError, match="importer=NAME"):
        read_radar(blob)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(ReadError, match="empty"):
        read_radar(empty)
    with pytest.raises(InputError, match="unknown importer"):
        read_radar(blob, importer="no_such_importer")
    assert {"knmi_hdf5", "fmi_pgm", "mrms_grib", "odim_hdf5", "npz", "netcdf"} <= set(importer_names())


@pytest.mark.realdata
def test_db_transformed_importers_read_like_pysteps(knmi2010):
    """An importer of pysteps' kind returning dB-transformed rates or accumulations: read as pysteps'
    to_rainrate reads them. A threshold of 0 dBR (1 mm/h) was taken for "none" (dry pixels at 0.32 mm/h), and a
    dB-transformed accumulation was read as plain mm (values around -244 mm/h)."""
    from pysteps.io.importers import import_knmi_hdf5
    from pysteps.utils.conversion import to_rainrate
    from pysteps.utils.transformation import dB_transform

    def rate_db(path, **kw):
        r, q, m = import_knmi_hdf5(path)
        r, m = to_rainrate(r, m)
        r, m = dB_transform(r, m, threshold=1.0)
        return r, q, m

    def mm_db(path, **kw):
        r, q, m = import_knmi_hdf5(path)
        r, m = dB_transform(r, m)
        return r, q, m

    f = knmi2010[36]
    for imp in (rate_db, mm_db):
        r, _, m = imp(f)
        expect, _ = to_rainrate(r, m)
        got = read_radar(f, importer=imp).values[0].astype(float)
        np.testing.assert_allclose(got, expect, rtol=1e-4, atol=1e-6, equal_nan=True)


def test_importer_failure_is_a_read_error(tmp_path):
    import h5py

    bad = tmp_path / "broken.h5"
    with h5py.File(bad, "w") as f:
        f.create_group("image1")
        f.create_group("overview")
    with pytest.raises(ReadError, match="knmi_hdf5"):
        read_radar(bad)


# ----------------------------------------------------------------------------------------------- npz
def test_npz_reader(tmp_path):
    rng = np.random.default_rng(0)
    precip = rng.gamma(0.5, 1.0, size=(3, 8, 10))
    precip[:, 0, 0] = np.nan
    path = tmp_path / "seq.npz"
    np.savez(
        path,
        precip=precip,
        time=np.array(["2020-01-01T00:10", "2020-01-01T00:00", "2020-01-01T00:05"]),
        unit="mm",
        accutime=5.0,
        projection="+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752",
        x1=0.0, x2=10000.0, y1=-8000.0, y2=0.0, xpixelsize=1000.0, ypixelsize=1000.0, yorigin="upper",
        institution="test",
    )
    da = read_radar(path)
    assert da.attrs["importer"] == "npz" and da.shape == (3, 8, 10)
    assert str(da.time.values[0])[:16] == "2020-01-01T00:00"
    np.testing.assert_allclose(da.values[0], precip[1] * 12, rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(da.x.values, 500.0 + 1000.0 * np.arange(10))
    np.testing.assert_allclose(da.y.values, -500.0 - 1000.0 * np.arange(8))
    # datetime64 times, default unit mm/h, no georeference
    p2 = tmp_path / "plain.npz"
    np.savez(p2, precip=precip[0], time=np.array(["2021-05-01T12:00"], dtype="datetime64[s]"))
    d2 = read_radar(p2, importer="npz")
    assert d2.shape == (1, 8, 10) and d2.attrs["source_unit"] == "mm/h"
    np.testing.assert_allclose(d2.values[0], precip[0], rtol=1e-6, equal_nan=True)
    p3 = tmp_path / "notime.npz"
    np.savez(p3, precip=precip)
    with pytest.raises(ReadError, match="time"):
        read_radar(p3)


# -------------------------------------------------------------------------------------------- netCDF
@pytest.mark.realdata
def test_write_read_nowcast_round_trip(knmi6, tmp_path):
    from pyproj import CRS

    obs = knmi6
    rng = np.random.default_rng(1)
    nowcast = np.abs(rng.normal(0, 2, size=(3,) + obs.shape[1:])).astype(np.float32)
    nowcast[:, :10, :10] = np.nan
    velocity = rng.normal(0, 1, size=(2,) + obs.shape[1:]).astype(np.float32)
    ref = obs.time.values[-1]
    path = tmp_path / "nowcast.nc"
    out = write_nowcast(
        path, torch.from_numpy(nowcast), reference_time=ref, timestep=5, like=obs, velocity=velocity,
        model="extrapolation", attrs={"comment": "test"},
    )
    assert out == str(path) and path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["nowcast.nc"]  # no temporary file left

    da, vel = read_nowcast(path, with_velocity=True)
    assert da.dims == ("lead_time", "y", "x") and da.name == "precip_rate"
    np.testing.assert_array_equal(da.values, nowcast)
    np.testing.assert_array_equal(da.lead_time.values, [5.0, 10.0, 15.0])
    assert np.array_equal(da.time.values, ref + np.array([5, 10, 15], "timedelta64[m]"))
    np.testing.assert_allclose(da.x.values, obs.x.values)
    np.testing.assert_allclose(da.y.values, obs.y.values)
    assert da.attrs["units"] == "mm/h" and da.attrs["model"] == "extrapolation" and da.attrs["comment"] == "test"
    assert da.attrs["timestep"] == 5 and da.attrs["Conventions"] == "CF-1.8"
    assert da.attrs["source"].startswith("skydiff ") and "KNMI" in da.attrs["institution"]
    assert da.attrs["projection"] == obs.attrs["projection"]
    np.testing.assert_array_equal(vel.values, velocity)
    assert list(vel.component.values) == ["x", "y"]
    assert read_nowcast(path).shape == nowcast.shape

    # CF structure, read raw
    with xr.open_dataset(path, decode_times=False, decode_timedelta=False) as ds:
        v = ds["precip_rate"]
        assert v.attrs["units"] == "mm h-1" and v.attrs["grid_mapping"] == "crs"
        assert v.encoding["zlib"] and np.isnan(v.encoding["_FillValue"])
        assert ds["lead_time"].attrs["standard_name"] == "forecast_period"
        assert ds["time"].attrs["standard_name"] == "time" and ds["time"].dims == ("lead_time",)
        assert ds["forecast_reference_time"].attrs["standard_name"] == "forecast_reference_time"
        assert ds["x"].attrs["standard_name"] == "projection_x_coordinate" and ds["x"].attrs["units"] == "m"
        assert ds["y"].attrs["standard_name"] == "projection_y_coordinate"
        crs = ds["crs"].attrs
        assert crs["grid_mapping_name"] == "polar_stereographic"
        assert CRS.from_wkt(crs["crs_wkt"]).equals(CRS.from_proj4(obs.attrs["projection"]))
        assert crs["spatial_ref"] == crs["crs_wkt"] and crs["proj4_params"] == obs.attrs["projection"]
        assert "pixels per time step" in ds["velocity_x"].attrs["long_name"]
        for key in ("Conventions", "title", "institution", "source", "model", "history"):
            assert key in ds.attrs

    # read_radar reads nowcast files as observations (valid times)
    back = read_radar(path)
    assert back.attrs["importer"] == "netcdf" and back.dims == ("time", "y", "x")
    np.testing.assert_array_equal(back.values, nowcast)
    assert np.array_equal(back.time.values, da.time.values)
    np.testing.assert_allclose(back.x.values, obs.x.values)
    assert back.attrs["projection"] == obs.attrs["projection"]


@pytest.mark.realdata
def test_read_radar_generic_cf_netcdf(knmi6, tmp_path):
    sub = knmi6.isel(time=slice(0, 2), y=slice(284, 300), x=slice(225, 245))
    path = tmp_path / "obs.nc"
    sub.to_netcdf(path)
    da = read_radar(path)
    np.testing.assert_array_equal(da.values, sub.values)
    assert np.array_equal(da.time.values, sub.time.values)
    np.testing.assert_allclose(da.y.values, sub.y.values)
    assert da.attrs["projection"] == sub.attrs["projection"] and da.attrs["timestep"] == 5
    # stored as (time, x, y): read by the dimensions' names, not their order (it came back transposed, the x
    # values labelled y)
    path_xy = tmp_path / "obs_xy.nc"
    sub.transpose("time", "x", "y").to_netcdf(path_xy)
    xy = read_radar(path_xy)
    assert xy.dims == ("time", "y", "x") and xy.shape == sub.shape
    np.testing.assert_array_equal(xy.values, sub.values)
    np.testing.assert_allclose(xy.x.values, sub.x.values)


def test_write_nowcast_validation_and_defaults(tmp_path):
    field = np.zeros((2, 4, 5), np.float32)
    path = tmp_path / "plain.nc"
    write_nowcast(path, field, reference_time="2020-01-01T00:00:00", timestep=10, leadtimes=[10, 30])
    da = read_nowcast(path)
    np.testing.assert_array_equal(da.lead_time.values, [10.0, 30.0])
    assert str(da.time.values[1])[:16] == "2020-01-01T00:30" and da.attrs["projection"] == ""
    da2, vel = read_nowcast(path, with_velocity=True)
    assert vel is None
    with pytest.raises(ShapeError):
        write_nowcast(tmp_path / "a.nc", np.zeros((2, 2, 4, 5)), reference_time="2020-01-01", timestep=5)
    with pytest.raises(ShapeError):
        write_nowcast(tmp_path / "b.nc", field, reference_time="2020-01-01", timestep=5, leadtimes=[5])
    with pytest.raises(ShapeError):
        write_nowcast(tmp_path / "c.nc", field, reference_time="2020-01-01", timestep=5, velocity=np.zeros((2, 3, 3)))
    with pytest.raises(InputError):
        write_nowcast(tmp_path / "d.nc", field, reference_time="2020-01-01", timestep=0)
    with pytest.raises(InputError):
        write_nowcast(tmp_path / "e.nc", field, reference_time="not a time", timestep=5)
    with pytest.raises(ReadError):
        read_nowcast(tmp_path / "missing.nc")
    for bad in (None, np.array([["a", "b"]])):
        with pytest.raises(InputError, match="numeric"):
            write_nowcast(tmp_path / "f.nc", bad, reference_time="2020-01-01", timestep=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.nc"]
    if os.name == "posix" and os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="permission denied"):
            write_nowcast(locked / "g.nc", field, reference_time="2020-01-01", timestep=5)


def test_write_nowcast_atomic(tmp_path, monkeypatch):
    path = tmp_path / "nc.nc"
    first = np.ones((2, 4, 5), np.float32)
    write_nowcast(path, first, reference_time="2020-01-01T00:00", timestep=5)
    before = path.read_bytes()
    with pytest.raises(InputError, match="already exists"):
        write_nowcast(path, 2 * first, reference_time="2020-01-01T00:00", timestep=5)
    assert path.read_bytes() == before

    original = sk_netcdf._write_variables

    def failing(nc, content):
        original(nc, content)  # a complete-looking file, then a crash before it is closed
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(sk_netcdf, "_write_variables", failing)
    with pytest.raises(RuntimeError, match="simulated"):
        write_nowcast(path, 3 * first, reference_time="2020-01-01T00:00", timestep=5, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["nc.nc"]
    monkeypatch.setattr(sk_netcdf, "_write_variables", original)

    path.chmod(0o640)  # a replaced file keeps its permissions (skydiff.io.atomic_path)
    write_nowcast(path, 4 * first, reference_time="2020-01-01T00:00", timestep=5, overwrite=True)
    np.testing.assert_array_equal(read_nowcast(path).values, 4 * first)
    assert [p.name for p in tmp_path.iterdir()] == ["nc.nc"]
    assert path.stat().st_mode & 0o777 == 0o640


# ------------------------------------------------------------------------------------------ speed, MRMS
@pytest.mark.realdata
def test_read_all_knmi2010_quickly(knmi2010):
    t0 = time.perf_counter()
    da = read_radar(knmi2010, progress=True)
    elapsed = time.perf_counter() - t0
    assert da.shape == (92, 765, 700) and da.attrs["n_gaps"] == 0
    assert str(da.time.values[-1])[:16] == "2010-08-26T07:35"
    assert elapsed < 30.0, f"reading 92 KNMI files took {elapsed:.1f} s"


@pytest.mark.realdata
def test_mrms_grib_one_file(shared_data):
    pytest.importorskip("pygrib")
    files = sorted((shared_data / "radar" / "mrms").rglob("PrecipRate_*.grib2"))
    if not files:
        pytest.skip("MRMS files not found in the shared data")
    da = read_radar(files[0], window_size=4)
    assert da.shape == (1, 875, 1750) and da.attrs["importer"] == "mrms_grib"
    assert da.attrs["cartesian_unit"] == "degrees" and np.isclose(da.attrs["xpixelsize"], 0.04)
    assert str(da.time.values[0])[:19] == "2019-06-10T00:00:00"
    assert da.y.values[0] > da.y.values[-1] and -130 < da.x.values[0] < -129.9
    v = da.values[np.isfinite(da.values)]
    assert v.min() >= 0 and v.max() > 10


def _write_odim(path: Path, date: str, hhmmss: str, quantity: str = "DBZH") -> np.ndarray:
    """A minimal ODIM_H5 composite (10 x 12, LAEA) with uint8 data."""
    import h5py
    from pyproj import Proj

    proj = "+proj=laea +lat_0=55 +lon_0=10 +x_0=1950000 +y_0=-2100000 +ellps=WGS84"
    pr = Proj(proj)
    ll_lon, ll_lat = pr(0.0, 0.0, inverse=True)
    ur_lon, ur_lat = pr(12000.0, 10000.0, inverse=True)
    raw = np.arange(120, dtype=np.uint8).reshape(10, 12)
    raw[0, 0] = 255  # nodata
    with h5py.File(path, "w") as f:
        f.create_group("what").attrs.update(
            {"date": np.bytes_(date), "time": np.bytes_(hhmmss), "object": np.bytes_("COMP"),
             "source": np.bytes_("ORG:247")}
        )
        f.create_group("where").attrs.update(
            {"projdef": np.bytes_(proj), "LL_lat": ll_lat, "LL_lon": ll_lon, "UR_lat": ur_lat, "UR_lon": ur_lon,
             "xscale": 1000.0, "yscale": 1000.0, "xsize": 12, "ysize": 10}
        )
        d = f.create_group("dataset1").create_group("data1")
        d.create_group("what").attrs.update(
            {"quantity": np.bytes_(quantity), "gain": 0.5, "offset": -32.0, "nodata": 255.0, "undetect": 0.0}
        )
        d.create_dataset("data", data=raw)
    return raw


def test_odim_detection(tmp_path):
    raws = [_write_odim(tmp_path / f"comp_{i}.h5", "20240101", f"00{5 * i:02d}00") for i in range(2)]
    da = read_radar(sorted(tmp_path.glob("*.h5")))
    assert da.attrs["importer"] == "odim_hdf5" and da.attrs["source_unit"] == "dBZ"
    assert np.array_equal(da.time.values, np.array(["2024-01-01T00:00", "2024-01-01T00:05"], "datetime64[ns]"))
    ref = dbz_to_rainrate(raws[0] * 0.5 - 32.0)
    ref[0, 0] = np.nan
    ref[raws[0] == 0] = dbz_to_rainrate(-30.0)  # pysteps' undetect value for DBZH
    np.testing.assert_allclose(da.values[0], ref.astype(np.float32), rtol=1e-5, equal_nan=True)
    assert np.isclose(da.attrs["xpixelsize"], 1000.0) and da.attrs["yorigin"] == "upper"


# ------------------------------------------------------------------------------------------ audit of 2026-11-29
def test_write_nowcast_takes_a_dataarrays_own_layout_and_lead_times(tmp_path):
    """A selection of lead times written back was relabelled 5, 10, 15 ...; a square (lead_time, x, y) array was
    written transposed; metadata of a nowcast read back was dropped on a second write."""
    t0 = np.datetime64("2021-01-01T00:00")
    data = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    path = tmp_path / "a.nc"
    write_nowcast(path, data, reference_time=t0, timestep=5, model="lupin")
    nc = read_nowcast(path)
    nc.attrs["observation_files"] = "f1\nf2"
    sub = nc.isel(lead_time=[0, 2])
    write_nowcast(tmp_path / "sel.nc", sub, reference_time=t0, timestep=5)
    back = read_nowcast(tmp_path / "sel.nc")
    assert list(back.lead_time.values) == [5.0, 15.0]
    assert str(back.time.values[1])[:16] == "2021-01-01T00:15"
    assert back.attrs["model"] == "lupin" and back.attrs["observation_files"] == "f1\nf2"
    sq = xr.DataArray(np.arange(9.0).reshape(1, 3, 3), dims=("lead_time", "x", "y"),
                      coords={"x": [0.0, 1.0, 2.0], "y": [12.0, 11.0, 10.0]})
    write_nowcast(tmp_path / "sq.nc", sq, reference_time=t0, timestep=5)
    assert read_nowcast(tmp_path / "sq.nc").sel(x=2.0, y=10.0).item() == sq.sel(x=2.0, y=10.0).item()
    with xr.open_dataset(path) as raw:  # pixel indices (no like): no projection standard_name (CF)
        assert "standard_name" not in raw["x"].attrs and raw["x"].attrs["units"] == "1"
    with pytest.raises(InputError, match="the number 5"):
        write_nowcast(tmp_path / "n.nc", data, reference_time=5, timestep=5)
    with pytest.raises(ShapeError, match="empty grid"):
        write_nowcast(tmp_path / "e.nc", np.ones((2, 0, 5)), reference_time=t0, timestep=5)
    # like= on a DataArray nowcast of another grid (here flipped): its values were written on like's coordinates
    like = xr.DataArray(np.zeros((1, 3, 3)), dims=("time", "y", "x"), coords={"x": [0.0, 1.0, 2.0],
                                                                             "y": [10.0, 11.0, 12.0]})
    with pytest.raises(InputError, match="nowcast's y coordinate .*differs from like's"):
        write_nowcast(tmp_path / "f.nc", sq.transpose("lead_time", "y", "x"), reference_time=t0, timestep=5,
                      like=like)
    assert not (tmp_path / "f.nc").exists()
    write_nowcast(tmp_path / "g.nc", sq.transpose("lead_time", "y", "x").sortby("y"), reference_time=t0,
                  timestep=5, like=like)
    assert read_nowcast(tmp_path / "g.nc").sel(x=2.0, y=10.0).item() == sq.sel(x=2.0, y=10.0).item()


def test_masked_arrays_are_no_data_in_unit_conversions_and_writes(tmp_path):
    """A masked array (netCDF4 gives one for a field with a fill value) was converted and written with its fill
    values as data: a masked dBZ pixel became rain, a masked 9.97e36 accumulation 1.2e38 mm/h."""
    from skydiff.io import dbz_to_rainrate, to_rainrate

    m = np.ma.masked_array([[30.0, 40.0], [0.0, 0.0]], mask=[[0, 0], [1, 1]])
    r = dbz_to_rainrate(m)
    assert np.isnan(r[1]).all() and np.isfinite(r[0]).all()
    np.testing.assert_array_equal(to_rainrate(np.ma.masked_array([1.0, 9.97e36], mask=[0, 1]), "mm", accutime=5),
                                  [12.0, np.nan])
    write_nowcast(tmp_path / "m.nc", np.ma.masked_array([[[1.0, 9.97e36]]], mask=[[[0, 1]]]),
                  reference_time="2021-01-01", timestep=5)
    back = read_nowcast(tmp_path / "m.nc").values
    assert back[0, 0, 0] == 1.0 and np.isnan(back[0, 0, 1])


def test_write_nowcast_with_a_km_grid_writes_a_metre_projection(tmp_path):
    """like in km (pysteps' KNMI metadata): x/y were scaled to metres but the km-scaled ellipsoid kept, which put
    the pixels near the South Pole."""
    from pyproj import Proj

    proj_km = "+proj=stere +lat_0=90 +lon_0=0.0 +lat_ts=60.0 +a=6378.137 +b=6356.752 +x_0=0 +y_0=0"
    like = xr.DataArray(np.zeros((1, 2, 3)), dims=("time", "y", "x"),
                        coords={"x": [0.5, 1.5, 2.5], "y": [-3650.5, -3651.5]},
                        attrs={"cartesian_unit": "km", "projection": proj_km, "xpixelsize": 1.0, "ypixelsize": 1.0})
    write_nowcast(tmp_path / "km.nc", np.zeros((1, 2, 3)), reference_time="2021-01-01", timestep=5, like=like)
    nc = read_nowcast(tmp_path / "km.nc")
    lon, lat = Proj(nc.attrs["projection"])(float(nc.x[0]), float(nc.y[0]), inverse=True)
    assert float(nc.x[0]) == 500.0 and abs(lat - 55.97) < 0.05


def test_read_radar_refuses_a_nowcast_among_observations(tmp_path):
    """A nowcast written beside its (npz, mm/h) input frames was read as more observation frames."""
    t0 = np.datetime64("2021-01-01T00:00")
    for k in range(3):
        np.savez(tmp_path / f"obs{k}.npz", precip=np.full((1, 4, 5), float(k), np.float32),
                 time=np.array([t0 + np.timedelta64(5 * k, "m")]), x=np.arange(5.0), y=np.arange(4.0)[::-1])
    try:
        obs = read_radar(tmp_path)
    except ReadError:
        pytest.skip("the npz layout of this test is not one read_radar reads")
    write_nowcast(tmp_path / "nowcast.nc", obs.values[-1:], reference_time=obs.time.values[-1], timestep=5, like=obs)
    with pytest.raises(InputError, match="nowcasts"):
        read_radar(tmp_path)
    assert read_radar(tmp_path / "nowcast.nc").sizes["time"] == 1  # on its own it is read (valid times)


def test_resample_time_checks_max_gap_and_clears_the_gap_list():
    t = np.datetime64("2021-01-01T00:00") + np.array([0, 2, 4, 64, 66], "timedelta64[m]")
    da = xr.DataArray(np.ones((5, 3, 3), np.float32), dims=("time", "y", "x"), coords={"time": t},
                      attrs={"units": "mm/h", "timestep": 2, "n_gaps": 1, "gaps": "2021-01-01T00:06:00"})
    for bad in (float("nan"), "x", -5):
        with pytest.raises(InputError, match="max_gap"):
            resample_time(da, 5, max_gap=bad)
    with pytest.raises(TimeGapError):
        resample_time(da, 5)
    r = resample_time(da.isel(time=slice(0, 3)), 2)
    assert r.attrs["n_gaps"] == 0 and r.attrs["gaps"] == ""


def test_resample_time_names_the_times_it_fills_across_a_gap():
    """A missing frame was made up by interpolation (default max_gap = twice the step) and the gap record cleared,
    with no trace of which time was invented."""
    t = np.datetime64("2010-08-26T03:20") + np.array([0, 5, 10, 20, 25], "timedelta64[m]")  # 03:35 missing
    da = xr.DataArray(np.ones((5, 3, 3), np.float32), dims=("time", "y", "x"), coords={"time": t},
                      attrs={"units": "mm/h", "timestep": 5, "n_gaps": 1, "gaps": "2010-08-26T03:35:00"})
    with pytest.warns(SkydiffWarning, match="filled 1 time.*03:35:00"):
        r = resample_time(da, 5)
    assert r.attrs["bridged"] == "2010-08-26T03:35:00" and r.sizes["time"] == 6
    with pytest.raises(TimeGapError):
        resample_time(da, 5, max_gap=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resample_time(da.isel(time=slice(0, 3)), 5).attrs["bridged"] == ""
    with pytest.raises(InputError, match="minutes"):
        resample_time(da, True)
    # a start long before the frames: np.arange sized the targets in floating point and lost the last one
    t4 = np.datetime64("2010-08-26T05:00") + np.arange(4) * np.timedelta64(5, "m")
    da4 = xr.DataArray(np.zeros((4, 2, 2), np.float32), dims=("time", "y", "x"), coords={"time": t4})
    assert resample_time(da4, 5, start="2010-01-01").sizes["time"] == 4


def test_write_nowcast_checks_what_it_writes_as_mm_per_hour(tmp_path):
    """A dBZ DataArray was written as mm/h, 1e300 as inf, negative lead times went through (audit, sixteenth
    session)."""
    args = dict(reference_time="2021-01-01", timestep=5)
    dbz = xr.DataArray(np.full((2, 3, 3), 40.0), dims=("lead_time", "y", "x"), attrs={"units": "dBZ"})
    with pytest.raises(InputError, match="units 'dBZ'"):
        write_nowcast(tmp_path / "a.nc", dbz, **args)
    with pytest.raises(InputError, match="beyond float32"):
        write_nowcast(tmp_path / "b.nc", np.full((1, 3, 3), 1e300), **args)
    with pytest.raises(InputError, match=">= 0"):
        write_nowcast(tmp_path / "c.nc", np.zeros((2, 3, 3)), leadtimes=[-5, 5], **args)
    assert not list(tmp_path.iterdir())
    with pytest.warns(SkydiffWarning, match="negative rain"):
        write_nowcast(tmp_path / "d.nc", np.full((1, 3, 3), -1.0), **args)
    write_nowcast(tmp_path / "e.nc", dbz.assign_attrs(units="mm h-1"), **args)


def test_io_arguments_are_checked(tmp_path):
    """Raw ValueError/AttributeError/KeyError from netCDF4, numpy or xarray before."""
    from skydiff.io import crop_bbox

    args = dict(reference_time="2021-01-01", timestep=5)
    for kw, match in ((dict(velocity="abc"), "velocity"), (dict(leadtimes=["a", "b"]), "leadtimes"),
                      (dict(attrs={"a/b": 1}), "attribute names"), (dict(attrs={1: 1}), "attribute names")):
        with pytest.raises(InputError, match=match):
            write_nowcast(tmp_path / "x.nc", np.zeros((2, 3, 3)), **args, **kw)
    assert not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="DataArray with x and y"):
        crop_bbox(np.zeros((3, 3)), (0, 1, 0, 1))
    for kw, match in ((dict(zr_a="x"), "zr_a"), (dict(workers="a"), "workers")):
        with pytest.raises(InputError, match=match):
            read_radar(tmp_path, **kw)
    xr.Dataset({"precip_rate": (("lead_time", "y", "x"), np.zeros((1, 2, 2)))}).to_netcdf(tmp_path / "bare.nc")
    with pytest.raises(ReadError, match="no 'time' variable|no 'lead_time' variable"):
        read_nowcast(tmp_path / "bare.nc")


def test_own_readers_take_the_options_their_messages_name(tmp_path):
    """An npz/netCDF accumulation without an accumulation time said "pass accutime=..." but the option was ignored;
    unknown options were ignored too."""
    t = np.array([np.datetime64("2021-01-01T00:05")])
    np.savez(tmp_path / "mm.npz", precip=np.full((1, 3, 3), 0.5, np.float32), time=t, unit="mm",
             x=np.arange(3.0), y=np.arange(3.0)[::-1])
    with pytest.raises(ReadError, match="accutime"):
        read_radar(tmp_path / "mm.npz")
    da = read_radar(tmp_path / "mm.npz", accutime=5)
    np.testing.assert_allclose(da.values, 6.0)  # 0.5 mm in 5 min = 6 mm/h
    with pytest.raises(InputError, match="not colour"):
        read_radar(tmp_path / "mm.npz", accutime=5, colour="red")


def test_cf_times_in_real_valued_units_are_a_regular_series(tmp_path):
    """'hours since 1900-01-01' in steps of 5/60 decodes to 12:04:59.999999488 ...: the series was irregular
    (nowcasts refused, lead times unscored)."""
    import xarray as xr

    from skydiff.io import check_regular, read_radar
    from skydiff.io.netcdf import _nearest_ms

    t = 1084716 + np.arange(6) * 5 / 60
    ds = xr.Dataset({"precip_rate": (("time", "y", "x"), np.random.default_rng(0).random((6, 8, 9)).astype("f4"),
                                     {"units": "mm/h"})},
                    coords={"time": ("time", t, {"units": "hours since 1900-01-01", "calendar": "standard"}),
                            "y": np.arange(8.0)[::-1] * 1e3, "x": np.arange(9.0) * 1e3})
    ds.to_netcdf(tmp_path / "h.nc")
    da = read_radar(tmp_path / "h.nc")
    check_regular(da)
    assert str(da.time.values[1]) == "2023-09-29T12:05:00.000000000"
    old = np.array(["1969-12-31T23:59:59.998600000", "1969-12-31T23:59:59.998400000", "NaT"], "datetime64[ns]")
    assert [str(v) for v in _nearest_ms(old)] == ["1969-12-31T23:59:59.999000000", "1969-12-31T23:59:59.998000000",
                                                 "NaT"]


def _cf_rain(tmp_path, name, **kw):
    """A small CF rain file: precipitation (time, y, x) in mm/h with a grid mapping named 'proj'."""
    t = np.array(["2021-01-01T12:00", "2021-01-01T12:05", "2021-01-01T12:10"], "datetime64[ns]")
    data = np.random.default_rng(1).random((3, 6, 7)).astype("f4")
    ds = xr.Dataset({"precipitation": (("time", "y", "x"), data, {"units": "mm/h", "grid_mapping": "proj"}),
                     "proj": ((), 0, {"grid_mapping_name": "transverse_mercator"})},
                    coords={"time": t, "y": ("y", np.arange(6.0)[::-1] * 1e3, {"units": "m"}),
                            "x": ("x", np.arange(7.0) * 1e3, {"units": "m"})})
    ds = kw.get("edit", lambda d: d)(ds)
    ds.to_netcdf(tmp_path / name, encoding=kw.get("encoding"))
    return tmp_path / name, data, t


def test_cf_file_with_a_grid_mapping_named_proj_is_not_bom_rf3(tmp_path):
    """'precipitation' + 'proj' (a common grid-mapping name) was taken for pysteps' bom_rf3, which failed."""
    from skydiff.io.radar import _sniff

    path, data, t = _cf_rain(tmp_path, "a.nc")
    assert _sniff(str(path)).importer == "netcdf"
    da = read_radar(path)
    np.testing.assert_array_equal(da.values, data)
    np.testing.assert_array_equal(da.time.values, t)
    # a BoM-like file (2-D precipitation, valid_time) is still bom_rf3
    xr.Dataset({"precipitation": (("y", "x"), data[0], {"units": "mm"}), "proj": ((), 0),
                "valid_time": ((), 0, {"units": "seconds since 2021-01-01"})}).to_netcdf(tmp_path / "bom.nc")
    assert _sniff(str(tmp_path / "bom.nc")).importer == "bom_rf3"


def test_cf_time_not_first_scalar_time_and_other_calendars(tmp_path):
    from skydiff.io.netcdf import read_cf_frames

    # time stored last: moved first (was "cannot find the times ... along 'y'")
    path, data, t = _cf_rain(tmp_path, "tlast.nc", edit=lambda d: d.transpose("y", "x", "time"))
    got, times, _ = read_cf_frames(str(path))
    np.testing.assert_array_equal(got, data)
    np.testing.assert_array_equal(times, t)
    # one field with a scalar time: (1, y, x), several such files one series
    for i in range(3):
        _cf_rain(tmp_path, f"one{i}.nc", edit=lambda d, i=i: d.isel(time=i))
    da = read_radar(sorted(tmp_path.glob("one*.nc")))
    np.testing.assert_array_equal(da.values, data)
    np.testing.assert_array_equal(da.time.values, t)
    # a noleap calendar: the same dates, with a warning
    path, data, t = _cf_rain(tmp_path, "noleap.nc", encoding={"time": {"calendar": "noleap"}})
    with pytest.warns(SkydiffWarning, match="noleap"):
        got, times, _ = read_cf_frames(str(path))
    np.testing.assert_array_equal(times, t)
    # 360_day files: every date read as the same date (files anchored each at its own first date disagreed with
    # each other); across 31 January, which 360_day lacks, the standard series has a gap (warned)
    for name, start in (("m1.nc", "2000-01-30 23:50"), ("m2.nc", "2000-02-01 00:00")):
        xr.Dataset({"precipitation": (("time", "y", "x"), data[:2], {"units": "mm/h"})},
                   coords={"time": ("time", [0.0, 5.0], {"units": f"minutes since {start}", "calendar": "360_day"}),
                           "y": np.arange(6.0)[::-1], "x": np.arange(7.0)}).to_netcdf(tmp_path / name)
    with pytest.warns(SkydiffWarning, match="360_day"):
        da = read_radar([tmp_path / "m1.nc", tmp_path / "m2.nc"])
    assert [str(v)[:16] for v in da.time.values] == ["2000-01-30T23:50", "2000-01-30T23:55", "2000-02-01T00:00",
                                                      "2000-02-01T00:05"]
    # a date the standard calendar lacks: a clear error
    ds = xr.Dataset({"precipitation": (("time", "y", "x"), data, {"units": "mm/h"})},
                    coords={"time": ("time", [0.0, 5.0, 10.0], {"units": "minutes since 2021-02-30",
                                                             "calendar": "360_day"})})
    ds.to_netcdf(tmp_path / "d360.nc")
    with pytest.raises(ReadError, match="360_day"):
        read_cf_frames(str(tmp_path / "d360.nc"))


def test_a_file_named_twice_is_read_once_with_a_warning(tmp_path):
    path, data, _ = _cf_rain(tmp_path, "a.nc")
    with pytest.warns(SkydiffWarning, match="named more than once"):
        da = read_radar([path, tmp_path, str(tmp_path / "*.nc")])
    assert da.sizes["time"] == 3


def test_accumulation_without_accutime_names_the_cli_option(tmp_path):
    path, data, _ = _cf_rain(tmp_path, "acc.nc", edit=lambda d: d.assign(
        precipitation=d.precipitation.assign_attrs(units="mm")))
    with pytest.raises(ReadError, match="--importer-option accutime=MINUTES"):
        read_radar(path)
    np.testing.assert_allclose(read_radar(path, accutime=5).values, data * 12, rtol=1e-6)


def test_a_cf_variable_without_units_is_read_with_unit_given(tmp_path):
    path, data, _ = _cf_rain(tmp_path, "nounits.nc", edit=lambda d: d.rename(precipitation="rr").assign(
        rr=d.precipitation.assign_attrs(units=None).drop_attrs()))
    with pytest.raises(ReadError, match="unit="):
        read_radar(path, variable="rr")
    np.testing.assert_array_equal(read_radar(path, variable="rr", unit="mm/h").values, data)
    with pytest.raises(InputError, match="no precipitation unit"):
        read_radar(path, variable="rr", unit="furlongs")


def test_pysteps_importer_option_typos_are_refused(knmi2010):
    """pysteps' importers take **kwargs and ignore what they do not know: qyt="DBZH" read the accumulation."""
    files = [str(f) for f in knmi2010[:2]]
    assert read_radar(files, qty="ACRR", dtype="float32").sizes["time"] == 2
    with pytest.raises(InputError, match="not qyt"):
        read_radar(files, qyt="DBZH")


def test_unit_conversions_torch_values_and_defaults():
    """The torch path of rainrate_to_dbz was only gradchecked (a wrong log base passed), and to_rainrate's default
    Z-R exponent untested (mutation audit)."""
    from skydiff.io import to_rainrate

    r = np.array([0.1, 1.0, 7.5, 120.0])
    np.testing.assert_allclose(rainrate_to_dbz(torch.from_numpy(r)).numpy(), rainrate_to_dbz(r), rtol=1e-12)
    np.testing.assert_allclose(rainrate_to_dbz(torch.from_numpy(r), 300.0, 1.4).numpy(), rainrate_to_dbz(r, 300.0, 1.4))
    dbz = np.array([10.0, 30.0, 45.0])
    np.testing.assert_allclose(to_rainrate(dbz, "dBZ"), dbz_to_rainrate(dbz, 200.0, 1.6))
    np.testing.assert_allclose(to_rainrate(dbz, "dBZ"), (10 ** (dbz / 10) / 200.0) ** (1 / 1.6))


def test_resample_nearest_takes_the_nearer_frame():
    from skydiff.io import resample_time

    t = np.array(["2021-01-01T00:00", "2021-01-01T00:04", "2021-01-01T00:08"], "datetime64[ns]")
    da = xr.DataArray(np.arange(3.0)[:, None, None] * np.ones((3, 2, 2)), dims=("time", "y", "x"), coords={"time": t})
    out = resample_time(da, 3.0, method="nearest")  # 00:00, 00:03 (nearer 00:04), 00:06 (a tie: the earlier)
    assert out.values[:, 0, 0].tolist() == [0.0, 1.0, 1.0]


def test_a_3d_rain_variable_wins_over_a_2d_one_and_accutime_is_checked(tmp_path):
    path, data, _ = _cf_rain(tmp_path, "both.nc", edit=lambda d: d.rename(time="valid_time", precipitation="rr").assign(
        precip=(("y", "x"), np.ones((6, 7), "f4"), {"units": "mm/h"})).assign_coords(
        time=np.datetime64("2021-01-01T11:00")))
    assert read_radar(path).sizes["time"] == 3  # (a scalar time must not let a 2-D field compete with the 3-D one)
    for bad in ("5min", -5, 0, float("nan"), True):
        with pytest.raises(InputError, match="accutime must be a positive number"):
            read_radar(path, accutime=bad)


def test_bad_arguments_of_transforms_writers_and_resampling_are_skydiff_errors(tmp_path):
    """A NaN dBR threshold thresholded nothing; True was taken as 1 minute; a sub-nanosecond step divided by zero;
    attribute values netCDF cannot store failed inside netCDF4 (found by an audit)."""
    from skydiff.io import accumulation_to_rainrate, dbr_to_rainrate, resample_time

    with pytest.raises(InputError, match="threshold must be a number .*NaN"):
        dbr_to_rainrate([-12.0], threshold=np.nan)
    assert dbr_to_rainrate([-12.0, 3.0], threshold=-10.0)[0] == 0.0
    with pytest.raises(InputError, match="accutime must be a number of minutes, got True"):
        accumulation_to_rainrate([1.0], True)
    with pytest.raises(InputError, match="timestep must be a number of minutes, got True"):
        write_nowcast(tmp_path / "t.nc", np.zeros((1, 2, 2)), reference_time="2021-01-01", timestep=True)
    t = np.datetime64("2021-01-01T00:00", "ns") + np.arange(3) * np.timedelta64(5, "m")
    da = xr.DataArray(np.zeros((3, 2, 2)), dims=("time", "y", "x"), coords={"time": t})
    with pytest.raises(InputError, match="at least a nanosecond"):
        resample_time(da, 1e-12)
    for value in (2**70, [True, False], {"a": 1}, [], np.zeros((2, 2))):
        with pytest.raises(InputError, match="attrs values must be"):
            write_nowcast(tmp_path / "a.nc", np.zeros((1, 2, 2)), reference_time="2021-01-01", timestep=5,
                          attrs={"n": value})
    assert not (tmp_path / "a.nc").exists()
    write_nowcast(tmp_path / "b.nc", np.zeros((1, 2, 2)), reference_time="2021-01-01", timestep=5,
                  attrs={"n": 3, "f": 0.5, "s": "text", "v": [1, 2.5], "u": np.uint64(2**63), "peak": np.array(5.0),
                         "flag": True})
    with xr.open_dataset(tmp_path / "b.nc") as ds:
        assert ds.attrs["n"] == 3 and list(ds.attrs["v"]) == [1.0, 2.5]
        assert ds.attrs["peak"] == 5.0 and ds.attrs["flag"] == 1  # (a 0-d array, as da.max().values; a bool as 0/1)
