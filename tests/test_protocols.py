"""Tests of skydiff.verify.protocols: the SmaAt-UNet and SpaT-SparK NL-50 metric protocols and their quirks.

Every expected number is worked out by hand in the comments (reference nowcasting.md §7).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from skydiff.errors import InputError, ShapeError
from skydiff.verify import (
    contingency,
    from_nl50,
    protocol_accumulator,
    smaat_protocol,
    spatspark_protocol,
    to_nl50,
)

F83, F18 = 47.83, 47.18


def fields(values_pred, values_target, shape=(1, 1, 2, 2)):
    """Two (N, T, H, W) arrays from flat lists."""
    return (np.asarray(values_pred, dtype=np.float64).reshape(shape),
            np.asarray(values_target, dtype=np.float64).reshape(shape))


# ------------------------------------------------------------------------------------------------ units


def test_units_helpers():
    assert to_nl50(0.5) == pytest.approx(0.5 / (12 * F83))
    assert to_nl50(0.5) == pytest.approx(8.71e-4, rel=1e-3)  # SmaAt's 0.5 mm/h cut on normalised values (§7.1)
    assert from_nl50(1.0) == pytest.approx(12 * F83)
    t = torch.tensor([0.0, 1.0, 30.0], dtype=torch.float64)
    assert torch.allclose(from_nl50(to_nl50(t)), t)
    assert isinstance(to_nl50(t), torch.Tensor)
    with pytest.raises(InputError):
        to_nl50(1.0, factor=0)


# ------------------------------------------------------------------------------------------------ MSE


def test_denorm_factor_47_83_vs_47_18():
    # a constant error of 0.01 normalised units on a 2 x 2 frame, one sample
    pred, target = fields([0.01] * 4, [0.0] * 4)
    s = smaat_protocol(pred, target)
    p = spatspark_protocol(pred, target)
    assert s["mse"] == pytest.approx((0.01 * 47.83) ** 2)  # 0.228765... (mm/5min)^2
    assert p["mse"] == pytest.approx((0.01 * 47.18) ** 2)  # 0.222595...
    assert s["mse"] / p["mse"] == pytest.approx((47.83 / 47.18) ** 2)  # 2.8 % higher with 47.83
    assert s["mse"] / p["mse"] - 1 == pytest.approx(0.0277, abs=5e-4)
    assert (s["denorm_factor"], p["denorm_factor"]) == (47.83, 47.18)
    # the factors are options: the same protocol with the other factor gives the other number
    assert spatspark_protocol(pred, target, denorm_factor=F83)["mse"] == pytest.approx(s["mse"])


def test_mse_reductions_and_fixed_sample_count():
    # 2 samples x 3 leads x 2 x 2: errors 0.01 everywhere except one pixel of sample 1, lead 2 with 0.03
    pred = np.full((2, 3, 2, 2), 0.01)
    pred[1, 2, 0, 0] = 0.03
    target = np.zeros_like(pred)
    sse = (23 * 0.01**2 + 0.03**2) * F18**2  # 24 pixels in all
    r = spatspark_protocol(pred, target)
    assert r["mse"] == pytest.approx(sse / 24)  # per pixel: N * T * H * W = 24
    assert r["mse_per_lead"][2] == pytest.approx((7 * 0.01**2 + 0.03**2) * F18**2 / 8)  # N * H * W = 8
    assert r["mse_per_lead"][0] == pytest.approx(0.01**2 * F18**2)
    assert spatspark_protocol(pred, target, mse_reduction="image")["mse"] == pytest.approx(sse / 2)  # per sample
    # the reference's hard-coded 1557 test samples
    assert spatspark_protocol(pred, target, n_samples=1557)["mse"] == pytest.approx(sse / (1557 * 3 * 4))
    # SmaAt: per-image = per-pixel * H * W (issue #9: 1039.50 per image <-> 0.012533 per pixel on 288 x 288)
    s_pix = smaat_protocol(pred[:, 2], target[:, 2])
    s_img = smaat_protocol(pred[:, 2], target[:, 2], mse_reduction="image")
    assert s_img["mse"] == pytest.approx(4 * s_pix["mse"])
    assert 1039.50 / (288 * 288) == pytest.approx(0.012533, rel=1e-4)
    # their normalised per-image loss: denorm_factor 1
    assert smaat_protocol(pred[:, 2], target[:, 2], mse_reduction="image", denorm_factor=1.0)["mse"] == \
        pytest.approx((4 * 0.01**2 + 3 * 0.01**2 + 0.03**2) / 2)  # sample 0: 4 x 1e-4, sample 1: 3e-4 + 9e-4


# ------------------------------------------------------------------------------------------------ thresholds


def test_spatspark_real_thresholds_cumulative_quirk():
    r = spatspark_protocol(np.zeros((1, 12, 2, 2)), np.zeros((1, 12, 2, 2)))
    real = r["thresholds_mm_h"]
    # key 0.2 at v * 12, key 0.5 at v * 144, key 1.0 at v * 1728; v * 47.18 * 12 mm/h
    assert real[0.2] == pytest.approx(0.2 / 12 * 12 * F18) == pytest.approx(9.436)
    assert real[0.5] == pytest.approx(0.5 / 144 * 12 * F18) == pytest.approx(1.9658, abs=1e-4)
    assert real[1.0] == pytest.approx(1.0 / 1728 * 12 * F18) == pytest.approx(0.32764, abs=1e-5)
    assert (round(real[0.2], 1), round(real[0.5], 1), round(real[1.0], 2)) == (9.4, 2.0, 0.33)
    assert r["thresholds_normalised"][0.5] == pytest.approx(0.5 / 144)
    # with the true NL-50 factor: 9.57 / 1.99 / 0.33 mm/h
    r83 = spatspark_protocol(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), denorm_factor=F83)
    assert r83["thresholds_mm_h"][0.2] == pytest.approx(9.566) and r83["thresholds_mm_h"][0.5] == pytest.approx(
        1.9929, abs=1e-4)
    # without the quirk the keys are real mm/h
    nq = spatspark_protocol(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), cumulative=False)
    assert nq["thresholds_mm_h"] == {0.2: pytest.approx(0.2), 0.5: pytest.approx(0.5), 1.0: pytest.approx(1.0)}


def test_spatspark_events_follow_the_real_thresholds():
    # target pixels at 0.9, 1.9, 2.1 and 10 mm/h (normalised with 47.18); the prediction is 0 everywhere
    mm = [0.9, 1.9, 2.1, 10.0]
    target = np.asarray(mm).reshape(1, 1, 2, 2) / (12 * F18)
    pred = np.zeros_like(target)
    r = spatspark_protocol(pred, target)
    # the column "0.5" really is ~1.97 mm/h: only 2.1 and 10 mm/h are events (2 misses), not 0.9 and 1.9
    assert r["confusion"][0.5] == {"tp": 0, "fp": 0, "fn": 2, "tn": 2}
    assert r["confusion"][0.2] == {"tp": 0, "fp": 0, "fn": 1, "tn": 3}  # only 10 mm/h > 9.44
    assert r["confusion"][1.0] == {"tp": 0, "fp": 0, "fn": 4, "tn": 0}  # all > 0.33 mm/h
    fixed = spatspark_protocol(pred, target, cumulative=False)
    assert fixed["confusion"][0.5] == {"tp": 0, "fp": 0, "fn": 4, "tn": 0}  # all > 0.5 mm/h
    assert fixed["confusion"][0.2]["fn"] == 4 and fixed["confusion"][1.0]["fn"] == 3  # 0.9 mm/h is not > 1
    # eps = 1e-8: precision 0/(0 + 1e-8) = 0 (not NaN), recall 0
    assert r["scores"][0.5]["precision"] == 0.0 and r["scores"][0.5]["recall"] == 0.0
    # SmaAt: events v * 47.83 * 12 > 0.5 mm/h
    s = smaat_protocol(pred[:, 0], np.asarray([0.49, 0.51, 3.0, 0.0]).reshape(1, 2, 2) / (12 * F83))
    assert s["confusion"][0.5] == {"tp": 0, "fp": 0, "fn": 2, "tn": 2}
    assert math.isnan(s["scores"][0.5]["precision"])  # SmaAt: 0/0 is NaN
    assert s["thresholds_mm_h"] == {0.5: 0.5}


def test_confusion_matches_verify_contingency():
    rng = np.random.default_rng(0)
    target = rng.gamma(0.4, 0.004, size=(3, 2, 16, 16))
    pred = np.clip(target + rng.normal(0, 0.002, size=target.shape), 0, None)
    r = smaat_protocol(pred, target, lead_index=1)
    c = contingency(from_nl50(pred[:, 1]), from_nl50(target[:, 1]), 0.5, event="gt")
    assert r["confusion"][0.5] == {"tp": int(c.hits), "fp": int(c.false_alarms), "fn": int(c.misses),
                                   "tn": int(c.correct_negatives)}
    assert int(c.hits) > 0 and int(c.misses + c.false_alarms) > 0


# ------------------------------------------------------------------------------------------------ scores


def _table(tp: int, fp: int, fn: int, tn: int) -> tuple[np.ndarray, np.ndarray]:
    """One lead, one sample, pixels laid out to give exactly this confusion matrix at any threshold ~1 mm/h."""
    hi, lo = to_nl50(5.0), 0.0
    pred = [hi] * tp + [hi] * fp + [lo] * fn + [lo] * tn
    targ = [hi] * tp + [lo] * fp + [hi] * fn + [lo] * tn
    n = len(pred)
    return np.asarray(pred).reshape(1, 1, 1, n), np.asarray(targ).reshape(1, 1, 1, n)


def test_scores_and_hss_without_factor_2():
    # TP 3, FP 1, FN 2, TN 4
    pred, target = _table(3, 1, 2, 4)
    s = smaat_protocol(pred, target)["scores"][0.5]
    assert s["precision"] == pytest.approx(3 / 4)
    assert s["recall"] == pytest.approx(3 / 5)
    assert s["accuracy"] == pytest.approx(7 / 10)
    assert s["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert s["csi"] == pytest.approx(3 / 6)
    assert s["far"] == pytest.approx(1 / 4)
    # (TP TN - FN FP) / ((TP + FN)(FN + TN) + (TP + FP)(FP + TN)) = (12 - 2) / (5 * 6 + 4 * 5) = 0.2
    assert s["hss"] == pytest.approx(0.2)
    std = smaat_protocol(pred, target, hss_factor=2)["scores"][0.5]["hss"]
    assert std == pytest.approx(0.4)
    # the standard Heidke score of skydiff.verify.categorical is twice the protocols' one
    c = contingency(from_nl50(pred), from_nl50(target), 0.5, event="gt")
    assert float(c.scores()["hss"]) == pytest.approx(std)
    sp = spatspark_protocol(pred, target, thresholds=(1.0,), cumulative=False)["scores"][1.0]
    assert sp["hss"] == pytest.approx(10 / (50 + 1e-8))  # same formula, + 1e-8
    assert sp["f1"] == pytest.approx(6 / (6 + 1 + 2 + 1e-8))


def test_micro_vs_per_lead_averaging():
    # lead 0: TP 1, FP 0, FN 1, TN 2; lead 1: TP 3, FP 1, FN 0, TN 0
    p0, t0 = _table(1, 0, 1, 2)
    p1, t1 = _table(3, 1, 0, 0)
    pred, target = np.concatenate([p0, p1], axis=1), np.concatenate([t0, t1], axis=1)
    kw = dict(thresholds=(1.0,), cumulative=False, eps=0.0)
    micro = spatspark_protocol(pred, target, **kw)
    lead = spatspark_protocol(pred, target, averaging="per_lead", **kw)
    # micro: TP 4, FP 1, FN 1, TN 2
    assert micro["confusion"][1.0] == {"tp": 4, "fp": 1, "fn": 1, "tn": 2}
    assert micro["scores"][1.0]["csi"] == pytest.approx(4 / 6)
    assert micro["scores"][1.0]["precision"] == pytest.approx(4 / 5)
    # per lead: CSI 1/2 and 3/4 -> 0.625; precision 1 and 3/4 -> 0.875; recall 1/2 and 1 -> 0.75
    assert lead["scores"][1.0]["csi"] == pytest.approx(0.625)
    assert lead["scores"][1.0]["precision"] == pytest.approx(0.875)
    assert lead["scores"][1.0]["recall"] == pytest.approx(0.75)
    # per-lead averages are not one confusion matrix: F1 != 2PR/(P+R) of the averaged P and R (§7.2)
    P, R = lead["scores"][1.0]["precision"], lead["scores"][1.0]["recall"]
    assert lead["scores"][1.0]["f1"] != pytest.approx(2 * P * R / (P + R), abs=1e-3)
    assert [d["csi"] for d in micro["scores_per_lead"][1.0]] == pytest.approx([0.5, 0.75])
    # one lead: both averages agree (SmaAt)
    a = smaat_protocol(p1, t1, averaging="per_lead")["scores"][0.5]
    b = smaat_protocol(p1, t1)["scores"][0.5]
    assert a == pytest.approx(b)


# ------------------------------------------------------------------------------------------------ inputs


def test_accumulator_nan_and_inputs():
    rng = np.random.default_rng(1)
    target = rng.gamma(0.4, 0.004, size=(4, 3, 8, 8))
    pred = np.clip(target + rng.normal(0, 0.002, size=target.shape), 0, None)
    whole = spatspark_protocol(pred, target)
    acc = protocol_accumulator("spatspark")
    acc.update(pred[:3], target[:3]).update(torch.from_numpy(pred[3:]), torch.from_numpy(target[3:]))
    parts = acc.compute()
    assert parts["mse"] == pytest.approx(whole["mse"]) and parts["confusion"] == whole["confusion"]
    assert parts["n_samples"] == 4 and parts["n_leads"] == 3
    # NaN pixels are left out of everything
    p2 = pred.copy()
    p2[0, 0, 0, 0] = np.nan
    r = spatspark_protocol(p2, target)
    c = r["confusion"][1.0]
    assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == pred.size - 1
    keep = np.ones(pred.shape, bool)
    keep[0, 0, 0, 0] = False
    assert r["mse"] == pytest.approx(float(np.mean(((pred - target)[keep] * F18) ** 2)))
    # shapes and options
    with pytest.raises(ShapeError, match="lead_index"):
        smaat_protocol(pred, target)
    assert smaat_protocol(pred, target, lead_index=-1)["mse"] == pytest.approx(
        smaat_protocol(pred[:, 2], target[:, 2])["mse"])
    with pytest.raises(ShapeError):
        spatspark_protocol(pred, target[:, :2])
    with pytest.raises(ShapeError):
        spatspark_protocol(pred[0, 0, 0], target[0, 0, 0])
    with pytest.raises(InputError, match="averaging"):
        spatspark_protocol(pred, target, averaging="macro")
    with pytest.raises(InputError, match="mse_reduction"):
        smaat_protocol(pred[:, 0], target[:, 0], mse_reduction="sum")
    with pytest.raises(InputError, match="no option"):
        protocol_accumulator("smaat", thresholds=(0.5,))
    with pytest.raises(InputError, match="unknown protocol"):
        protocol_accumulator("persistence")
    with pytest.warns(UserWarning, match="mm/h"):
        smaat_protocol(from_nl50(pred[:, 0]), from_nl50(target[:, 0]))  # mm/h passed by mistake
    out = spatspark_protocol(torch.from_numpy(pred).float(), torch.from_numpy(target).float())
    assert out["mse"] == pytest.approx(whole["mse"], rel=1e-5)


def test_thresholds_as_an_array():
    """A numpy array of thresholds was checked as one threshold ("threshold must be a number, got array(...)")."""
    a = protocol_accumulator("spatspark", thresholds=np.array([0.2, 0.5]))
    b = protocol_accumulator("spatspark", thresholds=(0.2, 0.5))
    assert a.thresholds == b.thresholds == [0.2, 0.5]
