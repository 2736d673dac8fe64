"""Multi-GPU DDP scaling of the training step and of the real trainer (issue 8), one table last.

    python -m benchmarks.bench_ddp --gpus 1 2 --out-dir $OUT

Two measurements, each through `torchrun --standalone --nproc-per-node N`:
  1. Step scaling (weak: the per-GPU batch stays fixed): `train_step` under DDP on resident random
     tensors, for each N: global pairs/s, scaling efficiency (pairs/s at N over N x pairs/s at 1),
     the step with gradient sync against the same step without it (DDP's `no_sync`, or under
     `--grad-sync flat`, the default, the step without its all-reduces; the difference is the
     all-reduce time that backward does not hide), a bare all-reduce of every gradient, and peak
     memory per GPU.
  2. Loss curves at one global batch: the `train` stage itself (sampler sharding, DDP, logging) on
     rendered synthetic faces, N = 1 twice (run-to-run noise: cuDNN and bf16 are not bit-exact) and
     then each larger N, comparing every logged loss with the first N = 1 run.
Needs CUDA and NCCL; tests never run it. NVLink multicast stays off (NCCL_NVLS_ENABLE=0).
"""

from __future__ import annotations

import argparse
import dataclasses
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def worker(args: argparse.Namespace) -> None:
    """One rank of the step-scaling run (started by torchrun)."""
    from geogan.training.distributed import init_from_env, shutdown

    env = init_from_env(args.device)
    mine, n_grad, warm_s = measure_rank(args, env)
    per_rank = gather_ranks(mine, env)
    if env.is_main:
        result = step_result(args, env, per_rank, n_grad, warm_s)
        Path(args.worker_out).write_text(json.dumps(result, indent=2))
        print(json.dumps(result), flush=True)
    shutdown(env)


def measure_rank(args: argparse.Namespace, env) -> tuple[list[float], int, float]:
    """This rank's [step ms, no-sync step ms, peak GiB, bare all-reduce ms], the gradient count and the warm-up seconds."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from benchmarks.common import bench_config, make_state, random_batch

    cuda = env.device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    cfg = bench_config(variant=args.variant)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, grad_sync=args.grad_sync))
    state, ctx = make_state(cfg, args.size, env.device,
                            "default" if args.compile else None, distributed=env.distributed)
    batches = [random_batch(args.batch, args.size, env.device, 1000 * env.rank + i) for i in range(4)]
    ddp_modules = [m for m in (getattr(f, "_orig_mod", f) for f in (state.gen_fwd, state.disc_fwd)) if isinstance(m, DDP)]

    # Without gradient sync: DDP's no_sync, or (train.grad_sync: flat) the step without its all-reduces
    unsynced = dataclasses.replace(state, sync_g=None, sync_d=None)

    def timed(steps: int, sync: bool) -> float:
        return timed_steps(state if sync else unsynced, ctx, batches, ddp_modules, env, steps, sync)

    t0 = time.perf_counter()
    timed(args.warmup, sync=True)
    warm_s = time.perf_counter() - t0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step_ms = timed(args.steps, sync=True)
    no_sync_ms = timed(args.steps, sync=False) if env.distributed else step_ms
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")

    n_grad = sum(p.numel() for p in list(state.gen.parameters()) + list(state.disc.parameters()))
    allreduce_ms = bare_allreduce_ms(n_grad, env) if env.distributed else 0.0
    return [step_ms, no_sync_ms, peak_gb, allreduce_ms], n_grad, warm_s


def timed_steps(state, ctx, batches: list, ddp_modules: list, env, steps: int, sync: bool) -> float:
    """ms per step on this rank, every rank starting together (the step has no host syncs)."""
    import torch
    import torch.distributed as dist

    from geogan.training.steps import train_step

    if env.distributed:
        dist.barrier()
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        with contextlib.ExitStack() as stack:
            if not sync:
                for m in ddp_modules:
                    stack.enter_context(m.no_sync())
            train_step(state, batches[i % 4], ctx)
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps * 1e3


def gather_ranks(mine: list[float], env) -> list[list[float]]:
    """Every rank's measurements, in rank order (all-gathered when distributed)."""
    import torch
    import torch.distributed as dist

    local = torch.tensor(mine, device=env.device, dtype=torch.float64)
    rows = [torch.zeros_like(local) for _ in range(env.world_size)]
    if env.distributed:
        dist.all_gather(rows, local)
    else:
        rows = [local]
    return [r.tolist() for r in rows]


