#!/usr/bin/env python
"""The shipped LUPIN with other motion-blur widths at inference, on the *validation* part (never the test part).

LUPIN extrapolates the last frame along its MF-U-Net motion blurred with a Gaussian of σ = 127 px (the paper's
value); its AF-U-Net was trained behind that blur. This scores the same weights with other σ side by side with LK
extrapolation (validation part, 256 × 256 centre crops, every 2 steps) to see whether σ = 127 is a good choice for
crops of this size.

Usage::

    python benchmarks/lupin_blur_validation.py --sigmas 0 16 32 64 127 --threads 1
    # the winter check on a training-part evening left out of the LUPIN training (see lupin_motion_validation.py)
    python benchmarks/lupin_blur_validation.py --sigmas 0 16 32 --part train --sources "KNMI 2021-01-01-2005" --crop 400
    # the advection's interpolation (bilinear, as trained, or bicubic) at one blur width
    python benchmarks/lupin_blur_validation.py --sigmas 16 --interps bilinear bicubic
"""

from __future__ import annotations

import argparse
import math

import torch
from lupin_motion_validation import evaluate_parts, mean_line, part_arguments  # (benchmarks/: the script's folder)

from skydiff.nowcast.interface import register_model
from skydiff.nowcast.models import create_model


def with_sigma(sigma: float, weights: str | None = None, interp: str | None = None):  # type: ignore[no-untyped-def]
    m = create_model("lupin", pretrained=weights or True).eval()
    if interp is not None:
        m.interp = interp
    m.motion_blur_sigma = float(sigma)
    m.motion_blur_size = min(255, 2 * math.ceil(3 * sigma) + 1) if sigma > 0 else 1

    def fn(x, lt, **kw):  # type: ignore[no-untyped-def]
        return torch.as_tensor(m.predict(x, lt)), None

    return fn, m.n_input_frames


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sigmas", type=float, nargs="+", default=[0, 16, 32, 64, 127])
    p.add_argument("--interps", nargs="+", default=[None], choices=(None, "bilinear", "bicubic"),
                   help="advection interpolation of the Lagrangian inputs and the extrapolation (default: the model's)")
    p.add_argument("--weights", default=None, help="LUPIN weights (default: the shipped ones)")
    part_arguments(p, threads=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = []
    for s in args.sigmas:
        for interp in args.interps:
            fn, n = with_sigma(s, args.weights, interp)
            tag = f"lupin_sigma{s:g}" + (f"_{interp}" if interp else "")
            register_model(tag, fn, min_frames=n, description=f"shipped LUPIN, motion blur sigma {s:g} px, {interp}")
            names.append(tag)
    ev = evaluate_parts(p, args, names)
    print(f"{args.part} part{' ' + ', '.join(args.sources) if args.sources else ''}, {len(ev.cases)} cases, "
          f"{args.crop} x {args.crop} centre crops, {args.threads} threads\n")
    for sc, thr in (("csi", 1.0), ("ets", 5.0), ("csi", 5.0)):
        print(f"{sc.upper()} at {thr:g} mm/h\n\n" + ev.table(sc, thr) + "\n")
    print("MAE (mm/h)\n\n" + ev.table("mae") + "\n")
    print(mean_line(ev))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
