"""Klemp (2011) resting atmosphere over the whole 5 h of the test, NEUVE against SLEVE with two sets of decay scales.

RESULTS §7-§7g score the spurious max |w| over 1 h. This script runs the test's 5 h (reference note §5) at one shared
time step for: the shipped NEUVE, plain SLEVE (n = 1) with the resting test's decay scales of Shaw & Weller
(s1 = 4 km, s2 = 1 km), SLEVE2 (4 km, 1 km, n = 1.35) and SLEVE with its default scales (10 km, 2.5 km, the Breeze
Schär example). The default dt 0.45 s is below every one's stability limit (SLEVE with 4/1 km scales: 0.48 s).
Prints max |w| over the first hour, over the run and at its end (sampled every ``max_abs_w_sampled_every_steps``
steps, as ``skydiff.dycore.run`` records it) and the ratios to NEUVE.

    OMP_NUM_THREADS=1 python benchmarks/dycore_klemp_5h.py [--hours 5] [--dt 0.45] [--eager] [--diffusion K]
        [--sleve S1_KM S2_KM N ...] [--only LABEL_START ...] [--neuve-weights PATH]

"NEUVE (shipped)" is the NEUVE shipped at the time of the run: since 2026-11-29 (RESULTS §7k) the fine-tuned v5;
``--neuve-weights benchmarks/weights/neuve_v5`` gives the NEUVE of §7h-§7j.

``--diffusion K``: with the explicit diffusion of ``run(..., diffusion=K)`` (m^2/s; RESULTS §7i), as Klemp (2011) ran
the test with eddy diffusion.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import skydiff.dycore as dycore
from skydiff.dycore.coordinates import Sleve2

COORDINATES = {
    "NEUVE (shipped)": "neuve",
    "SLEVE, s1 4 km, s2 1 km": lambda: Sleve2(4000.0, 1000.0, 1.0),
    "SLEVE2 (4 km, 1 km, n 1.35)": "sleve2",
    "SLEVE, defaults (10 km, 2.5 km)": "sleve",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hours", type=float, default=5.0)
    p.add_argument("--dt", type=float, default=0.45)
    p.add_argument("--eager", action="store_true", help="do not compile the time step")
    p.add_argument("--diffusion", type=float, default=0.0, help="explicit diffusion K in m^2/s (default 0: none)")
    p.add_argument("--sleve", type=float, nargs=3, action="append", default=[], metavar=("S1_KM", "S2_KM", "N"),
                   help="also run SLEVE2 with these decay scales (km) and exponent (repeatable)")
    p.add_argument("--neuve-weights", default=None, metavar="PATH",
                   help="NEUVE weights to run in place of the shipped ones (e.g. runs/dycore/neuve_v6)")
    p.add_argument("--only", nargs="+", default=None, metavar="LABEL_START",
                   help="run only the coordinates whose label starts with one of these (e.g. NEUVE); NEUVE always")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    coordinates = {k: v for k, v in COORDINATES.items()
                   if args.only is None or k.startswith("NEUVE") or any(k.startswith(o) for o in args.only)}
    if args.neuve_weights is not None:  # (the label keeps "NEUVE" first: the ratios are to it)
        from skydiff.registry import load_model

        del coordinates["NEUVE (shipped)"]
        neuve = f"NEUVE ({args.neuve_weights})"
        coordinates = {neuve: (lambda: load_model(args.neuve_weights).double()), **coordinates}
    for s1, s2, n in args.sleve:
        coordinates[f"SLEVE2 ({s1:g} km, {s2:g} km, n {n:g})"] = (lambda a=s1, b=s2, c=n: Sleve2(a * 1e3, b * 1e3, c))
    rows = {}
    case = dycore.cases.get_case("klemp2011")
    for label, coord in coordinates.items():
        model, _ = dycore.cases.build(case, dycore.coordinates.make_coordinate(coord) if isinstance(coord, str)
                                      else coord())
        zc, slope = model.geom.z_c.detach(), model.geom.slope_u.detach().abs()
        print(f"{label}: max |dz/dx| of the coordinate surfaces {float(slope[(zc > 1100) & (zc < 1800)].max()):.3f} "
              f"between 1.1 and 1.8 km, {float(slope.max()):.3f} overall", flush=True)
        t0 = time.perf_counter()
        ds = dycore.run("klemp2011", coord() if callable(coord) else coord, hours=args.hours, dt=args.dt,
                        compile=not args.eager, diffusion=args.diffusion)
        w, t = ds["max_abs_w"].values, ds["time"].values
        half_hours = [float(w[(t > a) & (t <= a + 1800.0)].max()) for a in np.arange(0.0, t[-1], 1800.0)]
        print(f"  max |w| per 30 min: {', '.join(f'{v:.3f}' for v in half_hours)}", flush=True)
        first_hour = w[: np.searchsorted(t, 3600.0, side="right")]
        rows[label] = (float(first_hour.max()), float(w.max()), float(w[-1]))
        print(f"{label}: {time.perf_counter() - t0:.0f} s; max |w| 1 h {rows[label][0]:.3f}, over the run "
              f"{rows[label][1]:.3f}, at the end {rows[label][2]:.3f} m/s", flush=True)
    ref = next(v for k, v in rows.items() if k.startswith("NEUVE"))
    print(f"\n| Klemp 2011, dt {args.dt:g} s, {args.hours:g} h, diffusion {args.diffusion:g} m²/s | max \\|w\\| 1 h | "
          "over the run | at the end | NEUVE better by (1 h / run) |\n|---|---|---|---|---|")
    for label, (h1, run, end) in rows.items():
        ratio = "—" if label.startswith("NEUVE") else f"{h1 / ref[0]:.2f}× / {run / ref[1]:.2f}×"
        print(f"| {label} | {h1:.3f} | {run:.3f} | {end:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
