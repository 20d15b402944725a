"""Tiles for the sampler study of RESULTS §8 ("Sampler settings"): tuning tiles from the TRAIN part and the 60-tile
subset of the held-back test tiles.

Usage (from the repository root, with the shared data)::

    python benchmarks/downscale_sampler_tiles.py --out runs/ds_tune [--test-npz .gpu/ds_tiles.npz]
    python benchmarks/downscale_sampler_tiles.py --out runs/ds_tune --skip-tune --validation 20 \
        --test-npz .gpu/ds_tiles.npz --fresh 30

- ``tune_tiles.npz``: 20 rainy 64 x 64 tiles (seed 0) from each of the three training sources that match the three
  test sources (KNMI 2010 < 05:00 UTC, FMI 20160928, KNMI January 2021; MRMS, which has no test counterpart, is
  left out), built like ``benchmarks/downscale_radar.py``'s test tiles (``skydiff.downscale.data.radar_pairs``).
  The diffusion models were trained on this part, so tuning on it is in-sample (there is no validation part).
- ``test60_tiles.npz`` (with ``--test-npz``, the 1 500 held-back tiles written by ``downscale_radar.py
  --save-tiles``): ``rng = default_rng(1)``; for each source in file order ``rng.choice(its indices, 20,
  replace=False)``, in drawn order.

- ``val_tiles.npz`` (with ``--validation N``): N rainy tiles (seed 0) from each source of the ``validation`` part of
  ``radar_pairs`` (the time-split tail of TRAIN: KNMI 2010 04:00-04:55, FMI 20160928 17:25-18:00, KNMI January 2021
  evenings 09-10, MRMS 01:00-01:10; at most as many as a source has), for choosing between models trained on the
  ``fit`` part (``train_downscale.py --part fit``).
- ``val{K}_tiles.npz`` (with ``--validation N --validation-round K``, K ≥ 2): a K-th validation draw, ``rng =
  default_rng(K + 1)`` over each source's validation tiles not in the earlier rounds (matched by content; a source
  with too few left gives what it has — KNMI January 2021 09-10 holds only 22 rainy tiles), for confirming on new
  tiles a rule suggested by an earlier round. Rounds 1 … K−1 are re-drawn to know which tiles they used: pass
  ``--earlier-per-source N0`` when they were drawn with another N (rounds 1-8 used 20; round 9 was
  ``--validation 100 --validation-round 9 --earlier-per-source 20``; round 10 ``--validation 150
  --validation-round 10 --earlier-per-source 20 --round-size 9=100``).
- ``test_fresh_tiles.npz`` (with ``--test-npz`` and ``--fresh N``): N tiles per source of the 1 500 held-back tiles,
  none of them in ``test60_tiles.npz`` (``rng = default_rng(2)`` over the rest of each source), for scoring once a
  variant chosen on the validation tiles.
- ``test_fresh{K}_tiles.npz`` (with ``--fresh-round K``, K ≥ 2): the K-th such draw, ``rng = default_rng(K + 1)``
  over what test60 and rounds 1 … K−1 left, for the next variant chosen on validation (each round is scored once).

All files hold ``hi``, ``lo``, ``source`` and are read by ``downscale_radar.py --tiles-npz``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/ds_tune")
    ap.add_argument("--test-npz", default=None, help="the 1 500 held-back tiles (downscale_radar.py --save-tiles)")
    ap.add_argument("--validation", type=int, default=0, help="also write val_tiles.npz with N tiles per source")
    ap.add_argument("--fresh", type=int, default=0,
                    help="with --test-npz: also write test_fresh_tiles.npz, N per source, disjoint from test60")
    ap.add_argument("--validation-round", type=int, default=1,
                    help="K >= 2: write val{K}_tiles.npz, disjoint from the earlier validation rounds")
    ap.add_argument("--fresh-round", type=int, default=1,
                    help="with --fresh: write the K-th disjoint fresh draw (1: test_fresh_tiles.npz, K: test_freshK)")
    ap.add_argument("--earlier-per-source", type=int, default=None,
                    help="tiles per source that rounds 1 .. K-1 were drawn with (default: --validation)")
    ap.add_argument("--round-size", action="append", default=[], metavar="K=N",
                    help="earlier round K was drawn with N tiles per source (overrides --earlier-per-source for it; "
                         "round 10 needs --earlier-per-source 20 --round-size 9=100)")
    ap.add_argument("--skip-tune", action="store_true", help="do not (re)write tune_tiles.npz")
    a = ap.parse_args()
    sizes = {}
    for item in a.round_size:
        k, sep, n = item.partition("=")
        if not sep or not k.strip().isdigit() or not n.strip().isdigit():
            ap.error(f"--round-size takes K=N, got {item!r}")
        sizes[int(k)] = int(n)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    from skydiff.downscale.data import radar_pairs

    if not a.skip_tune:
        parts = [radar_pairs("train", sources=(s,), max_tiles=20, seed=0, progress=False)
                 for s in ("knmi2010", "fmi2016", "knmi2021-01")]
        _save(out / "tune_tiles.npz", parts)
    if a.validation:
        from skydiff.downscale.data import RADAR_SOURCES

        n_earlier = a.validation if a.earlier_per_source is None else a.earlier_per_source
        n_first = a.validation if a.validation_round == 1 else n_earlier
        parts = [radar_pairs("validation", sources=(s,), max_tiles=n_first, seed=0, progress=False)
                 for s in RADAR_SOURCES["validation"]]
        if a.validation_round == 1:
            _save(out / "val_tiles.npz", parts)
        else:
            used = {p.hi[i].tobytes() for p in parts for i in range(len(p))}  # round 1
            every = {s: radar_pairs("validation", sources=(s,), progress=False) for s in RADAR_SOURCES["validation"]}
            for k in range(2, a.validation_round + 1):
                rng = np.random.default_rng(k + 1)
                new = []
                for s, allp in every.items():
                    free = [i for i in range(len(allp)) if allp.hi[i].tobytes() not in used]
                    n = a.validation if k == a.validation_round else sizes.get(k, n_earlier)
                    pick = np.sort(rng.choice(free, min(n, len(free)), replace=False)) if free else []
                    new.append(allp.subset(np.asarray(pick, np.int64)))
                used.update(p.hi[i].tobytes() for p in new for i in range(len(p)))
            _save(out / f"val{a.validation_round}_tiles.npz", new)
    if a.test_npz:
        z = np.load(a.test_npz)
        tsrc = z["source"].astype(str)
        rng = np.random.default_rng(1)
        idx = np.concatenate([rng.choice(np.flatnonzero(tsrc == s), 20, replace=False) for s in dict.fromkeys(tsrc)])
        np.savez_compressed(out / "test60_tiles.npz", hi=z["hi"][idx], lo=z["lo"][idx], source=tsrc[idx])
        print("test subset", len(idx), "tiles")
        if a.fresh:
            used = set(idx.tolist())
            for k in range(1, a.fresh_round + 1):  # rounds 1 .. K, each disjoint from test60 and the earlier rounds
                rng = np.random.default_rng(k + 1)
                fresh = np.concatenate([rng.choice([i for i in np.flatnonzero(tsrc == s) if i not in used], a.fresh,
                                                   replace=False) for s in dict.fromkeys(tsrc)])
                assert not used.intersection(fresh.tolist())
                used.update(fresh.tolist())
            name = "test_fresh_tiles.npz" if a.fresh_round == 1 else f"test_fresh{a.fresh_round}_tiles.npz"
            np.savez_compressed(out / name, hi=z["hi"][fresh], lo=z["lo"][fresh], source=tsrc[fresh])
            print(f"fresh test subset, round {a.fresh_round}:", len(fresh), "tiles (none in test60 or earlier rounds)")


def _save(path: Path, parts: list) -> None:
    hi = np.concatenate([p.hi for p in parts])
    lo = np.concatenate([p.lo for p in parts])
    src = np.concatenate([p.source for p in parts])
    np.savez_compressed(path, hi=hi, lo=lo, source=src)
    print(path.name, hi.shape, dict(zip(*np.unique(src, return_counts=True))))


if __name__ == "__main__":
    main()
