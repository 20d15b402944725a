"""Train the diffusion downscalers on CPU and (with --ship) copy the EMA weights to skydiff/downscale/weights.

    python benchmarks/train_downscale.py radar-tp --steps 2500 --ship   # TP-only baseline (log1p space)
    python benchmarks/train_downscale.py radar --steps 2500 --ship      # PP diffusion (needs pp-radar weights)
    python benchmarks/train_downscale.py era5 --steps 1500 --ship       # ERA5 0.25° <- 1° (needs pp-era5)

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

NAMES = {"radar": "edm-radar", "radar-tp": "edm-radar-tp", "era5": "edm-era5"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", choices=sorted(NAMES))
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--crop", type=int, default=32, help="crop size (0 = whole tiles)")
    ap.add_argument("--base", type=int, default=24, help="U-Net base channels")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--out", default="runs/downscale")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--ship", action="store_true", help="copy the weights to skydiff/downscale/weights")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    name = NAMES[a.model]
    t0 = time.perf_counter()
    if a.model == "era5":  # hold back 18-23 UTC of both days (as benchmarks/pseudo_precip.py does for pp-era5)
        pairs = era5_pairs()
        hours = (pairs.time - pairs.time.astype("datetime64[D]")).astype("timedelta64[h]").astype(int)
        pairs = pairs.subset(hours < 18)
    else:
        pairs = radar_pairs("train", progress=True)
    print(f"data: {pairs} ({time.perf_counter() - t0:.0f} s)", flush=True)
    card = {
        "description": {
            "edm-radar": "EDM diffusion downscaler 4 km -> 1 km radar rain in pseudo-precipitation space (pp-radar)",
            "edm-radar-tp": "TP-only baseline: the same EDM diffusion downscaler in log1p(rain) space",
            "edm-era5": "EDM diffusion downscaler ERA5 1 deg -> 0.25 deg hourly TP in pseudo-precipitation space "
                        "(pp-era5, TP+VIMD)",
        }[name],
        "data": "radar TRAIN part of the shared split (KNMI 2010 before 05:00 UTC, FMI 20160928, KNMI January 2021, "
                "MRMS 2019-06-10 at 10-min multiples), rainy 64x64 tiles at 1 km, 4x4 block means"
        if a.model != "era5" else "ERA5 2022-08-31 and 2020-01-01 00-17 UTC (36 fields; 18-23 UTC held back), 40x40 "
                                  "at 0.25 deg, 4x4 block means",
        "licence_data": "KNMI CC BY 4.0; FMI CC BY 4.0; NOAA MRMS public domain" if a.model != "era5"
        else "Contains modified Copernicus Climate Change Service information 2020-2022",
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} thread(s)",
        "command": f"python benchmarks/train_downscale.py {a.model} --steps {a.steps} --batch {a.batch} "
                   f"--crop {a.crop} --base {a.base} --lr {a.lr}",
    }
    s = train_downscaler(pairs, name, out=a.out, max_steps=a.steps, batch_size=a.batch,
                         crop=a.crop or None, lr=a.lr, resume=not a.no_resume, card=card, base_channels=a.base)
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
