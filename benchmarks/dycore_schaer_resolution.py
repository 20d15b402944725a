"""What limits the Schär w error: vertical and horizontal resolution, mountain height (finite amplitude), coordinate.

    python benchmarks/dycore_schaer_resolution.py sleve:40:500:0.65 sleve:80:500:0.35 btf:80:500:0.35 \
        sleve:80:500:0.35:25 --out benchmarks/results/dycore_schaer_resolution.json

Each positional argument is ``COORDINATE:NZ:DX:DT[:H0]`` (COORDINATE a name or the weights stem of a NEUVE run
such as ``runs/dycore/neuve_schaer``; levels under the 20 km lid, dx in m, time step in s,
mountain height in m, default 250): a 5 h Schär run (``skydiff.dycore.run("schaer", ..., compile=True)``, float64,
one torch thread) scored like ``benchmarks/dycore_compare.py``: relative l2 error of w against the linear analytic
solution over |x| <= 20 km, 1-10 km (``w_error``) and 0-10 km. The error is relative, so runs with different
mountain heights compare directly: at h0 = 25 m the flow is close to linear and what is left is the solver's error;
at 250 m (the standard case, N h0 / U = 0.25) finite-amplitude effects add to it. Rows are printed as they finish
and written (atomically) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def one(spec: str) -> dict[str, object]:
    from skydiff.dycore import run
    from skydiff.dycore.cases import w_error

    parts = spec.split(":")
    if len(parts) not in (4, 5):
        raise SystemExit(f"expected COORDINATE:NZ:DX:DT[:H0], got {spec!r}")
    coord, nz, dx, dt = parts[0], int(parts[1]), float(parts[2]), float(parts[3])
    h0 = float(parts[4]) if len(parts) == 5 else 250.0
    t0 = time.perf_counter()
    c: object = coord
    if "/" in coord:  # a weights stem of a NEUVE run, e.g. runs/dycore/neuve_schaer
        from skydiff.registry import load_model

        c = load_model(coord).double()
    ds = run("schaer", c, hours=5, dt=dt, nz=nz, dx=dx, h0=h0, compile=True)
    x, z = ds.x.values[None, :], ds.height.values
    return {"coordinate": coord, "nz": nz, "dz_m": 20000.0 / nz, "dx_m": dx, "dt_s": dt, "h0_m": h0,
            "w_error_1_10km": float(ds.attrs["w_error"]),
            "w_error_0_10km": float(w_error(ds.w.values, ds.w_linear.values, x, z, zlim=(0.0, 10000.0))),
            "dt_limit_s": float(ds.attrs["dt_limit_s"]), "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="COORDINATE:NZ:DX:DT[:H0]")
    p.add_argument("--out", default="runs/dycore/schaer_resolution.json")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rows = []
    for spec in a.runs:
        rows.append(one(spec))
        print(json.dumps(rows[-1]), flush=True)
    from skydiff.io import atomic_path

    with atomic_path(a.out) as tmp:
        tmp.write_text(json.dumps({"runs": a.runs, "rows": rows, "torch": torch.__version__,
                                   "time": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=2))


if __name__ == "__main__":
    main()
