"""Lightning checkpoints the skydiff way: written atomically beside their target, checked before a resume, and
resumed exactly (:class:`StreamSampler`, :class:`PassDataset`, :func:`rng_state`: a resumed run trains on what the
uninterrupted run would have).

Lightning's own writer (``TorchCheckpointIO`` -> ``_atomic_save``) stages a checkpoint in the *system* temporary
folder and moves it into place with :func:`shutil.move`. When that folder is on another filesystem than the run
folder (a local ``/tmp`` and a shared run folder, as on most clusters) the move is a copy onto ``last.ckpt``, so a
job killed during it leaves a truncated checkpoint in place of the last good one; it never fsyncs either.
:class:`AtomicCheckpointIO` writes through :func:`skydiff.io.atomic_path` instead (temporary file in the same
folder, fsync, :func:`os.replace`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.plugins.io import CheckpointIO, TorchCheckpointIO
from torch.utils.data import Sampler

from .errors import InputError, ReadError
from .io.atomic import atomic_path

__all__ = ["AtomicCheckpointIO", "with_atomic_checkpoints", "SaveOnInterrupt", "ConfiguredEarlyStopping",
           "check_resumable", "changed_settings", "StreamSampler", "PassDataset", "rng_state", "set_rng_state"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file beside the checkpoint, then ``os.replace`` (local paths; URLs and
    ``storage_options`` go to Lightning's writer)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(os.fspath(path), suffix=".tmp.ckpt") as tmp:
            torch.save(checkpoint, tmp)
        return None


def with_atomic_checkpoints(plugins: Any = None) -> list[Any]:
    """The ``plugins`` of a ``lightning.Trainer``: those given plus :class:`AtomicCheckpointIO`, unless they hold a
    checkpoint writer of their own."""
    items = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in items):
        items.append(AtomicCheckpointIO())
    return items


class ConfiguredEarlyStopping(EarlyStopping):  # type: ignore[misc]
    """Lightning's EarlyStopping, whose ``patience`` on a resume is the one configured now: Lightning restores it
    from the checkpoint, so a run that early stopping ended could not be continued by raising the patience."""

    @property
    def state_key(self) -> str:  # Lightning's own key, so checkpoints of either class resume each other
        return super().state_key.replace(type(self).__qualname__, "EarlyStopping", 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience


class SaveOnInterrupt(L.Callback):  # type: ignore[misc]
    """Write ``path`` when a single-process run is stopped with Ctrl-C (KeyboardInterrupt) or SIGTERM (a batch
    scheduler's preemption, ``kill``: Lightning raises its ``SIGTERMException``).

    Not when, in a run that validates, it stops between an epoch's last training batch and the end of its
    validation: Lightning resumes such a state without that epoch's validation (or repeats it without the scheduler
    step that follows it), so the resumed run would differ from the uninterrupted one. The checkpoint written before
    is kept instead, and the resumed run trains that epoch again (the same batches)."""

    def __init__(self, path: Any, who: str = "skydiff") -> None:
        self.path, self.who = path, who

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and trainer.world_size == 1:
            import sys

            progress = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None)
            validates = getattr(trainer, "enable_validation", False)  # (no validation: nothing to skip)
            if getattr(trainer, "validating", False) or (validates and getattr(progress, "is_last_batch", False)):
                print(f"{self.who}: interrupted at the end of epoch {trainer.current_epoch} (its training done, its "
                      f"validation not): not saved; a run again resumes from the checkpoint written before, "
                      f"{self.path}, and trains the batches since again" if os.path.exists(self.path) else
                      f"{self.who}: interrupted at the end of the first epoch: nothing saved (a run again starts "
                      "anew)", file=sys.stderr)
                return
            trainer.save_checkpoint(str(self.path))
            print(f"{self.who}: interrupted; state saved to {self.path} (run again to resume)", file=sys.stderr)


def check_resumable(path: Any, module: torch.nn.Module, hint: str,
                    differences: Callable[[dict[str, Any]], list[str]] | None = None) -> dict[str, Any]:
    """Read the checkpoint ``path`` (memory-mapped) and raise :class:`InputError` when it belongs to another run,
    instead of Lightning's RuntimeError (or a silent resume into another set-up): ``differences(checkpoint)``
    lists what differs from this run (e.g. the model config), then every weight of ``module`` must be there with
    its shape. ``hint`` (what to do) ends the message. Returns the checkpoint."""
    try:
        try:
            ck = torch.load(os.fspath(path), map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # not a zip-format file (mmap needs one): read it whole
            ck = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unreadable file
        raise ReadError(f"cannot read the checkpoint {path} to resume from ({exc}); {hint}") from None
    saved = ck.get("state_dict") if isinstance(ck, dict) else None
    if not isinstance(saved, dict):
        raise ReadError(f"{path} is not a Lightning checkpoint (no state_dict); {hint}")
    differ = differences(ck) if differences is not None else []
    if differ:
        raise InputError(f"the checkpoint {path} is of another run: {'; '.join(differ)}; {hint}")
    own = module.state_dict()
    bad = sorted(set(own) ^ set(saved))
    bad += [k for k in own if k in saved and tuple(own[k].shape) != tuple(saved[k].shape)]
    if bad:
        raise InputError(f"the checkpoint {path} is of another run: {len(bad)} of its weights differ from this "
                         f"model's (e.g. {bad[0]!r}); {hint}")
    return ck


def changed_settings(what: str, there: Any, here: Any) -> list[str]:
    """For a ``differences`` of :func:`check_resumable`: one line naming the settings (JSON-like dicts) that differ
    between the checkpoint (``there``) and this run (``here``), or none."""
    keys = sorted(k for k in set(there) | set(here) if there.get(k) != here.get(k))
    return [f"{what} " + ", ".join(f"{k} = {there.get(k)!r} there, {here.get(k)!r} here" for k in keys)] if keys \
        else []


class StreamSampler(Sampler[int]):
    """Dataset indices as one endless stream of shuffled passes over ``range(n)`` (pass ``p`` in the order of
    ``numpy.random.default_rng([seed, p])``), cut into epochs of ``length`` items (default ``n``, rounded down to
    whole batches). After :meth:`resume` (the number of batches of ``batch_size`` items trained on: the global step
    when each batch is one optimiser step) the stream goes on at the first item not yet trained on, so a resumed
    run sees the batches the uninterrupted run would have, whether it stopped in the middle of an epoch or at its
    end (``DataLoader(shuffle=True)`` draws a new order from torch's global generator instead, and Lightning starts
    the interrupted epoch again). Epochs are assumed to run to their end (not cut by ``limit_train_batches``).

    With DataLoader workers the indices are drawn ahead of training (prefetch), and an epoch that Lightning ends
    early (the rest of an interrupted one) leaves the stream ahead of the batches trained on: a trainer then calls
    :meth:`resume` with its count of batches trained at each epoch start (``NowcastModule.on_train_epoch_start``).

    ``draws=True`` yields ``p * n + index`` instead of ``index``: a number unique over the whole run, for a dataset
    that keys its random crops on it (:class:`skydiff.downscale.training.PairDataset`)."""

    def __init__(self, n: int, batch_size: int, seed: int = 0, draws: bool = False, length: int | None = None):
        self.n, self.batch_size, self.seed, self.draws = int(n), int(batch_size), int(seed), bool(draws)
        per_epoch = self.n if length is None else int(length)
        self.length = max(1, per_epoch // self.batch_size) * self.batch_size
        self.position = 0

    def resume(self, batches: int) -> None:
        self.position = int(batches) * self.batch_size

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Any:
        # from a local count, so that a :meth:`resume` while DataLoader workers prefetch this epoch's indices (the
        # trainer re-positions the stream at each epoch start) moves the next epoch only
        order, current, position = None, -1, self.position
        for _ in range(self.length):
            p, j = divmod(position, self.n)
            if p != current:
                order, current = np.random.default_rng([self.seed, p]).permutation(self.n), p
            position += 1
            self.position = position
            yield int(order[j]) + (p * self.n if self.draws else 0)


class PassDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Item ``q`` of a :class:`StreamSampler` with ``draws=True`` is item ``q % n`` of ``dataset`` with its epoch set
    to the pass ``q // n`` (``set_epoch`` of the first dataset down the ``.dataset`` chain that has one, e.g. under a
    ``Subset``), so that a dataset whose random crops are keyed on ``(seed, epoch, index)`` draws the crops of the
    pass the item belongs to, in any DataLoader worker."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset
        inner = dataset
        while inner is not None and not callable(getattr(inner, "set_epoch", None)):
            inner = getattr(inner, "dataset", None)
        self._epoched = inner

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, q: int) -> Any:
        p, i = divmod(int(q), len(self.dataset))
        if self._epoched is not None:
            self._epoched.set_epoch(p)
        return self.dataset[i]


def rng_state() -> dict[str, Any]:
    """torch's global generator states, for a checkpoint: the CPU's and, when CUDA is in use, the current device's.

    One CUDA state, not one per device: a DDP checkpoint is written by rank 0, and every rank (seeded alike, drawing
    alike) restores it onto its own device."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any] | None) -> None:
    """Restore what :func:`rng_state` gave; the states may come back on any device (``map_location``)."""
    if not state:
        return
    torch.set_rng_state(state["cpu"].cpu())
    cuda = state.get("cuda")
    if isinstance(cuda, (list, tuple)):  # checkpoints before 2026-11-28 kept one state per device
        cuda = cuda[0] if cuda else None
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(cuda.cpu())
