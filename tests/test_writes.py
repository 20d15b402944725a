"""The promises about files: bad output paths get a clear skydiff error, nothing the user had is replaced or lost,
writes are atomic (a temporary file beside the target, then ``os.replace``), and training resumes from its last
checkpoint. Tiny runs only (a few seconds each, one torch thread)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import stop_training_at
from skydiff.errors import InputError, SkydiffError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training import config  # noqa: E402  (the tiny synthetic nowcast run of the training tests)

pytestmark = pytest.mark.usefixtures("one_thread")


def _no_temporaries(folder: Path) -> None:
    left = [p for p in folder.rglob(".*") if ".tmp" in p.name]
    assert not left, f"temporary files left behind: {left}"


# ------------------------------------------------------------------------------------------------ atomic_path


def test_writers_refuse_a_folder_as_the_output_with_a_skydiff_error(tmp_path):
    """A folder given as the output file: InputError before anything is written (was IsADirectoryError from
    os.replace after the whole file had been written)."""
    import xarray as xr

    from skydiff.dycore.interface import write_dataset
    from skydiff.plot import _new_figure, save_figure

    (tmp_path / "out.png").mkdir()
    (tmp_path / "out.nc").mkdir()
    with pytest.raises(InputError, match="is a folder"):
        save_figure(_new_figure(2.0, 2.0), tmp_path / "out.png")
    with pytest.raises(InputError, match="is a folder"):
        write_dataset(xr.Dataset({"w": ("x", np.zeros(3))}), str(tmp_path / "out.nc"))
    (tmp_path / "file").write_text("mine")
    with pytest.raises(InputError, match="is a file"):
        write_dataset(xr.Dataset({"w": ("x", np.zeros(3))}), str(tmp_path / "file" / "out.nc"))
    assert (tmp_path / "file").read_text() == "mine"
    _no_temporaries(tmp_path)


# ------------------------------------------------------------------------------------------------ nowcast training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny rainnet run (1 step)."""
    from skydiff.nowcast.training import train

    out = tmp_path_factory.mktemp("run") / "rainnet"
    train(config(out, "rainnet"), overrides={"training.max_steps": 1})
    return out


def test_atomic_path_with_nothing_written_says_so_and_keeps_the_old_file(tmp_path):
    """A block that wrote nothing raised a bare FileNotFoundError from the fsync."""
    from skydiff.io.atomic import atomic_path

    old = tmp_path / "kept.txt"
    old.write_text("old")
    with pytest.raises(SkydiffError, match="nothing was written"):
        with atomic_path(old):
            pass
    assert old.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_atomic_path_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    """The link was replaced by a plain file and the file it pointed to left stale."""
    from skydiff.io.atomic import atomic_path

    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    with atomic_path(link) as tmp:
        tmp.write_text("new")
    assert link.is_symlink() and target.read_text() == "new" and link.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.txt", "real.txt"]


def test_checkpoint_copy_that_fails_midway_leaves_a_whole_checkpoint(trained, tmp_path, monkeypatch):
    """Lightning's own writer stages a checkpoint in the system temporary folder and shutil.moves it: across
    filesystems (local /tmp, shared run folder) that is a copy onto last.ckpt, and a job stopped during it left a
    truncated last.ckpt in place of the last good one. Checkpoints are now written beside their target."""
    from skydiff.nowcast.training import train

    out = tmp_path / "rainnet"
    shutil.copytree(trained, out)
    last = out / "checkpoints" / "last.ckpt"
    real_rename = os.rename

    def rename(src, dst, *a, **k):  # the system temporary folder on another filesystem
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *a, **k)

    real_copyfile = shutil.copyfile

    def copyfile(src, dst, *a, **k):  # the job stops (disk full, killed) half-way through the copy onto last.ckpt
        if Path(dst).name != "last.ckpt":
            return real_copyfile(src, dst, *a, **k)
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "copyfile", copyfile)
    try:
        train(config(out, "rainnet"), overrides={"training.max_steps": 2})
    except OSError:
        pass
    ck = torch.load(str(last), map_location="cpu", weights_only=False)  # a whole checkpoint, old or new
    assert ck["global_step"] in (1, 2)
    for f in (out / "checkpoints").glob("*.ckpt"):
        torch.load(str(f), map_location="cpu", weights_only=False)
    _no_temporaries(out)


