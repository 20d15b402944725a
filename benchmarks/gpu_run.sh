#!/usr/bin/env bash
# The GPU check of skydiff, as run on a lent GPU machine (the `device` tool; see benchmarks/RESULTS.md §9):
#   CUDA-vs-CPU agreement tests, then benchmarks/gpu_check.py timings. Needs torch with CUDA, lightning, xarray,
#   safetensors, h5py, matplotlib (not pysteps) and FRAMES (an .npz written with the command in RESULTS §9).
#   bash benchmarks/gpu_run.sh FRAMES OUTDIR
set -u
FRAMES=${1:-.gpu/knmi_20100826_06.npz}
OUTDIR=${2:-runs/gpu_check}
mkdir -p "$OUTDIR"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"
timeout "${TEST_LIMIT:-150}" python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUTDIR/test_cuda.log"
timeout "${BENCH_LIMIT:-300}" python3 benchmarks/gpu_check.py --frames "$FRAMES" --out "$OUTDIR" 2>&1 | tee "$OUTDIR/gpu_check.log"
