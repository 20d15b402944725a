#!/usr/bin/env python
"""Training curves of the CPU runs (validation loss, CSI at 1 mm/h and MAE against optimiser steps).

Reads ``runs/cpu/<run>/logs/version_*/metrics.csv`` (Lightning's CSV logs; a resumed run appends a version) and
writes ``benchmarks/figures/training_curves.png``; prints the best validation scores of every run.

    python benchmarks/train/curves.py [runs/cpu]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from skydiff.plot import save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    base = Path(argv[0]) if argv else ROOT / "runs" / "cpu"
    runs = sorted(p for p in base.iterdir() if (p / "logs").is_dir())
    if not runs:
        print(f"no runs under {base}", file=sys.stderr)
        return 1
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    print("| run | validation checks | best val_loss | val CSI@1 (mean over leads) at best | val MAE at best |")
    print("|---|---|---|---|---|")
    for run in runs:
        frames = [pd.read_csv(f) for f in sorted((run / "logs").glob("version_*/metrics.csv"))]
        df = pd.concat(frames, ignore_index=True)
        val = df.dropna(subset=["val_loss"]).drop_duplicates("step", keep="last").sort_values("step")
        tr = df.dropna(subset=["train_loss_step"]) if "train_loss_step" in df else None
        for ax, col in zip(axes, ("val_loss", "val_csi", "val_mae")):
            if col in val:
                ax.plot(val["step"], val[col], marker=".", label=run.name)
        if tr is not None and len(tr):
            axes[0].plot(tr["step"], tr["train_loss_step"].rolling(10, min_periods=1).mean(), alpha=0.3,
                         color=axes[0].lines[-1].get_color())
        best = val.loc[val["val_loss"].idxmin()]
        print(f"| {run.name} | {len(val)} | {best['val_loss']:.4f} | {best.get('val_csi', float('nan')):.3f} | "
              f"{best.get('val_mae', float('nan')):.3f} |")
    for ax, title in zip(axes, ("loss (val: markers; train: faint, rolling mean)", "val CSI at 1 mm/h",
                                "val MAE (mm/h)")):
        ax.set_xlabel("optimiser step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].legend(fontsize=8)
    out = save_figure(fig, ROOT / "benchmarks" / "figures" / "training_curves.png")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
