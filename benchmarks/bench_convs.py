"""Which convolutions the training step's time goes to: every conv of one step, timed alone, by shape.

    python -m benchmarks.bench_convs --size 256 --batch 24 --out $OUT/convs.json

Records every `nn.Conv2d` call of one real `train_step` (module name, input shape, weights, stride,
padding, dilation, and whether the step needs its input gradient and its weight gradient), then
times each distinct call alone, forward and the backward the step needs (dgrad and/or wgrad), in
bf16 with channels_last as the optimised step runs it, and prints them sorted by their share of
the step: calls per step x ms per call, with TFLOP/s. cuDNN picks its algorithms with
`cudnn.benchmark` as training does; compiled steps call the same cuDNN kernels. The profile
(`benchmarks.bench_train --profile`) names kernels; this names the layers behind them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmarks.common import bench_config, make_state, random_batch
from geogan.nets.fast_ops import space_to_depth_conv
from geogan.training.steps import train_step


def record_convs(size: int, batch: int, device: torch.device, ngf: int, ndf: int, n_blocks: int) -> Counter:
    """(name, input shape, weight shape, stride, padding, dilation, needs dgrad, needs wgrad) -> calls in one step."""
    state, ctx = make_state(bench_config(ngf, ndf, n_blocks, "fp32"), size, device)
    calls: Counter = Counter()

    def hook(name):
        def record(module: nn.Conv2d, inputs, _output):
            x = inputs[0]
            calls[(name, tuple(x.shape), tuple(module.weight.shape), module.stride, module.padding, module.dilation,
                   x.requires_grad, module.weight.requires_grad)] += 1
        return record

    for prefix, net in (("G", state.gen), ("D", state.disc)):
        for name, m in net.named_modules():
            if isinstance(m, nn.Conv2d):
                m.register_forward_hook(hook(f"{prefix}.{name}"))
    train_step(state, random_batch(batch, size, device, 0), ctx)
    return calls


def time_conv(x_shape, w_shape, stride, padding, dilation, dgrad: bool, wgrad: bool, device: torch.device,
              reps: int, channels_last: bool = True, pad_channels_to: int = 1, blocks: bool = False) -> float:
    """Median ms of one forward + the needed backward, bf16 (fp32 on CPU), channels_last unless told.

    `pad_channels_to` rounds the input and output channels up to a multiple (zero channels
    and zero weights give the same outputs): what a padded implementation of the layer would cost.
    `blocks` times `geogan.nets.fast_ops.space_to_depth_conv` instead (2x2 pixel blocks, pixel
    (un)shuffles and the weight transform included, run eagerly): stride-1 unpadded odd kernels only.
    On a GPU the reps run back to back between two CUDA events (launch overhead hidden, as in a step).
    """
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    fmt = torch.channels_last if (cuda and channels_last) else torch.contiguous_format
    up = lambda c: -(-c // pad_channels_to) * pad_channels_to  # noqa: E731
    x_shape = (x_shape[0], up(x_shape[1]), *x_shape[2:])
    w_shape = (up(w_shape[0]), up(w_shape[1]), *w_shape[2:])
    x = torch.randn(x_shape, device=device, dtype=dtype).contiguous(memory_format=fmt).requires_grad_(dgrad)
    w = (torch.randn(w_shape, device=device, dtype=dtype) * 0.02).contiguous(memory_format=fmt).requires_grad_(wgrad)
    inputs = [t for t, need in ((x, dgrad), (w, wgrad)) if need]
    if blocks:
        conv = lambda: space_to_depth_conv(x, w, None, 8, fmt == torch.channels_last)  # noqa: E731
    else:
        conv = lambda: F.conv2d(x, w, None, stride, padding, dilation)  # noqa: E731
    grad = torch.randn_like(conv())

    def once() -> None:
        y = conv()
        if inputs:
            torch.autograd.grad(y, inputs, grad)

    for _ in range(3):  # cuDNN's algorithm search (cudnn.benchmark) and allocations
        once()
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        times = []
        for _ in range(3):
            start.record()
            for _ in range(reps):
                once()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / reps)
        return sorted(times)[1]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def blocks_apply(r: dict) -> bool:
    """Whether a recorded conv is one `space_to_depth_conv` can compute (stride 1, unpadded, odd square kernel, even H, W)."""
    k = r["w"][2]
    return (r["stride"] == 1 and r["padding"] == 0 and r["dilation"] == 1 and k == r["w"][3] and k % 2 == 1 and k >= 3
            and r["x"][2] % 2 == 0 and r["x"][3] % 2 == 0)


def warm_up_gpu(seconds: float = 2.0) -> None:
    """Run matmuls until the GPU has reached its working clocks (the first rows were timed slow before)."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def _parse_args() -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--ngf", type=int, default=16)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--n-blocks", type=int, default=3)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--alternatives", action="store_true",
                   help="also time the top rows in NCHW, with channels padded to multiples of 8 and 32, and on 2x2 pixel blocks")
    p.add_argument("--device", default="cuda", help="cpu only to check the script itself")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


