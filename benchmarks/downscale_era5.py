"""ERA5 downscaling 1° -> 0.25° on the held-back hours (18-23 UTC of 2022-08-31 and 2020-01-01; 12 fields 40 x 40).

    python benchmarks/downscale_era5.py [--members 8 --steps 18]

The ``era5`` model (edm-era5, PP space from TP + VIMD) was trained on 00-17 UTC of the same two days, so this is
a small in-period check, not an independent test. Prints CRPS (fair) against the MAE of bicubic interpolation,
p99/p99.9 bias, negative fraction, the spectrum ratio (max |dB| over wavelengths >= 2 px of the 40 x 40 grid).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from skydiff.downscale.baselines import bicubic, spectral_zeropad
from skydiff.downscale.data import era5_pairs
from skydiff.downscale.interface import downscale
from skydiff.verify import crps_ensemble, negative_fraction, percentile_bias, rapsd_ratio_db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--steps", type=int, default=18)
    a = ap.parse_args()
    torch.set_num_threads(1)
    p = era5_pairs()
    hours = (p.time - p.time.astype("datetime64[D]")).astype("timedelta64[h]").astype(int)
    p = p.subset(hours >= 18)
    t0 = time.perf_counter()
    ens = downscale(p.lo, model="era5", vimd=p.extra["vimd_lo"], members=a.members, steps=a.steps, seed=0,
                    progress=False)
    dt = (time.perf_counter() - t0) / (a.members * len(p))
    preds = {"bicubic": bicubic(p.lo, 4)[None], "spectral zero-pad": spectral_zeropad(p.lo, 4)[None],
             "era5 diffusion (PP)": ens}
    mae_bic = float(np.abs(preds["bicubic"][0] - p.hi).mean())
    print(f"ERA5 held-back 18-23 UTC: {len(p)} fields 40x40, truth p99 {np.percentile(p.hi, 99):.2f} mm/h; "
          f"{a.members} members, {a.steps} steps; {dt:.3f} s per field; MAE bicubic {mae_bic:.4f} mm/h")
    print(f"{'method':<22}{'CRPS/MAE':>10}{'CRPS':>9}{'p99 bias':>10}{'p99.9 bias':>11}{'neg frac':>10}{'spec max|dB|':>13}")
    for k, v in preds.items():
        crps = float(crps_ensemble(v, p.hi)) if v.shape[0] > 1 else float(np.abs(v[0] - p.hi).mean())
        pb = percentile_bias(v, p.hi)
        wl, db = rapsd_ratio_db(v, p.hi)
        print(f"{k:<22}{crps / mae_bic:>10.3f}{crps:>9.4f}{pb['p99']:>+10.1%}{pb['p99.9']:>+11.1%}"
              f"{float(negative_fraction(v)):>10.4f}{float(np.max(np.abs(np.asarray(db)))):>13.2f}")


if __name__ == "__main__":
    main()