def step_result(args: argparse.Namespace, env, per_rank: list[list[float]], n_grad: int, warm_s: float) -> dict:
    """The JSON row of one step-scaling run: the slowest rank's times, every rank's peak memory."""
    import torch

    slowest = max(r[0] for r in per_rank)
    cuda = env.device.type == "cuda"
    return {"gpus": env.world_size, "device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "size": args.size, "batch_per_gpu": args.batch, "variant": args.variant + ("+compile" if args.compile else ""),
            "grad_sync": args.grad_sync,
            "step_ms": slowest, "pairs_per_s": env.world_size * args.batch / slowest * 1e3,
            "no_sync_step_ms": max(r[1] for r in per_rank), "exposed_comm_ms": slowest - max(r[1] for r in per_rank),
            "allreduce_all_grads_ms": max(r[3] for r in per_rank), "grad_mbytes": n_grad * 4 / 1e6,
            "peak_mem_gb_per_gpu": [r[2] for r in per_rank], "warmup_s": warm_s}


def bare_allreduce_ms(n: int, env) -> float:
    """ms of one all-reduce of n float32 values (as many as G and D have gradients), after 3 warm-up calls."""
    import torch
    import torch.distributed as dist

    buf = torch.randn(n, device=env.device)
    for _ in range(3):
        dist.all_reduce(buf)
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        dist.all_reduce(buf)
    if env.device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / 10 * 1e3


def torchrun(n: int, cmd: list[str], timeout: float, log: Path) -> int:
    """Run `cmd` (a module or script with args) on n local GPUs; output to log and stdout."""
    full = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *cmd]
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "OMP_NUM_THREADS": "4", "PYTHONUNBUFFERED": "1"}
    print(f"\n=== {' '.join(full)}", flush=True)
    with open(log, "a") as f:
        try:
            proc = subprocess.run(full, cwd=HERE.parent, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"=== stopped after {timeout:.0f} s", flush=True)
            return -1
    return proc.returncode


