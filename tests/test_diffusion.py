"""EDM diffusion downscaler: preconditioning, schedule, sampler, shapes, PP space, training loop, save/load."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from skydiff.downscale import diffusion as dif
from skydiff.downscale.data import TilePairs, block_mean
from skydiff.downscale.diffusion import EDMDownscaler, edm_precond, karras_sigmas
from skydiff.errors import InputError, ShapeError
from skydiff.registry import create_model, load_model, register_model, save_model

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw) -> EDMDownscaler:
    torch.manual_seed(0)
    cfg = dict(space="log1p", pp_model=None, base_channels=8, mults=(1, 2), sigma_data=0.3)
    cfg.update(kw)
    return create_model("edm-radar-tp", **cfg)


def rainy(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, h, w, generator=g) * 5
    x[x < 2] = 0
    return x


# --------------------------------------------------------------------------- preconditioning and schedule
def test_edm_preconditioning_identities():
    sd = 0.7
    sigma = torch.logspace(-3, 2, 50, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm_precond(sigma, sd)
    # unit-variance network input: Var(c_in (y + n)) = c_in² (σd² + σ²) = 1
    torch.testing.assert_close(c_in**2 * (sd**2 + sigma**2), torch.ones_like(sigma))
    # unit-variance effective training target: (σd² (1 - c_skip)² + c_skip² σ²) / c_out² = 1 (EDM eq. for c_out)
    torch.testing.assert_close((sd**2 * (1 - c_skip) ** 2 + c_skip**2 * sigma**2) / c_out**2, torch.ones_like(sigma))
    torch.testing.assert_close(c_noise, torch.log(sigma) / 4)
    assert c_skip[0] > 0.9999 and c_out[0] < 1e-2  # σ → 0: D(x) → x
    assert c_skip[-1] < 1e-3  # σ → ∞: D(x) → network output only


def test_karras_schedule():
    s = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert s.shape == (19,) and s[-1] == 0
    torch.testing.assert_close(s[0], torch.tensor(80.0, dtype=torch.float64))
    torch.testing.assert_close(s[-2], torch.tensor(0.002, dtype=torch.float64))
    assert torch.all(s[1:] < s[:-1])
    # rho-spacing: s_i^(1/rho) is linear in i
    r = s[:-1] ** (1 / 7)
    torch.testing.assert_close(r[1:] - r[:-1], torch.full((17,), float(r[1] - r[0]), dtype=torch.float64))
    with pytest.raises(InputError):
        karras_sigmas(0)


def test_denoiser_starts_as_c_skip_identity():
    m = tiny()
    x = torch.randn(3, 16, 20)
    cond = torch.randn(3, 1, 16, 20)
    for sig in (0.01, 1.0, 30.0):
        c_skip = m.sigma_data**2 / (sig**2 + m.sigma_data**2)
        torch.testing.assert_close(m.denoise(x, sig, cond), c_skip * x)  # zero-initialised output conv


# --------------------------------------------------------------------------- sampler
def test_heun_sampler_recovers_gaussian_variance(monkeypatch):
    """With the exact denoiser of N(0, s²) residuals, D(x; σ) = x s² / (s² + σ²), the probability-flow ODE maps
    N(0, σmax²) to N(0, s²): the samples' standard deviation must be s (a wrong schedule or Heun step fails)."""
    m = tiny(sigma_max=80.0)
    s = 0.5
    monkeypatch.setattr(m, "denoise",
                        lambda x, sigma, cond, label=None: x * s**2 / (s**2 + torch.as_tensor(sigma) ** 2))
    lo = torch.zeros(1, 8, 8)
    out = m.sample(lo, members=64, steps=40, seed=1, progress=False, return_space=True)
    base, _ = m.condition(lo)
    std = float((out - base).std())  # 4096 samples: ±1.1 % sampling error; Heun's error at 40 steps is +1 %
    assert abs(std - s) / s < 0.035, std
    # with 6 steps the discretisation error is +70 % (a scalar Heun integration of this ODE gives 0.853)
    out2 = m.sample(lo, members=64, steps=6, seed=1, progress=False, return_space=True)
    assert float((out2 - base).std()) / s > 1.5


