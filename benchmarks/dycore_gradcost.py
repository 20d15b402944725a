"""Cost of a gradient through the dycore vs a forward run, and backprop memory (with / without checkpointing).

Usage::

    python benchmarks/dycore_gradcost.py --steps 600 --chunk 50

Klemp-2011 training configuration (30 km x 20 km, 60 x 40 cells, dt 0.5 s, float64, NEUVE coordinate). Every mode
runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own; printed: wall time,
time relative to the plain forward run, and the peak-memory increase over the state before integrating.

``--repeat N`` runs each mode N times in its process and also prints the fastest of runs 2 ... N ("warm"): the
first run of a gradient page-faults the memory of its autograd tape in (measured: its forward part slows from
~3.5 to ~12 ms per step after ~150 steps on 160 x 40 cells), later runs reuse that memory, as the iterations of a
training do.

``--compile`` also times the same three modes with the time step compiled (``torch.compile``,
``skydiff.dycore.stepping.step_function``); each compiled mode is first compiled on a 2-step run of the same
configuration, outside the timing (compilation: ~10 s per mode here).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(mode: str, steps: int, chunk: int, compile: bool = False, length: float | None = None, nz: int | None = None,
        threads: int = 1, repeat: int = 1, device: str = "cpu") -> dict[str, float]:
    import contextlib

    import torch

    from skydiff.dycore.cases import build, get_case
    from skydiff.dycore.coordinates import Neuve
    from skydiff.dycore.equations import full_w
    from skydiff.dycore.stepping import integrate_loss
    from skydiff.dycore.training import TRAIN_GRID

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    coord = Neuve().double().to(device)
    cuda = torch.device(device).type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()
    grid = dict(TRAIN_GRID)
    if length is not None:
        grid["length"] = float(length)
    if nz is not None:
        grid["nz"] = int(nz)
    case = get_case("klemp2011", **grid)
    def prepare(m, st):  # noqa: ANN001, ANN202
        """mode "state": gradient with respect to the initial state only (metric terms, reference and sponge
        detached, as in data assimilation); the other modes differentiate with respect to NEUVE's weights."""
        if mode != "state":
            return m, st
        m = m._replace(geom=type(m.geom)(*(t.detach() for t in m.geom)), ref=type(m.ref)(*(t.detach() for t in m.ref)),
                       sponge=type(m.sponge)(*(t.detach() for t in m.sponge)))
        return m, type(st)(*(t.detach().requires_grad_() for t in st))

    if compile:  # compile outside the timing, on 2 steps of the same configuration
        m2, s2 = prepare(*build(case, coord, torch.float64, device))
        with torch.no_grad() if mode == "forward" else contextlib.nullcontext():
            _, l2 = integrate_loss(s2, m2, 0.5, 2, lambda s: full_w(s, m2.geom).pow(2).mean(), chunk=chunk, every=1,
                                   use_checkpoint=(mode == "checkpoint"), compile=True)
            if mode != "forward":
                l2.backward()
        coord.zero_grad()
    model, state = prepare(*build(case, coord, torch.float64, device))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        sync()
        torch.cuda.reset_peak_memory_stats()
        mem0 = torch.cuda.memory_allocated()
    times = []
    for it in range(max(1, repeat)):  # repeat > 1: later iterations reuse the memory the first one faulted in
        if it:
            model, state = prepare(*build(case, coord, torch.float64, device))
        sync()
        t0 = time.perf_counter()

        def lf(s, model=model):  # noqa: ANN001, ANN202
            return full_w(s, model.geom).pow(2).mean()

        if mode == "forward":
            with torch.no_grad():
                integrate_loss(state, model, 0.5, steps, lf, chunk=chunk, every=10, use_checkpoint=False,
                               compile=compile)
        else:
            _, loss = integrate_loss(state, model, 0.5, steps, lf, chunk=chunk, every=10,
                                     use_checkpoint=(mode == "checkpoint"), compile=compile)
            loss.backward()
            del loss
        sync()
        times.append(time.perf_counter() - t0)
        if it == 0:  # the peak memory of one gradient, not of the rebuilds of later runs
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if cuda:  # GPU memory, not the host's
                rss1 = rss0 + (torch.cuda.max_memory_allocated() - mem0) / 1024.0
        coord.zero_grad()
        del model, state
    return {"time_s": times[0], "warm_s": min(times[1:]) if len(times) > 1 else None,
            "peak_rss_increase_mb": (rss1 - rss0) / 1024.0, "steps": steps, "cells": case.grid.nx * case.grid.nz}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--chunk", type=int, default=50)
    p.add_argument("--compile", action="store_true", help="also time the compiled time step")
    p.add_argument("--length", type=float, default=None, help="domain length in m (default: the training grid's 30 km)")
    p.add_argument("--nz", type=int, default=None, help="number of levels (default 40)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda; on cuda the memory column is GPU memory")
    p.add_argument("--modes", nargs="+", default=["forward", "checkpoint", "plain"],
                   choices=["forward", "checkpoint", "plain", "state"],
                   help="state: gradient w.r.t. the initial state only, no checkpointing")
    p.add_argument("--eager-forward-only", action="store_true",
                   help="eager: time the forward run only (its gradient needs ~0.7 MB per step and 1000 cells)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run each mode N times in its process; also print the fastest of runs 2..N (warm memory)")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    p.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mode:
        print(json.dumps(one(a.mode, a.steps, a.chunk, a.compiled, a.length, a.nz, a.threads, a.repeat, a.device)))
        return
    res = {}
    variants = [False, True] if a.compile else [False]
    for comp in variants:
        for mode in ["forward"] + [m for m in a.modes if m != "forward" and (comp or not a.eager_forward_only)]:
            cmd = [sys.executable, __file__, "--mode", mode, "--steps", str(a.steps), "--chunk", str(a.chunk),
                   "--threads", str(a.threads), "--repeat", str(a.repeat), "--device", a.device]
            cmd += (["--length", str(a.length)] if a.length is not None else []) + (["--nz", str(a.nz)] if a.nz else [])
            out = subprocess.run(cmd + (["--compiled"] if comp else []), capture_output=True, text=True, check=True)
            res[(comp, mode)] = json.loads(out.stdout.strip().splitlines()[-1])
            print("compiled" if comp else "eager", mode, res[(comp, mode)], flush=True)
    f0 = res[(False, "forward")]["time_s"]
    cells = res[(False, "forward")]["cells"]
    print(f"\n{a.steps} steps ({cells} cells, float64, {a.device}, {a.threads} thread(s)): eager forward {f0:.1f} s "
          f"({a.steps / f0:.0f} steps/s)")
    warm = a.repeat > 1
    print("| time step | mode | time (s) | x forward (same time step) | x eager forward | peak memory increase (MB) |"
          + (" warm time (s) | warm x warm forward |" if warm else ""))
    print("|---|---|---|---|---|---|" + ("---|---|" if warm else ""))
    for comp in variants:
        f = res[(comp, "forward")]["time_s"]
        for mode, label in (("forward", "forward, no grad"),
                            ("checkpoint", f"forward + backward, checkpoint every {a.chunk} steps"),
                            ("plain", "forward + backward, no checkpointing"),
                            ("state", "forward + backward w.r.t. the initial state only, no checkpointing")):
            if (comp, mode) not in res:
                continue
            r = res[(comp, mode)]
            extra = ""
            if warm:
                fw = res[(comp, "forward")]["warm_s"]
                extra = f" {r['warm_s']:.2f} | {r['warm_s'] / fw:.2f} |"
            print(f"| {'compiled' if comp else 'eager'} | {label} | {r['time_s']:.2f} | {r['time_s'] / f:.2f} | "
                  f"{r['time_s'] / f0:.2f} | {r['peak_rss_increase_mb']:.0f} |" + extra)


if __name__ == "__main__":
    main()
