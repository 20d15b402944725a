"""Training of the nowcasting networks with Lightning: :class:`NowcastModule` and :func:`train`.

:class:`NowcastModule` wraps any registered model (:func:`skydiff.nowcast.models.create_model`) with its
training recipe (from its paper, cited in its module); :func:`train` is the function behind
``skydiff train MODEL --config FILE``: it reads a TOML/JSON config, builds the data, trains with checkpoints,
early stopping, a progress bar and a CSV log, resumes an interrupted run automatically, and exports the best
model with :func:`~skydiff.nowcast.models.save_model`.

>>> from skydiff.nowcast.training import train
>>> summary = train("src/skydiff/nowcast/configs/rainnet.toml",
...                 overrides={"training.max_epochs": 1, "out": "runs/rainnet"})   # doctest: +SKIP
>>> summary["weights"]                      # .json model card: summary["card"]   # doctest: +SKIP
'runs/rainnet/rainnet.safetensors'

Data space
----------
Datasets are built with ``transform=None``: batches hold rain rates in **mm/h** (no-data pixels set to 0 and
flagged ``False`` in ``batch["mask"]``). :class:`NowcastModule` applies the model's own ``model.transform``
(``model.scaler``: RainNet ``ln(R/12 + 0.01)``, SmaAt-UNet ``R/12/47.83``, LUPIN and L-CNN mm/h) inside each
step, so one data pipeline serves every model and the validation metrics are computed in mm/h after
``model.inverse_transform``. Losses are means over the valid pixels (``mask``) of the target frames.

Recipes (defaults of the ``[training]`` section; every value can be overridden)
--------------------------------------------------------------------------------

============  ==================================================================  =======  ===================
model/stage   loss                                                                lr       scheduler / ES
============  ==================================================================  =======  ===================
rainnet       LogCosh on the next frame (``rollout_steps`` > 1: mean over an       1e-4     none / ES 5
              autoregressive rollout), in RainNet's space                                   (§3: 10 epochs)
lcnn          LogCosh (§2's config uses RMSE: ``loss = "rmse"``) on the Eulerian   1e-4     plateau 0.1, p 3 /
              nowcast: Lucas-Kanade motion per sample (CPU, on the fly),                    ES 5
              Lagrangian differences -> RainNet U-Net -> cumulative sum ->
              advected back; in the model's space (mm/h)
smaat         MSE on every output lead (``leadtime_steps``), in SmaAt's space,     1e-3     plateau 0.1, p 4 /
              summed over the pixels and leads of each sample, mean over the batch         ES 15
              (§4; a per-pixel mean makes gradients smaller than Adam's eps)
lupin         stage ``"motion"``: MF-U-Net alone; ``(1-β)·LogCosh(ext, y) +        5e-4     plateau 0.9, p 0 /
 motion       β·div``, ext = last frame advected along the (unblurred) motion,              ES 3
              compared in ``ln(R + 0.01)`` (stage 1 used the ``log`` data), β = 0.1
lupin         stage ``"tendency"``: AF-U-Net with the MF-U-Net frozen               1e-4     plateau 0.1, p 3 /
 tendency     (:meth:`~skydiff.nowcast.models.LUPIN.freeze_motion`); RMSE of the            ES 5
              nowcast in mm/h over 6 autoregressive leads (detached), β = γ = 0
lupin         stage ``"joint"``: both U-Nets; ``(1-β)(1-γ)·RMSE + (1-β)γ·extra +    1e-4     plateau 0.9, p 0 /
 joint        β·div`` with β = γ = 0.1; extra = each observed frame advected one            ES 3
              step (:meth:`~skydiff.nowcast.models.LUPIN.advect_frames`) vs the
              next frame, and the last one vs the target (§1 losses)
spatspark     SpaT-SparK fine-tuning (§6): ``MSE + ssim_weight·(1 − SSIM)`` on    1e-4     cosine, warm-up 40
              every output lead (``leadtime_steps``, default 12 -> 12) in SmaAt            / ES 30; AdamW,
              space; ``ssim_weight`` 1e-4 (SSIM with data range [0, 1]); the loss is       wd 0.05
              multiplied by the values per sample (Adam's eps, as for smaat);
              ``init_from`` = the ``spatspark-pretrain`` export (encoder,
              densify, decoder copied, see
              :func:`~skydiff.nowcast.models.init_from_pretrain`)
spatspark-    SparK masked-image-modelling pretraining (§5-§6): per-patch-        1e-4     cosine, warm-up 40
 pretrain     normalised MSE of the reconstruction (``model.loss_on``: masked              / no ES; AdamW,
              patches, SparK; all, SpaT-SparK); only the ``n_in`` input frames             wd 0.05
              are used (``data.n_out`` defaults to 0: unlabelled windows)
============  ==================================================================  =======  ===================

``div`` is :meth:`~skydiff.nowcast.models.LUPIN.divergence_penalty`: the mean squared divergence by default, or
LUPIN's code's ``sum |Sobel divergence| / (B H W)`` with ``training.divergence = "sobel"`` (~100x larger on typical
motions, so the same β weighs it more). LUPIN's stages
are chained with ``training.init_from``: the previous stage's exported ``.safetensors`` (or a ``.ckpt``); the
model section may then hold only ``name``, the rest of the model config is taken from that file.

SpaT-SparK is trained in two runs: ``skydiff train spatspark-pretrain`` (sample config
``spatspark_pretrain.toml``) exports ``<out>/spatspark-pretrain.safetensors``; ``skydiff train spatspark``
(``spatspark.toml``) with ``training.init_from`` = that file (stem or ``.ckpt``) builds the fine-tuning model
with the pretraining run's architecture (in_frames, widths, depth, decoder; keys in the ``[model]`` section
override it) and copies encoder, densify layers, mask tokens and decoder into it. Their recipes use the
``[training]`` keys (available to every model) ``optimizer`` (``"adamw"``: decoupled weight decay, none on
biases, norms and mask tokens, betas (0.9, 0.95); or ``"adam"``, the default; the references use LAMB, which
torch lacks) and ``warmup_epochs`` (linear warm-up of the ``"cosine"`` scheduler, which then decays the
learning rate towards 0 at the run's last epoch, per epoch; a resume with more max_epochs or max_steps stretches
it to the new end), and, for ``spatspark`` only, ``ssim_weight``. The pretraining's ``loss`` is always its
reconstruction loss (``"mse"``).

Values are checked against their key's type (``augment = "false"`` is refused, not read as true; an integral float
of an integer key is taken) and least value (``batch_size >= 1``). A resume refuses a checkpoint whose optimisation
options (lr, loss, scheduler, ...), ``[data]`` section (less ``num_workers``, ``val_batch_size`` and ``path``) or
seed differ from the config's, naming each difference.

Validation: ``val_loss`` (the training loss; for ``spatspark-pretrain`` with a fixed mask per validation batch,
so that epochs compare), and per lead time ``n`` (in data time steps, 5 min for the
shared data) the masked MAE ``val_mae_lead{n}`` (mm/h) and ``val_csi_lead{n}`` at ``csi_threshold``
(default 1 mm/h, event = value >= threshold, contingency counts summed over the whole validation set and
all processes), plus their means over leads ``val_mae`` and ``val_csi``. Autoregressive models are rolled out
over all ``data.n_out`` targets for the metrics (the loss uses the first ``rollout_steps``); LUPIN's stage
``"motion"`` is scored as the pure advection nowcast it trains. ``spatspark-pretrain`` has no lead times: its
``val_mae`` and ``val_csi`` score the reconstruction (mm/h) of the masked patches of the input frames.

Config
------
TOML (``tomllib``) or JSON, or a dict; ``train(config, overrides={"training.max_epochs": 1, "out": "x"})``
sets dotted keys. ``train("lupin_motion")`` (a name that is not a file) uses the sample config
``skydiff/nowcast/configs/lupin_motion.toml`` (:func:`sample_config`). Unknown keys are errors.

.. code-block:: toml

    out = "runs/rainnet"        # output folder (default runs/<model>[_<stage>])
    resume = true               # true: resume from out/checkpoints/last.ckpt if present; false; or a .ckpt path
    accelerator = "auto"        # passed to lightning.Trainer ("cpu", "gpu", "auto", ...)
    devices = "auto"            # number of devices per node, or a list
    strategy = "auto"           # "ddp" (multi-GPU / multi-node), "ddp_spawn", "auto", ...
    num_nodes = 1

    [model]                     # name + constructor keywords of create_model(name, **kwargs)
    name = "rainnet"
    base_channels = 64

    [data]
    source = "shared"           # "shared" (shared_split of $SKYDIFF_DATA), "nl" (NL-50 HDF5), "synthetic"
    path = ""                   # shared: data folder (default $SKYDIFF_DATA); nl: the .h5 file
    n_in = 4                    # input frames (default: the model's); the last model.n_input_frames are used
    n_out = 6                   # target frames (default: what the loss needs); metrics for all of them
    crop = [256, 256]           # training crops (random) and validation crops (centre); [] = whole frames
    batch_size = 2
    val_batch_size = 2          # default: batch_size
    num_workers = 0             # DataLoader workers (each runs with 1 torch thread)
    val_fraction = 0.2          # shared: validation tail per event; nl: latest part of the train group by time,
                                # training windows that overlap it dropped (default 0.1)
    stride = 1                  # shared/synthetic: step between window starts
    min_rain_fraction = 0.0     # shared/synthetic: keep windows with at least this rainy fraction of targets
    rain_threshold = 0.1        # mm/h, for min_rain_fraction
    min_valid_fraction = 0.9    # least valid fraction of a crop (default 0.9 with a crop)
    augment = false             # shared/synthetic: random rotations by 90 deg / mirror images of training crops
    sampling = "window"         # shared/synthetic training crops: "window" (one per window) or "tiles" (per rainy tile)
    mrms = false                # shared: add MRMS 2019-06-10 (resampled to 5 min) to the training part
    train_fraction = 1.0        # train on a random subset of this fraction of the training samples (learning curves)
    eval_crops = "centre"       # validation crops: "centre" or "grid"
    n_frames = 24               # synthetic: frames per sequence (skydiff.synthetic.rain_sequence)
    shape = [64, 64]            # synthetic: grid
    n_sequences = 2             # synthetic: training sequences (seeds seed, seed+1, ...)
    n_val_sequences = 1         # synthetic: validation sequences (seeds seed+1000, ...)
    exclude = []                # shared: names of training parts to leave out, e.g. ["KNMI 2021-01-01-2005"]
    teacher = ""                # shared/synthetic: whole-grid optical flow ("lk", ...) of each window, per sample
                                # (a motion teacher or a LUPIN motion_prior computed on the whole grid)
    # teacher_frames, teacher_kwargs: that flow's frames and options (default: those of the model's motion_prior)

    [training]
    # stage = "motion"          # lupin only: "motion" | "tendency" | "joint"
    optimizer = "adam"          # "adam" | "adamw" (spatspark* recipes: adamw)
    warmup_epochs = 0           # warm-up of scheduler = "cosine" (spatspark* recipes: 40)
    # ssim_weight = 1e-4        # spatspark only: weight of the 1 - SSIM term
    init_from = ""              # weights to start from (.safetensors / stem, or .ckpt)
    max_epochs = 10
    max_steps = -1              # optimiser steps (-1: no limit)
    lr = 1e-4
    weight_decay = 0.0
    loss = "logcosh"            # "logcosh" | "mse" | "rmse" | "mae"
    beta = 0.1                  # lupin: weight of the divergence penalty
    divergence = "squared"      # lupin: its form, "squared" (mean squared) | "sobel" (LUPIN's code: mean |Sobel|)
    gamma = 0.1                 # lupin joint: weight of the "extra" advection term
    rollout_steps = 1           # leads in the loss (autoregressive, detached unless bptt = true)
    bptt = false                # back-propagate through the autoregressive rollout
    motion_teacher = ""         # lupin motion stage: optical flow ("lk", ...) of the inputs as a motion target
    teacher_weight = 0.0        # its weight: + w * mean |MF - flow|^2 (px^2 per step^2); 0 = off
    scheduler = "plateau"       # "plateau" (ReduceLROnPlateau on val_loss) | "none" | "cosine" (with warmup_epochs)
    lr_factor = 0.1
    lr_patience = 3
    patience = 5                # EarlyStopping on val_loss; omit / -1 to disable
    export = "best"             # weights exported to out/<model>: "best" (lowest val_loss) or "last" (when the
                                # validation part does not represent the task, e.g. no rainy 24-frame window)
    seed = 0                    # seed_everything(seed, workers=True) and the random crops
    precision = "32-true"       # lightning precision ("bf16-mixed", "16-mixed", ...)
    deterministic = false       # deterministic algorithms (true: Trainer(deterministic="warn"), see train())
    num_threads = 0             # torch intra-op threads per process; 0 = auto (1 on CPU, torch default on GPU)
    progress_bar = true         # Lightning's TQDM progress bar
    checkpoint_every_n_steps = 0  # also refresh last.ckpt every N optimiser steps (long epochs, preemption)
    csi_threshold = 1.0         # mm/h

    [trainer]                   # any other lightning.Trainer keyword, e.g.
    num_sanity_val_steps = 2
    gradient_clip_val = 1.0
    limit_train_batches = 256   # LUPIN's stage 3 uses 256 training batches per epoch
    log_every_n_steps = 50

Output folder ``out``: ``checkpoints/last.ckpt`` and ``checkpoints/best-epoch=E-step=S.ckpt`` (best
``val_loss``), ``logs/version_N/metrics.csv`` (CSV logger; a new version per run/resume), ``<model>.safetensors``
and ``<model>.json`` (the best weights and their model card: resolved config, data description, training time
on this machine, validation scores of the exported weights), ``summary.json`` (what :func:`train` returns).

Checkpoints and resuming
------------------------
``last.ckpt`` and the best checkpoint are written after every validation (every epoch; also when
``max_steps`` ends a run in the middle of an epoch: the run then stops through ``trainer.should_stop`` so that
its final weights are validated), every ``checkpoint_every_n_steps`` optimiser steps if set, and on Ctrl-C
in a single-process run (Lightning then exits with status 1). Running :func:`train` again with the same
``out`` resumes from ``last.ckpt`` (weights, optimiser, scheduler, epoch/step counters, callbacks, the
validation history and the accumulated training time) unless ``resume = false``; ``max_epochs`` /
``max_steps`` count from the start of the first run, so raise them to train further. A run without
validation batches (``limit_val_batches = 0``) only checkpoints every ``checkpoint_every_n_steps`` and at
its end. The training batches are one seeded stream of shuffled passes over the samples
(:class:`~skydiff._checkpoint.StreamSampler`; the random crops of pass p are those of epoch p), which a resume
continues after the batches the checkpointed run trained on, and torch's generator state is checkpointed too: a
run resumed from a checkpoint trains on the batches, crops and dropout masks of the uninterrupted run and ends
with its weights, to the bit, unless the stop itself changed something: a stop at ``max_steps`` validates, which
a ``plateau`` scheduler and early stopping count, and in the middle of an epoch Lightning counts that epoch as
done, so later epoch ends (per-epoch schedules, validation, the last optimiser step of an epoch with
``accumulate_grad_batches``) fall on other batches; a Ctrl-C in the middle of a step; with a ``*spawn*`` strategy
validation moves torch's generator. A checkpoint of another model, stage or model config is refused (InputError)
rather than resumed. Checkpoints, the export and ``summary.json`` are written atomically
(:func:`skydiff.io.atomic_path`: a temporary file in the same folder, then ``os.replace``), so a run stopped while
writing leaves the previous file whole.

Threads
-------
On a CPU (``accelerator = "cpu"``, or ``"auto"`` without a GPU) every process runs with **1 intra-op torch
thread** (and 1 numba thread) unless ``training.num_threads`` says otherwise: small convolutions and the
DataLoader collation were measured 10-50 times slower with torch's default threads on a loaded 2-core
machine (spin-waiting OpenMP threads). For CPU data parallelism use processes (``strategy = "ddp"``, ``devices
= N``) rather than threads. :func:`train` restores the caller's thread count when it returns.

Multi-GPU and multi-node
------------------------
Data-parallel training is Lightning's DDP; the batch size is per process (effective batch = ``batch_size ×
devices × num_nodes``)::

    # one node, 4 GPUs (Lightning starts the 4 processes itself)
    skydiff train lupin --config lupin_joint.toml --devices 4 --strategy ddp
    # 2 nodes x 4 GPUs with torchrun: run on every node (node_rank 0 and 1)
    torchrun --nnodes 2 --nproc-per-node 4 --node-rank $NODE_RANK --master-addr $MASTER --master-port 29500 \\
        $(which skydiff) train lupin --config lupin_joint.toml --devices 4 --strategy ddp --num-nodes 2
    # SLURM: #SBATCH --nodes=2 --ntasks-per-node=4 --gpus-per-node=4, then
    srun skydiff train lupin --config lupin_joint.toml --devices 4 --strategy ddp --num-nodes 2

Under torchrun and SLURM Lightning detects the launcher's environment (``LOCAL_RANK``, ``SLURM_PROCID``...)
and does not start processes itself; ``--devices`` must equal the processes per node and ``--num-nodes`` the
number of nodes. Every rank builds its data (the shared data is read once per process) and only rank 0
exports the model and writes ``summary.json``. On CPUs use ``strategy = "ddp"`` (from the command line) or
``"ddp_spawn"`` (from Python/notebooks/pytest, where re-running ``sys.argv`` is not possible) with
``accelerator = "cpu"``, ``devices = N``. Resuming works the same way for every strategy (``last.ckpt``).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as nnf
from torch.utils.data import DataLoader, Dataset

from .._checkpoint import (
    ConfiguredEarlyStopping,
    PassDataset,
    SaveOnInterrupt,
    StreamSampler,
    changed_settings,
    check_resumable,
    rng_state,
    set_rng_state,
    with_atomic_checkpoints,
)
from ..errors import InputError, ReadError, ShapeError
from ..io.atomic import atomic_path
from ..registry import weights_paths
from .models import create_model, list_models, load_weights, save_model
from .models.blocks import SCALERS, Scaler, get_scaler
from .models.lupin import DIVERGENCE_FORMS

__all__ = [
    "NowcastModule",
    "train",
    "load_config",
    "resolve_config",
    "sample_config",
    "CONFIG_DIR",
    "STAGES",
    "LOSSES",
    "recipe",
    "masked_loss",
    "build_datasets",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
"""Folder of the sample configs (``rainnet``, ``smaat``, ``lupin_motion``, ``lupin_tendency``, ``lupin_joint``,
``lcnn``, ``spatspark_pretrain``, ``spatspark``)."""

STAGES = ("motion", "tendency", "joint")
TEACHER_MIN_RAIN = 0.05  # least rainy fraction (>= 0.1 mm/h) of a crop's last input for the motion teacher
LOSSES = ("logcosh", "mse", "rmse", "mae")
_LOG_OFFSET = 0.01
_LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------------- recipes

_COMMON: dict[str, Any] = {
    "max_epochs": 10,
    "max_steps": -1,
    "weight_decay": 0.0,
    "beta": 0.0,
    "gamma": 0.0,
    "rollout_steps": None,
    "bptt": False,
    "patience": 5,
    "seed": 0,
    "precision": "32-true",
    "deterministic": False,
    "num_threads": 0,
    "progress_bar": True,
    "checkpoint_every_n_steps": 0,
    "csi_threshold": 1.0,
    "init_from": "",
    "stage": None,
    "optimizer": "adam",
    "warmup_epochs": 0,
    "export": "best",
    "motion_teacher": "",
    "teacher_weight": 0.0,
    "divergence": "squared",
}

_RECIPES: dict[str, dict[str, Any]] = {
    "rainnet": {"loss": "logcosh", "lr": 1e-4, "scheduler": "none", "lr_factor": 0.1, "lr_patience": 3,
                "rollout_steps": 1},
    "lcnn": {"loss": "logcosh", "lr": 1e-4, "scheduler": "plateau", "lr_factor": 0.1, "lr_patience": 3,
             "rollout_steps": 1},
    "smaat": {"loss": "mse", "lr": 1e-3, "scheduler": "plateau", "lr_factor": 0.1, "lr_patience": 4,
              "patience": 15},
    "lupin:motion": {"loss": "logcosh", "lr": 5e-4, "scheduler": "plateau", "lr_factor": 0.9, "lr_patience": 0,
                     "beta": 0.1, "gamma": 0.0, "patience": 3, "rollout_steps": 1},
    "lupin:tendency": {"loss": "rmse", "lr": 1e-4, "scheduler": "plateau", "lr_factor": 0.1, "lr_patience": 3,
                       "beta": 0.0, "gamma": 0.0, "patience": 5},
    "lupin:joint": {"loss": "rmse", "lr": 1e-4, "scheduler": "plateau", "lr_factor": 0.9, "lr_patience": 0,
                    "beta": 0.1, "gamma": 0.1, "patience": 3},
    # SpaT-SparK (reference §5-§6; its arg_util defaults): LAMB (betas 0.9, 0.95) with lr = 2e-4 * batch / 256,
    # weight decay annealed 0.04 -> 0.2, warm-up 40 epochs, cosine, clip 5 -> AdamW (0.9, 0.95), constant wd here
    "spatspark": {"loss": "mse", "lr": 1e-4, "scheduler": "cosine", "lr_factor": 0.1, "lr_patience": 3,
                  "weight_decay": 0.05, "optimizer": "adamw", "warmup_epochs": 40, "ssim_weight": 1e-4,
                  "patience": 30},
    "spatspark-pretrain": {"loss": "mse", "lr": 1e-4, "scheduler": "cosine", "lr_factor": 0.1, "lr_patience": 3,
                           "weight_decay": 0.05, "optimizer": "adamw", "warmup_epochs": 40, "patience": -1},
}
_SPATSPARK = ("spatspark", "spatspark-pretrain")
_DIRECT = ("smaat", "spatspark")  # multi-output models: all leads (``leadtime_steps``) in one forward pass
_PRETRAIN = "spatspark-pretrain"
# keys only some recipes have
_EXTRA_OPTIONS = ("optimizer", "warmup_epochs", "ssim_weight", "motion_teacher", "teacher_weight", "divergence")
OPTIMIZERS = ("adam", "adamw")
SCHEDULERS = ("plateau", "none", "cosine")
_GENERIC = {"loss": "logcosh", "lr": 1e-4, "scheduler": "none", "lr_factor": 0.1, "lr_patience": 3, "rollout_steps": 1}


def recipe(name: str, stage: str | None = None) -> dict[str, Any]:
    """Default ``[training]`` values for a model (and LUPIN stage), see the module docstring."""
    key = name.lower()
    if key == "lupin":
        stage = stage or "motion"
        if stage not in STAGES:
            raise InputError(f"unknown LUPIN stage {stage!r}; use one of {', '.join(STAGES)}")
        key = f"lupin:{stage}"
    elif stage is not None:
        raise InputError(f"training.stage is for LUPIN only (model {name!r} has a single stage)")
    out = {**_COMMON, **_RECIPES.get(key, _GENERIC)}
    out["stage"] = stage
    return out


# ------------------------------------------------------------------------------------------------- losses


def _masked_mean(v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return v.mean()
    m = mask.to(v.dtype)
    return (v * m).sum() / m.sum().clamp_min(1.0)


def masked_loss(kind: str, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean ``kind`` loss (``logcosh``, ``mse``, ``rmse``, ``mae``) over the pixels where ``mask`` is True.

    ``logcosh(d) = d + softplus(-2 d) - ln 2`` (stable for large ``|d|``); ``rmse = sqrt(mse + 1e-8)``.
    """
    d = pred - target
    if kind == "logcosh":
        v = d + nnf.softplus(-2.0 * d) - _LN2
    elif kind in ("mse", "rmse"):
        v = d * d
    elif kind == "mae":
        v = d.abs()
    else:
        raise InputError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")
    out = _masked_mean(v, mask)
    return torch.sqrt(out + 1e-8) if kind == "rmse" else out


