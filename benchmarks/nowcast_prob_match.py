#!/usr/bin/env python
"""Shipped neural nowcasts with and without CDF matching to the last observation (``predict(prob_match="cdf")``),
side by side with LK extrapolation, on the *validation* part (or a training-part evening left out of training;
never the test part: this chooses a default).

Networks trained on a mean loss smooth their peaks and spread drizzle; pysteps' non-parametric CDF matching (as in
its STEPS nowcasts) gives every lead time the intensities of the last observed frame while keeping where the network
put the rain. The cards' other defaults (``min_rain``) stay as shipped.

Usage::

    python benchmarks/nowcast_prob_match.py --models lupin rainnet lcnn --threads 2
    python benchmarks/nowcast_prob_match.py --models lupin --part train --sources "KNMI 2021-01-01-2005" --crop 400
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from lupin_motion_validation import (  # (benchmarks/: the script's folder)
    cases_line,
    evaluate_parts,
    mean_line,
    part_arguments,
    shipped_with,
)

from skydiff.nowcast.interface import register_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["lupin", "rainnet", "lcnn"])
    p.add_argument("--methods", nargs="+", default=["none", "cdf"])
    part_arguments(p, threads=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = []
    for model in args.models:
        for match in args.methods:
            fn, n = shipped_with(model, prob_match=match)
            tag = f"{model}_{match}"
            register_model(tag, fn, min_frames=n, description=f"shipped {model}, prob_match={match}")
            names.append(tag)
    ev = evaluate_parts(p, args, names)
    print(cases_line(args, ev))
    print("CSI at 1 mm/h\n\n" + ev.table("csi", 1.0) + "\n\nETS at 5 mm/h\n\n" + ev.table("ets", 5.0) + "\n")
    for sc in ("mae", "mse"):
        print(f"{sc.upper()}\n\n" + ev.table(sc, digits=4) + "\n")
    print(mean_line(ev))
    print("mean CSI@5 / ETS@1 / MAE / MSE over the leads: " + "; ".join(
        f"{m} {np.nanmean(ev.score(m, 'csi', 5.0)):.4f} / {np.nanmean(ev.score(m, 'ets', 1.0)):.4f} / "
        f"{np.nanmean(ev.score(m, 'mae')):.5f} / {np.nanmean(ev.score(m, 'mse')):.5f}" for m in ev.models))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
