"""Heavy rain through the shipped radar downscalers: are the 4 km block means kept? (RESULTS §8, "Heavy rain")

The shipped ``edm-radar`` samples in pseudo-precipitation (PP) space and decodes with ``pp-radar``'s learned decoder,
which is an approximate inverse of the encoder only where training rain is common (within 2 % up to
``PseudoPrecip.learned_decoder_limit()`` = 48 mm/h). This script measures what that does to heavy rain, side by
side with the exact inverse decoder, with ``conserve=True`` and with the TP-only model ``edm-radar-tp``:

1. synthetic: one uniform 4 x 4 block of low-resolution rain (16 x 16 km) at each rate in a dry 8 x 8 field;
2. real: the low-resolution pixels of rainy 64 x 64 validation tiles (``radar_pairs("validation")``: the time-split
   tail of the training part, never the test part), binned by their rate.

Printed: the ensemble's block mean over the input's block value (1 = kept), and the largest 1 km value. With
``--squares``: smaller squares, the default ``conserve="heavy"`` beside the raw members, and the largest ratio of a
block's peak to its mean (the refusal of peaks above 1 000 mm/h comes from there). Usage::

    python benchmarks/downscale_heavy_rain.py [--members 4] [--steps 18] [--threads 2]
    python benchmarks/downscale_heavy_rain.py --squares --size 2 --rates 50 100 200
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch


def block_peaks(out: np.ndarray, f: int = 4) -> np.ndarray:
    *lead, H, W = out.shape
    return out.reshape(*lead, H // f, f, W // f, f).max((-3, -1))


def block_means(out: np.ndarray, f: int = 4) -> np.ndarray:
    *lead, H, W = out.shape
    return out.reshape(*lead, H // f, f, W // f, f).mean((-3, -1))


def run(lo: np.ndarray, model: str, decoder: str | None, conserve: bool, members: int, steps: int) -> np.ndarray | str:
    from skydiff.downscale import downscale
    from skydiff.errors import InputError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return downscale(lo, model=model, members=members, steps=steps, seed=0, progress=False,
                             decoder=decoder, conserve=conserve)
    except InputError as exc:
        return f"refused: {str(exc)[:60]}"


VARIANTS = (("edm-radar, learned decoder (shipped)", "radar", None, False),
            ("edm-radar, inverse decoder", "radar", "inverse", False),
            ("edm-radar, conserve=True", "radar", None, True),
            ("edm-radar-tp (TP-only)", "radar-tp", None, False))
# --squares: the default post-processing (conserve="heavy") beside the raw members, for both shipped radar models
SQUARE_VARIANTS = (("edm-radar, raw", "radar", None, False),
                   ("edm-radar, conserve='heavy' (default)", "radar", None, "heavy"),
                   ("edm-radar-tp, raw", "radar-tp", None, False))


def peak_to_mean(out: np.ndarray, rows: slice, f: int = 4) -> float:
    """Largest ratio, over members and the input's wet blocks, of a block's largest 1 km value to its block mean."""
    bm, peaks = block_means(out, f)[:, rows, rows], block_peaks(out, f)[:, rows, rows]
    return float((peaks / np.maximum(bm, 1e-6)).max())


def uniform_table(n: int, rows: slice, variants: tuple, a: argparse.Namespace, concentration: bool) -> None:
    """One row per rate in ``a.rates``: an ``n x n`` dry low-res field with the square ``rows x rows`` at that rate,
    through each variant: the block means kept, the largest 1 km value and (``concentration``) the largest ratio of
    a block's peak to its mean."""
    print("| rate (mm/h) | " + " | ".join(v[0] for v in variants) + " |")
    print("|---" * (len(variants) + 1) + "|")
    for rate in a.rates:
        lo = np.zeros((n, n), np.float32)
        lo[rows, rows] = rate
        cells = []
        for _, model, dec, cons in variants:
            out = run(lo, model, dec, cons, a.members, a.steps)
            if isinstance(out, str):
                cells.append(out)
                continue
            ratio = float(block_means(out)[:, rows, rows].mean()) / rate
            cells.append(f"block mean x{ratio:.2f}, max {float(out.max()):.0f}"
                         + (f", peak/mean {peak_to_mean(out, rows):.1f}" if concentration else ""))
        print(f"| {rate:g} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rates", type=float, nargs="+", default=[10.0, 20.0, 40.0, 58.0, 80.0])
    ap.add_argument("--max-tiles", type=int, default=400, help="validation tiles to read (per the radar_pairs seed)")
    ap.add_argument("--squares", action="store_true",
                    help="only squares of --size low-res pixels at each of --rates, raw and with the default "
                         "conserve='heavy' (part 1 and 2 are skipped)")
    ap.add_argument("--size", type=int, default=2, help="with --squares: the square's side in low-res pixels")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.squares:  # squares of --size low-res pixels in a dry 16 x 16 field, raw and with the default correction
        print(f"squares of {a.size} x {a.size} low-res pixels ({4 * a.size} km) in a dry 16 x 16 field; {a.members} "
              f"members, {a.steps} steps, seed 0, label unknown")
        uniform_table(16, slice(7, 7 + a.size), SQUARE_VARIANTS, a, concentration=True)
        return
    from skydiff.downscale.data import radar_pairs
    from skydiff.downscale.interface import get_downscaler

    print(f"learned_decoder_limit of pp-radar: {get_downscaler('radar').pp.learned_decoder_limit():.1f} mm/h")
    print(f"\n1. one uniform 4 x 4 block (16 x 16 km) in a dry 8 x 8 field; {a.members} members, {a.steps} steps, "
          "seed 0")
    uniform_table(8, slice(2, 6), VARIANTS, a, concentration=False)

    t0 = time.perf_counter()
    pairs = radar_pairs("validation", max_tiles=a.max_tiles, progress=False)
    hi_lo = np.asarray(pairs.lo)
    keep = np.flatnonzero(hi_lo.reshape(len(hi_lo), -1).max(1) >= 20.0)
    print(f"\n2. validation tiles: {len(hi_lo)} read ({time.perf_counter() - t0:.0f} s), {keep.size} with a low-res "
          f"pixel >= 20 mm/h; sources {sorted(set(np.asarray(pairs.source)[keep]))}")
    if keep.size == 0:
        return
    lo = hi_lo[keep].astype(np.float32)
    bins = ((5.0, 20.0), (20.0, 48.0), (48.0, 1000.0))
    print("| low-res rate bin (mm/h), pixels | " + " | ".join(v[0] for v in VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 1) + "|")
    res, ptm = {}, {}
    for name, model, dec, cons in VARIANTS:
        out = run(lo, model, dec, cons, a.members, a.steps)
        res[name] = out if isinstance(out, str) else block_means(out).mean(0)  # ensemble-mean block means
        ptm[name] = None if isinstance(out, str) else block_peaks(out) / np.maximum(block_means(out), 1e-6)
    for b0, b1 in bins:
        sel = (lo >= b0) & (lo < b1)
        cells = []
        for name, *_ in VARIANTS:
            r = res[name]
            cells.append(r if isinstance(r, str) else f"x{float(r[sel].sum() / lo[sel].sum()):.2f}")
        print(f"| [{b0:g}, {b1:g}), {int(sel.sum())} | " + " | ".join(cells) + " |", flush=True)
    # how concentrated a block's rain is: its largest 1 km value over its mean, the truth beside every member
    hi = np.asarray(pairs.hi)[keep]
    truth = block_peaks(hi) / np.maximum(lo, 1e-6)
    print("\n| peak / block mean: median, max | truth | " + " | ".join(v[0] for v in VARIANTS) + " |")
    print("|---" * (len(VARIANTS) + 2) + "|")
    for b0, b1 in bins:
        sel = (lo >= b0) & (lo < b1) & np.isfinite(truth)
        cells = [f"{np.median(truth[sel]):.2f}, {truth[sel].max():.2f}"]
        for name, *_ in VARIANTS:
            r = ptm[name]
            cells.append("-" if r is None else f"{np.median(r[:, sel]):.2f}, {r[:, sel].max():.2f}")
        print(f"| [{b0:g}, {b1:g}) | " + " | ".join(cells) + " |", flush=True)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s (part 2)")


if __name__ == "__main__":
    main()
