#!/usr/bin/env python
"""Downscaling whole radar composites (not 64 x 64 tiles): one network pass vs overlapping tiles, and the dry trim.

The shipped radar downscaler was trained on 32 x 32 crops and scored on 64 x 64 tiles. Its U-Net normalises with
GroupNorm over the whole input, so one pass over a whole composite (mostly dry, 100+ times a tile's area) sees other
statistics than in training. This takes 1-km radar frames, block-averages them to 4 km, downscales them back with
``skydiff.downscale.downscale`` in three configurations side by side, and scores them against the 1-km truth:

- ``one pass, whole grid``: ``trim_dry=False, tile=None`` (what ``downscale`` did before 2026-11-27);
- ``one pass, dry trimmed``: ``tile=None`` (only the box around the rain, one pass);
- ``tiled, dry trimmed``: the defaults (64 x 64 windows, 16 px overlap, blended at every step; the box around the rain).

Each frame is downscaled with its radar product's label (``knmi-rap``, ``fmi``; ``--no-label``: unknown, the
training mixture, as ``skydiff downscale`` without ``--label``). Usage (the frames are from the test part: reporting
only, nothing here is chosen on them)::

    python benchmarks/downscale_composite.py --members 4 --steps 18 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from skydiff.downscale import downscale
from skydiff.io import read_radar
from skydiff.verify import crps_ensemble, percentile_bias, rapsd_ratio_db

ROOT = Path(__file__).resolve().parent
FRAMES = {  # name: (file, the radar product's label, as the tile benchmark gives every tile of that source)
    "KNMI 2010-08-26 06:00": ("radar/KNMI/2010/08/RAD_NL25_RAP_5min_201008260600.h5", "knmi-rap"),
    "FMI 2017-05-09 11:00": ("radar/fmi/pgm/20170509/201705091100_fmi.radar.composite.lowest_FIN_SUOMI1.pgm.gz", "fmi"),
}
CONFIGS = {
    "one pass, whole grid (before)": {"trim_dry": False, "tile": None},
    "one pass, dry trimmed": {"tile": None},
    "tiled 64 / 16, dry trimmed (default)": {},
}


def block_mean(x: np.ndarray, f: int = 4) -> np.ndarray:
    h, w = (x.shape[0] // f) * f, (x.shape[1] // f) * f
    return x[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-label", action="store_true",
                   help="do not tell the model the radar product (default: knmi-rap / fmi, like the tile benchmark)")
    p.add_argument("--data", default=os.environ.get("SKYDIFF_DATA", "../shared/data"))
    p.add_argument("--out", default=str(ROOT / "results" / "downscale_composite.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    res: dict = {"command": "python benchmarks/downscale_composite.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("members", "steps", "threads"))
        + (" --no-label" if args.no_label else ""),
        "frames": {}}
    for name, (rel, label) in FRAMES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            truth_full = read_radar([str(Path(args.data) / rel)]).values[0]
        valid = np.isfinite(truth_full)
        truth = np.nan_to_num(truth_full)
        lo = block_mean(truth)
        H, W = lo.shape[0] * 4, lo.shape[1] * 4
        truth, valid = truth[:H, :W], valid[:H, :W]
        wet = np.kron(lo > 0, np.ones((4, 4))).astype(bool)
        print(f"\n{name} (label {None if args.no_label else label}): {truth_full.shape} at 1 km -> {lo.shape} at "
              f"4 km; rain on {100 * (lo > 0).mean():.1f} % of the 4-km cells; {args.members} members, {args.steps} "
              f"steps, {args.threads} threads", flush=True)
        print("| configuration | time (s) | mass on wet cells / low-res | p99 / p99.9 bias (wet) | spectrum max|dB| "
              "(>= 2 px) | CRPS on valid pixels (mm/h) |\n|---|---|---|---|---|---|")
        rows = {}
        for cname, kw in CONFIGS.items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ens = downscale(lo, members=args.members, steps=args.steps, seed=0, progress=False,
                                label=None if args.no_label else label, **kw)
            dt = time.perf_counter() - t0
            mass = float(ens[:, wet].sum() / args.members / (16 * lo[lo > 0].sum()))
            pb = percentile_bias(ens[:, valid & wet], truth[valid & wet], (99, 99.9))
            _, db = rapsd_ratio_db(ens, truth)
            crps = float(crps_ensemble(ens[:, valid], truth[valid]))
            b99, b999 = (float(np.asarray(v)) for v in pb.values())
            row = {"seconds": dt, "mass_ratio": mass, "p99_bias": b99, "p99.9_bias": b999,
                   "spectrum_max_abs_db": float(np.max(np.abs(db))), "crps": crps}
            rows[cname] = row
            print(f"| {cname} | {dt:.1f} | {mass:.3f} | {100 * b99:+.1f} / {100 * b999:+.1f} % | "
                  f"{row['spectrum_max_abs_db']:.2f} | {crps:.4f} |", flush=True)
        res["frames"][name] = rows
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