# ------------------------------------------------------------------------------------------------- module


def _set_threads(n: int) -> None:
    if n and n > 0:
        torch.set_num_threads(int(n))
        try:
            import numba

            numba.set_num_threads(min(int(n), numba.config.NUMBA_NUM_THREADS))
        except Exception:  # pragma: no cover - numba missing or threading layer not initialisable
            pass


_PG_EXIT_HOOK = False


def _destroy_process_group_at_exit() -> None:
    """Destroy this process's gloo/NCCL process group when it exits.

    Lightning destroys only NCCL groups at exit; a gloo group (CPU DDP) left to interpreter shutdown can abort the
    worker ("terminate called without an active exception", SIGABRT) after training has finished.
    """
    global _PG_EXIT_HOOK
    if _PG_EXIT_HOOK or not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    import atexit

    def _destroy() -> None:
        if torch.distributed.is_initialized():
            try:
                torch.distributed.destroy_process_group()
            except Exception:  # pragma: no cover - best effort at exit
                pass

    atexit.register(_destroy)
    _PG_EXIT_HOOK = True


def _has_flow(x: torch.Tensor, flow: torch.Tensor | None) -> torch.Tensor:
    """(B,) bool: which samples carry a whole-grid flow (``batch["teacher"]``; NaN where its source had none)."""
    if flow is None:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return torch.isfinite(flow).flatten(1).all(1)


