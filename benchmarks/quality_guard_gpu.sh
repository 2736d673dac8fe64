#!/usr/bin/env bash
# Quality guard for a change to the step: today's compiled step against the changed one, 2 seeds each, on the
# synthetic benchmark's exact metrics (1,000 identities, 128 px, 500 steps, batch 32, as NOTES run 12):
#   bash benchmarks/quality_guard_gpu.sh WORKDIR "train.compile_losses=true" ["key=value" ...]
# Both arms compile with CUDA graphs and, unless BASE_SETTINGS says otherwise, DiffAugment (what
# train.compile_losses puts in the graph; at 500 steps its masks collapsed, NOTES run 28: BASE_SETTINGS="train.d_augment=[]"
# is run 12's setting, whose masks transferred there). Both arms share one
# Inductor cache. The judge stops on a val partition (split.val_fraction 0.1; the test people do not depend on it).
# The four trainings share the GPU, so their timings are not benchmarks. Results: WORKDIR/compare.tsv.
set -euo pipefail -f  # -f: settings such as "train.d_augment=[]" are not globs
W=$1; shift; CHANGE="$*"
PY=${PYTHON:-python3}
mkdir -p "$W"
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$W/inductor-cache}
$PY -m benchmarks.variant_params params/synthetic128-gpu.yaml "$W/base.yaml" data.synthetic_identities=1000 split.val_fraction=0.1 \
    train.steps=500 train.checkpoint_every=500 train.image_every=500 train.compile=true train.compile_cuda_graphs=true \
    ${BASE_SETTINGS:-"train.d_augment=[color,translation,cutout]"}
bash benchmarks/compare_gpu.sh "$W/base.yaml" "$W" today_s0="train.seed=0" today_s1="train.seed=1" \
    changed_s0="train.seed=0 $CHANGE" changed_s1="train.seed=1 $CHANGE"
