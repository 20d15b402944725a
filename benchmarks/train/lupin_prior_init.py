#!/usr/bin/env python
"""Starting point of the LK-prior LUPIN chain (RESULTS §5 "An optical-flow prior"): the shipped LUPIN's weights in a
``LUPIN(motion_prior="lk")`` with the MF-U-Net's output layer zeroed, so that the model starts as Lucas-Kanade motion
+ the shipped AF-U-Net, and the MF-U-Net's other layers start from the shipped ones.

    python benchmarks/train/lupin_prior_init.py runs/cpu/lupin_prior_init/lupin
    # the same computation without the (zero) MF-U-Net: LUPIN(motion_prior="lk", motion_correction=False)
    python benchmarks/train/lupin_prior_init.py runs/cpu/lupin_lk_motion/lupin --no-correction
    # ship it as `lupin` (float16, the card carried over with the change recorded; test scores are written by
    # benchmarks/nowcast_models.py --write-cards)
    python benchmarks/train/lupin_prior_init.py src/skydiff/nowcast/weights/lupin --no-correction --ship

(run on the weights shipped before 2026-11-27 10:00 UTC, git 0bcbe8c: the learned-motion LUPIN).
"""

from __future__ import annotations

import json
import sys

import torch

from skydiff.nowcast.models import WEIGHTS_DIR, create_model, save_model


def main(out: str, correction: bool = True, ship: bool = False) -> None:
    shipped = create_model("lupin", pretrained=True)
    if ship and (correction or shipped.motion_prior):
        raise SystemExit("--ship is for --no-correction on the learned-motion weights shipped before 2026-11-27")
    if not correction:
        m = create_model("lupin", **{**shipped.config, "motion_prior": "lk", "motion_correction": False})
        m.advection_net.load_state_dict(shipped.advection_net.state_dict())
        card = {"description": "shipped LUPIN's AF-U-Net behind Lucas-Kanade motion "
                               "(motion_prior='lk', motion_correction=False)"}
        if ship:
            card = json.loads((WEIGHTS_DIR / "lupin.json").read_text())["card"]
            card["description"] = (
                "LUPIN with Lucas-Kanade motion: the AF-U-Net (tendency) trained by skydiff on the shared real radar "
                "data on a 2-core CPU, moved along pysteps' Lucas-Kanade flow of the last 3 frames "
                "(motion_prior='lk', motion_correction=False); see benchmarks/RESULTS.md section 5")
            card["inference_changes"].append({
                "change": "motion: the learned MF-U-Net replaced by pysteps' Lucas-Kanade flow of the last 3 input "
                          "frames (estimated once per nowcast); the AF-U-Net weights unchanged",
                "date": "2026-11-27",
                "see": "benchmarks/RESULTS.md section 5, 'An optical-flow prior for LUPIN's motion'",
                "why": "chosen on the validation part and a winter evening left out of training (KNMI 2021-01-01): "
                       "mean CSI@1 over 6 leads 0.746 vs 0.738 (validation), 0.427 vs 0.368 (winter); mean ETS@5 "
                       "0.254 vs 0.256 and 0.062 vs 0.064. The learned-motion weights are in git history "
                       "(src/skydiff/nowcast/weights/lupin.* before this change).",
            })
            card["stages_note"] = ("the stages below trained the AF-U-Net behind the learned motion; the MF-U-Net "
                                   "they also trained is not shipped any more")
            m = m.half()
        save_model(m, out, card=card)
        print(f"wrote {out}.safetensors")
        return
    m = create_model("lupin", **{**shipped.config, "motion_prior": "lk"})
    m.load_state_dict(shipped.state_dict())
    head = [c for c in m.motion_net.modules() if isinstance(c, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        head.weight.zero_()
        if head.bias is not None:
            head.bias.zero_()
    save_model(m, out, card={"description": "shipped LUPIN weights, motion_prior='lk', MF-U-Net output layer zeroed"})
    print(f"wrote {out}.safetensors")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a not in ("--no-correction", "--ship")]
    main(args[0] if args else "runs/cpu/lupin_prior_init/lupin", correction="--no-correction" not in sys.argv,
         ship="--ship" in sys.argv)
