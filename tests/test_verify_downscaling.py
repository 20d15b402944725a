"""Tests of the downscaling metrics in skydiff.verify (CRPS, pooled CRPS, RAPSD ratio, distribution checks) and of
the two downscaling plots, against direct formulas, scipy and pysteps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from skydiff import plot as P
from skydiff._compat import import_pysteps
from skydiff.errors import InputError, ShapeError
from skydiff.verify import (
    crps_ensemble,
    crps_pooled,
    ks_normal,
    negative_fraction,
    percentile_bias,
    qq,
    rapsd,
    rapsd_ratio_db,
    wet_fraction,
)

import_pysteps()
from pysteps.verification.probscores import CRPS as ps_crps  # noqa: E402


def crps_direct(members: np.ndarray, obs: np.ndarray, fair: bool) -> np.ndarray:
    """Point-wise CRPS by the literal double sum (members first)."""
    m = members.shape[0]
    skill = np.abs(members - obs[None]).mean(0)
    pair = np.abs(members[:, None] - members[None, :]).sum((0, 1))
    return skill - pair / (2 * m * (m - 1) if fair else 2 * m * m)


# ------------------------------------------------------------------------------------------------------ CRPS
@pytest.mark.parametrize("estimator", ["fair", "nrg"])
def test_crps_matches_double_sum(estimator):
    rng = np.random.default_rng(0)
    obs = rng.gamma(0.6, 2.0, (3, 7, 9))
    mem = rng.gamma(0.6, 2.0, (5, 3, 7, 9))
    ref = crps_direct(mem, obs, estimator == "fair")
    pw = crps_ensemble(mem, obs, estimator=estimator, reduce=False)
    np.testing.assert_allclose(pw, ref, rtol=1e-12, atol=1e-12)
    assert crps_ensemble(mem, obs, estimator=estimator) == pytest.approx(ref.mean(), rel=1e-12)
    # member dimension elsewhere, torch in -> torch out of the same dtype
    t = crps_ensemble(torch.from_numpy(np.moveaxis(mem, 0, -1)), torch.from_numpy(obs), estimator=estimator,
                      member_dim=-1)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float64
    assert float(t) == pytest.approx(ref.mean(), rel=1e-12)


@pytest.mark.parametrize("estimator", ["fair", "nrg"])
def test_crps_gradient_at_tied_members_equals_the_double_sums(estimator):
    """Tied members (an ensemble of copies, dry members at 0) get the gradient of the literal double sum, where
    |x_i - x_j| has slope 0 at a tie: equal for equal members. The sort-based sum gave one +, the other - by
    their order in the sort."""
    rng = np.random.default_rng(1)
    mem = rng.gamma(0.6, 2.0, (6, 4, 5))
    mem[1] = mem[0]  # a tie everywhere
    mem[3:5, :2] = 0.0  # dry members
    obs = rng.gamma(0.6, 2.0, (4, 5))
    a = torch.tensor(mem, requires_grad=True)
    crps_ensemble(a, torch.from_numpy(obs), estimator=estimator).backward()
    b = torch.tensor(mem, requires_grad=True)
    m = mem.shape[0]
    direct = (b - torch.from_numpy(obs)).abs().mean(0) - (b[:, None] - b[None]).abs().sum((0, 1)) / (
        2 * m * (m - 1) if estimator == "fair" else 2 * m * m)
    direct.mean().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    assert torch.equal(a.grad[0], a.grad[1])


def test_crps_nrg_equals_pysteps_and_reference_table_setting():
    # the reference note's setting: N = 1000 points, M = 20, obs ~ N(0,1), members = obs + N(0,1).
    # Exact expectation of the fair estimator: CRPS(N(y, 1), y) = 2 phi(0) - 1/sqrt(pi) = 0.23370; the note's
    # table (another random draw) has fair 0.23502 and nrg 0.26311 — the nrg-fair gap is E|X-X'|/(2M) ~ 0.028.
    rng = np.random.default_rng(42)
    obs = rng.standard_normal(1000)
    mem = obs[None] + rng.standard_normal((20, 1000))
    fair = crps_ensemble(mem, obs)
    nrg = crps_ensemble(mem, obs, estimator="nrg")
    assert fair == pytest.approx(2 / math.sqrt(2 * math.pi) - 1 / math.sqrt(math.pi), abs=0.01)
    assert fair == pytest.approx(0.23502, abs=0.01)
    assert nrg == pytest.approx(0.26311, abs=0.01)
    assert nrg - fair == pytest.approx(2 / math.sqrt(math.pi) / 40, abs=0.003)
    # pysteps' Hersbach CRPS is the nrg (non-fair) form
    assert nrg == pytest.approx(ps_crps(mem.reshape(20, 1000, 1), obs.reshape(1000, 1)), rel=1e-9)


def test_crps_single_member_is_mae_and_perfect_is_zero():
    rng = np.random.default_rng(1)
    obs = rng.random((4, 4))
    f = rng.random((1, 4, 4))
    assert crps_ensemble(f, obs, estimator="nrg") == pytest.approx(np.abs(f[0] - obs).mean())
    with pytest.raises(InputError, match="at least 2 members"):
        crps_ensemble(f, obs)
    assert crps_ensemble(np.stack([obs] * 4), obs, estimator="nrg") == pytest.approx(0.0, abs=1e-15)


def test_crps_nan_points_are_left_out():
    rng = np.random.default_rng(2)
    obs = rng.random((6, 6))
    mem = rng.random((4, 6, 6))
    ref = crps_direct(mem, obs, True)
    obs_n, mem_n = obs.copy(), mem.copy()
    obs_n[0, 0] = np.nan
    mem_n[2, 3, 3] = np.nan
    keep = np.ones((6, 6), bool)
    keep[0, 0] = keep[3, 3] = False
    assert crps_ensemble(mem_n, obs_n) == pytest.approx(ref[keep].mean(), rel=1e-12)
    pw = crps_ensemble(mem_n, obs_n, reduce=False)
    assert np.isnan(pw[0, 0]) and np.isnan(pw[3, 3]) and np.isfinite(pw[keep]).all()
    assert math.isnan(crps_ensemble(mem, np.full((6, 6), np.nan)))


def test_crps_gradcheck_and_shape_errors():
    torch.manual_seed(0)
    mem = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    obs = torch.randn(3, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda m: crps_ensemble(m, obs), (mem,))
    obs4 = torch.randn(4, 4, dtype=torch.float64)
    for how in ("avg", "max"):
        assert torch.autograd.gradcheck(lambda m: crps_pooled(m, obs4, pool=2, how=how),
                                        (torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True),))
    with pytest.raises(ShapeError, match="shape of obs"):
        crps_ensemble(np.zeros((3, 4, 5)), np.zeros((4, 4)))
    with pytest.raises(InputError, match="estimator"):
        crps_ensemble(np.zeros((3, 4)), np.zeros(4), estimator="pwm")


@pytest.mark.parametrize("how", ["avg", "max"])
def test_crps_pooled_equals_crps_of_pooled_fields(how):
    rng = np.random.default_rng(3)
    obs = rng.gamma(0.5, 2, (2, 16, 18))  # 18 is not a multiple of 4: the last 2 columns are dropped
    mem = rng.gamma(0.5, 2, (6, 2, 16, 18))

    def pool(x):
        x = x[..., :16, :16].reshape(*x.shape[:-2], 4, 4, 4, 4)
        return x.mean((-3, -1)) if how == "avg" else x.max((-3, -1))

    ref = crps_direct(pool(mem), pool(obs), True).mean()
    assert crps_pooled(mem, obs, pool=4, how=how) == pytest.approx(ref, rel=1e-12)
    assert crps_pooled(mem, obs, pool=1, how=how) == pytest.approx(crps_ensemble(mem, obs), rel=1e-12)
    assert crps_pooled(mem, obs, pool=4, how=how, reduce=False).shape == (2, 4, 4)
    with pytest.raises(ShapeError, match="larger than the grid"):
        crps_pooled(mem, obs, pool=32)
    with pytest.raises(InputError, match="how"):
        crps_pooled(mem, obs, how="median")


@pytest.mark.parametrize("pool, stride", [(4, 2), (4, 3), (16, 4), (3, 1)])
def test_crps_pooled_overlapping_windows_equal_a_sliding_window_reference(pool, stride):
    """stride < pool: overlapping windows, as in Harris et al.'s code (4 x 4 every 2 px, 16 x 16 every 4 px)."""
    from numpy.lib.stride_tricks import sliding_window_view

    rng = np.random.default_rng(11)
    obs = rng.gamma(0.5, 2, (2, 33, 38))
    mem = rng.gamma(0.5, 2, (5, 2, 33, 38))
    mem[1, 0, 5, 7] = np.nan  # windows holding it are left out

    def pool_ref(x, how):
        win = sliding_window_view(x, (pool, pool), axis=(-2, -1))[..., ::stride, ::stride, :, :]
        return win.mean((-2, -1)) if how == "avg" else win.max((-2, -1))

    for how in ("avg", "max"):
        pm, po = pool_ref(mem, how), pool_ref(obs, how)
        ref = crps_direct(pm, po, False)
        assert np.isnan(ref).any() and crps_pooled(mem, obs, pool, how, "nrg", stride=stride) == pytest.approx(
            np.nanmean(ref), rel=1e-12)
        assert crps_pooled(mem, obs, pool, how, stride=stride, reduce=False).shape == po.shape
    assert crps_pooled(mem, obs, 4, stride=4) == crps_pooled(mem, obs, 4)  # stride = pool is the default
    with pytest.raises(InputError, match="stride must be a positive integer"):
        crps_pooled(mem, obs, 4, stride=0)


