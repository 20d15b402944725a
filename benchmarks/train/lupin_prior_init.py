#!/usr/bin/env python
"""Starting point of the LK-prior LUPIN chain (RESULTS §5 "An optical-flow prior"): the shipped LUPIN's weights in a
``LUPIN(motion_prior="lk")`` with the MF-U-Net's output layer zeroed, so that the model starts as Lucas-Kanade motion
+ the shipped AF-U-Net, and the MF-U-Net's other layers start from the shipped ones.

    python benchmarks/train/lupin_prior_init.py runs/cpu/lupin_prior_init/lupin
"""

from __future__ import annotations

import sys

import torch

from skydiff.nowcast.models import create_model, save_model


def main(out: str) -> None:
    shipped = create_model("lupin", pretrained=True)
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
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/cpu/lupin_prior_init/lupin")
