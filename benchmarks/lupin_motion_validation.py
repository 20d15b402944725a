#!/usr/bin/env python
"""LUPIN's learned motion on the *validation* part: the last frame extrapolated along the (Gaussian-blurred, as at
inference) motion of an MF-U-Net, without the AF-U-Net tendency, against pysteps' Lucas-Kanade extrapolation.

Separates LUPIN's motion from its tendency: if ``lupin`` scores like its motion-only row, the tendency adds nothing.
Never run on the test part (model selection).

Usage (from the repository root; ~2-4 min on 2 cores)::

    python benchmarks/lupin_motion_validation.py NAME=WEIGHTS [NAME=WEIGHTS ...] [--full NAME=WEIGHTS] [--threads 2]

``WEIGHTS`` is a LUPIN ``.safetensors`` (stem) of any stage, e.g. ``runs/cpu/lupin_motion_teacher/lupin``;
``--full`` also scores the complete LUPIN with those weights (model ``lupin``).
"""

from __future__ import annotations

import argparse
import os
import warnings

import torch

from skydiff import advect
from skydiff.nowcast.data import shared_split
from skydiff.nowcast.evaluation import evaluate
from skydiff.nowcast.interface import register_model
from skydiff.nowcast.models.blocks import gaussian_blur
from skydiff.registry import load_model


def motion_only(path: str):  # type: ignore[no-untyped-def]
    m = load_model(path).eval()

    def fn(x, lt, **kw):  # type: ignore[no-untyped-def]
        x = torch.nan_to_num(x[-m.n_input_frames:].float(), 0.0)
        with torch.no_grad():
            mf = gaussian_blur(m.motion(x[None]), m.motion_blur_sigma, m.motion_blur_size)
            out = advect(x[-1][None, None], mf, lt, outval=0.0)
        return out.reshape(lt, *x.shape[1:]), mf[0]

    return fn, m.n_input_frames


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="+", metavar="NAME=WEIGHTS")
    p.add_argument("--full", default=None, metavar="NAME=WEIGHTS")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=os.environ.get("SKYDIFF_DATA", "../shared/data"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = []
    for item in args.models:
        tag, path = item.split("=", 1)
        fn, n = motion_only(path)
        register_model(tag, fn, min_frames=n, description=f"motion only of {path}")
        names.append(tag)
    weights = {}
    if args.full:
        weights["lupin"] = args.full.split("=", 1)[1]
        names.append("lupin")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ev = evaluate(shared_split(args.data)["validation"], ["extrapolation"] + names, stride=2, crop=256,
                      weights=weights)
    print(f"validation part, {len(ev.cases)} cases, 256 x 256 centre crops, {args.threads} threads\n")
    print("CSI at 1 mm/h\n\n" + ev.table("csi", 1.0) + "\n\nETS at 5 mm/h\n\n" + ev.table("ets", 5.0))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
