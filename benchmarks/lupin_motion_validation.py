#!/usr/bin/env python
"""LUPIN's learned motion on the *validation* part: the last frame extrapolated along the (Gaussian-blurred, as at
inference) motion of an MF-U-Net, without the AF-U-Net tendency, against pysteps' Lucas-Kanade extrapolation.

Separates LUPIN's motion from its tendency: if ``lupin`` scores like its motion-only row, the tendency adds nothing.
Never run on the test part (model selection).

Usage (from the repository root; ~2-4 min on 2 cores)::

    python benchmarks/lupin_motion_validation.py NAME=WEIGHTS [NAME=WEIGHTS ...] [--full NAME=WEIGHTS ...] [--threads 2]
    # a winter check on a training-part evening left out of a fine-tune (the validation part's January evenings
    # are dry):
    python benchmarks/lupin_motion_validation.py --part train --sources "KNMI 2021-01-01-2005" --crop 400 \
        --full shipped=shipped new=runs/cpu/lupin_motion_frame_teacher/lupin

``WEIGHTS`` is a LUPIN ``.safetensors`` (stem) of any stage, e.g. ``runs/cpu/lupin_motion_teacher/lupin``;
``--full`` also scores complete LUPINs with those weights: ``--full PATH`` as model ``lupin``, ``--full
NAME=PATH`` as model ``NAME`` (``PATH`` = ``shipped``: the shipped weights), several side by side.
"""

from __future__ import annotations

import argparse
import os
import warnings

import numpy as np
import torch

from skydiff import advect
from skydiff.nowcast.data import shared_split
from skydiff.nowcast.evaluation import evaluate
from skydiff.nowcast.interface import _nn_model, register_model
from skydiff.nowcast.models.blocks import gaussian_blur
from skydiff.registry import load_model


def motion_only(path: str):  # type: ignore[no-untyped-def]
    m = load_model(path).eval()

    def fn(x, lt, **kw):  # type: ignore[no-untyped-def]
        x = torch.nan_to_num(x[-m.n_input_frames:].float(), 0.0)
        with torch.no_grad():
            prior = m.estimate_prior(x[None]) if m.motion_prior else None  # LUPIN(motion_prior=...): its flow
            mf = gaussian_blur(m.motion(x[None], prior), m.motion_blur_sigma, m.motion_blur_size)
            out = advect(x[-1][None, None], mf, lt, outval=0.0)
        return out.reshape(lt, *x.shape[1:]), mf[0]

    return fn, m.n_input_frames


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("models", nargs="*", metavar="NAME=WEIGHTS")
    p.add_argument("--full", nargs="+", default=[], metavar="[NAME=]WEIGHTS")
    part_arguments(p, threads=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = []
    for item in args.models:
        tag, path = item.split("=", 1)
        fn, n = motion_only(path)
        register_model(tag, fn, min_frames=n, description=f"motion only of {path}")
        names.append(tag)
    weights = {}
    for item in args.full:
        tag, path = item.split("=", 1) if "=" in item else ("lupin", item)
        if tag != "lupin":
            register_model(tag, _nn_model("lupin"), min_frames=6, description=f"LUPIN with {path}")
        if path != "shipped":
            weights[tag] = path
        names.append(tag)
    if not names:
        p.error("give motion-only models and/or --full")
    ev = evaluate_parts(p, args, names, weights=weights)
    print(cases_line(args, ev))
    print("CSI at 1 mm/h\n\n" + ev.table("csi", 1.0) + "\n\nETS at 5 mm/h\n\n" + ev.table("ets", 5.0))
    print("\n" + mean_line(ev))
    return 0


def part_arguments(p: argparse.ArgumentParser, threads: int, parts: tuple[str, ...] = ("validation", "train")) -> None:
    """The options of the validation scripts that choose the cases: --part, --sources, --crop, --stride, --threads,
    --data (read by :func:`select_parts`)."""
    p.add_argument("--part", default="validation", choices=parts,
                   help="part of the shared split (train: only for parts a candidate did not train on)")
    p.add_argument("--sources", nargs="+", default=None, help="only the parts with these names")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--stride", type=int, default=2)
    p.add_argument("--threads", type=int, default=threads)
    p.add_argument("--data", default=os.environ.get("SKYDIFF_DATA", "../shared/data"))


def select_parts(p: argparse.ArgumentParser, args: argparse.Namespace) -> list:
    """The ``--part`` of the shared split, only the ``--sources`` named (a parser error for unknown names)."""
    parts = shared_split(args.data)[args.part]
    if args.sources:
        missing = set(args.sources) - {s.name for s in parts}
        if missing:
            p.error(f"no {args.part} part named {sorted(missing)}; there are {[s.name for s in parts]}")
        parts = [s for s in parts if s.name in args.sources]
    return parts


def evaluate_parts(p: argparse.ArgumentParser, args: argparse.Namespace, names: list[str],  # type: ignore[no-untyped-def]
                   **kw):
    """LK extrapolation and the registered ``names`` on the selected parts (:func:`select_parts`), side by side,
    pysteps' warnings silenced; ``kw`` go to :func:`skydiff.nowcast.evaluation.evaluate`."""
    parts = select_parts(p, args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate(parts, ["extrapolation"] + names, stride=args.stride, crop=args.crop, **kw)


def shipped_with(name: str, **predict_options):  # type: ignore[no-untyped-def]
    """A shipped model as an evaluation function that passes ``predict_options`` explicitly (so that a card's
    default, e.g. its ``min_rain``, is not inherited by a row meant to be without it): ``(fn, n_input_frames)``."""
    from skydiff.nowcast.models import create_model

    m = create_model(name, pretrained=True).eval()

    def fn(x, lt, **kw):  # type: ignore[no-untyped-def]
        return torch.as_tensor(m.predict(x, lt, **predict_options)), None

    return fn, m.n_input_frames


def cases_line(args: argparse.Namespace, ev) -> str:  # type: ignore[no-untyped-def]
    """The header of a validation script's output: part, sources, cases, crops, stride, threads."""
    return (f"{args.part} part{' ' + ', '.join(args.sources) if args.sources else ''}, {len(ev.cases)} cases, "
            f"{args.crop} x {args.crop} centre crops, every {args.stride} steps, {args.threads} threads\n")


def mean_line(ev) -> str:  # type: ignore[no-untyped-def]
    """Mean CSI@1 and ETS@5 over the lead times of every model of an evaluation (what the selection rules use)."""
    return "mean over the leads: " + "; ".join(
        f"{m} CSI@1 {np.nanmean(ev.score(m, 'csi', 1.0)):.4f} ETS@5 {np.nanmean(ev.score(m, 'ets', 5.0)):.4f}"
        for m in ev.models)


if __name__ == "__main__":
    raise SystemExit(main())
