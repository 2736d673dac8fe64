"""End-to-end training throughput against the bare step: does the loop keep the GPU busy?

Runs the pipeline's own `train` stage (sampler, step, loss guard, logging, image grids,
checkpoints: everything training does) in a new process, on one GPU or under torchrun on
several, and compares its pairs/s over the last windows with the bare `train_step` of the
same config on resident batches of the same data (`bare_step`), per GPU.

Data: synthetic faces rendered here (default), or a packed real-face folder (`geogan pack`:
prepared/, landmarks/, splits/<attribute>.json) with its params file:

    python -m benchmarks.bench_epoch --size 128 --batch 32 --steps 600 --out $OUT/epoch.json
    python -m benchmarks.bench_epoch --params params/celeba-128.yaml --packed .device_data/celeba128 \\
        --attribute Eyeglasses --batch 32 --steps 600 --compile --gpus 2 --out $OUT/epoch2.json

`--batch` is per GPU (train.batch_size is batch x GPUs). `--compile` sets `train.compile: true`
(and `--cuda-graphs` `train.compile_cuda_graphs`, `--compile-losses` `train.compile_losses`; `--grad-sync`
sets `train.grad_sync` for several GPUs); the bare
step is compiled the same way and reads the run's compile cache. Compilation happens before the windows
that are compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import STEADY_STEP
from benchmarks.variant_params import prepare_synthetic, write_variant


def bare_step(params: Path, attribute: str, prepared: Path, landmarks: Path, split_file: Path, batch: int,
              steps: int = 30, warmup: int = 3, at_step: int = STEADY_STEP) -> float:
    """Pairs/s of `train_step` alone on one GPU: the run's config at step `at_step` (its loss schedule),
    four resident batches of its data."""
    import dataclasses

    import torch

    from geogan.config import load_config
    from geogan.data.dataset import load_prepared
    from geogan.io import read_json
    from geogan.training.build import build_training, nets_for, region_view_for, step_context, training_sampler
    from geogan.training.steps import train_step

    cfg = load_config(params)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True

    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    train = dataclasses.replace(cfg.train, batch_size=batch)
    data = load_prepared(prepared, landmarks)
    sampler = training_sampler(data, read_json(split_file), train, device)
    state = build_training(nets_for(cfg.model, train), train, device, distributed=False)
    region = region_view_for(cfg, cfg.regions.get(attribute), data.resolution)
    ctx = step_context(cfg.loss, train, at_step, data.resolution, device, region)
    batches = [sampler.batch(i) for i in range(4)]
    for i in range(warmup):
        train_step(state, batches[i % 4], ctx)
    wait()
    t0 = time.perf_counter()
    for i in range(steps):
        train_step(state, batches[i % 4], ctx)
    wait()
    return batch * steps / (time.perf_counter() - t0)


def bare_mfu(params: Path, batch: int, pairs_per_s: float) -> dict:
    """The bare step's MFU: its FLOPs (counted in fp32 eager, `bench_train.count_flops`) over the bf16 peak
    measured in this process."""
    import torch

    from benchmarks.bench_train import bf16_peak_tflops, count_flops, mfu
    from geogan.config import load_config

    cfg = load_config(params)
    flops = count_flops(cfg, cfg.data.resolution, batch, torch.device("cuda"))
    peak = bf16_peak_tflops()
    return {"tflop_per_step": flops / 1e12, "bf16_peak_tflops": peak,
            "bare_step_mfu": mfu(flops, batch / pairs_per_s, peak)}


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--params", type=Path, default=None, help="params file of --packed data (default: synthetic faces)")
    p.add_argument("--packed", type=Path, default=None, help="a `geogan pack` folder: prepared/, landmarks/, splits/")
    p.add_argument("--attribute", default=None)
    p.add_argument("--size", type=int, default=128, help="synthetic faces only (packed data has its own)")
    p.add_argument("--batch", type=int, default=32, help="per GPU")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--identities", type=int, default=1000, help="synthetic faces only")
    p.add_argument("--compile", action="store_true", help="train.compile in the stage and in the bare step")
    p.add_argument("--cuda-graphs", action="store_true", help="train.compile_cuda_graphs too")
    p.add_argument("--compile-losses", action="store_true", help="train.compile_losses too")
    p.add_argument("--gpus", type=int, default=1)
    p.add_argument("--grad-sync", choices=["ddp", "flat"], default="ddp", help="train.grad_sync (several GPUs)")
    p.add_argument("--bare-steps", type=int, default=30, help="timed steps of the bare step")
    p.add_argument("--bare-pairs-per-s", type=float, default=None,
                   help="the bare step's pairs/s from an earlier run of the same config on this machine: not timed again")
    p.add_argument("--work", type=Path, default=None, help="where data and runs go (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def _inputs(args: argparse.Namespace, work: Path) -> tuple[Path, str, Path, Path, Path]:
    """(params, attribute, prepared, landmarks, split file): the packed folder's, or synthetic faces rendered in `work`."""
    settings = [f"train.batch_size={args.batch * args.gpus}", f"train.steps={args.steps}",
                f"train.log_every={max(args.steps // 6, 1)}", f"train.image_every={args.steps}",
                f"train.checkpoint_every={args.steps}", f"train.compile={str(args.compile).lower()}",
                f"train.compile_cuda_graphs={str(args.cuda_graphs).lower()}",
                f"train.compile_losses={str(args.compile_losses).lower()}", f"train.grad_sync={args.grad_sync}"]
    if args.packed:
        if not (args.params and args.attribute):
            raise SystemExit("bench_epoch: --packed needs --params and --attribute")
        write_variant(args.params, work / "params.yaml", settings)
        return (work / "params.yaml", args.attribute, args.packed / "prepared", args.packed / "landmarks",
                args.packed / "splits" / f"{args.attribute}.json")
    params, cfg, split_file = prepare_synthetic(work, [f"data.resolution={args.size}",
                                                       f"data.synthetic_identities={args.identities}", *settings])
    return params, cfg.attributes[0], work / "prepared", work / "landmarks", split_file