def test_training_outputs_are_replaced_atomically(trained, tmp_path, monkeypatch):
    """summary.json, the checkpoints and the exported weights are each moved into place by os.replace from a
    temporary file in the same folder (summary.json was written in place)."""
    from skydiff.nowcast.training import train

    out = tmp_path / "rainnet"
    shutil.copytree(trained, out)
    moved: list[tuple[str, str]] = []
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        moved.append((os.fspath(src), os.fspath(dst)))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    s = train(config(out, "rainnet"), overrides={"training.max_steps": 2})
    assert s["resumed_from"] and s["global_step"] == 2
    for target in ("summary.json", "rainnet.safetensors", "rainnet.json", "checkpoints/last.ckpt"):
        srcs = [a for a, b in moved if Path(b) == out / target]
        assert srcs, f"{target} was not written through os.replace"
        assert all(Path(a).parent == (out / target).parent for a in srcs)
    _no_temporaries(out)


def test_resume_refuses_the_checkpoint_of_another_model_config(trained, tmp_path):
    """Re-running into the out folder of another config: a clear InputError naming what differs (was
    Lightning's RuntimeError on the weight shapes), and that run's checkpoint is left as it was."""
    from skydiff.nowcast.training import train

    out = tmp_path / "rainnet"
    shutil.copytree(trained, out)
    last = out / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    with pytest.raises(InputError, match=r"another run: model config base_channels = 4 there, 8 here"):
        train(config(out, "rainnet"), overrides={"training.max_steps": 2, "model.base_channels": 8})
    with pytest.raises(InputError, match="another run"):  # an explicit resume checkpoint too
        train(config(tmp_path / "other", "rainnet"),
              overrides={"training.max_steps": 2, "model.depth": 3, "resume": str(last)})
    # another learning rate or loss, other data or crops, another seed: not the same run either (it resumed into a
    # mixture of the two set-ups)
    for key, value, named in (("training.lr", 0.01, "training lr = 0.0001 there, 0.01 here"),
                              ("training.loss", "mse", "training loss = 'logcosh' there, 'mse' here"),
                              ("data.batch_size", 4, "data batch_size = 2 there, 4 here"),
                              ("data.crop", [16, 16], r"data crop = \[32, 40\] there, \[16, 16\] here"),
                              ("training.seed", 3, "seed = 0 there, 3 here")):
        with pytest.raises(InputError, match=named):
            train(config(out, "rainnet"), overrides={"training.max_steps": 2, key: value})
    assert last.read_bytes() == before
    # what leaves the run as it was may change: workers, the validation batch size, the data's path, max_steps
    s = train(config(out, "rainnet"), overrides={"training.max_steps": 2, "data.num_workers": 1,
                                                  "data.val_batch_size": 1})
    assert s["resumed_from"] == str(last) and s["global_step"] == 2
    # a checkpoint written before an option existed resumes with the value it trained with (divergence: squared)
    import torch

    ck = torch.load(last, map_location="cpu", weights_only=False)
    del ck["hyper_parameters"]["divergence"]
    torch.save(ck, last)
    assert train(config(out, "rainnet"), overrides={"training.max_steps": 2})["resumed_from"] == str(last)
    with pytest.raises(InputError, match="divergence = 'squared' there, 'sobel' here"):
        train(config(out, "rainnet"), overrides={"training.max_steps": 2, "training.divergence": "sobel"})


def test_fresh_run_keeps_weights_it_would_replace(trained, tmp_path):
    """An out folder that holds exported weights but no checkpoint (deleted to save space, or weights copied in):
    a fresh run with the default resume = true is refused before it trains (it replaced them at the end);
    resume = false says to replace them."""
    from skydiff.nowcast.training import train

    out = tmp_path / "rainnet"
    shutil.copytree(trained, out)
    shutil.rmtree(out / "checkpoints")
    before = (out / "rainnet.safetensors").read_bytes()
    with pytest.raises(InputError, match="would replace them"):
        train(config(out, "rainnet"), overrides={"training.max_steps": 1})
    assert (out / "rainnet.safetensors").read_bytes() == before and not (out / "checkpoints").exists()
    s = train(config(out, "rainnet"), overrides={"training.max_steps": 1, "resume": False})
    assert s["global_step"] == 1 and s["resumed_from"] is None


