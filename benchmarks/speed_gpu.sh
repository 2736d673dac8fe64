#!/usr/bin/env bash
# The speed runs of benchmarks/RESULTS.md ("Start-up, CUDA graphs, end to end"), on a machine with 2 GPUs:
#   bash benchmarks/speed_gpu.sh steps OUT_DIR   # GPU 0: 256 px start-up cold/warm; GPU 1: 128 px real-data loop
#   bash benchmarks/speed_gpu.sh ddp OUT_DIR     # both GPUs: the real-data loop under DDP, then 128 px batch 64
# Real data: the packed celeba-128 folder in .device_data/celeba128 (`geogan pack`; CelebA: non-commercial
# research use only). Caches and runs go to .device_cache/, which a later call on the same machine reuses.
set -uo pipefail
PHASE=$1; OUT=$2; PY=${PYTHON:-python3}
export NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
CACHE=.device_cache; mkdir -p "$CACHE" "$OUT"
EPOCH=(-m benchmarks.bench_epoch --params params/celeba-128.yaml --packed .device_data/celeba128 --attribute Eyeglasses --steps 600)
case $PHASE in
steps)
  ( CUDA_VISIBLE_DEVICES=0 timeout 560 $PY -m benchmarks.bench_startup --size 256 --batch 24 --mode reduce-overhead \
      --cache $CACHE/inductor-256-cg --steps 30 --out "$OUT/startup256_cg.json" ) > "$OUT/gpu0.log" 2>&1 &
  ( export CUDA_VISIBLE_DEVICES=1
    timeout 170 $PY "${EPOCH[@]}" --batch 32 --work $CACHE/e2e-eager-1 --out "$OUT/e2e_eager_1gpu.json"
    timeout 380 $PY "${EPOCH[@]}" --batch 32 --compile --cuda-graphs --work $CACHE/e2e-cg-1 --out "$OUT/e2e_cg_1gpu.json"
  ) > "$OUT/gpu1.log" 2>&1 &
  wait ;;
ddp)
  timeout 420 $PY "${EPOCH[@]}" --batch 32 --compile --cuda-graphs --gpus 2 --work $CACHE/e2e-cg-2 --out "$OUT/e2e_cg_2gpu.json" \
      > "$OUT/ddp.log" 2>&1
  CUDA_VISIBLE_DEVICES=0 timeout 150 $PY "${EPOCH[@]}" --batch 64 --work $CACHE/e2e-eager-64 --out "$OUT/e2e_eager_b64.json" \
      > "$OUT/b64.log" 2>&1 ;;
esac
tail -n 30 "$OUT"/*.log
