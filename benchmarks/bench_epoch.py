"""End-to-end training throughput against the bare step: does the loader keep the GPU busy?

Renders a synthetic dataset, runs the pipeline's own `train` stage on it (sampler, step,
loss guard, logging, image grids, checkpoints: everything training does) and compares its
pairs/s over the last windows with the bare `train_step` on resident random tensors at the
same resolution, batch and precision (`bench_train.time_steps`).

    python -m benchmarks.bench_epoch --size 128 --batch 32 --steps 600 --out $OUT/epoch.json
    python -m benchmarks.bench_epoch --size 256 --batch 24 --steps 400 --compile --out $OUT/epoch.json

`--compile` sets `train.compile: true` and compiles the bare step the same way (Inductor's default
mode, the compiled-only rewrites of geogan.nets.layers on): the loop then has to keep up with the
fastest step. Compilation happens in the loop's first steps, before the windows that are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch


from benchmarks.variant_params import prepare_synthetic


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--identities", type=int, default=1000)
    p.add_argument("--compile", action="store_true", help="torch.compile in the loop and in the bare step")
    p.add_argument("--work", type=Path, default=None, help="where data and runs go (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    from geogan.stages import train

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-epoch-"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work.resolve() / 'mlflow.db'}")  # where MLflow is installed
    log_every = max(args.steps // 6, 1)
    t0 = time.perf_counter()
    _, cfg, split_file = prepare_synthetic(work, [
        f"data.resolution={args.size}", f"data.synthetic_identities={args.identities}", f"train.batch_size={args.batch}",
        f"train.steps={args.steps}", f"train.log_every={log_every}", f"train.image_every={args.steps}",
        f"train.checkpoint_every={args.steps}", f"train.compile={str(args.compile).lower()}"])
    attr = cfg.attributes[0]
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    train.run(cfg, attr, work / "prepared", work / "landmarks", split_file, work / "model",
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
        compile_mode = "default" if cfg.train.compile else None
        bare = time_steps(args.size, args.batch, variant, compile_mode, 30, 5, m.ngf, m.ndf, m.n_blocks)["pairs_per_s"]
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    result = {"device": device, "size": args.size, "batch": args.batch, "steps": args.steps,
              "loop_pairs_per_s": loop, "loop_windows": windows, "bare_step_pairs_per_s": bare, "loop_over_bare": loop / bare,
              "data_stages_s": data_s, "train_stage_s": train_s, "variant": variant, "compiled": cfg.train.compile}
    print(json.dumps(result), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
