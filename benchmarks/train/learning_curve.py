#!/usr/bin/env python
"""Learning curve: validation skill of a training stage against the amount of training data.

Trains the same config on random subsets (``data.train_fraction``) of the training windows, with the same
number of optimiser steps, and reports the best validation scores of each run (validation part of the shared
split, never the test part). Default: LUPIN stage 1 (MF-U-Net; its validation scores are those of the
advection nowcast it produces), the cheapest stage, 3 fractions.

    python benchmarks/train/learning_curve.py
    python benchmarks/train/learning_curve.py --config benchmarks/train/rainnet.toml --fractions 0.25 0.5 1

Writes ``benchmarks/results/learning_curve_<name>.csv`` and ``benchmarks/figures/learning_curve_<name>.png``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from skydiff.nowcast.training import train  # noqa: E402
from skydiff.plot import save_figure  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=str(ROOT / "benchmarks" / "train" / "lupin_motion.toml"))
    p.add_argument("--fractions", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    p.add_argument("--max-steps", type=int, default=300)
    p.add_argument("--out", default=str(ROOT / "runs" / "learning_curve"))
    args = p.parse_args(argv)
    name = Path(args.config).stem
    rows = []
    for f in args.fractions:
        out = Path(args.out) / f"{name}_{f:g}"
        s = train(args.config, overrides={"data.train_fraction": f, "out": str(out), "training.max_steps": args.max_steps,
                                          "training.patience": -1, "training.progress_bar": False})
        card = json.loads(Path(s["card"]).read_text())["card"]
        best = min(card["val_history"], key=lambda r: r["val_loss"])
        rows.append({"train_fraction": f, "n_train": s["n_train"], "steps": s["global_step"],
                     "best_val_loss": best["val_loss"], "val_csi": best.get("val_csi"), "val_mae": best.get("val_mae"),
                     "val_csi_lead6": best.get("val_csi_lead6"), "training_time_s": s["training_time_s"]})
        print(rows[-1], file=sys.stderr, flush=True)
    df = pd.DataFrame(rows)
    csv = ROOT / "benchmarks" / "results" / f"learning_curve_{name}.csv"
    df.to_csv(csv, index=False, float_format="%.5g")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    axes[0].plot(df.n_train, df.best_val_loss, "o-")
    axes[0].set_ylabel("best validation loss")
    axes[1].plot(df.n_train, df.val_csi, "o-", label="mean over +5..+30 min")
    axes[1].plot(df.n_train, df.val_csi_lead6, "s--", label="+30 min")
    axes[1].set_ylabel("validation CSI at 1 mm/h")
    axes[1].legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("training windows")
        ax.grid(alpha=0.3)
    fig.suptitle(f"learning curve: {name}, {args.max_steps} steps per run")
    save_figure(fig, ROOT / "benchmarks" / "figures" / f"learning_curve_{name}.png")
    print(f"| training windows | fraction | best val loss | val CSI@1 (mean) | val CSI@1 +30 min | train s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n_train']} | {r['train_fraction']:g} | {r['best_val_loss']:.4f} | {r['val_csi']:.3f} | "
              f"{r['val_csi_lead6']:.3f} | {r['training_time_s']:.0f} |")
    print(f"\nwrote {csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
