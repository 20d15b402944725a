#!/usr/bin/env python
"""The shipped LUPIN with another optical-flow prior (``motion_prior``), side by side with the shipped one and with
extrapolation along both motions, on the *validation* part (or a training-part evening left out of training; never
the test part: this chooses a default).

The shipped LUPIN moves the rain along pysteps' Lucas-Kanade flow (``motion_prior="lk"``, ``grid_stride=4``) and
adds its AF-U-Net's tendency; skydiff's 4D-Var motion (``skydiff.motion.fourdvar``) extrapolated better than LK on
full KNMI grids (RESULTS §4). This scores the same weights with ``motion_prior=METHOD`` (the method's default frames
and options), reporting the mean time of a nowcast.

Usage::

    python benchmarks/lupin_prior_validation.py --prior 4dvar --threads 2
    python benchmarks/lupin_prior_validation.py --prior 4dvar --prior-kwargs '{"finest_level": 2}' --threads 2
    python benchmarks/lupin_prior_validation.py --prior 4dvar --part train --sources "KNMI 2021-01-01-2005" --crop 400
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from lupin_motion_validation import (  # (benchmarks/: the script's folder)
    cases_line,
    evaluate_parts,
    mean_line,
    part_arguments,
)

from skydiff import advect
from skydiff.nowcast.interface import register_model
from skydiff.nowcast.models import create_model

TIMES: dict[str, list[float]] = {}


def timed(tag: str, fn):  # type: ignore[no-untyped-def]
    def run(x, lt, **kw):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        out = fn(x, lt)
        TIMES.setdefault(tag, []).append(time.perf_counter() - t0)
        return out

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prior", default="4dvar", help="motion_prior of the candidate (a skydiff.motion method)")
    p.add_argument("--prior-kwargs", default="{}", metavar="JSON",
                   help="the candidate's motion_prior_kwargs, e.g. '{\"finest_level\": 2}' (the shipped LUPIN is "
                        "the comparator either way)")
    p.add_argument("--prior-frames", type=int, default=None,
                   help="the candidate's motion_prior_frames (default: the method's, 4 for 4dvar)")
    part_arguments(p, threads=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    shipped = create_model("lupin", pretrained=True).eval()
    cand = create_model("lupin", pretrained=True, motion_prior=args.prior, motion_prior_frames=args.prior_frames,
                        motion_prior_kwargs=json.loads(args.prior_kwargs)).eval()

    def lupin(m):  # type: ignore[no-untyped-def]
        def fn(x, lt):  # type: ignore[no-untyped-def]
            out, motion = m.predict(torch.as_tensor(x), lt, return_motion=True)
            return torch.as_tensor(out), torch.as_tensor(motion)
        return fn

    def extrapolation(m):  # type: ignore[no-untyped-def]
        def fn(x, lt):  # type: ignore[no-untyped-def]
            x = torch.nan_to_num(torch.as_tensor(x[-m.n_input_frames:]).float(), 0.0)
            v = m.estimate_prior(x[None])  # the flow the LUPIN uses (not blurred)
            return advect(x[-1][None, None], v, lt, outval=0.0).reshape(lt, *x.shape[1:]), v[0]
        return fn

    names = []
    for tag, fn in ((f"extrapolation_{args.prior}", extrapolation(cand)), ("lupin_shipped", lupin(shipped)),
                    (f"lupin_{args.prior}", lupin(cand))):
        register_model(tag, timed(tag, fn), min_frames=6, description=tag)
        names.append(tag)
    ev = evaluate_parts(p, args, names)
    print(cases_line(args, ev))
    print("CSI at 1 mm/h\n\n" + ev.table("csi", 1.0) + "\n\nETS at 5 mm/h\n\n" + ev.table("ets", 5.0) + "\n")
    print("MAE\n\n" + ev.table("mae", digits=4) + "\n")
    print(mean_line(ev))
    print("mean seconds per nowcast: " + "; ".join(f"{k} {np.mean(v):.2f}" for k, v in TIMES.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
