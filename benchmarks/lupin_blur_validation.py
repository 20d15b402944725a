#!/usr/bin/env python
"""The shipped LUPIN with other motion-blur widths at inference, on the *validation* part (never the test part).

LUPIN extrapolates the last frame along its MF-U-Net motion blurred with a Gaussian of σ = 127 px (the paper's
value); its AF-U-Net was trained behind that blur. This scores the same weights with other σ side by side with LK
extrapolation (validation part, 256 × 256 centre crops, every 2 steps) to see whether σ = 127 is a good choice for
crops of this size.

Usage::

    python benchmarks/lupin_blur_validation.py --sigmas 0 16 32 64 127 --threads 1
"""

from __future__ import annotations

import argparse
import math
import os
import warnings

import torch

from skydiff.nowcast.data import shared_split
from skydiff.nowcast.evaluation import evaluate
from skydiff.nowcast.interface import register_model
from skydiff.nowcast.models import create_model


def with_sigma(sigma: float, weights: str | None = None):  # type: ignore[no-untyped-def]
    m = create_model("lupin", pretrained=weights or True).eval()
    m.motion_blur_sigma = float(sigma)
    m.motion_blur_size = min(255, 2 * math.ceil(3 * sigma) + 1) if sigma > 0 else 1

    def fn(x, lt, **kw):  # type: ignore[no-untyped-def]
        return torch.as_tensor(m.predict(x, lt)), None

    return fn, m.n_input_frames


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sigmas", type=float, nargs="+", default=[0, 16, 32, 64, 127])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--weights", default=None, help="LUPIN weights (default: the shipped ones)")
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--data", default=os.environ.get("SKYDIFF_DATA", "../shared/data"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = []
    for s in args.sigmas:
        fn, n = with_sigma(s, args.weights)
        tag = f"lupin_sigma{s:g}"
        register_model(tag, fn, min_frames=n, description=f"shipped LUPIN, motion blur sigma {s:g} px")
        names.append(tag)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = evaluate(shared_split(args.data)["validation"], ["extrapolation"] + names, stride=args.stride, crop=256)
    print(f"validation part, {len(ev.cases)} cases, 256 x 256 centre crops, {args.threads} threads\n")
    for sc, thr in (("csi", 1.0), ("ets", 5.0), ("csi", 5.0)):
        print(f"{sc.upper()} at {thr:g} mm/h\n\n" + ev.table(sc, thr) + "\n")
    print("MAE (mm/h)\n\n" + ev.table("mae") + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
