"""Tests of skydiff.downscale.pseudo: the pseudo-precipitation encoder/decoder (structure, gradients, training,
save/load, shipped weights, bad input)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from skydiff.downscale import WEIGHTS_DIR
from skydiff.downscale.pseudo import PseudoPrecip, dry_distance, pp_report, train_pseudo, wet_neighbourhood
from skydiff.errors import InputError, ShapeError
from skydiff.registry import create_model, list_models, load_model, save_model
from skydiff.verify import ks_normal


def fields(n: int = 40, size: int = 32, seed: int = 0, wet: float = 0.5) -> np.ndarray:
    """Spatially correlated rain-like fields (mm/h): thresholded exp of smoothed noise, ~``wet`` wet fraction."""
    rng = np.random.default_rng(seed)
    g = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, 3, 3))
    g /= g.std()
    cut = np.quantile(g, 1 - wet)
    return np.where(g > cut, 2.0 * np.expm1(g - cut) + 0.1, 0.0)


@pytest.fixture(scope="module")
def trained(one_thread):
    return train_pseudo(fields(60, 32, seed=1), steps=400, batch=8192, lr=1e-2, progress=False, seed=0)


def test_registered_and_config():
    assert {"pp-radar", "pp-era5"} <= set(list_models(kind="downscale"))
    m = create_model("pp-era5")
    assert m.use_vimd and m.model_name == "pp-era5" and m.config["dry_threshold"] == 0.01
    r = create_model("pp-radar", hidden=8)
    assert not r.use_vimd and r.dry_spread and r.config["hidden"] == 8


def test_dry_features():
    wet = torch.zeros(2, 5, 7, dtype=torch.bool)
    wet[0, 2, 3] = True
    d = dry_distance(wet, cap=3.0)
    assert float(d[0, 2, 3]) == 0 and float(d[0, 2, 5]) == 2 and float(d[0, 0, 0]) == 3.0  # capped
    assert torch.all(d[1] == 3.0)  # a field without rain: the cap
    nb = wet_neighbourhood(wet)
    assert float(nb[0, 2, 4]) > float(nb[0, 2, 5]) > float(nb[0, 2, 6]) and float(nb[1].max()) == -12.0
    with pytest.raises(ShapeError, match=r"\(\.\.\., H, W\)"):
        dry_distance(torch.ones(4, dtype=torch.bool), 3.0)


def test_dry_stays_dry_monotone_and_nan(trained):
    m = trained
    tp = torch.from_numpy(fields(3, 32, seed=5)).float()
    tp[0, 0, :3] = float("nan")
    tp[1, 5, 5] = 0.05  # below the 0.1 mm/h threshold: dry
    pp = m.encode(tp)
    assert pp.shape == tp.shape and torch.isnan(pp[0, 0, :3]).all() and not torch.isnan(pp[1:]).any()
    rec = m.decode(pp)
    ok = ~torch.isnan(tp)
    wet = tp >= 0.1
    assert torch.all(rec[ok & ~wet] == 0)  # exact zeros
    assert torch.all(rec[ok & wet] >= 0.1 - 1e-6)
    assert torch.all(pp[ok & wet] >= m.z_edge) and torch.all(pp[ok & ~wet] < m.z_edge)
    # monotone in TP (wet values of one field at the same dry features: all wet pixels have distance 0)
    x = torch.linspace(0.1, 80.0, 500).reshape(1, 20, 25)
    z = m.encode(x).reshape(-1)
    assert torch.all(torch.diff(z) > 0)
    assert torch.all(torch.diff(m.decode(z)) >= 0)
    # any leading shape (a stack of stacks)
    assert m.encode(tp.reshape(3, 1, 32, 32)).shape == (3, 1, 32, 32)


def test_training_makes_pp_standard_normal_and_reconstructs(trained):
    tp = fields(30, 32, seed=9)  # held-out fields of the same kind
    r = pp_report(trained, tp)
    assert r["ks"] < 0.1 and r["ks_censored"] < 0.03, r  # dry pixels spread by the distance to rain: no atom
    assert abs(r["mean"]) < 0.15 and abs(r["sd"] - 1) < 0.15
    assert r["wet_dry_agreement"] == 1.0 and r["decoded_exact_zero_on_dry"] == 1.0
    # KS of the wet part against N(0, 1) truncated to [z_edge, inf), cross-checked with scipy
    from scipy import stats

    with torch.no_grad():
        z = trained.encode(torch.from_numpy(tp)).numpy().ravel()
    ze = float(trained.z_edge)
    ref = stats.kstest(z[z >= ze], stats.truncnorm(ze, np.inf).cdf).statistic
    assert r["ks_wet_shape"] == pytest.approx(ref, abs=1e-6)
    assert r["ks"] == pytest.approx(stats.kstest(z, "norm").statistic, abs=1e-6)
    wet = tp >= 0.1
    with torch.no_grad():
        rec = trained.decode(trained.encode(torch.from_numpy(tp))).numpy()
    rel = np.abs(rec[wet] - tp[wet]) / tp[wet]
    assert np.median(rel) < 0.05
    assert trained.history[-1][0] < 0.3 * trained.history[0][0]  # the quantile loss fell


def test_pooled_training_with_weights(one_thread):
    tp = fields(30, 32, seed=4)
    lo = tp.reshape(30, 8, 4, 8, 4).mean((2, 4))
    m = train_pseudo([tp, lo], steps=20, batch=4096, weights=[0.5, 0.5], progress=False)
    expected = 0.5 * np.mean(tp < 0.1) + 0.5 * np.mean(lo < 0.1)
    assert m.train_stats["p_dry"] == pytest.approx(expected)
    with pytest.raises(InputError, match="weights"):
        train_pseudo([tp, lo], steps=1, weights=[1.0], progress=False)


def test_per_grid_point_variant_has_a_dry_atom(one_thread):
    tp = fields(40, 32, seed=2)
    m = train_pseudo(tp, steps=150, batch=8192, lr=1e-2, progress=False, dry_spread=False)
    pp = m.encode(torch.from_numpy(tp[:5])).detach().numpy()
    dry = tp[:5] < 0.1
    assert np.ptp(pp[dry]) < 1e-9  # all dry pixels on one point
    assert ks_normal(pp) > 0.15  # hence far from N(0, 1) with ~50 % dry pixels
    # elementwise: a 1-D input works
    assert m.encode(torch.tensor([0.0, 0.5, 3.0])).shape == (3,)


def test_era5_variant_uses_vimd(one_thread):
    rng = np.random.default_rng(3)
    tp = fields(40, 24, seed=3, wet=0.3)
    vimd = -0.5 * np.log1p(tp) + 0.3 * gaussian_filter(rng.standard_normal(tp.shape), (0, 2, 2)) * 3
    m = train_pseudo(tp, vimd, steps=250, batch=8192, lr=1e-2, progress=False)
    assert m.model_name == "pp-era5" and m.use_vimd
    r = pp_report(m, tp[:10], vimd[:10])
    assert r["ks"] < 0.08 and r["decoded_exact_zero_on_dry"] == 1.0  # VIMD spreads the dry pixels
    with pytest.raises(InputError, match="pass vimd"):
        m.encode(torch.from_numpy(tp))
    with pytest.raises(ShapeError, match="shape of tp"):
        m.encode(torch.from_numpy(tp), torch.from_numpy(vimd[:, :3]))


def test_gradcheck_float64(trained):
    m = PseudoPrecip(**{**trained.config})
    m.load_state_dict(trained.state_dict())
    m = m.double()
    tp = (torch.rand(1, 6, 6, dtype=torch.float64) * 5 + 0.3).requires_grad_()  # wet, away from the threshold
    assert torch.autograd.gradcheck(lambda x: m.encode(x), (tp,))
    z = (m.z_edge + 0.2 + torch.rand(12, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: m.decode(x), (z,))
    # dry pixels: PP depends on the sub-threshold amount too (and is differentiable there)
    tpd = torch.tensor([[[0.001, 2.0, 0.02, 0.05]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: m.encode(x), (tpd,))


def test_inverse_decoder_is_exact_where_the_learned_one_is_not(trained):
    """decode(encode(tp), method="inverse") returns every wet pixel, far beyond the training rain too; dry stays 0."""
    m = PseudoPrecip(**{**trained.config})
    m.load_state_dict(trained.state_dict())
    m = m.double()
    tp = torch.tensor([[[0.0, 0.05, 0.1, 0.3], [2.0, 17.0, 150.0, 900.0], [3000.0, 0.0, 1.0, 40.0]]],
                      dtype=torch.float64)
    with torch.no_grad():
        pp = m.encode(tp)
        inv, learned = m.decode(pp, method="inverse"), m.decode(pp)
    wet = tp >= m.dry_threshold
    assert torch.all(inv[~wet] == 0)
    inside = wet & (tp <= 1000.0)  # the table's range
    np.testing.assert_allclose(inv[inside].numpy(), tp[inside].numpy(), rtol=1e-6)
    assert abs(float(inv[0, 2, 0]) / 3000.0 - 1.0) < 0.02  # beyond it: the last segment extended
    # the learned decoder only approximates the inverse far outside its training rain (fields() peaks ~40 mm/h)
    assert float(((learned[wet] - tp[wet]).abs() / tp[wet]).max()) > 1e-3
    # differentiable in PP (piecewise linear between table nodes)
    z = (m.z_edge + 0.2 + torch.rand(12, dtype=torch.float64) * 2).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: m.decode(x, method="inverse"), (z,))
    # the setting is part of the config (saved with the model) and the default of decode()
    mi = PseudoPrecip(**{**trained.config, "decoder": "inverse"})
    mi.load_state_dict(trained.state_dict())
    assert mi.config["decoder"] == "inverse"
    with torch.no_grad():
        assert torch.equal(mi.decode(pp.float()), mi.decode(pp.float(), method="inverse"))
    with pytest.raises(InputError, match="decoder must be one of"):
        m.decode(pp, method="exact")
    with pytest.raises(InputError, match="VIMD"):
        create_model("pp-era5", decoder="inverse")


def test_save_load_roundtrip(trained, tmp_path):
    wts, js = save_model(trained, tmp_path / "pp", card={"note": "test"})
    assert json.loads(js.read_text())["model"] == "pp-radar"
    back = load_model(tmp_path / "pp")
    tp = torch.from_numpy(fields(2, 32, seed=7)).float()
    assert torch.equal(back.encode(tp), trained.encode(tp))
    assert float(back.z_edge) == float(trained.z_edge)


def test_bad_input(trained):
    with pytest.raises(InputError, match="negative"):
        trained.encode(torch.tensor([[0.0, -1.0], [1.0, 2.0]]))
    with pytest.raises(InputError, match="no vimd"):
        trained.encode(torch.ones(4, 4), torch.ones(4, 4))
    with pytest.raises(ShapeError, match=r"\(\.\.\., H, W\)"):
        trained.encode(torch.ones(4))
    with pytest.raises(InputError, match="negative"):
        train_pseudo(-np.ones((2, 4, 4)), steps=1, progress=False)
    # found by an audit: fractional steps were cut, derived options overwritten silently, a TP-only 'pp-era5' made,
    # an unknown option a bare TypeError
    tp = np.abs(np.random.default_rng(0).normal(size=(2, 8, 8)))
    for kw, match in (({"steps": 2.7}, "steps must be an integer"), ({"batch": 100.9}, "batch must be an integer"),
                      ({"use_vimd": True}, "use_vimd are set from the data"),
                      ({"p_dry": 0.3}, "p_dry are set from the data"), ({"name": "pp-era5"}, "needs vimd="),
                      ({"bogus": 1}, "unknown PseudoPrecip option.*bogus")):
        with pytest.raises(InputError, match=match):
            train_pseudo(tp, progress=False, **{"steps": 1, **kw})
    with pytest.raises(InputError, match="p_dry"):
        PseudoPrecip(p_dry=1.0)
    # thirteenth-session audit: a numpy input gave a tensor holding a graph of the weights, inf went through, a
    # string raised numpy's ValueError, and a masked array's masked pixels were encoded by their fill values
    out = trained.encode(np.ones((4, 4)))
    assert isinstance(out, torch.Tensor) and not out.requires_grad
    assert not trained.decode(np.zeros((4, 4))).requires_grad
    assert trained.encode(torch.ones(4, 4)).requires_grad  # tensors keep the graph (training)
    for bad, match in ((np.full((4, 4), np.inf), "tp has 16 infinite"), ("abc", "numeric array or tensor")):
        with pytest.raises(InputError, match=match):
            trained.encode(bad)
    # sixteenth-session audit: complex input lost its imaginary part, an empty field raised scipy's ValueError
    for bad in (np.ones((4, 4)) * (1 + 1j), torch.ones(4, 4, dtype=torch.complex64)):
        with pytest.raises(InputError, match="real"):
            trained.encode(bad)
    with pytest.raises(ShapeError, match="non-empty"):
        trained.encode(np.zeros((0, 0)))
    masked = np.ma.masked_array(np.ones((4, 4)), mask=np.eye(4, dtype=bool), fill_value=1e20)
    enc = trained.encode(masked)
    assert torch.isnan(enc).sum() == 4 and torch.isnan(torch.diagonal(enc)).all()


@pytest.mark.parametrize("name", ["pp-radar", "pp-era5"])
def test_shipped_weights(name):
    if not (WEIGHTS_DIR / f"{name}.safetensors").is_file():
        pytest.skip(f"{name} weights not shipped yet (benchmarks/pseudo_precip.py writes them)")
    m = create_model(name, pretrained=True)
    card = json.loads((WEIGHTS_DIR / f"{name}.json").read_text())["card"]
    assert card["held_back_checks"] and card["training"]["steps"] >= 1
    tp = torch.from_numpy(fields(4, 32, seed=11)).float()
    v = -0.3 * torch.log1p(tp) if m.use_vimd else None
    with torch.no_grad():
        rec = m.decode(m.encode(tp, v))
    thr = m.dry_threshold
    assert torch.all(rec[tp < thr] == 0) and torch.all(rec[tp >= thr] >= thr - 1e-6)
    wet = tp >= 1.0
    assert float(((rec[wet] - tp[wet]).abs() / tp[wet]).median()) < 0.1


def test_train_pseudo_refuses_what_gave_misleading_errors_or_a_nan_model():
    tp = fields(4, 16, seed=3)
    cases = [([np.full((2, 8, 8), np.nan)], {}, "holds no data"),
             ([tp, np.full((2, 8, 8), np.nan)], {}, r"tp\[1\] holds no data"),
             ([np.where(tp > 1, np.inf, tp)], {}, "tp has .* infinite"),
             ([tp, tp], {"weights": [np.nan, 1.0]}, "weights must be"),
             ([tp], {"rec_weight": np.nan}, "rec_weight"),
             ([tp], {"name": "edm-radar"}, "name must be 'pp-radar' or 'pp-era5'")]
    for data, kw, msg in cases:
        with pytest.raises(InputError, match=msg):
            train_pseudo(data, steps=1, progress=False, **kw)
