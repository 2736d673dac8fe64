#!/usr/bin/env bash
# The celebahq-200 recipe retrained on a GPU machine (1 or 2 GPUs), to score it with the trusted evaluation (docs/results.md):
#   bash benchmarks/celebahq_gpu.sh pretrain OUT   # the synthetic pre-training its params start from -> OUT/synthetic128_mustache.pt
#   bash benchmarks/celebahq_gpu.sh train OUT      # Eyeglasses and Mustache at once, one per GPU where there are two
#                                                  # (both on GPU 0 where there is one): 700 steps at 256 px -> OUT/celebahq200-*.pt
# `train` reads .device_data/celebahq200 (prepared/, landmarks/ and splits/ of params/celebahq-200.yaml, made on a CPU by
# the ingest, landmarks and split stages) and .device_data/pretrained/synthetic128_mustache.pt (what `pretrain` wrote).
# Score the generators on CelebA's sets with `benchmarks.celeba_eval --model-frame-landmarks .device_data/celebahq200/
# landmarks/landmarks.npy --model-size 256`. CelebA-HQ and dlib's 68-point model: non-commercial research use only.
set -euo pipefail
PHASE=$1; OUT=$2; PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
case $PHASE in
pretrain)
  bash benchmarks/run_synthetic_gpu.sh params/synthetic128-gpu.yaml .device_cache/synthetic128 > "$OUT/pretrain.log" 2>&1
  cp .device_cache/synthetic128/models/Mustache/generator.pt "$OUT/synthetic128_mustache.pt" ;;
train)
  D=${DATA:-.device_data/celebahq200}
  gpus=$($PY -c "import torch; print(max(1, torch.cuda.device_count()))")
  i=0; pids=()
  for A in Eyeglasses Mustache; do
    CUDA_VISIBLE_DEVICES=$((i % gpus)) $PY -m geogan.stages.train --params "${PARAMS:-params/celebahq-200.yaml}" --attribute $A \
      --prepared "$D/prepared" --landmarks "$D/landmarks" --split "$D/splits/$A.json" --out "$D/models/$A" \
      --work "$D/runs/$A" --no-progress > "$OUT/train-$A.log" 2>&1 &
    pids+=($!); i=$((i + 1))
  done
  for p in "${pids[@]}"; do wait "$p" || { tail -n 3 "$OUT"/train-*.log >&2; exit 1; }; done
  for A in Eyeglasses Mustache; do cp "$D/models/$A/generator.pt" "$OUT/celebahq200-$A.pt"; done ;;
*) echo "celebahq_gpu.sh: phase must be pretrain or train, got '$PHASE'" >&2; exit 2 ;;
esac