def test_init_from_must_not_be_the_weights_the_run_exports(trained):
    """training.init_from = the run's own export (OUT/<model>): refused, since the export at the end would replace
    the weights the run started from."""
    from skydiff.nowcast.training import resolve_config

    cfg = config(trained, "rainnet")
    cfg["training"]["init_from"] = str(trained / "rainnet")
    with pytest.raises(InputError, match="exports its weights to"):
        resolve_config(cfg)
    cfg["training"]["init_from"] = str(trained / "rainnet.safetensors")
    with pytest.raises(InputError, match="exports its weights to"):
        resolve_config(cfg)
    cfg["out"] = str(trained.parent / "next")  # another out: fine
    assert resolve_config(cfg)["training"]["init_from"]


# ------------------------------------------------------------------------------------------------ downscaling


def _pairs():
    from skydiff.downscale.data import TilePairs, block_mean

    hi = np.random.default_rng(0).gamma(0.6, 2.0, size=(24, 16, 16)).astype(np.float32)
    return TilePairs(hi, block_mean(hi, 4), 4, np.array(["syn"] * 24), np.zeros(24, "datetime64[s]"),
                     np.zeros((24, 2), np.int64))


DS = dict(batch_size=8, crop=8, base_channels=8, mults=(1, 2), progress=False)


def test_downscale_training_checkpoints_its_final_state(tmp_path):
    """The final state is checkpointed (only every ckpt_every steps before), so a re-run continues from where the
    run ended, not from the last multiple of ckpt_every."""
    from skydiff.downscale.training import train_downscaler

    pairs = _pairs()
    s1 = train_downscaler(pairs, "edm-radar-tp", out=tmp_path, max_steps=3, ckpt_every=2, **DS)
    last = tmp_path / "edm-radar-tp" / "checkpoints" / "last.ckpt"
    assert s1["steps"] == 3
    assert torch.load(str(last), map_location="cpu", weights_only=False)["global_step"] == 3
    s2 = train_downscaler(pairs, "edm-radar-tp", out=tmp_path, max_steps=3, ckpt_every=2, **DS)
    assert s2["resumed_from"] == str(last) and s2["steps"] == 3 and s2["steps_this_call"] == 0  # no step
    assert s2["final_loss_mean50"] == s1["final_loss_mean50"]  # the run's, kept in the checkpoint
    with pytest.raises(InputError, match="another run"):  # another network size in the same folder
        train_downscaler(pairs, "edm-radar-tp", out=tmp_path, max_steps=4, ckpt_every=2, **{**DS, "base_channels": 4})
    # another learning rate, batch size or data: not the same run either
    for change, named in (({"lr": 1e-2}, "lr = 0.002 there, 0.01 here"), ({"batch_size": 4}, "batch_size = 8"),
                          ({"crop": None}, "crop = 8 there, None here")):
        with pytest.raises(InputError, match=named):
            train_downscaler(pairs, "edm-radar-tp", out=tmp_path, max_steps=4, ckpt_every=2, **{**DS, **change})
    with pytest.raises(InputError, match="per_source"):
        other = _pairs()
        other.source[:] = "other"
        train_downscaler(other, "edm-radar-tp", out=tmp_path, max_steps=4, ckpt_every=2, **DS)
    s3 = train_downscaler(pairs, "edm-radar-tp", out=tmp_path, max_steps=5, ckpt_every=2, **DS)
    assert s3["steps_this_call"] == 2
    assert len(json.loads((tmp_path / "edm-radar-tp" / "log.json").read_text())["losses"]) == 5  # the whole run's
    # weights without a checkpoint: a fresh run would replace them, and is refused unless resume=False
    last.unlink()
    weights = tmp_path / "edm-radar-tp" / "edm-radar-tp.safetensors"
    before = weights.read_bytes()
    with pytest.raises(InputError, match="would replace them"):
        train_downscaler(pairs, "edm-radar-tp", out=tmp_path, max_steps=1, ckpt_every=2, **DS)
    assert weights.read_bytes() == before
    assert train_downscaler(pairs, "edm-radar-tp", out=tmp_path, max_steps=1, resume=False, **DS)["steps"] == 1
    _no_temporaries(tmp_path)