def loss_curves(gpus: list[int], args: argparse.Namespace, out: Path, work: Path) -> dict:
    """The train stage at one global batch for N = 1 (twice) and every larger N; losses compared with the first run."""
    from benchmarks.variant_params import prepare_synthetic

    params, cfg, split_file = prepare_synthetic(work, [
        f"data.resolution={args.curve_size}", f"data.synthetic_identities={args.curve_identities}",
        f"train.batch_size={args.curve_batch}", f"train.steps={args.curve_steps}", f"train.log_every={args.curve_log_every}",
        f"train.image_every={args.curve_steps}", f"train.checkpoint_every={args.curve_steps}",
        f"train.grad_sync={args.grad_sync}"])
    attr = cfg.attributes[0]
    runs = [("1", 1), ("1-again", 1)] + [(str(n), n) for n in gpus if n > 1]
    histories: dict[str, list[dict]] = {}
    for name, n in runs:
        model = work / f"model-{name}"
        rc = torchrun(n, ["-m", "geogan.stages.train", "--params", str(params), "--attribute", attr,
                          "--prepared", str(work / "prepared"), "--landmarks", str(work / "landmarks"),
                          "--split", str(split_file), "--out", str(model),
                          "--work", str(work / f"run-{name}"), "--no-progress"], args.timeout, out / "curves.log")
        hist = model / "train_history.json"
        if rc == 0 and hist.is_file():
            histories[name] = json.loads(hist.read_text())
    ref = histories.get("1", [])
    compared = {}
    for name, hist in histories.items():
        if name == "1" or not ref:
            continue
        diffs = {}
        for key in ref[0]:
            if key in ("step", "images_per_second"):
                continue
            rel = [abs(h[key] - r[key]) / max(abs(r[key]), 1e-8) for h, r in zip(hist, ref)]
            diffs[key] = {"max_rel": max(rel), "median_rel": statistics.median(rel), "final": hist[-1][key], "final_ref": ref[-1][key]}
        compared[name] = {"losses": diffs, "pairs_per_s_last": hist[-1]["images_per_second"]}
    return {"size": args.curve_size, "global_batch": args.curve_batch, "steps": args.curve_steps,
            "pairs_per_s_last_ref": ref[-1]["images_per_second"] if ref else None, "vs_first_n1_run": compared,
            "histories": histories}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=24, help="pairs per GPU in the step-scaling run")
    p.add_argument("--variant", default="bf16_cl", help="as benchmarks.bench_train's --variants")
    p.add_argument("--grad-sync", choices=["flat", "ddp"], default="flat", help="train.grad_sync")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--device", default="cuda", help="cuda (NCCL); cpu (gloo) only to check the script itself")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--curve-size", type=int, default=128)
    p.add_argument("--curve-batch", type=int, default=32, help="global batch of the loss-curve runs")
    p.add_argument("--curve-steps", type=int, default=200)
    p.add_argument("--curve-log-every", type=int, default=10)
    p.add_argument("--curve-identities", type=int, default=300)
    p.add_argument("--skip-curves", action="store_true")
    p.add_argument("--timeout", type=float, default=600, help="seconds per torchrun")
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)  # set when torchrun starts a rank
    args = p.parse_args()
    if args.worker_out:
        return worker(args)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    steps = []
    for n in args.gpus:
        f = out / f"step-{n}.json"
        torchrun(n, ["-m", "benchmarks.bench_ddp", "--out-dir", str(out), "--worker-out", str(f), "--size", str(args.size),
                     "--batch", str(args.batch), "--variant", args.variant, "--steps", str(args.steps), "--warmup",
                     str(args.warmup), "--device", args.device, "--grad-sync", args.grad_sync] + (["--compile"] if args.compile else []), args.timeout, out / "step.log")
        if f.is_file():
            steps.append(json.loads(f.read_text()))
    curves = None
    if not args.skip_curves:
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.gettempdir()}/bench-ddp-mlflow.db")
        curves = loss_curves(args.gpus, args, out, Path(tempfile.mkdtemp(prefix="bench-ddp-")))
    (out / "ddp.json").write_text(json.dumps({"steps": steps, "curves": curves}, indent=2))
    print_summary(steps, curves)


def print_summary(steps: list[dict], curves: dict | None) -> None:
    print("\n" + "=" * 100)
    if steps:
        one = next((s for s in steps if s["gpus"] == 1), None)
        s0 = steps[0]
        print(f"DDP step scaling, {s0['device']}, {s0['size']} px, {s0['batch_per_gpu']} pairs per GPU, {s0['variant']}, "
              f"grad_sync {s0.get('grad_sync', 'ddp')}")
        print(f"{'GPUs':>4} {'step ms':>8} {'pairs/s':>8} {'efficiency':>10} {'no-sync ms':>10} {'exposed comm ms':>15} "
              f"{'all-reduce ms':>13} {'peak GB/GPU':>11}")
        for s in steps:
            eff = s["pairs_per_s"] / (s["gpus"] * one["pairs_per_s"]) if one else float("nan")
            print(f"{s['gpus']:>4} {s['step_ms']:>8.1f} {s['pairs_per_s']:>8.1f} {eff * 100:>9.1f}% {s['no_sync_step_ms']:>10.1f} "
                  f"{s['exposed_comm_ms']:>15.2f} {s['allreduce_all_grads_ms']:>13.2f} {max(s['peak_mem_gb_per_gpu']):>11.1f}")
    if curves:
        print(f"\nloss curves, train stage, {curves['size']} px, global batch {curves['global_batch']}, {curves['steps']} steps: "
              f"relative difference from the first 1-GPU run (N=1 run: {curves['pairs_per_s_last_ref'] or float('nan'):.1f} pairs/s)")
        for name, c in curves["vs_first_n1_run"].items():
            worst = sorted(c["losses"].items(), key=lambda kv: -kv[1]["median_rel"])[:4]
            print(f"  N={name:<8} {c['pairs_per_s_last']:7.1f} pairs/s   " +
                  "  ".join(f"{k}: median {v['median_rel'] * 100:.1f}% max {v['max_rel'] * 100:.1f}%" for k, v in worst))


if __name__ == "__main__":
    main()
