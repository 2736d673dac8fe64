"""Where the step's InstanceNorm time goes, and what the banded statistics buy: every norm of one step, by shape.

    python -m benchmarks.bench_norm --size 256 --batch 24 --out $OUT/norm.json

Records the input shape of every `InstanceNorm` call of one real `train_step` (and whether the step
needs its input gradient), then times each distinct shape alone, compiled, in bf16 channels_last as
the compiled step runs it: forward, plus the backward where the step needs one. Two ways of computing
it, both exact rewrites of `F.instance_norm` (`geogan.nets.fast_ops`):

- `written`: the mean and variance over (H, W) per sample and channel (`instance_norm`);
- `banded`: the same statistics reduced per band of rows first (`instance_norm_banded`).

The table gives GPU kernel ms per step (calls x kernel ms per call; wall time alone would measure the
launches of a small norm, not its kernels) for each and the fraction of the copy bandwidth
measured in the same process that each reaches (bytes: x read and y written forward; the gradient
and x read, the input gradient written backward, each once). In the real step Inductor fuses the norm
with its neighbours, so the sum is a guide to what the norms cost, not a slice of the step.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Callable

import torch

from benchmarks.bench_convs import warm_up_gpu
from benchmarks.common import bench_config, kernel_events, make_state, random_batch
from geogan.nets.fast_ops import instance_norm, instance_norm_banded, norm_bands
from geogan.nets.layers import InstanceNorm
from geogan.training.steps import train_step

EPS = 1e-5
WAYS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {"written": instance_norm, "banded": instance_norm_banded}


def record_norms(size: int, batch: int, device: torch.device) -> Counter:
    """(input shape, needs the input gradient) -> calls in one eager step of the bench config."""
    state, ctx = make_state(bench_config(variant="fp32"), size, device)
    calls: Counter = Counter()

    def record(_module, inputs, _output) -> None:
        calls[(tuple(inputs[0].shape), inputs[0].requires_grad)] += 1

    for net in (state.gen, state.disc):
        for m in net.modules():
            if isinstance(m, InstanceNorm):
                m.register_forward_hook(record)
    train_step(state, random_batch(batch, size, device, 0), ctx)
    return calls


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    """Median of `reps` CUDA-event timings of `fn`, after three untimed calls: for work large enough to hide the host."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _kernel_ms(fn: Callable[[], object], reps: int) -> float:
    """GPU kernel time of one call of `fn` (profiler, mean of `reps`), after three untimed calls (the compile among them).

    Kernel time, not wall time: a small norm alone waits on its own launches (Dynamo's guards, autograd),
    which in the compiled step overlap the previous kernels.
    """
    for _ in range(3):
        fn()
    return sum(ev.device_time_total for ev in kernel_events(fn, reps)) / reps / 1e3


def time_norm(way: str, shape: tuple[int, ...], backward: bool, reps: int) -> float:
    """ms per call of one norm, compiled on its own, bf16 channels_last, forward (+ backward)."""
    torch._dynamo.reset()
    x = torch.randn(shape, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(backward)
    grad = torch.randn_like(x)
    norm = torch.compile(WAYS[way], dynamic=False)

    def call() -> None:
        y = norm(x, EPS)
        if backward:
            y.backward(grad)
            x.grad = None

    return _kernel_ms(call, reps)


def copy_bandwidth_gbs(numel: int = 1 << 28, reps: int = 20) -> float:
    """Device-to-device copy rate (bytes read + written per second, GB/s): the bandwidth fractions' denominator."""
    src = torch.empty(numel, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    ms = _median_ms(lambda: dst.copy_(src), reps)
    return 2 * src.numel() * src.element_size() / ms / 1e6


def time_shapes(calls: Counter, reps: int, bandwidth: float) -> list[dict]:
    """One row per distinct (shape, backward): ms per call and per step of each way, and its bandwidth fraction."""
    rows = []
    for (shape, backward), n in calls.items():
        moved = shape_bytes(shape, backward)
        row: dict = {"x": shape, "backward": backward, "calls": n, "bands": norm_bands(*shape[2:])}
        for way in WAYS:
            ms = time_norm(way, shape, backward, reps)
            row[way] = {"ms_per_call": ms, "ms_per_step": ms * n, "bandwidth_fraction": moved / ms / 1e6 / bandwidth}
        rows.append(row)
    rows.sort(key=lambda r: -r["written"]["ms_per_step"])
    return rows


def shape_bytes(shape: tuple[int, ...], backward: bool) -> int:
    """The least bytes a bf16 norm moves: x in, y out; backward also the gradient and x in, the input gradient out."""
    numel = 1
    for d in shape:
        numel *= d
    return 2 * numel * (2 + (3 if backward else 0))


def print_table(rows: list[dict], bandwidth: float) -> None:
    """ms per step of each way, their ratio and bandwidth fractions, one row per shape."""
    print(f"{'input':>22} {'bwd':>4} {'calls':>5} {'bands':>5} {'written ms':>10} {'banded ms':>10} {'speed-up':>8} "
          f"{'written bw':>10} {'banded bw':>10}")
    for r in rows:
        w, b = r["written"], r["banded"]
        print(f"{str(r['x']):>22} {'yes' if r['backward'] else 'no':>4} {r['calls']:>5} {r['bands']:>5} "
              f"{w['ms_per_step']:>10.2f} {b['ms_per_step']:>10.2f} {w['ms_per_step'] / b['ms_per_step']:>7.2f}x "
              f"{w['bandwidth_fraction']:>9.0%} {b['bandwidth_fraction']:>9.0%}")
    total_w = sum(r["written"]["ms_per_step"] for r in rows)
    total_b = sum(r["banded"]["ms_per_step"] for r in rows)
    print(f"{'all norms of one step':>22} {'':>4} {sum(r['calls'] for r in rows):>5} {'':>5} {total_w:>10.2f} {total_b:>10.2f} "
          f"{total_w / total_b:>7.2f}x   (copy bandwidth {bandwidth:.0f} GB/s)")


def main() -> None:
    """Record one step's norms, time each shape both ways, print the table, write JSON."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_norm times compiled CUDA kernels: it needs a GPU")
    warm_up_gpu()
    calls = record_norms(args.size, args.batch, torch.device("cuda"))
    bandwidth = copy_bandwidth_gbs()
    rows = time_shapes(calls, args.reps, bandwidth)
    name = torch.cuda.get_device_name()
    print(f"\n{name}, torch {torch.__version__}: every InstanceNorm of one step at {args.size} px, batch {args.batch},"
          f" compiled alone, bf16 channels_last, kernel time, mean of {args.reps}")
    print_table(rows, bandwidth)
    if args.out:
        args.out.write_text(json.dumps({"device": name, "size": args.size, "batch": args.batch,
                                        "copy_bandwidth_gbs": bandwidth, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
