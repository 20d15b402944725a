"""Atomic file writes: the one mechanism behind every skydiff writer that replaces a file in one step."""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError, SkydiffError

__all__ = ["atomic_path"]


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp", *, fsync: bool = True) -> Iterator[Path]:
    """Yield a hidden temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The caller writes the whole file to the yielded path (with any library: xarray, numpy, netCDF4, json ...). On
    success the data are flushed to disk (``fsync``), a file being replaced keeps its permissions, and
    :func:`os.replace` moves the new file onto ``path`` in one step (readers never see a half-written file); on
    any exception (also KeyboardInterrupt) the temporary file is removed and ``path`` is left as it was. Parent
    folders are created; a ``path`` that is a folder is an :class:`~skydiff.errors.InputError` at once; a symbolic
    link to a file has that file replaced (the link is kept). The
    temporary file is created by the writing library, so it gets the usual permissions (umask), unlike
    :func:`tempfile.mkstemp`'s 0600. ``suffix`` ends the temporary name (e.g. ``".tmp.npz"`` for
    :func:`numpy.savez`, which appends ``.npz`` otherwise).
    """
    p = Path(path)
    if p.is_symlink() and p.resolve().exists():  # replace the file the link points to, not the link itself
        p = p.resolve()
    if p.is_dir():  # os.replace would fail only after the whole file was written, with a bare OSError
        raise InputError(f"cannot write {p}: it is a folder; give a file name")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"cannot write {p}: a part of its folder {p.parent} is a file") from None
    tmp = p.parent / f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"
    try:
        yield tmp
        if not tmp.exists():  # the block wrote nothing (e.g. a writer that appended its own suffix)
            raise SkydiffError(f"nothing was written for {p} (no file at the temporary path {tmp.name}); {p} is left "
                               "as it was")
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        if p.exists():  # keep the permissions of the file being replaced
            os.chmod(tmp, stat.S_IMODE(p.stat().st_mode))
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
