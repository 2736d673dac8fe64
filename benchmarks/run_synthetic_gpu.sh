#!/usr/bin/env bash
# The synthetic faces' data stages and training on a GPU machine without MLflow/DVC (torch alone), at 128 px:
#   bash benchmarks/run_synthetic_gpu.sh [PARAMS] [WORKDIR]
# Generators land in WORKDIR/models/<attribute>/generator.pt (celebahq-200's pre-training: benchmarks/celebahq_gpu.sh).
# Evaluating them needs the judge and evaluation sets of the `dvc repro` pipeline (docs/metrics.md).
set -euo pipefail
P=${1:-params/synthetic128-gpu.yaml}
W=${2:-/tmp/geogan-gpu}
PY=${PYTHON:-python3}
mkdir -p "$W"
$PY -m geogan.stages.ingest --params "$P" --out "$W/prepared"
$PY -m geogan.stages.landmarks --params "$P" --prepared "$W/prepared" --out "$W/landmarks"
for A in $($PY -c "from geogan.config import load_config; print(' '.join(load_config('$P').attributes))"); do
  $PY -m geogan.stages.split --params "$P" --attribute "$A" --prepared "$W/prepared" --landmarks "$W/landmarks" --out "$W/splits/$A.json"
  $PY -m geogan.stages.train --params "$P" --attribute "$A" --prepared "$W/prepared" --landmarks "$W/landmarks" \
      --split "$W/splits/$A.json" --out "$W/models/$A" --work "$W/runs/$A" --no-progress
done