def test_crps_infinite_values_score_infinite_not_nan():
    """A diverged member (inf) made the point's CRPS NaN (inf - inf) and the mean NaN, read as 'no valid point'."""
    assert crps_ensemble(np.array([1.0, np.inf]), 0.0, estimator="nrg") == np.inf
    assert crps_ensemble(np.array([np.inf, np.inf]), 0.0) == np.inf
    assert crps_ensemble(np.array([1.0, 2.0]), -np.inf) == np.inf
    assert crps_ensemble(np.array([np.inf, np.inf]), np.inf) == 0.0  # the same infinity everywhere
    rng = np.random.default_rng(12)
    mem, obs = rng.random((5, 8, 8)), rng.random((8, 8))
    ref = crps_ensemble(mem, obs, reduce=False)
    mem[2, 0, 0] = np.inf
    pw = crps_ensemble(mem, obs, reduce=False)
    assert pw[0, 0] == np.inf and np.array_equal(pw.ravel()[1:], ref.ravel()[1:])
    assert crps_ensemble(mem, obs) == np.inf and crps_pooled(mem, obs, 4) == np.inf
    mt = torch.tensor(mem, requires_grad=True)
    crps_ensemble(mt, torch.tensor(obs), reduce=False)[1:].sum().backward()
    assert torch.isfinite(mt.grad).all() and (mt.grad[:, 0, 0] == 0).all()


