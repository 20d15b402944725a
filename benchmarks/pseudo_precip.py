#!/usr/bin/env python
"""Train and check the pseudo-precipitation (PP) models "pp-radar" (TP only) and "pp-era5" (TP + VIMD).

Radar (``pp-radar``): rainy 64 × 64 tiles of the shared radar TRAIN part at 1 km and their 4 × 4 block means at
4 km (``skydiff.downscale.data.radar_pairs``, the tiles the diffusion downscaler is trained on), pooled with
equal shares of 1 km and 4 km pixels. 15 % of the train tiles (at random) are held out ("train hold-out": the
same weather regimes); the TEST part (KNMI 2010 from 05:00, FMI 20170509, KNMI February 2021) is held back and
only evaluated. Side by side: the shipped design (dry pixels, < 0.01 mm/h, spread by the distance to rain) and the
strictly per-grid-point variant (all dry pixels, < 0.1 mm/h, on one point).

KS columns: "KS" over all valid pixels; "KS censored" = sup over z ≥ z_edge only (ignores how the dry pixels are
spread below the edge); "KS wet shape" = KS of the wet part against N(0, 1) truncated to [z_edge, ∞) (the
shape of the wet mapping, whatever the wet fraction).

ERA5 (``pp-era5``): hourly TP and VIMD (model-level route on 2022-08-31, pressure-level route on 2020-01-01;
``skydiff.downscale.era5.vimd``) at 0.25° (40 × 40) and 1° (10 × 10), hours 00-17 UTC for training, 18-23 UTC held
back.

Measured for each model and data part: KS distance of PP to N(0, 1) over all valid pixels (``skydiff.verify.
ks_normal``) and the censored KS above the dry edge, PP mean/sd/skewness/excess kurtosis, reconstruction error of
``decode(encode(tp))`` (MAE over wet pixels and all pixels, p99/p99.9 relative bias), dry fraction of the data
and of the decoded field, the share of dry pixels decoded to exactly 0. Also: spectral truncation of TP (negative
rain) against truncation in PP space decoded back (ERA5 day 2022-08-31, 0.25° → 1° Nyquist).

Usage (from the repository root; about 10 minutes on one core)::

    python benchmarks/pseudo_precip.py               # trains, writes the shipped weights and the results
    python benchmarks/pseudo_precip.py --steps 300   # quicker: weights not written unless --save, results to *_run

Writes ``benchmarks/results/pseudo_precip.txt``, ``benchmarks/figures/pseudo_precip_qq.png`` and
``src/skydiff/downscale/weights/pp-{radar,era5}.{safetensors,json}`` only for the recorded run (every option at its
default) or with ``--save``; other runs write ``pseudo_precip_run.txt`` and ``pseudo_precip_qq_run.png``.
"""

from __future__ import annotations

RADAR_DRY_THRESHOLD = 0.01  # mm/h, the shipped pp-radar's (0.1 before 2026-11-26)

import argparse
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# the benchmarks share one tile cache in the (gitignored) runs folder unless SKYDIFF_CACHE says otherwise
os.environ.setdefault("SKYDIFF_CACHE", str(ROOT / "runs" / "downscale"))


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fmt_row(name: str, r: dict) -> str:
    return (f"| {name} | {r['n']:,} | {r['ks']:.3f} | {r['ks_censored']:.3f} | {r['ks_wet_shape']:.3f} | "
            f"{r['mean']:+.2f} / {r['sd']:.2f} | "
            f"{r['skew']:+.2f} / {r['excess_kurtosis']:+.2f} | {r['dry_fraction_true']:.3f} / "
            f"{r['dry_fraction_decoded']:.3f} | {r['decoded_exact_zero_on_dry']:.3f} | {r['mae_wet']:.4f} | "
            f"{r['mae_all']:.4f} | {100 * r['p99_bias']:+.1f} / {100 * r['p99.9_bias']:+.1f} |")


