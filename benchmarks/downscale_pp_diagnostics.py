"""Diagnostics of the PP-space radar downscalers (issue #6, RESULTS.md §8): where does the CRPS gap between the PP
diffusion models and the TP-only (log1p) model come from? Diagnostics, not benchmarks: the verdicts are those of
benchmarks/downscale_radar.py. Run from the repository root; ``SKYDIFF_DATA`` must point at the shared data for
``floor`` (the radar TRAIN-part tiles, read through the tile cache in runs/downscale).

Three sub-commands:

``crps``      re-samples diffusion models identically (fair CRPS, same seed, members, steps and batch as
              downscale_radar.py, so the raw numbers reproduce its CRPS column) and scores them (a) as
              downscale_radar.py does and (b) with truth AND members set to 0 below each ``--threshold`` (the PP
              decoders return every sub-threshold value as exactly 0); per-tile bootstrap of every later model minus
              every earlier one.
``residual``  encoders only, on the truth of the tiles: is the low-resolution PP the block mean of the
              high-resolution PP, and where does the residual ``enc(hi) − bicubic_up(enc(lo))`` that the denoiser
              learns sit (share of its energy on pixels below ``--threshold``)?
``floor``     the small end of the rain distribution: smallest positive values, and the shares of pixels at 0,
              in (0, 0.01), [0.01, 0.1) and ≥ 0.1 mm/h, per source, of the radar TRAIN-part tiles the models were
              trained on (``radar_pairs("train")``) and of the ``--tiles-npz`` tiles.

Models (``--model LABEL=SPEC``, repeatable; ``--pp LABEL=SPEC`` for ``residual``): SPEC is a registry name with
shipped weights (``edm-radar-tp``, ``edm-radar``, ``pp-radar``) or a weights stem read with
``skydiff.registry.load_model`` (e.g. ``runs/downscale/edm-radar-atom/edm-radar-atom``); a PP stem is read as
``create_model("pp-radar", pretrained=STEM)``. Without ``--model`` / ``--pp``: the shipped models and the two ablations
of benchmarks/train_downscale.py (radar-atom, radar-thr001) whose weights exist.

Usage (the runs of RESULTS.md §8, dev CPU):

    python benchmarks/downscale_pp_diagnostics.py crps --tiles-npz runs/ds_tune/test60_tiles.npz --threads 2 \\
        --model TP-only=edm-radar-tp --model PP=edm-radar \\
        --model "PP dry-atom=runs/downscale/edm-radar-atom/edm-radar-atom"          # the dry-atom diagnostic
    python benchmarks/downscale_pp_diagnostics.py crps --threads 2 --model TP-only=edm-radar-tp \\
        --model PP=edm-radar --model "PP thr 0.01=runs/downscale/edm-radar-thr001/edm-radar-thr001" \\
        --threshold 0.1 --threshold 0.01 --out benchmarks/results/downscale_ablation/thresholded_crps_thr001.json
    python benchmarks/downscale_pp_diagnostics.py residual \\
        --out benchmarks/results/downscale_ablation/pp_residual.json               # all three PP encoders
    python benchmarks/downscale_pp_diagnostics.py floor --out benchmarks/results/downscale_ablation/rain_floor.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("SKYDIFF_CACHE", str(ROOT / "runs" / "downscale"))

DEFAULT_MODELS = {
    "TP-only": "edm-radar-tp",
    "PP": "edm-radar",
    "PP dry-atom": "runs/downscale/edm-radar-atom/edm-radar-atom",
    "PP thr 0.01": "runs/downscale/edm-radar-thr001/edm-radar-thr001",
}
DEFAULT_PPS = {
    "pp-radar (distance spread)": "pp-radar",
    "pp atom": "runs/downscale/pp_atom/pp-radar-atom",
    "pp thr 0.01": "runs/downscale/pp_thr001/pp-radar-thr001",
}


def _pairs(items: list[str], default: dict[str, str], what: str) -> dict[str, str]:
    if not items:  # the defaults whose weights exist (registry names always do)
        return {k: v for k, v in default.items() if "/" not in v or Path(v).with_suffix(".safetensors").is_file()}
    out: dict[str, str] = {}
    for e in items:
        label, sep, spec = e.partition("=")
        if not sep or not label or not spec or label in out:
            raise SystemExit(f"--{what} must be LABEL=SPEC with distinct labels, got {e!r}")
        out[label] = spec
    return out


def _load_edm(spec: str):
    from skydiff.registry import create_model, load_model

    if "/" in spec or spec.endswith(".safetensors"):
        return load_model(spec.removesuffix(".safetensors")).eval()
    return create_model(spec, pretrained=True).eval()


def _load_pp(spec: str):
    from skydiff.registry import create_model

    if "/" in spec or spec.endswith(".safetensors"):
        return create_model("pp-radar", pretrained=spec.removesuffix(".safetensors")).eval()
    return create_model(spec, pretrained=True).eval()


def _tiles(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = np.load(path)
    src = z["source"] if "source" in z.files else np.array(["?"] * len(z["hi"]))
    return z["hi"].astype(np.float32), z["lo"].astype(np.float32), src


def _boot(d: np.ndarray, n: int, seed: int = 0) -> tuple[float, float, float, float]:
    means = d[np.random.default_rng(seed).integers(0, d.size, (n, d.size))].mean(1)
    lo95, hi95 = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo95), float(hi95), float((d < 0).mean())


def cmd_crps(a: argparse.Namespace) -> dict:
    from skydiff.verify import crps_ensemble

    hi, lo, _ = _tiles(a.tiles_npz)
    models = _pairs(a.model, DEFAULT_MODELS, "model")
    thresholds = sorted(set(a.threshold or [0.1]), reverse=True)
    keys = ["raw"] + [f"thr{t:g}" for t in thresholds]

    def cut(x: np.ndarray, t: float) -> np.ndarray:
        return np.where(x < t, 0.0, x)

    per: dict[str, dict[str, np.ndarray]] = {}
    for label, spec in models.items():
        t0 = time.perf_counter()
        m = _load_edm(spec)
        ens = m.sample(torch.from_numpy(lo), members=a.members, steps=a.steps, seed=a.seed, progress=False,
                       batch_size=a.batch).numpy()
        per[label] = {"raw": np.asarray(crps_ensemble(ens, hi, estimator="fair", reduce=False)).mean((1, 2))}
        for t in thresholds:
            per[label][f"thr{t:g}"] = np.asarray(
                crps_ensemble(cut(ens, t), cut(hi, t), estimator="fair", reduce=False)).mean((1, 2))
        print(f"{label} ({spec}): " + ", ".join(f"CRPS {k} {per[label][k].mean():.5f}" for k in keys)
              + f" ({time.perf_counter() - t0:.0f} s)", flush=True)
    out: dict = {"tiles": a.tiles_npz, "members": a.members, "steps": a.steps, "seed": a.seed, "batch": a.batch,
                 "models": models, "thresholds": thresholds,
                 "crps": {k: {s: float(v.mean()) for s, v in d.items()} for k, d in per.items()},
                 "differences": {}}
    labels = list(models)
    for (j, b), (i, x) in itertools.product(enumerate(labels), enumerate(labels)):
        if i <= j:
            continue
        for s in keys:
            r = _boot(per[x][s] - per[b][s], a.bootstrap)
            out["differences"][f"{x} - {b} ({s})"] = r
            print(f"{x} - {b} ({s}): {r[0]:+.5f} [{r[1]:+.5f}, {r[2]:+.5f}], first better on {r[3]:.1%}")
    for t in thresholds:
        sub = float(((hi > 0) & (hi < t)).mean())
        mae = float(np.abs(cut(hi, t) - hi).mean())
        mean_sub = float(hi[(hi > 0) & (hi < t)].mean()) if sub > 0 else float("nan")
        out[f"truth_below_{t:g}"] = {"share_of_pixels_0_lt_R_lt_thr": sub, "mean_of_those_mm_h": mean_sub,
                                     "mae_of_zeroing_them": mae}
        print(f"truth pixels with 0 < R < {t:g}: {sub:.4f} (mean {mean_sub:.4f} mm/h); MAE of zeroing them {mae:.5f}")
    return out


def cmd_residual(a: argparse.Namespace) -> dict:
    import torch.nn.functional as F

    from skydiff.downscale.data import block_mean

    hi_np, lo_np, _ = _tiles(a.tiles_npz)
    hi, lo = torch.from_numpy(hi_np), torch.from_numpy(lo_np)
    t = (a.threshold or [0.1])[0]
    out: dict = {"tiles": a.tiles_npz, "dry_below": t, "pp": {}}
    for label, spec in _pairs(a.pp, DEFAULT_PPS, "pp").items():
        m = _load_pp(spec)
        with torch.no_grad():
            ph, pl = m.encode(hi), m.encode(lo)
        f = ph.shape[-1] // pl.shape[-1]
        r = ph - F.interpolate(pl[:, None], scale_factor=f, mode="bicubic", align_corners=False)[:, 0]
        dry = hi < t
        d = {"dry_threshold": m.dry_threshold, "dry_spread": m.dry_spread, "z_edge": float(m.z_edge),
             "mean_abs_enc_lo_minus_blockmean_enc_hi": float((pl - block_mean(ph, f)).abs().mean()),
             "residual_sd": float(r.std()), "residual_energy_share_dry": float((r[dry] ** 2).sum() / (r ** 2).sum())}
        out["pp"][label] = d
        print(f"{label} ({spec}; dry threshold {m.dry_threshold:g}, spread {m.dry_spread}): mean |enc(lo) - "
              f"blockmean(enc(hi))| {d['mean_abs_enc_lo_minus_blockmean_enc_hi']:.3f}; residual sd "
              f"{d['residual_sd']:.3f}; share of residual energy on pixels < {t:g} mm/h "
              f"{d['residual_energy_share_dry']:.2f}", flush=True)
    return out


def _floor_stats(x: np.ndarray) -> dict:
    v = x[np.isfinite(x)].ravel().astype(np.float64)
    pos = np.unique(v[v > 0])
    return {"pixels": int(v.size), "zero": float((v == 0).mean()), "0-0.01": float(((v > 0) & (v < 0.01)).mean()),
            "0.01-0.1": float(((v >= 0.01) & (v < 0.1)).mean()), ">=0.1": float((v >= 0.1).mean()),
            "smallest_positive": [float(p) for p in pos[:5]],
            "positive_p1_p5_p50": [float(q) for q in np.percentile(v[v > 0], [1, 5, 50])] if pos.size else []}


def cmd_floor(a: argparse.Namespace) -> dict:
    from skydiff.downscale.data import radar_pairs

    out: dict = {}
    sets = {}
    if not a.no_train:
        tr = radar_pairs("train", progress=False)
        sets["train (1 km)"] = (tr.hi, tr.source)
    if a.tiles_npz:
        hi, _, src = _tiles(a.tiles_npz)
        sets[f"{a.tiles_npz} (1 km)"] = (hi, src)
    for name, (x, src) in sets.items():
        out[name] = {"all": _floor_stats(x)}
        for s in np.unique(src):
            out[name][str(s)] = _floor_stats(x[src == s])
        print(f"{name}:")
        for s, d in out[name].items():
            print(f"  {s:>15}: {d['pixels']:>9} px, zero {d['zero']:.3f}, (0, 0.01) {d['0-0.01']:.4f}, "
                  f"[0.01, 0.1) {d['0.01-0.1']:.3f}, >= 0.1 {d['>=0.1']:.3f}; smallest positive "
                  + ", ".join(f"{p:.5g}" for p in d["smallest_positive"])
                  + "; positive p1/p5/p50 " + "/".join(f"{q:.4g}" for q in d["positive_p1_p5_p50"]), flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("crps", "residual", "floor"))
    ap.add_argument("--tiles-npz", default="runs/ds_tune/test60_tiles.npz",
                    help="tiles (hi, lo, source) as written by downscale_radar.py --save-tiles")
    ap.add_argument("--model", action="append", default=[], metavar="LABEL=SPEC", help="crps: a diffusion model")
    ap.add_argument("--pp", action="append", default=[], metavar="LABEL=SPEC", help="residual: a PP encoder")
    ap.add_argument("--threshold", type=float, action="append", default=None,
                    help="crps: zero truth and members below this (repeatable; default 0.1); residual: 'dry' below it")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=256, help="fields per U-Net call while sampling")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of the tiles")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-train", action="store_true", help="floor: skip the TRAIN-part tiles")
    ap.add_argument("--out", default=None, help="write the results to this JSON")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    res = {"crps": cmd_crps, "residual": cmd_residual, "floor": cmd_floor}[a.command](a)
    res["command"] = " ".join(["python", "benchmarks/downscale_pp_diagnostics.py", *sys.argv[1:]])
    res["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"({res['seconds']:.0f} s)")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
        print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
