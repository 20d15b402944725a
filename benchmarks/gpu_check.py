"""GPU timings of skydiff, side by side with the CPU of the same machine, in one run.

    python benchmarks/gpu_check.py --frames FILE.npz --out DIR [--sections advect nowcast train dycore downscale]

FILE.npz holds ``frames`` (12, H, W) mm/h (NaN = no data) and ``velocity`` (2, H, W) (pysteps LK of the last 3
frames), written on a machine with the shared data (see benchmarks/RESULTS.md §9 for the command), so this
script needs neither pysteps nor the data. Every figure is a median of timed repetitions after warm-up, with
``torch.cuda.synchronize()`` around CUDA work; CPU figures use all the machine's cores (``--cpu-threads``).

Sections:
- ``advect``: ``skydiff.advect`` of a full 765 x 700 field, 12 lead times, float32: forward and forward+backward.
- ``nowcast``: ``skydiff.nowcast.forecast(frames, 6, model=...)`` on the full grid for each shipped network, and
  ``precision="bfloat16"`` for those of ``--bf16``
  (L-CNN with the given LK motion: its optical flow runs on the CPU either way).
- ``train``: one optimiser step (loss, backward, Adam) of each training recipe at its benchmarks/train/*.toml size
  (batch 8 of 128 x 128 crops of synthetic rain), i.e. seconds per step, and the implied time of the stage's
  configured steps. LUPIN stages 1-3, RainNet, SmaAt-UNet.
- ``dycore``: steps per second of the Schär case (default grid, 4x finer grid), float64 and float32; gradient
  cost (backprop through 600 Klemp steps with checkpointing vs a forward run) and peak GPU memory.
- ``downscale``: sampling time per field of the radar model (8 members, 18 steps, 64 x 64 -> 256 x 256).

Results are printed as they come and written to ``DIR/gpu_check.json`` after every section.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import tomllib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timeit(fn: Callable[[], Any], dev: torch.device, reps: int, warm: int = 1, budget: float = 60.0) -> dict[str, float]:
    for _ in range(warm):
        fn()
    _sync(dev)
    ts: list[float] = []
    t_end = time.perf_counter() + budget
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        ts.append(time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            break
    return {"median_s": statistics.median(ts), "min_s": min(ts), "n": len(ts)}


def devices(a: argparse.Namespace) -> list[torch.device]:
    out = [torch.device("cpu")]
    if torch.cuda.is_available():
        out.append(torch.device("cuda"))
    return out if not a.cuda_only else out[1:]


# ------------------------------------------------------------------------------------------------------------------

def sec_advect(a: argparse.Namespace, data: dict[str, np.ndarray]) -> dict[str, Any]:
    import skydiff

    R = torch.from_numpy(np.nan_to_num(data["frames"][-1])).float()[None, None]
    V = torch.from_numpy(data["velocity"]).float()[None]
    res: dict[str, Any] = {}
    for dev in devices(a):
        f, v = R.to(dev), V.to(dev)
        res[f"{dev.type}_forward"] = timeit(lambda: skydiff.advect(f, v, 12), dev, a.reps)

        def fb() -> None:
            ff = f.clone().requires_grad_(True)
            vv = v.clone().requires_grad_(True)
            skydiff.advect(ff, vv, 12, backend="torch").sum().backward()

        res[f"{dev.type}_fwd_bwd"] = timeit(fb, dev, a.reps)
    return res


def sec_nowcast(a: argparse.Namespace, data: dict[str, np.ndarray]) -> dict[str, Any]:
    from skydiff.nowcast import forecast

    x = torch.from_numpy(data["frames"]).float()
    v = torch.from_numpy(data["velocity"]).float()
    res: dict[str, Any] = {"shape": list(x.shape)}
    for model in a.models:
        for dev in devices(a):
            xd, vd = x.to(dev), v.to(dev)
            # L-CNN (LK) and the shipped LUPIN (4D-Var) move the rain along a motion: given here (LK is CPU work
            # either way, and the GPU image may lack pysteps), so these rows time the rest of the nowcast; the
            # "lupin_own_motion" rows below add LUPIN's own 4D-Var estimate (torch: it runs on the GPU too)
            kw = {"velocity": vd} if model in ("lcnn", "extrapolation", "lupin") else {}
            for prec in (["full", "bfloat16"] if model in a.bf16 else ["full"]):
                pkw = {} if prec == "full" else {"precision": prec}
                with torch.no_grad():
                    t = timeit(lambda: forecast(xd, 6, model=model, **kw, **pkw), dev,
                               a.reps if dev.type == "cuda" else 2, budget=40.0 if dev.type == "cuda" else 15.0)
                key = f"{model}_{dev.type}" + ("" if prec == "full" else f"_{prec}")
                res[key] = t
                print(f"  nowcast {model:13s} {dev.type:4s} {prec:8s} {t['median_s']:.3f} s", flush=True)
    if "lupin" in a.models:
        for dev in devices(a):
            with torch.no_grad():
                t = timeit(lambda: forecast(x.to(dev), 6, model="lupin"), dev, a.reps if dev.type == "cuda" else 2,
                           budget=60.0 if dev.type == "cuda" else 30.0)
            res[f"lupin_own_motion_{dev.type}"] = t
            print(f"  nowcast lupin + its 4D-Var motion {dev.type:4s} {t['median_s']:.3f} s", flush=True)
    return res


def _batch(n_in: int, n_out: int, B: int = 8, size: int = 128, seed: int = 0) -> dict[str, torch.Tensor]:
    from skydiff.synthetic import rain_sequence

    seqs = [np.asarray(rain_sequence(n_in + n_out, (size, size), seed=seed + i), dtype=np.float32) for i in range(B)]
    s = torch.from_numpy(np.stack(seqs))
    return {"inputs": s[:, :n_in], "targets": s[:, n_in:]}


def sec_train(a: argparse.Namespace, data: dict[str, np.ndarray]) -> dict[str, Any]:
    from skydiff.nowcast.training import NowcastModule, recipe

    res: dict[str, Any] = {}
    for cfg_name in a.train_configs:
        cfg = tomllib.loads((ROOT / "train" / f"{cfg_name}.toml").read_text())
        m = dict(cfg["model"])
        name = m.pop("name")
        t = dict(cfg.get("training", {}))
        if "init_from" in t and name == "lupin":  # the architecture of stages 2/3 comes from stage 1's config
            m = {k: v for k, v in tomllib.loads((ROOT / "train" / "lupin_motion.toml").read_text())["model"].items()
                 if k != "name"}
        keys = set(recipe(name, t.get("stage"))) - {"init_from", "motion_teacher", "teacher_weight", "num_threads"}
        opts = {k: v for k, v in t.items() if k in keys}
        d = cfg["data"]
        batch = _batch(int(d["n_in"]), int(d["n_out"]), int(d["batch_size"]), int(d["crop"][0]))
        for dev in devices(a):
            torch.manual_seed(0)
            mod = NowcastModule(name, m, n_in=int(d["n_in"]), n_out=int(d["n_out"]), **opts).to(dev)
            mod.train()
            opt = torch.optim.Adam([p for p in mod.parameters() if p.requires_grad], lr=1e-4)
            b = {k: v.to(dev) for k, v in batch.items()}

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                loss = mod.compute_loss(b)
                loss.backward()
                opt.step()

            reps = a.reps if dev.type == "cuda" else 2
            r = timeit(step, dev, reps, warm=2 if dev.type == "cuda" else 1, budget=15.0 if dev.type == "cpu" else 20.0)
            r["configured_steps"] = int(t.get("max_steps", 0))
            r["implied_stage_s"] = r["median_s"] * r["configured_steps"]
            if dev.type == "cuda":
                r["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
                torch.cuda.reset_peak_memory_stats(dev)
            res[f"{cfg_name}_{dev.type}"] = r
            print(f"  train {cfg_name:15s} {dev.type:4s} {r['median_s']*1e3:8.1f} ms/step", flush=True)
    return res


def sec_dycore(a: argparse.Namespace, data: dict[str, np.ndarray]) -> dict[str, Any]:
    from skydiff.dycore.cases import build, get_case
    from skydiff.dycore.coordinates import Neuve, make_coordinate
    from skydiff.dycore.equations import full_w
    from skydiff.dycore.stepping import integrate, integrate_loss
    from skydiff.dycore.training import TRAIN_GRID

    res: dict[str, Any] = {}
    # (case options, dt): the default 100 km x 20 km grid at 500 m, and 4x / 16x as many cells (dt within the
    # acoustic limit of each)
    grids = {"default": ({}, 0.75), "4x": ({"dx": 250.0, "nz": 80}, 0.3), "16x": ({"dx": 125.0, "nz": 160}, 0.15)}
    for gname, (g, dt) in grids.items():
        case = get_case("schaer", **g)
        for dtype in (torch.float64, torch.float32):
            for dev in devices(a):
                if dev.type == "cpu" and (gname == "16x" or dtype != torch.float64):
                    continue  # the CPU side of this comparison: one configuration is enough
                coord = make_coordinate("sleve").to(device=dev, dtype=dtype)
                with torch.no_grad():
                    model, state0 = build(case, coord, dtype, dev)
                    n = a.dycore_steps

                    def fwd() -> None:
                        integrate(state0, model, dt, n, check_every=n)

                    r = timeit(fwd, dev, 3, warm=1, budget=30.0)
                r["steps_per_s"] = n / r["median_s"]
                r["cells"] = int(state0.u.shape[-1] * state0.u.shape[-2]) if state0.u.ndim >= 2 else None
                key = f"schaer_{gname}_{str(dtype)[6:]}_{dev.type}"
                res[key] = r
                print(f"  dycore {key:32s} {r['steps_per_s']:8.0f} steps/s", flush=True)

    # gradient cost: the Klemp training configuration (NEUVE, float64, 600 steps, checkpoint chunks of 50);
    # on the GPU only (the CPU figures are in RESULTS §7, from benchmarks/dycore_gradcost.py)
    for dev in [d for d in devices(a) if d.type == "cuda"] or devices(a):
        for mode in ("forward", "checkpoint", "plain_backprop"):
            torch.manual_seed(0)
            coord = Neuve().double().to(dev)
            case = get_case("klemp2011", **TRAIN_GRID)
            model, state = build(case, coord, torch.float64, dev)

            def lf(s):  # noqa: ANN001, ANN202
                return full_w(s, model.geom).pow(2).mean()

            if dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(dev)
                base = torch.cuda.memory_allocated(dev)
            t0 = time.perf_counter()
            if mode == "forward":
                with torch.no_grad():
                    integrate_loss(state, model, 0.5, a.grad_steps, lf, chunk=50, every=10, use_checkpoint=False)
            else:
                _, loss = integrate_loss(state, model, 0.5, a.grad_steps, lf, chunk=50, every=10,
                                         use_checkpoint=(mode == "checkpoint"))
                loss.backward()
            _sync(dev)
            r = {"time_s": time.perf_counter() - t0, "steps": a.grad_steps}
            if dev.type == "cuda":
                r["peak_mem_increase_mb"] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
            res[f"klemp_grad_{mode}_{dev.type}"] = r
            print(f"  dycore grad {mode:15s} {dev.type:4s} {r['time_s']:.2f} s", flush=True)
    return res


def sec_downscale(a: argparse.Namespace, data: dict[str, np.ndarray]) -> dict[str, Any]:
    from skydiff.downscale import downscale

    fr = np.nan_to_num(data["frames"][-1])
    H, W = fr.shape
    # a 256 x 256 rainy window block-averaged to 64 x 64
    iy, ix = np.unravel_index(np.argmax(fr), fr.shape)
    y0 = int(np.clip(iy - 128, 0, H - 256))
    x0 = int(np.clip(ix - 128, 0, W - 256))
    hi = fr[y0:y0 + 256, x0:x0 + 256]
    lo = torch.from_numpy(hi.reshape(64, 4, 64, 4).mean((1, 3))).float()
    res: dict[str, Any] = {}
    for T in (1, 16):
        for dev in devices(a):
            if dev.type == "cpu" and T > 1:
                continue  # minutes per field on a CPU: one field is enough to compare
            x = lo.expand(T, -1, -1).contiguous().to(dev)
            cpu = dev.type == "cpu"
            with torch.no_grad():
                r = timeit(lambda: downscale(x, 4, members=8, steps=18, seed=0, progress=False), dev,
                           1 if cpu else a.reps, warm=0 if cpu else 1, budget=40.0)
            r["per_field_s"] = r["median_s"] / T
            res[f"fields{T}_{dev.type}"] = r
            print(f"  downscale T={T:2d} {dev.type:4s} {r['per_field_s']:.3f} s/field", flush=True)
    return res


SECTIONS = {"advect": sec_advect, "nowcast": sec_nowcast, "train": sec_train, "dycore": sec_dycore,
            "downscale": sec_downscale}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", required=True)
    p.add_argument("--out", default="runs/gpu_check")
    p.add_argument("--sections", nargs="+", default=list(SECTIONS), choices=list(SECTIONS))
    p.add_argument("--models", nargs="+", default=["extrapolation", "lupin", "rainnet", "smaat", "lcnn", "spatspark"])
    p.add_argument("--train-configs", nargs="+",
                   default=["lupin_motion", "lupin_tendency", "lupin_joint", "rainnet", "smaat"])
    p.add_argument("--bf16", nargs="*", default=["lupin", "rainnet"],
                   help="models of the nowcast section also timed with precision='bfloat16'")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--dycore-steps", type=int, default=300)
    p.add_argument("--grad-steps", type=int, default=600)
    p.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    p.add_argument("--cuda-only", action="store_true")
    a = p.parse_args(argv)
    if a.cpu_threads:
        torch.set_num_threads(a.cpu_threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    z = np.load(a.frames)
    data = {"frames": z["frames"], "velocity": z["velocity"]}
    info: dict[str, Any] = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpu_threads": torch.get_num_threads(),
                    "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
    }
    print(json.dumps(info), flush=True)
    for s in a.sections:
        t0 = time.perf_counter()
        print(f"== {s}", flush=True)
        try:
            info[s] = SECTIONS[s](a, data)
        except Exception as e:  # keep going: one broken section must not lose the others
            import traceback

            traceback.print_exc()
            info[s] = {"error": f"{type(e).__name__}: {e}"}
        info[s + "_wall_s"] = time.perf_counter() - t0
        (out / "gpu_check.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