HEADER = ("| data | pixels | KS | KS censored | KS wet shape | PP mean / sd | skew / ex. kurt. | dry frac. true / "
          "decoded | dry → exact 0 | MAE wet (mm/h) | MAE all (mm/h) | p99 / p99.9 bias (%) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def spectral_truncate(x: np.ndarray, keep: int) -> np.ndarray:
    """Zero every 2-D FFT coefficient with |k| > keep (per field), real part back."""
    f = np.fft.fft2(x)
    ky = np.fft.fftfreq(x.shape[-2]) * x.shape[-2]
    kx = np.fft.fftfreq(x.shape[-1]) * x.shape[-1]
    mask = (np.abs(ky)[:, None] <= keep) & (np.abs(kx)[None, :] <= keep)
    return np.real(np.fft.ifft2(f * mask))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500, help="training steps of each radar model")
    ap.add_argument("--era5-steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32768)
    ap.add_argument("--train-tiles", type=int, default=2400)
    ap.add_argument("--test-tiles", type=int, default=1500)
    ap.add_argument("--save", action="store_true", help="write the shipped weights even with non-default steps")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-only", action="store_true",
                    help="no training: evaluate the shipped pp-radar / pp-era5 weights (writes pseudo_precip_eval.txt)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    from skydiff import plot as P
    from skydiff.downscale import WEIGHTS_DIR
    from skydiff.downscale.data import era5_pairs, radar_pairs
    from skydiff.downscale.pseudo import pp_report, train_pseudo
    from skydiff.registry import save_model
    from skydiff.verify import negative_fraction, percentile_bias

    # the recorded run (every option at its default) writes the shipped weights and the committed results; any
    # other run writes neither unless --save, and its results go to *_run files (a tiny run with another --batch
    # replaced the shipped pp-radar, which the shipped edm-radar holds a copy of)
    recorded = all(getattr(args, k) == ap.get_default(k) for k in ("steps", "era5_steps", "batch", "train_tiles",
                                                                    "test_tiles", "seed"))
    save = (args.save or recorded) and not args.no_save and not args.eval_only
    tag = "_eval" if args.eval_only else ("" if recorded or args.save else "_run")
    from skydiff.registry import create_model
    out_lines: list[str] = []

    def out(s: str = "") -> None:
        print(s, flush=True)
        out_lines.append(s)

    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    out(f"# Pseudo-precipitation (skydiff.downscale.pseudo) — `{cmd}`")
    out(f"torch {torch.__version__}, 1 thread, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")

    # ----------------------------------------------------------------------------------------- radar
    t0 = time.time()
    tr = radar_pairs("train", progress=False, max_tiles=args.train_tiles, seed=args.seed + 11)
    te = radar_pairs("test", progress=False, max_tiles=args.test_tiles, seed=args.seed + 12)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(tr))
    n_hold = int(round(0.15 * len(tr)))
    hold, fit = tr.subset(np.sort(perm[:n_hold])), tr.subset(np.sort(perm[n_hold:]))
    log(f"radar tiles read in {time.time() - t0:.0f}s: fit {fit}, hold-out {hold}, test {te}")
    out("")
    out(f"## Radar (TP only): {len(fit)} train tiles (64×64 at 1 km + 16×16 at 4 km, equal pixel shares), "
        f"{len(hold)} train hold-out tiles, {len(te)} held-back test tiles")
    out(f"train sources {fit.summary()['per_source']}; test sources {te.summary()['per_source']}")

    models = {}
    variants = (("pp-radar (dry spread by distance to rain)", True), ("per-grid-point variant (dry atom)", False))
    for label, spread in variants[:1] if args.eval_only else variants:
        t1 = time.time()
        if args.eval_only:
            m = create_model("pp-radar", pretrained=True)
            out("")
            out(f"### {label}: SHIPPED weights (src/skydiff/downscale/weights/pp-radar), z_edge {float(m.z_edge):+.3f}")
        else:
            # the shipped design's dry threshold is 0.01 mm/h since 2026-11-26 (chosen on the validation tiles,
            # RESULTS §8); the dry-atom variant keeps the 0.1 mm/h of the earlier table
            m = train_pseudo([fit.hi, fit.lo], steps=args.steps, batch=args.batch, lr=1e-2, weights=[0.5, 0.5],
                             dry_spread=spread, seed=args.seed, progress=True,
                             dry_threshold=RADAR_DRY_THRESHOLD if spread else 0.1)
            log(f"{label}: trained in {time.time() - t1:.0f}s, {m.train_stats}")
            out("")
            out(f"### {label}: {args.steps} steps × {args.batch} pixels, {m.train_stats['seconds']:.0f} s, "
                f"p_dry {m.train_stats['p_dry']:.3f} → z_edge {float(m.z_edge):+.3f}; final quantile loss "
                f"{m.train_stats['final_quantile_loss']:.4f}, reconstruction loss "
                f"{m.train_stats['final_rec_loss']:.5f}")
        models[label] = m
        out(HEADER)
        rep = {}
        for name, a in (("train hold-out 1 km", hold.hi), ("train hold-out 4 km", hold.lo), ("TEST 1 km", te.hi),
                        ("TEST 4 km", te.lo)):
            rep[name] = pp_report(m, a)
            out(fmt_row(name, rep[name]))
        for src in np.unique(te.source):
            sel = te.source == src
            r = pp_report(m, te.hi[sel])
            out(fmt_row(f"TEST 1 km, {src}", r))
        m.reports = rep  # type: ignore[attr-defined]
    pp_radar = models["pp-radar (dry spread by distance to rain)"]

    # ----------------------------------------------------------------------------------------- ERA5
    era = era5_pairs(with_vimd=True)
    hours = np.asarray(era.time).astype("datetime64[h]").astype(np.int64) % 24
    fit_e, hold_e = era.subset(hours < 18), era.subset(hours >= 18)
    t1 = time.time()
    out("")
    out(f"## ERA5 (TP + VIMD): {len(fit_e)} hourly fields 00-17 UTC of 2022-08-31 and 2020-01-01 for training, "
        f"{len(hold_e)} fields 18-23 UTC held back; 0.25° (40×40) and 1° (10×10) pooled")
    if args.eval_only:
        pe = create_model("pp-era5", pretrained=True)
        out(f"### pp-era5: SHIPPED weights, z_edge {float(pe.z_edge):+.3f}, VIMD scale {float(pe.vimd_scale):.3f} mm/h")
    else:
        pe = train_pseudo([fit_e.hi, fit_e.lo], [fit_e.extra["vimd_hi"], fit_e.extra["vimd_lo"]],
                          steps=args.era5_steps, batch=min(args.batch, 16384), lr=1e-2, weights=[0.5, 0.5],
                          seed=args.seed, progress=True)
        log(f"pp-era5 trained in {time.time() - t1:.0f}s, {pe.train_stats}")
        out(f"### pp-era5: {args.era5_steps} steps, {pe.train_stats['seconds']:.0f} s, p_dry "
            f"{pe.train_stats['p_dry']:.3f} (TP < 0.01 mm/h) → z_edge {float(pe.z_edge):+.3f}, VIMD scale "
            f"{float(pe.vimd_scale):.3f} mm/h")
    out(HEADER)
    rep_e = {}
    for name, a, v in (("train 0.25°", fit_e.hi, fit_e.extra["vimd_hi"]), ("held-back 18-23 UTC 0.25°", hold_e.hi,
                                                                          hold_e.extra["vimd_hi"]),
                       ("held-back 18-23 UTC 1°", hold_e.lo, hold_e.extra["vimd_lo"])):
        rep_e[name] = pp_report(pe, a, v)
        out(fmt_row(name, rep_e[name]))
    pe.reports = rep_e  # type: ignore[attr-defined]
    if not args.eval_only:  # TP-only on ERA5 for comparison (no VIMD: dry pixels spread by distance only)
        pe_tp = train_pseudo([fit_e.hi, fit_e.lo], steps=args.era5_steps, batch=min(args.batch, 16384), lr=1e-2,
                             weights=[0.5, 0.5], seed=args.seed, progress=True, dry_threshold=0.01)
        r = pp_report(pe_tp, hold_e.hi)
        out(fmt_row("TP-only PP (distance spread) on ERA5, held-back 0.25°", r))
    c = [np.corrcoef(era.hi[i].ravel(), -era.extra["vimd_hi"][i].ravel())[0, 1] for i in range(len(era))]
    out(f"corr(TP, −VIMD) per hourly field at 0.25°: median {np.nanmedian(c):.2f} (range {np.nanmin(c):.2f} … "
        f"{np.nanmax(c):.2f})")

    # Gibbs: spectral truncation of TP vs of PP (decoded), ERA5 2022-08-31 0.25° to the 1° Nyquist
    day = era.subset(era.source == "model-levels-2022-08-31")
    with torch.no_grad():
        ppf = pe.encode(torch.from_numpy(day.hi).double(), torch.from_numpy(day.extra["vimd_hi"]).double()).numpy()
        tr_tp = spectral_truncate(day.hi.astype(np.float64), 5)
        tr_pp = pe.decode(torch.from_numpy(spectral_truncate(ppf, 5))).numpy()
    out("")
    out("### Gibbs check (ERA5 2022-08-31, 24 fields 40×40 at 0.25°, FFT truncation to |k| ≤ 5 = the 1° Nyquist)")
    out("| field | min (mm/h) | negative fraction | fraction < −0.01 | dry pixels (< 0.01) turned wet (> 0.01) "
        "| p99 bias |")
    out("|---|---|---|---|---|---|")
    dry0 = day.hi < 0.01
    for name, f in (("truncated TP", tr_tp), ("truncated PP, decoded", tr_pp)):
        pb = percentile_bias(f, day.hi, q=(99,))["p99"]
        out(f"| {name} | {f.min():+.3f} | {negative_fraction(f):.3f} | {np.mean(f < -0.01):.3f} | "
            f"{np.mean(f[dry0] > 0.01):.3f} | {100 * pb:+.1f} % |")

    # ----------------------------------------------------------------------------------------- verdict
    rr, re_ = pp_radar.reports, pe.reports
    t1k, t4k = rr["TEST 1 km"], rr["TEST 4 km"]
    p_dry = float(torch.special.ndtr(pp_radar.z_edge.double()))
    out("")
    out("### Targets")
    for name, r in (("1 km", t1k), ("4 km", t4k)):
        verdict = "met" if r["ks"] <= 0.05 else "MISSED"
        out(f"- KS(PP, N(0,1)) ≤ 0.05 on the held-back radar TEST tiles, {name}: {r['ks']:.3f} → {verdict}. "
            f"Dry fraction there {r['dry_fraction_true']:.3f} against {p_dry:.3f} in training: a fixed transform "
            f"puts exactly the dry pixels below z_edge, so KS ≥ |difference| = "
            f"{abs(r['dry_fraction_true'] - p_dry):.3f}; the wet part alone is {r['ks_wet_shape']:.3f} from the "
            f"truncated normal (the test rain is lighter).")
    out(f"- Same weather regimes (train hold-out): KS {rr['train hold-out 1 km']['ks']:.3f} (1 km), "
        f"{rr['train hold-out 4 km']['ks']:.3f} (4 km); wet part {rr['train hold-out 1 km']['ks_wet_shape']:.3f} / "
        f"{rr['train hold-out 4 km']['ks_wet_shape']:.3f}.")
    out(f"- pp-era5 (VIMD spreads the dry pixels): held-back KS {re_['held-back 18-23 UTC 0.25°']['ks']:.3f} at "
        f"0.25°, {re_['held-back 18-23 UTC 1°']['ks']:.3f} at 1°.")
    out(f"- Reconstruction on TEST 1 km: MAE over wet pixels {t1k['mae_wet']:.4f} mm/h, p99 / p99.9 bias "
        f"{100 * t1k['p99_bias']:+.1f} / {100 * t1k['p99.9_bias']:+.1f} %, dry → exactly 0 for "
        f"{100 * t1k['decoded_exact_zero_on_dry']:.1f} % of dry pixels, wet/dry agreement "
        f"{100 * t1k['wet_dry_agreement']:.1f} % (by construction).")

    # ----------------------------------------------------------------------------------------- figure
    fig_path = ROOT / "benchmarks" / "figures" / "pseudo_precip_qq.png"
    with torch.no_grad():
        pps = {
            "pp-radar, TEST 1 km": pp_radar.encode(torch.from_numpy(te.hi[:600]).float()).numpy(),
            "pp-radar, TEST 4 km": pp_radar.encode(torch.from_numpy(te.lo).float()).numpy(),
            "pp-radar, train hold-out 1 km": pp_radar.encode(torch.from_numpy(hold.hi).float()).numpy(),
            "pp-era5, held-back 0.25°": pe.encode(torch.from_numpy(hold_e.hi).float(),
                                                  torch.from_numpy(hold_e.extra["vimd_hi"]).float()).numpy(),
        }
        if "per-grid-point variant (dry atom)" in models:
            pps["per-grid-point variant, TEST 1 km"] = models["per-grid-point variant (dry atom)"].encode(
                torch.from_numpy(te.hi[:600]).float()).numpy()
    fig_path = fig_path.with_name(f"pseudo_precip_qq{tag}.png")
    P.plot_qq(pps, "normal", levels=400, path=fig_path, title="PP against N(0, 1)")
    out("")
    out(f"Q-Q figure: {fig_path.relative_to(ROOT)}")

    # ----------------------------------------------------------------------------------------- save
    if save:
        lic = ("KNMI open data (CC BY 4.0, 'KNMI'); FMI open data (CC BY 4.0, 'Finnish Meteorological Institute'); "
               "NOAA MRMS (public domain)")
        for m, stem, data, reps, licence in (
            (pp_radar, "pp-radar", f"radar TRAIN part tiles (radar_pairs('train'), {len(fit)} of them, seed "
             f"{args.seed + 11}): 64x64 at 1 km and 16x16 block means at 4 km, equal pixel shares", pp_radar.reports,
             lic),
            (pe, "pp-era5", "ERA5 2022-08-31 (model levels) and 2020-01-01 (pressure levels), 00-17 UTC, 0.25 deg "
             "(40x40) and 1 deg block means (10x10), equal pixel shares; VIMD from skydiff.downscale.era5.vimd",
             pe.reports, "Contains modified Copernicus Climate Change Service information 2020-2022"),
        ):
            card = {
                "description": "pseudo-precipitation encoder/decoder (skydiff.downscale.pseudo), trained by "
                               "benchmarks/pseudo_precip.py on a 2-core CPU",
                "data": data, "data_licence": licence, "training": m.train_stats,
                "held_back_checks": {k: {kk: (round(vv, 5) if isinstance(vv, float) else vv) for kk, vv in v.items()}
                                     for k, v in reps.items()},
                "command": cmd,
                "limitations": "PP is standard normal on the training mix; on other weather regimes its dry "
                               "fraction (below z_edge) follows that regime's dry fraction, so the KS distance to "
                               "N(0,1) grows by about the change of the dry fraction. See benchmarks/results/"
                               "pseudo_precip.txt.",
            }
            wts, js = save_model(m, WEIGHTS_DIR / stem, card=card)
            out(f"saved {wts.relative_to(ROOT)} and {js.relative_to(ROOT)}")

    res = ROOT / "benchmarks" / "results" / f"pseudo_precip{tag}.txt"
    res.parent.mkdir(parents=True, exist_ok=True)
    tmp = res.with_name(f".{res.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(out_lines) + "\n")
    os.replace(tmp, res)
    log(f"wrote {res}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
