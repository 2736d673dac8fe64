#!/usr/bin/env bash
# Train attributes on a GPU machine from data prepared elsewhere (ingest/landmarks/split ran on a CPU):
#   bash benchmarks/train_gpu.sh PARAMS DATA_DIR ATTRIBUTE [ATTRIBUTE ...]
# DATA_DIR holds prepared/, landmarks/ and splits/<ATTRIBUTE>.json; models/ and runs/ are written beside them.
set -euo pipefail
P=$1; D=$2; shift 2
for A in "$@"; do
  ${PYTHON:-python3} -m geogan.stages.train --params "$P" --attribute "$A" --prepared "$D/prepared" \
    --landmarks "$D/landmarks" --split "$D/splits/$A.json" --out "$D/models/$A" --work "$D/runs/$A" --no-progress
done
