"""Side-by-side comparison of vertical coordinates on the Schär mountain wave and the Klemp (2011) test.

Usage::

    python benchmarks/dycore_compare.py --coordinates btf hybrid sleve sleve2 neuve --schaer-hours 5 --klemp-hours 1

Prints, per coordinate: the relative l2 error of w against the linear analytic solution after the Schär run
(window |x| <= 20 km, 1 km <= z <= 10 km, and 0-10 km), max |w| over the Klemp run (exact answer 0), the
thinnest layer, the stability limit and steps per second. All coordinates use the same time step per case.
Writes ``runs/dycore/compare.json`` and w figures under ``benchmarks/figures/``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from skydiff.dycore.cases import w_error
from skydiff.dycore.interface import plot_w, run

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coordinates", nargs="+", default=["btf", "hybrid", "sleve", "sleve2", "neuve"])
    p.add_argument("--schaer-hours", type=float, default=5.0)
    p.add_argument("--klemp-hours", type=float, default=1.0)
    p.add_argument("--schaer-dt", type=float, default=0.75)
    p.add_argument("--klemp-dt", type=float, default=0.5)
    p.add_argument("--schaer-nz", type=int, default=None, help="levels of the Schär grid (default the case's 40: dz 500 m)")
    p.add_argument("--schaer-dx", type=float, default=None, help="dx of the Schär grid in m (default 500)")
    p.add_argument("--schaer-h0", type=float, default=None, help="Schär mountain height in m (default 250)")
    p.add_argument("--out", default=str(ROOT / "runs" / "dycore" / "compare.json"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--heldout", type=float, nargs=3, action="append", default=[], metavar=("H0", "A", "LAM"),
                   help="also run the Klemp test on this terrain (m), e.g. a NEUVE held-out shape; repeatable")
    p.add_argument("--neuve-weights", default=None, metavar="PATH",
                   help="NEUVE weights (stem or .safetensors) to use for 'neuve' instead of the shipped ones")
    p.add_argument("--no-plots", action="store_true", help="do not write the w figures under benchmarks/figures/")
    p.add_argument("--compile", action="store_true", help="compiled time step (torch.compile; steps/s then include "
                   "~10 s of compilation per run)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.schaer_hours <= 0:
        print("schaer-hours <= 0: Schär run skipped", flush=True)
    rows = []
    for name in args.coordinates:
        row: dict[str, object] = {"coordinate": name}
        coord: object = name
        if name == "neuve" and args.neuve_weights:
            from skydiff.registry import load_model

            coord = load_model(args.neuve_weights).double()
            row["neuve_weights"] = str(args.neuve_weights)
        try:
            if args.schaer_hours <= 0:
                raise RuntimeError("skipped (--schaer-hours 0)")
            grid = {k: v for k, v in (("nz", args.schaer_nz), ("dx", args.schaer_dx), ("h0", args.schaer_h0))
                    if v is not None}
            ds = run("schaer", coord, hours=args.schaer_hours, dt=args.schaer_dt, progress=True, compile=args.compile,
                     **grid)
            x, z = ds.x.values[None, :], ds.height.values
            row.update(
                schaer_w_error=ds.attrs["w_error"],
                schaer_w_error_0_10km=w_error(ds.w.values, ds.w_linear.values, x, z, zlim=(0.0, 10000.0)),
                schaer_dz_min=float((ds.height.values[1:] - ds.height.values[:-1]).min()),
                schaer_dt_limit=ds.attrs["dt_limit_s"],
                schaer_steps_per_s=ds.attrs["steps_per_second"],
                schaer_max_w=float(abs(ds.w.values).max()),
            )
            if not args.no_plots:
                tag = "".join(f"_{k}{v:g}" for k, v in grid.items())  # other grids do not overwrite the default figures
                plot_w(ds, ROOT / "benchmarks" / "figures" / f"dycore_schaer_{name}{tag}.png")
        except Exception as exc:  # report and go on with the other coordinates
            row["schaer_error"] = f"{type(exc).__name__}: {exc}"
        try:
            ds = run("klemp2011", coord, hours=args.klemp_hours, dt=args.klemp_dt, progress=True, compile=args.compile)
            row.update(
                klemp_max_w=ds.attrs["max_abs_w_over_run"],
                klemp_final_max_w=float(ds.max_abs_w.values[-1]),
                klemp_dt_limit=ds.attrs["dt_limit_s"],
                klemp_steps_per_s=ds.attrs["steps_per_second"],
            )
            if not args.no_plots:
                plot_w(ds, ROOT / "benchmarks" / "figures" / f"dycore_klemp_{name}.png")
        except Exception as exc:
            row["klemp_error"] = f"{type(exc).__name__}: {exc}"
        for h0, a, lam in args.heldout:
            key = f"klemp_heldout_{h0:g}_{a:g}_{lam:g}_max_w"
            try:
                ds = run("klemp2011", coord, hours=args.klemp_hours, dt=args.klemp_dt, h0=h0, a=a, lam=lam, progress=True,
                         compile=args.compile)
                row[key] = ds.attrs["max_abs_w_over_run"]
            except Exception as exc:
                row[key + "_error"] = f"{type(exc).__name__}: {exc}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"Schär {args.schaer_hours:g} h at dt {args.schaer_dt:g} s; Klemp {args.klemp_hours:g} h at dt {args.klemp_dt:g} s "
          f"(torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} thread)")
    print("| coordinate | Schär w error (1-10 km) | Schär w error (0-10 km) | Klemp max abs w (m/s) | Schär dt limit (s) | steps/s (Schär) |"
          + "".join(f" Klemp h0={h:g} a={a:g} lam={l:g} max abs w |" for h, a, l in args.heldout))
    print("|---|---|---|---|---|---|" + "---|" * len(args.heldout))
    for r in rows:
        def f(k: str, fmt: str = "{:.4f}") -> str:
            return fmt.format(r[k]) if k in r else "failed"
        print(f"| {r['coordinate']} | {f('schaer_w_error')} | {f('schaer_w_error_0_10km')} | {f('klemp_max_w', '{:.4g}')} | "
              f"{f('schaer_dt_limit', '{:.3f}')} | {f('schaer_steps_per_s', '{:.0f}')} |"
              + "".join(f" {f(f'klemp_heldout_{h:g}_{a:g}_{l:g}_max_w', '{:.4g}')} |" for h, a, l in args.heldout))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"args": vars(args), "rows": rows, "time": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
