"""Shared fixtures. Real data is read from SKYDIFF_DATA (default: ../shared/data beside the repository)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def rain(b: int, t: int, h: int = 40, w: int = 52, seed: int = 0):
    """Test input for the networks: ``(b, t, h, w)`` smooth positive blobs drifting 1 px/step to the right (mm/h)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    out = torch.zeros(b, t, h, w)
    for i in range(b):
        cy, cx = (torch.rand(2, generator=g) * torch.tensor([h / 2, w / 3]) + torch.tensor([h / 4, w / 6])).tolist()
        for j in range(t):
            out[i, j] = 20.0 * torch.exp(-((yy - cy) ** 2 + (xx - cx - j) ** 2) / 40.0)
    return out


def data_dir() -> Path:
    return Path(os.environ.get("SKYDIFF_DATA", ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = data_dir()
    if not (d / "radar").is_dir():
        pytest.skip(f"real data not found at {d} (set SKYDIFF_DATA to the shared data folder)")
    return d


@pytest.fixture(scope="session")
def knmi2010(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "radar" / "KNMI" / "2010" / "08").glob("RAD_NL25_RAP_5min_*.h5"))
    if not files:
        pytest.skip("KNMI 2010 files not found in the shared data")
    return files


@pytest.fixture(scope="module")
def one_thread():
    """Tiny networks: one intra-op thread (torch and numba) is fastest and avoids OpenMP spin-waits on a shared
    2-core machine; the previous settings are restored after the module."""
    import numba
    import torch

    old_torch, old_numba = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    yield
    torch.set_num_threads(old_torch)
    numba.set_num_threads(old_numba)


def stop_training_at(monkeypatch, module_class, step: int, exc: BaseException):
    """Make ``module_class.training_step`` raise ``exc`` at global step ``step`` (a Ctrl-C, a killed job);
    returns a function that puts the real step back."""
    real = module_class.training_step

    def stopping(self, batch, batch_idx):
        if self.global_step == step:
            raise exc
        return real(self, batch, batch_idx)

    monkeypatch.setattr(module_class, "training_step", stopping)
    return lambda: monkeypatch.setattr(module_class, "training_step", real)
