"""What cuDNN's algorithm search (`train.cudnn_benchmark`) costs at the first step and buys in the steady step.

One eager step of the bench config at 256 px, batch 24, bf16 + channels_last, built with the compiled kernels
(`geogan.nets.fast_ops`, so the conv shapes are the compiled step's), in a new process per setting:

    python -m benchmarks.bench_cudnn_search --repeats 2

Each process times its first step (the search, when on, happens here), a second step and 10 steady steps.
Needs CUDA; tests never run it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def child(benchmark: bool, size: int, batch: int) -> dict:
    """One process: the first, second and steady step times with cudnn.benchmark as given."""
    import torch

    from benchmarks.common import STEADY_STEP, bench_config, random_batch
    from geogan.nets import COMPILED
    from geogan.training.build import eager_state, nets_for, step_context
    from geogan.training.steps import train_step

    torch.backends.cudnn.benchmark = benchmark
    cfg, device = bench_config(variant="bf16_cl"), torch.device("cuda")
    state = eager_state(nets_for(cfg.model, cfg.train, COMPILED), cfg.train, device, False)
    ctx = step_context(cfg.loss, cfg.train, STEADY_STEP, size, device, None)
    batches = [random_batch(batch, size, device, i) for i in range(2)]

    def timed(n: int) -> float:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(n):
            train_step(state, batches[i % 2], ctx)
        torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    first, second, steady = timed(1), timed(1), timed(10)
    return {"cudnn_benchmark": benchmark, "first_step_s": first, "second_step_s": second, "steady_ms": steady * 1e3}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--repeats", type=int, default=2, help="processes per setting, alternating off and on")
    p.add_argument("--child", choices=["0", "1"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child == "1", args.size, args.batch)), flush=True)
        return
    rows = []
    for _ in range(args.repeats):
        for flag in ("0", "1"):
            cmd = [sys.executable, "-m", "benchmarks.bench_cudnn_search", "--child", flag, "--size", str(args.size),
                   "--batch", str(args.batch)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=dict(os.environ)).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(f"\n{args.size} px, batch {args.batch}, eager bf16 + channels_last, compiled kernels")
    print(f"{'cudnn.benchmark':>15} {'first step s':>12} {'second s':>9} {'steady ms':>10}")
    for r in rows:
        on = "on" if r["cudnn_benchmark"] else "off"
        print(f"{on:>15} {r['first_step_s']:>12.2f} {r['second_step_s']:>9.3f} {r['steady_ms']:>10.1f}")


if __name__ == "__main__":
    main()