class NowcastModule(L.LightningModule):
    """A registered nowcasting model with its training recipe (see the module docstring).

    Parameters
    ----------
    model
        A model name (built with ``create_model(model, **model_config)``) or a model instance from the registry.
    model_config
        Constructor keywords when ``model`` is a name.
    n_in, n_out
        Frames in ``batch["inputs"]`` and ``batch["targets"]`` (mm/h). ``n_in >= model.n_input_frames`` (the
        last ones are used); ``n_out`` must cover ``rollout_steps`` (SmaAt-UNet: its largest ``leadtime_steps``).
    stage
        LUPIN: ``"motion"`` (default), ``"tendency"`` or ``"joint"``; None for the other models.
    init_from
        Weights to start from: a ``.safetensors`` file / stem (:func:`save_model` output) or a Lightning
        ``.ckpt`` of this module.
    **options
        ``[training]`` values: ``loss``, ``lr``, ``weight_decay``, ``beta``, ``gamma``, ``rollout_steps``,
        ``bptt``, ``scheduler``, ``lr_factor``, ``lr_patience``, ``csi_threshold``, ``num_threads`` (defaults from
        :func:`recipe`); ``spatspark`` and ``spatspark-pretrain`` also ``optimizer``, ``warmup_epochs`` and
        (``spatspark``) ``ssim_weight``.

    Batches are dicts with ``inputs`` (B, n_in, H, W), ``targets`` (B, n_out, H, W) in mm/h and optionally
    ``mask`` (B, n_in + n_out, H, W) bool (True = valid). ``training_step`` returns the loss;
    ``validation_step`` logs ``val_loss`` and accumulates the per-lead MAE/CSI logged at the epoch end.
    ``val_history`` holds the validation scores of every epoch (saved in checkpoints).
    """

    def __init__(
        self,
        model: str | torch.nn.Module = "rainnet",
        model_config: Mapping[str, Any] | None = None,
        *,
        n_in: int | None = None,
        n_out: int | None = None,
        stage: str | None = None,
        init_from: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__()
        if isinstance(model, torch.nn.Module):
            net = model
            name = getattr(net, "model_name", "")
            if not name or getattr(net, "config", None) is None:
                raise InputError("NowcastModule needs a registered skydiff model (with model_name and config)")
            mcfg = dict(net.config)
        else:
            name = str(model).lower()
            mcfg = dict(model_config or {})
            net = create_model(name, **mcfg)
            mcfg = dict(net.config)
        self.model = net
        self.model_name = name
        defaults = recipe(name, stage)
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise InputError(f"NowcastModule: unknown option(s) {', '.join(unknown)}")
        opts = {**defaults, **{k: v for k, v in options.items() if v is not None}}
        self.stage = opts["stage"]
        self.loss_kind = str(opts["loss"]).lower()
        if self.loss_kind not in LOSSES:
            raise InputError(f"unknown loss {opts['loss']!r}; use one of {', '.join(LOSSES)}")
        self.lr = float(opts["lr"])
        self.weight_decay = float(opts["weight_decay"])
        self.beta = float(opts["beta"])
        self.gamma = float(opts["gamma"])
        for nm in ("beta", "gamma"):
            if not 0.0 <= getattr(self, nm) < 1.0:
                raise InputError(f"{nm} must be in [0, 1), got {getattr(self, nm)}")
        self.bptt = bool(opts["bptt"])
        self.divergence = str(opts.get("divergence") or "squared").lower()
        if self.divergence not in DIVERGENCE_FORMS:
            raise InputError(f"divergence must be one of {', '.join(DIVERGENCE_FORMS)}, got {opts['divergence']!r}")
        self.motion_teacher = str(opts.get("motion_teacher") or "").lower()
        self.teacher_weight = float(opts.get("teacher_weight") or 0.0)
        if self.teacher_weight < 0:
            raise InputError(f"teacher_weight must be >= 0, got {self.teacher_weight}")
        if self.teacher_weight > 0 and not (name == "lupin" and self.stage == "motion"):
            raise InputError("teacher_weight is for LUPIN's motion stage only")
        if self.teacher_weight > 0 and not self.motion_teacher:
            raise InputError("teacher_weight > 0 needs training.motion_teacher (an optical-flow method, e.g. 'lk')")
        if self.motion_teacher:
            from ..motion import methods as _motion_methods

            if self.motion_teacher not in _motion_methods():
                raise InputError(f"unknown motion_teacher {self.motion_teacher!r}; "
                                 f"use one of {', '.join(_motion_methods())}")
        self.scheduler = str(opts["scheduler"]).lower()
        if self.scheduler not in SCHEDULERS:
            raise InputError(f"scheduler must be one of {', '.join(repr(a) for a in SCHEDULERS)}, "
                             f"got {opts['scheduler']!r}")
        self.optimizer_kind = str(opts.get("optimizer", "adam")).lower()
        if self.optimizer_kind not in OPTIMIZERS:
            raise InputError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {opts.get('optimizer')!r}")
        self.warmup_epochs = int(opts.get("warmup_epochs", 0) or 0)
        if self.warmup_epochs < 0:
            raise InputError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        self.ssim_weight = float(opts.get("ssim_weight", 0.0) or 0.0)
        if self.ssim_weight < 0:
            raise InputError(f"ssim_weight must be >= 0, got {self.ssim_weight}")
        if name == _PRETRAIN and self.loss_kind != "mse":
            raise InputError(f"{_PRETRAIN} trains with its per-patch-normalised MSE: loss must be 'mse', "
                             f"got {opts['loss']!r}")
        self.lr_factor = float(opts["lr_factor"])
        self.lr_patience = int(opts["lr_patience"])
        if self.scheduler == "plateau" and not 0.0 < self.lr_factor < 1.0:
            raise InputError(f"lr_factor must be in (0, 1) with the plateau scheduler (it multiplies the learning "
                             f"rate), got {opts['lr_factor']!r}")
        if self.lr_patience < 0:
            raise InputError(f"lr_patience must be >= 0, got {opts['lr_patience']!r}")
        self.csi_threshold = float(opts["csi_threshold"])
        self.num_threads = int(opts["num_threads"] or 0)

        n_model = int(net.n_input_frames)
        self.n_in = n_model if n_in is None else int(n_in)
        if self.n_in < n_model:
            raise InputError(f"{name} needs {n_model} input frames, but data.n_in = {self.n_in}")
        if name in _DIRECT:
            steps = list(net.leadtime_steps)
            self.rollout_steps = len(steps)
            need = max(steps)
        elif name == _PRETRAIN:  # self-supervised: the input frames only
            self.rollout_steps = 0
            need = 0
        else:
            rs = opts["rollout_steps"]
            if rs is None:
                rs = (n_out or 6) if name == "lupin" else 1
            if isinstance(rs, bool) or not isinstance(rs, (int, np.integer)) or rs < 1:
                raise InputError(f"rollout_steps must be an integer >= 1, got {rs!r}")
            self.rollout_steps = int(rs)
            need = self.rollout_steps
        self.n_out = need if n_out is None else int(n_out)
        if self.n_out < need:
            what = f"leadtime_steps {list(net.leadtime_steps)}" if name in _DIRECT else \
                f"rollout_steps = {self.rollout_steps}"
            raise InputError(f"data.n_out = {self.n_out} target frames are too few for {what}")

        self.save_hyperparameters({
            "model": name, "model_config": mcfg, "n_in": self.n_in, "n_out": self.n_out,
            "stage": self.stage, **{k: v for k, v in opts.items() if k not in ("stage", "init_from")},
            "rollout_steps": self.rollout_steps,
        })

        if init_from:
            self.init_weights(init_from)
        self._configure_stage()
        self.val_history: list[dict[str, Any]] = []
        self._acc: torch.Tensor | None = None
        self._pretrain_eval: tuple[torch.Tensor, torch.Tensor] | None = None
        self._time_prev = 0.0
        self._t0: float | None = None
        self.batches_trained = 0  # over resumed runs too: where the training stream goes on (StreamSampler)
        self.run_setup: dict[str, Any] = {}  # the data and seed of a train() run, kept in its checkpoints

    # --- setup ------------------------------------------------------------------------------------------

    def init_weights(self, path: str | os.PathLike[str]) -> None:
        """Load weights from a ``.safetensors`` file / stem or a ``.ckpt`` of a :class:`NowcastModule`.

        ``spatspark`` also accepts a ``spatspark-pretrain`` run: encoder, densify layers, mask tokens and decoder
        are copied (:func:`~skydiff.nowcast.models.init_from_pretrain`), the translation network keeps its
        initialisation (and the output head too unless ``n_out == in_frames``).
        """
        state = _read_init_state(path)
        if self.model_name == "spatspark" and _init_source_name(path) == _PRETRAIN:
            self.model.load_pretrained(state)
            return
        load_weights(self.model, state)

    def _configure_stage(self) -> None:
        if self.model_name != "lupin":
            return
        net = self.model
        if self.stage == "motion" and net.motion_net is None:
            raise InputError("LUPIN stage 'motion' trains the MF-U-Net, which this model has not "
                             "(motion_correction=False): train stage 'tendency' only")
        if self.stage == "motion":
            net.freeze_motion(False)
            for p in net.advection_net.parameters():
                p.requires_grad_(False)
        elif self.stage == "tendency":
            net.freeze_motion(True)
            for p in net.advection_net.parameters():
                p.requires_grad_(True)
        else:
            net.freeze_motion(False)
            for p in net.parameters():
                p.requires_grad_(True)

    def setup(self, stage: str) -> None:
        _set_threads(self.num_threads)
        _destroy_process_group_at_exit()

    def _scheduled_epochs(self) -> int:
        """Epochs the run will last: ``max_epochs``, or fewer when ``max_steps`` ends it earlier (the cosine
        schedule must reach its end at the run's real end, not at a ``max_epochs`` the run never sees)."""
        if self._trainer is None:
            return 0
        tr = self.trainer
        epochs = int(getattr(tr, "max_epochs", 0) or 0)
        max_steps = int(getattr(tr, "max_steps", -1) or -1)
        if max_steps > 0:
            try:
                steps = int(tr.estimated_stepping_batches)  # also sets up the training data (num_training_batches)
                per_epoch = max(1, int(tr.num_training_batches) // max(1, int(tr.accumulate_grad_batches)))
                by_steps = -(-steps // per_epoch)
                epochs = min(epochs, by_steps) if epochs > 0 else by_steps
            except Exception:  # pragma: no cover - trainer without a data loader yet: keep max_epochs
                pass
        return epochs

    def configure_optimizers(self) -> Any:
        if self.optimizer_kind == "adamw":
            # decoupled weight decay on the weights of convolutions only: not on biases, norms, mask tokens (SparK)
            decay, no_decay = [], []
            for nm, p in self.model.named_parameters():
                if not p.requires_grad:
                    continue
                (no_decay if p.ndim <= 1 or "mask_tokens" in nm else decay).append(p)
            groups = [{"params": decay, "weight_decay": self.weight_decay},
                      {"params": no_decay, "weight_decay": 0.0}]
            opt: torch.optim.Optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.lr,
                                                           betas=(0.9, 0.95))
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler == "none":
            return opt
        if self.scheduler == "cosine":
            total = max(self._scheduled_epochs(), 1)
            warm = min(self.warmup_epochs, total - 1)

            def factor(epoch: int) -> float:
                if epoch < warm:
                    return (epoch + 1) / (warm + 1)
                return 0.5 * (1.0 + math.cos(math.pi * min(epoch - warm, total - warm) / max(total - warm, 1)))

            sched_c = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched_c, "interval": "epoch"}}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=self.lr_factor,
                                                           patience=self.lr_patience)
        return {"optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch", "strict": False}}

    # --- the recipes --------------------------------------------------------------------------------------

    def _unpack(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, ...]:
        x = batch["inputs"].to(self.dtype_of_model)
        y = batch["targets"].to(self.dtype_of_model)
        B, _, H, W = x.shape
        mask = batch.get("mask")
        if mask is None:
            mask = torch.ones(B, x.shape[1] + y.shape[1], H, W, dtype=torch.bool, device=x.device)
        n = self.model.n_input_frames
        m_in = mask[:, : x.shape[1]][:, -n:]
        m_out = mask[:, x.shape[1]:]
        return x[:, -n:], y, m_in, m_out

    @property
    def dtype_of_model(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _run(self, batch: Mapping[str, Any], eval_leads: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor],
                                                                           torch.Tensor | None, list[int]]:
        """Loss, extra logs, and (with ``eval_leads``) the nowcast in mm/h with the target index of each lead."""
        x, y, m_in, m_out = self._unpack(batch)
        name = self.model_name
        if name in _DIRECT:
            return self._run_direct(x, y, m_out, eval_leads)
        if name == _PRETRAIN:
            return self._run_pretrain(x, m_in, eval_leads)
        if name == "lcnn":
            return self._run_lcnn(x, y, m_out, eval_leads)
        if name == "lupin" and self.stage == "motion":
            return self._run_motion(x, y, m_out, eval_leads, batch.get("teacher"), self._prior(x, batch))
        if name == "lupin":
            return self._run_lupin(x, y, m_in, m_out, eval_leads, self._prior(x, batch))
        return self._run_autoregressive(x, y, m_in, m_out, eval_leads)

    def _run_autoregressive(self, x, y, m_in, m_out, eval_leads):  # type: ignore[no-untyped-def]
        net, k = self.model, self.rollout_steps
        leads = max(k, eval_leads)
        # the rollout of predict(): outputs fed back clamped at the dry value, the valid mask of the inputs
        fk = {"valid": m_in.any(1, keepdim=True).to(x.dtype)} if net.takes_valid_mask else {}
        pred = net.rollout(net.transform(x), leads, detach=not self.bptt, clamp=True, **fk)
        loss = masked_loss(self.loss_kind, pred[:, :k], net.transform(y[:, :k]), m_out[:, :k])
        mm = net.inverse_transform(pred[:, :eval_leads]) if eval_leads else None
        return loss, {}, mm, list(range(eval_leads))

    def _run_direct(self, x, y, m_out, eval_leads):  # type: ignore[no-untyped-def]
        """SmaAt-UNet and SpaT-SparK: all lead times in one pass; ``MSE (+ ssim_weight (1 - SSIM))``."""
        net = self.model
        idx = [s - 1 for s in net.leadtime_steps]
        pred = net(net.transform(x))
        t, m = net.transform(y[:, idx]), m_out[:, idx]
        crit = masked_loss(self.loss_kind, pred, t, m)
        loss, logs = crit, {}
        if self.ssim_weight > 0:  # spatspark
            from .models.spatspark import ssim

            # no-data pixels take the target's value, so they do not count as structure errors
            s = ssim(torch.where(m, pred, t), t)
            loss = crit + self.ssim_weight * (1.0 - s)
            logs = {"crit": crit.detach(), "ssim": s.detach()}
        # SmaAt's loss is the per-image *sum* of squared errors averaged over the batch (reference §4): the
        # masked mean times the values per sample (SpaT-SparK: its relative SSIM weight kept). Not only cosmetics:
        # in SmaAt's normalised space (R/12/47.83) a per-pixel mean is ~1e-5 (SpaT-SparK's patches ~1e-8) and
        # its gradients fall below Adam's eps, which stalls training (LAMB, SpaT-SparK's optimiser, normalises
        # per layer and does not have this problem).
        loss = loss * pred[0].numel()
        mm = net.inverse_transform(pred) if eval_leads else None
        return loss, logs, mm, idx

    def _run_pretrain(self, x, m_in, eval_leads, generator=None):  # type: ignore[no-untyped-def]
        net = self.model
        out = net(net.transform(x), valid=m_in, generator=generator)
        if not eval_leads:
            return out["loss"], {}, None, []
        # scored on the masked patches of the input frames (what the pretraining learns to fill in)
        self._pretrain_eval = (x, m_in & ~out["active_pixels"])
        return out["loss"], {}, net.inverse_transform(out["rec_data"]), list(range(x.shape[1]))

    def _run_lcnn(self, x, y, m_out, eval_leads):  # type: ignore[no-untyped-def]
        net, k = self.model, self.rollout_steps
        leads = max(k, eval_leads)
        with torch.no_grad():
            v = net.estimate_motion(x)
        d, last = net.lagrangian_inputs(x, v)
        dpred = net.rollout(d, leads, detach=not self.bptt)
        lag = net.scaler.inverse_raw(last + torch.cumsum(dpred, dim=1))
        eul = net.to_eulerian(lag, v)  # mm/h, not clamped
        pred = eul if net.scaler.name == "none" else net.transform(eul.clamp_min(0.0))
        loss = masked_loss(self.loss_kind, pred[:, :k], net.transform(y[:, :k]), m_out[:, :k])
        mm = eul[:, :eval_leads].clamp_min(0.0) if eval_leads else None
        return loss, {}, mm, list(range(eval_leads))

    def _prior(self, x: torch.Tensor, batch: Mapping[str, Any]) -> torch.Tensor | None:
        """The optical-flow prior of a LUPIN with ``motion_prior``: the batch's whole-grid flow (``data.teacher``
        of the same method) where a sample has one, else the flow of the crop's own inputs; None without."""
        net = self.model
        if getattr(net, "motion_prior", None) is None:
            return None
        flow = batch.get("teacher")
        has = _has_flow(x, flow)
        prior = torch.zeros(x.shape[0], 2, *x.shape[-2:], dtype=x.dtype, device=x.device)
        if bool(has.any()):
            prior[has] = flow[has].to(x.dtype)
        if not bool(has.all()):
            prior[~has] = net.estimate_prior(x[~has])
        return prior

    def _run_motion(self, x, y, m_out, eval_leads, frame_teacher=None, prior=None):  # type: ignore[no-untyped-def]
        from ..advection import advect

        net, k = self.model, self.rollout_steps
        leads = max(k, eval_leads)
        mf = net.motion(net.transform(x), prior)
        ext = advect(x[:, -1:], mf, leads, n_iter=net.n_iter, interp=net.interp, outval=0.0)[:, :, 0]
        ext = ext.clamp_min(0.0)
        crit = masked_loss(self.loss_kind, torch.log(ext[:, :k] + _LOG_OFFSET), torch.log(y[:, :k] + _LOG_OFFSET),
                           m_out[:, :k])
        phys = net.divergence_penalty(mf, form=self.divergence)
        loss = (1.0 - self.beta) * crit + self.beta * phys
        logs = {"crit": crit.detach(), "div": phys.detach()}
        if self.teacher_weight > 0:  # optical flow of the inputs as a regression target for the motion
            # only for crops whose last input is >= TEACHER_MIN_RAIN rainy: LK on nearly dry 128 x 128 crops
            # returns flows of tens of px per step (measured: 35 px/step with 0.4 % rain)
            # (optical flow runs on the rainy crops only: it is the costly CPU part of the step)
            # With a whole-grid flow in the batch (data.teacher, RadarSequences(teacher=...)) every crop that has
            # one uses it, whatever its rain; crops without one (NaN: sources too large for it) fall back to this.
            has = _has_flow(x, frame_teacher)
            rainy = (((x[:, -1] >= 0.1).float().mean((-2, -1)) >= TEACHER_MIN_RAIN) & ~has).nonzero()[:, 0]
            sq = []
            if rainy.numel():
                sq.append(((mf[rainy] - self._teacher_motion(x[rainy])) ** 2).sum(1).flatten(1).mean(1))
            if bool(has.any()):
                sq.append(((mf[has] - frame_teacher[has].to(mf.dtype)) ** 2).sum(1).flatten(1).mean(1))
            teach = torch.cat(sq).mean() if sq else mf.new_zeros(())
            loss = loss + self.teacher_weight * teach
            logs["teacher"] = teach.detach()
        mm = ext[:, :eval_leads] if eval_leads else None
        return loss, logs, mm, list(range(eval_leads))

    def _teacher_motion(self, x: torch.Tensor) -> torch.Tensor:
        """Optical flow (``motion_teacher``, 3 frames for LK) of each sample's inputs (B, T, H, W) mm/h, CPU."""
        from ..motion import estimate_batch
        from .interface import default_motion_frames

        return estimate_batch(x, self.motion_teacher, default_motion_frames(self.motion_teacher))

    def _run_lupin(self, x, y, m_in, m_out, eval_leads, prior=None):  # type: ignore[no-untyped-def]
        net, k = self.model, self.rollout_steps
        leads = max(k, eval_leads)
        b, g = self.beta, self.gamma
        z = net.transform(x)
        zm = m_in
        valid = m_in.any(1, keepdim=True).to(z.dtype)  # as predict(): the blur averages the motion over data only
        preds, losses = [], []
        crits, extras, physs = [], [], []
        for i in range(leads):
            yhat, mf = net(z, return_motion=True, prior=prior, valid=valid)
            preds.append(yhat)
            if i < k:
                t = net.transform(y[:, i:i + 1])
                mt = m_out[:, i:i + 1]
                crit = masked_loss(self.loss_kind, yhat, t, mt)
                total = (1.0 - b) * (1.0 - g) * crit
                crits.append(crit.detach())
                if g > 0:
                    adv = net.advect_frames(z, mf, 1)  # (B, T, H, W): frame j one step on
                    extra = masked_loss(self.loss_kind, adv, torch.cat([z[:, 1:], t], 1), torch.cat([zm[:, 1:], mt], 1))
                    total = total + (1.0 - b) * g * extra
                    extras.append(extra.detach())
                if b > 0:
                    phys = net.divergence_penalty(mf, form=self.divergence)
                    total = total + b * phys
                    physs.append(phys.detach())
                losses.append(total)
            fb = net._feedback(yhat)  # clamped at the dry value, as predict() feeds it back
            z = torch.cat([z[:, 1:], fb if self.bptt else fb.detach()], 1)
            zm = torch.cat([zm[:, 1:], torch.ones_like(zm[:, :1])], 1)
        loss = torch.stack(losses).mean()
        logs = {"crit": torch.stack(crits).mean()}
        if extras:
            logs["extra"] = torch.stack(extras).mean()
        if physs:
            logs["div"] = torch.stack(physs).mean()
        mm = net.inverse_transform(torch.cat(preds[:eval_leads], 1)) if eval_leads else None
        return loss, logs, mm, list(range(eval_leads))

    # --- Lightning hooks ----------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)

    def compute_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The training loss of a batch (what ``training_step`` minimises), without logging."""
        return self._run(batch)[0]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        self.batches_trained += 1  # here, not in on_train_batch_end: a periodic checkpoint is saved before that
        loss, logs, _, _ = self._run(batch)
        bs = int(batch["inputs"].shape[0])
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs, sync_dist=True)
        for key, v in logs.items():
            self.log(f"train_{key}", v, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._acc = None

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        if self.model_name == _PRETRAIN:
            return self._validation_step_pretrain(batch, batch_idx)
        eval_leads = 1 if self.model_name in _DIRECT else self.n_out
        loss, logs, mm, idx = self._run(batch, eval_leads)
        bs = int(batch["inputs"].shape[0])
        self.log("val_loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        for key, v in logs.items():
            self.log(f"val_{key}", v, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        assert mm is not None
        _, y, _, m_out = self._unpack(batch)
        t, m = y[:, idx], m_out[:, idx].to(mm.dtype)
        thr = self.csi_threshold
        pe, te = (mm >= thr).to(mm.dtype) * m, (t >= thr).to(mm.dtype) * m
        stats = torch.stack([
            ((mm - t).abs() * m).sum(dim=(0, 2, 3)),
            m.sum(dim=(0, 2, 3)),
            (pe * te).sum(dim=(0, 2, 3)),
            (pe * (1 - te)).sum(dim=(0, 2, 3)),
            ((1 - pe) * te).sum(dim=(0, 2, 3)),
        ]).to(torch.float64)
        self._acc = stats if self._acc is None else self._acc + stats
        return loss

    def _validation_step_pretrain(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """Reconstruction loss with a fixed mask per batch index (comparable across epochs), and MAE / CSI of the
        reconstructed masked patches (mm/h), pooled over all input frames."""
        x, _, m_in, _ = self._unpack(batch)
        gen = torch.Generator().manual_seed(1_000_003 * int(batch_idx) + 17)
        loss, _, mm, _ = self._run_pretrain(x, m_in, 1, generator=gen)
        t, m = self._pretrain_eval
        self._pretrain_eval = None
        bs = int(x.shape[0])
        self.log("val_loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        m = m.to(mm.dtype)
        thr = self.csi_threshold
        pe, te = (mm >= thr).to(mm.dtype) * m, (t >= thr).to(mm.dtype) * m
        stats = torch.stack([((mm - t).abs() * m).sum(), m.sum(), (pe * te).sum(), (pe * (1 - te)).sum(),
                             ((1 - pe) * te).sum()]).to(torch.float64)[:, None]
        self._acc = stats if self._acc is None else self._acc + stats
        return loss

    def _lead_steps(self) -> list[int]:
        if self.model_name in _DIRECT:
            return list(self.model.leadtime_steps)
        if self.model_name == _PRETRAIN:
            return [0]  # one pooled entry: the reconstruction
        return list(range(1, self.n_out + 1))

    def on_validation_epoch_end(self) -> None:
        steps = self._lead_steps()
        acc = self._acc if self._acc is not None else torch.zeros(5, len(steps), dtype=torch.float64,
                                                                     device=self.device)
        acc = self.trainer.strategy.reduce(acc, reduce_op="sum") if self.trainer.world_size > 1 else acc
        ae, n, tp, fp, fn = acc.cpu()
        mae = ae / n.clamp_min(1.0)
        denom = tp + fp + fn
        csi = torch.where(denom > 0, tp / denom.clamp_min(1.0), torch.full_like(tp, float("nan")))
        scores: dict[str, Any] = {}
        for j, s in enumerate(steps if self.model_name != _PRETRAIN else []):
            scores[f"val_mae_lead{s}"] = float(mae[j])
            scores[f"val_csi_lead{s}"] = float(csi[j])
        scores["val_mae"] = float(mae.mean())
        finite = csi[torch.isfinite(csi)]
        scores["val_csi"] = float(finite.mean()) if finite.numel() else float("nan")
        for key, v in scores.items():  # already summed over processes: the sync averages equal values
            self.log(key, v, on_epoch=True, sync_dist=True)
        if not self.trainer.sanity_checking:
            vl = self.trainer.callback_metrics.get("val_loss")
            entry = {"epoch": int(self.current_epoch), "step": int(self.global_step),
                     "val_loss": None if vl is None else float(vl), **scores}
            self.val_history.append(entry)
            self._step_plateau(vl)
        self._acc = None

    def _step_plateau(self, val_loss: Any) -> None:
        """The plateau scheduler stepped here, at the end of an epoch's validation, instead of by Lightning after
        the epoch: the checkpoint written at the end of validation (last.ckpt) then holds the step. Lightning steps
        it after that checkpoint, and not at all when it resumes from one, so a resumed run went on at the old
        learning rate."""
        if self.scheduler != "plateau" or val_loss is None:
            return
        if not self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:  # (a validation within an epoch)
            return
        for cfg in self.trainer.lr_scheduler_configs:
            if isinstance(cfg.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                cfg.scheduler.step(float(val_loss))

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return  # stepped by _step_plateau
        super().lr_scheduler_step(scheduler, metric)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # stop through ``should_stop`` at max_steps, so that the final weights are validated (Lightning only
        # validates at epoch ends or when asked to stop) and checkpointed with their scores
        ms = self.trainer.max_steps
        if ms is not None and ms > 0 and self.global_step >= ms:
            self.trainer.should_stop = True

    def on_fit_start(self) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self) -> None:
        # the training stream goes on after the batches trained on: DataLoader workers draw indices ahead, and the
        # rest of an interrupted epoch is cut short by Lightning, both leaving the sampler ahead of them
        sampler = getattr(self.trainer.train_dataloader, "sampler", None)
        sampler = getattr(getattr(sampler, "dataset", None), "_sampler", sampler)  # under Lightning's DDP wrapper
        if isinstance(sampler, StreamSampler):
            sampler.resume(self.batches_trained)

    def training_time(self) -> float:
        """Seconds of training so far, summed over resumed runs."""
        return self._time_prev + (0.0 if self._t0 is None else time.perf_counter() - self._t0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["skydiff"] = {
            "model": self.model_name, "model_config": dict(self.model.config), "stage": self.stage,
            "training_time_s": self.training_time(), "val_history": list(self.val_history), "rng": rng_state(),
            "batches_trained": int(self.batches_trained), "setup": _jsonable(self.run_setup),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("skydiff", {})
        self._time_prev = float(info.get("training_time_s", 0.0))
        self.val_history = list(info.get("val_history", []))
        set_rng_state(info.get("rng"))  # dropout and the like go on as in the uninterrupted run
        self.batches_trained = int(info.get("batches_trained", checkpoint.get("global_step", 0)))


# what a resumed run must share with its checkpoint (besides the model): the module's optimisation options, and (its
# run_setup) the [data] section less these keys, and the seed
_RESUME_SAME = ("n_in", "n_out", "loss", "lr", "weight_decay", "beta", "gamma", "rollout_steps", "bptt", "scheduler",
                "lr_factor", "lr_patience") + _EXTRA_OPTIONS
# options added later, with the value that checkpoints written before them trained with
_RESUME_ADDED = {"divergence": "squared"}
_RESUME_FREE_DATA = ("num_workers", "val_batch_size", "path")  # a path may change (data staged on a local disk)


def _check_resume(path: str, module: NowcastModule, how: str) -> tuple[int, dict[str, Any] | None]:
    """InputError when the checkpoint to resume from belongs to another run: another model, LUPIN stage or model
    config (Lightning would fail with a RuntimeError on other weight shapes, or resume into another set-up).
    Returns the number of batches the checkpointed run trained on (its global step for checkpoints before
    2026-11-28) and the state of its early stopping when that stopped the run (else None)."""
    hint = ("give this run another out, or set resume = false to start again (it replaces that run's checkpoints "
            "and export), or training.init_from = that checkpoint to start a new run from its weights"
            if how == "auto" else "give resume the last.ckpt of a run of this model and config")

    def differences(ck: dict[str, Any]) -> list[str]:
        info = ck.get("skydiff") or {}
        if not info:
            return []
        out = [f"{what} {info.get(what)!r} there, {mine!r} here" for what, mine in
               (("model", module.model_name), ("stage", module.stage)) if info.get(what) != mine]
        there, here = _jsonable(info.get("model_config") or {}), _jsonable(dict(module.model.config))
        out += changed_settings("model config", there, here)
        # the optimisation and the data: a resume goes on with the run's own (another lr, loss or batch size, other
        # data or crops, would train on, silently, as a mixture of two set-ups)
        hp = ck.get("hyper_parameters") or {}
        mine = {k: module.hparams.get(k) for k in _RESUME_SAME if k in hp or k in module.hparams}
        there = {k: hp.get(k, _RESUME_ADDED.get(k)) for k in mine}
        out += changed_settings("training", _jsonable(there), _jsonable(mine))
        if info.get("setup") and module.run_setup:
            there, here = info["setup"], _jsonable(module.run_setup)
            out += changed_settings("data", there.get("data") or {}, here["data"])
            out += changed_settings("training", {"seed": there.get("seed")}, {"seed": here["seed"]})
        return out

    ck = check_resumable(path, module, hint, differences)
    stopped = [v for k, v in (ck.get("callbacks") or {}).items() if k.startswith("EarlyStopping") and
               isinstance(v, dict) and int(v.get("stopped_epoch", 0) or 0) > 0]
    return (int((ck.get("skydiff") or {}).get("batches_trained", ck.get("global_step", 0))),
            stopped[0] if stopped else None)


def _read_init_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    p = Path(path).expanduser()
    if p.suffix == ".ckpt":
        if not p.is_file():
            raise InputError(f"init_from checkpoint {p} not found")
        ck = torch.load(str(p), map_location="cpu", weights_only=False)
        sd = ck.get("state_dict", ck)
        return {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    f = weights_paths(p)[0]
    if not f.is_file():
        raise InputError(f"init_from weights {f} not found (give the .safetensors written by a previous stage, "
                         "or a .ckpt)")
    from safetensors.torch import load_file

    try:
        return load_file(str(f))
    except Exception as exc:  # noqa: BLE001
        raise ReadError(f"cannot read weights {f}: {exc}") from None


def _init_model_config(path: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The model config stored with ``init_from`` (json card or checkpoint), {} if none."""
    p = Path(path).expanduser()
    if p.suffix == ".ckpt":
        if not p.is_file():
            raise InputError(f"init_from checkpoint {p} not found")
        ck = torch.load(str(p), map_location="cpu", weights_only=False)
        info = ck.get("skydiff") or {}
        saved, cfg = info.get("model"), info.get("model_config") or {}
    else:
        j = weights_paths(p)[1]
        if not j.is_file():
            return {}
        try:
            meta = json.loads(j.read_text())
        except (OSError, ValueError) as exc:
            raise ReadError(f"cannot read {j}: {exc}") from None
        saved, cfg = meta.get("model"), meta.get("config") or {}
    if saved and str(saved).lower() == _PRETRAIN and name == "spatspark":
        from .models.spatspark import finetune_config_from_pretrain

        return finetune_config_from_pretrain(cfg)
    if saved and str(saved).lower() != name:
        raise InputError(f"init_from {p} holds a {saved!r} model, not {name!r}")
    return dict(cfg)


