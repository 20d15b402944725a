"""Train the diffusion downscalers on CPU and (with --ship) copy the EMA weights to skydiff/downscale/weights.

    python benchmarks/train_downscale.py radar-tp --steps 2500 --ship   # TP-only baseline (log1p space)
    python benchmarks/train_downscale.py radar --steps 3000 --ship      # PP diffusion (in the shipped pp-radar's space)
    python benchmarks/train_downscale.py era5 --steps 1500 --ship       # ERA5 0.25° <- 1° (needs pp-era5)
    python benchmarks/train_downscale.py radar-atom --steps 3000        # ablation, never shipped (see below)
    python benchmarks/train_downscale.py radar-thr001 --steps 3000      # the run that became the shipped edm-radar

``radar-atom`` (run name ``edm-radar-atom``) is an ablation of ``radar``: the same EDM model and recipe in PP space,
but with a PP whose dry pixels all map to one value (a "dry atom", ``PseudoPrecip(dry_spread=False)``) instead of
the shipped ``pp-radar``'s dry-distance spread. Its PP is the "per-grid-point variant (dry atom)" of
benchmarks/pseudo_precip.py, trained here with that script's tiles, steps and seed (``--pp-weights``, default
runs/downscale/pp_atom/pp-radar-atom.{safetensors,json}; trained first if missing, ``--pp-only`` stops there).
The EDM weights go to runs/downscale/edm-radar-atom/edm-radar-atom.{safetensors,json} (registry model
``edm-radar`` with the atom PP inside: ``skydiff.registry.load_model`` reads them); ``--ship`` is refused.

``radar-thr001`` (run name ``edm-radar-thr001``) is the same kind of ablation with the shipped ``pp-radar`` PP
(dry-distance spread) trained exactly as benchmarks/pseudo_precip.py trains it (same tiles, steps and seed) except
for its dry threshold, 0.01 mm/h instead of 0.1 mm/h (``PseudoPrecip(dry_spread=True, dry_threshold=0.01)``, the
threshold of ``pp-era5``), so that drizzle between 0.01 and 0.1 mm/h is no longer decoded as exactly 0. PP weights:
runs/downscale/pp_thr001/pp-radar-thr001.{safetensors,json} (``--pp-weights``); EDM weights:
runs/downscale/edm-radar-thr001/edm-radar-thr001.{safetensors,json}; ``--ship`` is refused. This run (all of TRAIN)
was copied to the package as ``edm-radar`` / ``pp-radar`` on 2026-11-26, after the 0.01 threshold won on the
validation part (RESULTS §8); since then ``radar --ship`` trains the same recipe, in the space of the shipped
``pp-radar`` (whose own recipe, ``benchmarks/pseudo_precip.py``, now uses 0.01 mm/h).

``--part fit`` trains on the ``fit`` part of ``skydiff.downscale.data.radar_pairs`` (the TRAIN part without its
time-split validation tail) instead of all of TRAIN, for choosing between variants on the ``validation`` part
without touching the test part (`benchmarks/downscale_radar.py --tiles-npz ...`, RESULTS §8). Every PP model then
also retrains its PP on ``fit`` (``radar``: the pp-radar recipe shipped before 2026-11-26, dry threshold 0.1 mm/h;
``radar-thr001`` / ``radar-atom``: theirs) into <out>/pp_<run>/; the default --out is runs/downscale_fit and
``--ship`` is refused:

    python benchmarks/train_downscale.py radar-tp --part fit --steps 3000
    python benchmarks/train_downscale.py radar --part fit --steps 3000
    python benchmarks/train_downscale.py radar-thr001 --part fit --steps 3000

Radar: rainy 64 × 64 tiles of the shared TRAIN part (KNMI 2010 < 05:00, FMI 20160928, KNMI January 2021, MRMS at
10-min multiples; cached in runs/downscale), random 32 × 32 crops; ERA5: the 48 hourly 40 × 40 fields of the two
shared days, 00-17 UTC (18-23 UTC held back), random 32 × 32 crops. One torch thread. Runs resume from runs/downscale/<model>/checkpoints/last.ckpt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

from skydiff.downscale import WEIGHTS_DIR
from skydiff.downscale.data import era5_pairs, radar_pairs
from skydiff.downscale.training import train_downscaler

# the benchmarks share one tile cache in the (gitignored) runs folder unless SKYDIFF_CACHE says otherwise
os.environ.setdefault("SKYDIFF_CACHE", str(Path(__file__).resolve().parents[1] / "runs" / "downscale"))

NAMES = {"radar": "edm-radar", "radar-tp": "edm-radar-tp", "era5": "edm-era5", "radar-atom": "edm-radar-atom",
         "radar-thr001": "edm-radar-thr001"}
# registry model behind each run name (the ablations are an edm-radar with other PP weights inside)
REGISTRY = {"edm-radar-atom": "edm-radar", "edm-radar-thr001": "edm-radar"}
_RUNS = Path(__file__).resolve().parents[1] / "runs" / "downscale"
# the ablations' PP: default weights stem, PseudoPrecip options, label, model-card description
ABLATION_PP = {
    "edm-radar-atom": dict(
        stem=_RUNS / "pp_atom" / "pp-radar-atom", config={"dry_spread": False}, label="pp atom",
        description="ABLATION, not shipped: pseudo-precipitation encoder/decoder with a dry atom (all dry pixels "
                    "map to one value, dry_spread=False), the 'per-grid-point variant (dry atom)' of "
                    "benchmarks/pseudo_precip.py, trained by benchmarks/train_downscale.py radar-atom"),
    "edm-radar-thr001": dict(
        stem=_RUNS / "pp_thr001" / "pp-radar-thr001", config={"dry_spread": True, "dry_threshold": 0.01},
        label="pp thr0.01",
        description="ABLATION, not shipped: the pp-radar pseudo-precipitation encoder/decoder (dry pixels spread by "
                    "their distance to rain) with dry threshold 0.01 mm/h instead of 0.1 mm/h, trained as "
                    "benchmarks/pseudo_precip.py trains pp-radar, by benchmarks/train_downscale.py radar-thr001"),
}
PP_ATOM = ABLATION_PP["edm-radar-atom"]["stem"]
# the pp-radar recipe shipped before 2026-11-26 (dry threshold 0.1 mm/h), retrained by --part fit for edm-radar
# (the validation comparison of RESULTS section 8; the 0.01 mm/h recipe is radar-thr001)
FIT_PP = dict(ABLATION_PP, **{"edm-radar": dict(
    stem=None, config={"dry_spread": True, "dry_threshold": 0.1}, label="pp-radar thr0.1 (fit part)",
    description="the pp-radar pseudo-precipitation recipe shipped before 2026-11-26 (dry pixels spread by their "
                "distance to rain, dry threshold 0.1 mm/h), retrained on the FIT part for validation comparisons; "
                "not shipped")})


def train_pp_ablation(stem: Path, run: str = "edm-radar-atom", part: str = "train") -> Path:
    """The PP of an ablation run (``ABLATION_PP[run]``), trained exactly as benchmarks/pseudo_precip.py trains its
    radar models (its defaults: 2400 train tiles drawn with seed 11, 15 % hold-out by seed 0, 1500 steps x 32768
    pixels, lr 1e-2, equal 1 km / 4 km pixel shares, seed 0) with the run's PseudoPrecip options, saved with
    skydiff.registry.save_model (registry model pp-radar). Returns the stem."""
    import numpy as np

    from skydiff.downscale.pseudo import pp_report, train_pseudo
    from skydiff.registry import save_model

    spec = (FIT_PP if part == "fit" else ABLATION_PP)[run]
    label = spec["label"]
    torch.set_num_threads(1)
    seed = 0
    t0 = time.perf_counter()
    tr = radar_pairs(part, progress=False, max_tiles=2400, seed=seed + 11)
    perm = np.random.default_rng(seed).permutation(len(tr))
    n_hold = int(round(0.15 * len(tr)))
    hold, fit = tr.subset(np.sort(perm[:n_hold])), tr.subset(np.sort(perm[n_hold:]))
    print(f"{label}: fit {fit}, hold-out {hold} ({time.perf_counter() - t0:.0f} s)", flush=True)
    m = train_pseudo([fit.hi, fit.lo], steps=1500, batch=32768, lr=1e-2, weights=[0.5, 0.5], seed=seed,
                     progress=True, **spec["config"])
    reps = {name: pp_report(m, arr) for name, arr in (("train hold-out 1 km", hold.hi), ("train hold-out 4 km", hold.lo))}
    print(f"{label}: {m.train_stats}; z_edge {float(m.z_edge):+.3f}; "
          + "; ".join(f"{k}: KS {v['ks']:.3f}, KS wet {v['ks_wet_shape']:.3f}, dry frac {v['dry_fraction_true']:.3f}, "
                      f"MAE wet {v['mae_wet']:.4f}" for k, v in reps.items()), flush=True)
    card = {
        "description": spec["description"],
        "data": f"radar {part.upper()} part tiles (radar_pairs({part!r}, max_tiles=2400, seed=11), {len(fit)} of them after the "
                "15 % hold-out of seed 0): 64x64 at 1 km and 16x16 block means at 4 km, equal pixel shares",
        "training": m.train_stats,
        "held_back_checks": {k: {kk: (round(vv, 5) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                             for k, v in reps.items()},
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    wts, js = save_model(m, stem, card=card)
    print(f"{label}: saved {wts} and {js}", flush=True)
    return stem


def train_pp_atom(stem: Path) -> Path:
    """The dry-atom PP of ``radar-atom`` (kept for callers of the earlier name)."""
    return train_pp_ablation(stem, "edm-radar-atom")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(NAMES))
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=32, help="crop size (0 = whole tiles)")
    ap.add_argument("--base", type=int, default=24, help="U-Net base channels")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--part", choices=("train", "fit"), default="train",
                    help="radar tiles to train on: all of TRAIN (default) or its FIT part (validation tail held back)")
    ap.add_argument("--out", default=None, help="run folder (default runs/downscale, with --part fit runs/downscale_fit)")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--ship", action="store_true", help="copy the weights to skydiff/downscale/weights")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--accelerator", default="auto", help="lightning accelerator: auto (a GPU if any), cpu, gpu")
    ap.add_argument("--labels", action="store_true",
                    help="radar models: condition on the radar product of each tile (EDMDownscaler(labels=...), "
                         "skydiff.downscale.data.RADAR_LABELS; 20 %% of the training fields unlabelled)")
    ap.add_argument("--pp-weights", default=None,
                    help="radar-atom / radar-thr001 only: stem of the ablation's PP weights (trained first if "
                         "missing; default runs/downscale/pp_atom/pp-radar-atom or "
                         "runs/downscale/pp_thr001/pp-radar-thr001)")
    ap.add_argument("--pp-only", action="store_true",
                    help="radar-atom / radar-thr001 only: train/save the ablation's PP and stop")
    a = ap.parse_args()
    name = NAMES[a.model]
    if name in ABLATION_PP and a.ship:
        ap.error(f"{a.model} is an ablation, not a product: --ship is refused (the weights stay in runs/)")
    fitpart = a.part == "fit"
    if fitpart and a.ship:
        ap.error("--part fit trains for validation comparisons only: --ship is refused")
    if fitpart and a.model == "era5":
        ap.error("--part fit applies to the radar models only")
    a.out = a.out if a.out is not None else ("runs/downscale_fit" if fitpart else "runs/downscale")
    pp_specs = FIT_PP if fitpart else ABLATION_PP
    if (a.pp_only or a.pp_weights is not None) and name not in pp_specs:
        ap.error("--pp-only / --pp-weights only apply to radar-atom and radar-thr001 (and radar with --part fit)")
    pp_weights: str | bool = True
    if name in pp_specs:
        default = (Path(a.out) / f"pp_{name}" / f"pp-{name}-fit") if fitpart else Path(pp_specs[name]["stem"])
        stem = Path(a.pp_weights) if a.pp_weights is not None else default
        stem = stem.with_suffix("") if stem.suffix in (".safetensors", ".json") else stem
        if not stem.with_suffix(".safetensors").is_file():
            train_pp_ablation(stem, name, part=a.part)
        else:
            print(f"{pp_specs[name]['label']}: using {stem}.safetensors", flush=True)
        if a.pp_only:
            return
        pp_weights = str(stem)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    if a.model == "era5":  # hold back 18-23 UTC of both days (as benchmarks/pseudo_precip.py does for pp-era5)
        pairs = era5_pairs()
        hours = (pairs.time - pairs.time.astype("datetime64[D]")).astype("timedelta64[h]").astype(int)
        pairs = pairs.subset(hours < 18)
    else:
        pairs = radar_pairs(a.part, progress=True)
    print(f"data: {pairs} ({time.perf_counter() - t0:.0f} s)", flush=True)
    card = {
        "description": {
            "edm-radar": "EDM diffusion downscaler 4 km -> 1 km radar rain in pseudo-precipitation space "
                         + ("(pp-radar recipe before 2026-11-26, dry threshold 0.1 mm/h)" if fitpart else
                            "(the shipped pp-radar)"),
            "edm-radar-tp": "TP-only baseline: the same EDM diffusion downscaler in log1p(rain) space",
            "edm-era5": "EDM diffusion downscaler ERA5 1 deg -> 0.25 deg hourly TP in pseudo-precipitation space "
                        "(pp-era5, TP+VIMD)",
            "edm-radar-atom": "ABLATION, not shipped: the edm-radar recipe in the space of a dry-atom PP "
                              "(PseudoPrecip(dry_spread=False), the per-grid-point variant of "
                              f"benchmarks/pseudo_precip.py; weights {pp_weights})",
            "edm-radar-thr001": "ABLATION, not shipped: the edm-radar recipe in the space of a pp-radar PP with dry "
                                "threshold 0.01 mm/h instead of 0.1 mm/h (PseudoPrecip(dry_spread=True, "
                                f"dry_threshold=0.01); weights {pp_weights})",
        }[name] + (f" -- trained on the FIT part (PP weights {pp_weights})" if fitpart else ""),
        "data": ("radar FIT part (the TRAIN part without its validation tail: KNMI 2010 00:00-03:55 UTC, FMI 20160928 "
                 "up to 17:20, KNMI January 2021 evenings 01-08, MRMS 2019-06-10 00:00-00:50 at 10-min multiples), "
                 "rainy 64x64 tiles at 1 km, 4x4 block means; for validation comparisons, not shipped" if fitpart else
                 "radar TRAIN part of the shared split (KNMI 2010 before 05:00 UTC, FMI 20160928, KNMI January 2021, "
                 "MRMS 2019-06-10 at 10-min multiples), rainy 64x64 tiles at 1 km, 4x4 block means")
        if a.model != "era5" else "ERA5 2022-08-31 and 2020-01-01 00-17 UTC (36 fields; 18-23 UTC held back), 40x40 "
                                  "at 0.25 deg, 4x4 block means",
        "licence_data": "KNMI CC BY 4.0; FMI CC BY 4.0; NOAA MRMS public domain" if a.model != "era5"
        else "Contains modified Copernicus Climate Change Service information 2020-2022",
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} thread(s)",
        "command": f"python benchmarks/train_downscale.py {a.model} --steps {a.steps} --batch {a.batch} "
                   f"--crop {a.crop} --base {a.base} --lr {a.lr}" + (" --part fit" if fitpart else "")
                   + (" --labels" if a.labels else ""),
    }
    extra = {}
    if a.labels:
        if a.model == "era5":
            ap.error("--labels applies to the radar models only")
        from skydiff.downscale.data import RADAR_PRODUCTS

        extra["labels"] = list(RADAR_PRODUCTS)
        card["description"] += (" -- conditioned on the radar product (labels " + ", ".join(RADAR_PRODUCTS)
                                + "; 20 % of the training fields unlabelled)")
    reg = REGISTRY.get(name, name)
    # the run folder is <out>/<name>; an ablation trains its registry model one folder deeper (its own checkpoints)
    out = a.out if reg == name else str(Path(a.out) / name)
    s = train_downscaler(pairs, reg, out=out, max_steps=a.steps, batch_size=a.batch, crop=a.crop or None, lr=a.lr,
                         resume=not a.no_resume, card=card, base_channels=a.base, pp_weights=pp_weights,
                         accelerator=a.accelerator, **extra)
    if reg != name:  # copy the export to <out>/<name>/<name>.{safetensors,json} (loadable with load_model)
        for ext in (".safetensors", ".json"):
            src = s["weights"].replace(".safetensors", ext)
            dst = Path(a.out) / name / f"{name}{ext}"
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.replace(dst)
        s["weights"] = str(Path(a.out) / name / f"{name}.safetensors")
    print(json.dumps({k: v for k, v in s.items() if k != "data"}, indent=1))
    if a.ship:
        WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
        for ext in (".safetensors", ".json"):
            src = s["weights"].replace(".safetensors", ext)
            tmp = WEIGHTS_DIR / f".{name}{ext}.tmp"
            shutil.copyfile(src, tmp)
            tmp.replace(WEIGHTS_DIR / f"{name}{ext}")
        print(f"shipped to {WEIGHTS_DIR}/{name}.safetensors")


if __name__ == "__main__":
    main()
