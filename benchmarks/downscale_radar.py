"""Radar downscaling benchmark, 4 km -> 1 km, on held-back radar TEST tiles, all methods side by side in one run.

    python benchmarks/downscale_radar.py                      # 96 tiles, 8 members, 18 Heun steps
    python benchmarks/downscale_radar.py --tiles 48 --members 4 --steps 18
    python benchmarks/downscale_radar.py --tiles 1500 --save-tiles T.npz --tiles-only   # tiles for another machine
    python benchmarks/downscale_radar.py --tiles-npz T.npz --device cuda --out DIR/x.txt --figures DIR  # on a GPU
    python benchmarks/downscale_radar.py --tiles-npz T.npz --steps 32 --sigma-min 0.03 --rho 7 --churn 0  # sampler
    python benchmarks/downscale_radar.py --tiles-npz T.npz --extra "PP dry-atom diffusion=runs/downscale/edm-radar-atom/edm-radar-atom"

Test tiles: rainy 64 x 64 tiles (>= 10 % of pixels >= 0.1 mm/h, fully valid) of the held-back part of the shared
radar data (KNMI 2010-08-26 >= 05:00 UTC, FMI 20170509, KNMI February 2021 evenings), an equal number drawn at
random (seed 0) from each source; low resolution = 4 x 4 block means (16 x 16).

Methods: bicubic interpolation (raw, and clamped at 0), spectral zero-padding (raw, and clamped), the TP-only
diffusion model (``edm-radar-tp``, log1p space) and the PP diffusion model (``edm-radar``), the last two with the
shipped weights (or ``--weights-dir``), raw and with each member's 4 x 4 block means matched to the low-res
input ("+ mass fix": :func:`skydiff.downscale.baselines.match_block_means`, ``downscale(..., conserve=True)``).
``--extra LABEL=PATH`` (repeatable) adds further diffusion models, loaded with :func:`skydiff.registry.load_model`
from the weights stem PATH (e.g. an ablation), as rows scored exactly like the two above (same sampler and seed).
Sampler: EDM Heun on the Karras schedule (``skydiff.downscale.diffusion.karras_sigmas``); ``--steps``, and
``--sigma-min`` / ``--rho`` (the last noise level before the final step to 0, and the schedule's curvature; default:
each model's own, 0.002 and 7) and ``--churn`` (EDM ``S_churn``, default 0) override it for both diffusion models.
With a larger sigma_min the output is the denoiser's estimate ``D(x; sigma_min)`` at a higher noise level.

Metrics (skydiff.verify), pooled over all test tiles:

- spectrum: ``rapsd_ratio_db`` (mean RAPSD over members and tiles vs the truth's), max |dB| over wavelengths >= 2 px;
  also per source (bicubic and the raw diffusion models): the pooled ratio weighs each source by its rain power
- p99 / p99.9 relative bias (all pixels pooled), wet fraction (>= 0.1 mm/h), fraction of negative values
- CRPS (fair estimator; a deterministic method is a 1-member ensemble, its CRPS = MAE), CRPS of 4 x 4 and
  16 x 16 average-pooled fields; MAE of the ensemble mean; FSS (1 and 5 mm/h, 8 px window, pooled, member mean)
- low-res consistency: mean |block_mean(pred) - lowres|
- sampling time per field (one member of one 64 x 64 tile), one torch thread
- KS distance of PP (``edm-radar``'s encoder) of the truth tiles to N(0, 1)
- PP minus TP-only diffusion: per-tile CRPS differences with a 95 % bootstrap interval over tiles (2000 resamples);
  with ``--extra``, also every extra model minus TP-only and minus PP (the same resampled tile sets)

Targets (issue #6): spectrum within +-1 dB at every wavelength >= 2 px; |p99.9 bias| <= 5 %; no negative values;
CRPS <= 0.9 x MAE of bicubic; KS(PP) <= 0.05; PP diffusion better than TP-only diffusion.
Writes benchmarks/results/downscale_radar.txt and figures benchmarks/figures/downscale_radar_*.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import os
from pathlib import Path

import numpy as np
import torch

from skydiff._compat import PRECISIONS
from skydiff.downscale.baselines import bicubic, match_block_means, smooth_block_means, spectral_zeropad
from skydiff.downscale.data import RADAR_SOURCES, block_mean, radar_label, radar_pairs
from skydiff.registry import create_model, load_model
from skydiff.verify import (crps_ensemble, crps_pooled, fss, ks_normal, negative_fraction, percentile_bias,
                            rapsd_ratio_db, wet_fraction)

ROOT = Path(__file__).resolve().parent
# the benchmarks share one tile cache in the (gitignored) runs folder unless SKYDIFF_CACHE says otherwise
os.environ.setdefault("SKYDIFF_CACHE", str(ROOT.parent / "runs" / "downscale"))


def _block_max(x: np.ndarray, k: int) -> np.ndarray:
    """(..., H, W) -> (..., H // k, W // k) maxima of k x k blocks (as crps_pooled(how="max") pools)."""
    h, w = x.shape[-2] // k * k, x.shape[-1] // k * k
    b = x[..., :h, :w].reshape(*x.shape[:-2], h // k, k, w // k, k)
    return b.max(axis=(-3, -1))


def metrics(pred: np.ndarray, obs: np.ndarray, lo: np.ndarray) -> tuple[dict, np.ndarray]:
    """pred (M, N, H, W), obs (N, H, W), lo (N, h, w) -> (scores, per-tile CRPS (N,), for the bootstrap)."""
    wl, db = rapsd_ratio_db(pred, obs)
    wl, db = np.asarray(wl), np.asarray(db)
    pb = percentile_bias(pred, obs, q=(99, 99.9))
    M = pred.shape[0]
    if M >= 2:
        per_tile = np.asarray(crps_ensemble(pred, obs, estimator="fair", reduce=False)).mean((1, 2))
        c4 = float(crps_pooled(pred, obs, pool=4, how="avg", estimator="fair"))
        c16 = float(crps_pooled(pred, obs, pool=16, how="avg", estimator="fair"))
        # max pooling: average pooling at multiples of the factor only measures the drift of the block means from
        # the input (the input is the truth's 4 x 4 block mean); the block maxima measure structure
        m4 = float(crps_pooled(pred, obs, pool=4, how="max", estimator="fair"))
        m16 = float(crps_pooled(pred, obs, pool=16, how="max", estimator="fair"))
    else:  # one member: CRPS = MAE (pooled fields for the pooled scores)
        per_tile = np.abs(pred[0] - obs).mean((1, 2))
        c4 = float(np.abs(block_mean(pred[0], 4) - block_mean(obs, 4)).mean())
        c16 = float(np.abs(block_mean(pred[0], 16) - block_mean(obs, 16)).mean())
        m4, m16 = (float(np.abs(_block_max(pred[0], k) - _block_max(obs, k)).mean()) for k in (4, 16))
    crps = float(per_tile.mean())  # tiles have equal sizes: the mean of tile means is the pooled mean
    f = block_mean(pred, 4)
    out = {
        "spectrum_max_abs_db": float(np.max(np.abs(db[wl >= 2.0]))),
        "spectrum_db": {f"{w:.2f}": round(float(d), 3) for w, d in zip(wl, db)},
        "p99_bias": float(pb["p99"]),
        "p999_bias": float(pb["p99.9"]),
        "wet_fraction": float(wet_fraction(pred)),
        "negative_fraction": float(negative_fraction(pred)),
        "min": float(pred.min()),
        "crps": crps, "crps_pool4": c4, "crps_pool16": c16, "crps_max4": m4, "crps_max16": m16,
        "mae_ens_mean": float(np.abs(pred.mean(0) - obs).mean()),
        "fss1_8px": float(np.mean([fss(pred[m], obs, 1.0, 8, how="pooled") for m in range(M)])),
        "fss5_8px": float(np.mean([fss(pred[m], obs, 5.0, 8, how="pooled") for m in range(M)])),
        "lowres_abs_err": float(np.abs(f - lo[None]).mean()),
    }
    return out, per_tile


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiles", type=int, default=96, help="test tiles (split equally over the 3 test sources)")
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights-dir", default=None, help="folder with edm-radar(-tp).safetensors, or a run folder with edm-radar(-tp)/edm-radar(-tp)"
                         ".safetensors (e.g. runs/downscale_fit; default: the shipped weights)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results" / "downscale_radar.txt"))
    ap.add_argument("--figures", default=str(ROOT / "figures"), help="folder for the figures")
    ap.add_argument("--device", default="cpu", help="torch device of the diffusion sampling (e.g. cuda)")
    ap.add_argument("--batch", type=int, default=64, help="fields per U-Net call while sampling")
    ap.add_argument("--sigma-min", type=float, default=None,
                    help="smallest nonzero noise level of the sampling schedule (default: the model's, 0.002)")
    ap.add_argument("--rho", type=float, default=None, help="Karras schedule exponent (default: the model's, 7)")
    ap.add_argument("--churn", type=float, default=0.0, help="EDM S_churn of the sampler (default 0 = none)")
    ap.add_argument("--tiles-npz", default=None, help="read the test tiles (hi, lo, source) from this .npz")
    ap.add_argument("--save-tiles", default=None, help="write the test tiles to this .npz")
    ap.add_argument("--tiles-only", action="store_true", help="stop after writing --save-tiles")
    ap.add_argument("--extra", action="append", default=[], metavar="LABEL=PATH",
                    help="score another diffusion model (weights stem PATH, read with load_model) as row LABEL; "
                         "repeatable")
    ap.add_argument("--tile-rows", nargs="*", default=[], metavar="T:O",
                    help="also sample every diffusion model in overlapping T x T windows with O px overlap "
                         "(EDMDownscaler.sample(tile=T, tile_overlap=O)), as rows '<model>, tiles T/O', with a CRPS "
                         "bootstrap against the one-window rows")
    ap.add_argument("--smooth-fix-rows", action="store_true",
                    help="also score every diffusion model with its block means restored by the smooth additive "
                         "correction (downscale(conserve='smooth'), skydiff.downscale.baselines.smooth_block_means), "
                         "as rows '<model> + smooth fix', with CRPS bootstraps against the raw and '+ heavy fix' rows")
    ap.add_argument("--heavy-fix-rows", action="store_true",
                    help="also score PP models with the block means restored only where the low-res rate reaches "
                         "the learned decoder's limit (downscale(conserve='heavy'))")
    ap.add_argument("--precision-rows", nargs="*", default=[], choices=list(PRECISIONS),
                    help="also sample every diffusion model with the U-Net in this precision "
                         "(EDMDownscaler.sample(precision=P)), same noise, as rows '<model>, P', with a CRPS "
                         "bootstrap against the full-precision rows")
    ap.add_argument("--overwrite", action="store_true",
                    help="replace an existing --out (and its .json) and figures; without it they are refused (the "
                         "defaults are the committed benchmarks/results/downscale_radar.txt and benchmarks/figures)")
    a = ap.parse_args()
    if a.tiles_only and not a.save_tiles:  # (it ran the whole benchmark and replaced the results)
        ap.error("--tiles-only needs --save-tiles (it stops after writing the tiles)")
    written = [Path(a.out), Path(a.out).with_suffix(".json")] + [
        Path(a.figures) / f"downscale_radar_{k}.png" for k in ("spectrum", "qq", "examples")]
    if not a.tiles_only and not a.overwrite and any(p.exists() for p in written):
        ap.error(f"{', '.join(str(p) for p in written if p.exists())} exist(s); give another --out/--figures, or "
                 "--overwrite to replace them")
    tile_rows: list[tuple[int, int]] = []
    for t in a.tile_rows:
        try:
            tt, oo = (int(v) for v in t.split(":"))
        except ValueError:
            ap.error(f"--tile-rows takes T:O (two integers), got {t!r}")
        tile_rows.append((tt, oo))
    extras: dict[str, str] = {}
    for e in a.extra:
        label, sep, path = e.partition("=")
        label, path = label.strip(), path.strip()
        if not sep or not label or not path:
            ap.error(f"--extra must be LABEL=PATH, got {e!r}")
        if label in extras or label in ("TP-only diffusion", "PP diffusion") or "clamped" in label or "fix" in label:
            ap.error(f"--extra label {label!r} is taken or reserved")
        extras[label] = path
    torch.set_num_threads(a.threads)
    t_start = time.perf_counter()

    # ---- data: equal numbers of tiles per held-back source
    if a.tiles_npz:
        z = np.load(a.tiles_npz)
        hi, lo, src = z["hi"].astype(np.float32), z["lo"].astype(np.float32), z["source"].astype(str)
    else:
        per = a.tiles // len(RADAR_SOURCES["test"])
        parts = [radar_pairs("test", sources=(s,), max_tiles=per, seed=a.seed, progress=False)
                 for s in RADAR_SOURCES["test"]]
        hi = np.concatenate([p.hi for p in parts])
        lo = np.concatenate([p.lo for p in parts])
        src = np.concatenate([p.source for p in parts])
    if a.save_tiles:
        np.savez_compressed(a.save_tiles, hi=hi, lo=lo, source=src)
        print(f"wrote {a.save_tiles}")
        if a.tiles_only:
            return
    print(f"test tiles: {hi.shape[0]} ({', '.join(f'{s}: {int((src == s).sum())}' for s in np.unique(src))}), "
          f"hi {hi.shape[1:]} -> lo {lo.shape[1:]}; truth p99 {np.percentile(hi, 99):.2f}, "
          f"p99.9 {np.percentile(hi, 99.9):.2f} mm/h, wet fraction {wet_fraction(hi):.3f}", flush=True)

    preds: dict[str, np.ndarray] = {}
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    preds["bicubic"] = bicubic(lo, 4)[None]
    timing["bicubic"] = (time.perf_counter() - t0) / hi.shape[0]
    preds["bicubic (clamped)"] = np.maximum(preds["bicubic"], 0)
    t0 = time.perf_counter()
    preds["spectral zero-pad"] = spectral_zeropad(lo, 4)[None]
    timing["spectral zero-pad"] = (time.perf_counter() - t0) / hi.shape[0]
    preds["spectral zero-pad (clamped)"] = np.maximum(preds["spectral zero-pad"], 0)

    import skydiff.downscale.diffusion  # noqa: F401  (registers the models)

    models = {}
    for label, name in (("TP-only diffusion", "edm-radar-tp"), ("PP diffusion", "edm-radar")):
        try:
            if a.weights_dir:  # <dir>/<name>.safetensors, or a run folder <dir>/<name>/<name>.safetensors
                stem = Path(a.weights_dir) / name
                nested = stem / name
                models[label] = load_model(nested if nested.with_suffix(".safetensors").is_file() else stem).eval()
            else:
                models[label] = create_model(name, pretrained=True).eval()
        except Exception as exc:  # noqa: BLE001
            print(f"{label} ({name}): not available: {exc}", flush=True)
    for label, path in extras.items():  # a missing extra is an error, not a skipped row
        models[label] = load_model(path).eval()
    dev = torch.device(a.device)
    lo_t = torch.from_numpy(lo).to(dev)
    sampler = {}
    tiled: list[tuple[str, str]] = []  # (tiled or mixed-precision row, its plain row)
    heavy_rows: list[str] = []  # models with a "+ heavy fix" row (--heavy-fix-rows)
    for label, m in models.items():
        # sampler schedule overrides (attributes read by EDMDownscaler.sample; the weights are not touched)
        if a.sigma_min is not None:
            m.sigma_min = float(a.sigma_min)
        if a.rho is not None:
            m.rho = float(a.rho)
        if not 0 < m.sigma_min < m.sigma_max:
            sys.exit(f"--sigma-min must be in (0, {m.sigma_max}), got {m.sigma_min}")
        sampler[label] = {"steps": a.steps, "sigma_min": m.sigma_min, "sigma_max": m.sigma_max, "rho": m.rho,
                          "s_churn": a.churn}
        m.to(dev)
        t0 = time.perf_counter()
        # a model conditioned on the radar product gets each tile's product (skydiff.downscale.data.RADAR_LABELS)
        lab = [radar_label(str(s)) for s in src] if getattr(m, "labels", ()) else None
        if lab is not None:
            sampler[label]["labels"] = "per tile, from its source (RADAR_LABELS)"
        ens = m.sample(lo_t, members=a.members, steps=a.steps, seed=a.seed, progress=True, batch_size=a.batch,
                       s_churn=a.churn, label=lab)
        ens = ens.cpu().numpy()  # (the copy to the CPU waits for the device)
        timing[label] = (time.perf_counter() - t0) / (a.members * hi.shape[0])
        preds[label] = ens
        preds[f"{label} + mass fix"] = match_block_means(ens, lo, 4)
        limit = m.saturation_limit() if a.heavy_fix_rows else None
        if limit is not None:  # downscale(conserve="heavy")
            heavy_rows.append(label)
            preds[f"{label} + heavy fix"] = match_block_means(ens, lo, 4, where=lo >= limit)
        if a.smooth_fix_rows:  # downscale(conserve="smooth")
            preds[f"{label} + smooth fix"] = smooth_block_means(ens, lo, 4)
        print(f"{label}: sampled {ens.shape} in {time.perf_counter() - t0:.0f} s", flush=True)
        # the same model and noise, denoised in tt x tt windows or with the U-Net in a lower precision
        variants = ([(f"{label}, tiles {tt}/{oo}", {"tile": tt, "tile_overlap": oo}) for tt, oo in tile_rows]
                    + [(f"{label}, {prec}", {"precision": prec}) for prec in a.precision_rows])
        for row, kw in variants:
            t0 = time.perf_counter()
            ens = m.sample(lo_t, members=a.members, steps=a.steps, seed=a.seed, progress=True, batch_size=a.batch,
                           s_churn=a.churn, label=lab, **kw).cpu().numpy()
            timing[row] = (time.perf_counter() - t0) / (a.members * hi.shape[0])
            preds[row] = ens
            tiled.append((row, label))
            print(f"{row}: sampled {ens.shape} in {time.perf_counter() - t0:.0f} s", flush=True)

    scored = {k: metrics(v, hi, lo) for k, v in preds.items()}
    res = {k: v[0] for k, v in scored.items()}
    by_source = {}  # spectrum ratio per source: dB at 2.06 / 3.05 px and max |dB| over >= 2 px
    for k in ["bicubic", *models, *(f"{m} + mass fix" for m in models), *(f"{m} + heavy fix" for m in heavy_rows),
              *(f"{m} + smooth fix" for m in models if a.smooth_fix_rows), *(r for r, _ in tiled)]:
        by_source[k] = {}
        for s in np.unique(src):
            wl, db = (np.asarray(v) for v in rapsd_ratio_db(preds[k][:, src == s], hi[src == s]))
            by_source[k][str(s)] = {"db_2.06": float(db[np.argmin(np.abs(wl - 2.06))]),
                                    "db_3.05": float(db[np.argmin(np.abs(wl - 3.05))]),
                                    "max_abs_db": float(np.max(np.abs(db[wl >= 2.0])))}
    mae_bicubic = res["bicubic"]["crps"]
    ks = None
    ks_extra = {}
    for k in ("PP diffusion", *extras):
        if k in models and getattr(models[k], "pp", None) is not None:
            with torch.no_grad():
                pp = models[k].encode(torch.from_numpy(hi).to(dev)).cpu()
                pp_lo = models[k].encode(torch.from_numpy(lo).to(dev)).cpu()
            kk = {"hi (1 km)": float(ks_normal(pp)), "lo (4 km)": float(ks_normal(pp_lo))}
            if k == "PP diffusion":
                ks = kk
            else:
                ks_extra[k] = kk

    # ---- table
    cols = [("spec max|dB|", "spectrum_max_abs_db", "{:.2f}"), ("p99 bias", "p99_bias", "{:+.1%}"),
            ("p99.9 bias", "p999_bias", "{:+.1%}"), ("wet frac", "wet_fraction", "{:.3f}"),
            ("neg frac", "negative_fraction", "{:.4f}"), ("CRPS", "crps", "{:.4f}"), ("CRPS/MAEbic", None, ""),
            ("CRPS p4", "crps_pool4", "{:.4f}"), ("CRPS p16", "crps_pool16", "{:.4f}"),
            ("CRPS max4", "crps_max4", "{:.4f}"), ("CRPS max16", "crps_max16", "{:.4f}"),
            ("MAE mean", "mae_ens_mean", "{:.4f}"), ("FSS1", "fss1_8px", "{:.3f}"), ("FSS5", "fss5_8px", "{:.3f}"),
            ("lowres err", "lowres_abs_err", "{:.4f}"), ("s/field", None, "")]
    lines = []
    head = f"{'method':<28}" + "".join(f"{c[0]:>13}" for c in cols)
    lines += [head, "-" * len(head)]
    truth_wet = float(wet_fraction(hi))
    for k, r in res.items():
        row = f"{k:<28}"
        for name, key, fmt in cols:
            if name == "CRPS/MAEbic":
                row += f"{r['crps'] / mae_bicubic:>13.3f}"
            elif name == "s/field":
                row += f"{timing[k]:>13.4f}" if k in timing else f"{'-':>13}"
            else:
                row += f"{fmt.format(r[key]):>13}"
        lines.append(row)
    lines.append(f"{'truth':<28}{'':>13}{'':>13}{'':>13}{truth_wet:>13.3f}{0.0:>13.4f}")
    table = "\n".join(lines)

    # ---- targets
    def verdict(k: str) -> list[str]:
        r = res[k]
        out = [
            "spectrum within +-1 dB at every wavelength >= 2 px: "
            f"{'MET' if r['spectrum_max_abs_db'] <= 1 else 'MISSED'}"
            f" (max |dB| {r['spectrum_max_abs_db']:.2f})",
            f"|p99.9 bias| <= 5 %: {'MET' if abs(r['p999_bias']) <= 0.05 else 'MISSED'} ({r['p999_bias']:+.1%})",
            f"no negative values: {'MET' if r['negative_fraction'] == 0 else 'MISSED'} "
            f"(fraction {r['negative_fraction']:.4f})",
            f"CRPS <= 0.9 x MAE(bicubic): {'MET' if r['crps'] <= 0.9 * mae_bicubic else 'MISSED'} "
            f"(ratio {r['crps'] / mae_bicubic:.3f})",
        ]
        return out

    tlines = []
    for k in ("PP diffusion", "TP-only diffusion", *extras):
        if k in res:
            tlines.append(f"{k}:")
            tlines += [f"  {v}" for v in verdict(k)]
    if ks is not None:
        tlines.append(f"KS(PP, N(0,1)) <= 0.05 on the test truth: hi {ks['hi (1 km)']:.4f} "
                      f"({'MET' if ks['hi (1 km)'] <= 0.05 else 'MISSED'}), lo {ks['lo (4 km)']:.4f} "
                      f"({'MET' if ks['lo (4 km)'] <= 0.05 else 'MISSED'})")
    for k, v in ks_extra.items():
        tlines.append(f"KS({k} PP, N(0,1)) on the test truth: hi {v['hi (1 km)']:.4f}, lo {v['lo (4 km)']:.4f}")
    def bootstrap(k1: str, k2: str) -> dict:
        """Per-tile CRPS (fair, from metrics()) of k1 minus k2, mean and 95 % bootstrap interval over tiles (2000
        resamples; the same resampled tile sets for every pair: generator seed 0)."""
        d = scored[k1][1] - scored[k2][1]
        means = d[np.random.default_rng(0).integers(0, d.size, (2000, d.size))].mean(1)
        lo95, hi95 = np.percentile(means, [2.5, 97.5])
        return {"mean_diff": float(d.mean()), "ci95": [float(lo95), float(hi95)], "n_tiles": int(d.size),
                "first_better_tiles": float((d < 0).mean())}

    short = {"PP diffusion": "PP", "TP-only diffusion": "TP-only"}
    pairs = ([("PP diffusion", "TP-only diffusion")] + [(k, b) for k in extras
                                                       for b in ("TP-only diffusion", "PP diffusion")]
             + [(f"{k} + mass fix", k) for k in models]  # what conserve=True changes
             + [(f"{k} + heavy fix", k) for k in heavy_rows]  # what conserve="heavy" changes
             + [(f"{k} + smooth fix", b) for k in models for b in (k, f"{k} + heavy fix")]  # conserve="smooth"
             + tiled)  # what smaller windows or a lower precision change
    boot, boots = None, {}
    if a.members >= 2:
        for k1, k2 in pairs:
            if k1 in preds and k2 in preds:
                b = bootstrap(k1, k2)
                n1, n2 = short.get(k1, k1), short.get(k2, k2)
                boots[f"{n1} - {n2}"] = b
                tlines.append(f"CRPS {n1} - {n2}, mean over {b['n_tiles']} tiles: {b['mean_diff']:+.5f} mm/h, 95 % "
                              f"bootstrap interval [{b['ci95'][0]:+.5f}, {b['ci95'][1]:+.5f}]; {n1} better on "
                              f"{b['first_better_tiles']:.1%} of the tiles")
        if "PP - TP-only" in boots:
            boot = {**boots["PP - TP-only"], "pp_better_tiles": boots["PP - TP-only"]["first_better_tiles"]}
    for k in ("PP diffusion", *extras):
        if k in res and "TP-only diffusion" in res:
            pp, tp = res[k], res["TP-only diffusion"]
            better = {
                "spectrum": pp["spectrum_max_abs_db"] < tp["spectrum_max_abs_db"],
                "|p99.9 bias|": abs(pp["p999_bias"]) < abs(tp["p999_bias"]),
                "CRPS": pp["crps"] < tp["crps"], "CRPS pool 4": pp["crps_pool4"] < tp["crps_pool4"],
                "CRPS pool 16": pp["crps_pool16"] < tp["crps_pool16"],
            }
            tlines.append(f"{short.get(k, k)} better than TP-only on: "
                          + ", ".join(f"{n} {'yes' if v else 'no'}" for n, v in better.items())
                          + f" -> {'MET' if all(better.values()) else 'MISSED (not on every metric)'}")
    wall = time.perf_counter() - t_start
    gpu = f", sampling on {torch.cuda.get_device_name(dev)}" if dev.type == "cuda" else ""
    machine = (f"{platform.processor() or platform.machine()}{gpu}, {torch.get_num_threads()} torch thread(s), "
               f"torch {torch.__version__}, python {sys.version.split()[0]}")
    cmd = "python benchmarks/downscale_radar.py " + " ".join(sys.argv[1:])
    report = (f"# radar downscaling 4 km -> 1 km, held-back test tiles\ncommand: {cmd}\n"
              f"written to: {a.out} (+ .json), figures in {a.figures}\nmachine: {machine}\n"
              f"tiles: {hi.shape[0]} x 64 x 64 ({', '.join(f'{s} {int((src == s).sum())}' for s in np.unique(src))});"
              f" members {a.members}, Heun steps {a.steps} ({2 * a.steps - 1} network evaluations), seed {a.seed}\n"
              + "".join(f"sampler {k}: " + ", ".join(f"{n} {v:g}" if isinstance(v, (int, float)) else f"{n} {v}"
                                                     for n, v in d.items()) + "\n"
                        for k, d in sampler.items())
              + f"CRPS: fair estimator; deterministic methods are 1-member ensembles (CRPS = MAE); "
              f"MAE of bicubic = {mae_bicubic:.4f} mm/h\n\n{table}\n\n" + "\n".join(tlines)
              + f"\n\nspectrum ratio (dB) per wavelength (px):\n"
              + "\n".join(f"  {k}: {json.dumps(r['spectrum_db'])}" for k, r in res.items())
              + "\n\nspectrum ratio by source (dB at 2.06 px / 3.05 px, max |dB| over >= 2 px):\n"
              + "\n".join(f"  {k:<18} {s:<14} {d['db_2.06']:+6.2f} / {d['db_3.05']:+6.2f}, max {d['max_abs_db']:5.2f}"
                          for k, v in by_source.items() for s, d in v.items())
              + f"\n\nwall time {wall:.0f} s\n")
    print(report)
    outp = Path(a.out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    tmp = outp.with_name(f".{outp.name}.tmp")
    tmp.write_text(report)
    tmp.replace(outp)
    (outp.with_suffix(".json")).write_text(json.dumps({"results": res, "timing_s_per_field": timing, "ks_pp": ks,
                                                       "mae_bicubic": mae_bicubic, "command": cmd,
                                                       "crps_pp_minus_tp_bootstrap": boot, "sampler": sampler,
                                                       "crps_bootstrap": boots, "extras": extras,
                                                       "ks_pp_extra": ks_extra,
                                                       "spectrum_by_source": by_source,
                                                       "machine": machine}, indent=1))

    # ---- figures
    from skydiff.plot import _new_figure, plot_field, plot_qq, plot_spectrum_ratio, save_figure

    figs = Path(a.figures)
    ratios = {k: rapsd_ratio_db(v, hi) for k, v in preds.items() if "clamped" not in k and "fix" not in k}
    fig = plot_spectrum_ratio(ratios, pixel_km=1.0, band_db=1.0,
                              title="RAPSD ratio to the truth, held-back radar tiles")
    fig.axes[0].set_ylim(-15, 5)  # zero-padding falls to about -125 dB below 5.3 px (off the axis)
    save_figure(fig, figs / "downscale_radar_spectrum.png")
    plot_qq({k: v for k, v in preds.items() if "clamped" not in k and "fix" not in k}, hi, log=True,
            path=figs / "downscale_radar_qq.png", title="Q-Q vs the truth (all pixels)")
    # example maps: the wettest tile of each source
    rows = [int(np.flatnonzero(src == s)[np.argmax(hi[src == s].mean((1, 2)))]) for s in np.unique(src)]
    cols_ = ["low res (4 km)", "truth (1 km)", "bicubic (grey < 0)", "zero-pad (grey < 0)"] + [k for k in models]
    fig = _new_figure(2.4 * len(cols_), 2.5 * len(rows))
    for i, r in enumerate(rows):
        fields = [np.kron(lo[r], np.ones((4, 4))), hi[r], preds["bicubic"][0, r], preds["spectral zero-pad"][0, r]]
        fields += [preds[k][0, r] for k in models]
        for j, (t, fld) in enumerate(zip(cols_, fields)):
            ax = fig.add_subplot(len(rows), len(cols_), i * len(cols_) + j + 1)
            plot_field(ax, np.where(fld < 0, np.nan, fld) if j else fld, title=t if i == 0 else None,
                       colorbar=False, nodata_legend=False)
    save_figure(fig, figs / "downscale_radar_examples.png")
    print(f"figures: {figs}/downscale_radar_{{spectrum,qq,examples}}.png")


if __name__ == "__main__":
    main()
