"""Side-by-side speed and agreement of skydiff.advect and pysteps' semi-Lagrangian extrapolation.

    python benchmarks/advect_speed.py [--data DIR] [--steps 12] [--repeats 7]

On a 765 x 700 KNMI grid (a real rain field and its Lucas-Kanade motion when the shared data is found, otherwise a
synthetic field), 12 lead times: pysteps ``extrapolate`` (numpy float64) against ``skydiff.advect`` with each
backend and dtype, all in one process, interleaved, best-of-N and median wall times. Also forward + backward
(autograd) times and the agreement error with pysteps. Prints a markdown table; ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import skydiff
from skydiff._compat import import_pysteps


def case(data: str | None):
    if data and Path(data, "radar/KNMI/2010/08").is_dir():
        from skydiff.io import read_radar
        from skydiff.motion import estimate

        files = sorted(Path(data, "radar/KNMI/2010/08").glob("RAD_NL25_RAP_5min_2010082603[0-1]*.h5"))[:3]
        da = read_radar(files)
        R = np.nan_to_num(da.values[-1].astype(np.float64), nan=0.0)
        V = estimate(da.values, method="lk")
        return R, V, f"KNMI 2010-08-26 {str(da.time.values[-1])[11:16]} UTC + its LK motion (NaN set to 0)"
    H, W = 765, 700
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W]
    R = rng.gamma(0.5, 2.0, (H, W))
    V = np.stack([3 + np.sin(yy / 50.0), -2 + np.cos(xx / 60.0)])
    return R, V, "synthetic 765 x 700 field, smooth motion"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("SKYDIFF_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import_pysteps()
    import numba
    from pysteps.extrapolation.semilagrangian import extrapolate

    R, V, what = case(args.data)
    H, W = R.shape
    n = args.steps
    print(f"# advect vs pysteps: {what}, {H} x {W}, {n} lead times")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numba {numba.__version__} ({numba.get_num_threads()} threads), "
          f"python {sys.version.split()[0]}")

    ref = extrapolate(R, V, n)
    ref3 = extrapolate(R, V, n, interp_order=3)

    def err(out, r, border=0):
        out = np.asarray(out)
        if border:
            out, r = out[:, border:-border, border:-border], r[:, border:-border, border:-border]
        m = np.isfinite(out) & np.isfinite(r)
        same_mask = bool(np.array_equal(np.isfinite(out), np.isfinite(r))) if not border else None
        return float(np.max(np.abs(out[m] - r[m])) / np.max(np.abs(r[m]))), same_mask

    # every implementation as a closure; all are run round-robin (interleaved) so that drifts in machine load
    # hit them alike, and the best and median of the rounds are reported
    fwd = {"pysteps extrapolate (numpy float64, bilinear)": lambda: extrapolate(R, V, n)}
    fb = {}
    errors = {}
    for backend in ("numba", "torch"):
        for dt in (torch.float32, torch.float64):
            F = torch.tensor(R, dtype=dt)[None, None]
            Vt = torch.tensor(V, dtype=dt)[None]
            name = f"skydiff {backend} {str(dt).replace('torch.', '')}"
            fwd[name] = lambda F=F, Vt=Vt, backend=backend: skydiff.advect(F, Vt, n, backend=backend)
            errors[name] = err(skydiff.advect(F, Vt, n, backend=backend)[0, :, 0].numpy().astype(np.float64), ref)
            Fg = F.clone().requires_grad_()
            Vg = Vt.clone().requires_grad_()

            def fwd_bwd(Fg=Fg, Vg=Vg, backend=backend):
                out = skydiff.advect(Fg, Vg, n, backend=backend, outval=0.0)
                out.sum().backward()
                Fg.grad = None
                Vg.grad = None

            fb[name] = fwd_bwd
    F64 = torch.tensor(R)[None, None]
    V64 = torch.tensor(V)[None]
    cubic = {
        "pysteps interp_order=3": lambda: extrapolate(R, V, n, interp_order=3),
        "skydiff bicubic": lambda: skydiff.advect(F64, V64, n, interp="bicubic"),
    }
    e3, _ = err(skydiff.advect(F64, V64, n, interp="bicubic")[0, :, 0].numpy(), ref3, border=20)

    def rounds(fns, repeats):
        for f in fns.values():
            f()  # warm-up: numba compilation, allocator
        ts = {k: [] for k in fns}
        for _ in range(repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                ts[k].append(time.perf_counter() - t)
        return {k: (min(v), statistics.median(v)) for k, v in ts.items()}

    t_fwd = rounds(fwd, args.repeats)
    t_fb = rounds(fb, max(3, args.repeats // 2))
    t_cub = rounds(cubic, max(3, args.repeats // 3))
    t_ps = t_fwd["pysteps extrapolate (numpy float64, bilinear)"]
    rows = [(k, t_fwd[k], t_fb.get(k), errors.get(k)) for k in fwd]
    t_ps3, t_b3 = t_cub["pysteps interp_order=3"], t_cub["skydiff bicubic"]
    results = {"case": what, "grid": [H, W], "steps": n, "pysteps_s": t_ps[0]}
    for k, tf, tfb, e in rows[1:]:
        results[k] = {"forward_s": tf[0], "fwd_bwd_s": tfb[0], "rel_max_err": e[0], "same_nan_mask": e[1]}

    print()
    print("| implementation | forward best (median) | speed-up vs pysteps | fwd+bwd best | fwd+bwd / fwd | rel. max error vs pysteps |")
    print("|---|---|---|---|---|---|")
    for name, tf, tfb, e in rows:
        sp = t_ps[0] / tf[0]
        fb = f"{tfb[0] * 1e3:.0f} ms" if tfb else "—"
        ratio = f"{tfb[0] / tf[0]:.2f}" if tfb else "—"
        es = "reference" if e is None else f"{e[0]:.1e} (same NaN mask: {e[1]})"
        print(f"| {name} | {tf[0] * 1e3:.0f} ms ({tf[1] * 1e3:.0f}) | {sp:.1f}x | {fb} | {ratio} | {es} |")
    print(f"| pysteps interp_order=3 (cubic spline) | {t_ps3[0] * 1e3:.0f} ms ({t_ps3[1] * 1e3:.0f}) | — | — | — | reference for bicubic |")
    print(f"| skydiff bicubic (torch, float64) | {t_b3[0] * 1e3:.0f} ms ({t_b3[1] * 1e3:.0f}) | {t_ps3[0] / t_b3[0]:.1f}x vs order 3 | — | — | {e3:.1e} (>= 20 px from the border) |")
    results["bicubic"] = {"forward_s": t_b3[0], "pysteps_order3_s": t_ps3[0], "rel_max_err_interior": e3}
    print()
    print("command: python benchmarks/advect_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
