"""Tests of the nowcasting networks (skydiff.nowcast.models): shapes, padding, gradients, registry, I/O, NaN."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from conftest import rain
from skydiff.errors import InputError, ShapeError, SkydiffError
from skydiff.nowcast.models import (
    LCNN,
    LUPIN,
    RainNet,
    RainNetUNet,
    SmaAtUNet,
    create_model,
    list_models,
    load_model,
    load_weights,
    save_model,
)
from skydiff import registry
from skydiff.nowcast.models.blocks import crop_padding, gaussian_blur, lagrangian_stack, pad_to_multiple

H, W = 40, 52  # non-square, not multiples of 16
NAMES = ["rainnet", "smaat", "lupin", "lcnn"]
SMALL = {
    "rainnet": {"base_channels": 8},
    "smaat": {"base_channels": 8},
    "lupin": {"base_channels": 8, "motion_base_channels": 4},
    "lcnn": {"base_channels": 8},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def small(name: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, **{**SMALL[name], **kw})


def n_forward_channels(m) -> int:
    return m.n_input_frames - 1 if isinstance(m, LCNN) else m.n_input_frames




# --------------------------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("name", NAMES)
def test_forward_shapes(name):
    m = small(name)
    x = torch.rand(2, n_forward_channels(m), H, W)
    y = m(x)
    assert y.shape == (2, 1, H, W)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
def test_predict_shapes(name):
    m = small(name, **({"n_out": 3} if name == "smaat" else {}))  # the default SmaAt-UNet predicts step 6 only
    n = 3
    x = rain(2, m.n_input_frames + 1)  # extra frames are ignored (the last n_input_frames are used)
    out = m.predict(x, n)
    assert isinstance(out, torch.Tensor) and out.shape == (2, n, H, W)
    assert torch.isfinite(out).all() and (out >= 0).all()
    one = m.predict(x[0].numpy(), n)  # (T, H, W) numpy -> (n, H, W) numpy
    assert isinstance(one, np.ndarray) and one.shape == (n, H, W)
    np.testing.assert_allclose(one, out[0].numpy(), rtol=1e-4, atol=1e-4)
    assert m.training  # predict restores the mode


def test_smaat_multi_output():
    m = small("smaat", n_out=12)
    assert m.leadtime_steps == tuple(range(1, 13))
    assert m(torch.rand(1, 12, H, W)).shape == (1, 12, H, W)
    assert m.predict(rain(1, 12), 5).shape == (1, 5, H, W)
    with pytest.raises(InputError, match="n_out"):
        small("smaat").predict(rain(1, 12), 2)
    assert small("smaat").leadtime_steps == (6,)


def test_rollout_shapes_and_detach():
    m = small("rainnet")
    x = torch.rand(1, 4, H, W, requires_grad=True)
    y = m.rollout(x, 3, detach=False)
    assert y.shape == (1, 3, H, W)
    y[:, -1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(InputError):
        small("smaat").rollout(torch.rand(1, 12, H, W), 2)


@pytest.mark.parametrize("name", ["rainnet", "smaat"])
def test_default_parameter_counts(name):
    # reference §3: RainNet has 31.4 M parameters; §4: SmaAt-UNet about 4 M
    n = create_model(name).n_parameters()
    if name == "rainnet":
        assert abs(n - 31.4e6) < 0.05e6
    else:
        assert 3.5e6 < n < 4.5e6


# --------------------------------------------------------------------------------------------------------------
# padding


def test_pad_crop_roundtrip():
    x = torch.randn(2, 3, 37, 53)
    for mode in ("reflect", "replicate"):
        xp, pads = pad_to_multiple(x, 16, mode)
        assert xp.shape[-2:] == (48, 64)
        assert pads == (5, 6, 5, 6)
        assert torch.equal(crop_padding(xp, pads), x)
    tiny = torch.randn(1, 1, 5, 7)  # pad >= size: reflection falls back to replication
    tp, pads = pad_to_multiple(tiny, 16)
    assert tp.shape[-2:] == (16, 16) and torch.equal(crop_padding(tp, pads), tiny)
    same, pads = pad_to_multiple(torch.randn(1, 1, 32, 16), 16)
    assert pads == (0, 0, 0, 0) and same.shape[-2:] == (32, 16)


@pytest.mark.parametrize("hw", [(37, 53), (16, 16), (21, 9)])
def test_unet_any_grid_crops_back(hw):
    torch.manual_seed(0)
    net = RainNetUNet(3, 1, base_channels=4).eval()
    x = torch.randn(1, 3, *hw)
    y = net(x)
    assert y.shape == (1, 1, *hw)
    xp, pads = pad_to_multiple(x, 16, "reflect")
    assert torch.allclose(y, crop_padding(net.forward_padded(xp), pads))


@pytest.mark.parametrize("name", NAMES)
def test_models_any_grid(name):
    m = small(name).eval()
    x = torch.rand(1, n_forward_channels(m), 19, 27)
    assert m(x).shape == (1, 1, 19, 27)


# --------------------------------------------------------------------------------------------------------------
# LUPIN: gradients, divergence, freezing, Lagrangian frame


def test_lupin_gradient_reaches_motion_net():
    m = small("lupin")
    x = rain(2, 6)
    y, mf = m(x, return_motion=True)
    assert y.shape == (2, 1, H, W) and mf.shape == (2, 2, H, W)
    (y.square().mean() + 0.1 * m.divergence_penalty(mf)).backward()
    first = m.motion_net.encoder[0][0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert m.advection_net.encoder[0][0].weight.grad.abs().sum() > 0


def test_lupin_gradient_through_advect_only():
    # no divergence term, no blur path: the motion gets gradients only through the Lagrangian advection
    m = small("lupin", motion_blur_sigma=0.0)
    m(rain(1, 6)).sum().backward()
    assert m.motion_net.encoder[0][0].weight.grad.abs().sum() > 0


def test_lupin_motion_prior_starts_from_the_flow_and_learns_a_correction():
    m = small("lupin", motion_prior="lk")
    assert m.motion_prior == "lk" and m.motion_prior_frames == 3
    x = rain(2, 6)
    prior = torch.randn(2, 2, H, W)
    y, mf = m(x, return_motion=True, prior=prior)
    torch.testing.assert_close(mf, prior)  # a fresh model: zero correction
    y.square().mean().backward()  # the zero head still gets a gradient, so the correction can grow
    head = [c for c in m.motion_net.modules() if isinstance(c, torch.nn.Conv2d)][-1]
    assert head.weight.grad.abs().sum() > 0
    with pytest.raises(InputError, match="pass prior="):
        m(x)
    with pytest.raises(InputError, match=r"\(B, 2, H, W\)"):
        m(x, prior=prior[:, :1])
    with pytest.raises(InputError, match="no motion_prior"):
        small("lupin")(x, prior=prior)
    with pytest.raises(InputError, match="motion_prior_frames"):
        small("lupin", motion_prior_frames=3)
    with pytest.raises(InputError):
        small("lupin", motion_prior="nope")
    # predict() estimates the flow once from the observed frames and keeps it for every lead: with a zero
    # correction the motion LUPIN extrapolates along is exactly that flow
    frames = rain(1, 6, seed=3)[0]  # drifting +1 px/step in x
    expect = m.estimate_prior(frames[None])
    seen = []
    orig = m.motion

    def spy(z, p=None):  # noqa: ANN001, ANN202
        seen.append(p)
        return orig(z, p)

    m.motion = spy
    out = m.predict(frames, 3)
    assert out.shape == (3, H, W) and torch.isfinite(out).all()
    # one call per lead, and one more for the motion predict() returns (prior + this LUPIN's correction)
    assert len(seen) == 3 + 1 and all(torch.equal(p, expect) for p in seen)
    assert float(expect[0, 0].mean()) == pytest.approx(1.0, abs=0.3)
    # a motion of the caller's (numpy (2, H, W), e.g. 4D-Var) replaces the optical flow
    seen.clear()
    given = expect[0].numpy()
    torch.testing.assert_close(m.predict(frames, 3, velocity=given), out)
    assert all(torch.equal(p, expect) for p in seen)
    with pytest.raises(ShapeError, match="velocity must be"):
        m.predict(frames, 3, velocity=given[:, :-1])
    with pytest.raises(InputError, match="learns its own motion"):
        small("lupin").predict(frames, 3, velocity=given)


def test_predict_returns_the_steady_motion_of_lcnn_and_lk_lupin():
    frames = rain(1, 6, seed=3)[0]  # drifting +1 px/step in x
    frames[:, :, :6] = float("nan")  # a no-data strip
    for name, kw in (("lcnn", {}), ("lupin", {"motion_prior": "lk", "motion_correction": False})):
        m = small(name, **kw)
        out, v = m.predict(frames, 2, return_motion=True, trim_nodata=False)
        torch.testing.assert_close(out, m.predict(frames, 2, trim_nodata=False), equal_nan=True)
        assert v.shape == (2, H, W) and torch.isfinite(v).all()
        x = torch.nan_to_num(frames, 0.0)[None, -m.n_input_frames:]
        own = m.estimate_motion(x) if name == "lcnn" else m.estimate_prior(x)  # what the model moved the rain along
        torch.testing.assert_close(v, own[0])
        given = torch.zeros(2, H, W)
        given[1] = 0.5
        torch.testing.assert_close(m.predict(frames, 2, return_motion=True, velocity=given)[1][:, :, 6:],
                                   given[:, :, 6:])
    out, v = small("rainnet").predict(frames.numpy(), 2, return_motion=True)
    assert v is None and isinstance(out, np.ndarray)
    # a LUPIN that learns a correction to its prior returns prior + correction (it returned the prior alone)
    torch.manual_seed(0)
    m = small("lupin", motion_prior="lk")
    with torch.no_grad():
        for p in m.motion_net.parameters():
            p.normal_(0.0, 0.1)  # a non-zero correction
    _, v = m.predict(frames, 2, return_motion=True, trim_nodata=False)
    x = torch.nan_to_num(frames, 0.0)[None, -m.n_input_frames:]
    prior = m.estimate_prior(x)
    with torch.no_grad():
        torch.testing.assert_close(v, m.eval().motion(m.transform(x), prior)[0])  # predict() runs in eval mode
    assert float((v - prior[0]).abs().max()) > 0.01


def test_lupin_without_motion_correction_moves_along_the_prior():
    m = small("lupin", motion_prior="lk", motion_correction=False)
    assert m.motion_net is None and all(not k.startswith("motion_net") for k in m.state_dict())
    x, prior = rain(2, 6), torch.randn(2, 2, H, W)
    y, mf = m(x, return_motion=True, prior=prior)
    torch.testing.assert_close(mf, prior)
    y.square().mean().backward()  # the AF-U-Net still learns
    assert m.advection_net.encoder[0][0].weight.grad.abs().sum() > 0
    m.freeze_motion()
    m.train()
    assert m.predict(rain(1, 6)[0], 2).shape == (2, H, W)
    with pytest.raises(InputError, match="pass prior="):
        m(x)
    with pytest.raises(InputError, match="needs a motion_prior"):
        small("lupin", motion_correction=False)
    # the same computation as a zero correction (a fresh motion_prior model)
    z = small("lupin", motion_prior="lk")
    z.advection_net.load_state_dict(m.advection_net.state_dict())
    torch.testing.assert_close(z.eval()(x, prior=prior), m.eval()(x, prior=prior))


def test_divergence_penalty():
    yy, xx = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    rot = torch.stack([-(yy - H / 2), xx - W / 2])[None] * 0.1  # solid-body rotation: divergence-free
    assert float(LUPIN.divergence_penalty(rot)) < 1e-20
    div = torch.stack([xx, yy])[None] * 0.5  # divergence 1 everywhere
    assert float(LUPIN.divergence_penalty(div)) == pytest.approx(1.0)
    assert small("lupin").divergence_penalty(rot).ndim == 0
    # LUPIN's code's form: sum |Sobel divergence| over the interior / (B H W); Sobel = 8x centred differences
    assert float(LUPIN.divergence_penalty(rot, form="sobel")) < 1e-12
    expect = 8.0 * (H - 2) * (W - 2) / (H * W)
    assert float(LUPIN.divergence_penalty(div, form="sobel")) == pytest.approx(expect)
    m = torch.randn(2, 2, 7, 9, dtype=torch.float64)
    u, v = m[:, 0].numpy(), m[:, 1].numpy()
    sx = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
    ref = sum(abs(sum(sx[a][b] * (u[n, i + a - 1, j + b - 1] + v[n, i + b - 1, j + a - 1])
                      for a in range(3) for b in range(3)))
              for n in range(2) for i in range(1, 6) for j in range(1, 8)) / (2 * 7 * 9)
    assert float(LUPIN.divergence_penalty(m, form="sobel")) == pytest.approx(ref)
    assert torch.autograd.gradcheck(lambda t: LUPIN.divergence_penalty(t, form="sobel"), (m.requires_grad_(),))
    with pytest.raises(InputError, match="squared' or 'sobel"):
        LUPIN.divergence_penalty(m, form="abs")


def test_freeze_motion():
    m = small("lupin").train()
    m.freeze_motion()
    assert m.motion_frozen and not m.motion_net.training and m.advection_net.training
    m.train()
    assert not m.motion_net.training  # stays in eval mode (no dropout) while frozen
    m(rain(1, 6)).sum().backward()
    assert all(p.grad is None for p in m.motion_net.parameters())
    assert m.advection_net.encoder[0][0].weight.grad.abs().sum() > 0
    m.freeze_motion(False)
    m.zero_grad()
    assert m.motion_net.training
    m(rain(1, 6)).sum().backward()
    assert m.motion_net.encoder[0][0].weight.grad.abs().sum() > 0


def test_lagrangian_stack_aligns_frames():
    frames = rain(1, 5, seed=3).double()  # drifting +1 px/step in x
    v = torch.zeros(1, 2, H, W, dtype=torch.float64)
    v[:, 0] = 1.0
    lag = lagrangian_stack(frames, v)
    assert lag.shape == frames.shape
    assert torch.equal(lag[:, -1], frames[:, -1])
    # frame t-k advected k steps lands on frame t (away from the inflow edge)
    assert torch.allclose(lag[..., 5:], frames[:, -1:, :, 5:].expand_as(lag[..., 5:]), atol=1e-9)
    assert torch.equal(lagrangian_stack(frames, torch.zeros_like(v)), frames)


def test_gaussian_blur_keeps_constants():
    c = torch.full((1, 2, 9, 13), 3.0, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(c, 127.0, 255), c)
    x = torch.randn(1, 1, 9, 13, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(x, 1e4), x.mean().expand_as(x), atol=1e-6)
    assert torch.equal(gaussian_blur(x, 0.0), x)


@pytest.mark.parametrize("sigma,size", [(127.0, 255), (6.0, 37), (1.5, 9)])
def test_gaussian_blur_matrix_form_equals_convolution(monkeypatch, sigma, size):  # noqa: ANN001
    # wide kernels run as a matrix product; both forms give the same normalised convolution, and its gradient
    from skydiff.nowcast.models import blocks

    x = torch.randn(2, 2, 40, 57, dtype=torch.float64)
    monkeypatch.setattr(blocks, "_MATMUL_MIN_TAPS", 10**9)
    conv = gaussian_blur(x, sigma, size)
    monkeypatch.setattr(blocks, "_MATMUL_MIN_TAPS", 1)
    mat = gaussian_blur(x, sigma, size)
    torch.testing.assert_close(mat, conv, rtol=1e-12, atol=1e-12)
    xg = torch.randn(1, 1, 7, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: gaussian_blur(a, sigma, size), (xg,))


def test_gaussian_blur_keeps_precision_under_autocast():
    # the blur is physics: inside torch.autocast (predict(precision="bfloat16")) it stays in the input's dtype
    x = torch.randn(1, 2, 30, 41)
    ref = gaussian_blur(x, 127.0, 255)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = gaussian_blur(x, 127.0, 255)
        small_k = gaussian_blur(x, 1.5, 9)
    assert out.dtype == small_k.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_gaussian_blur_matrices_cached_across_inference_and_training():
    # the blur matrices are cached; one first built under inference_mode must still serve a training step
    from skydiff.nowcast.models import blocks

    blocks._blur_operator.cache_clear()
    x = torch.randn(1, 2, 21, 23, dtype=torch.float64)
    with torch.inference_mode():
        a = gaussian_blur(x, 30.0, 61)
    xg = x.clone().requires_grad_(True)
    b = gaussian_blur(xg, 30.0, 61)
    b.square().sum().backward()
    assert blocks._blur_operator.cache_info().hits >= 2 and xg.grad is not None
    torch.testing.assert_close(a, b.detach())


def test_predict_precision_option():
    m = small("lupin").eval()
    x = rain(1, m.n_input_frames)
    with pytest.raises(InputError, match="precision must be"):
        m.predict(x, 1, precision="int8")
    full = m.predict(x, 2, precision="full")
    torch.testing.assert_close(full, m.predict(x, 2))
    amp = m.predict(x, 2, precision="bfloat16")
    assert amp.dtype == torch.float32 and amp.shape == full.shape
    # native bfloat16 kernels (a CPU with AMX/AVX512-BF16) round differently from emulated ones: on an Intel Xeon with
    # AMX the largest difference was 5.2 % of the largest value (2.2 % relative l2), under 5 % on the AMD EPYC
    d = amp - full
    assert d.norm() < 0.05 * full.norm() and d.abs().max() < 0.10 * full.abs().max() + 1e-3


def test_mixed_precision_on_a_cpu_without_native_support_warns(monkeypatch):
    """bfloat16 autocast on a CPU without AVX512-BF16/AMX is slower than float32 (RESULTS §5: 2-9x on AVX2), so
    predict() says so; on a CPU with it, or in full precision, nothing is said."""
    from skydiff import _compat
    from skydiff.errors import SkydiffWarning

    m = small("rainnet").eval()
    x = rain(1, m.n_input_frames)
    monkeypatch.setattr(_compat, "cpu_lacks_fast", lambda precision: True)
    with pytest.warns(SkydiffWarning, match="slower than full precision"):
        m.predict(x, 1, precision="bfloat16")
    monkeypatch.setattr(_compat, "cpu_lacks_fast", lambda precision: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SkydiffWarning)
        m.predict(x, 1, precision="bfloat16")
        m.predict(x, 1)
    assert isinstance(_compat.cpu_lacks_fast("float16"), bool)


def test_predict_min_rain_cuts_the_output_only():
    """predict(min_rain=X): outputs below X become 0, the rest (and NaN) unchanged, nothing fed back; the model's
    min_rain attribute is the default; bad values refused."""
    m = small("rainnet").eval()
    x = rain(1, m.n_input_frames)
    x[..., :3, :] = float("nan")
    full = m.predict(x, 3)
    X = float(full[full > 0].median())  # an untrained network: cut at the median of its wet outputs
    cut = m.predict(x, 3, min_rain=X)
    low = full < X
    assert bool(low.any()) and bool((full >= X).any())
    assert bool((cut[low] == 0).all())
    torch.testing.assert_close(cut[~low], full[~low], equal_nan=True)  # also the NaN rows, and later leads
    m.min_rain = X
    torch.testing.assert_close(m.predict(x, 3), cut, equal_nan=True)
    torch.testing.assert_close(m.predict(x, 3, min_rain=0), full, equal_nan=True)
    for bad in (-0.1, float("nan"), "0.1", True):
        with pytest.raises(InputError, match="min_rain"):
            m.predict(x, 1, min_rain=bad)


def test_predict_prob_match_gives_the_last_frame_distribution():
    """predict(prob_match="cdf"): every lead time is the plain nowcast CDF-matched to the last input frame on the
    pixels with data (match_cdf, checked against pysteps in test_nowcast_postprocess.py); NaN stays NaN; "none" is
    the plain nowcast; the attribute is the default; the min_rain cut comes after the matching; bad names refused."""
    from skydiff.nowcast.postprocess import match_cdf

    m = small("rainnet").eval()
    x = rain(1, m.n_input_frames)
    x[x < x.median()] = 0.0
    x[..., :3, :] = float("nan")
    plain = m.predict(x, 3, prob_match="none")
    matched = m.predict(x, 3, prob_match="cdf")
    valid = ~torch.isnan(x[0]).all(dim=0)
    want = match_cdf(torch.nan_to_num(plain), torch.nan_to_num(x[:, -1]), valid[None])
    torch.testing.assert_close(matched[:, :, valid], want[:, :, valid], rtol=0, atol=0)
    for t in range(3):
        p, q = plain[0, t][valid], matched[0, t][valid]
        assert bool((torch.diff(q[torch.argsort(p, stable=True)]) >= 0).all())  # the plain nowcast's order is kept
        assert float(q.max()) == float(torch.nan_to_num(x[0, -1]).max())  # the observed peak, not a smoothed one
    assert torch.equal(torch.isnan(matched), torch.isnan(plain)) and bool(torch.isnan(matched[..., :3, :]).all())
    assert not torch.allclose(torch.nan_to_num(matched), torch.nan_to_num(plain))
    m.prob_match = "cdf"
    torch.testing.assert_close(m.predict(x, 3), matched, equal_nan=True)
    cut = m.predict(x, 3, min_rain=1.0)
    torch.testing.assert_close(cut, matched.masked_fill(matched < 1.0, 0.0), equal_nan=True)
    for bad in ("CDF", "mean", None, 1):
        m.prob_match = bad
        with pytest.raises(InputError, match="prob_match"):
            m.predict(x, 1)


# --------------------------------------------------------------------------------------------------------------
# L-CNN


def test_lcnn_with_velocity_and_inputs():
    m = small("lcnn")
    x = rain(1, 5)
    v = torch.zeros(2, H, W)
    v[0] = 1.0
    d, last = m.lagrangian_inputs(x, v[None])
    assert d.shape == (1, 4, H, W) and last.shape == (1, 1, H, W)
    assert d[..., 6:].abs().max() < 0.5  # the drift is removed: Lagrangian differences are small
    out = m.predict(x, 2, velocity=v)
    assert out.shape == (1, 2, H, W) and torch.isfinite(out).all()
    with pytest.raises(ShapeError):
        m.predict(x, 2, velocity=torch.zeros(2, H, W + 1))


# --------------------------------------------------------------------------------------------------------------
# registry and weights


def test_registry_lists_and_unknown():
    assert set(NAMES) <= set(list_models())
    with pytest.raises(InputError, match="available: .*lcnn.*lupin.*rainnet.*smaat"):
        create_model("nope")
    assert isinstance(create_model("RainNet", base_channels=4), RainNet)
    with pytest.raises(InputError, match="no option.*base_width.*base_channels"):
        create_model("lupin", base_width=8)
    with pytest.raises(InputError, match="unexpected options"):
        small("lcnn").predict(rain(1, 5), 1, motion="vet")
    with pytest.raises(InputError, match="unexpected options"):
        small("rainnet").predict(rain(1, 4), 1, velocity=None)
    # audit: a misspelt kind listed nothing, and a misspelt name gave no hint
    with pytest.raises(InputError, match="unknown model kind 'nowcats'.*nowcast"):
        registry.list_models(kind="nowcats")
    with pytest.raises(InputError, match="did you mean 'rainnet'"):
        create_model("rainet")
    with pytest.raises(InputError, match="pattern must be a string"):
        registry.list_models(3)


def test_save_model_refuses_a_folder_and_keeps_the_card_dtype_true(tmp_path):
    """save_model(m, "dir/") wrote dir.safetensors beside the folder; a re-saved shipped model kept its card's
    "weights_dtype": "float16" over float32 weights."""
    m = small("rainnet")
    m.card = {"weights_dtype": "float16", "description": "x"}
    with pytest.raises(InputError, match="is a folder"):
        save_model(m, tmp_path)
    assert not list(tmp_path.parent.glob(f"{tmp_path.name}.*"))
    _, js = save_model(m, tmp_path / "again")
    card = json.loads(js.read_text())["card"]
    assert card == {"weights_dtype": "float32", "description": "x"}
    with pytest.raises(InputError, match="JSON-serialisable"):  # json's TypeError, before
        save_model(m, tmp_path / "bad", card={"x": object()})
    assert not list(tmp_path.glob("bad*"))
    # a folder or a file that is no weights file was reported as a missing "<path>.safetensors"
    with pytest.raises(InputError, match="is a folder"):
        create_model("rainnet", pretrained=str(tmp_path))
    other = tmp_path / "notes.txt"
    other.write_text("x")
    with pytest.raises(InputError, match="is not skydiff weights"):
        create_model("rainnet", pretrained=str(other))


def test_pretrained_without_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(InputError, match="no shipped weights for smaat yet"):
        create_model("smaat", pretrained=True)


def test_shipped_weights_are_found(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    save_model(small("rainnet"), tmp_path / "rainnet", card={"note": "test"})
    m = create_model("rainnet", pretrained=True)  # config comes from rainnet.json
    assert m.config["base_channels"] == 8
    assert torch.equal(m.state_dict()["net.out.weight"], small("rainnet").state_dict()["net.out.weight"])


def test_mismatched_weights(tmp_path):
    save_model(small("rainnet"), tmp_path / "m")
    other = create_model("rainnet", base_channels=4)
    with pytest.raises(InputError, match=r"shape mismatch for net\.bottleneck"):
        load_weights(other, tmp_path / "m.safetensors")
    state = small("rainnet").state_dict()
    state.pop("net.out.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(InputError, match=r"missing keys net\.out\.bias.*unexpected keys extra\.weight"):
        load_weights(small("rainnet"), state)
    with pytest.raises(InputError, match="are for model 'rainnet', not 'lcnn'"):
        create_model("lcnn", pretrained=tmp_path / "m")
    save_model(small("lcnn"), tmp_path / "l")
    with pytest.raises(InputError, match=r"do not fit LCNN: shape mismatch for net\.encoder\.0\.0\.weight"):
        create_model("lcnn", pretrained=tmp_path / "l", in_frames=6)  # 5 vs 4 input channels
    # without its .json card: the name in the .safetensors metadata still tells (L-CNN and RainNet weights of the
    # default configs have the same keys and shapes, and loaded into each other silently)
    save_model(create_model("lcnn"), tmp_path / "e")
    (tmp_path / "e.json").unlink()
    with pytest.raises(InputError, match="are for model 'lcnn', not 'rainnet'"):
        create_model("rainnet", pretrained=tmp_path / "e")
    assert create_model("lcnn", pretrained=tmp_path / "e") is not None
    # pretrained as a numpy boolean is a boolean (it was taken for a path); a card with "config": null or a
    # "predict" value of the wrong type is refused; a model loaded with a card writes it again by default
    import numpy as _np

    assert create_model("lcnn", pretrained=_np.False_) is not None
    save_model(small("rainnet"), tmp_path / "c", card={"licence": "CC BY 4.0"})
    assert json.loads(save_model(load_model(tmp_path / "c"), tmp_path / "c2")[1].read_text())["card"] == {
        "licence": "CC BY 4.0"}
    meta = json.loads((tmp_path / "c.json").read_text())
    (tmp_path / "c.json").write_text(json.dumps({**meta, "config": None}))
    with pytest.raises(SkydiffError, match="'config' must be an object"):
        load_model(tmp_path / "c")
    (tmp_path / "c.json").write_text(json.dumps({**meta, "predict": {"min_rain": "x"}}))
    with pytest.raises(InputError, match="min_rain must be a number"):
        load_model(tmp_path / "c")
    # a factory that passes **config on: an unknown option is an InputError too (was a TypeError)
    with pytest.raises(InputError, match="model 'edm-radar-tp'.*bogus"):
        create_model("edm-radar-tp", bogus=1)


def test_card_predict_defaults_round_trip(tmp_path):
    """A model's min_rain (predict's output cut) is written to its card under "predict" when it differs from the
    class default and set again on loading; unknown "predict" settings are refused."""
    m = small("rainnet")
    save_model(m, tmp_path / "plain")
    assert "predict" not in json.loads((tmp_path / "plain.json").read_text())
    m.min_rain = 0.2
    save_model(m, tmp_path / "cut")
    assert json.loads((tmp_path / "cut.json").read_text())["predict"] == {"min_rain": 0.2}
    assert load_model(tmp_path / "cut").min_rain == 0.2 and load_model(tmp_path / "plain").min_rain == 0.0
    meta = json.loads((tmp_path / "cut.json").read_text())
    meta["predict"]["nope"] = 1
    (tmp_path / "cut.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"unknown 'predict' setting\(s\) \['nope'\]"):
        load_model(tmp_path / "cut")


@pytest.mark.parametrize("name", NAMES)
def test_save_load_roundtrip(name, tmp_path):
    m = small(name, **({"depth": 3} if name == "smaat" else {})).eval()
    with torch.no_grad():  # make BatchNorm statistics non-trivial
        for k, v in m.state_dict().items():
            if k.endswith("running_mean"):
                v.uniform_(-0.1, 0.1)
    st, js = save_model(m, tmp_path / name)
    assert st.suffix == ".safetensors" and json.loads(js.read_text())["model"] == name
    m2 = load_model(tmp_path / f"{name}.safetensors").eval()
    assert type(m2) is type(m) and m2.config == m.config
    x = torch.rand(1, n_forward_channels(m), H, W)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


# --------------------------------------------------------------------------------------------------------------
# NaN and bad input


@pytest.mark.parametrize("name", NAMES)
def test_predict_nan_handling(name):
    m = small(name, **({"n_out": 2} if name == "smaat" else {}))
    n = 2
    x = rain(1, m.n_input_frames)
    x[:, :, :5, :7] = float("nan")  # no data in every frame -> NaN out
    x[:, -1, 20:25, 30:35] = float("nan")  # no data in one frame only -> read as dry, finite out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = m.predict(x, n)
    assert out.shape == (1, n, H, W)
    assert torch.isnan(out[:, :, :5, :7]).all()
    assert torch.isnan(out).sum() == n * 5 * 7
    rest = out.clone()
    rest[:, :, :5, :7] = 0.0
    assert torch.isfinite(rest).all() and (rest >= 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name):
    m = small(name)
    n = m.n_input_frames
    with pytest.raises(InputError, match=f"at least {n} input frames"):
        m.predict(rain(1, n - 1), 1)
    with pytest.raises(ShapeError):
        m.predict(torch.rand(H, W), 1)
    with pytest.raises(ShapeError):
        m.predict(torch.rand(1, 1, n, H, W), 1)
    with pytest.raises(InputError, match="leadtimes"):
        m.predict(rain(1, n), 0)
    with pytest.raises(InputError, match=">= 0"):
        m.predict(-rain(1, n) - 1.0, 1)
    with pytest.raises(ShapeError):
        m(torch.rand(1, n_forward_channels(m) + 1, H, W))
    with pytest.raises(ShapeError):
        m(torch.rand(n_forward_channels(m), H, W))


# --- predict() trims the no-data frame around the data --------------------------------------------------------


def test_data_window_snaps_to_the_padded_pooling_grid():
    from skydiff.nowcast.models.blocks import data_window

    nod = torch.ones(2, 101, 90, dtype=torch.bool)
    nod[0, 40:50, 30:41] = False  # data in one frame is enough
    rs, cs = data_window(nod, margin=5, multiple=16)
    # padded grid 112 x 96 (pads: top 5, left 3); rows 45..54 +- 5 -> [40, 60) -> blocks [32, 64)
    assert (rs.start, rs.stop) == (32, 64) and (cs.start, cs.stop) == (16, 64)
    assert all(v % 16 == 0 for v in (rs.start, rs.stop, cs.start, cs.stop))
    assert data_window(torch.ones(5, 5, dtype=torch.bool)) is None  # no data at all
    assert data_window(nod, margin=64, multiple=16) is None  # the window would be (nearly) the whole grid


LK_LUPIN = {"depth": 2, "motion_prior": "lk", "motion_correction": False, "motion_prior_kwargs": {"grid_stride": 4},
            "motion_blur_sigma": 12.0, "motion_blur_size": 73}


@pytest.mark.parametrize("name,kw,given", [
    ("rainnet", {"depth": 2}, False),
    ("lupin", {"depth": 2, "motion_depth": 2, "motion_blur_sigma": 12.0, "motion_blur_size": 73}, False),
    ("lcnn", {"depth": 2}, True),
    ("lcnn", {"depth": 2}, False),  # its LK flow estimated: on a window aligned to LK's 20-px declustering grid
    ("lupin", LK_LUPIN, False),  # the shipped kind of LUPIN: LK motion at grid_stride 4
])
def test_predict_trims_nodata_without_changing_the_nowcast(name, kw, given):
    """Data on a 40 x 48 patch of a 320 x 300 grid: the trimmed nowcast equals the whole-grid one on every pixel
    with data (the networks see the window with the whole grid's pooling phase; the zero-filled margin is wider
    than what the depth-2 U-Nets see; LUPIN's motion blur averages over the pixels with data only; an LK flow is
    estimated on a window that starts on its declustering grid, which gives the whole grid's flow), and is NaN
    elsewhere, like the whole-grid one."""
    m = small(name, **kw).eval()
    rng = np.random.default_rng(0)
    frames = np.full((m.n_input_frames, 320, 300), np.nan)
    yy, xx = np.mgrid[0:40, 0:48]
    for t in range(m.n_input_frames):
        frames[t, 143:183, 130:178] = 3.0 * np.exp(-((yy - 20.0) ** 2 + (xx - 14.0 - 2 * t) ** 2) / 60.0) \
            + 0.2 * rng.random((40, 48))
    extra = {"velocity": np.stack([np.full((320, 300), 2.0), np.full((320, 300), 0.5)])} if given else {}
    calls = []
    orig = type(m)._predict

    def spy(self, x, leadtimes, **k):
        calls.append(tuple(x.shape[-2:]))
        return orig(self, x, leadtimes, **k)

    type(m)._predict = spy
    try:
        whole, v_whole = m.predict(frames, 3, trim_nodata=False, return_motion=True, **extra)
        trimmed, v_trim = m.predict(frames, 3, return_motion=True, **extra)
    finally:
        type(m)._predict = orig
    assert calls[0] == (320, 300) and calls[1][0] * calls[1][1] < 0.5 * 320 * 300  # really trimmed
    assert np.array_equal(np.isnan(whole), np.isnan(trimmed))
    assert np.isfinite(trimmed[:, 143:183, 130:178]).all() and np.isnan(trimmed[:, :140]).all()
    ok = np.isfinite(whole)
    atol = 1e-4
    if name == "lcnn":  # L-CNN zeroes rain below 0.1 mm/h: float rounding may flip pixels at that edge (0 <-> ~0.1),
        flip = ok & ((trimmed == 0) != (whole == 0))  # and the advection of the flipped pixels spreads that a little
        assert (np.maximum(trimmed, whole)[flip] < 0.2).all() and flip.sum() < 0.05 * ok.sum()
        ok &= ~flip
        atol = 0.02
    np.testing.assert_allclose(trimmed[ok], whole[ok], rtol=1e-3, atol=atol)
    assert float(np.nanmax(whole)) > 0.5  # a real nowcast, not a dry one
    if v_whole is not None and not given:  # the estimated flow: the whole grid's, inside the window
        inside = np.isfinite(v_trim)
        assert inside[:, 143:183, 130:178].all() and np.abs(v_whole).max() > 0.5
        np.testing.assert_allclose(v_trim[inside], v_whole[inside], atol=1e-4)


@pytest.mark.parametrize("name,kw", [("rainnet", {"depth": 2}), ("lupin", LK_LUPIN)])
def test_predict_trims_data_that_touch_the_grid_edge_like_the_whole_grid(name, kw):
    """Data in the bottom-left corner of the grid: the window reaches the grid's edge, where the whole grid is
    padded by reflection. The trimmed model runs its physics on the grid (as the whole grid does: dry inflow
    across the edge) and its U-Nets pad that side as the whole grid's (forced_pads); an earlier version cut the
    window out of the reflect-padded grid, which advected mirrored rain in (LUPIN: 0.77 mm/h off)."""
    m = small(name, **kw).eval()
    n = m.n_input_frames
    rng = np.random.default_rng(0)
    frames = np.full((n, 301, 290), np.nan, np.float32)
    yy, xx = np.mgrid[0:60, 0:70]
    for t in range(n):
        frames[t, 241:301, 0:70] = 3.0 * np.exp(-((yy - 30.0) ** 2 + (xx - 20.0 - 2 * t) ** 2) / 80.0) \
            + 0.3 * rng.random((60, 70))
    extra = {"velocity": np.stack([np.full((301, 290), 1.0), np.full((301, 290), 0.8)])} if name == "lupin" else {}
    whole = m.predict(frames, 3, trim_nodata=False, **extra)
    trimmed = m.predict(frames, 3, **extra)
    ok = np.isfinite(whole)
    assert np.array_equal(ok, np.isfinite(trimmed)) and float(np.nanmax(whole)) > 0.5
    np.testing.assert_allclose(trimmed[ok], whole[ok], atol=1e-4)


def test_predict_trims_each_sequence_of_a_batch_on_its_own():
    """A batch of a sequence with data on a patch and one with data everywhere: each gets its own window, so the
    first one's nowcast is the same alone or batched (the window was the batch's union: SmaAt-UNet's attention
    then saw another grid, 1.5 mm/h off on KNMI frames). A batched velocity goes with its sequence."""
    m = small("smaat", n_out=2).eval()
    rng = np.random.default_rng(0)
    n = m.n_input_frames
    a = np.full((n, 256, 240), np.nan, np.float32)
    a[:, 100:150, 90:150] = 2.0 * rng.random((n, 50, 60))
    b = (2.0 * rng.random((n, 256, 240))).astype(np.float32)
    alone = m.predict(a, 2)
    both = m.predict(np.stack([a, b]), 2)
    np.testing.assert_allclose(both[0], alone, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(both[1], m.predict(b, 2), atol=1e-5)
    lc = small("lcnn", depth=2).eval()
    k = lc.n_input_frames
    v = np.stack([np.stack([np.full((256, 240), 1.0), np.full((256, 240), 0.5)]),
                  np.stack([np.full((256, 240), -1.0), np.full((256, 240), 0.0)])])
    pair = lc.predict(np.stack([a[-k:], b[-k:]]), 2, velocity=v)
    np.testing.assert_allclose(pair[0], lc.predict(a[-k:], 2, velocity=v[0]), atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(pair[1], lc.predict(b[-k:], 2, velocity=v[1]), atol=1e-5)


def test_predict_lead_times_are_the_direct_models_first_steps_and_mixed_depths_are_not_trimmed():
    # a SmaAt-UNet of steps (6,) returned its +30 min field as lead 1 of predict()
    m = small("smaat", n_out=1).eval()
    frames = np.random.default_rng(0).random((m.n_input_frames, 32, 32)).astype(np.float32)
    with pytest.raises(InputError, match=r"predicts the steps \[6\], not the consecutive lead times 1 .. 1"):
        m.predict(frames, 1)
    assert small("smaat", n_out=2).predict(frames, 2).shape == (2, 32, 32)
    # U-Nets of different depths: one window cannot keep both pooling phases, so predict() runs the whole grid
    assert small("lupin", depth=2, motion_depth=3)._pad_grid() is None
    assert small("lupin", depth=2, motion_depth=2)._pad_grid() == (4, "reflect")


def test_masked_gaussian_blur_ignores_no_data_and_has_gradients():
    from skydiff.nowcast.models.blocks import gaussian_blur

    torch.manual_seed(0)
    x = torch.full((1, 2, 40, 50), 3.0, dtype=torch.float64)
    valid = torch.zeros(1, 1, 40, 50, dtype=torch.float64)
    valid[..., 10:30, 15:35] = 1.0
    x = torch.where(valid.bool(), x, 100.0 * torch.randn(1, 2, 40, 50, dtype=torch.float64))  # junk outside
    plain = gaussian_blur(x, 6.0)
    masked = gaussian_blur(x, 6.0, weight=valid)
    inside = valid.bool().expand_as(x)
    assert (plain[inside] - 3.0).abs().max() > 1.0  # the junk leaks into the plain blur ...
    assert (masked[inside] - 3.0).abs().max() < 0.05  # ... and (almost) not into the masked one
    assert torch.isfinite(masked).all()  # far from the data: finite (MASK_FLOOR)
    assert torch.equal(gaussian_blur(x, 6.0, weight=torch.ones_like(valid)), plain)  # all-ones mask = plain blur
    xs = torch.randn(1, 2, 9, 11, dtype=torch.float64, requires_grad=True)
    vs = (torch.rand(1, 1, 9, 11, dtype=torch.float64) > 0.4).double()
    assert torch.autograd.gradcheck(lambda t: gaussian_blur(t, 2.0, weight=vs), (xs,))


@pytest.mark.parametrize("name", NAMES)
def test_predict_refuses_grids_smaller_than_the_network_block(name):
    # audit of the ninth session: 3 x 3 and 5 x 5 grids gave nowcasts of padding
    from skydiff.errors import ShapeError

    m = create_model(name)
    g = m.min_grid()
    assert g >= 16
    x = np.random.default_rng(0).random((m.n_input_frames, g - 1, g + 5)).astype(np.float32)
    with pytest.raises(ShapeError, match=f"at least {g} x {g} pixels"):
        m.predict(x, 1)