def _init_source_name(path: str | os.PathLike[str]) -> str | None:
    """The registry name of the model stored at ``init_from`` (json card or checkpoint), None if unknown."""
    p = Path(path).expanduser()
    try:
        if p.suffix == ".ckpt":
            ck = torch.load(str(p), map_location="cpu", weights_only=False)
            saved = (ck.get("skydiff") or {}).get("model")
        else:
            j = weights_paths(p)[1]
            saved = json.loads(j.read_text()).get("model") if j.is_file() else None
    except Exception:  # noqa: BLE001 - unreadable metadata: treat as unknown
        return None
    return str(saved).lower() if saved else None


# ------------------------------------------------------------------------------------------------- config

_TOP_KEYS = {"model", "data", "training", "trainer", "out", "resume", "accelerator", "devices", "strategy",
             "num_nodes"}
_TRAINER_TOP = ("accelerator", "devices", "strategy", "num_nodes")
_DATA_DEFAULTS: dict[str, Any] = {
    "source": "shared", "path": "", "n_in": None, "n_out": None, "crop": None, "batch_size": 2,
    "val_batch_size": None, "num_workers": 0, "val_fraction": None, "stride": 1, "min_rain_fraction": 0.0,
    "augment": False, "train_fraction": 1.0, "sampling": "window", "mrms": False, "teacher": "",
    "teacher_frames": None, "teacher_kwargs": {}, "exclude": [],
    "rain_threshold": 0.1, "min_valid_fraction": None, "eval_crops": "centre",
    "n_frames": 24, "shape": [64, 64], "n_sequences": 2, "n_val_sequences": 1,
}
_RESERVED_TRAINER = {
    "callbacks": "set by train()", "logger": "set by train()", "default_root_dir": "use 'out'",
    "max_epochs": "use training.max_epochs", "max_steps": "use training.max_steps",
    "precision": "use training.precision", "enable_progress_bar": "use training.progress_bar",
    "deterministic": "use training.deterministic", "enable_checkpointing": "always on",
}


