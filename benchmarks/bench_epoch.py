"""End-to-end training throughput against the bare step: does the loader keep the GPU busy?

Renders a synthetic dataset, runs the pipeline's own `train` stage on it (sampler, step,
loss guard, logging, image grids, checkpoints: everything training does) and compares its
pairs/s over the last windows with the bare `train_step` on resident random tensors at the
same resolution, batch and precision (`bench_train.time_steps`).

    python3 benchmarks/bench_epoch.py --size 128 --batch 32 --steps 600 --out $OUT/epoch.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.variant_params import write_variant  # noqa: E402
from geogan.config import load_config  # noqa: E402

BASE = Path(__file__).resolve().parent / "params-synthetic128-gpu.yaml"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--identities", type=int, default=1000)
    p.add_argument("--work", type=Path, default=None, help="where data and runs go (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from geogan.stages import ingest, landmarks, split, train

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-epoch-"))
    params = work / "params.yaml"
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work.resolve() / 'mlflow.db'}")  # where MLflow is installed
    log_every = max(args.steps // 6, 1)
    write_variant(BASE, params, [f"data.resolution={args.size}", f"data.synthetic_identities={args.identities}",
                                 f"train.batch_size={args.batch}", f"train.steps={args.steps}", f"train.log_every={log_every}",
                                 f"train.image_every={args.steps}", f"train.checkpoint_every={args.steps}"])
    cfg = load_config(params)
    attr = cfg.attributes[0]
    t0 = time.perf_counter()
    ingest.run(cfg, work / "prepared", progress=False)
    landmarks.run(cfg, work / "prepared", work / "landmarks", progress=False)
    split.run(cfg, attr, work / "prepared", work / "landmarks", work / "splits" / f"{attr}.json")
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train.run(cfg, attr, work / "prepared", work / "landmarks", work / "splits" / f"{attr}.json", work / "model",
              work / "run", progress=False)
    train_s = time.perf_counter() - t0
    history = json.loads((work / "model" / "train_history.json").read_text())
    windows = [h["images_per_second"] for h in history][-3:]  # past warm-up
    loop = statistics.mean(windows)

    variant = "bf16_cl" if cfg.train.channels_last else "bf16"
    bare = float("nan")
    if torch.cuda.is_available():  # the bare step is timed with CUDA events; without a GPU only the loop runs
        from benchmarks.bench_train import time_steps

        torch.backends.cudnn.benchmark = True
        m = cfg.model
        bare = time_steps(args.size, args.batch, variant, None, 30, 5, m.ngf, m.ndf, m.n_blocks)["pairs_per_s"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"device": device, "size": args.size, "batch": args.batch, "steps": args.steps,
              "loop_pairs_per_s": loop, "loop_windows": windows, "bare_step_pairs_per_s": bare, "loop_over_bare": loop / bare,
              "data_stages_s": data_s, "train_stage_s": train_s, "variant": variant}
    print(json.dumps(result), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