# ------------------------------------------------------------------------------------------------------ spectra
def test_rapsd_ratio_db_zero_for_identical_and_known_scaling():
    rng = np.random.default_rng(4)
    obs = rng.gamma(0.5, 2, (3, 32, 32))
    wl, db = rapsd_ratio_db(obs, obs)
    assert wl.shape == db.shape == (15,)
    np.testing.assert_allclose(wl, 32 / np.arange(1, 16))
    np.testing.assert_allclose(db, 0.0, atol=1e-12)
    # twice the amplitude = 4x the power = +6.02 dB at every wavelength; a 4-member stack is averaged
    wl2, db2 = rapsd_ratio_db(np.stack([2 * obs] * 4), obs)
    np.testing.assert_allclose(db2, 10 * np.log10(4.0), atol=1e-10)
    # against the mean of the per-field RAPSDs directly
    pred = rng.gamma(0.5, 2, (5, 32, 32))
    _, db3 = rapsd_ratio_db(pred, obs)
    ref = 10 * np.log10(rapsd(pred).mean(0)[1:] / rapsd(obs).mean(0)[1:])
    np.testing.assert_allclose(db3, ref, rtol=1e-10)
    # a smoothed field loses power at short wavelengths
    smooth = torch.nn.functional.avg_pool2d(torch.from_numpy(obs), 3, 1, 1, count_include_pad=False)
    wlt, dbt = rapsd_ratio_db(smooth, torch.from_numpy(obs))
    assert isinstance(dbt, torch.Tensor) and float(dbt[-1]) < -3.0
    # differentiable (e.g. as a spectral loss)
    ref_t = torch.from_numpy(obs[:1, :8, :8])
    assert torch.autograd.gradcheck(lambda p: rapsd_ratio_db(p, ref_t)[1],
                                    (torch.rand(2, 8, 8, dtype=torch.float64, requires_grad=True),))
    with pytest.raises(ShapeError, match="grid"):
        rapsd_ratio_db(obs[:, :16], obs)
    with pytest.raises(InputError, match="^pred contains .* non-finite"):
        rapsd_ratio_db(np.where(obs > 3, np.nan, obs), obs)
    with pytest.raises(InputError, match="^obs contains 1 non-finite"):
        rapsd_ratio_db(obs, np.where(obs == obs.max(), np.inf, obs))


