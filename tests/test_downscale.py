"""Downscaling data, baselines, the downscale() product, the CLI, and the shipped weights on real test tiles."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from skydiff.downscale.baselines import (bicubic, match_block_means, smooth_block_means, spectral_truncate,
                                         spectral_zeropad)
from skydiff.downscale.data import TilePairs, block_mean, era5_pairs, radar_pairs, tile_grid
from skydiff.downscale.diffusion import EDMDownscaler
from skydiff.downscale.interface import downscale
from skydiff.errors import InputError, ShapeError
from skydiff.registry import create_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_model() -> EDMDownscaler:
    torch.manual_seed(0)
    # untrained: a small sigma_max keeps few-step sampling tame (steps=2 from sigma 80 overshoots wildly)
    m = create_model("edm-radar-tp", base_channels=8, mults=(1, 2), sigma_data=0.3, sigma_max=1.0)
    torch.nn.init.normal_(m.net.out.weight, std=0.01)
    return m.eval()


def rain(shape, seed=0):
    r = np.random.default_rng(seed).gamma(0.5, 2.0, size=shape).astype(np.float32)
    r[r < 0.5] = 0
    return r


# --------------------------------------------------------------------------- block_mean
def test_block_mean_values_and_types():
    x = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_allclose(block_mean(x, 2), [[2.5, 4.5], [10.5, 12.5]])
    t = torch.arange(32, dtype=torch.float32).reshape(2, 4, 4)
    out = block_mean(t, 2)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 2, 2) and out.dtype == torch.float32
    np.testing.assert_allclose(block_mean(t.numpy(), 4)[:, 0, 0], t.reshape(2, -1).mean(1).numpy())
    assert block_mean(np.ones((3, 5), np.int32), 1).dtype == np.float32


def test_block_mean_nan_aware():
    x = np.ones((4, 4), np.float32)
    x[0, 0] = np.nan  # 1 of 4 missing: mean of the valid 3
    x[2:, 2:] = np.nan  # whole block missing: NaN
    x[2, 0] = x[3, 0] = x[3, 1] = np.nan  # 3 of 4 missing: below min_valid 0.5 -> NaN
    out = block_mean(x, 2)
    assert out[0, 0] == 1 and np.isnan(out[1, 1]) and np.isnan(out[1, 0]) and out[0, 1] == 1
    assert np.isnan(block_mean(x, 2, min_valid=1.0)[0, 0])
    assert block_mean(x, 2, min_valid=0.25)[1, 0] == 1
    tt = block_mean(torch.from_numpy(x), 2)
    np.testing.assert_array_equal(np.isnan(tt.numpy()), np.isnan(out))


def test_block_mean_errors():
    with pytest.raises(ShapeError, match="not divisible"):
        block_mean(np.zeros((6, 8)), 4)
    with pytest.raises(ShapeError):
        block_mean(np.zeros(8), 2)
    with pytest.raises(InputError):
        block_mean(np.zeros((8, 8)), 0)
    # sixteenth-session audit: complex fields lost their imaginary part; a where= of the wrong grid raised torch's
    # RuntimeError
    with pytest.raises(InputError, match="real"):
        bicubic(np.ones((4, 4)) * (1 + 1j), 2)
    with pytest.raises(ShapeError, match="where has shape"):
        match_block_means(np.ones((8, 8)), np.ones((2, 2)), 4, where=np.ones((3, 3), bool))


def test_gradcheck_block_mean_and_spectral_ops():
    x = torch.rand(2, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: block_mean(a, 3), (x,))
    y = torch.rand(5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: spectral_zeropad(a, 3), (y,))
    assert torch.autograd.gradcheck(lambda a: spectral_truncate(a, 2), (x,))
    assert torch.autograd.gradcheck(lambda a: bicubic(a, 2), (y,))


# --------------------------------------------------------------------------- baselines
def test_baselines_shapes_and_constants():
    c = np.full((3, 5, 7), 2.5, np.float32)
    for fn in (bicubic, spectral_zeropad):
        out = fn(c, 4)
        assert isinstance(out, np.ndarray) and out.shape == (3, 20, 28)
        np.testing.assert_allclose(out, 2.5, rtol=1e-5)
    t = torch.from_numpy(c).double()
    assert spectral_zeropad(t, 3).dtype == torch.float64


def test_spectral_zeropad_is_exact_for_band_limited_fields():
    H, f = 48, 4
    j = torch.arange(H, dtype=torch.float64)
    fine = torch.cos(2 * np.pi * 3 * j / H)[:, None] * torch.sin(2 * np.pi * 2 * j / H)[None, :]
    cj = j[::f] + (f - 1) / 2  # coarse cell centres on the fine grid
    coarse = torch.cos(2 * np.pi * 3 * cj / H)[:, None] * torch.sin(2 * np.pi * 2 * cj / H)[None, :]
    torch.testing.assert_close(spectral_zeropad(coarse, f), fine)
    torch.testing.assert_close(spectral_truncate(fine, f), fine)
    # an odd factor keeps the coarse samples at the cell centres
    c = torch.randn(5, 7, dtype=torch.float64)
    torch.testing.assert_close(spectral_zeropad(c, 3)[1::3, 1::3], c)


def test_spectral_baselines_ring_into_negative_rain():
    hi = np.zeros((64, 64), np.float32)
    hi[20:41, 12:30] = 5.0  # a sharp-edged rain area in a dry field
    lo = block_mean(hi, 4)
    zp = spectral_zeropad(lo, 4)
    assert (zp < -0.01).mean() > 0.05  # Gibbs ringing: negative rain
    assert (spectral_truncate(hi, 4) < -0.01).mean() > 0.05
    assert (bicubic(lo, 4) < 0).any() and (bicubic(lo, 4, clamp=True) >= 0).all()


def test_match_block_means():
    fine = rain((3, 2, 8, 12), seed=1)
    fine[0, 0, :4, :4] = 0  # a dry block under a wet low-res value gets the value added uniformly
    lo = block_mean(rain((2, 8, 12), seed=2), 4) + 0.5
    out = match_block_means(fine, lo, 4)
    np.testing.assert_allclose(block_mean(out, 4), np.broadcast_to(lo, (3, 2, 2, 3)), rtol=1e-5)
    assert (out >= 0).all()
    np.testing.assert_allclose(out[0, 0, :4, :4], lo[0, 0, 0], rtol=1e-6)
    x = torch.rand(2, 4, 4, dtype=torch.float64, requires_grad=True)
    lo_t = torch.rand(2, 2, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: match_block_means(a, lo_t, 2), (x,))
    with pytest.raises(ShapeError):
        match_block_means(fine, lo[..., :2], 4)


def test_match_block_means_near_dry_block_stays_non_negative():
    # a block with a speck of rain below eps under a dry (or wet) low-res value: replaced by the low-res value,
    # never pushed below zero (adding lo - mean to the zeros of the block made them -mean)
    fine = torch.zeros(1, 4, 4, dtype=torch.float64)
    fine[0, 0, 0] = 8e-6  # block mean 5e-7 < eps = 1e-6
    out = match_block_means(fine, torch.zeros(1, 1, 1, dtype=torch.float64), 4)
    assert (out >= 0).all() and float(out.abs().max()) == 0.0
    out = match_block_means(fine, torch.full((1, 1, 1), 0.3, dtype=torch.float64), 4)
    torch.testing.assert_close(out, torch.full_like(fine, 0.3))


def test_smooth_block_means():
    # an additive offset of every block of a wet field is restored exactly as that offset (texture kept), where
    # rescaling the blocks (match_block_means) changes the texture's amplitude
    x = torch.from_numpy(rain((2, 8, 12), seed=3)).double() + 0.5
    lo = block_mean(x, 4) + 0.7
    y = smooth_block_means(x, lo, 4)
    torch.testing.assert_close(y, x + 0.7, rtol=0, atol=1e-9)
    assert not torch.allclose(match_block_means(x, lo, 4), x + 0.7, atol=1e-3)
    # dry pixels stay dry, a block dry in the fine field under rain becomes the low-res value, a dry low-res
    # block becomes dry, means are exact and nothing is negative
    f = rain((3, 8, 12), seed=4)
    f[f < 0.5] = 0.0
    f[0, :4, :4] = 0.0
    lo2 = block_mean(rain((3, 8, 12), seed=5), 4) + 0.2
    lo2[1, 1, 2] = 0.0
    out = smooth_block_means(f, lo2, 4)
    np.testing.assert_allclose(block_mean(out, 4), lo2, rtol=1e-5, atol=1e-6)
    assert (out >= 0).all()
    wet_blocks = np.kron(block_mean((f > 0).astype(np.float32), 4) > 0, np.ones((4, 4))).astype(bool)
    assert (out[(f == 0) & wet_blocks] == 0).all()
    np.testing.assert_allclose(out[0, :4, :4], lo2[0, 0, 0], rtol=1e-6)
    assert (out[1, 4:8, 8:12] == 0).all()
    # a block whose wet pixels the additive correction takes to 0 (a low-res mean far below the fine one) is
    # scaled, its dry pixels stay dry (it was filled uniformly: 35 of ~96 000 such dry pixels turned wet)
    gen = torch.Generator().manual_seed(0)
    g = torch.rand(200, 32, 32, generator=gen) ** 4 * 20
    g[g < 1.0] = 0.0
    lo3 = block_mean(g, 4) * torch.exp(torch.randn(200, 8, 8, generator=gen))  # block means off by random factors
    out3 = smooth_block_means(g, lo3, 4)
    torch.testing.assert_close(block_mean(out3, 4), lo3, rtol=1e-5, atol=1e-5)
    in_wet_blocks = (block_mean((g > 0).float(), 4) > 0).repeat_interleave(4, -2).repeat_interleave(4, -1)
    assert not bool(((out3 > 0) & (g == 0) & in_wet_blocks).any())
    # differentiable in the fine field and the low-res values (a wet field away from the clamp at 0)
    xt = (torch.rand(1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 1.0).requires_grad_()
    lt = (torch.rand(1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) + 1.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: smooth_block_means(a, b, 4, iterations=3), (xt, lt))
    with pytest.raises(ShapeError):
        smooth_block_means(f, lo2[..., :2], 4)
    with pytest.raises(InputError, match="iterations"):
        smooth_block_means(f, lo2, 4, iterations=-1)


# --------------------------------------------------------------------------- tiles
def test_tile_grid_keeps_rainy_valid_tiles():
    f = np.zeros((10, 13), np.float32)
    f[:4, :4] = 1.0  # rainy tile (0, 0)
    f[:4, 4:8] = 1.0
    f[0, 5] = np.nan  # invalid tile (0, 4)
    tiles, org = tile_grid(f, 4, min_wet_fraction=0.5)
    assert tiles.shape == (1, 4, 4) and org.tolist() == [[0, 0]]


# --------------------------------------------------------------------------- downscale()
def test_downscale_shapes_and_types(tiny_model, tmp_path):
    lo = rain((6, 5))
    out = downscale(lo, model=tiny_model, members=3, steps=2, seed=0, progress=False)
    assert isinstance(out, np.ndarray) and out.shape == (3, 24, 20) and (out >= 0).all()
    lo3 = torch.from_numpy(rain((2, 6, 5)))
    out3 = downscale(lo3, model=tiny_model, members=2, steps=2, seed=0, progress=False)
    assert isinstance(out3, torch.Tensor) and out3.shape == (2, 2, 24, 20)
    import xarray as xr

    da = xr.DataArray(lo3.numpy(), dims=("time", "y", "x"),
                      coords={"time": np.array(["2021-01-01T00", "2021-01-01T01"], "datetime64[ns]"),
                              "y": np.arange(6) * 4.0, "x": np.arange(5) * 4.0})
    ox = downscale(da, model=tiny_model, members=2, steps=2, seed=0, progress=False)
    assert ox.dims == ("member", "time", "y", "x") and ox.shape == (2, 2, 24, 20)
    np.testing.assert_allclose(ox["x"].values[:4], [-1.5, -0.5, 0.5, 1.5])
    np.testing.assert_allclose(ox.values, out3.numpy(), rtol=1e-5, atol=1e-6)
    # the quick-look takes what downscale returned, whatever its type (tensors failed on Tensor.values)
    from skydiff.downscale.interface import plot_downscaled

    for i, (lo_, ens_) in enumerate([(lo3, out3), (da, ox), (lo3.numpy(), out3.numpy())]):
        png = plot_downscaled(tmp_path / f"q{i}.png", lo_, ens_)
        assert png.stat().st_size > 1000


def test_downscale_bad_input(tiny_model):
    lo = rain((6, 6))
    bad = lo.copy()
    bad[0, :3] = -1.0
    with pytest.raises(InputError, match="3 negative"):
        downscale(bad, model=tiny_model, progress=False)
    bad = lo.copy()
    bad[1, 1] = np.nan
    with pytest.raises(InputError, match="1 NaN"):
        downscale(bad, model=tiny_model, progress=False)
    with pytest.raises(ShapeError):
        downscale(lo[0], model=tiny_model, progress=False)
    with pytest.raises(ShapeError):
        downscale(lo[None, None], model=tiny_model, progress=False)
    with pytest.raises(InputError, match="factor of 4, not 3"):
        downscale(lo, factor=3, model=tiny_model, progress=False)
    with pytest.raises(InputError, match="unknown downscaling model"):
        downscale(lo, model="no-such-model", progress=False)
    with pytest.raises(InputError):
        downscale(np.array([["a", "b"], ["c", "d"]]), model=tiny_model, progress=False)
    # audit 2026-11-27: these gave garbage or raw tracebacks (conserve=array: 2026-11-29)
    for kw, match in (({"batch_size": 0}, "batch_size"), ({"seed": "a"}, "seed"),
                      ({"s_churn": float("nan")}, "s_churn"), ({"static": np.zeros((1, 24, 24))}, "static"),
                      ({"conserve": np.array([1, 0])}, "conserve")):
        with pytest.raises(InputError, match=match):
            downscale(lo, model=tiny_model, members=1, steps=2, progress=False, **kw)
    # audit of the ninth session: a dry input returned before any option was checked (members=0 gave an empty
    # ensemble, members=-1 a raw RuntimeError), and vimd= was ignored by rain-only models
    dry = np.zeros((6, 6))
    for kw, match in (({"members": 0}, "members"), ({"members": -1}, "members"), ({"members": 2.7}, "members"),
                      ({"seed": -1}, "seed"), ({"batch_size": 0}, "batch_size"), ({"tile": 1}, "tile"),
                      ({"s_churn": -1.0}, "s_churn"), ({"vimd": np.zeros((6, 6))}, "vimd")):
        with pytest.raises(InputError, match=match):
            downscale(dry, model=tiny_model, steps=2, progress=False, **kw)
    assert downscale(dry, model=tiny_model, members=2, steps=2, progress=False).shape == (2, 24, 24)


def test_downscale_warns_on_few_steps_and_refuses_unphysical_output(tiny_model, monkeypatch):
    from skydiff.errors import SkydiffWarning

    lo = rain((6, 6))
    with pytest.warns(SkydiffWarning, match="not converged"):
        downscale(lo, model=tiny_model, members=1, steps=3, seed=0, progress=False)
    # an unconverged sample can decode to any value below the decoder's cap: refused above 1000 mm/h
    monkeypatch.setattr(type(tiny_model), "sample", lambda self, x, **kw: torch.full(
        (kw["members"], x.shape[0], x.shape[1] * 4, x.shape[2] * 4), 5000.0))
    with pytest.warns(SkydiffWarning), pytest.raises(InputError, match="with steps=6: the sampler has not converged"):
        downscale(lo, model=tiny_model, members=1, steps=6, progress=False)
    # with enough steps the message no longer blames them (thirteenth-session audit)
    with pytest.raises(InputError, match="from input rain of up to .* put heavy rain into a few pixels"):
        downscale(lo, model=tiny_model, members=1, steps=18, progress=False)

    # the check runs after the block-mean correction, which scaled 373 mm/h sample peaks of a 200 mm/h block to
    # 1 279 mm/h unchecked: one 800 mm/h pixel per 4 x 4 block (block mean 50), input 100 mm/h -> 1 600 mm/h
    def spiky(self, x, **kw):  # noqa: ANN001, ANN003, ANN202
        out = torch.zeros(kw["members"], x.shape[0], x.shape[1] * 4, x.shape[2] * 4)
        out[..., ::4, ::4] = 800.0
        return out

    monkeypatch.setattr(type(tiny_model), "sample", spiky)
    heavy = np.full((6, 6), 100.0, np.float32)
    assert float(downscale(heavy, model=tiny_model, members=1, steps=18, progress=False, conserve=False).max()) == 800
    with pytest.raises(InputError, match=r"after restoring the block means \(conserve=True; the samples reached 800"):
        downscale(heavy, model=tiny_model, members=1, steps=18, progress=False, conserve=True)


# --------------------------------------------------------------------------- CLI
def test_cli_round_trip(tmp_path, tiny_model):
    import xarray as xr

    from skydiff.cli import main

    save_model(tiny_model, tmp_path / "tiny")
    lo = rain((2, 6, 5))
    lo[0, 0, 0] = np.nan
    src = tmp_path / "in.nc"
    xr.DataArray(lo, dims=("time", "y", "x"), name="precip_rate", attrs={"units": "mm/h"}).to_netcdf(src)
    out, png = tmp_path / "out.nc", tmp_path / "out.png"
    args = ["downscale", str(src), "--model", str(tmp_path / "tiny"), "--members", "2", "--steps", "2", "--seed",
            "1", "-q"]
    assert main([*args, "--out", str(out)]) == 2  # NaN without --fill-nan: clear error, nothing written
    assert not out.exists()
    assert main([*args, "--fill-nan", "--out", str(out), "--plot", str(png)]) == 0
    with xr.open_dataset(out) as ds:
        v = ds["precip_rate"]
        assert v.dims == ("member", "time", "y", "x") and v.shape == (2, 2, 24, 20)
        assert v.attrs["units"] == "mm/h" and ds.attrs["Conventions"] == "CF-1.8"
        assert np.isnan(v.values[:, 0, :4, :4]).all() and np.nanmin(v.values) >= 0
        assert np.isfinite(v.values[:, 1]).all()
    assert png.stat().st_size > 1000
    # --conserve / --no-conserve: block means of every member equal the (NaN-filled) input; recorded in the file
    for flags, want in ((["--conserve"], "yes"), (["--no-conserve"], "no"), (["--conserve", "smooth"], "smooth")):
        outc = tmp_path / f"c{want}.nc"
        assert main([*args, "--fill-nan", *flags, "--out", str(outc)]) == 0
        with xr.open_dataset(outc) as ds:
            assert ds.attrs["block_means_conserved"] == want
            bm = block_mean(np.nan_to_num(ds["precip_rate"].values[:, 1]), 4)
        close = np.allclose(bm, np.broadcast_to(lo[1], bm.shape), rtol=1e-4, atol=1e-6)
        assert close == (want != "no")
    outb = tmp_path / "bf16.nc"  # --precision bfloat16: the U-Net in bfloat16, recorded in the file
    assert main([*args, "--fill-nan", "--precision", "bfloat16", "--out", str(outb)]) == 0
    with xr.open_dataset(outb) as ds:
        assert ds.attrs["network_precision"] == "bfloat16" and np.nanmin(ds["precip_rate"].values) >= 0
    assert main([*args, "--fill-nan", "--out", str(out)]) == 2  # exists, no --overwrite
    assert main([*args, "--fill-nan", "--out", str(src), "--overwrite"]) == 2  # never the input file
    with xr.open_dataset(src) as ds:
        assert ds["precip_rate"].shape == (2, 6, 5)
    # refused before any work, nothing written: one path twice, a figure type matplotlib cannot write, a folder
    for extra in (["--out", str(tmp_path / "x.png"), "--plot", str(tmp_path / "x.png")],
                  ["--out", str(tmp_path / "y.nc"), "--plot", str(tmp_path / "y.txt")],
                  ["--out", str(tmp_path)]):
        assert main([*args, "--fill-nan", "--overwrite", *extra]) == 2
    assert not any((tmp_path / n).exists() for n in ("x.png", "y.nc", "y.txt"))
    # --bbox: only the pixels inside the box, in the input's x/y units
    src2 = tmp_path / "in_xy.nc"
    xr.DataArray(np.nan_to_num(lo), dims=("time", "y", "x"), name="precip_rate", attrs={"units": "mm/h"},
                 coords={"x": 10.0 * np.arange(5), "y": 100.0 - 10.0 * np.arange(6)}).to_netcdf(src2)
    args2 = ["downscale", str(src2), *args[2:]]
    assert main([*args2, "--bbox", "10", "30", "60", "90", "--out", str(tmp_path / "box.nc")]) == 0
    with xr.open_dataset(tmp_path / "box.nc") as ds:
        assert ds["precip_rate"].shape == (2, 2, 16, 12)
    assert main([*args2, "--bbox", "500", "600", "0", "1", "--out", str(tmp_path / "box2.nc")]) == 2  # empty box
    assert main(["downscale", str(tmp_path), "--out", str(tmp_path / "z.nc"), "-q"]) == 2  # a folder as input
    assert main(["downscale", str(src), "--model", "era5", "--out", str(tmp_path / "z.nc"), "-q"]) == 2  # no VIMD


def test_cli_label_auto_from_the_input_product(tmp_path, capsys):
    """--label auto (default): a labelled model imitates the input file's radar product when it knows it (recorded
    as product_label in the output), else the mixture; --label unknown forces the mixture; an unlabelled model
    gets no label."""
    import xarray as xr

    from skydiff.cli import main

    torch.manual_seed(0)
    m = create_model("edm-radar-tp", base_channels=8, mults=(1, 2), sigma_data=0.3, sigma_max=1.0,
                     labels=("knmi-rap", "fmi"))
    save_model(m, tmp_path / "lab")
    lo = rain((5, 6))

    def run(attrs, *extra, model="lab"):
        src = tmp_path / "in.nc"
        xr.DataArray(lo, dims=("y", "x"), name="precip_rate", attrs={"units": "mm/h", **attrs}).to_netcdf(src)
        out = tmp_path / "out.nc"
        assert main(["downscale", str(src), "--model", str(tmp_path / model), "--members", "1", "--steps", "2",
                     "--seed", "0", "--out", str(out), "--overwrite", *extra]) == 0
        with xr.open_dataset(out) as ds:
            return ds.attrs.get("product_label"), capsys.readouterr().err

    knmi = {"importer": "knmi_hdf5", "source_unit": "mm"}
    got, said = run(knmi)
    assert got == "knmi-rap" and "label knmi-rap (the input's radar product" in said
    assert run(knmi, "--label", "unknown")[0] is None
    assert run(knmi, "--label", "fmi")[0] == "fmi"
    got, said = run({"importer": "mrms_grib"})  # a product the model was not given: the mixture, said so
    assert got is None and "label unknown" in said
    save_model(create_model("edm-radar-tp", base_channels=8, mults=(1, 2), sigma_data=0.3, sigma_max=1.0),
               tmp_path / "plain")
    assert run(knmi, model="plain")[0] is None  # unlabelled: nothing to choose


def test_coarsen_lowres_and_cli_coarsen(tmp_path, tiny_model, capsys):
    """coarsen_lowres: n x n block means (incomplete last blocks dropped, NaN propagates), pixel size scaled;
    skydiff downscale --coarsen N (N = factor) scores the ensemble against the original and plots it."""
    import xarray as xr

    from skydiff.cli import main
    from skydiff.downscale.interface import coarsen_lowres

    hi = rain((2, 9, 13))
    hi[0, 0, 0] = np.nan
    da = xr.DataArray(hi, dims=("time", "y", "x"), name="precip_rate",
                      coords={"y": np.arange(9.0), "x": np.arange(13.0)}, attrs={"units": "mm/h", "xpixelsize": 1000.0})
    lo = coarsen_lowres(da, 4)
    assert lo.shape == (2, 2, 3) and lo.attrs["xpixelsize"] == 4000.0 and "coarsened" in lo.attrs
    np.testing.assert_allclose(lo.values[1], block_mean(hi[1, :8, :12], 4), rtol=1e-6)
    assert np.isnan(lo.values[0, 0, 0]) and np.isfinite(lo.values[0, 0, 1])
    assert float(lo["x"][0]) == 1.5  # coordinates are block means too
    with pytest.raises(ShapeError, match="coarsen"):
        coarsen_lowres(da, 10)
    other = coarsen_lowres(da.rename(y="lat", x="lon"), 4)  # any names of the last two dimensions
    assert other.dims == ("time", "lat", "lon") and np.array_equal(other.values, lo.values, equal_nan=True)
    with pytest.raises(InputError, match="coarsen"):
        coarsen_lowres(da, 0)
    save_model(tiny_model, tmp_path / "tiny")
    src = tmp_path / "hi.nc"
    da.fillna(0.0).to_netcdf(src)
    png = tmp_path / "c.png"
    assert main(["downscale", str(src), "--model", str(tmp_path / "tiny"), "--coarsen", "4", "--members", "2",
                 "--steps", "2", "--seed", "0", "--out", str(tmp_path / "c.nc"), "--plot", str(png)]) == 0
    err = capsys.readouterr().err
    assert "against the field before --coarsen: CRPS" in err and "bicubic MAE" in err
    with xr.open_dataset(tmp_path / "c.nc") as ds:
        assert ds["precip_rate"].shape == (2, 2, 8, 12)
    assert png.stat().st_size > 1000


def test_cli_output_keeps_a_consistent_cf_grid(tmp_path, tiny_model):
    """A projected input (here a skydiff nowcast file): the downscaled file has the crs variable its grid_mapping
    names (it named a missing one), x/y keep their units, the valid times their coordinate, and no attribute is
    NaN (the input's timestep was)."""
    import xarray as xr

    from skydiff.cli import main
    from skydiff.io import write_nowcast

    save_model(tiny_model, tmp_path / "tiny")
    proj = "+proj=stere +lat_0=90 +lon_0=0 +lat_ts=60 +a=6378137 +b=6356752 +x_0=0 +y_0=0"
    like = xr.DataArray(rain((1, 6, 5)), dims=("time", "y", "x"),
                        coords={"time": [np.datetime64("2010-08-26T05:00")], "x": 1000.0 * np.arange(5),
                                "y": -3.65e6 - 1000.0 * np.arange(6)},
                        attrs={"units": "mm/h", "projection": proj, "timestep": 5.0})
    src = tmp_path / "nowcast.nc"
    write_nowcast(src, rain((2, 6, 5)), reference_time="2010-08-26T05:00", timestep=5.0, like=like)
    out = tmp_path / "ds.nc"
    assert main(["downscale", str(src), "--model", str(tmp_path / "tiny"), "--members", "2", "--steps", "2",
                 "--out", str(out), "-q"]) == 0
    with xr.open_dataset(out, decode_times=True) as ds:
        v = ds["precip_rate"]
        assert v.attrs["grid_mapping"] == "crs" and "crs" in ds and "+proj=stere" in ds["crs"].attrs["proj4_params"]
        assert ds["x"].attrs.get("units") == "m" and ds["x"].size == 20
        assert "time" in ds.coords and str(ds["time"].values[0])[:16] == "2010-08-26T05:05"
        assert str(ds["forecast_reference_time"].values)[:16] == "2010-08-26T05:00"
        bad = [k for k, a in v.attrs.items() if isinstance(a, float) and not np.isfinite(a)]
        assert not bad, bad


def test_cli_era5_reads_tp_and_vimd(shared_data, tmp_path, capsys):
    """skydiff downscale --model era5 on a folder of ERA5 files: TP and VIMD (model-level route) read, the output
    on latitude/longitude; a note that 0.25° input is finer than the model's 1°; a file without ERA5 variables is
    refused with a clear message."""
    import xarray as xr

    from skydiff.cli import main

    folder = shared_data / "era5" / "model-levels-2022-08-31"
    if not folder.is_dir():
        pytest.skip("no ERA5 model levels in the shared data")
    out = tmp_path / "e.nc"
    assert main(["downscale", str(folder), "--model", "era5", "--coarsen", "4", "--members", "2", "--steps", "12",
                 "--seed", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note:" not in err and "against the field before --coarsen" in err
    with xr.open_dataset(out) as ds:
        v = ds["precip_rate"]
        assert v.dims == ("member", "time", "latitude", "longitude") and v.shape == (2, 24, 40, 40)
        assert ds["latitude"].attrs["units"] == "degrees_north" and np.nanmin(v.values) >= 0
    assert main(["downscale", str(folder / "ERA5_2022-08-31_tp.nc"), "--model", "era5", "--members", "1",
                 "--out", str(tmp_path / "f.nc"), "-q"]) == 2  # TP alone: no VIMD
    assert "neither q, u, v on levels nor vertically integrated fluxes" in capsys.readouterr().err


def test_downscale_label_auto_from_dataarray_attrs(monkeypatch):
    """downscale(label="auto"), the default: a DataArray read from a known radar product is sampled with that
    product's label, anything else (numpy, another product, an unlabelled model) with the mixture (None)."""
    import xarray as xr

    from skydiff.downscale.interface import resolve_label

    m = create_model("edm-radar-tp", base_channels=8, mults=(1, 2), sigma_data=0.3, sigma_max=1.0,
                     labels=("knmi-rap", "fmi")).eval()
    seen = []
    real = type(m).sample
    monkeypatch.setattr(type(m), "sample", lambda self, x, **kw: seen.append(kw["label"]) or real(self, x, **kw))
    lo = rain((6, 5))
    da = xr.DataArray(lo, dims=("y", "x"), attrs={"importer": "knmi_hdf5", "source_unit": "mm"})
    kw = dict(model=m, members=1, steps=12, seed=3, progress=False)
    downscale(da, **kw)
    downscale(da, label="fmi", **kw)
    downscale(da, label="unknown", **kw)
    downscale(lo, **kw)
    downscale(da.assign_attrs(importer="mrms_grib"), **kw)
    assert seen == ["knmi-rap", "fmi", None, None, None]
    assert resolve_label("auto", da.attrs, ()) is None  # an unlabelled model


def test_product_label_of_the_shared_radar_files(shared_data):
    from skydiff.downscale.data import product_label
    from skydiff.io import read_radar

    files = {"knmi-rap": "radar/KNMI/2010/08/RAD_NL25_RAP_5min_201008260600.h5",
             "knmi-dbz": "radar/KNMI/2021/2021-02-01-2005/202102012005.hf5",
             "fmi": "radar/fmi/pgm/20170509/201705091100_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz",
             "mrms": "radar/mrms/2019/06/10/PrecipRate_00.00_20190610-000000.grib2"}
    for want, rel in files.items():
        if not (shared_data / rel).is_file():
            pytest.skip(f"{rel} not in the shared data")
        assert product_label(read_radar(str(shared_data / rel)).attrs) == want
    assert product_label({"importer": "odim_hdf5"}) is None and product_label({}) is None


# --------------------------------------------------------------------------- real data
def test_radar_pairs_test_part(shared_data, tmp_path):
    p = radar_pairs("test", sources=("knmi2010-test",), data_dir=shared_data, cache_dir=tmp_path, progress=False)
    assert isinstance(p, TilePairs) and len(p) > 50
    assert p.hi.shape[1:] == (64, 64) and p.lo.shape[1:] == (16, 16)
    assert not np.isnan(p.hi).any() and (p.hi >= 0).all()
    np.testing.assert_allclose(p.lo, block_mean(p.hi, 4), rtol=1e-6)
    assert (p.time >= np.datetime64("2010-08-26T05:00")).all()  # held-back part only
    assert ((p.hi >= 0.1).mean(axis=(1, 2)) >= 0.1).all()
    assert list(tmp_path.glob("tiles_knmi2010-test_64_*.npz"))  # cached
    q = radar_pairs("test", sources=("knmi2010-test",), data_dir=shared_data, cache_dir=tmp_path, progress=False,
                    max_tiles=10)
    assert len(q) == 10
    # a damaged cache entry (a job killed elsewhere, a full disk) is rebuilt with a warning, not a BadZipFile
    from skydiff.errors import SkydiffWarning

    cached = next(tmp_path.glob("tiles_knmi2010-test_64_*.npz"))
    cached.write_bytes(cached.read_bytes()[:1000])
    with pytest.warns(SkydiffWarning, match="unreadable"):
        r = radar_pairs("test", sources=("knmi2010-test",), data_dir=shared_data, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(r.hi, p.hi)
    with pytest.raises(InputError):
        radar_pairs("test", sources=("mrms",), data_dir=shared_data, cache_dir=tmp_path)
    # the same source read from another data folder has a cache entry of its own (they shared one)
    from skydiff.downscale.data import _cache_key

    key = (_cache_key("knmi2010-test", 64, 0.1, 0.1, None, 0, shared_data),
           _cache_key("knmi2010-test", 64, 0.1, 0.1, None, 0, tmp_path))
    assert key[0] != key[1] and key[0] == _cache_key("knmi2010-test", 64, 0.1, 0.1, None, 0, shared_data / ".")
    with pytest.raises(ShapeError):
        radar_pairs("test", tile=30, factor=4, data_dir=shared_data)


def test_radar_pairs_fit_and_validation_split_train_by_time(shared_data, tmp_path):
    kw = dict(data_dir=shared_data, cache_dir=tmp_path, progress=False)
    tr = radar_pairs("train", sources=("knmi2010",), **kw)
    fit = radar_pairs("fit", sources=("knmi2010-fit",), **kw)
    val = radar_pairs("validation", sources=("knmi2010-val",), **kw)
    assert len(fit) > 0 and len(val) > 0 and len(fit) + len(val) == len(tr)
    assert fit.time.max() < val.time.min() == np.datetime64("2010-08-26T04:00")  # the nowcasting validation tail
    assert val.time.max() < np.datetime64("2010-08-26T05:00")  # never the test part
    np.testing.assert_array_equal(np.concatenate([fit.hi, val.hi]), tr.hi)
    with pytest.raises(InputError, match="validation"):
        radar_pairs("validation", sources=("knmi2010-fit",), **kw)
    with pytest.raises(InputError, match="part must be one of"):
        radar_pairs("val", **kw)


def test_era5_pairs_tp(shared_data):
    if not (shared_data / "era5").is_dir():
        pytest.skip("no ERA5 in the shared data")
    p = era5_pairs(with_vimd=False, data_dir=shared_data)
    assert p.hi.shape == (48, 40, 40) and p.lo.shape == (48, 10, 10)
    assert (p.hi >= 0).all() and 1.0 < float(p.hi.max()) < 50.0  # mm/h, not m
    np.testing.assert_allclose(p.lo, block_mean(p.hi, 4), rtol=1e-6)


def _fair_crps(ens: np.ndarray, obs: np.ndarray) -> float:
    m = ens.shape[0]
    skill = np.abs(ens - obs[None]).mean(0)
    spread = np.abs(ens[:, None] - ens[None, :]).sum((0, 1)) / (2 * m * (m - 1))
    return float((skill - spread).mean())


@pytest.mark.parametrize("name", ["radar", "radar-tp"])
def test_shipped_weights_beat_bicubic_on_real_test_tiles(shared_data, name, tmp_path_factory):
    """Ensemble CRPS (fair, 4 members, 12 steps) of the shipped model < MAE of bicubic interpolation on 8 held-back
    radar tiles (KNMI 2010 >= 05:00 and FMI 20170509); small to keep the test fast on one CPU thread."""
    from skydiff.downscale import WEIGHTS_DIR
    from skydiff.downscale.interface import MODELS

    if not (WEIGHTS_DIR / f"{MODELS[name]}.safetensors").is_file():
        pytest.skip(f"shipped weights {MODELS[name]} not present")
    p = radar_pairs("test", sources=("knmi2010-test", "fmi2017"), data_dir=shared_data, progress=False,
                    max_tiles=8, seed=3, cache_dir=tmp_path_factory.getbasetemp() / "tiles")
    ens = downscale(p.lo, model=name, members=4, steps=12, seed=0, progress=False)
    assert ens.shape == (4, 8, 64, 64) and (ens >= 0).all()
    crps = _fair_crps(ens, p.hi)
    mae_bicubic = float(np.abs(bicubic(p.lo, 4, clamp=True) - p.hi).mean())
    assert crps < mae_bicubic, (crps, mae_bicubic)


def test_era5_model_needs_vimd_and_downscales(shared_data):
    """The shipped ``era5`` model on two ERA5 hours: (members, 2, 40, 40) mm/h, >= 0; VIMD is required."""
    from skydiff.downscale import WEIGHTS_DIR

    if not (WEIGHTS_DIR / "edm-era5.safetensors").is_file() or not (shared_data / "era5").is_dir():
        pytest.skip("shipped edm-era5 weights or ERA5 data not present")
    p = era5_pairs(days=("model-levels-2022-08-31",), data_dir=shared_data)
    lo, vlo = p.lo[12:14], p.extra["vimd_lo"][12:14]
    with pytest.raises(InputError, match="VIMD"):
        downscale(lo, model="era5", members=2, steps=4, progress=False)
    with pytest.raises(ShapeError):
        downscale(lo, model="era5", vimd=vlo[0], members=2, steps=4, progress=False)
    ens = downscale(lo, model="era5", vimd=vlo, members=3, steps=18, seed=0, progress=False)
    assert ens.shape == (3, 2, 40, 40) and (ens >= 0).all() and np.isfinite(ens).all()
    assert float(ens.max()) < 100.0  # mm/h: no blow-up


def test_sampling_with_too_few_steps_is_refused_not_inf():
    # with 2 Heun steps the TP-only (log1p) model's unconverged samples overflow expm1: a clear error, no inf
    import numpy as np
    import torch

    import skydiff.downscale.diffusion  # noqa: F401
    from skydiff.errors import InputError
    from skydiff.registry import create_model
    from skydiff.synthetic import rain_sequence

    lo = torch.as_tensor(np.asarray(rain_sequence(4, (64, 64), seed=0)), dtype=torch.float32)
    lo = lo.reshape(4, 16, 4, 16, 4).mean((2, 4))
    m = create_model("edm-radar-tp", pretrained=True).eval()
    with pytest.raises(InputError, match="steps=2 produced .* non-finite"):
        m.sample(lo, members=2, steps=2, seed=0, progress=False)
    out = m.sample(lo, members=2, steps=6, seed=0, progress=False)
    assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0.0


def test_learned_pp_decoder_saturation_is_measured_warned_and_avoidable(tiny_model):
    # the shipped pp-radar's learned decoder is only an approximate inverse where training rain is rare
    from skydiff.downscale.interface import get_downscaler
    from skydiff.errors import SkydiffWarning

    m = get_downscaler("radar")
    pp = m.pp
    limit = pp.learned_decoder_limit()
    assert 20.0 < limit < 200.0
    r = torch.tensor([0.5 * limit, 2.0 * limit], dtype=torch.float64)[:, None, None].expand(2, 4, 4).float()
    learned, exact = pp.decode(pp.encode(r))[:, 0, 0], pp.decode(pp.encode(r), method="inverse")[:, 0, 0]
    assert abs(float(learned[0]) / float(r[0, 0, 0]) - 1) <= 0.02 < 1 - float(learned[1]) / float(r[1, 0, 0])
    torch.testing.assert_close(exact, r[:, 0, 0], rtol=1e-3, atol=0)
    lo = np.zeros((8, 8), np.float32)
    lo[2:6, 2:6] = 1.2 * limit
    with pytest.warns(SkydiffWarning, match="saturates there, so the downscaled block means come out low"):
        out = downscale(lo, model=m, members=2, steps=12, seed=0, progress=False, conserve=False)
    block = out.reshape(2, 8, 4, 8, 4).mean((2, 4))[:, 2:6, 2:6]
    assert float(block.mean()) < 0.95 * 1.2 * limit  # what the warning is about
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*pseudo-precipitation decoder.*")
        fixed = downscale(lo, model=m, members=2, steps=12, seed=0, progress=False)  # default: conserve="heavy"
        downscale(lo * 0.5, model=m, members=1, steps=12, seed=0, progress=False)
    np.testing.assert_allclose(fixed.reshape(2, 8, 4, 8, 4).mean((2, 4))[:, 2:6, 2:6], np.broadcast_to(lo[2:6, 2:6],
                               (2, 4, 4)), rtol=1e-4)  # the heavy blocks restored
    with pytest.raises(InputError, match="decoder"):
        downscale(lo, model=m, members=1, steps=12, progress=False, decoder="bogus")
    with pytest.raises(InputError, match="has none"):
        downscale(lo, model=tiny_model, members=1, steps=2, progress=False, decoder="inverse")


def test_write_downscaled_names_the_dims_of_an_array(tmp_path):
    import xarray as xr

    from skydiff.downscale.interface import write_downscaled

    ens = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    write_downscaled(tmp_path / "a.nc", ens, decoder="inverse")
    with xr.open_dataset(tmp_path / "a.nc") as ds:
        assert ds.precip_rate.dims == ("member", "time", "y", "x") and "2 members" in ds.precip_rate.long_name
        assert ds.attrs["pp_decoder"] == "inverse"
    with pytest.raises(ShapeError, match="members"):
        write_downscaled(tmp_path / "b.nc", ens[0, 0])


def test_downscale_refuses_a_dataarray_not_in_mm_per_h(tiny_model):
    import xarray as xr

    lo = xr.DataArray(rain((6, 5)), dims=("y", "x"), attrs={"units": "m"})
    with pytest.raises(InputError, match="units 'm'"):
        downscale(lo, model=tiny_model, members=1, steps=2, progress=False)
    out = downscale(lo.assign_attrs(units="mm h-1"), model=tiny_model, members=1, steps=2, progress=False)
    assert out.shape == (1, 24, 20)


def test_match_block_means_where_and_conserve_heavy(tiny_model):
    fine = np.random.default_rng(1).random((2, 8, 8)).astype(np.float32)
    lo = np.array([[1.0, 2.0], [3.0, 60.0]], np.float32)
    out = match_block_means(fine, lo, 4, where=lo >= 48.0)
    np.testing.assert_allclose(block_mean(out, 4)[:, 1, 1], [60.0, 60.0], rtol=1e-5)
    np.testing.assert_array_equal(out[:, :4, :], fine[:, :4, :])  # the other blocks untouched
    np.testing.assert_array_equal(out[:, 4:, :4], fine[:, 4:, :4])
    with pytest.raises(InputError, match="conserve must be"):
        downscale(rain((6, 5)), model=tiny_model, members=1, steps=2, progress=False, conserve="some")
    # a model without a learned PP decoder: "heavy" changes nothing
    a = downscale(rain((6, 5)), model=tiny_model, members=1, steps=2, seed=0, progress=False, conserve="heavy")
    b = downscale(rain((6, 5)), model=tiny_model, members=1, steps=2, seed=0, progress=False, conserve=False)
    np.testing.assert_array_equal(a, b)
    # "smooth": the block means exactly, from the same members
    lo6 = rain((6, 5))
    c = downscale(lo6, model=tiny_model, members=2, steps=2, seed=0, progress=False, conserve="smooth")
    d = downscale(lo6, model=tiny_model, members=2, steps=2, seed=0, progress=False, conserve=False)
    np.testing.assert_allclose(block_mean(c, 4), np.broadcast_to(lo6, (2, 6, 5)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c, smooth_block_means(d, lo6, 4), rtol=1e-6)


# --------------------------------------------------------------------------- thirteenth-session audit
def test_downscale_reads_dimensions_by_name_and_refuses_masked_or_empty_input(tiny_model):
    """A (y, x, time) DataArray was downscaled over (x, time); masked pixels were downscaled as their fill values;
    a (0, h, w) array was accepted."""
    import xarray as xr

    lo = rain((2, 6, 5))
    a = downscale(lo, model=tiny_model, members=1, steps=2, seed=0, progress=False)
    da = xr.DataArray(lo.transpose(1, 2, 0), dims=("y", "x", "time"))
    b = downscale(da, model=tiny_model, members=1, steps=2, seed=0, progress=False)
    assert b.dims == ("member", "time", "y", "x") and b.shape == (1, 2, 24, 20)
    np.testing.assert_allclose(b.values, a, rtol=1e-5, atol=1e-6)
    lonlat = xr.DataArray(lo.transpose(0, 2, 1), dims=("time", "lon", "lat"))
    assert downscale(lonlat, model=tiny_model, members=1, steps=2, seed=0, progress=False).dims[-2:] == ("lat", "lon")
    masked = np.ma.masked_array(lo[0], mask=np.zeros_like(lo[0], bool), fill_value=0.0)
    masked.mask[2, 3] = True
    with pytest.raises(InputError, match="1 NaN"):
        downscale(masked, model=tiny_model, members=1, steps=2, progress=False)
    with pytest.raises(ShapeError, match="no time steps"):
        downscale(np.zeros((0, 6, 5)), model=tiny_model, members=1, steps=2, progress=False)


def test_read_lowres_picks_the_rain_variable_or_asks(tmp_path):
    """The first 2-D/3-D variable was read, without units as mm/h (an elevation field was downscaled as rain)."""
    import xarray as xr

    from skydiff.downscale.interface import read_lowres
    from skydiff.errors import ReadError

    r = rain((2, 8, 8))
    elev = (("y", "x"), np.ones((8, 8)), {"units": "m"})
    files = {
        "ok": {"elev": elev, "rr": (("time", "y", "x"), r, {"units": "mm/h"})},
        "era5": {"elev": elev, "tp": (("time", "y", "x"), r / 1000.0, {"units": "m"})},
        "unitless": {"elev": elev, "field": (("time", "y", "x"), r)},
        "two": {"p1": (("time", "y", "x"), r, {"units": "mm/h"}), "p2": (("time", "y", "x"), r, {"units": "mm h-1"})},
        "order": {"precip": (("y", "x", "time"), r.transpose(1, 2, 0), {"units": "mm/h"})},
    }
    for name, vars_ in files.items():
        xr.Dataset(vars_).to_netcdf(tmp_path / f"{name}.nc")
    np.testing.assert_allclose(read_lowres(tmp_path / "ok.nc").values, r)
    np.testing.assert_allclose(read_lowres(tmp_path / "era5.nc").values, r, rtol=1e-6)  # m (per hour) -> mm/h
    with pytest.raises(InputError, match=r"which variable is rain\? no 2-D/3-D .*elev \(m\), field \(no units\)"):
        read_lowres(tmp_path / "unitless.nc")
    np.testing.assert_allclose(read_lowres(tmp_path / "unitless.nc", variable="field").values, r)  # chosen: mm/h
    with pytest.raises(InputError, match="several candidates: p1, p2; pass variable="):
        read_lowres(tmp_path / "two.nc")
    with pytest.raises(InputError, match="units 'm'"):
        read_lowres(tmp_path / "ok.nc", variable="elev")
    with pytest.raises(ReadError, match="is a folder"):  # "input file ... not found" before
        read_lowres(tmp_path)
    got = read_lowres(tmp_path / "order.nc")
    assert got.dims == ("time", "y", "x")
    np.testing.assert_allclose(got.values, r)
    (tmp_path / "garbage.nc").write_text("not netCDF")
    (tmp_path / "empty.nc").write_bytes(b"")
    for name, match in (("garbage", "it is not a netCDF \\(or HDF5\\) file$"), ("empty", "the file is empty")):
        with pytest.raises(ReadError, match=match) as exc:
            read_lowres(tmp_path / f"{name}.nc")
        assert "\n" not in str(exc.value)


def test_coarsen_says_what_it_drops_and_the_package_lists_its_names():
    import xarray as xr

    import skydiff.downscale as sd
    from skydiff.downscale.interface import coarsen_lowres
    from skydiff.errors import SkydiffWarning

    with pytest.warns(SkydiffWarning, match="drops the last 2 row\\(s\\) and 0 column"):
        out = coarsen_lowres(xr.DataArray(rain((10, 8)), dims=("y", "x")), 4)
    assert out.shape == (2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coarsen_lowres(xr.DataArray(rain((8, 8)), dims=("y", "x")), 4)
    assert sd.spectral_truncate is spectral_truncate and "spectral_truncate" in dir(sd)
    assert set(sd.__all__) <= set(dir(sd))


def test_era5_decoder_saturation_is_measured_and_heavy_blocks_restored():
    # pp-era5's learned decoder saturates near 5 mm/h (10 -> 6.9 mm/h); its limit was reported as inf (VIMD model),
    # so conserve="heavy" (the default) restored nothing and no warning was given
    from skydiff.downscale.interface import get_downscaler
    from skydiff.errors import SkydiffWarning

    m = get_downscaler("era5")
    limit = m.pp.learned_decoder_limit()
    assert 2.0 < limit < 20.0
    assert m.saturation_limit() == limit and get_downscaler("radar").pp.learned_decoder_limit() > 20.0
    lo = np.zeros((8, 8), np.float32)
    lo[2:6, 2:6] = [[5.0, 10.0, 15.0, 20.0]] * 4
    vimd = np.where(lo > 0, -3.0, 0.0).astype(np.float32)
    with pytest.warns(SkydiffWarning, match="saturates there"):
        low = downscale(lo, model="era5", vimd=vimd, members=2, steps=12, seed=0, progress=False, conserve=False)
    assert float(block_mean(low, 4).mean(0)[2, 5]) < 0.8 * 20.0
    out = downscale(lo, model="era5", vimd=vimd, members=2, steps=12, seed=0, progress=False)
    np.testing.assert_allclose(block_mean(out, 4)[:, 2:6, 2:6], np.broadcast_to(lo[2:6, 2:6], (2, 4, 4)), rtol=1e-4)


def test_downscale_dataarray_flipped_time_named_otherwise_and_bool_attrs(tiny_model, tmp_path):
    import pandas as pd
    import xarray as xr

    from skydiff.downscale.interface import write_downscaled

    lo = rain((2, 6, 5))
    times = pd.date_range("2021-01-01", periods=2, freq="5min")
    # a view with a negative stride (latitudes flipped) was a raw numpy/torch ValueError
    da = xr.DataArray(lo[0], dims=("y", "x"), attrs={"units": "mm/h", "qc": True})
    flipped = downscale(da[::-1], model=tiny_model, members=1, steps=2, seed=0, progress=False)
    plain = downscale(np.ascontiguousarray(lo[0][::-1]), model=tiny_model, members=1, steps=2, seed=0, progress=False)
    np.testing.assert_array_equal(flipped.values, plain)
    # a bool attribute (netCDF has none) made write_downscaled fail after sampling
    write_downscaled(tmp_path / "b.nc", downscale(da, model=tiny_model, members=1, steps=2, progress=False))
    with xr.open_dataset(tmp_path / "b.nc") as ds:
        assert int(ds.precip_rate.attrs["qc"]) == 1
    import netCDF4

    coords = xr.DataArray(lo[0], dims=("y", "x"), coords={"y": np.arange(6.0), "x": np.arange(5.0)},
                          attrs={"units": "mm/h"})
    write_downscaled(tmp_path / "c.nc", downscale(coords, model=tiny_model, members=1, steps=2, progress=False))
    with netCDF4.Dataset(tmp_path / "c.nc") as nc:  # CF: coordinates have no missing values
        assert "_FillValue" not in nc["x"].ncattrs() and "_FillValue" not in nc["y"].ncattrs()
    # ERA5's CDS files call the time dimension valid_time and may put it last: it was downscaled as space
    last = xr.DataArray(np.moveaxis(lo, 0, -1), dims=("lat", "lon", "valid_time"), coords={"valid_time": times},
                        attrs={"units": "mm/h"})
    out = downscale(last, model=tiny_model, members=1, steps=2, seed=0, progress=False)
    assert out.dims == ("member", "valid_time", "lat", "lon") and out.shape == (1, 2, 24, 20)
    anon = xr.DataArray(lo, dims=("t", "lat", "lon"), coords={"t": times}, attrs={"units": "mm/h"})
    assert downscale(anon.transpose("lat", "lon", "t"), model=tiny_model, members=1, steps=2,
                     progress=False).dims == ("member", "t", "lat", "lon")  # datetimes make it the time dimension
    with pytest.raises(ShapeError, match="time dimension 'valid_time' among the last two"):
        downscale(last.isel(lon=0), model=tiny_model, members=1, steps=2, progress=False)


def test_downscale_member_inputs_range_attrs_non_finite_output_and_reloaded_weights(tiny_model, tmp_path,
                                                                                   monkeypatch):
    """Found by an audit: an input with a member dimension gave an output with two; an input's valid_max made
    netCDF readers mask the downscaled peaks as missing; NaN output passed the plausibility check; a weights path
    saved again was served from the cache."""
    import xarray as xr

    from skydiff.downscale.interface import get_downscaler
    from skydiff.registry import save_model

    lo = rain((6, 6))
    ens = xr.DataArray(np.stack([lo, lo]), dims=("member", "y", "x"), attrs={"units": "mm/h"})
    with pytest.raises(ShapeError, match="'member' dimension .*isel\\(member=i\\)"):
        downscale(ens, model=tiny_model, members=1, steps=2, progress=False)
    one = ens.isel(member=1)  # a scalar member coordinate: the output's members are its own
    one = one.assign_coords(member=1)
    out = downscale(one.assign_attrs(valid_min=0.0, valid_max=float(lo.max()), actual_range=[0.0, 1.0]),
                    model=tiny_model, members=2, steps=2, seed=0, progress=False)
    assert out.dims == ("member", "y", "x") and list(out.member.values) == [0, 1]
    assert not {"valid_min", "valid_max", "actual_range"} & set(out.attrs)
    monkeypatch.setattr(type(tiny_model), "sample", lambda self, x, **kw: torch.full(
        (kw["members"], x.shape[0], x.shape[1] * 4, x.shape[2] * 4), float("nan")))
    with pytest.raises(InputError, match="576 non-finite value"):
        downscale(lo, model=tiny_model, members=1, steps=18, progress=False, conserve=False)
    monkeypatch.undo()
    path = tmp_path / "mine"
    save_model(tiny_model, path)
    first = get_downscaler(str(path))
    assert get_downscaler(str(path)) is first  # cached while the file is unchanged
    time_ns = (path.with_suffix(".safetensors")).stat().st_mtime_ns
    save_model(tiny_model, path)
    os.utime(path.with_suffix(".safetensors"), ns=(time_ns + 10**9, time_ns + 10**9))
    assert get_downscaler(str(path)) is not first  # saved again: read again


def test_downscale_refuses_a_seed_torch_cannot_take(tiny_model):
    with pytest.raises(InputError, match=r"seed must be an integer in \[0, 18446744073709551615\]"):
        downscale(rain((6, 5)), model=tiny_model, members=1, steps=2, seed=2**64, progress=False)
    downscale(rain((6, 5)), model=tiny_model, members=1, steps=2, seed=2**64 - 1, progress=False)


def test_smooth_block_means_correction_is_smooth_and_converges():
    """Nearest instead of bilinear upsampling of the correction, or a fixed point without the wet-fraction step,
    passed the tests above (mutation audit): the correction of a low-res ramp must be smooth across block edges,
    and 8 iterations must be close to the converged additive correction on sparse rain."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 16, 32, generator=g, dtype=torch.float64) + 1.0
    ramp = 0.1 * torch.arange(8, dtype=torch.float64)[None, None, :].expand(1, 4, 8)
    d = smooth_block_means(x, block_mean(x, 4) + ramp, 4) - x
    interior = d[0, 4:12, 6:26]  # away from the edges, where the bilinear upsampling clamps
    assert float((interior[:, 2:] - 2 * interior[:, 1:-1] + interior[:, :-2]).abs().max()) < 0.02  # nearest: 0.1
    sparse = x.clone()
    sparse[torch.rand(1, 16, 32, generator=g) > 0.25] = 0.0  # ~25 % wet
    lo = block_mean(sparse, 4) + 0.5 * block_mean((sparse > 0).double(), 4)
    eight, many = (smooth_block_means(sparse, lo, 4, iterations=n) for n in (8, 60))
    assert float((eight - many).abs().max()) < 0.01 * float((many - sparse).abs().max())


def test_variable_for_a_radar_file_or_era5_is_refused_and_endless_dycore_runs_too(tmp_path, capsys):
    """Found by an audit: --variable was ignored for radar files and --model era5 (exit 0), and a dycore dt of
    1e-300 s ran without end."""
    from skydiff import dycore
    from skydiff.cli import main
    from skydiff.downscale.interface import read_lowres

    radar = tmp_path / "r.h5"
    radar.write_bytes(b"not read")
    with pytest.raises(InputError, match="variable='nosuch' selects a variable of a netCDF file"):
        read_lowres(radar, variable="nosuch")
    assert main(["downscale", str(radar), "--model", "era5", "--variable", "tp", "--out", str(tmp_path / "o.nc")]) == 2
    assert "--variable is for a netCDF of rain" in capsys.readouterr().err
    with pytest.raises(InputError, match="1.8e\\+304 time steps"):
        dycore.run("schaer", dt=1e-300)