def sample_config(name: str) -> Path:
    """Path of a sample config: ``rainnet``, ``smaat``, ``lupin_motion``, ``lupin_tendency``, ``lupin_joint``,
    ``lcnn``, ``spatspark_pretrain``, ``spatspark`` (``lupin`` = ``lupin_motion``; ``-`` = ``_``, so the model
    name ``spatspark-pretrain`` finds ``spatspark_pretrain.toml``)."""
    key = str(name).lower().removesuffix(".toml").replace("-", "_")
    if key == "lupin":
        key = "lupin_motion"
    p = CONFIG_DIR / f"{key}.toml"
    if not p.is_file():
        have = sorted(q.stem for q in CONFIG_DIR.glob("*.toml"))
        raise InputError(f"no sample config {name!r}; available: {', '.join(have)}")
    return p


def load_config(config: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """Read a config: a dict (copied), a ``.toml`` / ``.json`` file, or a sample config name."""
    if isinstance(config, Mapping):
        return copy.deepcopy(dict(config))
    if not isinstance(config, (str, os.PathLike)):
        raise InputError(f"config must be a dict or a path to a .toml/.json file, got {type(config).__name__}")
    p = Path(config).expanduser()
    if not p.exists():
        if isinstance(config, str) and os.sep not in config and p.suffix in ("", ".toml"):
            try:
                p = sample_config(config)
            except InputError:
                raise InputError(f"config file {config} not found (and no sample config of that name)") from None
        else:
            raise InputError(f"config file {p} not found")
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read config {p}: {exc}") from None
    if p.suffix.lower() == ".json":
        try:
            cfg = json.loads(text)
        except ValueError as exc:
            raise InputError(f"config {p} is not valid JSON: {exc}") from None
    else:
        try:
            import tomllib
        except ModuleNotFoundError:  # pragma: no cover - Python 3.10: the tomli backport (a dependency there)
            import tomli as tomllib

        try:
            cfg = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"config {p} is not valid TOML: {exc}") from None
    if not isinstance(cfg, dict):
        raise InputError(f"config {p} must hold a table/object")
    return cfg


def _apply_overrides(cfg: dict[str, Any], overrides: Mapping[str, Any] | None) -> None:
    for key, value in (overrides or {}).items():
        if not isinstance(key, str) or not key:
            raise InputError(f"override keys must be dotted strings like 'training.max_epochs', got {key!r}")
        parts = key.split(".")
        d = cfg
        for part in parts[:-1]:
            nxt = d.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise InputError(f"override {key!r}: {part!r} is not a section")
            d = nxt
        d[parts[-1]] = value