def test_rapsd_ratio_db_refuses_a_truth_without_power():
    rng = np.random.default_rng(5)
    ens = rng.gamma(0.5, 2, (3, 16, 16))
    for truth in (np.zeros((16, 16)), np.full((2, 13, 13), 3.7, dtype=np.float32), torch.zeros(16, 16)):
        with pytest.raises(InputError, match="truth.* has no power at any wavelength.*ratio is undefined"):
            rapsd_ratio_db(ens[..., :truth.shape[-2], :truth.shape[-1]], truth)
    with pytest.raises(InputError, match="no power"):
        rapsd_ratio_db(np.zeros((16, 16)), np.zeros((16, 16)))
    # pooled: one dry truth field among wet ones is fine; a dry prediction has -inf dB (no power at all)
    assert np.isfinite(rapsd_ratio_db(ens, np.stack([np.zeros((16, 16)), ens[0]]))[1]).all()
    assert (rapsd_ratio_db(np.zeros((16, 16)), ens)[1] == -np.inf).all()
    with pytest.raises(ShapeError, match="at least 3 x 3"):
        rapsd_ratio_db(np.ones((2, 2)), np.ones((2, 2)))


# ------------------------------------------------------------------------------------------------------ distributions
def test_percentile_bias_and_qq_mask_pred_and_obs_jointly():
    # a huge forecast where the observation is missing must not count (it made p99 +14 800 % before)
    rng = np.random.default_rng(6)
    obs = rng.gamma(0.4, 2, (40, 40))
    pred = obs.copy()
    obs[:4] = np.nan
    pred[:4] = 1000.0
    assert percentile_bias(pred, obs)["p99"] == pytest.approx(0.0, abs=1e-12)
    ens = np.stack([pred, pred + 0.0])
    ens[1, 10:12] = np.nan  # one member missing there: the other still counts, and so does obs
    b = percentile_bias(ens, obs)
    ref = (np.percentile(ens[~np.isnan(ens) & ~np.isnan(np.broadcast_to(obs, ens.shape))], 99)
           - np.nanpercentile(obs, 99)) / np.nanpercentile(obs, 99)
    assert b["p99"] == pytest.approx(ref, rel=1e-12)
    qp, qo = qq(pred, obs, levels=(0.5, 0.99))
    np.testing.assert_allclose(qp, qo)
    # unrelated shapes: each pooled on its own, as before
    assert percentile_bias(pred[4:, :20], obs)["p99"] == pytest.approx(
        (np.percentile(pred[4:, :20], 99) - np.nanpercentile(obs, 99)) / np.nanpercentile(obs, 99), rel=1e-12)


def test_percentile_bias_matches_numpy():
    rng = np.random.default_rng(5)
    obs = rng.gamma(0.4, 2, (4, 30, 30))
    pred = rng.gamma(0.4, 2.3, (3, 4, 30, 30))
    pred[0, 0, 0, 0] = np.nan
    out = percentile_bias(pred, obs)
    assert set(out) == {"p99", "p99.9"}
    for q in (99, 99.9):
        ref = (np.nanpercentile(pred, q) - np.percentile(obs, q)) / np.percentile(obs, q)
        assert out[f"p{q:g}"] == pytest.approx(ref, rel=1e-12)
    assert percentile_bias(obs, obs, q=99.9)["p99.9"] == pytest.approx(0.0)
    wet = percentile_bias(pred, obs, q=(50,), wet_only=True)["p50"]
    pw, ow = np.percentile(pred[pred >= 0.1], 50), np.percentile(obs[obs >= 0.1], 50)
    ref = (pw - ow) / ow
    assert wet == pytest.approx(ref, rel=1e-12)
    t = percentile_bias(torch.from_numpy(pred), torch.from_numpy(obs))
    assert float(t["p99"]) == pytest.approx(out["p99"], rel=1e-12)
    with pytest.raises(InputError, match="percentile"):
        percentile_bias(pred, obs, q=101)


