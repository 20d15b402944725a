"""Seconds per downscaled field and member of the shipped ``edm-radar`` in full precision and with the U-Net in
bfloat16 (``EDMDownscaler.sample(precision="bfloat16")``), side by side in one process.

Tiles: the first ``--per-source`` tiles of each source in ``--tiles-npz`` (an .npz with ``lo`` and ``source``, as
written by ``downscale_radar.py --save-tiles``); each tile sampled with its product label. The precisions alternate,
one warm-up call each, then ``--repeats`` timed calls each; medians printed. Results in benchmarks/RESULTS.md §8.

    python benchmarks/downscale_precision_speed.py --tiles-npz runs/ds_tune/val10_sub200_tiles.npz
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from skydiff.downscale.data import radar_label
from skydiff.registry import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles-npz", required=True)
    ap.add_argument("--per-source", type=int, default=32)
    ap.add_argument("--members", type=int, default=2)
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = create_model("edm-radar", pretrained=True).eval()
    z = np.load(a.tiles_npz)
    src = z["source"].astype(str)
    idx = np.concatenate([np.where(src == s)[0][:a.per_source] for s in np.unique(src)])
    lo = torch.from_numpy(z["lo"][idx]).float()
    lab = [radar_label(s) for s in src[idx]]

    def run(precision: str) -> float:
        t = time.perf_counter()
        m.sample(lo, members=a.members, steps=a.steps, seed=0, progress=False, label=lab, batch_size=a.batch,
                 precision=precision)
        return (time.perf_counter() - t) / (a.members * len(idx))

    times: dict[str, list[float]] = {"full": [], "bfloat16": []}
    for p in times:
        run(p)  # warm-up
    for _ in range(a.repeats):
        for p, ts in times.items():
            ts.append(run(p))
    print(f"{len(idx)} tiles, {a.members} members, {a.steps} steps, batch {a.batch}, {a.threads} threads")
    for p, ts in times.items():
        print(f"{p}: median {np.median(ts):.4f} s per field and member ({', '.join(f'{t:.4f}' for t in ts)})")
    print(f"bfloat16 speed-up: {np.median(times['full']) / np.median(times['bfloat16']):.2f}x")


if __name__ == "__main__":
    main()