def _section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    sec = cfg.get(name, {})
    if sec is None:
        return {}
    if not isinstance(sec, Mapping):
        raise InputError(f"config section [{name}] must be a table, got {type(sec).__name__}")
    return dict(sec)


# the type of the keys whose default is None (object: any), and the least value of numeric keys
_TYPES_OF_NONE = {"n_in": int, "n_out": int, "val_batch_size": int, "val_fraction": float, "teacher_frames": int,
                  "min_valid_fraction": float, "rollout_steps": int, "precision": object, "crop": object}
_LEAST = {"batch_size": 1, "val_batch_size": 1, "num_workers": 0, "stride": 1, "n_in": 1, "n_out": 0, "n_frames": 1,
          "n_sequences": 1, "n_val_sequences": 1, "teacher_frames": 2, "max_epochs": -1, "max_steps": -1, "lr": 0.0,
          "weight_decay": 0.0, "num_threads": 0, "checkpoint_every_n_steps": 0, "warmup_epochs": 0, "lr_patience": 0,
          "rollout_steps": 1, "lr_factor": 0.0, "min_rain_fraction": 0.0, "rain_threshold": 0.0, "beta": 0.0,
          "gamma": 0.0, "teacher_weight": 0.0, "ssim_weight": 0.0, "csi_threshold": 0.0}


# keys that only some data sources or schedulers read: set for another, they are ignored (with a warning)
_SYNTHETIC_ONLY = ("n_frames", "shape", "n_sequences", "n_val_sequences")
_SEQUENCES_ONLY = ("augment", "sampling", "stride", "min_rain_fraction", "rain_threshold", "min_valid_fraction",
                   "eval_crops", "teacher", "teacher_frames", "teacher_kwargs")
_USED_BY_SOURCE = {"shared": set(_DATA_DEFAULTS) - set(_SYNTHETIC_ONLY),
                   "synthetic": set(_DATA_DEFAULTS) - {"path", "mrms", "exclude", "val_fraction"},
                   "nl": set(_DATA_DEFAULTS) - set(_SYNTHETIC_ONLY) - set(_SEQUENCES_ONLY) - {"mrms", "exclude"}}
_USED_BY_SCHEDULER = {"plateau": ("lr_factor", "lr_patience"), "cosine": ("warmup_epochs",)}


def _warn_unused(data: Mapping[str, Any], training: Mapping[str, Any], source: str, scheduler: str) -> None:
    """A warning naming the keys the config sets that its data source or scheduler does not read (they were
    ignored silently: n_frames with real data, lr_patience with a cosine schedule, augment with the nl source)."""
    from ..errors import warn

    unused = [f"data.{k}" for k in data if data[k] is not None and k not in _USED_BY_SOURCE[source]]
    unused += [f"training.{k}" for keys in (v for s, v in _USED_BY_SCHEDULER.items() if s != scheduler)
               for k in keys if training.get(k) is not None and k not in _USED_BY_SCHEDULER.get(scheduler, ())]
    if unused:
        warn(f"config keys not used with data.source = {source!r} and training.scheduler = {scheduler!r}: "
             f"{', '.join(unused)} (ignored)")


def _training_key_used(key: str, name: str, stage: str | None, training: Mapping[str, Any]) -> bool:
    """Whether the model ``name`` (LUPIN: its ``stage``) reads the [training] key ``key``."""
    lupin = name == "lupin"  # (every stage reads beta; the tendency and joint stages gamma)
    return {"beta": lupin,
            "gamma": lupin and stage != "motion",
            "divergence": lupin and float(training["beta"]) > 0,
            "motion_teacher": float(training.get("teacher_weight") or 0.0) > 0,
            "rollout_steps": name not in (*_DIRECT, _PRETRAIN),
            "bptt": name not in (*_DIRECT, _PRETRAIN)}.get(key, True)


def _warn_unused_training(given: Mapping[str, Any], training: Mapping[str, Any], defaults: Mapping[str, Any],
                          name: str, stage: str | None) -> None:
    """A warning naming the [training] keys set to other than the recipe's value that this model or LUPIN stage
    does not read (beta for RainNet, gamma in LUPIN's motion stage, rollout_steps for SmaAt-UNet were ignored)."""
    from ..errors import warn

    unused = [k for k, v in given.items() if v is not None and v != defaults.get(k)
              and not _training_key_used(k, name, stage, training)]
    if unused:
        warn(f"[training] key(s) {', '.join(unused)} not used by {name}" + (f" (stage {stage})" if stage else "")
             + " (ignored)")


def _check_types(section: str, values: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    """InputError for a value of another type than its key's default (``augment = "false"`` was true, ``lr = "abc"``
    failed deep in the optimiser) or below its key's least value (``batch_size = 0``); integral floats of integer
    keys become ints, ints of float keys floats."""
    for key, value in values.items():
        if value is None:
            continue
        want = _TYPES_OF_NONE.get(key, type(defaults.get(key)))
        where = f"{section}.{key}"
        if want is bool:
            if not isinstance(value, bool):
                raise InputError(f"{where} must be true or false, got {value!r}")
        elif want is int:
            if isinstance(value, float) and value.is_integer():
                value = values[key] = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"{where} must be an integer, got {value!r}")
        elif want is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{where} must be a number, got {value!r}")
            value = values[key] = float(value)
        elif want is str and not isinstance(value, str):
            raise InputError(f"{where} must be a string, got {value!r}")
        elif want in (list, dict) and not isinstance(value, (list, tuple) if want is list else Mapping):
            raise InputError(f"{where} must be a {'list' if want is list else 'table'}, got {value!r}")
        least = _LEAST.get(key)
        if least is not None and value < least:
            raise InputError(f"{where} must be >= {least}, got {value!r}")
    for key in ("max_steps", "max_epochs"):  # (max_epochs = 0 exported untrained weights)
        if values.get(key) == 0:
            raise InputError(f"{section}.{key} must be -1 (no limit) or >= 1, got 0")