def _train_stage(args: argparse.Namespace, work: Path, params: Path, attribute: str, prepared: Path, landmarks: Path,
                 split_file: Path) -> tuple[list[float], str | None]:
    """Run the `train` stage in a new process (torchrun for several GPUs): its last 3 pairs/s windows, its start-up line."""
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.gpus}"]
                if args.gpus > 1 else [sys.executable])
    cmd = [*launcher, "-m", "geogan.stages.train", "--params", str(params), "--attribute", attribute, "--prepared",
           str(prepared), "--landmarks", str(landmarks), "--split", str(split_file), "--out", str(work / "model"),
           "--work", str(work / "run"), "--no-progress"]
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "PYTHONUNBUFFERED": "1"}
    env.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")  # where MLflow is installed
    log = work / "train_stage.log"  # written as it runs: a call cut off by its time limit keeps the windows so far
    with log.open("w") as out:
        proc = subprocess.run(cmd, check=False, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    text = log.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"bench_epoch: the train stage failed (exit {proc.returncode}; log {log}): {text[-3000:]}")
    history = json.loads((work / "model" / "train_history.json").read_text())
    startup = [line for line in text.splitlines() if line.startswith("compiled: first step")]
    return [h["images_per_second"] for h in history][-3:], (startup[0] if startup else None)  # windows past warm-up


def main(argv: list[str] | None = None) -> dict:
    """Train, time the bare step, print and write the comparison."""
    args = _parse_args(argv)
    work = (args.work or Path(tempfile.mkdtemp(prefix="bench-epoch-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    params, attribute, prepared, landmarks, split_file = _inputs(args, work)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    windows, startup = _train_stage(args, work, params, attribute, prepared, landmarks, split_file)
    train_s = time.perf_counter() - t0
    loop = statistics.mean(windows)
    # On one GPU (or the CPU); the stage's compile cache makes the bare step's compile quick.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(work / "run" / "compile_cache"))
    # At the loop's last step: the same loss schedule (refinement on or off), so the same compiled graphs.
    import torch

    if args.bare_pairs_per_s:
        bare, mfu_figures = args.bare_pairs_per_s, {"bare_step_given": True}
    else:
        bare = bare_step(params, attribute, prepared, landmarks, split_file, args.batch, args.bare_steps,
                         at_step=args.steps - 1)
        mfu_figures = bare_mfu(params, args.batch, bare) if torch.cuda.is_available() else {}

    result = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "gpus": args.gpus,
              "data": str(args.packed or "synthetic"), "attribute": attribute, "batch_per_gpu": args.batch,
              "steps": args.steps, "compiled": args.compile, "cuda_graphs": args.cuda_graphs,
              "compile_losses": args.compile_losses, "grad_sync": args.grad_sync,
              "loop_pairs_per_s": loop, "loop_windows": windows, "bare_step_pairs_per_s_one_gpu": bare,
              "loop_over_bare": loop / (args.gpus * bare), "data_stages_s": data_s, "train_stage_s": train_s,
              "startup": startup, **mfu_figures}
    print(json.dumps(result), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
