#!/usr/bin/env python
"""SpaT-SparK against SmaAt-UNet (same data, same budget) under both published protocols and standard scores.

Cases: every window of 12 input + 12 target frames (5 min apart, no gaps) of the shared split's ``--part``
(default the untouched test part: FMI 2017-05-09, KNMI 2010-08-26 from 05:00 UTC, KNMI February 2021), on a
288 x 288 crop centred on the valid data (for the KNMI grid exactly the NL-50 cut-out, rows 284:572, cols
225:513), kept when at least ``--min-rain`` of the target pixels reach 0.1 mm/h (the training rule; NL-50's
50 %-of-pixels rule would leave almost only KNMI 2010 in this light-rain test part). No-data pixels are
excluded from every score.

Models (``--runs NAME=RUN_DIR``, the ``.safetensors`` of each run; defaults: the CPU runs of
``benchmarks/train/train_spatspark.sh`` and ``smaat.toml``) and persistence (the last input frame at every lead).
Every model predicts 12 frames (``model.predict``); SmaAt's protocol scores +30 min (lead index 5).

Scores:
(a) SmaAt-UNet protocol (``skydiff.verify.smaat_protocol``): +30 min, events > 0.5 mm/h, micro-averaged,
    per-pixel MSE in (mm/5min)^2 with 47.83, HSS without the factor 2;
(b) SpaT-SparK protocol (``skydiff.verify.spatspark_protocol``): 12 leads, pMSE with 47.18, the cumulative x12
    thresholds (keys 0.2/0.5/1.0 = 9.44/1.97/0.33 mm/h), +1e-8 denominators;
(c) standard: MSE (mm/h)^2 over the 12 leads, CSI at 1 mm/h (x >= 1) at +30 and +60 min, pooled.

    python benchmarks/spatspark_protocols.py
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import skydiff
from skydiff.nowcast.data import RadarSequences, shared_split
from skydiff.nowcast.models import load_model
from skydiff.verify import contingency, smaat_protocol, spatspark_protocol, to_nl50

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = {
    "SpaT-SparK (pretrained)": "runs/cpu/spatspark/spatspark",
    "SpaT-SparK from scratch": "runs/cpu/spatspark_scratch/spatspark",
    "SpaT-SparK, no translation": "runs/cpu/spatspark_notrans_v2/spatspark",
    "SmaAt-UNet": "runs/cpu/smaat_v3/smaat",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("SKYDIFF_DATA") or str(ROOT.parent / "shared" / "data"))
    p.add_argument("--part", default="test", choices=["test", "validation"])
    p.add_argument("--runs", nargs="*", default=None, metavar="NAME=STEM")
    p.add_argument("--min-rain", type=float, default=0.02)
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args(argv)
    runs = dict(r.split("=", 1) for r in args.runs) if args.runs else DEFAULT_RUNS
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = RadarSequences(shared_split(args.data)[args.part], 12, 12, crop=288, random_crop=False,
                            eval_crops="centre", transform=None, min_rain_fraction=args.min_rain,
                            rain_threshold=0.1, nan_value=float("nan"))
    n = len(ds)
    print(f"{n} cases ({args.part} part, 288 x 288 centre crops, >= {100 * args.min_rain:g} % rainy target pixels)",
          file=sys.stderr)
    models = {name: load_model(ROOT / stem).float().eval() for name, stem in runs.items()}
    preds: dict[str, list[np.ndarray]] = {m: [] for m in list(models) + ["persistence"]}
    obs, sources = [], []
    for i in range(0, n, args.batch):
        items = [ds[j] for j in range(i, min(n, i + args.batch))]
        x = torch.stack([it["inputs"] for it in items])  # (B, 12, H, W) mm/h, NaN = no data
        y = torch.stack([it["targets"] for it in items])
        mask = torch.stack([it["mask"] for it in items])
        y = y.masked_fill(~mask[:, 12:], float("nan"))
        x = x.masked_fill(~mask[:, :12], float("nan"))
        obs.append(y.numpy())
        sources += [int(it["source"]) for it in items]
        for name, m in models.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                preds[name].append(np.asarray(m.predict(x, 12)))
        preds["persistence"].append(x[:, -1:].expand(-1, 12, -1, -1).numpy())
        print(f"  {min(n, i + args.batch)}/{n}", file=sys.stderr, flush=True)
    Y = np.concatenate(obs)
    rows = []
    for name, ps in preds.items():
        P = np.concatenate(ps)
        bad = np.isnan(P) | np.isnan(Y)
        Pm, Ym = np.where(bad, np.nan, P), np.where(bad, np.nan, Y)
        a = smaat_protocol(to_nl50(Pm), to_nl50(Ym), lead_index=5)
        b = spatspark_protocol(to_nl50(Pm, 47.83), to_nl50(Ym, 47.83))
        ok = ~bad
        mse = float(np.sum(np.where(ok, P - Y, 0.0) ** 2) / ok.sum())
        csi = [float(contingency(torch.from_numpy(Pm[:, k]), torch.from_numpy(Ym[:, k]), 1.0).scores()["csi"])
               for k in (5, 11)]
        rows.append((name, a, b, mse, csi))
    cmd = "python " + " ".join(shlex.quote(v) for v in ["benchmarks/spatspark_protocols.py"] + (argv or sys.argv[1:]))
    print(f"## SpaT-SparK vs SmaAt-UNet (`{cmd}`)\n")
    print(f"CPU, torch {torch.__version__}, skydiff {skydiff.__version__}; {n} cases of the {args.part} part; "
          f"run time {time.perf_counter() - t0:.0f} s.\n")
    print("(a) SmaAt-UNet protocol (+30 min, > 0.5 mm/h, micro; pMSE (mm/5min)^2 x 47.83; HSS without factor 2)\n")
    print("| model | pMSE | accuracy | precision | recall | F1 | CSI | FAR | HSS |\n|---|---|---|---|---|---|---|---|---|")
    for name, a, _, _, _ in rows:
        s = a["scores"][0.5]
        print(f"| {name} | {a['mse']:.5f} | {s['accuracy']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | "
              f"{s['f1']:.3f} | {s['csi']:.3f} | {s['far']:.3f} | {s['hss']:.3f} |")
    thr = rows[0][2]["thresholds_mm_h"]
    print(f"\n(b) SpaT-SparK protocol (12 leads, pMSE x 47.18, key 0.5 = {thr[0.5]:.2f} mm/h (cumulative x12 quirk), "
          "micro, +1e-8)\n")
    print("| model | pMSE | accuracy | precision | recall | F1 | CSI | FAR | HSS |\n|---|---|---|---|---|---|---|---|---|")
    for name, _, b, _, _ in rows:
        s = b["scores"][0.5]
        print(f"| {name} | {b['mse']:.5f} | {s['accuracy']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | "
              f"{s['f1']:.3f} | {s['csi']:.3f} | {s['far']:.3f} | {s['hss']:.3f} |")
    print("\n(c) standard scores (mm/h; CSI of x >= 1 mm/h)\n")
    print("| model | MSE 5-60 min | CSI@1 +30 min | CSI@1 +60 min |\n|---|---|---|---|")
    for name, _, _, mse, csi in rows:
        print(f"| {name} | {mse:.4f} | {csi[0]:.3f} | {csi[1]:.3f} |")
    # targets of issue #5
    by = {r[0]: r for r in rows}
    sp, sm = by.get("SpaT-SparK (pretrained)"), by.get("SmaAt-UNet")
    if sp and sm:
        print("\n**Targets**\n")
        if sm[1]["scores"][0.5]["recall"] == 0 or sm[4][0] == 0:
            print("- CAVEAT: the SmaAt-UNet baseline forecasts (almost) no rain (recall 0 / CSI@1 0): the comparisons "
                  "with it below are not meaningful")
        for label, i in (("SmaAt protocol", 1), ("SpaT-SparK protocol", 2)):
            better = sp[i]["mse"] < sm[i]["mse"]
            print(f"- lower pMSE than SmaAt-UNet ({label}): {'MET' if better else 'MISSED'} "
                  f"({sp[i]['mse']:.5f} vs {sm[i]['mse']:.5f})")
        print(f"- lower standard MSE than SmaAt-UNet: {'MET' if sp[3] < sm[3] else 'MISSED'} ({sp[3]:.4f} vs {sm[3]:.4f})")
        c_ok = all(a > b for a, b in zip(sp[4], sm[4]))
        print(f"- higher CSI at 1 mm/h than SmaAt-UNet (+30, +60 min): {'MET' if c_ok else 'MISSED'} "
              f"({sp[4][0]:.3f}/{sp[4][1]:.3f} vs {sm[4][0]:.3f}/{sm[4][1]:.3f})")
        sc = by.get("SpaT-SparK from scratch")
        if sc:
            print(f"- pretraining improves on training from scratch (standard MSE): "
                  f"{'MET' if sp[3] < sc[3] else 'MISSED'} ({sp[3]:.4f} vs {sc[3]:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
