"""Tests of SpaT-SparK (skydiff.nowcast.models.spatspark) and its two training recipes.

Tiny networks (base width 4, two stages, depth 3 = 8-pixel patches), one torch thread, synthetic rain.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import rain
from skydiff.errors import InputError, ShapeError
from skydiff.nowcast.models import SparKPretrain, SpaTSparK, create_model, list_models, load_model, save_model
from skydiff import registry
from skydiff.nowcast.models.spatspark import (
    MaskedBatchNorm2d,
    SparseResNet,
    expand_active,
    finetune_config_from_pretrain,
    init_from_pretrain,
    patch_stats,
    random_patch_mask,
    reconstruction_loss,
    ssim,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ARCH = {"in_frames": 4, "base_width": 4, "layers": [1, 1], "depth": 3, "dec_width": 16}


def tiny(**kw) -> SpaTSparK:
    torch.manual_seed(0)
    return SpaTSparK(**{**ARCH, "n_out": 3, **kw})


def tiny_pretrain(**kw) -> SparKPretrain:
    torch.manual_seed(1)
    return SparKPretrain(**{**ARCH, **kw})




def randomise_bn(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k.endswith("running_mean"):
                v.uniform_(-0.1, 0.1)
            elif k.endswith("running_var"):
                v.uniform_(0.5, 1.5)


# --------------------------------------------------------------------------------------------------------------
# shapes


@pytest.mark.parametrize("hw", [(32, 32), (40, 52), (17, 23), (64, 24)])
def test_shapes_any_grid(hw):
    m = tiny()
    x = torch.rand(2, 4, *hw) * 0.01
    assert m(x).shape == (2, 3, *hw)
    p = tiny_pretrain()
    out = p(x)
    H, W = hw
    gh, gw = -(-H // 8), -(-W // 8)
    assert out["rec"].shape == out["rec_data"].shape == (2, 4, H, W)
    assert out["active"].shape == (2, 1, gh, gw) and out["active_pixels"].shape == (2, 1, H, W)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    # 60 % of the patches are masked (at least one visible)
    assert int(out["active"][0].sum()) == max(1, round(gh * gw * 0.4))


@pytest.mark.parametrize("kw", [{"depth": 2}, {"depth": 1}, {"block": "basic"}, {"layers": [1, 1, 1], "depth": 4}])
def test_encoder_variants(kw):
    m = tiny(**kw)
    x = torch.rand(1, 4, 24, 40) * 0.01
    assert m(x).shape == (1, 3, 24, 40)
    enc = m.backbone.encoder
    feats = enc(torch.rand(1, 4, 32, 32))
    n = len(kw.get("layers", [1, 1]))
    assert len(feats) == n
    depth = kw.get("depth", 3)
    assert feats[-1].shape[-1] == 32 // 2**depth  # deepest stage at the total stride
    assert [f.shape[1] for f in feats] == enc.widths


def test_default_model_and_reference_widths():
    m = SpaTSparK()
    assert (m.n_input_frames, m.n_out, m.patch) == (12, 12, 32)
    assert m.backbone.encoder.widths == [64, 128, 256, 512]
    with torch.no_grad():
        assert m(torch.rand(1, 12, 40, 52) * 0.01).shape == (1, 12, 40, 52)
    # the reference "ResNet-18": Bottleneck [2, 2, 2, 2] with widths 256 ... 2048 (built, not run)
    enc = SparseResNet(12, base_width=64, layers=(2, 2, 2, 2), depth=5)
    assert enc.widths == [256, 512, 1024, 2048] and enc.stem_stride == 4


def test_bad_configs():
    with pytest.raises(InputError, match="depth"):
        SpaTSparK(**{**ARCH, "depth": 5})  # 2 stages: the stem would need stride 16
    with pytest.raises(InputError, match="translation"):
        SpaTSparK(**ARCH, translation="lstm")
    with pytest.raises(InputError, match="translation_layers"):
        SpaTSparK(**ARCH, translation_layers=[1, 1, 1])
    with pytest.raises(InputError, match="mask_ratio"):
        SparKPretrain(**ARCH, mask_ratio=1.0)
    with pytest.raises(InputError, match="loss_on"):
        SparKPretrain(**ARCH, loss_on="visible")
    with pytest.raises(InputError, match="dec_width"):
        SpaTSparK(**{**ARCH, "dec_width": 4})
    with pytest.raises(InputError, match="output_norm"):
        SpaTSparK(**ARCH, output_norm="global")
    with pytest.raises(InputError, match="layers"):
        SpaTSparK(**{**ARCH, "layers": 2})
    m = tiny()
    with pytest.raises(ShapeError):
        m(torch.rand(1, 5, 16, 16))
    with pytest.raises(ShapeError, match="active"):
        m(torch.rand(1, 4, 16, 16), active=torch.ones(1, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(ShapeError):
        tiny_pretrain()(torch.rand(4, 16, 16))


# --------------------------------------------------------------------------------------------------------------
# sparse encoder


@pytest.mark.parametrize("train_mode", [True, False])
def test_sparse_encoder_does_not_leak(train_mode):
    torch.manual_seed(0)
    enc = SparseResNet(4, base_width=4, layers=(1, 1), depth=3)  # stem: strided conv + max-pool
    randomise_bn(enc)
    enc.train(train_mode)
    x = torch.rand(2, 4, 32, 40)
    active = random_patch_mask(2, (4, 5), 0.5, generator=torch.Generator().manual_seed(3))
    pix = expand_active(active, (32, 40))
    x2 = torch.where(pix, x, 100.0 * torch.rand_like(x) - 50.0)  # other values in the masked patches only
    with torch.no_grad():
        f1 = enc(x, active)
        f2 = enc(x2, active)
        d1 = enc(x)
        d2 = enc(x2)
    for a, b in zip(f1, f2):
        m = expand_active(active, a.shape[-2:]).expand_as(a)
        assert torch.allclose(a[m], b[m], atol=1e-5, rtol=0)  # visible features unchanged
        assert (a[~m] == 0).all() and (b[~m] == 0).all()  # masked positions stay empty
        assert a[m].abs().max() > 0
    # the dense network (same weights) does see the masked content: the check above can fail
    m0 = expand_active(active, d1[0].shape[-2:]).expand_as(d1[0])
    assert not torch.allclose(d1[0][m0], d2[0][m0], atol=1e-3)


def test_masked_batchnorm_uses_active_positions_only():
    torch.manual_seed(0)
    bn = MaskedBatchNorm2d(3, momentum=0.3)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
        bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    ref = torch.nn.BatchNorm1d(3, momentum=0.3)
    ref.load_state_dict(bn.state_dict())
    x = torch.randn(2, 3, 8, 8)
    active = torch.tensor([[[[True, False], [False, True]]], [[[False, False], [True, True]]]])
    m = expand_active(active, (8, 8))
    x = torch.where(m, x, torch.full_like(x, 1e4))  # huge values in the masked positions
    y = bn(x, active)
    sel = x.permute(0, 2, 3, 1)[m[:, 0]]  # (N_active, C)
    y_ref = ref(sel)
    assert torch.allclose(y.permute(0, 2, 3, 1)[m[:, 0]], y_ref, atol=1e-5)
    assert (y.permute(0, 2, 3, 1)[~m[:, 0]] == 0).all()
    assert torch.allclose(bn.running_mean, ref.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, ref.running_var, atol=1e-5)
    assert int(bn.num_batches_tracked) == 1
    # the statistics ignore the masked values: a plain BatchNorm2d over everything would differ
    assert not torch.allclose(torch.nn.BatchNorm2d(3)(x).permute(0, 2, 3, 1)[m[:, 0]], y_ref, atol=1e-2)
    # eval mode: running statistics
    bn.eval()
    ref.eval()
    assert torch.allclose(bn(x, active).permute(0, 2, 3, 1)[m[:, 0]], ref(sel), atol=1e-5)
    # active=None: ordinary batch norm
    assert torch.allclose(bn(x), torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight,
                                                                bn.bias, False, 0.0, bn.eps), atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# pretraining loss


def test_patch_stats_and_normalised_target():
    x = torch.arange(2 * 2 * 4 * 4, dtype=torch.float64).reshape(2, 2, 4, 4)
    mean, std = patch_stats(x, 2)
    patch = x[1, :, 2:4, 0:2].reshape(-1)  # sample 1, patch row 1, col 0
    assert mean[1, 0, 1, 0] == pytest.approx(float(patch.mean()))
    assert std[1, 0, 1, 0] == pytest.approx(float(torch.sqrt(patch.var(unbiased=True) + 1e-6)))
    # the normalised target has zero loss, anything else a positive one
    active = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    target = (x - expand_active(mean, (4, 4))) / expand_active(std, (4, 4))
    assert float(reconstruction_loss(target, x, active, 2, "all")) == pytest.approx(0.0, abs=1e-12)
    assert float(reconstruction_loss(target + 0.5, x, active, 2, "all")) == pytest.approx(0.25)


def test_pretrain_loss_on_masked_patches_only():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    active = torch.tensor([[[[True, False], [False, True]]], [[[True, True], [False, True]]]])
    vis = expand_active(active, (16, 16)).expand(2, 3, 16, 16)
    for loss_on in ("masked", "all"):
        rec = torch.randn(2, 3, 16, 16, requires_grad=True)
        reconstruction_loss(rec, x, active, 8, loss_on).backward()
        g = rec.grad
        assert g[~vis].abs().min() > 0  # every masked pixel is scored
        if loss_on == "masked":
            assert (g[vis] == 0).all()  # visible patches do not count
        else:
            assert g[vis].abs().min() > 0
    # invalid pixels (no data, padding) do not count either
    rec = torch.randn(2, 3, 16, 16, requires_grad=True)
    valid = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    valid[:, :, :3] = False
    reconstruction_loss(rec, x, active, 8, "all", valid).backward()
    assert (rec.grad[:, :, :3] == 0).all() and rec.grad[:, :, 3:].abs().min() > 0

    # the model: its loss is the function's, and with loss_on="masked" changing the visible reconstruction
    # cannot change it; the encoder input is zero inside the masked patches
    p = tiny_pretrain(loss_on="masked").eval()
    x = torch.rand(2, 4, 16, 24) * 0.02
    act = torch.tensor([[[[True, False, True], [False, True, False]]], [[[False, True, True], [True, False, True]]]])
    out = p(x, act)
    assert torch.equal(out["active"], act)
    loss = float(reconstruction_loss(out["rec"].detach(), x, act, 8, "masked"))
    assert float(out["loss"].detach()) == pytest.approx(loss, rel=1e-6)
    assert torch.allclose(out["rec_data"], out["rec"] * expand_active(patch_stats(x, 8)[1], (16, 24))
                          + expand_active(patch_stats(x, 8)[0], (16, 24)), atol=1e-6)
    vis = expand_active(act, (16, 24)).expand_as(x)
    x2 = torch.where(vis, x, torch.rand_like(x))
    enc_in = []
    hook = p.backbone.encoder.stem_conv.register_forward_pre_hook(lambda mod, args: enc_in.append(args[0]))
    p(x2, act)
    hook.remove()
    assert (enc_in[0][~vis] == 0).all() and torch.equal(enc_in[0][vis], x2[vis])


def test_pretrain_mask_is_reproducible_with_a_generator():
    p = tiny_pretrain()
    x = torch.rand(2, 4, 32, 32)
    a = p(x, generator=torch.Generator().manual_seed(5))["active"]
    b = p(x, generator=torch.Generator().manual_seed(5))["active"]
    c = p(x, generator=torch.Generator().manual_seed(6))["active"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    rec = p.reconstruct(rain(1, 4, 32, 32), active=torch.ones(1, 1, 4, 4, dtype=torch.bool))
    assert rec["rec"].shape == (1, 4, 32, 32) and (rec["rec"] >= 0).all()


# --------------------------------------------------------------------------------------------------------------
# the nowcasting model


def test_output_denormalised_with_input_patch_statistics():
    m = tiny(n_out=2).eval()
    with torch.no_grad():  # a zero decoder output
        m.backbone.decoder.head.weight.zero_()
        m.backbone.decoder.head.bias.zero_()
    x = torch.rand(1, 4, 16, 24) * 0.05
    y = m(x)
    mean, _ = patch_stats(x, 8)
    assert torch.allclose(y, expand_active(mean, (16, 24)).expand(1, 2, 16, 24), atol=1e-7)
    with torch.no_grad():
        m.backbone.decoder.head.bias.fill_(1.0)  # rec = 1 -> mean + std
    _, std = patch_stats(x, 8)
    assert torch.allclose(m(x), expand_active(mean + std, (16, 24)).expand(1, 2, 16, 24), atol=1e-6)
    # output_norm="none": the decoder output itself
    n = tiny(n_out=2, output_norm="none").eval()
    with torch.no_grad():
        n.backbone.decoder.head.weight.zero_()
        n.backbone.decoder.head.bias.fill_(0.25)
    assert torch.allclose(n(x), torch.full((1, 2, 16, 24), 0.25))


def test_translation_none_ablation():
    full = tiny(translation="conv_tanh")
    abl = tiny(translation="identity")  # alias of "none"
    assert abl.translation is None and abl.config["translation"] == "none"
    assert full.translation is not None and full.config["translation_layers"] == [2, 2]
    assert not any(k.startswith("translation.") for k in abl.state_dict())
    assert full.n_parameters() > abl.n_parameters()
    x = torch.rand(2, 4, 16, 16) * 0.02
    assert abl(x).shape == full(x).shape == (2, 3, 16, 16)
    # same backbone weights, different outputs: the translation network does something (training-mode batch
    # norm, raw decoder output: at initialisation the eval-mode decoder output is ~1e-7)
    full, abl = tiny(output_norm="none"), tiny(translation="none", output_norm="none")
    abl.load_state_dict({k: v for k, v in full.state_dict().items() if not k.startswith("translation.")})
    with torch.no_grad():
        ya, yf = abl(x), full(x)
    assert not torch.allclose(ya, yf, atol=1e-3 * float(yf.abs().max()))
    # an identity-initialised translation with 0 layers at some scales
    ident = tiny(translation_layers=[1, 0], translation_init="identity")
    conv = ident.translation.nets[0][0]
    assert torch.equal(conv.weight[:, :, 1, 1], torch.eye(conv.weight.shape[0])) and isinstance(
        ident.translation.nets[1], torch.nn.Identity)


def test_finetune_masking_options():
    # raw decoder outputs (output_norm="none"), compared relative to their (small, at initialisation) size
    m = tiny(mask_ratio=0.5, output_norm="none")
    x = torch.rand(2, 4, 32, 32) * 0.02
    m.eval()
    with torch.no_grad():
        dense = m(x)
        assert torch.equal(dense, m(x))  # no mask in eval mode by default
        assert torch.equal(dense, tiny(mask_ratio=0.0, output_norm="none").eval()(x))
        m.train()
        assert not torch.allclose(m(x), m(x), rtol=1e-2, atol=0)  # a new random mask in every training step
    r = tiny(mask_ratio=0.5, mask_at_eval=True, output_norm="none").eval()
    with torch.no_grad():
        assert not torch.allclose(r(x), dense, rtol=1e-2, atol=0)  # the reference's random evaluation mask


def test_predict_nan_and_inputs():
    m = tiny()
    x = rain(1, 4)
    x[:, :, :5, :7] = float("nan")  # no data in every frame -> NaN out
    x[:, -1, 20:25, 30:35] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = m.predict(x, 2)
    assert out.shape == (1, 2, 40, 52)
    assert torch.isnan(out[:, :, :5, :7]).all() and int(torch.isnan(out).sum()) == 2 * 5 * 7
    rest = out.clone()
    rest[:, :, :5, :7] = 0.0
    assert torch.isfinite(rest).all() and (rest >= 0).all()
    np_out = m.predict(rain(1, 6)[0].numpy(), 3)  # (T, H, W) numpy in, the last 4 frames are used
    assert isinstance(np_out, np.ndarray) and np_out.shape == (3, 40, 52)
    with pytest.raises(InputError, match="predicts 3 lead time"):
        m.predict(rain(1, 4), 4)
    with pytest.raises(InputError, match="at least 4 input frames"):
        m.predict(rain(1, 3), 1)
    with pytest.raises(InputError, match=">= 0"):
        m.predict(-rain(1, 4) - 1.0, 1)
    with pytest.raises(InputError, match="unexpected options"):
        m.predict(rain(1, 4), 1, velocity=None)


# --------------------------------------------------------------------------------------------------------------
# registry, weights, initialisation from pretraining


def test_registry_save_load_roundtrip(tmp_path):
    assert {"spatspark", "spatspark-pretrain"} <= set(list_models())
    for model in (tiny(translation_layers=[1, 2]).eval(), tiny_pretrain().eval()):
        randomise_bn(model)
        st, js = save_model(model, tmp_path / model.model_name)
        assert json.loads(js.read_text())["model"] == model.model_name
        m2 = load_model(st).eval()
        assert type(m2) is type(model) and m2.config == model.config
        x = torch.rand(1, 4, 24, 16) * 0.02
        with torch.no_grad():
            if isinstance(model, SpaTSparK):
                assert torch.equal(model(x), m2(x))
            else:
                act = torch.ones(1, 1, 3, 2, dtype=torch.bool)
                act[0, 0, 1, 1] = False
                assert torch.equal(model(x, act)["rec"], m2(x, act)["rec"])
    m3 = create_model("spatspark", pretrained=tmp_path / "spatspark")
    assert m3.config["translation_layers"] == [1, 2]


def test_init_from_pretrain_copies_encoder_and_decoder(tmp_path):
    pre = tiny_pretrain()
    randomise_bn(pre)
    with torch.no_grad():
        for p in pre.parameters():
            p.add_(0.01)
    ft = SpaTSparK(**finetune_config_from_pretrain(pre.config), n_out=2)
    trans_before = {k: v.clone() for k, v in ft.state_dict().items() if k.startswith("translation.")}
    assert not torch.equal(ft.backbone.encoder.stem_conv.weight, pre.backbone.encoder.stem_conv.weight)
    report = init_from_pretrain(ft, pre)
    fs, ps = ft.state_dict(), pre.state_dict()
    for k, v in pre.encoder_state_dict().items():
        assert torch.equal(fs[f"backbone.encoder.{k}"], v)
    for k, v in pre.decoder_state_dict().items():
        if not k.startswith("decoder.head."):
            assert torch.equal(fs[f"backbone.{k}"], v)
    assert {"backbone.decoder.head.weight", "backbone.decoder.head.bias"} <= set(report["skipped"])  # 4 vs 2 channels
    assert not torch.equal(fs["backbone.decoder.head.weight"][:2], ps["backbone.decoder.head.weight"][:2])
    assert all(torch.equal(fs[k], v) for k, v in trans_before.items())  # translation untouched
    assert any(k.startswith("translation.") for k in report["skipped"])
    # n_out == in_frames: the head fits and is copied; from the exported file too
    save_model(pre, tmp_path / "pre")
    same = SpaTSparK(**ARCH, n_out=4)
    rep = same.load_pretrained(tmp_path / "pre")
    assert "backbone.decoder.head.weight" in rep["loaded"]
    assert torch.equal(same.state_dict()["backbone.decoder.head.weight"], ps["backbone.decoder.head.weight"])
    # another architecture does not fit
    with pytest.raises(InputError, match="do not fit"):
        init_from_pretrain(SpaTSparK(**{**ARCH, "base_width": 8}), pre)
    with pytest.raises(InputError, match="not found"):
        init_from_pretrain(same, tmp_path / "missing")


def test_forecast_interface(tmp_path, monkeypatch):
    from skydiff.nowcast import forecast

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "empty")
    frames = rain(1, 12)[0].numpy()
    with pytest.raises(InputError, match="no shipped weights for spatspark"):
        forecast(frames, 2, model="spatspark")
    save_model(SpaTSparK(**{**ARCH, "in_frames": 12}, n_out=3), tmp_path / "w")
    out = forecast(frames, 2, model="spatspark", weights=str(tmp_path / "w"))
    assert isinstance(out, np.ndarray) and out.shape == (2, 40, 52) and np.isfinite(out).all() and (out >= 0).all()


def test_ssim():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 20, 24)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-6)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    s = ssim(x, y)
    assert 0.0 < float(s) < 0.9
    assert float(ssim(y, x)) == pytest.approx(float(s), abs=1e-6)  # symmetric
    assert float(ssim(x, 1.0 - x)) < 0.0  # anti-correlated structure
    p = y.clone().requires_grad_(True)
    (1 - ssim(p, x)).backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


# --------------------------------------------------------------------------------------------------------------
# training


def _fixed_batch(n_in: int, n_out: int) -> dict:
    from skydiff.nowcast.data import RadarSequences
    from skydiff.nowcast.training import _collate
    from skydiff.synthetic import rain_sequence

    ds = RadarSequences([rain_sequence(10, (40, 48), seed=0)], n_in, n_out, crop=(32, 40), transform=None, seed=0)
    return _collate([ds[0], ds[3]])


@pytest.mark.parametrize("translation", ["conv_tanh", "none"])
def test_finetune_loss_decreases_on_a_fixed_batch(translation):
    from skydiff.nowcast.training import NowcastModule

    torch.manual_seed(0)
    module = NowcastModule("spatspark", {**ARCH, "n_out": 2, "translation": translation}, n_in=4, n_out=2)
    assert (module.loss_kind, module.optimizer_kind, module.scheduler, module.ssim_weight) == (
        "mse", "adamw", "cosine", 1e-4)
    batch = _fixed_batch(4, 2)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    module.train()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = module.compute_loss(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses[::5]


def _train_config(out: Path, name: str, model: dict, **training) -> dict:
    return {
        "out": str(out),
        "accelerator": "cpu",
        "model": {"name": name, **model},
        "data": {"source": "synthetic", "n_frames": 10, "shape": [40, 48], "crop": [32, 40], "batch_size": 2,
                 "n_sequences": 1, "n_val_sequences": 1},
        "training": {"max_steps": 2, "progress_bar": False, **training},
        "trainer": {"num_sanity_val_steps": 0, "limit_val_batches": 1, "log_every_n_steps": 1,
                    "enable_model_summary": False},
    }


def test_training_recipes_pretrain_then_finetune(tmp_path):
    from safetensors.torch import load_file

    from skydiff.nowcast.training import NowcastModule, recipe, resolve_config, train

    # stage 1: self-supervised, unlabelled windows of the input frames only
    s1 = train(_train_config(tmp_path / "pre", "spatspark-pretrain", ARCH))
    assert s1["global_step"] == 2 and s1["n_train"] > 0
    card = json.loads(Path(s1["card"]).read_text())
    assert card["model"] == "spatspark-pretrain" and card["card"]["config"]["data"]["n_out"] == 0
    assert {"val_loss", "val_mae", "val_csi"} <= set(s1["val_scores"])
    assert not any(k.startswith("val_mae_lead") for k in s1["val_scores"])
    assert np.isfinite(s1["val_scores"]["val_loss"])
    assert recipe("spatspark-pretrain")["warmup_epochs"] == 40

    # stage 2: the model section holds only the name (and n_out); the architecture comes from stage 1
    cfg = _train_config(tmp_path / "ft", "spatspark", {"n_out": 2}, init_from=str(Path(s1["weights"]).with_suffix("")))
    cfg["data"]["n_out"] = 2
    resolved = resolve_config(cfg)
    assert resolved["model"]["base_width"] == 4 and resolved["model"]["in_frames"] == 4
    module = NowcastModule("spatspark", {k: v for k, v in resolved["model"].items() if k != "name"},
                           init_from=s1["weights"], n_out=2)
    w1 = load_file(s1["weights"])
    enc = [k for k in w1 if k.startswith("backbone.encoder.")]
    assert enc and all(torch.equal(module.model.state_dict()[k], w1[k]) for k in enc)
    s2 = train(cfg)
    assert s2["global_step"] == 2
    assert {"val_mae_lead1", "val_mae_lead2", "val_csi_lead2", "val_mae"} <= set(s2["val_scores"])
    net = load_model(s2["weights"])
    assert isinstance(net, SpaTSparK) and net.config["n_out"] == 2
    pred = net.predict(np.random.default_rng(0).gamma(0.5, 2.0, size=(4, 32, 40)), 2)
    assert pred.shape == (2, 32, 40) and np.isfinite(pred).all()
    assert {"train_crit", "train_ssim"} <= set(Path(s2["metrics_csv"]).read_text().splitlines()[0].split(","))
    # the checkpoint rebuilds the module
    m = NowcastModule.load_from_checkpoint(s2["best_checkpoint"], map_location="cpu")
    assert m.model_name == "spatspark" and m.n_out == 2

    # a pretraining run cannot initialise another model; the pretraining loss is fixed
    bad = _train_config(tmp_path / "bad", "smaat", {}, init_from=s1["weights"])
    with pytest.raises(InputError, match="holds a 'spatspark-pretrain' model"):
        resolve_config(bad)
    with pytest.raises(InputError, match="loss must be 'mse'"):
        NowcastModule("spatspark-pretrain", ARCH, loss="mae")
    with pytest.raises(InputError, match="scheduler must be one of"):
        NowcastModule("rainnet", {"base_channels": 4, "depth": 2}, scheduler="step")


def test_cosine_schedule_with_warmup_and_adamw_groups():
    from types import SimpleNamespace

    from skydiff.nowcast.training import NowcastModule

    module = NowcastModule("spatspark", {**ARCH, "n_out": 2}, n_out=2, lr=1e-3, warmup_epochs=2)
    module._trainer = SimpleNamespace(max_epochs=6)  # what configure_optimizers reads
    conf = module.configure_optimizers()
    opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["betas"] == (0.9, 0.95)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    tokens = {id(p) for p in module.model.backbone.mask_tokens}
    assert tokens <= {id(p) for p in no_decay["params"]}
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # linear warm-up over 2 epochs (1/3, 2/3), then cosine from 1 over the remaining 4 epochs
    expect = [1 / 3, 2 / 3] + [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert lrs == pytest.approx([1e-3 * e for e in expect])

    # max_steps ending the run before max_epochs: the schedule spans the epochs the run really has
    # (30 steps of 5 batches = 6 epochs), not max_epochs = 100; any model may use AdamW + cosine
    for name, arch in (("spatspark", {**ARCH, "n_out": 2}), ("rainnet", {"base_channels": 4, "depth": 2})):
        kw = {"n_out": 2} if name == "spatspark" else {}
        module = NowcastModule(name, arch, lr=1e-3, warmup_epochs=2, scheduler="cosine", optimizer="adamw", **kw)
        module._trainer = SimpleNamespace(max_epochs=100, max_steps=30, estimated_stepping_batches=30,
                                          num_training_batches=5, accumulate_grad_batches=1)
        conf = module.configure_optimizers()
        opt, sched = conf["optimizer"], conf["lr_scheduler"]["scheduler"]
        lrs = []
        for _ in range(6):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        assert isinstance(opt, torch.optim.AdamW)
        assert lrs == pytest.approx([1e-3 * e for e in expect])


def test_sample_configs_and_cli(tmp_path, capsys):
    from skydiff.cli import main
    from skydiff.nowcast.training import resolve_config, sample_config

    (tmp_path / "radar").mkdir()
    pre = resolve_config(sample_config("spatspark-pretrain"), {"data.path": str(tmp_path)})
    assert pre["model"]["name"] == "spatspark-pretrain" and pre["data"]["n_out"] == 0
    assert (pre["training"]["optimizer"], pre["training"]["warmup_epochs"], pre["model"]["base_width"]) == (
        "adamw", 40, 64)
    ft = resolve_config(sample_config("spatspark"), {"data.path": str(tmp_path), "training.init_from": ""})
    assert ft["training"]["ssim_weight"] == 1e-4 and ft["model"]["translation"] == "conv_tanh"
    assert sample_config("spatspark_pretrain") == sample_config("spatspark-pretrain")

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "spatspark-pretrain" in capsys.readouterr().out
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        '[model]\nname = "spatspark-pretrain"\nin_frames = 4\nbase_width = 4\nlayers = [1, 1]\ndepth = 3\n'
        'dec_width = 16\n'
        '[data]\nsource = "synthetic"\ncrop = 32\nbatch_size = 2\nshape = [40, 40]\nn_frames = 8\n'
        "n_sequences = 1\nn_val_sequences = 1\n"
        "[training]\nmax_steps = 1\nprogress_bar = false\n"
        "[trainer]\nnum_sanity_val_steps = 0\nlimit_val_batches = 1\nenable_model_summary = false\n"
    )
    out = tmp_path / "run"
    assert main(["train", "spatspark-pretrain", "--config", str(cfg), "--out", str(out)]) == 0
    assert (out / "spatspark-pretrain.safetensors").exists()
