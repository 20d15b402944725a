#!/usr/bin/env bash
# SpaT-SparK on a 2-core CPU: pretraining, fine-tuning from it, and the two ablations with the same budget.
#   SKYDIFF_DATA=../shared/data bash benchmarks/train/train_spatspark.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
C=benchmarks/train
skydiff train spatspark-pretrain --config $C/spatspark_pretrain.toml
skydiff train spatspark --config $C/spatspark.toml
skydiff train spatspark --config $C/spatspark_notrans.toml
skydiff train spatspark --config $C/spatspark_scratch.toml