@pytest.mark.parametrize("factor,h,w", [(2, 5, 7), (3, 4, 6), (4, 6, 5), (5, 3, 4)])
def test_any_factor_shapes_and_nonnegative(factor, h, w):
    m = tiny(factor=factor)
    lo = rainy(2, h, w)
    out = m.sample(lo, members=3, steps=3, seed=0, progress=False)
    assert out.shape == (3, 2, h * factor, w * factor)
    assert torch.all(out >= 0) and torch.isfinite(out).all()


def test_sampler_seed_determinism_and_members_differ():
    m = tiny()
    lo = rainy(2, 8, 8)
    a = m.sample(lo, members=3, steps=4, seed=7, progress=False)
    b = m.sample(lo, members=3, steps=4, seed=7, progress=False, batch_size=2)  # other chunking, same draws
    c = m.sample(lo, members=3, steps=4, seed=8, progress=False)
    g = m.sample(lo, members=3, steps=4, generator=torch.Generator().manual_seed(7), progress=False)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(a, g)  # seed=7 is a generator seeded 7 on the model's device
    assert not torch.allclose(a, c)
    # train the output layer a little so members differ in rain space (zero-init output = pure c_skip)
    nn.init.normal_(m.net.out.weight, std=0.1)
    d = m.sample(lo, members=3, steps=4, seed=7, progress=False, s_churn=5.0)
    assert not torch.allclose(d[0], d[1])
    # with churn too, the chunking does not change the draw (churn noise was drawn chunk by chunk: 46 mm/h apart)
    # (to float32 rounding of the denoiser's batched convolutions)
    torch.testing.assert_close(m.sample(lo, members=3, steps=4, seed=7, progress=False, s_churn=5.0, batch_size=1), d,
                               rtol=1e-3, atol=0.05)