def test_downscale_training_saves_its_state_on_ctrl_c(tmp_path, monkeypatch):
    from skydiff.downscale import training as dt

    stop_training_at(monkeypatch, dt.DownscaleModule, 2, KeyboardInterrupt())
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):
            dt.train_downscaler(_pairs(), "edm-radar-tp", out=tmp_path, max_steps=5, ckpt_every=100, **DS)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores Ctrl-C from then on
    last = tmp_path / "edm-radar-tp" / "checkpoints" / "last.ckpt"
    assert torch.load(str(last), map_location="cpu", weights_only=False)["global_step"] == 2


def test_resumed_downscale_training_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    """A run stopped at step 3 (its final checkpoint) or killed at step 5 (resumed from the periodic checkpoint of
    step 4) and resumed to 7 ends with the weights of a run of 7 steps: the resumed run goes on with the batches
    (order, crops and turns) and the noise the uninterrupted run had. Before, the resumed run began an epoch again
    from its first batch, with other noise."""
    from skydiff._checkpoint import StreamSampler
    from skydiff.downscale import training as dt
    from skydiff.registry import load_model

    pairs = _pairs()
    monkeypatch.setattr(dt, "StreamSampler", lambda n, b, **k: StreamSampler(n, b, length=2 * b, **k))  # short epochs
    kw = dict(ckpt_every=2, **DS)
    whole = dt.train_downscaler(pairs, "edm-radar-tp", out=tmp_path / "a", max_steps=7, **kw)
    dt.train_downscaler(pairs, "edm-radar-tp", out=tmp_path / "b", max_steps=3, **kw)
    resumed = dt.train_downscaler(pairs, "edm-radar-tp", out=tmp_path / "b", max_steps=7, **kw)
    restore = stop_training_at(monkeypatch, dt.DownscaleModule, 5, RuntimeError("killed"))
    with pytest.raises(RuntimeError, match="killed"):
        dt.train_downscaler(pairs, "edm-radar-tp", out=tmp_path / "c", max_steps=7, **kw)
    restore()
    crashed = dt.train_downscaler(pairs, "edm-radar-tp", out=tmp_path / "c", max_steps=7, **kw)
    assert resumed["resumed_from"] and crashed["resumed_from"] and resumed["steps"] == crashed["steps"] == 7
    a = load_model(whole["weights"]).state_dict()
    for run in (resumed, crashed):
        b = load_model(run["weights"]).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    short = load_model(dt.train_downscaler(pairs, "edm-radar-tp", out=tmp_path / "d", max_steps=6,
                                           **kw)["weights"]).state_dict()
    assert not all(torch.equal(a[k], short[k]) for k in a)  # the comparison can tell runs apart


def test_stream_sampler_goes_on_where_it_stopped():
    from skydiff._checkpoint import StreamSampler

    s = StreamSampler(10, 3, seed=1)
    assert len(s) == 9  # whole batches
    stream = list(s) + list(s) + list(s)
    assert sorted(stream[:10]) == list(range(10)) and stream[:10] != stream[10:20]  # passes, each shuffled anew
    r = StreamSampler(10, 3, seed=1)
    r.resume(4)
    assert list(r) == stream[12:21]
    d = StreamSampler(10, 3, seed=1, draws=True)
    assert [q % 10 for q in list(d) + list(d)] == stream[:18] and max(list(d)) >= 20


# ------------------------------------------------------------------------------------------------ NEUVE training


@pytest.fixture
def cheap_neuve(monkeypatch):
    """train_neuve with stand-ins for the solver runs (the resume logic, not the physics): a loss of the weights,
    no fit to SLEVE, no evaluation runs. ``calls["stop_at"]``: the loss call that raises KeyboardInterrupt."""
    from skydiff.dycore import training as tr

    calls = {"n": 0, "stop_at": None}

    def loss(coord, terrain, seconds=600.0, **kw):
        calls["n"] += 1
        if calls["n"] == calls["stop_at"]:
            raise KeyboardInterrupt
        params = list(coord.parameters())
        value = sum((p.sin() ** 2).mean() for p in params) if params else torch.tensor(0.5, dtype=torch.float64)
        return value + terrain[0] / 1000.0, 0.0

    monkeypatch.setattr(tr, "klemp_loss", loss)
    monkeypatch.setattr(tr, "klemp_max_w", lambda *a, **k: 0.0)
    monkeypatch.setattr(tr, "fit_to_coordinate", lambda *a, **k: 0.0)
    return tr, calls


