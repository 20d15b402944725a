"""Training-step time of LUPIN (stage 2: AF-U-Net, MF-U-Net frozen) and RainNet in float32 vs bfloat16 autocast.

Usage (from the repository root, with the shared data)::

    python benchmarks/train/step_precision.py [--threads 2] [--reps 4]

One step = the CPU configs' batch (8 crops of 128 x 128 from KNMI 2010-08-26 03:00-03:55 UTC, training part), 6
autoregressive leads (detached feedback), RMSE loss, backward, Adam — the same work as a Lightning step with
``training.precision = "32-true"`` or ``"bf16-mixed"`` (Lightning's CPU bf16-mixed is this ``torch.autocast``),
without the data loading. Median of ``--reps`` steps after one warm-up, the two precisions side by side.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--data", default=os.environ.get("SKYDIFF_DATA", "../shared/data"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from skydiff.io import read_radar
    from skydiff.nowcast.models import create_model

    files = sorted((Path(a.data) / "radar/KNMI/2010/08").glob("RAD_NL25_RAP_5min_2010082603*.h5"))[:12]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frames = torch.from_numpy(np.nan_to_num(read_radar([str(f) for f in files]).values.astype(np.float32)))
    xs = torch.stack([frames[:, 300 + 10 * i:428 + 10 * i, 200 + 12 * i:328 + 12 * i] for i in range(8)])

    def step(m: torch.nn.Module, opt: torch.optim.Optimizer, amp: bool) -> float:
        n = m.n_input_frames
        x, y = m.transform(xs[:, 6 - n:6]), m.transform(xs[:, 6:])
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            z, loss = x, 0.0
            for k in range(6):
                out = m(z)
                loss = loss + (out[:, 0] - y[:, k]).square().mean()
                z = torch.cat([z[:, 1:], out.detach()], 1)
        (loss / 6).sqrt().backward()
        opt.step()
        return float(loss.detach())

    print("| model (CPU config widths) | float32 s/step | bfloat16 autocast s/step | speed-up |")
    print("|---|---|---|---|")
    for name, kw in (("lupin", {"base_channels": 16}), ("rainnet", {"base_channels": 16})):
        t = {}
        for amp in (False, True):
            torch.manual_seed(0)
            m = create_model(name, **kw)
            if name == "lupin":
                m.freeze_motion(True)
            m.train()
            opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], 1e-4)
            step(m, opt, amp)
            ts = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                step(m, opt, amp)
                ts.append(time.perf_counter() - t0)
            t[amp] = float(np.median(ts))
        print(f"| {name} ({kw['base_channels']}...) | {t[False]:.2f} | {t[True]:.2f} | {t[False] / t[True]:.2f}x |")


if __name__ == "__main__":
    main()
