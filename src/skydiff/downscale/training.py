"""Training of the diffusion downscalers with Lightning: :class:`PairDataset`, :class:`DownscaleModule`,
:func:`train_downscaler`.

Recipe (defaults; every value is an argument): random ``crop × crop`` high-resolution crops (aligned to the factor;
default 32 × 32 of the 64 × 64 radar tiles, the network is fully convolutional) with random flips and 90° turns;
AdamW (lr 2e-3, weight decay 1e-4, cosine decay to 5 % with 100 warm-up steps); EDM loss
(:meth:`EDMDownscaler.loss`); an exponential moving average of the weights (decay 0.999) is what gets exported.
``sigma_data`` is set to the standard deviation of the training residuals (data space) before training. For
``space="pp"`` the trained PP weights (``pp-radar``/``pp-era5`` shipped with skydiff, or ``pp_weights``) are loaded
into the frozen ``model.pp`` first.

Checkpoints go to ``<out>/checkpoints/last.ckpt`` (atomically) every ``ckpt_every`` steps, at the end of the run
and on Ctrl-C; a run with ``resume=True`` (default) continues from it (raise ``max_steps`` to train further) with
the batches, crops and noise the uninterrupted run would have had: a run resumed from a checkpoint (not from a
Ctrl-C in the middle of a step) ends with the same weights, to the bit, as one that was never stopped. The
EMA model is exported with :func:`skydiff.registry.save_model` to ``<out>/<name>`` (and optionally copied to the
shipped weights by the caller).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .._checkpoint import (
    SaveOnInterrupt,
    StreamSampler,
    changed_settings,
    check_resumable,
    rng_state,
    set_rng_state,
    with_atomic_checkpoints,
)
from ..errors import InputError, ShapeError, check_int, check_seed, positive_finite
from ..io.atomic import atomic_path
from ..registry import create_model, save_model
from . import diffusion as _diffusion  # noqa: F401  (registers the edm-* models)
from .data import TilePairs

__all__ = ["PairDataset", "DownscaleModule", "train_downscaler", "residual_std"]


def _check_crop(crop: int | None, f: int, H: int, W: int, augment: bool = True) -> None:
    """A crop that fits the tiles and the factor; whole tiles (``crop=None``) square where they are turned."""
    if crop is not None and (crop % f or crop > min(H, W)):
        raise InputError(f"crop {crop} must be a multiple of the factor {f} and <= the tile size {H} × {W}")
    if crop is None and augment and H != W:  # (the 90-degree turns made tiles of two shapes in one batch)
        raise ShapeError(f"crop=None trains on whole tiles, which must be square for the augmentation's 90-degree "
                         f"turns; the tiles are {H} x {W}: give a crop")


class PairDataset(Dataset):
    """Random aligned crops of :class:`~skydiff.downscale.data.TilePairs` with flips and 90° turns.

    Items: dict ``hi`` (crop, crop), ``lo`` (crop/f, crop/f) and, when the pairs hold VIMD, ``hi_vimd``/``lo_vimd``.
    ``crop=None`` takes whole tiles; ``augment=False`` no flips/turns. ``length`` (default ``len(pairs)``) makes an
    epoch longer than the data by cycling through it (tiny data sets: fewer Lightning epoch boundaries). Item ``i``
    is tile ``i % len(pairs)``, cropped and turned by ``numpy.random.default_rng([seed, i])``: the same in every
    process and after a resume. Indices beyond ``len(self)`` are allowed: :class:`~skydiff._checkpoint.StreamSampler`
    with ``draws=True`` gives each pass over the data its own (so new crops).
    """

    def __init__(self, pairs: TilePairs, crop: int | None = 32, augment: bool = True, seed: int = 0,
                 length: int | None = None, labels: np.ndarray | None = None):
        f = pairs.factor
        _check_crop(crop, f, *pairs.hi.shape[1:], augment)
        self.pairs, self.crop, self.augment, self.f = pairs, crop, augment, f
        self.seed = int(seed)
        self.has_vimd = "vimd_hi" in pairs.extra
        self.length = len(pairs) if length is None else max(int(length), len(pairs))
        self.labels = None if labels is None else np.asarray(labels, np.int64)
        if self.labels is not None and self.labels.shape != (len(pairs),):
            raise InputError(f"labels must hold one index per pair ({len(pairs)}), got shape {self.labels.shape}")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p, f = self.pairs, self.f
        rng = np.random.default_rng([self.seed, int(i)])
        i = int(i) % len(p)
        fields = {"hi": p.hi[i]}
        if self.has_vimd:
            fields["hi_vimd"] = p.extra["vimd_hi"][i]
        H, W = p.hi.shape[1:]
        if self.crop is not None:
            c = self.crop
            r0 = int(rng.integers(0, (H - c) // f + 1)) * f
            c0 = int(rng.integers(0, (W - c) // f + 1)) * f
            fields = {k: v[r0:r0 + c, c0:c0 + c] for k, v in fields.items()}
        if self.augment:
            k = int(rng.integers(0, 4))
            flip = bool(rng.integers(0, 2))
            fields = {n: np.rot90(v[:, ::-1] if flip else v, k) for n, v in fields.items()}
        out = {n: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for n, v in fields.items()}
        from .data import block_mean

        out["lo"] = block_mean(out["hi"], f)
        if self.has_vimd:
            out["lo_vimd"] = block_mean(out["hi_vimd"], f)
        if self.labels is not None:
            out["label"] = torch.tensor(int(self.labels[i]))
        return out


def residual_std(model: Any, pairs: TilePairs, n: int = 2000, seed: int = 0) -> float:
    """Standard deviation of ``encode(hi) - up(encode(lo))`` over (up to ``n``) training pairs."""
    idx = np.random.default_rng(seed).choice(len(pairs), min(n, len(pairs)), replace=False)
    hi = torch.from_numpy(pairs.hi[idx])
    lo = torch.from_numpy(pairs.lo[idx])
    hv = torch.from_numpy(pairs.extra["vimd_hi"][idx]) if "vimd_hi" in pairs.extra else None
    lv = torch.from_numpy(pairs.extra["vimd_lo"][idx]) if "vimd_lo" in pairs.extra else None
    with torch.no_grad():
        base, _ = model.condition(lo, lv)
        r = model.encode(hi, hv) - base
    return float(r.std())


def _lightning() -> Any:
    import lightning as L

    return L


class DownscaleModule(_lightning().LightningModule):  # type: ignore[misc]
    """Lightning wrapper: EDM loss, AdamW + warm-up/cosine schedule, EMA weights (``self.ema``)."""

    def __init__(self, model: Any, lr: float = 2e-3, weight_decay: float = 1e-4, max_steps: int = 2000,
                 warmup: int = 100, ema_decay: float = 0.999, label_dropout: float = 0.2):
        super().__init__()
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.lr, self.wd, self.max_steps, self.warmup, self.ema_decay = lr, weight_decay, max_steps, warmup, ema_decay
        if not 0.0 <= float(label_dropout) <= 1.0:
            raise InputError(f"label_dropout must be in [0, 1], got {label_dropout}")
        self.label_dropout = float(label_dropout)
        self.losses: list[float] = []  # every step's loss, over resumed runs too (kept in the checkpoints)
        self.run_setup: dict[str, Any] = {}  # what a resume must share with its checkpoint (train_downscaler)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        label = batch.get("label")
        if label is not None and self.label_dropout > 0:  # "unknown" for a share of the fields: the mixture
            drop = torch.rand(label.shape, device=label.device) < self.label_dropout
            label = torch.where(drop, torch.full_like(label, len(self.model.labels)), label)
        loss = self.model.loss(batch["hi"], batch["lo"], batch.get("hi_vimd"), batch.get("lo_vimd"), label=label)
        if not bool(torch.isfinite(loss)):  # (it went on, and the non-finite weights were exported)
            raise InputError(f"the training loss is {float(loss)} at step {self.global_step}: training diverged "
                             "(lower lr) or the data hold values the model cannot take; nothing was exported")
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.losses.append(float(loss))
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # the EMA follows each step here, not in on_train_batch_end: Lightning's ModelCheckpoint saves in its own
        # on_train_batch_end, which runs before the module's, so its checkpoints held the EMA one step behind
        n = self.global_step + 1  # steps taken, this one included (global_step counts it only after this hook)
        d = min(self.ema_decay, (1 + n) / (10 + n))
        with torch.no_grad():
            for pe, pm in zip(self.ema.net.parameters(), self.model.net.parameters()):
                pe.mul_(d).add_(pm.detach(), alpha=1 - d)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skydiff_rng"] = rng_state()  # noise levels and noise: a resume continues them
        checkpoint["skydiff"] = {"losses": list(self.losses), "setup": dict(self.run_setup)}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        set_rng_state(checkpoint.get("skydiff_rng"))
        self.losses = list((checkpoint.get("skydiff") or {}).get("losses", []))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.model.net.parameters(), lr=self.lr, weight_decay=self.wd)

        def sched(step: int) -> float:
            if step < self.warmup:
                return (step + 1) / self.warmup
            t = min(1.0, (step - self.warmup) / max(1, self.max_steps - self.warmup))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t))

        return {"optimizer": opt, "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, sched),
                                                   "interval": "step"}}


def train_downscaler(pairs: TilePairs, name: str = "edm-radar", *, out: str | os.PathLike[str] = "runs/downscale",
                     max_steps: int = 2000, batch_size: int = 32, crop: int | None = 32, lr: float = 2e-3,
                     ema_decay: float = 0.999, pp_weights: str | os.PathLike[str] | bool = True,
                     ckpt_every: int = 200, resume: bool = True, seed: int = 0, progress: bool = True,
                     card: dict[str, Any] | None = None, label_dropout: float = 0.2, accelerator: str = "auto",
                     **model_config: Any) -> dict[str, Any]:
    """Train a registered ``edm-*`` downscaler on high-/low-resolution pairs and export its EMA weights.

    Parameters
    ----------
    pairs
        Training pairs (:func:`~skydiff.downscale.data.radar_pairs` / :func:`~skydiff.downscale.data.era5_pairs`).
    name
        ``"edm-radar"``, ``"edm-radar-tp"`` or ``"edm-era5"``.
    out
        Run folder: ``<out>/<name>/checkpoints/last.ckpt``, ``<out>/<name>/<name>.safetensors``/``.json``,
        ``<out>/<name>/log.json``.
    max_steps, batch_size, crop, lr, ema_decay
        Optimisation settings (see the module docstring).
    pp_weights
        For PP models: ``True`` = the shipped ``pp-*`` weights, or a path to PP weights.
    ckpt_every, resume
        Lightning checkpoint interval (steps) and whether to continue from ``last.ckpt``.
    label_dropout
        For a model with ``labels`` (each pair labelled with its source's product,
        :data:`~skydiff.downscale.data.RADAR_LABELS`): the share of training fields given the "unknown" label
        instead, so that sampling without a label is the training mixture.
    accelerator
        Passed to ``lightning.Trainer``: ``"auto"`` (a GPU when there is one), ``"cpu"``, ``"gpu"``, ...
    **model_config
        Constructor options of :class:`~skydiff.downscale.diffusion.EDMDownscaler` (``factor`` defaults to
        ``pairs.factor``).

    Returns
    -------
    dict
        Summary: weights path, steps, final loss (mean of the run's last 50 steps, resumed calls included),
        steps_this_call, wall time, sigma_data, data summary. ``log.json`` beside the weights holds it with
        every step's loss. A resume refuses another lr, batch size, crop, seed, EMA decay, label dropout or
        data (counts per source, shapes); ``max_steps`` may grow (the cosine schedule then spans the new
        total).
    """
    L = _lightning()
    from lightning.pytorch.callbacks import ModelCheckpoint

    torch.manual_seed(check_seed(seed))
    _check_settings(max_steps=max_steps, batch_size=batch_size, crop=crop, lr=lr, ema_decay=ema_decay,
                    ckpt_every=ckpt_every, label_dropout=label_dropout)
    _check_pairs(pairs)
    _check_crop(crop, pairs.factor, *pairs.hi.shape[1:])  # (before the run folder is made)
    model_config.setdefault("factor", pairs.factor)
    if model_config["factor"] != pairs.factor:
        raise InputError(f"model factor {model_config['factor']} differs from the pairs' factor {pairs.factor}")
    model = create_model(name, **model_config)  # (an unknown name is refused before the run folder is made)
    if model.pp is None and pp_weights not in (True, False, None):  # (a path was ignored without a word)
        raise InputError(f"pp_weights={pp_weights!r}: {name!r} trains in its own data space, with no PP model")
    run = Path(out) / name
    run.mkdir(parents=True, exist_ok=True)
    if model.pp is not None and pp_weights:
        pp_name = model.config["pp_model"]
        src = create_model(pp_name, pretrained=True if pp_weights is True else pp_weights)
        if src.config != model.pp.config:  # rebuild with the trained PP's config
            model = create_model(name, **{**model_config, "pp_config": dict(src.config)})
        model.pp.load_state_dict(src.state_dict())
    sd = residual_std(model, pairs)
    if "sigma_data" not in model_config:
        model = create_model(name, **{**model.config, "sigma_data": sd}) if model.pp is None else _with_sigma(
            model, name, sd)
    module = DownscaleModule(model, lr=lr, max_steps=max_steps, ema_decay=ema_decay, label_dropout=label_dropout)
    data = pairs.summary()
    module.run_setup = {"lr": float(lr), "ema_decay": float(ema_decay), "label_dropout": float(label_dropout),
                        "batch_size": int(batch_size), "crop": crop, "seed": int(seed),
                        "data": {k: data[k] for k in ("n", "hi_shape", "lo_shape", "factor", "per_source")},
                        # the network and its data space (a resume with another PP model exported a mix)
                        "model": json.loads(json.dumps(model.config, default=str)),
                        "pp_weights_sha1": None if model.pp is None else _state_digest(model.pp)}
    labels = None
    if model.labels:  # the product label of every pair, from its source name (RADAR_LABELS)
        from .data import radar_label

        names = [radar_label(s) for s in pairs.source]
        missing = sorted(set(names) - set(model.labels))
        if missing:
            raise InputError(f"the pairs hold product(s) {missing} that the model's labels {list(model.labels)} lack")
        labels = np.array([model.labels.index(n) for n in names], np.int64)
    ds = PairDataset(pairs, crop=crop, seed=seed, length=max(len(pairs), 100 * batch_size), labels=labels)
    sampler = StreamSampler(len(ds), batch_size, seed=seed, draws=True)  # a resumed run goes on where it stopped
    dl = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=0,
                    generator=torch.Generator().manual_seed(seed))  # its seed draw leaves the global generator alone
    ckdir = run / "checkpoints"
    last = ckdir / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    resumed_at = 0
    if ckpt_path is None and resume and (run / f"{name}.safetensors").is_file():
        raise InputError(f"{run} holds the weights {name}.safetensors of an earlier run but no checkpoint to resume "
                         f"({last}): this run would replace them; give another out, or resume=False to train again "
                         "and replace them")
    if ckpt_path:
        def differences(ck: dict[str, Any]) -> list[str]:  # the optimisation and the data (checkpoints since
            there = (ck.get("skydiff") or {}).get("setup") or {}  # 2026-11-29 hold them)
            here = json.loads(json.dumps(module.run_setup))
            shared = [k for k in here if k in there]
            return changed_settings("settings", {k: there[k] for k in shared}, {k: here[k] for k in shared})

        ck = check_resumable(ckpt_path, module, f"give another out, or resume=False to start again (it replaces {run})",
                             differences)
        sampler.resume(int(ck.get("global_step", 0)))
        resumed_at = len((ck.get("skydiff") or {}).get("losses", []))
        del ck
        print(f"train_downscaler: resuming from {ckpt_path}", file=sys.stderr, flush=True)

    cb = ModelCheckpoint(dirpath=str(ckdir), filename="last", monitor=None, save_top_k=1,
                         every_n_train_steps=int(ckpt_every), save_last=False,
                         enable_version_counter=False)  # (a restart wrote last-v1.ckpt beside the old last.ckpt)
    trainer = L.Trainer(max_steps=int(max_steps), max_epochs=-1, accelerator=accelerator, devices=1, logger=False,
                        callbacks=[cb, SaveOnInterrupt(last, "train_downscaler")],
                        enable_progress_bar=progress, enable_model_summary=False, log_every_n_steps=25,
                        num_sanity_val_steps=0, plugins=with_atomic_checkpoints())  # checkpoints via atomic_path
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")  # StreamSampler is
        trainer.fit(module, train_dataloaders=dl, ckpt_path=ckpt_path)
    trainer.save_checkpoint(str(last))  # the final state, so that a run with more max_steps continues from it
    wall = time.perf_counter() - t0
    ema = module.ema.cpu().eval()
    summary = {
        "model": name, "steps": int(trainer.global_step), "batch_size": batch_size, "crop": crop, "lr": lr,
        "ema_decay": ema_decay, "sigma_data": float(ema.sigma_data), "wall_s": round(wall, 1),
        "final_loss_mean50": float(np.mean(module.losses[-50:])) if module.losses else None,
        "steps_this_call": len(module.losses) - resumed_at, "resumed_from": ckpt_path,
        "data": pairs.summary(), "threads": torch.get_num_threads(),
        "parameters": int(sum(p.numel() for p in ema.net.parameters())),
    }
    card = {**(card or {}), "training": summary}
    wts, js = save_model(ema, run / name, card=card)
    summary["weights"] = str(wts)
    with atomic_path(run / "log.json") as tmp:
        tmp.write_text(json.dumps({**summary, "losses": module.losses}, indent=1) + "\n")
    return summary


def _check_settings(**v: Any) -> None:
    """The optimisation settings of :func:`train_downscaler` (:class:`InputError` naming a bad one)."""
    for k in ("max_steps", "batch_size", "ckpt_every"):
        check_int(k, v[k], 1)
    if v["crop"] is not None:
        check_int("crop", v["crop"], 1)
    if not positive_finite(v["lr"]):
        raise InputError(f"lr must be a finite number > 0, got {v['lr']!r}")
    for k in ("ema_decay", "label_dropout"):
        if isinstance(v[k], bool) or not isinstance(v[k], (int, float, np.number)) or not 0.0 <= v[k] < 1.0:
            raise InputError(f"{k} must be a number in [0, 1), got {v[k]!r}")


def _check_pairs(pairs: TilePairs) -> None:
    """Refuse pairs with no-data (NaN) or infinite values, or negative rain: the loss would turn NaN and the exported
    weights with it; and pairs whose fields do not fit together (counts, ``lo`` not ``hi`` / factor)."""
    n = len(pairs)
    if n < 1:
        raise InputError("pairs is empty: no tile to train on")
    f = int(pairs.factor)
    hi_shape = tuple(np.shape(pairs.hi))
    want_lo = (n, hi_shape[1] // f, hi_shape[2] // f) if len(hi_shape) == 3 else None
    if want_lo is None or hi_shape[1] % f or hi_shape[2] % f or tuple(np.shape(pairs.lo)) != want_lo:
        raise ShapeError(f"pairs: hi {hi_shape} and lo {tuple(np.shape(pairs.lo))} do not fit factor {f} (lo must be "
                         "(N, H / factor, W / factor) with H and W multiples of the factor)")
    for what, a in pairs.extra.items():
        if np.shape(a)[0] != n:
            raise ShapeError(f"pairs.extra[{what!r}] has {np.shape(a)[0]} entries for {n} pairs")
    for what, a in (("hi", pairs.hi), ("lo", pairs.lo), *pairs.extra.items()):
        a = np.asarray(a)
        if a.dtype.kind not in "fiu" or not a.size:
            continue
        bad = ~np.isfinite(a) | ((a < 0) if what in ("hi", "lo") else False)  # (VIMD and static fields are signed)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(len(a), -1).any(1))[0])
            raise InputError(f"pairs.{what} holds {int(bad.sum())} no-data (NaN), infinite"
                             f"{' or negative' if what in ('hi', 'lo') else ''} value(s), first in pair {i} "
                             f"({pairs.source[i]}); train on complete tiles")


def _state_digest(module: torch.nn.Module) -> str:
    """SHA-1 of a module's state (names, shapes and values): the same weights give the same digest."""
    import hashlib

    h = hashlib.sha1()
    for k, t in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _with_sigma(model: Any, name: str, sd: float) -> Any:
    """Rebuild a PP model with a new sigma_data, keeping its PP weights."""
    state = model.pp.state_dict()
    new = create_model(name, **{**model.config, "sigma_data": sd})
    new.pp.load_state_dict(state)
    return new
