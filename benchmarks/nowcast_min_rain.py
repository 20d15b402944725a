#!/usr/bin/env python
"""Shipped neural nowcasts with their light "drizzle" cut at the output, on the *validation* part (never the test part).

The networks' outputs are rarely exactly 0: on a KNMI validation case LUPIN put 0.01-0.1 mm/h on 41 % of the
pixels (extrapolation: 2 %), which raises its MAE where the truth is dry. This scores each model with every output
below ``X`` mm/h set to 0 — after the network, not fed back to the next lead, so CSI/ETS at thresholds > X do not
change — side by side with the uncut model and LK extrapolation (validation part, 256 x 256 centre crops, every 2
steps), to choose ``X`` (``predict(..., min_rain=X)``).

Usage::

    python benchmarks/nowcast_min_rain.py --models lupin rainnet lcnn --cuts 0.05 0.1 0.2 --threads 2
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from lupin_motion_validation import (  # (benchmarks/: the script's folder)
    evaluate_parts,
    mean_line,
    part_arguments,
    shipped_with,
)

from skydiff.nowcast.interface import register_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lupin", "rainnet", "lcnn"])
    p.add_argument("--cuts", type=float, nargs="+", default=[0.05, 0.1, 0.2], help="X in mm/h (0 = uncut is added)")
    part_arguments(p, threads=2, parts=("validation",))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = []
    for model in args.models:
        for cut in [0.0, *args.cuts]:
            fn, n = shipped_with(model, min_rain=cut)  # explicit: the cards' default cut is not inherited
            tag = f"{model}_cut{cut:g}"
            register_model(tag, fn, min_frames=n, description=f"shipped {model}, outputs < {cut:g} mm/h set to 0")
            names.append(tag)
    ev = evaluate_parts(p, args, names)
    print(f"{args.part} part, {len(ev.cases)} cases, {args.crop} x {args.crop} centre crops, {args.threads} threads\n")
    for sc in ("mae", "mse", "me"):
        print(f"{sc.upper()}\n\n" + ev.table(sc, digits=4) + "\n")
    print("CSI at 1 mm/h\n\n" + ev.table("csi", 1.0) + "\n")
    print(mean_line(ev))
    print("mean MAE / MSE / ME over the leads: " + "; ".join(
        f"{m} {np.nanmean(ev.score(m, 'mae')):.6f} / {np.nanmean(ev.score(m, 'mse')):.6f} / "
        f"{np.nanmean(ev.score(m, 'me')):+.5f}" for m in ev.models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
