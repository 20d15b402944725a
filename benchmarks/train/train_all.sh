#!/usr/bin/env bash
# Train the CPU-sized models whose weights ship in src/skydiff/nowcast/weights (two chains side by side, one
# torch thread each, on a 2-core machine). Each run resumes from runs/cpu/<name>/checkpoints/last.ckpt.
#   SKYDIFF_DATA=../shared/data bash benchmarks/train/train_all.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
C=benchmarks/train
mkdir -p runs  # (git-ignored: absent in a fresh clone, where the logs could not be written)
( skydiff train lupin --config $C/lupin_motion.toml && skydiff train lupin --config $C/lupin_tendency.toml \
  && skydiff train lupin --config $C/lupin_joint.toml ) > runs/cpu-lupin.log 2>&1 &
A=$!
( skydiff train rainnet --config $C/rainnet.toml && skydiff train lcnn --config $C/lcnn.toml \
  && skydiff train smaat --config $C/smaat.toml ) > runs/cpu-baselines.log 2>&1 &
B=$!
# each chain's own status (a bare `wait` returned 0 when a chain failed); both are waited for
status=0
wait $A || status=$?
wait $B || status=$?
exit $status
