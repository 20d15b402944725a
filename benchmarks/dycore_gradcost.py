"""Cost of a gradient through the dycore vs a forward run, and backprop memory (with / without checkpointing).

Usage::

    python benchmarks/dycore_gradcost.py --steps 600 --chunk 50

Klemp-2011 training configuration (30 km x 20 km, 60 x 40 cells, dt 0.5 s, float64, NEUVE coordinate). Every mode
runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own; printed: wall time,
time relative to the plain forward run, and the peak-memory increase over the state before integrating.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(mode: str, steps: int, chunk: int) -> dict[str, float]:
    import torch

    from skydiff.dycore.cases import build, get_case
    from skydiff.dycore.coordinates import Neuve
    from skydiff.dycore.equations import full_w
    from skydiff.dycore.stepping import integrate_loss
    from skydiff.dycore.training import TRAIN_GRID

    torch.set_num_threads(1)
    torch.manual_seed(0)
    coord = Neuve().double()
    case = get_case("klemp2011", **TRAIN_GRID)
    model, state = build(case, coord, torch.float64)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()

    def lf(s):  # noqa: ANN001, ANN202
        return full_w(s, model.geom).pow(2).mean()

    if mode == "forward":
        with torch.no_grad():
            integrate_loss(state, model, 0.5, steps, lf, chunk=chunk, every=10, use_checkpoint=False)
    else:
        _, loss = integrate_loss(state, model, 0.5, steps, lf, chunk=chunk, every=10, use_checkpoint=(mode == "checkpoint"))
        loss.backward()
    dt = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"time_s": dt, "peak_rss_increase_mb": (rss1 - rss0) / 1024.0, "steps": steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mode:
        print(json.dumps(one(a.mode, a.steps, a.chunk)))
        return
    res = {}
    for mode in ("forward", "checkpoint", "plain"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--steps", str(a.steps), "--chunk", str(a.chunk)],
                             capture_output=True, text=True, check=True)
        res[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(mode, res[mode], flush=True)
    f = res["forward"]["time_s"]
    print(f"\n{a.steps} steps (60 x 40 cells, float64, 1 thread): forward {f:.1f} s ({a.steps / f:.0f} steps/s)")
    print("| mode | time (s) | x forward | peak memory increase (MB) |")
    print("|---|---|---|---|")
    for mode, label in (("forward", "forward, no grad"), ("checkpoint", f"forward + backward, checkpoint every {a.chunk} steps"),
                        ("plain", "forward + backward, no checkpointing")):
        r = res[mode]
        print(f"| {label} | {r['time_s']:.1f} | {r['time_s'] / f:.2f} | {r['peak_rss_increase_mb']:.0f} |")


if __name__ == "__main__":
    main()