def test_loss_is_finite_and_backpropagates():
    m = tiny()
    hi = rainy(4, 16, 16)
    lo = block_mean(hi, 4)
    loss = m.loss(hi, lo, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert m.net.out.weight.grad is not None and torch.isfinite(m.net.out.weight.grad).all()


def test_bad_options():
    with pytest.raises(InputError):
        tiny(space="dbz")
    with pytest.raises(InputError):
        tiny(factor=0)
    with pytest.raises(ShapeError):
        tiny().sample(torch.zeros(8, 8), members=1, steps=1, progress=False)
    with pytest.raises(InputError):
        tiny().sample(torch.zeros(1, 8, 8), members=0, steps=1, progress=False)


# --------------------------------------------------------------------------- PP space (stand-in PP model)
class _StandInPP(nn.Module):
    """Elementwise stand-in with A's PseudoPrecip interface: encode(tp, vimd=None) -> pp, decode(pp) -> tp."""

    model_name = "pp-standin-test"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.config = {"scale": scale}
        self.a = nn.Parameter(torch.tensor(float(scale)))

    def encode(self, tp, vimd=None):
        return self.a * torch.log(tp + 0.1) + (0.0 if vimd is None else 0.01 * vimd)

    def decode(self, pp):
        return torch.clamp(torch.exp(pp / self.a) - 0.1, min=0.0)


register_model("pp-standin-test", kind="downscale")(_StandInPP)


def test_pp_space_frozen_and_roundtrip(tmp_path):
    m = create_model("edm-radar", pp_model="pp-standin-test", pp_config={"scale": 2.0}, base_channels=8,
                     mults=(1, 2))
    assert m.pp is not None and not any(p.requires_grad for p in m.pp.parameters())
    m.train()
    assert not m.pp.training  # stays frozen in eval mode
    tp = rainy(1, 8, 8)
    torch.testing.assert_close(m.decode(m.encode(tp)), tp, atol=1e-5, rtol=1e-5)
    out = m.sample(block_mean(tp, 4), members=2, steps=2, seed=0, progress=False)
    assert out.shape == (2, 1, 8, 8) and torch.all(out >= 0)
    # the PP sub-module ships inside the downscaler's weights
    with torch.no_grad():
        m.pp.a.fill_(3.0)
    save_model(m, tmp_path / "m")
    m2 = load_model(tmp_path / "m")
    assert float(m2.pp.a) == 3.0 and m2.config["pp_model"] == "pp-standin-test"
    vm = create_model("edm-era5", pp_model="pp-standin-test", base_channels=8, mults=(1, 2))
    with pytest.raises(InputError, match="VIMD"):
        vm.encode(tp)


def test_save_load_roundtrip(tmp_path):
    m = tiny()
    nn.init.normal_(m.net.out.weight, std=0.05)
    save_model(m, tmp_path / "edm")
    m2 = load_model(tmp_path / "edm")
    assert m2.model_name == "edm-radar-tp" and m2.sigma_data == pytest.approx(0.3)
    lo = rainy(1, 6, 6)
    torch.testing.assert_close(m.sample(lo, 2, 3, seed=3, progress=False), m2.sample(lo, 2, 3, seed=3, progress=False))


# --------------------------------------------------------------------------- training loop
def test_train_downscaler_checkpoint_and_resume(tmp_path):
    from skydiff.downscale.training import train_downscaler

    hi = rainy(24, 16, 16).numpy()
    pairs = TilePairs(hi, block_mean(hi, 4), 4, np.array(["syn"] * 24), np.zeros(24, "datetime64[s]"),
                      np.zeros((24, 2), np.int64))
    kw = dict(out=tmp_path, batch_size=8, crop=8, base_channels=8, mults=(1, 2), progress=False, ckpt_every=2)
    s1 = train_downscaler(pairs, "edm-radar-tp", max_steps=2, **kw)
    assert s1["steps"] == 2 and (tmp_path / "edm-radar-tp" / "checkpoints" / "last.ckpt").is_file()
    assert s1["sigma_data"] == pytest.approx(float(np.std(
        np.log1p(hi) - torch.nn.functional.interpolate(torch.log1p(torch.from_numpy(block_mean(hi, 4)))[:, None],
                                                       scale_factor=4, mode="bicubic")[:, 0].numpy())), rel=1e-3)
    s2 = train_downscaler(pairs, "edm-radar-tp", max_steps=4, **kw)
    assert s2["resumed_from"] and s2["steps"] == 4
    m = load_model(s2["weights"])
    assert isinstance(m, EDMDownscaler) and math.isfinite(s2["final_loss_mean50"])


def test_train_downscaler_restart_resume_and_bad_input_found_by_an_audit(tmp_path):
    from skydiff.downscale.training import train_downscaler

    hi = rainy(12, 16, 16).numpy()
    pairs = TilePairs(hi, block_mean(hi, 4), 4, np.array(["syn"] * 12), np.zeros(12, "datetime64[s]"),
                      np.zeros((12, 2), np.int64))
    kw = dict(out=tmp_path, batch_size=4, crop=8, base_channels=4, mults=(1, 2), progress=False, ckpt_every=3)
    train_downscaler(pairs, "edm-radar-tp", max_steps=6, **kw)
    # a restart wrote last-v1.ckpt beside the old last.ckpt (whose step, a multiple of ckpt_every, was not saved
    # again), and the next resume continued the old run
    train_downscaler(pairs, "edm-radar-tp", max_steps=3, resume=False, **kw)
    ck = tmp_path / "edm-radar-tp" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["last.ckpt"]
    assert train_downscaler(pairs, "edm-radar-tp", max_steps=4, **kw)["steps"] == 4
    # a resume with another network was accepted, the card claiming the new settings
    with pytest.raises(InputError, match="model"):
        train_downscaler(pairs, "edm-radar-tp", max_steps=5, **{**kw, "p_mean": 0.0})
    for bad in ({"batch_size": 0}, {"ckpt_every": -1}, {"lr": -1.0}, {"ema_decay": 1.5}):
        with pytest.raises(InputError, match=next(iter(bad))):
            train_downscaler(pairs, "edm-radar-tp", max_steps=2, **{**kw, "out": tmp_path / "bad", **bad})
    assert not (tmp_path / "bad").exists()
    hi[0, :2, :2] = np.nan  # no data: the loss turned NaN, and the exported weights with it
    nan_pairs = TilePairs(hi, block_mean(hi, 4), 4, pairs.source, pairs.time, pairs.origin)
    with pytest.raises(InputError, match="pairs.hi holds 4 no-data .* first in pair 0"):
        train_downscaler(nan_pairs, "edm-radar-tp", max_steps=2, **{**kw, "out": tmp_path / "nan"})
    # found by a later audit: a diverging loss was exported as NaN weights; pairs that do not fit together, whole
    # non-square tiles and a PP path for a model without PP failed deep inside or were ignored
    fresh = rainy(12, 16, 16).numpy()
    ok = TilePairs(fresh, block_mean(fresh, 4), 4, pairs.source, pairs.time, pairs.origin)
    with pytest.raises(InputError, match="training loss is nan at step .*nothing was exported"):
        train_downscaler(ok, "edm-radar-tp", max_steps=6, **{**kw, "out": tmp_path / "div", "lr": 1e8})
    assert not list((tmp_path / "div").rglob("*.safetensors"))
    bad_pairs = (TilePairs(ok.hi, block_mean(ok.hi, 4), 2, ok.source, ok.time, ok.origin),
                 TilePairs(ok.hi, ok.lo[:, :3], 4, ok.source, ok.time, ok.origin),
                 TilePairs(ok.hi[:0], ok.lo[:0], 4, ok.source[:0], ok.time[:0], ok.origin[:0]))
    for bad, match in zip(bad_pairs, ("do not fit factor 2", "do not fit factor 4", "pairs is empty")):
        with pytest.raises((InputError, ShapeError), match=match):
            train_downscaler(bad, "edm-radar-tp", max_steps=2, **{**kw, "out": tmp_path / "bad"})
    wide = TilePairs(rainy(4, 16, 24).numpy(), block_mean(rainy(4, 16, 24).numpy(), 4), 4, ok.source[:4],
                     ok.time[:4], ok.origin[:4])
    with pytest.raises(ShapeError, match="must be square .* 16 x 24: give a crop"):
        train_downscaler(wide, "edm-radar-tp", max_steps=2, **{**kw, "out": tmp_path / "bad", "crop": None})
    with pytest.raises(InputError, match="pp_weights='/no/such': 'edm-radar-tp' .*no PP model"):
        train_downscaler(ok, "edm-radar-tp", max_steps=2, **{**kw, "out": tmp_path / "bad", "pp_weights": "/no/such"})
    assert not (tmp_path / "bad").exists()


def test_registered_names():
    from skydiff.registry import list_models

    assert {"edm-radar", "edm-radar-tp", "edm-era5"} <= set(list_models(kind="downscale"))
    assert dif.SPACES == ("pp", "log1p", "sqrt")


# --------------------------------------------------------------------------- product labels
def test_labelled_model_conditions_on_the_label_and_round_trips(tmp_path):
    """EDMDownscaler(labels=...): the label embedding changes the denoiser; None = unknown; names checked;
    saved and loaded with its labels; training labels each pair by its source's product."""
    from skydiff.downscale.data import radar_label
    from skydiff.downscale.training import train_downscaler

    m = tiny(labels=["knmi-rap", "fmi"])
    for mod in m.net.modules():  # the zero-initialised residual branches would hide the embedding
        if isinstance(mod, nn.Conv2d):
            nn.init.normal_(mod.weight, std=0.1)
    nn.init.normal_(m.net.label_emb.weight, std=1.0)
    lo = rainy(2, 6, 6)
    a = m.sample(lo, 1, 3, seed=1, progress=False, label="knmi-rap")
    b = m.sample(lo, 1, 3, seed=1, progress=False, label="fmi")
    u = m.sample(lo, 1, 3, seed=1, progress=False)
    ab = m.sample(lo, 1, 3, seed=1, progress=False, label=["knmi-rap", "fmi"])
    assert not torch.allclose(a, b) and not torch.allclose(a, u)
    torch.testing.assert_close(ab[:, 0], a[:, 0])
    torch.testing.assert_close(ab[:, 1], b[:, 1])
    with pytest.raises(InputError, match="unknown label"):
        m.sample(lo, 1, 2, progress=False, label="mrms")
    with pytest.raises(InputError, match="one label per field"):
        m.sample(lo, 1, 2, progress=False, label=["fmi"])
    with pytest.raises(InputError, match="has no labels"):
        tiny().sample(lo, 1, 2, progress=False, label="fmi")
    save_model(m, tmp_path / "lab")
    m2 = load_model(tmp_path / "lab")
    assert m2.labels == ("knmi-rap", "fmi")
    torch.testing.assert_close(m2.sample(lo, 1, 3, seed=1, progress=False, label="fmi"), b)

    assert radar_label("knmi2010-val") == "knmi-rap" and radar_label("knmi2021-02") == "knmi-dbz"
    with pytest.raises(InputError, match="no product label"):
        radar_label("nope")
    hi = rainy(16, 16, 16).numpy()
    src = np.array(["knmi2010-fit"] * 8 + ["fmi2016-fit"] * 8)
    pairs = TilePairs(hi, block_mean(hi, 4), 4, src, np.zeros(16, "datetime64[s]"), np.zeros((16, 2), np.int64))
    kw = dict(out=tmp_path / "run", batch_size=8, crop=8, base_channels=8, mults=(1, 2), progress=False)
    s = train_downscaler(pairs, "edm-radar-tp", max_steps=2, labels=["knmi-rap", "fmi"], **kw)
    assert load_model(s["weights"]).labels == ("knmi-rap", "fmi")
    with pytest.raises(InputError, match="lack"):
        train_downscaler(pairs, "edm-radar-tp", max_steps=1, labels=["fmi"], resume=False, **kw)


def test_downscale_passes_the_label_and_refuses_it_for_unlabelled_models():
    from skydiff.downscale import downscale

    m = tiny(labels=["knmi-rap", "fmi"], sigma_max=1.0).eval()
    lo = rainy(1, 6, 6)[0].numpy()
    a = downscale(lo, model=m, members=1, steps=2, seed=0, progress=False, label="fmi")
    assert a.shape == (1, 24, 24)
    with pytest.raises(InputError, match="unknown label"):
        downscale(lo, model=m, members=1, steps=2, seed=0, progress=False, label="nope")
    with pytest.raises(InputError, match="has no labels"):
        downscale(lo, model=tiny(sigma_max=1.0), members=1, steps=2, progress=False, label="fmi")
    # a plain array names no product: label="auto" samples the mixture, and now says so (thirteenth-session audit)
    from skydiff.errors import SkydiffWarning

    with pytest.warns(SkydiffWarning, match="names no radar product .*label= one of 'knmi-rap', 'fmi'"):
        b = downscale(lo, model=m, members=1, steps=2, seed=0, progress=False)
    c = downscale(lo, model=m, members=1, steps=2, seed=0, progress=False, label=None)  # the same, no label warning
    np.testing.assert_array_equal(b, c)


# --------------------------------------------------------------------------- large fields: tiles and the dry trim
def test_tiles_cover_the_field_and_blend_to_the_pointwise_denoiser():
    """Windows start every tile - overlap px and end flush; blended with ramps whose weights are normalised, a
    pointwise denoiser gives the same field tiled or not, and a field no larger than a tile is one window."""
    assert dif._tile_starts(64, 64, 16) == [0] and dif._tile_starts(40, 64, 16) == [0]
    assert dif._tile_starts(100, 64, 16) == [0, 36] and dif._tile_starts(160, 64, 16) == [0, 48, 96]
    w = dif._ramp(64, 16, torch.zeros(1))
    assert float(w.min()) > 0 and float(w.max()) == 1.0 and torch.equal(w, w.flip(0))
    # windows no longer than 2 * overlap ramp too (a clipped tent; they had flat weights of 1, hence seams)
    for n, ov in ((32, 16), (48, 24), (20, 16)):
        w = dif._ramp(n, ov, torch.zeros(1))
        assert torch.equal(w, w.flip(0)) and float(w[0]) == pytest.approx(0.5 / ov)
        assert bool((w[1:n // 2] > w[:n // 2 - 1]).all())
    m = tiny()
    x, cond = torch.randn(2, 100, 70), torch.randn(2, 1, 100, 70)
    pointwise = lambda x, sigma, cond, label=None: (torch.tanh(x) * cond[:, 0]  # noqa: E731
                                                    + torch.as_tensor(sigma).reshape(-1, 1, 1))
    m.denoise = pointwise
    torch.testing.assert_close(m.denoise_tiled(x, 0.3, cond, tile=64, overlap=16), pointwise(x, 0.3, cond))
    del m.denoise
    small, c = torch.randn(2, 32, 48), torch.randn(2, 1, 32, 48)
    torch.testing.assert_close(m.denoise_tiled(small, 0.3, c, tile=64), m.denoise(small, 0.3, c))


def test_sample_tiles_large_fields_only():
    """A field no larger than a tile samples exactly as without tiling; a larger one goes through denoise_tiled
    (finite, non-negative, the right shape); bad tile options are refused."""
    m = tiny(sigma_max=2.0)
    lo = rainy(1, 10, 12)  # 40 x 48 high-res: one window
    torch.testing.assert_close(m.sample(lo, members=2, steps=3, seed=0, progress=False),
                               m.sample(lo, members=2, steps=3, seed=0, progress=False, tile=None))
    calls = []
    orig = m.denoise_tiled
    m.denoise_tiled = lambda *a, **k: calls.append(k) or orig(*a, **k)
    big = m.sample(rainy(1, 30, 20), members=2, steps=2, seed=0, progress=False, tile=32, tile_overlap=8)
    assert big.shape == (2, 1, 120, 80) and torch.isfinite(big).all() and bool((big >= 0).all())
    assert calls and calls[0] == {"tile": 32, "overlap": 8}
    with pytest.raises(InputError, match="tile_overlap"):
        m.sample(lo, members=1, steps=2, progress=False, tile=32, tile_overlap=32)
    with pytest.raises(InputError, match="tile"):
        m.sample(lo, members=1, steps=2, progress=False, tile=3)


def test_downscale_samples_only_around_the_rain():
    """downscale(trim_dry=True): only the box around the wet low-res pixels (+ DRY_MARGIN) is sampled, the rest is
    0 mm/h; no rain at all gives a dry ensemble without sampling; with the box covering the grid nothing changes."""
    from skydiff.downscale import downscale
    from skydiff.downscale.interface import DRY_MARGIN

    m = tiny(sigma_max=2.0).eval()
    lo = np.zeros((40, 36), np.float32)
    lo[3:6, 4:8] = 2.0
    seen = []
    orig = m.sample
    m.sample = lambda x, **k: seen.append(tuple(x.shape)) or orig(x, **k)
    out = downscale(lo, model=m, members=2, steps=2, seed=0, progress=False)
    assert out.shape == (2, 160, 144) and seen == [(1, 6 + DRY_MARGIN, 8 + DRY_MARGIN)]
    assert not out[:, (6 + DRY_MARGIN) * 4:, :].any() and not out[:, :, (8 + DRY_MARGIN) * 4:].any()
    seen.clear()
    dry = downscale(np.zeros((20, 20), np.float32), model=m, members=3, steps=2, progress=False)
    assert dry.shape == (3, 80, 80) and not dry.any() and seen == []
    full = np.ones((10, 10), np.float32)
    torch.testing.assert_close(torch.as_tensor(downscale(full, model=m, members=1, steps=2, seed=0, progress=False)),
                               torch.as_tensor(downscale(full, model=m, members=1, steps=2, seed=0, progress=False,
                                                         trim_dry=False)))


def test_mixed_precision_sampling_stays_close_to_full_precision():
    """precision="bfloat16": only the U-Net's layers run in bfloat16 (autocast); the sampler's state and the output
    stay float32, the same noise gives nearly the same members (the shipped radar model, a real-sized tile), and a
    bad precision is refused - by downscale() even for a dry input, where nothing is sampled."""
    from skydiff.downscale import downscale

    m = create_model("edm-radar", pretrained=True).eval()
    lo = rainy(2, 16, 16, seed=3)
    full = m.sample(lo, members=2, steps=6, seed=0, progress=False, label="knmi-rap")
    bf = m.sample(lo, members=2, steps=6, seed=0, progress=False, label="knmi-rap", precision="bfloat16")
    assert bf.dtype == torch.float32 and bf.shape == full.shape and bool((bf >= 0).all())
    rel = float((bf - full).abs().mean() / full.abs().mean())
    assert 0 < rel < 0.05, rel  # bfloat16 did run (not bitwise equal), and changed the rain by < 5 % on average
    assert torch.equal(m.sample(lo, members=2, steps=6, seed=0, progress=False, label="knmi-rap", precision="full"),
                       full)
    with pytest.raises(InputError, match="precision"):
        m.sample(lo, members=1, steps=2, progress=False, precision="int8")
    with pytest.raises(InputError, match="precision"):
        downscale(np.zeros((8, 8)), members=1, steps=2, progress=False, precision="half")