def test_neuve_training_resumes_after_an_interruption(tmp_path, cheap_neuve):
    """An interrupted `skydiff dycore train` started again from iteration 0 (no state was kept); it now continues
    from the state after its last iteration and ends with the weights of an uninterrupted run."""
    from safetensors.torch import load_file

    tr, calls = cheap_neuve
    kw = dict(iterations=6, lr=0.05, progress=False)
    whole = tr.train_neuve(out=tmp_path / "whole" / "neuve", **kw)
    assert whole["resumed_from"] is None and not (tmp_path / "whole" / "neuve.ckpt").exists()

    calls.update(n=0, stop_at=3 + 4)  # 3 SLEVE reference losses, then iterations 0..3: stopped in iteration 3
    with pytest.raises(KeyboardInterrupt):
        tr.train_neuve(out=tmp_path / "run" / "neuve", **kw)
    state = tmp_path / "run" / "neuve.ckpt"
    assert state.is_file() and not (tmp_path / "run" / "neuve.safetensors").exists()
    with pytest.raises(InputError, match="other settings"):  # not with other settings
        tr.train_neuve(out=tmp_path / "run" / "neuve", **{**kw, "lr": 0.01})

    calls.update(n=0, stop_at=None)
    again = tr.train_neuve(out=tmp_path / "run" / "neuve", **kw)
    assert again["resumed_from"] == 3 and calls["n"] == 3  # iterations 3, 4, 5 only
    assert again["loss"] == pytest.approx(whole["loss"])
    a, b = load_file(whole["weights"]), load_file(again["weights"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not state.exists()  # finished: nothing left to resume
    _no_temporaries(tmp_path)


def test_neuve_training_refuses_init_equal_to_out(tmp_path, cheap_neuve):
    """`--init X --out X --overwrite` replaced the weights the run started from."""
    tr, _ = cheap_neuve
    s = tr.train_neuve(out=tmp_path / "neuve", iterations=1, progress=False)
    before = Path(s["weights"]).read_bytes()
    with pytest.raises(InputError, match="weights file this run writes"):
        tr.train_neuve(out=tmp_path / "neuve", init=tmp_path / "neuve.safetensors", iterations=1, progress=False)
    assert Path(s["weights"]).read_bytes() == before
    # the Python API, like the CLI, keeps the weights of a finished run unless told to replace them
    with pytest.raises(InputError, match="would replace it"):
        tr.train_neuve(out=tmp_path / "neuve", iterations=1, lr=0.5, progress=False)
    assert Path(s["weights"]).read_bytes() == before
    tr.train_neuve(out=tmp_path / "neuve", iterations=1, lr=0.5, progress=False, overwrite=True)
    assert Path(s["weights"]).read_bytes() != before


# ------------------------------------------------------------------------------------------------ build-nl


def test_build_nl_dataset_never_replaces_one_of_its_inputs(tmp_path):
    """The library function (not only the CLI) refuses an output that is one of its input files, even with
    overwrite=True, before reading anything."""
    from skydiff.nowcast.data import build_nl_dataset

    src = tmp_path / "radar"
    src.mkdir()
    f = src / "RAD_NL25_RAP_5min_201008260530.h5"
    f.write_bytes(b"not really radar")
    for inputs in ([f], [src], [str(src / "*.h5")]):
        with pytest.raises(InputError, match="one of the input files"):
            build_nl_dataset(inputs, f, overwrite=True)
    assert f.read_bytes() == b"not really radar"
    with pytest.raises(SkydiffError):  # another output name: read (and refused as radar), nothing written
        build_nl_dataset([f], src / "nl.h5")
    assert sorted(p.name for p in src.iterdir()) == [f.name]


def test_neuve_training_refuses_fewer_iterations_than_its_checkpoint(tmp_path, cheap_neuve):
    """Asking for fewer iterations than an unfinished run had done deleted its state and misreported the run."""
    tr, calls = cheap_neuve
    calls.update(n=0, stop_at=3 + 4)
    with pytest.raises(KeyboardInterrupt):
        tr.train_neuve(out=tmp_path / "neuve", iterations=6, progress=False)
    state = tmp_path / "neuve.ckpt"
    before = state.read_bytes()
    calls.update(n=0, stop_at=None)
    with pytest.raises(InputError, match="already 3 iterations long.*--restart"):
        tr.train_neuve(out=tmp_path / "neuve", iterations=2, progress=False)
    assert state.read_bytes() == before and not (tmp_path / "neuve.safetensors").exists()
