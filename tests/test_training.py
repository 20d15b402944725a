"""Tests of skydiff.nowcast.training: recipes, config handling, checkpoints/resume, export, LUPIN stages, DDP.

Everything runs on tiny networks (base widths 4, depth 2) and 32 x 40 crops of synthetic rain, on the CPU
with one torch thread.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import stop_training_at
from skydiff.errors import InputError, ShapeError
from skydiff.nowcast.models import load_model
from skydiff.nowcast.training import (
    NowcastModule,
    _collate,
    masked_loss,
    resolve_config,
    sample_config,
    train,
)

TINY = {
    "rainnet": {"base_channels": 4, "depth": 2},
    "smaat": {"base_channels": 4, "depth": 2, "in_frames": 4, "n_out": 2},
    "lupin": {"base_channels": 4, "depth": 2, "motion_base_channels": 4, "motion_depth": 2, "in_frames": 4},
    "lcnn": {"base_channels": 4, "depth": 2, "in_frames": 4, "motion_frames": 3},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def config(out: Path, name: str, **training) -> dict:
    """A tiny synthetic run: 1 training + 1 validation sequence of 10 frames, 32 x 40 crops, batch 2."""
    return {
        "out": str(out),
        "accelerator": "cpu",
        "model": {"name": name, **TINY[name]},
        "data": {"source": "synthetic", "n_frames": 10, "shape": [40, 48], "crop": [32, 40], "batch_size": 2,
                 "n_sequences": 1, "n_val_sequences": 1, "n_out": 2},
        "training": {"max_steps": 2, "progress_bar": False, **training},
        "trainer": {"num_sanity_val_steps": 0, "limit_val_batches": 1, "log_every_n_steps": 1,
                    "enable_model_summary": False},
    }


@pytest.fixture(scope="module")
def sequence():
    from skydiff.synthetic import rain_sequence

    return rain_sequence(10, (40, 48), seed=0)


def fixed_batch(sequence, n_in: int, n_out: int) -> dict:
    from skydiff.nowcast.data import RadarSequences

    ds = RadarSequences([sequence], n_in, n_out, crop=(32, 40), transform=None, seed=0)
    return _collate([ds[0], ds[3]])


def overfit(module: NowcastModule, batch: dict, lr: float, steps: int = 30) -> list[float]:
    torch.manual_seed(0)
    opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    module.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = module.compute_loss(batch)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


# ------------------------------------------------------------------------------------------------ recipes


def test_init_from_a_weights_stem_with_dots(tmp_path):
    # "rainnet_v1.2" is a stem, not "rainnet_v1" + suffix ".2": the weights read are those of that stem, not of a
    # neighbouring "rainnet_v1.safetensors"
    from skydiff.nowcast.models import create_model, save_model
    from skydiff.nowcast.training import _init_model_config, _read_init_state

    torch.manual_seed(0)
    a = create_model("rainnet", base_channels=4)
    b = create_model("rainnet", base_channels=8)
    save_model(a, tmp_path / "rainnet_v1.2")
    save_model(b, tmp_path / "rainnet_v1")  # the decoy the old suffix handling read
    for given in ("rainnet_v1.2", "rainnet_v1.2.safetensors", "rainnet_v1.2.json"):
        sd = _read_init_state(tmp_path / given)
        assert all(torch.equal(sd[k], v) for k, v in a.state_dict().items()), given
        assert _init_model_config(tmp_path / given, "rainnet")["base_channels"] == 4


def test_masked_loss_gradcheck():
    # float64 gradcheck of every loss, masked and not, w.r.t. prediction and target (no |d| = 0: mae's kink)
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(2, 3, 5, dtype=torch.float64, generator=g).requires_grad_()
    target = (pred.detach() + 0.1 + torch.rand(2, 3, 5, dtype=torch.float64, generator=g)).requires_grad_()
    mask = torch.rand(2, 3, 5, generator=g) > 0.3
    for kind in ("logcosh", "mse", "rmse", "mae"):
        for m in (None, mask):
            assert torch.autograd.gradcheck(lambda p, t: masked_loss(kind, p, t, m), (pred, target))


def test_masked_loss_ignores_invalid_pixels():
    pred, target = torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)
    pred[..., :2] = 1.0
    mask = torch.ones_like(pred, dtype=torch.bool)
    mask[..., :2] = False
    for kind in ("logcosh", "mse", "mae"):
        assert float(masked_loss(kind, pred, target, mask)) == pytest.approx(0.0, abs=1e-7)
        assert float(masked_loss(kind, pred, target)) > 0
    assert float(masked_loss("rmse", pred, target, mask)) < 1e-3
    assert float(masked_loss("logcosh", torch.tensor([100.0]), torch.tensor([0.0]))) == pytest.approx(
        100 - np.log(2), rel=1e-6)
    with pytest.raises(InputError):
        masked_loss("huber", pred, target)


@pytest.mark.parametrize(
    "name, kw, n_out, lr, ratio",
    [
        ("rainnet", {}, 1, 3e-2, 0.5),
        ("lupin", {"stage": "motion"}, 1, 1e-2, 0.6),
        ("lupin", {"stage": "joint", "rollout_steps": 2}, 2, 3e-3, 0.6),
        ("smaat", {}, 2, 1e-3, 0.7),  # zero-initialised head: starts at the dry forecast, already a fair fit
        ("lcnn", {}, 1, 3e-3, 0.6),
    ],
    ids=["rainnet", "lupin-motion", "lupin-joint", "smaat", "lcnn"],
)
def test_overfit_fixed_batch(sequence, name, kw, n_out, lr, ratio):
    torch.manual_seed(0)
    cfg = {**TINY[name], "dropout": 0.0} if name != "smaat" else dict(TINY[name])
    if name == "lupin":
        cfg["motion_dropout"] = 0.0
    module = NowcastModule(name, cfg, n_in=4, n_out=n_out, **kw)
    losses = overfit(module, fixed_batch(sequence, 4, n_out), lr)
    assert all(np.isfinite(losses))
    assert losses[-1] < ratio * losses[0], losses[::5]


def test_recipe_defaults_and_stage_freezing():
    m = NowcastModule("rainnet", TINY["rainnet"])
    assert (m.loss_kind, m.lr, m.scheduler, m.rollout_steps, m.n_in, m.n_out) == ("logcosh", 1e-4, "none", 1, 4, 1)
    s = NowcastModule("smaat", TINY["smaat"])
    assert (s.loss_kind, s.lr, s.scheduler, s.lr_factor, s.lr_patience) == ("mse", 1e-3, "plateau", 0.1, 4)
    mot = NowcastModule("lupin", TINY["lupin"], stage="motion")
    assert (mot.beta, mot.lr) == (0.1, 5e-4)
    assert not any(p.requires_grad for p in mot.model.advection_net.parameters())
    ten = NowcastModule("lupin", TINY["lupin"], stage="tendency")
    assert ten.model.motion_frozen and ten.rollout_steps == 6 and ten.n_out == 6
    assert not any(p.requires_grad for p in ten.model.motion_net.parameters())
    joint = NowcastModule("lupin", TINY["lupin"], stage="joint", n_out=3)
    assert (joint.beta, joint.gamma, joint.loss_kind, joint.rollout_steps) == (0.1, 0.1, "rmse", 3)
    assert all(p.requires_grad for p in joint.model.parameters())
    # the divergence penalty's form: squared (default) or LUPIN's code's mean |Sobel divergence|
    assert mot.divergence == "squared"
    sob = NowcastModule("lupin", TINY["lupin"], stage="motion", divergence="sobel", n_out=1).eval()
    x = torch.rand(2, sob.model.n_input_frames + 1, 24, 24) * 3
    batch = {"inputs": x[:, :-1], "targets": x[:, -1:]}
    with torch.no_grad():
        mf = sob.model.motion(sob.model.transform(x[:, :-1]))
        logs = sob._run(batch)[1]
    torch.testing.assert_close(logs["div"], sob.model.divergence_penalty(mf, form="sobel"))
    with pytest.raises(InputError, match="divergence must be one of"):
        NowcastModule("lupin", TINY["lupin"], stage="motion", divergence="abs")
    with pytest.raises(InputError, match="stage"):
        NowcastModule("lupin", TINY["lupin"], stage="warp")
    with pytest.raises(InputError, match="LUPIN only"):
        NowcastModule("rainnet", TINY["rainnet"], stage="motion")
    with pytest.raises(InputError, match="too few"):
        NowcastModule("rainnet", TINY["rainnet"], n_out=1, rollout_steps=3)


# ------------------------------------------------------------------------------------------------ train()


def test_train_resume_and_export(tmp_path):
    out = tmp_path / "rainnet"
    cfg_file = tmp_path / "rainnet.toml"
    cfg = config(out, "rainnet")
    # write the config as TOML (the CLI's input), overriding max_steps from the outside
    lines = [f'out = "{out}"', 'accelerator = "cpu"']
    for sec in ("model", "data", "training", "trainer"):
        lines.append(f"[{sec}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in cfg[sec].items()]
    cfg_file.write_text("\n".join(lines) + "\n")

    s1 = train(cfg_file, overrides={"training.max_steps": 2})
    assert torch.get_num_threads() == 1  # restored to the caller's setting
    last = out / "checkpoints" / "last.ckpt"
    assert s1["global_step"] == 2 and s1["resumed_from"] is None and last.is_file()
    assert s1["best_val_loss"] is not None and np.isfinite(s1["best_val_loss"])
    assert {"val_mae_lead1", "val_csi_lead1", "val_mae_lead2", "val_csi_lead2"} <= set(s1["val_scores"])

    s2 = train(cfg_file, overrides={"training.max_steps": 4})
    assert s2["resumed_from"] == str(last)
    assert s2["global_step"] == 4
    ck = torch.load(str(last), map_location="cpu", weights_only=False)
    assert ck["global_step"] == 4
    # the resumed run logged steps 2..3 only (it did not restart from 0)
    steps = [int(r.split(",")[1]) for r in Path(s2["metrics_csv"]).read_text().splitlines()[1:]]
    assert min(steps) >= 2
    assert s2["training_time_s"] >= s1["training_time_s"]

    # export: safetensors + json card, loadable and predicting
    card = json.loads(Path(s2["card"]).read_text())
    assert card["model"] == "rainnet" and card["config"] == {"base_channels": 4, "depth": 2, "dropout": 0.5,
                                                             "in_frames": 4, "pad_mode": "reflect",
                                                             "scaler": "rainnet", "upsample": "nearest"}
    info = card["card"]
    assert info["data"]["source"] == "synthetic" and info["data"]["n_train"] > 0
    assert info["training"]["machine"]["torch_threads"] == 1 and info["training"]["training_time_s"] > 0
    assert info["val_scores"]["step"] == 4
    net = load_model(s2["weights"])
    frames = np.random.default_rng(0).gamma(0.5, 2.0, size=(4, 32, 40))
    pred = net.predict(frames, 3)
    assert pred.shape == (3, 32, 40) and np.isfinite(pred).all() and (pred >= 0).all()
    assert json.loads((out / "summary.json").read_text())["global_step"] == 4

    # resume = false starts again from step 0
    s3 = train(cfg_file, overrides={"training.max_steps": 1, "resume": False})
    assert s3["resumed_from"] is None and s3["global_step"] == 1
    # ... and without validation (no best checkpoint of its own) it exports its own last state, not the best
    # checkpoint the earlier runs left in the folder
    s4 = train(cfg_file, overrides={"training.max_steps": 3, "resume": False, "trainer.limit_val_batches": 0})
    assert list((out / "checkpoints").glob("best-*.ckpt"))  # the earlier runs' are still there
    assert s4["best_checkpoint"] == str(last)

    # resume = <a checkpoint of another folder> into an out that holds a run of its own: refused, nothing replaced
    other = tmp_path / "other"
    train(cfg_file, overrides={"training.max_steps": 1, "out": str(other)})
    before = {p: p.read_bytes() for p in (last, Path(s4["weights"]))}
    with pytest.raises(InputError, match="holds another run .*last.ckpt, rainnet.safetensors"):
        train(cfg_file, overrides={"training.max_steps": 2, "resume": str(other / "checkpoints" / "last.ckpt")})
    assert all(p.read_bytes() == b for p, b in before.items())
    # ... into a fresh out, it continues the other run there
    s5 = train(cfg_file, overrides={"training.max_steps": 2, "out": str(tmp_path / "fresh"),
                                    "resume": str(other / "checkpoints" / "last.ckpt")})
    assert s5["global_step"] == 2 and s5["resumed_from"] == str(other / "checkpoints" / "last.ckpt")


def test_resumed_training_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """Stopped at max_steps (mid-epoch, and in the second epoch; with and without DataLoader workers) or killed after a
    periodic checkpoint, then resumed: the last checkpoint equals the uninterrupted run's, to the bit (same batches,
    crops and dropout masks). Before, the resumed run drew a new batch order and dropout from torch's global
    generator, and the stop's extra validation moved that generator (its DataLoader's seed draw); with workers, the
    stream went on after the indices they had drawn ahead instead of after the batches trained on."""
    def run(out, steps, accumulate=1, workers=0, **training):
        cfg = config(out, "rainnet", max_steps=steps, **training)
        cfg["data"]["n_sequences"] = 2  # 10 training samples: epochs of 5 batches
        cfg["data"]["num_workers"] = workers
        cfg["trainer"]["accumulate_grad_batches"] = accumulate
        train(cfg)
        return torch.load(str(out / "checkpoints" / "last.ckpt"), map_location="cpu", weights_only=False)

    whole = run(tmp_path / "a", 8)["state_dict"]
    for first in (2, 6):
        run(tmp_path / f"b{first}", first)
        resumed = run(tmp_path / f"b{first}", 8)
        assert resumed["global_step"] == 8
        assert all(torch.equal(whole[k], resumed["state_dict"][k]) for k in whole), first
    # with DataLoader workers (which draw indices ahead, past the end of the resumed epoch that Lightning cuts short)
    run(tmp_path / "w", 2, workers=2)
    resumed = run(tmp_path / "w", 8, workers=2)
    assert all(torch.equal(whole[k], resumed["state_dict"][k]) for k in whole)
    restore = stop_training_at(monkeypatch, NowcastModule, 3, RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        run(tmp_path / "c", 8, checkpoint_every_n_steps=2)
    restore()
    resumed = run(tmp_path / "c", 8, checkpoint_every_n_steps=2)
    assert all(torch.equal(whole[k], resumed["state_dict"][k]) for k in whole)
    other = run(tmp_path / "d", 7)["state_dict"]
    assert not all(torch.equal(whole[k], other[k]) for k in whole)  # the comparison can tell runs apart
    # two batches per optimiser step (an epoch of 5 batches ends with a step of one): the stream goes on after the
    # batches trained on, not after 2 x the steps
    acc = run(tmp_path / "e", 6, accumulate=2)
    run(tmp_path / "f", 3, accumulate=2)
    resumed = run(tmp_path / "f", 6, accumulate=2)
    assert acc["skydiff"]["batches_trained"] == resumed["skydiff"]["batches_trained"] == 10
    assert all(torch.equal(acc["state_dict"][k], resumed["state_dict"][k]) for k in whole)


def test_plateau_schedule_and_interrupts_at_an_epoch_end_resume_exactly(tmp_path, monkeypatch):
    """The plateau scheduler stepped after the checkpoint written at the end of validation, and not at all when
    Lightning resumed from one: a run continued (more epochs), or interrupted during a validation or right after an
    epoch's last batch, went on at the old learning rate (and the last case skipped that epoch's validation)."""
    def run(out, epochs=3):
        cfg = config(out, "rainnet", max_steps=-1, max_epochs=epochs, scheduler="plateau", lr=0.3, lr_patience=0,
                     lr_factor=0.1, export="last")
        cfg["data"]["n_sequences"] = 2  # epochs of 5 batches
        return train(cfg)

    def interrupted(out, method, at_step):
        real = getattr(NowcastModule, method)

        def stop(self, *a):
            if self.global_step == at_step and not self.trainer.sanity_checking:
                raise KeyboardInterrupt
            return real(self, *a)

        monkeypatch.setattr(NowcastModule, method, stop)
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            run(out)
        monkeypatch.setattr(NowcastModule, method, real)
        return run(out)

    from safetensors.torch import load_file

    whole = run(tmp_path / "whole")
    ref = load_file(whole["weights"])
    run(tmp_path / "more", epochs=2)
    cases = {"more epochs": run(tmp_path / "more"),
             "during validation": interrupted(tmp_path / "val", "validation_step", 10),
             "after an epoch's last batch": interrupted(tmp_path / "end", "on_train_batch_end", 10)}
    for what, s in cases.items():
        history = json.loads(Path(s["card"]).read_text())["card"]["val_history"]
        assert [(e["epoch"], e["step"]) for e in history] == [(0, 5), (1, 10), (2, 15)], what
        got = load_file(s["weights"])
        assert all(torch.equal(ref[k], got[k]) for k in ref), what
    ck = torch.load(str(tmp_path / "more" / "checkpoints" / "last.ckpt"), map_location="cpu", weights_only=False)
    assert ck["optimizer_states"][0]["param_groups"][0]["lr"] < 0.3  # the schedule did reduce the rate


@pytest.mark.parametrize("name", ["smaat", "lcnn"])
def test_train_other_models(tmp_path, name):
    # smaat: export the last weights instead of the best on val_loss
    s = train(config(tmp_path / name, name), overrides={"training.export": "last"} if name == "smaat" else None)
    assert s["global_step"] == 2
    net = load_model(s["weights"])
    if name == "smaat":
        last = torch.load(s["last_checkpoint"], map_location="cpu", weights_only=False)["state_dict"]
        for k, v in net.state_dict().items():
            assert torch.equal(v, last[f"model.{k}"])
        assert json.loads(Path(s["card"]).read_text())["card"]["training"]["exported"] == "last"
        assert s["best_checkpoint"] == s["last_checkpoint"]  # not a best-epoch=...ckpt
    frames = np.random.default_rng(1).gamma(0.5, 2.0, size=(4, 32, 40))
    assert np.isfinite(net.predict(frames, 1)).all()
    # the checkpoint rebuilds the module (hyper-parameters saved with it)
    module = NowcastModule.load_from_checkpoint(s["best_checkpoint"], map_location="cpu")
    assert module.model_name == name and module.n_out == 2


@pytest.mark.parametrize("name", ["lupin", "rainnet"])
def test_training_rollout_is_the_predict_rollout(sequence, name):
    # Training and validation roll out as predict() does: outputs fed back clamped at the dry value, and LUPIN's
    # motion blur weighted by the inputs' valid mask. Before, an untrained LUPIN's validation nowcast differed from
    # predict() by ~3 mm/h from lead 2 on (negative rain fed back; the blur averaged over no-data pixels).
    torch.manual_seed(0)
    cfg = {"base_channels": 4, "depth": 2}
    if name == "lupin":
        cfg |= {"in_frames": 4, "motion_base_channels": 4, "motion_depth": 2}
    mod = NowcastModule(name, cfg, n_in=4, n_out=3, **({"stage": "joint"} if name == "lupin" else {}))
    net = mod.model.eval()
    net.predict_channels_last = False  # the same kernels on both paths
    seq = torch.from_numpy(sequence.values[:7].astype(np.float32))[None]
    x, y = seq[:, :4].clone(), seq[:, 4:]
    x[..., :8] = float("nan")  # no data at the edge of the crop
    batch = {"inputs": torch.nan_to_num(x), "targets": y, "mask": torch.isfinite(torch.cat([x, y], 1))}
    with torch.no_grad():
        _, _, mm_train, _ = mod._run(batch, eval_leads=3)
        mm_pred = net.predict(x, 3, trim_nodata=False, min_rain=0.0)
    ok = torch.isfinite(mm_pred)
    assert ok[..., 8:].all()
    torch.testing.assert_close(mm_train[ok], mm_pred[ok], rtol=1e-4, atol=1e-4)


def test_lupin_trains_in_bf16_mixed_precision(tmp_path):
    # Lightning's "bf16-mixed" on the CPU (autocast convolutions; ~1.4-1.6x faster training steps on a CPU with
    # AVX512-BF16): the U-Nets hand float32 to the advection, the loss is finite and the weights are saved float32
    s = train(config(tmp_path / "bf16", "lupin"), overrides={"training.precision": "bf16-mixed"})
    assert s["global_step"] == 2 and np.isfinite(s["best_val_loss"])
    net = load_model(s["weights"])
    assert all(p.dtype == torch.float32 for p in net.parameters())
    frames = np.random.default_rng(1).gamma(0.5, 2.0, size=(4, 32, 40))
    assert np.isfinite(net.predict(frames, 1, precision="bfloat16")).all()


def test_train_nl_source(tmp_path):
    import warnings

    from skydiff.nowcast.data import build_nl_dataset

    from skydiff.nowcast.data import NLDataset
    from skydiff.nowcast.training import _split_by_time
    from skydiff.synthetic import rain_sequence

    path = tmp_path / "nl.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test split of this tiny file is empty
        build_nl_dataset(rain_sequence(30, (40, 48), seed=0), path, crop=(0, 40, 0, 48), n_in=4, n_out=2,
                         rain_rule=0.05)
    cfg = config(tmp_path / "nl", "smaat")
    cfg["data"] = {"source": "nl", "path": str(path), "crop": [32, 40], "n_out": 2, "batch_size": 2,
                   "val_fraction": 0.2}
    s = train(cfg)
    assert s["global_step"] == 2 and s["n_validation"] >= 1
    assert np.isfinite(s["val_scores"]["val_loss"])
    # the validation windows are the latest, and no training window shares a frame with them (stride-1 windows
    # overlap: a cut in file order trained on frames that validation held)
    base = NLDataset(path, "train", 4, 2, transform=None)
    tr, va, _ = _split_by_time(base, 0.2)
    assert len(va) == int(np.ceil(0.2 * len(base))) and len(tr) >= 1
    first = min(base.spans[i][0] for i in va)
    assert all(base.spans[i][1] < first for i in tr)
    assert len(tr) + len(va) == len(base) - (base.seq_len - 1)  # stride 1: seq_len - 1 windows straddle the cut
    assert s["n_train"] == len(tr) and s["n_validation"] == len(va)
    with pytest.raises(InputError, match="too few"):
        train({**cfg, "out": str(tmp_path / "nl2"), "data": {**cfg["data"], "val_fraction": 0.95}})
    # a crop larger than the stored frames is refused before anything is built (it failed inside a loader worker)
    with pytest.raises(ShapeError, match="data.crop 48x40 is larger than the 40x48 frames"):
        train({**cfg, "out": str(tmp_path / "nl3"), "data": {**cfg["data"], "crop": [48, 40]}})
    assert not (tmp_path / "nl3").exists()


def test_lupin_stages(tmp_path):
    from safetensors.torch import load_file

    s1 = train(config(tmp_path / "motion", "lupin", stage="motion"))
    w1 = load_file(s1["weights"])
    assert {"val_crit", "val_div"} <= set(_csv_columns(s1["metrics_csv"]))

    # stage 2: only the model name; the model config comes from the stage-1 card
    cfg = config(tmp_path / "tendency", "lupin", stage="tendency", init_from=str(Path(s1["weights"]).with_suffix("")),
                 rollout_steps=2)
    cfg["model"] = {"name": "lupin"}
    s2 = train(cfg)
    w2 = load_file(s2["weights"])
    motion = [k for k in w1 if k.startswith("motion_net.")]
    advection = [k for k in w1 if k.startswith("advection_net.")]
    assert motion and advection
    assert all(torch.equal(w1[k], w2[k]) for k in motion)  # frozen
    assert any(not torch.equal(w1[k], w2[k]) for k in advection)  # trained
    card = json.loads(Path(s2["card"]).read_text())
    assert card["config"]["motion_base_channels"] == 4 and card["card"]["training"]["stage"] == "tendency"

    # stage 3 from a checkpoint of stage 2: both nets train, the extra and divergence terms are logged
    cfg3 = config(tmp_path / "joint", "lupin", stage="joint", init_from=s2["best_checkpoint"], rollout_steps=2)
    cfg3["model"] = {"name": "lupin"}
    s3 = train(cfg3)
    w3 = load_file(s3["weights"])
    assert any(not torch.equal(w2[k], w3[k]) for k in motion)
    assert any(not torch.equal(w2[k], w3[k]) for k in advection)
    assert {"train_extra", "train_div", "val_extra"} <= set(_csv_columns(s3["metrics_csv"]))


def _csv_columns(path: str) -> list[str]:
    return Path(path).read_text().splitlines()[0].split(",")


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path):
    cfg = config(tmp_path / "ddp", "rainnet")
    cfg.update(devices=2, strategy="ddp_spawn")
    t0 = time.perf_counter()
    s = train(cfg)
    elapsed = time.perf_counter() - t0
    print(f"2-process CPU DDP (ddp_spawn), 2 steps: {elapsed:.1f} s")
    assert s["global_step"] == 2 and Path(s["weights"]).is_file()
    card = json.loads(Path(s["card"]).read_text())["card"]
    assert card["training"]["machine"]["devices"] == 2
    assert np.isfinite(card["val_scores"]["val_loss"])


# ------------------------------------------------------------------------------------------------ config


def test_bad_configs(tmp_path, monkeypatch):
    good = config(tmp_path / "x", "rainnet")

    def bad(match, overrides=None, cfg=None):
        with pytest.raises(InputError, match=match):
            train(cfg if cfg is not None else good, overrides=overrides)

    bad("unknown model", {"model.name": "transformer"})
    bad("unknown config key", {"epochs": 3})
    bad(r"unknown \[training\] key", {"training.epochs": 3})
    bad(r"unknown \[data\] key", {"data.frames": 3})
    bad(r"unknown \[trainer\] key", {"trainer.gpus": 1})
    bad("use training.max_epochs", {"trainer.max_epochs": 1})
    bad("no option", {"model.width": 3})
    bad("unknown data source", {"data.source": "radar"})
    bad("not found", {"data.source": "nl", "data.path": str(tmp_path / "missing.h5")})
    bad("shared data not found", {"data.source": "shared", "data.path": str(tmp_path / "nowhere")})
    monkeypatch.delenv("SKYDIFF_DATA", raising=False)
    bad("SKYDIFF_DATA", {"data.source": "shared"})
    bad("stage", {"training.stage": "tendency"})  # not LUPIN
    bad("unknown LUPIN stage", {"model.name": "lupin", "training.stage": "warp"})
    bad("init_from", {"training.init_from": str(tmp_path / "nothing")})
    bad("unknown loss", {"training.loss": "huber"})
    bad("training.export must be", {"training.export": "first"})
    bad("not found", cfg=tmp_path / "nope.toml")
    (tmp_path / "broken.toml").write_text("[model\nname = 1\n")
    bad("not valid TOML", cfg=tmp_path / "broken.toml")
    # values of the wrong type or out of range: named, before any work (a string "false" was true, lr = "abc" and
    # batch_size = 0 failed deep in the optimiser or the loader)
    bad("data.augment must be true or false", {"data.augment": "false"})
    bad("training.lr must be a number", {"training.lr": "abc"})
    bad("training.lr must be >= 0", {"training.lr": -1e-3})
    bad("data.batch_size must be >= 1", {"data.batch_size": 0})
    bad("data.batch_size must be an integer", {"data.batch_size": 2.5})
    bad("data.num_workers must be >= 0", {"data.num_workers": -1})
    bad("training.max_steps must be -1", {"training.max_steps": 0})
    bad("data.exclude must be a list", {"data.exclude": "knmi"})
    assert not (tmp_path / "x").exists()
    # settings lightning.Trainer refuses, and an out that is a file: InputErrors (were Lightning's or OSErrors)
    bad("lightning.Trainer refuses the settings.*'fp8'", {"training.precision": "fp8"})
    bad("lightning.Trainer refuses the settings.*strategy", {"strategy": "nonsense"})
    (tmp_path / "file").write_text("mine")
    bad("is a file, not a folder", {"out": str(tmp_path / "file")})
    assert (tmp_path / "file").read_text() == "mine"
    # keys the data source or the scheduler does not read: named in a warning (they were ignored silently)
    from skydiff.errors import SkydiffWarning

    with pytest.warns(SkydiffWarning, match=r"not used with data.source = 'synthetic' and training.scheduler = "
                                            r"'none': data.mrms, training.lr_patience \(ignored\)"):
        resolve_config(good, {"data.mrms": True, "training.lr_patience": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_config(good, {"training.scheduler": "plateau", "training.lr_patience": 2})
    # [training] keys the model or LUPIN stage does not read (beta for RainNet changed no loss)
    with pytest.warns(SkydiffWarning, match=r"\[training\] key\(s\) beta, divergence, motion_teacher not used by "
                                            r"rainnet \(ignored\)"):
        resolve_config(good, {"training.beta": 0.5, "training.divergence": "sobel", "training.motion_teacher": "lk"})
    lupin = {**good, "model": {"name": "lupin"}}
    with pytest.warns(SkydiffWarning, match=r"key\(s\) gamma not used by lupin \(stage motion\)"):
        resolve_config(lupin, {"training.gamma": 0.9})
    with pytest.warns(SkydiffWarning, match=r"key\(s\) rollout_steps, bptt not used by smaat"):
        resolve_config({**good, "model": {"name": "smaat"}}, {"training.rollout_steps": 3, "training.bptt": True})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # read, or set to the recipe's own value
        resolve_config(lupin, {"training.stage": "joint", "training.gamma": 0.3, "training.beta": 0.2,
                               "training.divergence": "sobel"})
        resolve_config(good, {"training.beta": 0.0, "training.rollout_steps": 2})
        resolve_config(lupin, {"training.stage": "tendency", "training.gamma": 0.5, "training.beta": 0.1})
    cfg = resolve_config(good, {"data.batch_size": 2.0, "training.lr": 1, "training.precision": "bf16-mixed"})
    assert cfg["data"]["batch_size"] == 2 and isinstance(cfg["data"]["batch_size"], int)
    assert resolve_config(good, {"data.shape": (40, 48)})["data"]["shape"] == (40, 48)  # a tuple is a list
    assert isinstance(cfg["training"]["lr"], float)


def test_sample_configs(tmp_path):
    (tmp_path / "radar").mkdir()
    names = ["rainnet", "smaat", "lupin_motion", "lupin_tendency", "lupin_joint", "lcnn"]
    for n in names:
        cfg = resolve_config(sample_config(n), {"data.path": str(tmp_path), "training.init_from": ""})
        assert cfg["data"]["source"] == "shared"
        assert cfg["model"]["name"] in ("rainnet", "smaat", "lupin", "lcnn")
    assert resolve_config(sample_config("lupin_joint"), {"data.path": str(tmp_path), "training.init_from": ""}
                          )["training"]["beta"] == 0.1
    assert sample_config("lupin").stem == "lupin_motion"
    with pytest.raises(InputError):
        sample_config("unet")


@pytest.mark.realdata
@pytest.mark.slow
def test_sample_config_on_shared_data(tmp_path, shared_data):
    """The rainnet sample config on the real shared split (tiny widths, 2 steps): about 15 s, 1.6 GB."""
    s = train("rainnet", overrides={
        "out": str(tmp_path / "shared"), "accelerator": "cpu", "data.path": str(shared_data), "data.num_workers": 0,
        "data.n_out": 2, "model.base_channels": 4, "model.depth": 2, "training.max_steps": 2,
        "training.progress_bar": False, "trainer.limit_val_batches": 2, "trainer.num_sanity_val_steps": 0,
        "trainer.enable_model_summary": False, "training.checkpoint_every_n_steps": 1,
    })
    assert s["global_step"] == 2 and s["n_train"] > 100 and s["n_validation"] > 10
    card = json.loads(Path(s["card"]).read_text())["card"]
    assert card["data"]["source"] == "shared" and card["data"]["crop"] == [256, 256]
    assert np.isfinite(card["val_scores"]["val_loss"])


def test_train_fraction_and_augment_options():
    from skydiff.nowcast.training import build_datasets, resolve_config

    cfg = config(Path("unused"), "rainnet")
    cfg["data"].update(n_frames=16, augment=True)
    data = resolve_config(cfg)["data"]
    full, _, d_full = build_datasets(data, 4, 2)
    assert full.augment and d_full["n_train"] == len(full)
    data["train_fraction"] = 0.5
    half, _, d_half = build_datasets(data, 4, 2)
    assert d_half["n_train"] == round(0.5 * len(full)) and d_half["n_train_all"] == len(full)
    assert half.dataset is not None and hasattr(half.dataset, "set_epoch")
    data["train_fraction"] = 0.0
    with pytest.raises(InputError, match="train_fraction"):
        build_datasets(data, 4, 2)


def test_last_checkpoint_is_the_latest_state_even_without_improvement(tmp_path):
    """last.ckpt follows every validation (Lightning's save_last alone refreshes it only with a new best), so a run
    whose val_loss stops improving resumes from, and exports with export = "last", its latest state."""
    out = tmp_path / "flat"
    # lr = 0: the weights never change, val_loss never improves after the first validation
    s = train(config(out, "rainnet"), overrides={"training.max_steps": 6, "training.lr": 0.0,
                                                 "training.export": "last", "training.patience": -1})
    ck = torch.load(str(out / "checkpoints" / "last.ckpt"), map_location="cpu", weights_only=False)
    assert s["epochs"] >= 2  # several validations
    assert ck["global_step"] == s["global_step"] == 6
    best = sorted((out / "checkpoints").glob("best-*.ckpt"))
    assert len(best) == 1 and int(best[0].stem.split("step=")[1]) < 6  # the first validation stays the best


def test_rerun_of_an_early_stopped_run_trains_no_more(tmp_path, capsys):
    """A run that early stopping ended, run again (resume = true, the default): it exports the same state and
    trains nothing (it trained another epoch, then stopped again); with a larger patience it goes on."""
    over = {"training.max_steps": -1, "training.max_epochs": 20, "training.lr": 0.0, "training.patience": 1}
    s1 = train(config(tmp_path / "es", "rainnet"), overrides=over)
    assert 0 < s1["epochs"] < 20
    # the card's history holds every validation; its scores are the exported (best, first) state's
    card = json.loads(Path(s1["card"]).read_text())["card"]
    assert len(card["val_history"]) == s1["epochs"] > 1
    assert card["val_scores"] == card["val_history"][0] and card["training"]["best_epoch"] == 0
    s2 = train(config(tmp_path / "es", "rainnet"), overrides=over)
    assert "nothing to train" in capsys.readouterr().err
    assert (s2["global_step"], s2["epochs"], s2["best_checkpoint"]) == (s1["global_step"], s1["epochs"],
                                                                        s1["best_checkpoint"])
    s3 = train(config(tmp_path / "es", "rainnet"), overrides={**over, "training.patience": 3})
    assert s3["global_step"] > s2["global_step"]
    # ... until the new patience is spent (Lightning restored the checkpoint's patience: one more epoch each re-run)
    ck = torch.load(str(tmp_path / "es" / "checkpoints" / "last.ckpt"), map_location="cpu", weights_only=False)
    es = next(v for k, v in ck["callbacks"].items() if k.startswith("EarlyStopping"))
    assert (es["patience"], es["wait_count"]) == (3, 3)


def test_a_fresh_run_does_not_export_the_last_checkpoint_of_an_earlier_one(tmp_path):
    out = tmp_path / "fresh"
    from safetensors.torch import load_file

    a = train(config(out, "rainnet"), overrides={"training.max_steps": 4})
    wa = load_file(str(a["weights"]))
    # resume = false and no validation: last.ckpt was the earlier run's, and its weights were exported
    b = train(config(out, "rainnet"), overrides={"resume": False, "training.max_steps": 2, "training.lr": 0.5,
                                                 "training.seed": 7, "trainer.limit_val_batches": 0})
    assert (a["global_step"], b["global_step"]) == (4, 2)
    wb = load_file(str(b["weights"]))
    assert any(not torch.equal(v, wa[k]) for k, v in wb.items())  # its own weights, not run a's
    ck = torch.load(str(out / "checkpoints" / "last.ckpt"), map_location="cpu", weights_only=False)
    assert ck["global_step"] == 2


def test_training_config_checks_found_by_an_audit(tmp_path, monkeypatch):
    import skydiff.synthetic
    from skydiff.nowcast.data import RadarSequences
    from skydiff.nowcast.training import build_datasets
    from skydiff.synthetic import rain_sequence

    for crop in (0, -8, [100, -4], [32.7, 40.2], [32], True):
        with pytest.raises(InputError, match="data.crop must be"):
            resolve_config(config(tmp_path / "c", "rainnet"), {"data.crop": crop})
    with pytest.raises(InputError, match=r"lr_factor must be in \(0, 1\)"):
        train(config(tmp_path / "f", "rainnet", scheduler="plateau", lr_factor=1.5))
    with pytest.raises(InputError, match="data.teacher = 'lk' computes a whole-grid flow"):
        train(config(tmp_path / "t", "rainnet"), overrides={"data.teacher": "lk"})
    # whole frames of sources on two grids (KNMI and FMI) failed in the DataLoader's torch.stack
    monkeypatch.setattr(skydiff.synthetic, "rain_sequence",
                        lambda n, shape, seed: rain_sequence(n, (40, 48) if seed % 2 else (36, 44), seed=seed))
    data = resolve_config(config(tmp_path / "w", "rainnet"), {"data.crop": [], "data.n_sequences": 2})["data"]
    with pytest.raises(InputError, match=r"whole frames\) with training sources on different grids"):
        build_datasets(data, 4, 2)
    build_datasets({**data, "batch_size": 1, "val_batch_size": 1}, 4, 2)
    # the validation part on one grid may keep its batches (the check pooled both parts)
    monkeypatch.setattr(skydiff.synthetic, "rain_sequence",
                        lambda n, shape, seed: rain_sequence(n, (40, 48) if seed < 1000 else (36, 44), seed=seed))
    build_datasets({**data, "batch_size": 1, "val_batch_size": 2}, 4, 2)
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"\xff\xfe[model]\n")
    with pytest.raises(InputError, match="cannot read config"):
        resolve_config(str(bad))
    # sources at different time steps made windows of either step without a word
    with pytest.raises(InputError, match="different time steps"):
        RadarSequences([rain_sequence(10, (32, 32), timestep=5), rain_sequence(10, (32, 32), timestep=2)], 3, 2,
                       transform=None)


def test_whole_grid_motion_teacher_is_the_flow_of_the_whole_grid_cropped(sequence):
    """RadarSequences(teacher="lk"): the flow of the last 3 inputs on the whole grid, cropped like the frames; the
    motion stage then pulls every crop with one towards it (also crops too dry for the per-crop teacher)."""
    from skydiff.motion import estimate
    from skydiff.nowcast.data import RadarSequences

    ds = RadarSequences([sequence], 4, 1, crop=(32, 40), transform=None, seed=0, teacher="lk")
    s = ds[2]
    start = int(ds._index[2][1])
    whole = np.asarray(estimate(sequence.values[start + 1:start + 4].astype(np.float32), "lk"), np.float32)
    r, c = (int(v) for v in s["origin"])
    assert s["teacher"].shape == (2, 32, 40)
    np.testing.assert_allclose(s["teacher"].numpy(), whole[:, r:r + 32, c:c + 40], atol=2e-2, rtol=1e-3)  # float16
    assert ds.sources[0]["teacher_windows"] == len({int(i) for i in ds._index[:, 1]})
    with pytest.raises(InputError, match="augment"):
        RadarSequences([sequence], 4, 1, crop=(32, 40), transform=None, teacher="lk", augment=True)
    with pytest.raises(InputError, match="unknown teacher"):
        RadarSequences([sequence], 4, 1, crop=(32, 40), transform=None, teacher="nope")
    with pytest.warns(UserWarning, match="teacher_max_pixels"):
        big = RadarSequences([sequence], 4, 1, crop=(32, 40), transform=None, teacher="lk", teacher_max_pixels=100)
    assert bool(torch.isnan(big[0]["teacher"]).all())

    torch.manual_seed(0)
    cfg = {**TINY["lupin"], "dropout": 0.0, "motion_dropout": 0.0}
    module = NowcastModule("lupin", cfg, n_in=4, n_out=1, stage="motion", motion_teacher="lk", teacher_weight=1.0)
    batch = _collate([ds[0], ds[3]])
    batch["inputs"] = batch["inputs"] * 0.0  # all dry: the per-crop teacher would skip both crops
    mf = module.model.motion(module.model.transform(batch["inputs"][:, -4:]))
    expect = float(((mf - batch["teacher"]) ** 2).sum(1).mean())
    assert float(module._run(batch)[1]["teacher"]) == pytest.approx(expect, rel=1e-5)
    del batch["teacher"]
    assert float(module._run(batch)[1]["teacher"]) == 0.0  # no whole-grid flow, too dry for the per-crop one


def test_motion_teacher_pulls_the_motion_towards_optical_flow(sequence):
    """training.motion_teacher: + w * mean |MF - LK|^2 on rainy crops; the term is logged and decreases."""
    torch.manual_seed(0)
    cfg = {**TINY["lupin"], "dropout": 0.0, "motion_dropout": 0.0}
    module = NowcastModule("lupin", cfg, n_in=4, n_out=1, stage="motion", motion_teacher="lk", teacher_weight=1.0)
    batch = fixed_batch(sequence, 4, 1)
    _, logs, _, _ = module._run(batch)
    first = float(logs["teacher"])
    assert first > 0 and np.isfinite(first)
    overfit(module, batch, 1e-2, steps=15)
    assert float(module._run(batch)[1]["teacher"]) < 0.5 * first
    with pytest.raises(InputError, match="motion stage only"):
        NowcastModule("lupin", TINY["lupin"], stage="tendency", motion_teacher="lk", teacher_weight=0.1)
    with pytest.raises(InputError, match="needs training.motion_teacher"):
        NowcastModule("lupin", TINY["lupin"], stage="motion", teacher_weight=0.1)
    with pytest.raises(InputError, match="unknown motion_teacher"):
        NowcastModule("lupin", TINY["lupin"], stage="motion", motion_teacher="nope")
    with pytest.raises(InputError, match=">= 0"):
        NowcastModule("lupin", TINY["lupin"], stage="motion", motion_teacher="lk", teacher_weight=-1)


def test_lupin_motion_prior_uses_the_whole_grid_flow_and_falls_back_to_the_crop(sequence, monkeypatch, tmp_path):
    """A LUPIN with motion_prior: the batch's whole-grid flow is the prior where a crop has one, the crop's own
    flow where it has none (NaN); both stages train through it; a data.teacher of another method is refused."""
    from skydiff.nowcast.data import RadarSequences

    torch.manual_seed(0)
    cfg = {**TINY["lupin"], "dropout": 0.0, "motion_dropout": 0.0, "motion_prior": "lk"}
    ds = RadarSequences([sequence], 4, 2, crop=(32, 40), transform=None, seed=0, teacher="lk")
    batch = _collate([ds[0], ds[3]])
    batch["teacher"][1] = float("nan")  # the second crop has no whole-grid flow
    for stage in ("motion", "tendency"):
        module = NowcastModule("lupin", cfg, n_in=4, n_out=2, stage=stage)
        prior = module._prior(module._unpack(batch)[0], batch)
        torch.testing.assert_close(prior[0], batch["teacher"][0])
        torch.testing.assert_close(prior[1], module.model.estimate_prior(batch["inputs"][1:])[0])
        seen = []
        orig = module.model.motion
        monkeypatch.setattr(module.model, "motion", lambda z, p=None: seen.append(p) or orig(z, p))
        losses = overfit(module, batch, 1e-2, steps=3)
        assert np.isfinite(losses).all() and seen and all(torch.equal(p, prior) for p in seen)
    assert NowcastModule("lupin", TINY["lupin"], stage="motion")._prior(batch["inputs"], batch) is None
    no_mf = {**cfg, "motion_correction": False}
    assert np.isfinite(overfit(NowcastModule("lupin", no_mf, n_in=4, n_out=2, stage="tendency"), batch, 1e-2, 2)).all()
    with pytest.raises(InputError, match="stage 'tendency' only"):
        NowcastModule("lupin", no_mf, n_in=4, n_out=2, stage="motion")
    cfg_file = {"out": str(tmp_path / "run"), "model": {"name": "lupin", **cfg},
                "data": {"source": "synthetic", "teacher": "vet"}}
    with pytest.raises(InputError, match="motion_prior"):
        train(cfg_file)


def test_training_prior_flow_is_computed_like_the_models_prior():
    """data.teacher's whole-grid flow is a motion-prior LUPIN's prior in training: unset teacher_kwargs/frames are
    the model's (e.g. LK's grid_stride, as shipped), set ones that differ are refused; RadarSequences passes them
    to the flow method."""
    from skydiff.nowcast.models import create_model
    from skydiff.nowcast.training import _match_teacher_to_prior

    model = create_model("lupin", **TINY["lupin"], motion_prior="lk", motion_correction=False,
                         motion_prior_kwargs={"grid_stride": 4})
    dcfg = {"teacher": "lk", "teacher_kwargs": {}, "teacher_frames": None}
    _match_teacher_to_prior(dcfg, model)
    assert dcfg["teacher_kwargs"] == {"grid_stride": 4} and dcfg["teacher_frames"] == 3
    _match_teacher_to_prior(dcfg, model)  # the same values again: accepted
    with pytest.raises(InputError, match="teacher_kwargs .* motion_prior_kwargs"):
        _match_teacher_to_prior({"teacher": "lk", "teacher_kwargs": {"grid_stride": 2}}, model)
    with pytest.raises(InputError, match="teacher_frames .* motion_prior_frames"):
        _match_teacher_to_prior({"teacher": "lk", "teacher_frames": 4}, model)
    with pytest.raises(InputError, match="same method"):
        _match_teacher_to_prior({"teacher": "vet"}, model)


def test_radar_sequences_teacher_kwargs_reach_the_flow_method(sequence):
    from skydiff.motion import estimate
    from skydiff.nowcast.data import RadarSequences

    ds = RadarSequences([sequence], 4, 1, crop=(32, 40), transform=None, seed=0, teacher="lk",
                        teacher_kwargs={"grid_stride": 4})
    s = ds[1]
    start = int(ds._index[1][1])
    whole = np.asarray(estimate(sequence.values[start + 1:start + 4].astype(np.float32), "lk", grid_stride=4))
    r, c = (int(v) for v in s["origin"])
    np.testing.assert_allclose(s["teacher"].numpy(), whole[:, r:r + 32, c:c + 40], atol=2e-2, rtol=1e-3)  # float16
    with pytest.raises(InputError, match="teacher_kwargs must be a mapping"):
        RadarSequences([sequence], 4, 1, crop=(32, 40), transform=None, teacher="lk", teacher_kwargs=4)


def test_deterministic_training_warns_instead_of_failing_where_torch_has_no_deterministic_op(tmp_path):
    """training.deterministic = true set torch.use_deterministic_algorithms(True), which raises on CUDA for the
    backward of grid_sample (LUPIN's advection) and of bilinear upsampling (SmaAt-UNet); now warn-only."""
    try:
        train(config(tmp_path / "det", "rainnet", deterministic=True), overrides={"training.max_steps": 1})
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