def resolve_config(config: Mapping[str, Any] | str | os.PathLike[str],
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read, override, validate and complete a config; returns the full config with every default filled in.

    Raises :class:`~skydiff.errors.InputError` for unknown sections or keys, an unknown model, stage, loss or
    data source, or a missing data path.
    """
    cfg = load_config(config)
    _apply_overrides(cfg, overrides)
    unknown = sorted(set(cfg) - _TOP_KEYS)
    if unknown:
        raise InputError(f"unknown config key(s) {', '.join(unknown)}; top-level keys: {', '.join(sorted(_TOP_KEYS))}")

    model = _section(cfg, "model")
    name = model.get("name")
    if not isinstance(name, str) or name.lower() not in list_models():
        raise InputError(f"unknown model {name!r} in [model] name; available: {', '.join(list_models())}")
    name = name.lower()
    model["name"] = name

    training = _section(cfg, "training")
    stage = training.get("stage") or None
    if name == "lupin" and stage is None:
        stage = "motion"
    defaults = recipe(name, stage)
    bad = sorted(set(training) - set(defaults))
    if bad:
        raise InputError(f"unknown [training] key(s) {', '.join(bad)}; known: {', '.join(sorted(defaults))}")
    _check_types("training", training, defaults)
    given_training = dict(training)
    training = {**defaults, **{k: v for k, v in training.items() if v is not None}}
    training["stage"] = stage
    _warn_unused_training(given_training, training, defaults, name, stage)
    if str(training["export"]).lower() not in ("best", "last"):
        raise InputError(f"training.export must be 'best' or 'last', got {training['export']!r}")
    training["export"] = str(training["export"]).lower()
    if str(training["loss"]).lower() not in LOSSES:
        raise InputError(f"unknown loss {training['loss']!r}; use one of {', '.join(LOSSES)}")
    out = cfg.get("out") or f"runs/{name}" + (f"_{stage}" if stage else "")
    if training["init_from"]:
        ip = Path(str(training["init_from"])).expanduser()
        exists = ip.is_file() or (ip.suffix != ".ckpt" and weights_paths(ip)[0].is_file())
        if not exists:
            raise InputError(f"training.init_from {ip} not found")
        export = Path(str(out)).expanduser() / f"{name}.safetensors"  # must not replace what the run starts from
        if ip.suffix != ".ckpt" and os.path.realpath(weights_paths(ip)[0]) == os.path.realpath(export):
            raise InputError(f"training.init_from {ip} is the file this run exports its weights to ({export}); "
                             "give the run another out (or copy the weights elsewhere first)")
        saved = _init_model_config(ip, name)
        model = {**saved, **model}

    data = _section(cfg, "data")
    bad = sorted(set(data) - set(_DATA_DEFAULTS))
    if bad:
        raise InputError(f"unknown [data] key(s) {', '.join(bad)}; known: {', '.join(sorted(_DATA_DEFAULTS))}")
    _check_types("data", data, _DATA_DEFAULTS)
    given_data = dict(data)
    data = {**_DATA_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
    src = str(data["source"]).lower()
    if src not in ("shared", "nl", "synthetic"):
        raise InputError(f"unknown data source {data['source']!r}; use 'shared', 'nl' or 'synthetic'")
    data["source"] = src
    _warn_unused(given_data, given_training, src, str(training["scheduler"]))
    if src == "shared":
        root = str(data["path"] or os.environ.get("SKYDIFF_DATA", ""))
        if not root:
            raise InputError("data.source = 'shared' needs data.path or the SKYDIFF_DATA environment variable")
        if not (Path(root).expanduser() / "radar").is_dir():
            raise InputError(f"shared data not found: {root} has no radar/ folder (set data.path or SKYDIFF_DATA)")
        data["path"] = root
    elif src == "nl":
        if not data["path"]:
            raise InputError("data.source = 'nl' needs data.path (an NL-50-style HDF5 file)")
        if not Path(str(data["path"])).expanduser().is_file():
            raise InputError(f"NL data file {data['path']} not found")
    crop = data["crop"]
    if isinstance(crop, (list, tuple)) and len(crop) == 0:
        crop = data["crop"] = None  # whole frames
    sizes = [crop] if isinstance(crop, int) else list(crop) if isinstance(crop, (list, tuple)) else None
    if crop is not None and (sizes is None or len(sizes) != (1 if isinstance(crop, int) else 2) or any(
            isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes)):
        raise InputError(f"data.crop must be a positive int or [height, width] of positive ints ([] = whole "
                         f"frames), got {crop!r}")

    trainer = _section(cfg, "trainer")
    for key in _TRAINER_TOP:
        if key in cfg:
            if key in trainer and trainer[key] != cfg[key]:
                raise InputError(f"{key} is given twice (top level {cfg[key]!r}, [trainer] {trainer[key]!r})")
            trainer[key] = cfg[key]
    params = inspect.signature(L.Trainer.__init__).parameters
    for key in trainer:
        if key in _RESERVED_TRAINER:
            raise InputError(f"[trainer] {key}: {_RESERVED_TRAINER[key]}")
        if key not in params:
            raise InputError(f"unknown [trainer] key {key!r} (not a lightning.Trainer argument)")

    resume = cfg.get("resume", True)
    if not isinstance(resume, (bool, str, os.PathLike)):
        raise InputError(f"resume must be true, false or a checkpoint path, got {resume!r}")
    return {"out": str(out), "resume": resume if isinstance(resume, bool) else str(resume),
            "model": model, "data": data, "training": training, "trainer": trainer}


# ------------------------------------------------------------------------------------------------- data


def _collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    out = {"inputs": torch.stack([s["inputs"] for s in samples]),
           "targets": torch.stack([s["targets"] for s in samples])}
    for key in ("mask", "teacher"):
        if key in samples[0]:
            out[key] = torch.stack([s[key] for s in samples])
    return out


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class _Cropped(Dataset):
    """Random (training) or centre crops of an NLDataset-like dataset, with an all-valid mask."""

    def __init__(self, base: Any, indices: np.ndarray, crop: tuple[int, int] | None, random: bool, seed: int) -> None:
        self.base, self.indices, self.crop, self.random, self.seed = base, np.asarray(indices), crop, random, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.base[int(self.indices[i])]
        x, y = s["inputs"], s["targets"]
        H, W = x.shape[-2:]
        if self.crop is not None:
            h, w = self.crop
            if h > H or w > W:
                raise InputError(f"crop {h}x{w} is larger than the {H}x{W} samples")
            if self.random:
                rng = np.random.default_rng([self.seed, self.epoch, int(i)])
                r, c = int(rng.integers(H - h + 1)), int(rng.integers(W - w + 1))
            else:
                r, c = (H - h) // 2, (W - w) // 2
            x, y = x[..., r:r + h, c:c + w], y[..., r:r + h, c:c + w]
        x, y = x.contiguous(), y.contiguous()
        mask = torch.isfinite(torch.cat([x, y]))
        return {"inputs": torch.nan_to_num(x, nan=0.0), "targets": torch.nan_to_num(y, nan=0.0), "mask": mask}


def _match_teacher_to_prior(dcfg: dict[str, Any], model: Any) -> None:
    """The whole-grid flow of ``data.teacher`` is a LUPIN's motion prior in training, so it must be the flow the
    model computes at inference: same method, frames and keyword arguments (e.g. LK's ``grid_stride``). Unset
    ``teacher_frames``/``teacher_kwargs`` are taken from the model; set ones that differ are refused."""
    from ..motion import get_method
    from .interface import default_motion_frames

    prior = model.motion_prior
    if get_method(str(dcfg["teacher"])).name != prior:
        raise InputError(f"data.teacher = {dcfg['teacher']!r} differs from the model's motion_prior {prior!r}: the "
                         "whole-grid flow of the data is used as the prior, so they must be the same method")
    want = {"teacher_kwargs": dict(model.motion_prior_kwargs or {}),
            "teacher_frames": model.motion_prior_frames or default_motion_frames(prior)}
    for key, value in want.items():
        given = dcfg.get(key)
        if given in (None, {}):
            dcfg[key] = value
        elif (dict(given) if key == "teacher_kwargs" else int(given)) != value:
            src = "motion_prior_kwargs" if key == "teacher_kwargs" else "motion_prior_frames"
            raise InputError(f"data.{key} = {given!r} differs from the model's {src} ({value!r}): the whole-grid flow "
                             "of the data is the model's motion prior in training, so it must be computed the same way")


def _split_by_time(base: Any, vf: float) -> tuple[np.ndarray, np.ndarray, str]:
    """Training and validation indices of an :class:`~skydiff.nowcast.data.NLDataset`'s train group: the latest
    ``vf`` of its samples validate, and only samples whose frames all end before the first validation frame train
    (stride-1 windows share frames: a plain cut let validation windows hold frames the model trained on)."""
    n = len(base)
    n_val = max(1, int(math.ceil(vf * n)))
    if base.spans is None:  # no timestamps: file order, less the windows that reach into the validation part
        gap = int(base.seq_len) - 1
        return (np.arange(max(0, n - n_val - gap)), np.arange(n - n_val, n),
                f"train group in file order (no timestamps): the last val_fraction validation, {gap} samples "
                f"before it dropped (their frames overlap it)")
    order = np.argsort([a for a, _ in base.spans], kind="stable")
    val = np.sort(order[n - n_val:])
    first = min(base.spans[i][0] for i in val)
    train = np.sort([i for i in order[: n - n_val] if base.spans[i][1] < first]).astype(np.int64)
    return (train, val, f"train group by time: the latest val_fraction validation (from {first.isoformat()}), "
            "training samples ending before it (none overlaps it)")


def build_datasets(data: Mapping[str, Any], n_in: int, n_out: int, seed: int = 0,
                   val_teacher: bool = False) -> tuple[Dataset, Dataset, dict]:
    """Training and validation datasets (mm/h, with masks) for a resolved ``[data]`` section.

    ``val_teacher``: the validation crops also get the whole-grid flow of ``data.teacher`` (for a LUPIN with a
    ``motion_prior``, whose motion depends on it)."""
    from .data import NLDataset, RadarSequences, shared_split

    crop = data["crop"]
    src = data["source"]
    common = dict(crop=crop, transform=None, stride=int(data["stride"]), min_rain_fraction=data["min_rain_fraction"],
                  rain_threshold=data["rain_threshold"], min_valid_fraction=data["min_valid_fraction"], seed=seed)
    desc: dict[str, Any] = {"source": src, "n_in": n_in, "n_out": n_out, "crop": crop, "units": "mm/h"}
    if src in ("shared", "synthetic"):
        if src == "shared":
            vf = 0.2 if data["val_fraction"] is None else float(data["val_fraction"])
            try:
                parts = shared_split(data["path"], val_fraction=vf, mrms=bool(data["mrms"]))
            except ReadError as exc:
                raise InputError(str(exc)) from None
            tr_src, va_src = parts["train"], parts["validation"]
            exclude = [str(e) for e in (data["exclude"] or [])]
            unknown = [e for e in exclude if e not in {p.name for p in tr_src}]
            if unknown:
                raise InputError(f"data.exclude: no training part named {unknown}; the training parts are "
                                 f"{[p.name for p in tr_src]}")
            tr_src = [p for p in tr_src if p.name not in exclude]
            desc.update(path=str(data["path"]), val_fraction=vf, mrms=bool(data["mrms"]))
            if exclude:
                desc["excluded_training_parts"] = exclude
        else:
            from ..synthetic import rain_sequence

            shape = tuple(int(v) for v in data["shape"])
            nf = int(data["n_frames"])
            tr_src = [rain_sequence(nf, shape, seed=seed + i) for i in range(int(data["n_sequences"]))]
            va_src = [rain_sequence(nf, shape, seed=seed + 1000 + i) for i in range(int(data["n_val_sequences"]))]
            desc.update(generator="skydiff.synthetic.rain_sequence", n_frames=nf, shape=list(shape),
                        train_seeds=[seed + i for i in range(len(tr_src))],
                        validation_seeds=[seed + 1000 + i for i in range(len(va_src))])
        if not tr_src or not va_src:
            raise InputError(f"the {src} data has no {'training' if not tr_src else 'validation'} part")
        teach = dict(teacher_frames=data["teacher_frames"], teacher_kwargs=data["teacher_kwargs"])
        train_ds = RadarSequences(tr_src, n_in, n_out, random_crop=True, augment=bool(data["augment"]),
                                  sampling=str(data["sampling"]), teacher=str(data["teacher"]) or None, **teach,
                                  **common)
        desc["sampling"] = str(data["sampling"])
        if data["teacher"]:
            desc["teacher"] = (f"{data['teacher']} on the whole grid of each source (RadarSequences(teacher=...))"
                               + (f", {dict(data['teacher_kwargs'])}" if data["teacher_kwargs"] else ""))
        val_ds = RadarSequences(va_src, n_in, n_out, random_crop=False, eval_crops=data["eval_crops"],
                                teacher=(str(data["teacher"]) or None) if val_teacher else None, **teach, **common)
        for part, ds, size in (("training", train_ds, data["batch_size"]),
                               ("validation", val_ds, data["val_batch_size"] or data["batch_size"])):
            grids = sorted({(s["name"], tuple(s["shape"])) for s in ds.sources if s.get("samples")})
            if crop is None and len({g for _, g in grids}) > 1 and int(size) > 1:
                raise InputError(f"data.crop = [] (whole frames) with {part} sources on different grids (" + ", ".join(
                    f"{k}: {h}x{w}" for k, (h, w) in grids) + "): their frames cannot share a batch; give a crop, "
                    f"or {'batch_size' if part == 'training' else 'val_batch_size'} = 1")
        desc["train_sources"] = [s["name"] for s in train_ds.sources]
        desc["validation_sources"] = [s["name"] for s in val_ds.sources]
    else:
        base = NLDataset(data["path"], "train", n_in, n_out, transform=None)
        vf = 0.1 if data["val_fraction"] is None else float(data["val_fraction"])
        if not 0.0 < vf < 1.0:
            raise InputError(f"data.val_fraction must be in (0, 1), got {vf}")
        tr_idx, va_idx, how = _split_by_time(base, vf)
        if len(tr_idx) < 1:
            raise InputError(f"{data['path']}: {len(base)} train samples are too few to split off a validation "
                             f"part that no training sample overlaps")
        hw = None if crop is None else ((crop, crop) if isinstance(crop, int) else tuple(int(c) for c in crop))
        if hw is not None and (hw[0] > base.grid[0] or hw[1] > base.grid[1]):  # (else only in a loader worker)
            raise ShapeError(f"data.crop {hw[0]}x{hw[1]} is larger than the {base.grid[0]}x{base.grid[1]} frames of "
                             f"{data['path']}")
        train_ds = _Cropped(base, tr_idx, hw, True, seed)
        val_ds = _Cropped(base, va_idx, hw, False, seed)
        desc.update(path=str(data["path"]), val_fraction=vf, split=how,
                    n_dropped_for_gap=len(base) - len(tr_idx) - len(va_idx))
    frac = float(data.get("train_fraction", 1.0))
    if not 0.0 < frac <= 1.0:
        raise InputError(f"data.train_fraction must be in (0, 1], got {frac}")
    if frac < 1.0:
        from torch.utils.data import Subset

        n_all = len(train_ds)
        keep = np.sort(np.random.default_rng(seed).permutation(n_all)[: max(1, int(round(frac * n_all)))])
        train_ds = Subset(train_ds, keep.tolist())
        desc.update(train_fraction=frac, n_train_all=n_all)
    desc["n_train"] = len(train_ds)
    desc["n_validation"] = len(val_ds)
    return train_ds, val_ds, desc


# ------------------------------------------------------------------------------------------------- train


def _on_cpu(trainer_cfg: Mapping[str, Any]) -> bool:
    acc = str(trainer_cfg.get("accelerator", "auto")).lower()
    if acc == "cpu":
        return True
    if acc in ("auto", "none"):
        mps = getattr(torch.backends, "mps", None)
        return not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    return False


def _machine(trainer: L.Trainer) -> dict[str, Any]:
    info: dict[str, Any] = {"host": platform.node(), "platform": platform.platform(),
                            "python": platform.python_version(), "torch": torch.__version__,
                            "lightning": L.__version__, "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}
    try:
        info["accelerator"] = type(trainer.accelerator).__name__
        info["devices"] = int(trainer.num_devices)
        info["num_nodes"] = int(trainer.num_nodes)
        info["strategy"] = type(trainer.strategy).__name__
    except Exception:  # pragma: no cover
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    return str(x)


def train(config: Mapping[str, Any] | str | os.PathLike[str], *,
          overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train a nowcasting model from a config (see the module docstring for the schema).

    Parameters
    ----------
    config
        A dict, a ``.toml`` / ``.json`` file, or a sample config name (:func:`sample_config`).
    overrides
        Dotted keys replacing config values, e.g. ``{"training.max_epochs": 1, "out": "runs/x", "devices": 2}``.

    Behaviour: ``seed_everything(training.seed)``; checkpoints in ``out/checkpoints`` (``last.ckpt`` and the best
    on ``val_loss``); when ``out/checkpoints/last.ckpt`` exists the run **resumes** from it (printed on stderr)
    unless ``resume = false``; EarlyStopping on ``val_loss``; TQDM progress bar; CSV log in ``out/logs``; at
    the end the best weights are exported with :func:`~skydiff.nowcast.models.save_model` to ``out/<model>``
    (``.safetensors`` + ``.json`` model card) and the summary is written to ``out/summary.json``.

    Returns
    -------
    dict with ``model``, ``stage``, ``out``, ``weights``, ``card``, ``best_checkpoint``, ``last_checkpoint``,
    ``resumed_from`` (path or None), ``epochs`` (completed), ``global_step``, ``time_s`` (this call),
    ``training_time_s`` (all runs of this output folder), ``best_val_loss``, ``val_scores`` (of the exported
    weights), ``metrics_csv``, ``interrupted``, ``rank``. On DDP ranks other than 0 (``ddp`` strategy) only the
    training runs and ``weights`` is None.

    Raises :class:`~skydiff.errors.InputError` for a bad config (unknown model/key, missing data path, ...).
    """
    t_start = time.perf_counter()
    cfg = resolve_config(config, overrides)
    out = Path(cfg["out"]).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"out {out} is a file, not a folder (the run writes checkpoints, logs and weights into it)")
    mcfg, dcfg, tcfg, trcfg = cfg["model"], cfg["data"], cfg["training"], dict(cfg["trainer"])
    name = mcfg["name"]
    model_kwargs = {k: v for k, v in mcfg.items() if k != "name"}

    old_threads = torch.get_num_threads()
    try:
        import numba

        old_numba: int | None = numba.get_num_threads()
    except Exception:  # pragma: no cover
        old_numba = None
    n_threads = int(tcfg["num_threads"] or 0)
    if n_threads <= 0 and _on_cpu(trcfg):
        n_threads = 1
    _set_threads(n_threads)
    try:
        return _train(cfg, out, name, model_kwargs, dcfg, tcfg, trcfg, n_threads, t_start)
    finally:
        torch.set_num_threads(old_threads)
        if old_numba is not None:
            import numba

            numba.set_num_threads(old_numba)


def _train(cfg: dict[str, Any], out: Path, name: str, model_kwargs: dict[str, Any], dcfg: dict[str, Any],
           tcfg: dict[str, Any], trcfg: dict[str, Any], n_threads: int, t_start: float) -> dict[str, Any]:
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.loggers import CSVLogger

    from ..motion import get_method

    seed = int(tcfg["seed"])
    L.seed_everything(seed, workers=True, verbose=False)
    options = {k: tcfg[k] for k in ("loss", "lr", "weight_decay", "beta", "gamma", "rollout_steps", "bptt",
                                    "scheduler", "lr_factor", "lr_patience", "csi_threshold")}
    options.update({k: tcfg[k] for k in _EXTRA_OPTIONS if k in tcfg})
    probe = create_model(name, **model_kwargs)
    n_in = int(dcfg["n_in"] or probe.n_input_frames)
    module = NowcastModule(probe, n_in=n_in, n_out=dcfg["n_out"], stage=tcfg["stage"],
                           init_from=tcfg["init_from"] or None, num_threads=n_threads, **options)
    n_out = module.n_out
    if dcfg.get("teacher") and getattr(probe, "motion_prior", None) is None and not module.teacher_weight > 0:
        raise InputError(f"data.teacher = {dcfg['teacher']!r} computes a whole-grid flow for every window (~1 s per "
                         f"KNMI window) that {name} ({tcfg['stage'] or 'its one stage'}) does not use: only a LUPIN "
                         "with a motion_prior, or its motion stage with teacher_weight > 0, reads it; remove "
                         "data.teacher")
    cfg["data"]["n_in"], cfg["data"]["n_out"] = n_in, n_out
    cfg["training"]["rollout_steps"] = module.rollout_steps
    cfg["model"] = {"name": name, **module.model.config}

    ckdir = out / "checkpoints"
    last = ckdir / "last.ckpt"
    resume = cfg["resume"]
    ckpt_path: str | None = None
    resume_batches, finished = 0, False
    patience = None if tcfg["patience"] is None else int(tcfg["patience"])  # EarlyStopping when >= 0
    exported = weights_paths(out / name)[0]
    if isinstance(resume, str):
        if not Path(resume).expanduser().is_file():
            raise InputError(f"resume checkpoint {resume} not found")
        ckpt_path = str(Path(resume).expanduser())
        held = [p.name for p in (last, exported) if p.is_file()]
        if held and Path(ckpt_path).resolve().parent != ckdir.resolve():
            raise InputError(f"{out} holds another run ({', '.join(held)}) that resuming {ckpt_path} there would "
                             "replace: give an out of its own (or that run's own checkpoint)")
    elif resume and last.is_file():
        ckpt_path = str(last)
    elif resume is True and exported.is_file():
        raise InputError(f"{out} holds the weights {exported.name} of an earlier run but no "
                         f"checkpoint to resume ({last}): this run would replace them; give it another out, or set "
                         "resume = false to train again from the start and replace them")
    module.run_setup = {"data": {k: v for k, v in dcfg.items() if k not in _RESUME_FREE_DATA}, "seed": seed}
    if ckpt_path:  # before the (possibly long) data building
        resume_batches, stopped = _check_resume(ckpt_path, module, "explicit" if isinstance(resume, str) else "auto")
        wait = int((stopped or {}).get("wait_count", 0))
        if stopped is not None and patience is not None and 0 <= patience <= wait:
            finished = True  # a re-run of a run that stopped early exports it again (it trained another epoch)
            print(f"skydiff train: {ckpt_path} is of a run that early stopping ended (epoch "
                  f"{stopped['stopped_epoch']}, no val_loss improvement in {wait} validations); nothing to train "
                  "(raise training.patience to go on, or resume = false to start again)", file=sys.stderr, flush=True)
        else:
            print(f"skydiff train: resuming from {ckpt_path}", file=sys.stderr, flush=True)

    # the trainer before the data (which may take long), so that its settings are checked first.
    # A fresh start (no checkpoint to resume) must not export an earlier run's best checkpoint left in the folder
    stale = set() if ckpt_path else set(ckdir.glob("best-*.ckpt"))
    # ... nor its last.ckpt, which a fresh run that never validates would not replace
    stale_last = None if ckpt_path or not last.is_file() else last.stat().st_mtime_ns
    best_cb = ModelCheckpoint(dirpath=str(ckdir), filename="best-{epoch:03d}-{step:06d}", monitor="val_loss",
                              mode="min", save_top_k=1, save_last=False, enable_version_counter=False,
                              save_on_train_epoch_end=False)
    # last.ckpt after every validation. (Lightning's own save_last=True only refreshes last.ckpt when a best
    # checkpoint is saved in the same step (Lightning 2.6), so a run whose val_loss stopped improving would
    # resume from, and export="last" would give, the best epoch's state instead of the latest.)
    last_cb = ModelCheckpoint(dirpath=str(ckdir), filename="last", monitor=None, save_top_k=1, every_n_epochs=1,
                              enable_version_counter=False, save_on_train_epoch_end=False)
    callbacks: list[Any] = [best_cb, last_cb, SaveOnInterrupt(last, "skydiff train")]
    every = int(tcfg["checkpoint_every_n_steps"] or 0)
    if every > 0:
        callbacks.append(ModelCheckpoint(dirpath=str(ckdir), filename="last", monitor=None, save_top_k=1,
                                         every_n_train_steps=every, enable_version_counter=False))
    if patience is not None and patience >= 0:
        callbacks.append(ConfiguredEarlyStopping(monitor="val_loss", mode="min", patience=patience, strict=False))
    if tcfg["progress_bar"]:
        callbacks.append(TQDMProgressBar())
    logger = CSVLogger(save_dir=str(out), name="logs")
    _ = logger.version  # fix the version now, so that spawned processes and this one agree
    try:
        trainer = L.Trainer(
            default_root_dir=str(out), max_epochs=int(tcfg["max_epochs"]), max_steps=int(tcfg["max_steps"]),
            # true: deterministic algorithms, warning (not failing, as on CUDA) where torch has none: the backward
            # of grid_sample (advection) and of bilinear upsampling
            precision=tcfg["precision"], deterministic="warn" if tcfg["deterministic"] else False,
            enable_progress_bar=bool(tcfg["progress_bar"]), callbacks=callbacks, logger=logger,
            plugins=with_atomic_checkpoints(trcfg.pop("plugins", None)), **trcfg,  # checkpoints via atomic_path
        )
    except (MisconfigurationException, ValueError, TypeError) as exc:  # e.g. accelerator = "gpu" without one
        given = {k: v for k, v in cfg["trainer"].items() if k != "plugins"}
        raise InputError(f"lightning.Trainer refuses the settings (training.precision = {tcfg['precision']!r}, "
                         f"[trainer] {given}): {exc}") from None

    prior = getattr(probe, "motion_prior", None)
    if prior is not None and dcfg.get("teacher"):
        _match_teacher_to_prior(dcfg, probe)
    train_ds, val_ds, desc = build_datasets(dcfg, n_in, n_out, seed, val_teacher=prior is not None)
    bs = int(dcfg["batch_size"])
    vbs = int(dcfg["val_batch_size"] or bs)
    nw = int(dcfg["num_workers"])
    pin = not _on_cpu(trcfg)
    dl_kw = dict(num_workers=nw, collate_fn=_collate, worker_init_fn=_worker_init if nw else None, pin_memory=pin)
    # the loaders draw their per-iterator seed from generators of their own, not from torch's global one: a
    # validation run by a stop at max_steps, which the uninterrupted run would not have, must not move the global
    # generator (dropout). (Not with a spawned strategy: a pickled torch.Generator breaks its process launch.)
    spawned = "spawn" in str(trcfg.get("strategy", ""))
    own_rng: Any = (lambda: None) if spawned else (lambda: torch.Generator().manual_seed(seed))
    val_dl = DataLoader(val_ds, batch_size=vbs, shuffle=False, generator=own_rng(), **dl_kw)

    # the training batches: one seeded stream of shuffled passes (the crops of pass p are those of epoch p), cut into
    # Lightning epochs of whole global batches and positioned at the checkpoint's step, so that a resumed run
    # trains on the batches the uninterrupted one would have (DataLoader(shuffle=True) draws its order from torch's
    # global generator, and Lightning starts an interrupted epoch again)
    sampler = StreamSampler(len(train_ds), bs * int(trainer.world_size), seed=seed, draws=True)
    sampler.resume(resume_batches)  # batches, not optimiser steps: the same with accumulate_grad_batches
    train_dl = DataLoader(PassDataset(train_ds), batch_size=bs, sampler=sampler, generator=own_rng(), **dl_kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=r".*The number of training batches.*log_every_n_steps.*")
        warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*your dataloader is not resumable.*")  # StreamSampler is
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
        if not finished:
            trainer.fit(module, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=ckpt_path)
    stopper = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
    if not finished and stopper is not None and stopper.stopped_epoch > 0:
        trainer.save_checkpoint(str(last))  # (all ranks) with the early stopping's final state: a re-run ends here

    rank = int(trainer.global_rank)
    summary: dict[str, Any] = {"model": name, "stage": tcfg["stage"], "out": str(out), "rank": rank,
                               "resumed_from": ckpt_path, "interrupted": bool(trainer.interrupted),
                               "weights": None, "card": None}
    if not trainer.is_global_zero:
        return summary

    # the state after fit (also right after a ddp_spawn run, where the main process did not train)
    if not last.is_file() or bool(trainer.interrupted) or last.stat().st_mtime_ns == stale_last:
        try:
            trainer.save_checkpoint(str(last))
        except Exception:  # pragma: no cover - e.g. a spawn launcher's main process
            pass
    last_ck = torch.load(str(last), map_location="cpu", weights_only=False) if last.is_file() else {}
    best = best_cb.best_model_path or ""
    if tcfg.get("export", "best") == "last" and last.is_file():
        best = str(last)
    if not best or not Path(best).is_file():  # this run's best-* files only: a restarted run (resume = false)
        # leaves the earlier run's in the folder, and without validation it writes none of its own
        cands = sorted((p for p in ckdir.glob("best-*.ckpt") if p not in stale), key=lambda p: p.stat().st_mtime)
        best = str(cands[-1]) if cands else (str(last) if last.is_file() else "")
    if best:
        best_ck = torch.load(best, map_location="cpu", weights_only=False)
        state = {k[len("model."):]: v for k, v in best_ck["state_dict"].items() if k.startswith("model.")}
        info = best_ck.get("skydiff", {})
    else:  # nothing saved: export the weights in memory
        state, info, best_ck = {k: v.detach().cpu() for k, v in module.model.state_dict().items()}, {}, {}
    export = create_model(name, **module.model.config)
    load_weights(export, state)
    exported = info.get("val_history") or []
    val_scores = exported[-1] if exported else {}  # of the exported state
    last_info = last_ck.get("skydiff", {})
    history = last_info.get("val_history") or exported  # every validation of the run (the best's stops at it)
    time_s = time.perf_counter() - t_start
    step = int(last_ck.get("global_step", trainer.global_step))
    started = (((last_ck.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}).get("total", {})
    epochs = int(started["started"]) if "started" in started else \
        int(last_ck.get("epoch", trainer.current_epoch)) + 1 if step > 0 else 0  # the last may be partial
    log_dir = Path(getattr(trainer.logger, "log_dir", out / "logs"))
    card = {
        "description": f"{name} trained by skydiff.nowcast.training" + (f", LUPIN stage {tcfg['stage']!r}"
                                                                         if tcfg["stage"] else ""),
        "config": _jsonable(cfg),
        "data": _jsonable(desc),
        "training": {
            "stage": tcfg["stage"], "epochs_completed": epochs, "global_step": step, "exported": tcfg["export"],
            "best_checkpoint": best or None, "best_epoch": best_ck.get("epoch"),
            "best_global_step": best_ck.get("global_step"),
            "training_time_s": float(last_info.get("training_time_s", time_s)),
            "training_time_s_at_best": info.get("training_time_s"),
            "init_from": tcfg["init_from"] or None, "resumed_from": ckpt_path,
            "machine": _machine(trainer),
            "n_parameters": int(sum(p.numel() for p in export.parameters())),
        },
        "val_scores": _jsonable(val_scores),
        "val_history": _jsonable(history),
    }
    weights, card_path = save_model(export, out / name, card=card)
    best_val = val_scores.get("val_loss") if val_scores else None
    summary.update({
        "weights": str(weights), "card": str(card_path), "best_checkpoint": best or None,
        "last_checkpoint": str(last) if last.is_file() else None, "epochs": epochs, "global_step": step,
        "time_s": time_s, "training_time_s": float(last_info.get("training_time_s", time_s)),
        "best_val_loss": best_val, "val_scores": _jsonable(val_scores),
        "metrics_csv": str(log_dir / "metrics.csv"), "n_train": desc["n_train"], "n_validation": desc["n_validation"],
    })
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    return summary
