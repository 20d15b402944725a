"""Atomic file writes: the one mechanism behind every skydiff writer that replaces a file in one step."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The caller writes the whole file to the yielded path (with any library: xarray, numpy, json ...). On success
    it replaces ``path`` with :func:`os.replace` (readers never see a half-written file); on any exception the
    temporary file is removed and ``path`` is left as it was. Parent folders are created. ``suffix`` ends the
    temporary name (e.g. ``".tmp.npz"`` for :func:`numpy.savez`, which appends ``.npz`` otherwise).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.parent / f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