def test_wet_and_negative_fraction():
    x = np.array([[0.0, 0.05, 0.1, 2.0], [-0.2, np.nan, -1e-9, 5.0]])
    assert wet_fraction(x) == pytest.approx(3 / 7)
    assert wet_fraction(x, threshold=1.0) == pytest.approx(2 / 7)
    assert negative_fraction(x) == pytest.approx(2 / 7)
    assert float(negative_fraction(torch.from_numpy(x))) == pytest.approx(2 / 7)
    assert math.isnan(wet_fraction(np.full(3, np.nan)))


def test_wet_threshold_must_be_finite_and_non_negative():
    x = np.array([0.0, 0.5, 2.0])
    for thr in (float("nan"), -0.1):
        with pytest.raises(InputError, match=f"threshold must be a finite number >= 0.*got {thr}"):
            wet_fraction(x, thr)
        with pytest.raises(InputError, match=f"got {thr}"):
            percentile_bias(x, x, wet_only=True, threshold=thr)
    assert wet_fraction(x, 0.0) == pytest.approx(1.0)


def test_ks_normal_matches_scipy():
    rng = np.random.default_rng(6)
    for x in (rng.standard_normal(5000), rng.standard_normal(3000) * 1.2 + 0.1, rng.gamma(1.0, 1.0, 800)):
        assert ks_normal(x) == pytest.approx(stats.kstest(x, "norm").statistic, abs=1e-12)
    # ties: half of the mass at one point (like dry pixels mapped to one PP value)
    x = np.concatenate([np.full(500, -0.5), rng.standard_normal(500)])
    assert ks_normal(x) == pytest.approx(stats.kstest(x, "norm").statistic, abs=1e-12)
    xn = np.concatenate([rng.standard_normal(100), [np.nan]])
    assert ks_normal(xn) == pytest.approx(stats.kstest(xn[:-1], "norm").statistic, abs=1e-12)
    assert ks_normal(rng.standard_normal(200_000)) < 0.005
    assert isinstance(ks_normal(torch.randn(100)), torch.Tensor)


def test_qq_against_numpy_and_normal():
    rng = np.random.default_rng(7)
    obs = rng.gamma(0.5, 2, 10_000)
    pred = rng.gamma(0.5, 2.2, (2, 5000))
    qp, qo = qq(pred, obs)
    lv = np.array([0.5, 0.9, 0.95, 0.99, 0.999, 0.9999])
    np.testing.assert_allclose(qp, np.quantile(pred, lv), rtol=1e-12)
    np.testing.assert_allclose(qo, np.quantile(obs, lv), rtol=1e-12)
    qp, qn = qq(rng.standard_normal(100_000), "normal", levels=9)
    np.testing.assert_allclose(qn, stats.norm.ppf((np.arange(9) + 0.5) / 9), atol=1e-12)
    np.testing.assert_allclose(qp, qn, atol=0.03)
    with pytest.raises(InputError):
        qq(pred, obs, levels=[0.5, 1.5])


# ------------------------------------------------------------------------------------------------------ plots
def test_plot_qq_and_spectrum_ratio(tmp_path):
    rng = np.random.default_rng(8)
    obs = rng.gamma(0.5, 2, (4, 32, 32))
    preds = {"a": obs * 1.1, "b": rng.gamma(0.5, 2, (2, 4, 32, 32))}
    fig = P.plot_qq(preds, obs, log=True, path=tmp_path / "qq.png", title="Q-Q")
    assert (tmp_path / "qq.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes[0].lines) >= 5  # 2 x (quantiles + extremes) + 1:1
    P.plot_qq(torch.randn(1000), "normal", path=tmp_path / "qqn.png")
    assert (tmp_path / "qqn.png").is_file()
    ratios = {name: rapsd_ratio_db(p, obs) for name, p in preds.items()}
    fig = P.plot_spectrum_ratio(ratios, pixel_km=4.0, path=tmp_path / "ratio.png")
    assert (tmp_path / "ratio.png").is_file()
    xs = fig.axes[0].lines[0].get_xdata()
    assert xs.max() == pytest.approx(32 * 4.0)
    with pytest.raises(InputError):
        P.plot_spectrum_ratio({})
    with pytest.raises(ShapeError):
        P.plot_spectrum_ratio({"x": (np.arange(3.0), np.arange(4.0))})
    with pytest.raises(InputError):
        P.plot_qq(obs, "uniform")
