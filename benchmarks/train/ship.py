#!/usr/bin/env python
"""Copy trained weights into the package (``src/skydiff/nowcast/weights/<model>.safetensors`` + ``.json`` card).

The weights are stored in float16 (half the size; they are cast back to the model's dtype when loaded; the test
scores in the card are measured with exactly these shipped weights, by ``benchmarks/nowcast_models.py``).
The card keeps the training summary of every stage that led to the weights (data, config, steps, time,
machine, validation scores).

Usage (from the repository root, after ``benchmarks/train/train_all.sh``)::

    python benchmarks/train/ship.py lupin runs/cpu/lupin_motion runs/cpu/lupin_tendency runs/cpu/lupin_joint
    python benchmarks/train/ship.py rainnet runs/cpu/rainnet
    python benchmarks/train/ship.py lcnn runs/cpu/lcnn
    python benchmarks/train/ship.py spatspark runs/cpu/spatspark_pretrain runs/cpu/spatspark
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from skydiff.nowcast.models import WEIGHTS_DIR, create_model, save_model


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    name, runs = argv[0], [Path(a) for a in argv[1:]]
    stages = []
    for run in runs:
        card_path = run / f"{name}.json"
        if not card_path.is_file():  # an earlier stage of another registered name (e.g. spatspark-pretrain)
            card_path = next(p for p in sorted(run.glob("*.json")) if p.name != "summary.json")
        summary = json.loads((run / "summary.json").read_text())
        card = json.loads(card_path.read_text())
        stages.append({
            "run": str(run),
            "stage": summary.get("stage"),
            "epochs": summary.get("epochs"),
            "global_step": summary.get("global_step"),
            "training_time_s": summary.get("training_time_s"),
            "best_val_loss": summary.get("best_val_loss"),
            "val_scores": summary.get("val_scores"),
            "config": card["card"].get("config"),
            "data": card["card"].get("data"),
            "machine": card["card"].get("training", {}).get("machine"),
            "n_parameters": card["card"].get("training", {}).get("n_parameters"),
        })
    last = runs[-1]
    meta = json.loads((last / f"{name}.json").read_text())
    model = create_model(name, **meta["config"])
    state = load_file(str(last / f"{name}.safetensors"))
    model.load_state_dict(state, strict=True)
    model = model.half()
    card = {
        "description": f"{name} trained by skydiff on the shared real radar data (training part of "
        "skydiff.nowcast.data.shared_split) on a 2-core CPU; see benchmarks/RESULTS.md",
        "weights_dtype": "float16",
        "stages": stages,
        "total_training_time_s": sum(float(s["training_time_s"] or 0) for s in stages),
        "test_scores": "not measured yet: run benchmarks/nowcast_models.py",
        "data_licence": "KNMI open data (CC BY 4.0, 'KNMI'); FMI open data (CC BY 4.0, 'Finnish Meteorological "
        "Institute')" + ("; NOAA MRMS (US Government work, public domain)"
                         if "MRMS" in json.dumps([s.get("data") for s in stages]) else ""),
    }
    w, j = save_model(model, WEIGHTS_DIR / name, card=card)
    # the module was halved for storage: check the file loads into a float32 model and predicts finite values
    back = create_model(name, pretrained=True).float().eval()
    x = torch.rand(1, back.n_input_frames, 64, 64) * 5
    with torch.no_grad():
        out = back.predict(x, 2)
    assert torch.isfinite(out).all()
    print(f"wrote {w} ({w.stat().st_size / 1e6:.1f} MB) and {j}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
