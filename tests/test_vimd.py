"""Tests of skydiff.downscale.moisture (vimd) / era5: analytic divergences and integrals, gradients, and the shared ERA5 days
(the three routes agree, the daily moisture budget roughly closes, bad input gives clear errors)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skydiff.downscale.era5 import read_era5, read_l137_table
from skydiff.downscale.era5 import vimd as era5_vimd
from skydiff.downscale.moisture import (
    EARTH_RADIUS,
    G,
    layer_thickness,
    model_level_pressure,
    moisture_flux,
    spherical_divergence,
    vimd,
)
from skydiff.errors import InputError, ReadError, ShapeError

LAT = np.linspace(55.0, 45.0, 11)  # decreasing, as in ERA5 files
LON = np.linspace(0.0, 10.0, 9)


# ------------------------------------------------------------------------------------------------------ analytic
def test_divergence_of_linear_fields_is_exact_with_era5_sign():
    phi = np.deg2rad(LAT)[:, None] * np.ones((1, LON.size))
    lam = np.deg2rad(LON)[None, :] * np.ones((LAT.size, 1))
    f0 = 250.0
    # Fx = F0 λ (eastward flux growing eastward: export, positive divergence)
    div = spherical_divergence(torch.tensor(f0 * lam), torch.zeros(LAT.size, LON.size, dtype=torch.float64), LAT, LON)
    np.testing.assert_allclose(div.numpy(), f0 / (EARTH_RADIUS * np.cos(phi)), rtol=1e-10)
    # Fy cos φ = F0 φ (northward flux growing northward)
    fy = torch.tensor(f0 * phi / np.cos(phi))
    div = spherical_divergence(torch.zeros_like(fy), fy, LAT, LON)
    np.testing.assert_allclose(div.numpy(), f0 / (EARTH_RADIUS * np.cos(phi)), rtol=1e-10)
    # non-divergent: Fx uniform, Fy ∝ 1/cos φ; float32 in -> float32 out; vimd() converts to per hour
    fy = torch.tensor(f0 / np.cos(phi), dtype=torch.float32)
    out = vimd(fx=torch.full_like(fy, 100.0), fy=fy, lat=LAT, lon=LON)
    assert out.dtype == torch.float32 and float(out.abs().max()) < 1e-5  # vs ~0.2 mm/h for the linear fields
    lin = vimd(fx=torch.tensor(f0 * lam), fy=torch.zeros(LAT.size, LON.size, dtype=torch.float64), lat=LAT, lon=LON)
    np.testing.assert_allclose(lin.numpy(), 3600 * f0 / (EARTH_RADIUS * np.cos(phi)), rtol=1e-10)


def test_vertical_integral_and_masking_below_ground():
    p = torch.tensor([300e2, 500e2, 700e2, 850e2, 1000e2], dtype=torch.float64)
    sp = torch.tensor([[1010e2, 800e2]], dtype=torch.float64)  # second column: 850 and 1000 hPa underground
    dp = layer_thickness(p, sp)
    np.testing.assert_allclose(dp[:, 0, 0].numpy(), [100e2, 200e2, 175e2, 150e2, 85e2])
    np.testing.assert_allclose(dp[:, 0, 1].numpy(), [100e2, 200e2, 175e2, 25e2, 0.0])
    # uniform q, u: F = q u (sp - p_top) / g
    q = torch.full((5, 1, 2), 0.005, dtype=torch.float64)
    u = torch.full((5, 1, 2), 10.0, dtype=torch.float64)
    fx, fy = moisture_flux(q, u, -u, p, sp)
    np.testing.assert_allclose(fx.numpy(), 0.05 * (sp.numpy() - 300e2) / G)
    np.testing.assert_allclose(fy.numpy(), -fx.numpy())
    with pytest.raises(InputError, match="ordered from the top"):
        layer_thickness(p.flip(0), sp)


def test_model_level_pressure_from_l137(shared_data):
    a, b = read_l137_table(shared_data / "era5" / "era5_L137_model_level_table.csv")
    assert a.shape == b.shape == (138,)
    sp = torch.full((1, 1), 101325.0, dtype=torch.float64)
    p = model_level_pressure(sp, [1, 137], a, b)
    # ECMWF's table: pf = 0.0100 hPa (level 1) and 1012.0494 hPa (level 137) for sp = 1013.25 hPa
    np.testing.assert_allclose(p[:, 0, 0].numpy() / 100, [0.0100, 1012.0494], atol=2e-4)
    with pytest.raises(InputError, match="1 … 137"):
        model_level_pressure(sp, [0, 10], a, b)
    # the coefficients shipped in the package (the default) are ECMWF's table
    a0, b0 = read_l137_table()
    np.testing.assert_array_equal(a0, a)
    np.testing.assert_array_equal(b0, b)


def test_model_level_vimd_needs_no_data_folder(shared_data, monkeypatch):
    monkeypatch.setenv("SKYDIFF_DATA", "/nonexistent")
    ds = read_era5(shared_data / "era5" / "model-levels-2022-08-31")
    v = era5_vimd(ds.isel(time=slice(0, 1)))
    assert np.isfinite(np.asarray(v)).all()


def test_vimd_gradcheck():
    g = torch.Generator().manual_seed(0)
    shape = (4, 5, 6)
    q = (0.004 + 0.001 * torch.rand(shape, generator=g, dtype=torch.float64)).requires_grad_()
    u = (5 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    v = (5 * torch.randn(shape, generator=g, dtype=torch.float64)).requires_grad_()
    sp = (950e2 + 100e2 * torch.rand(5, 6, generator=g, dtype=torch.float64)).requires_grad_()
    p = torch.tensor([300e2, 600e2, 900e2, 1000e2], dtype=torch.float64)
    lat, lon = np.linspace(50, 48.75, 5), np.linspace(0, 1.25, 6)

    def f(q, u, v, sp):
        return vimd(q, u, v, p=p, sp=sp, lat=lat, lon=lon) / 100.0

    assert torch.autograd.gradcheck(f, (q, u, v, sp))


def test_tensor_input_errors():
    x = torch.zeros(3, 4, 5)
    with pytest.raises(InputError, match="lat and lon"):
        vimd(x, x, x, p=[1e4, 5e4, 9e4])
    with pytest.raises(InputError, match="missing p"):
        vimd(x, x, x, lat=np.arange(4.0), lon=np.arange(5.0))
    with pytest.raises(ShapeError, match="levels"):
        vimd(x, x, x, p=[1e4, 5e4], lat=np.arange(4.0), lon=np.arange(5.0))
    with pytest.raises(ShapeError, match="match the grid"):
        vimd(fx=x[0], fy=x[0], lat=np.arange(3.0), lon=np.arange(5.0))


# ------------------------------------------------------------------------------------------------------ ERA5 days
@pytest.fixture(scope="module")
def era5(shared_data):
    root = shared_data / "era5"
    if not (root / "fluxes").is_dir():
        pytest.skip("ERA5 sample days not in the shared data")
    return root


def _daily_budget(ds, v):
    """Domain means over the day, mm: -VIMD (sum of hourly rates), P, E, storage change."""
    storage = ds["tcw"] if "tcw" in ds else ds["s_upper"] + ds["s_lower"]
    return (
        float(-v.sum("time").mean()),
        float(ds["tp"].sum("time").mean()),
        float(-ds["e"].sum("time").mean()),
        float((storage.isel(time=-1) - storage.isel(time=0)).mean()),
    )


def test_read_era5_units(era5):
    ds = read_era5(era5 / "model-levels-2022-08-31")
    assert ds.attrs["level_type"] == "model" and ds["tp"].attrs["units"] == "mm h-1"
    assert float(ds["tp"].max()) == pytest.approx(6.33, abs=0.01)  # reference note: 6.33 mm/h at 0.25°
    assert float(ds["tp"].min()) >= 0.0
    assert float(ds["e"].min()) == pytest.approx(-0.47, abs=0.01)  # e is -4.7e-4 m at the most, ERA5 sign kept
    assert read_era5(era5 / "pressure-levels-2020-01-01").attrs["level_type"] == "pressure"


def test_model_levels_vs_fluxes_2022(era5):
    ml = read_era5(era5 / "model-levels-2022-08-31")
    fl = read_era5(era5 / "fluxes" / "2022-08-31_fluxes_storages.nc")
    vm, vf = era5_vimd(ml), era5_vimd(fl)
    assert vm.attrs["route"] == "model" and vf.attrs["route"] == "flux"
    assert vm.shape == (24, 41, 41)
    corr = np.corrcoef(vm.values.ravel(), vf.values.ravel())[0, 1]
    assert corr > 0.99
    # moisture budget over the day: -VIMD = P - E + dW (within 40 %, same sign)
    mv, p, e, ds = _daily_budget(fl, vm)
    assert np.sign(mv) == np.sign(p - e + ds) and abs(mv - (p - e + ds)) < 0.4 * abs(mv)
    # convergence goes with rain: negative correlation of VIMD with TP on daily sums
    r = np.corrcoef(vm.sum("time").values.ravel(), ml["tp"].sum("time").values.ravel())[0, 1]
    assert r < 0


def test_pressure_levels_2020_budget_and_routes(era5):
    pl = read_era5(era5 / "pressure-levels-2020-01-01")
    fl = read_era5(era5 / "fluxes" / "2020-01-01_fluxes_storages.nc")
    vp, vf = era5_vimd(pl), era5_vimd(fl)
    assert vp.attrs["route"] == "pressure"
    assert np.corrcoef(vp.values.ravel(), vf.values.ravel())[0, 1] > 0.95
    # reference note (pressure levels, 2020-01-01): hourly mean -0.09, sd 0.30
    assert float(vp.mean()) == pytest.approx(-0.09, abs=0.05) and float(vp.std()) == pytest.approx(0.30, abs=0.05)
    mv, p, e, dw = _daily_budget(pl, vp)
    assert mv > 0 and abs(mv - (p - e + dw)) < 0.3 * mv


def test_flux_budget_west_africa(era5):
    fl = read_era5(era5 / "fluxes" / "1979-07-01_fluxes_storages.nc")
    mv, p, e, ds = _daily_budget(fl, era5_vimd(fl))
    assert abs(mv - (p - e + ds)) < 0.2 * abs(mv)


def test_era5_bad_input(era5, tmp_path):
    ml = read_era5(era5 / "model-levels-2022-08-31")
    with pytest.raises(InputError, match="lacks sp"):
        era5_vimd(ml.drop_vars("sp"))
    with pytest.raises(InputError, match="neither q, u, v"):
        era5_vimd(ml.drop_vars("q"))
    with pytest.raises(InputError, match="above the surface"):
        era5_vimd(ml.sel(level=[20, 40, 60, 80, 90]))
    pl = read_era5(era5 / "pressure-levels-2020-01-01")
    with pytest.raises(InputError, match="above the surface"):
        era5_vimd(pl.sel(level=[100, 200, 300, 400, 500]))
    with pytest.raises(InputError, match="300 hPa"):
        era5_vimd(pl.sel(level=[850, 900, 950, 1000]))
    with pytest.raises(InputError, match="route"):
        era5_vimd(pl, route="sigma")
    with pytest.raises(ReadError, match="not found"):
        era5_vimd(ml, table=tmp_path / "none.csv")
    with pytest.raises(ReadError, match="does not exist"):
        read_era5(tmp_path / "missing")
    with pytest.raises(ReadError, match="no .nc files"):
        read_era5(tmp_path)
    # the dataset route through skydiff.downscale.moisture.vimd gives the same
    np.testing.assert_allclose(vimd(pl).values, era5_vimd(pl).values)
    assert math.isfinite(float(era5_vimd(pl, route="pressure").mean()))


def test_package_level_vimd_stays_the_function_after_its_module_is_imported():
    # the function lived in a submodule of the same name, which replaced it on the package once imported
    import importlib
    import pkgutil
    import types

    import skydiff
    import skydiff.downscale as ds

    for m in pkgutil.walk_packages(skydiff.__path__, "skydiff."):
        importlib.import_module(m.name)
    kw = dict(fx=np.ones((3, 4)), fy=np.ones((3, 4)), lat=[50.0, 51.0, 52.0], lon=[0.0, 1.0, 2.0, 3.0])
    first, second = ds.vimd(**kw), ds.vimd(**kw)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(second))
    for pkg in [skydiff] + [importlib.import_module(m.name) for m in pkgutil.walk_packages(skydiff.__path__, "skydiff.")
                            if m.ispkg]:
        for name in getattr(pkg, "__all__", []):
            assert not isinstance(getattr(pkg, name, None), types.ModuleType), f"{pkg.__name__}.{name} is a module"


def test_moisture_flux_refuses_pressures_not_in_pa():
    q = np.full((3, 2, 2), 0.005)
    u = np.ones((3, 2, 2))
    hpa = np.array([500.0, 850.0, 1000.0])
    with pytest.raises(InputError, match="looks like hPa"):
        moisture_flux(q, u, u, hpa)
    with pytest.raises(InputError, match="sp must be in Pa"):
        moisture_flux(q, u, u, hpa * 100.0, sp=np.full((2, 2), 1013.0))
    fx, _ = moisture_flux(q, u, u, hpa * 100.0, sp=np.full((2, 2), 101300.0))
    assert float(fx.mean()) > 0


def test_spherical_divergence_says_it_wants_1d_coordinates():
    """2-D lat/lon grids were reported as "lat (256) and lon (256) must match the grid (16, 16)"."""
    from skydiff.downscale.moisture import spherical_divergence

    lat2, lon2 = np.meshgrid(np.linspace(50, 54, 16), np.linspace(0, 4, 16), indexing="ij")
    with pytest.raises(ShapeError, match="1-D coordinates"):
        spherical_divergence(np.ones((16, 16)), np.ones((16, 16)), lat2, lon2)


def test_moisture_flux_refuses_humidity_not_in_kg_per_kg():
    """q in g/kg gave a VIMD 1000 times too large, and negative humidity went through."""
    q = np.full((3, 2, 2), 0.005)
    u = np.ones((3, 2, 2))
    p = np.array([500e2, 850e2, 1000e2])
    with pytest.raises(InputError, match="looks like g/kg"):
        moisture_flux(q * 1000.0, u, u, p)
    with pytest.raises(InputError, match=">= 0 kg/kg"):
        moisture_flux(-q, u, u, p)
    small = q.copy()
    small[0, 0, 0] = -1e-6  # ERA5 rounding
    assert np.isfinite(np.asarray(moisture_flux(small, u, u, p)[0])).all()


# ------------------------------------------------------------------------------------------ audit of 2026-11-29
def test_divergence_across_the_date_line_or_greenwich_on_0_360():
    """Longitudes 359.5, 359.75, 0, 0.25: the step -359.75 collapsed the zonal derivative next to it."""
    from skydiff.downscale.moisture import spherical_divergence

    lat = np.array([50.0, 49.75, 49.5])
    fx = np.tile(np.arange(5.0) * 10, (3, 1))
    fy = np.zeros((3, 5))
    ref = spherical_divergence(fx, fy, lat, [-0.5, -0.25, 0.0, 0.25, 0.5])
    wrapped = spherical_divergence(fx, fy, lat, [359.5, 359.75, 0.0, 0.25, 0.5])
    torch.testing.assert_close(wrapped, ref)
    with pytest.raises(InputError, match="strictly increasing or decreasing"):
        spherical_divergence(fx, fy, lat[[0, 2, 1]], [0.0, 0.25, 0.5, 0.75, 1.0])
    half = spherical_divergence(torch.tensor(fx, dtype=torch.float16), torch.tensor(fy, dtype=torch.float16), lat,
                                [-0.5, -0.25, 0.0, 0.25, 0.5])  # R cos(phi) overflowed half precision: 0 everywhere
    torch.testing.assert_close(half.double(), ref, rtol=1e-3, atol=1e-9)


def test_p_top_clips_the_column_and_nan_below_ground_has_no_weight():
    from skydiff.downscale.moisture import layer_thickness, moisture_flux

    p = torch.tensor([1e4, 2e4, 3e4, 5e4, 8.5e4, 1e5], dtype=torch.float64)
    sp = torch.full((1, 1), 101325.0, dtype=torch.float64)
    dp = layer_thickness(p, sp, p_top=30000.0).ravel()
    assert dp[:2].abs().sum() == 0 and float(dp.sum()) == pytest.approx(101325.0 - 30000.0)
    with pytest.raises(InputError, match="p_top"):
        layer_thickness(p, sp, p_top="x")
    q = torch.full((6, 1, 1), 0.005, dtype=torch.float64)
    u = torch.full((6, 1, 1), 10.0, dtype=torch.float64)
    sp2 = torch.full((1, 1), 80000.0, dtype=torch.float64)  # the two lowest levels below ground
    ref = moisture_flux(q, u, u, p, sp2)[0]
    q[-2:] = float("nan")  # masked below ground, as pressure-level products do
    assert torch.equal(moisture_flux(q, u, u, p, sp2)[0], ref)
    with pytest.raises(InputError, match="sp"):
        moisture_flux(q, u, u, p, torch.full((1, 1), float("nan"), dtype=torch.float64))


def test_block_mean_all_nan_blocks_and_half_precision():
    from skydiff.downscale.data import block_mean

    x = np.full((2, 2), np.nan)
    assert np.isnan(block_mean(x, 2, min_valid=0.0)).all()
    assert torch.isnan(block_mean(torch.tensor(x), 2, min_valid=0.0)).all()  # was 0 mm/h (dry) on the torch path
    assert block_mean(np.full((4, 4), 30000, np.float16), 4)[0, 0] == 30000  # was inf (summed in float16)
    assert float(block_mean(torch.full((4, 4), 30000.0, dtype=torch.float16), 4)) == 30000


def test_read_era5_evaporation_units(shared_data, tmp_path):
    """e already in mm h-1 (read_era5's output written back) was multiplied by 1000 again; other units were relabelled
    mm h-1 unscaled."""
    src = shared_data / "era5" / "model-levels-2022-08-31"
    if not src.is_dir():
        pytest.skip("ERA5 model-level day not in the shared data")
    d = read_era5(src)
    if "e" not in d:
        pytest.skip("no evaporation in this ERA5 day")
    d[["tp", "e"]].to_netcdf(tmp_path / "rt.nc")
    back = read_era5(tmp_path / "rt.nc")
    np.testing.assert_allclose(back["e"].values, d["e"].values, rtol=1e-6)
    d2 = d[["tp", "e"]].copy()
    d2["e"] = d2["e"] / 3600.0
    d2["e"].attrs["units"] = "kg m**-2 s**-1"
    d2.to_netcdf(tmp_path / "flux.nc")
    np.testing.assert_allclose(read_era5(tmp_path / "flux.nc")["e"].values, d["e"].values, rtol=1e-5, atol=1e-9)
    d2["e"].attrs["units"] = "furlongs"
    d2.to_netcdf(tmp_path / "bad.nc")
    with pytest.raises(ReadError, match="units"):
        read_era5(tmp_path / "bad.nc")


def test_lowres_units_spelled_as_era5_writes_them_and_coarsen_checks():
    import xarray as xr

    from skydiff.downscale.interface import _rain_factor, coarsen_lowres

    assert _rain_factor("mtpr", {"units": "kg m**-2 s**-1"}) == 3600.0  # (was refused)
    assert _rain_factor("r", {"units": "mm h**-1"}) == 1.0
    with pytest.raises(InputError, match="DataArray"):
        coarsen_lowres(np.ones((4, 4)), 2)
    with pytest.raises(InputError, match="numbers"):
        coarsen_lowres(xr.DataArray(np.array([["a"] * 4] * 4), dims=("y", "x")), 2)


def test_era5s_own_vimd_is_read_directly(shared_data, tmp_path):
    """A single-level file with tp and ERA5's vimd (what era5_pairs reads) was refused by read_era5_lowres."""
    from skydiff.downscale.interface import read_era5_lowres

    src = shared_data / "era5" / "model-levels-2022-08-31"
    if not src.is_dir():
        pytest.skip("ERA5 model-level day not in the shared data")
    d = read_era5(src)
    v = era5_vimd(d)
    single = d[["tp"]].copy()
    single["vimd"] = v.copy()
    single["vimd"].attrs = {"units": "kg m**-2"}  # ERA5's hourly accumulation
    single.to_netcdf(tmp_path / "single.nc")
    _, vm = read_era5_lowres(tmp_path / "single.nc")
    np.testing.assert_allclose(np.asarray(vm), np.asarray(v), atol=1e-5)
    rate = d[["tp"]].copy()
    rate["mvimd"] = v / 3600.0
    rate["mvimd"].attrs = {"units": "kg m**-2 s**-1"}
    assert era5_vimd(rate).attrs["route"] == "direct"
    np.testing.assert_allclose(era5_vimd(rate).values, v.values, rtol=1e-6, atol=1e-9)
