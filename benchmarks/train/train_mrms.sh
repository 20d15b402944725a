#!/usr/bin/env bash
# The models trained on the shared training part + MRMS (resampled to 5 min) with crops by rainy tile
# (data.mrms = true, data.sampling = "tiles"): the LUPIN chain beside RainNet then L-CNN, one torch thread each,
# on a 2-core machine. Each run resumes from runs/cpu/<name>/checkpoints/last.ckpt.
#   SKYDIFF_DATA=../shared/data bash benchmarks/train/train_mrms.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
C=benchmarks/train
mkdir -p runs  # (git-ignored: absent in a fresh clone, where the logs could not be written)
( skydiff train lupin --config $C/lupin_motion_mrms.toml && skydiff train lupin --config $C/lupin_tendency_mrms.toml \
  && skydiff train lupin --config $C/lupin_joint_mrms.toml ) > runs/cpu-lupin-mrms.log 2>&1 &
A=$!
( skydiff train rainnet --config $C/rainnet_mrms.toml && skydiff train lcnn --config $C/lcnn_mrms.toml ) \
  > runs/cpu-baselines-mrms.log 2>&1 &
B=$!
# each chain's own status (a bare `wait` returned 0 when a chain failed); both are waited for
status=0
wait $A || status=$?
wait $B || status=$?
exit $status
