"""Re-evaluate the shipped NEUVE card's 900-s Klemp check with today's solver and rewrite that part of the card.

The card written at training time (2026-11-26) holds max |w| over 900 s of the Klemp test on the 30 km training
grid for BTF, SLEVE, SLEVE2 and NEUVE, computed with the solver of that day, and files the training terrain among
the held-out ones. The solver has changed since (RESULTS §7a, §7g). This script runs the same check again
(``skydiff.dycore.training.klemp_max_w``, eager, float64) and writes ``train_max_w_900s`` (the first training
terrain) and ``heldout_max_w_900s`` (the held-out terrains), keeping the old values under
``max_w_900s_at_training`` with the date. The weights themselves are not touched.

    OMP_NUM_THREADS=1 python benchmarks/neuve_card_reevaluate.py [--dry-run]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

import torch

from skydiff.dycore import make_coordinate
from skydiff.dycore.training import HELDOUT_TERRAINS, klemp_max_w
from skydiff.registry import weights_dir

COORDINATES = ("btf", "sleve", "sleve2", "neuve")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="print the figures, do not rewrite the card")
    ap.add_argument("--seconds", type=float, default=900.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    card_path = weights_dir("neuve") / "neuve.json"
    meta = json.loads(card_path.read_text())
    card = meta["card"]
    train = tuple(float(v) for v in card["train_terrains"][0])
    terrains = [train, *HELDOUT_TERRAINS]
    coords = {name: make_coordinate(name).double() for name in COORDINATES}
    t0 = time.perf_counter()
    result: dict[str, dict[str, float]] = {}
    for terr in terrains:
        key = "h0=%g a=%g lam=%g" % terr
        result[key] = {name: klemp_max_w(c, terr, args.seconds) for name, c in coords.items()}
        print(key, {k: round(v, 4) for k, v in result[key].items()}, flush=True)
    print(f"{time.perf_counter() - t0:.0f} s")
    if args.dry_run:
        return
    tag = "%gs" % args.seconds
    old = card.pop("heldout_max_w_" + tag, None)
    if old is not None and "max_w_%s_at_training" % tag not in card:
        card["max_w_%s_at_training" % tag] = {"values": old, "note": "the solver of the training day (2026-11-26); "
                                              "the first entry is the training terrain"}
    keys = list(result)
    card["train_max_w_" + tag] = {keys[0]: result[keys[0]]}
    card["heldout_max_w_" + tag] = {k: result[k] for k in keys[1:]}
    card["max_w_%s_evaluated" % tag] = (f"{dt.date.today().isoformat()} with "
                                        "benchmarks/neuve_card_reevaluate.py (eager, float64, 1 thread)")
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))  # (the layout the card has)
    os.replace(tmp, card_path)
    print(f"rewrote {card_path}")


if __name__ == "__main__":
    main()
