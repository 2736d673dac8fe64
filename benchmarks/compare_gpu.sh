#!/usr/bin/env bash
# Train variants of one params file side by side on one GPU, then evaluate each on the same test pairs.
#   [ATTR=Mustache] bash benchmarks/compare_gpu.sh BASE_PARAMS WORKDIR NAME="key=value key=value" [NAME="..." ...]
# The data stages (ingest, landmarks, split, evalset) and the judge run once from BASE_PARAMS; each
# variant differs only in train/model/loss keys. Training runs concurrently: at 128 px the step is
# launch-bound, so several processes share one GPU well. Timings from such a run are not benchmarks
# (use benchmarks.bench_train alone on the GPU for those); metrics are what it is for.
# Results: WORKDIR/<NAME>/metrics.json and grid, and WORKDIR/compare.tsv.
set -euo pipefail
BASE=$1; W=$2; shift 2
PY=${PYTHON:-python3}
mkdir -p "$W"; W=$(cd "$W" && pwd)
# Where MLflow is installed, each concurrent process gets its own SQLite store under WORKDIR: processes creating one
# fresh SQLite store at once race. An MLflow server (MLFLOW_TRACKING_URI=http...) takes them all.
store() { case "${MLFLOW_TRACKING_URI:-}" in http*) echo "$MLFLOW_TRACKING_URI" ;; *) echo "sqlite:///$1" ;; esac; }
A=${ATTR:-$($PY -c "from geogan.config import load_config; print(load_config('$BASE').attributes[0])")}
if [ ! -f "$W/splits/$A.json" ]; then
  $PY -m geogan.stages.ingest --params "$BASE" --out "$W/prepared"
  $PY -m geogan.stages.landmarks --params "$BASE" --prepared "$W/prepared" --out "$W/landmarks"
  $PY -m geogan.stages.split --params "$BASE" --attribute "$A" --prepared "$W/prepared" --landmarks "$W/landmarks" --out "$W/splits/$A.json"
  $PY -m geogan.stages.evalset --params "$BASE" --attribute "$A" --prepared "$W/prepared" --landmarks "$W/landmarks" --out "$W/evalsets/$A.json"
fi
pids=()
if [ ! -d "$W/judge" ]; then
  MLFLOW_TRACKING_URI=$(store "$W/judge-mlflow.db") \
    $PY -m geogan.stages.train_judge --params "$BASE" --prepared "$W/prepared" --out "$W/judge" > "$W/judge.log" 2>&1 &
  pids+=($!)
fi
names=()
for spec in "$@"; do
  name=${spec%%=*}; kv=${spec#*=}
  names+=("$name")
  # shellcheck disable=SC2086
  $PY -m benchmarks.variant_params "$BASE" "$W/$name/params.yaml" $kv
  MLFLOW_TRACKING_URI=$(store "$W/$name/mlflow.db") \
    $PY -m geogan.stages.train --params "$W/$name/params.yaml" --attribute "$A" --prepared "$W/prepared" \
      --landmarks "$W/landmarks" --split "$W/splits/$A.json" --out "$W/$name/model" --work "$W/$name/run" --no-progress \
      > "$W/$name/train.log" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
for name in "${names[@]}"; do
  MLFLOW_TRACKING_URI=$(store "$W/$name/mlflow.db") \
    $PY -m geogan.stages.evaluate --params "$W/$name/params.yaml" --attribute "$A" --prepared "$W/prepared" \
      --landmarks "$W/landmarks" --evalset "$W/evalsets/$A.json" --model "$W/$name/model" --judge "$W/judge" \
      --out "$W/$name/metrics.json" --plots "$W/$name/plots" > "$W/$name/evaluate.log" 2>&1 || status=1
done
$PY - "$W" "${names[@]}" <<'PYEOF' | tee "$W/compare.tsv"
import json, re, sys
from pathlib import Path
w, names = Path(sys.argv[1]), sys.argv[2:]
# The generator's figures; each key carries its sample count (gt_psnr_512) and a 95% interval (_lo, _hi).
keys = ["gt_psnr", "gt_l1_region", "landmark_err", "landmark_err_large_gap", "transfer_success", "removal_success",
        "instance_fidelity", "change_outside_region", "mask_area", "mask_in_region", "kid_a2b"]
def figure(m, key):
    found = [k for k in m if re.fullmatch(rf"{key}_\d+", k) and isinstance(m[k], (int, float))]
    return f"{m[found[0]]:.4f}" if found else "-"
print("variant\t" + "\t".join(keys))
for n in names:
    f = w / n / "metrics.json"
    m = json.loads(f.read_text()).get("model", {}) if f.is_file() else {}
    print(n + "\t" + "\t".join(figure(m, k) for k in keys))
PYEOF
exit $status
