"""A full-grid LUPIN nowcast (the KNMI timing case of benchmarks/nowcast_models.py, 765 x 700, 6 leads, shipped
weights, 2 threads): median of 3 after a warm-up, then one LUPIN with LK motion. Run it idle and beside another job (e.g. ``python -c "import torch,
time; torch.set_num_threads(2); a = torch.randn(1500, 1500); t = time.time()\nwhile time.time() - t < 300: a =
torch.tanh(a @ a * 1e-3)"``), with and without ``GOMP_SPINCOUNT`` / ``OMP_WAIT_POLICY`` in the environment; it
imports torch first, so skydiff's own default (``GOMP_SPINCOUNT=3000`` when imported before torch) does not apply and
the environment decides. Results: benchmarks/RESULTS.md §5 "On a shared machine"."""
import os, time, warnings

import numpy as np
import torch
from pathlib import Path
torch.set_num_threads(2)
warnings.simplefilter("ignore")
from skydiff.io import read_radar
from skydiff.nowcast import forecast
data = Path(os.environ.get("SKYDIFF_DATA", "../shared/data"))
files = sorted((data / "radar" / "KNMI" / "2010" / "08").glob("RAD_NL25_RAP_5min_20100826*.h5"))[66:72]
R = read_radar([str(f) for f in files]).values.astype(np.float64)
forecast(R, 6, model="lupin"); ts = []
for _ in range(3):
    t = time.perf_counter(); forecast(R, 6, model="lupin"); ts.append(time.perf_counter() - t)
t = time.perf_counter(); forecast(R, 6, model="lupin", motion="lk"); lk = time.perf_counter() - t
print(f"lupin median {np.median(ts):.2f} s {['%.2f' % x for x in ts]}; lupin-lk {lk:.2f} s")