def time_shapes(calls: Counter, device: torch.device, reps: int) -> list[dict]:
    """One row per distinct conv shape with the layers behind it, timed alone; the most costly per step first."""
    # Calls of one shape time alike whichever layer makes them: time each shape once.
    by_shape: dict[tuple, list] = {}
    for (name, *shape), n in calls.items():
        by_shape.setdefault(tuple(shape), []).append((name, n))
    rows = []
    for shape, users in by_shape.items():
        x_shape, w_shape, stride, padding, dilation, dgrad, wgrad = shape
        ms = time_conv(x_shape, w_shape, stride, padding, dilation, dgrad, wgrad, device, reps)
        n = sum(c for _, c in users)
        out_hw = [(x_shape[2 + i] + 2 * padding[i] - dilation[i] * (w_shape[2 + i] - 1) - 1) // stride[i] + 1 for i in range(2)]
        flops = 2 * x_shape[0] * w_shape[0] * w_shape[1] * w_shape[2] * w_shape[3] * out_hw[0] * out_hw[1]
        flops *= 1 + dgrad + wgrad
        rows.append({"layers": sorted({name for name, _ in users}), "calls": n, "x": x_shape, "w": w_shape, "stride": stride[0],
                     "padding": padding[0], "dilation": dilation[0], "dgrad": dgrad, "wgrad": wgrad, "ms_per_call": ms, "ms_per_step": ms * n,
                     "tflops": flops / ms / 1e9})
    rows.sort(key=lambda r: -r["ms_per_step"])
    return rows


def print_table(rows: list[dict], total: float) -> None:
    """The rows' table: ms per step, share of the step, shapes, the backward needed and the layers."""
    print(f"{'ms/step':>8} {'share':>6} {'calls':>5} {'ms/call':>8} {'TF/s':>6} {'input':>20} {'weight':>16} {'s':>2} {'d':>2} bwd   layers")
    for r in rows:
        bwd = ("dgrad " if r["dgrad"] else "") + ("wgrad" if r["wgrad"] else "")
        layers = ", ".join(r["layers"][:2]) + (f" (+{len(r['layers']) - 2})" if len(r["layers"]) > 2 else "")
        print(f"{r['ms_per_step']:>8.2f} {r['ms_per_step'] / total * 100:>5.1f}% {r['calls']:>5} {r['ms_per_call']:>8.3f} "
              f"{r['tflops']:>6.0f} {str(r['x']):>20} {str(r['w']):>16} {r['stride']:>2} {r['dilation']:>2} {bwd:<12} {layers}")


def time_alternatives(rows: list[dict], top: int, device: torch.device, reps: int) -> None:
    """Time the rows NCHW, channel-padded and on 2x2 blocks (into each row's `alternatives_ms`), printing a table."""
    alternatives = {"nchw": {"channels_last": False}, "pad8": {"pad_channels_to": 8}, "pad32": {"pad_channels_to": 32},
                    "blocks": {"blocks": True}}
    print(f"\nalternatives for the top {top} (ms per call; same outputs; blocks = space_to_depth_conv, eager,"
          " shuffles included; - = does not apply)")
    print(f"{'as run':>8} " + " ".join(f"{k:>8}" for k in alternatives) + "   layers")
    for r in rows:
        shape = (r["x"], r["w"], (r["stride"],) * 2, (r["padding"],) * 2, (r["dilation"],) * 2, r["dgrad"], r["wgrad"])
        r["alternatives_ms"] = {k: time_conv(*shape, device, reps, **kw) for k, kw in alternatives.items()
                                if k != "blocks" or blocks_apply(r)}
        print(f"{r['ms_per_call']:>8.3f} " + " ".join(f"{r['alternatives_ms'][k]:>8.3f}" if k in r["alternatives_ms"]
                                                      else f"{'-':>8}" for k in alternatives) +
              f"   {', '.join(r['layers'][:2])}")


def main() -> None:
    """Record one step's convs, time each shape (and the alternatives if asked), print the tables, write JSON."""
    args = _parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        warm_up_gpu()
    calls = record_convs(args.size, args.batch, device, args.ngf, args.ndf, args.n_blocks)
    rows = time_shapes(calls, device, args.reps)
    total = sum(r["ms_per_step"] for r in rows)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"\n{name}: every conv of one step at {args.size} px, batch {args.batch}, timed alone; sum {total:.1f} ms per step")
    print_table(rows[:args.top], total)
    if args.alternatives:
        time_alternatives(rows[:args.top], args.top, device, args.reps)
    if args.out:
        args.out.write_text(json.dumps({"device": name, "size": args.size, "batch": args.batch, "total_ms": total, "rows": rows},
                                       indent=2))

if __name__ == "__main__":
    main()
