"""Which operators launch the compiled step's copy and fill kernels, and from where in the step.

The 256 px compiled step spends 2.5 ms of its 68 ms of GPU time in about 357 copy and fill kernels (NOTES runs 27,
41), 7 µs each: too small to be data movement, numerous enough to be one per parameter or per graph input. This
profiles one steady step on the host and the GPU and attributes each such kernel to the operator that launched it
and the operators around it (autograd's node, a compiled graph, the optimiser), with the operator's input shapes.

    python -m benchmarks.probe_copies --size 256 --batch 24 --out $OUT/copies.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterable

from benchmarks.common import add_with_levers

# Operators worth naming in a kernel's ancestry: autograd's nodes, compiled graphs, the optimiser.
CONTEXT_TAGS = ("autograd::engine::evaluate_function", "CompiledFxGraph", "Torch-Compiled Region", "CompiledFunction",
                "Optimizer.step", "## Call")


def ancestry(event) -> list[str]:
    """The names of `event`'s enclosing operators worth naming (innermost first), then the outermost one."""
    names, outermost, parent = [], None, event.cpu_parent
    while parent is not None:
        if any(tag in parent.name for tag in CONTEXT_TAGS) and parent.name not in names:
            names.append(parent.name)
        outermost, parent = parent, parent.cpu_parent
    if outermost is not None and outermost.name not in names:
        names.append(outermost.name)
    return names


def attribute(events: Iterable, launched: Callable[[object], list[tuple[str, float]]], top: int = 40) -> list[dict]:
    """Group the wanted kernels by (launching operator, its input shapes, its ancestry); the most time first.

    `launched(event)` gives the wanted kernels an operator launched itself, as (kernel name, µs) pairs.
    """
    groups: dict[tuple, dict] = defaultdict(lambda: {"calls": 0, "us": 0.0, "kernels": set()})
    for event in events:
        kernels = launched(event)
        if not kernels:
            continue
        shapes = str(getattr(event, "input_shapes", "") or "")[:160]
        group = groups[(event.name, shapes, " < ".join(ancestry(event)))]
        for name, us in kernels:
            group["calls"] += 1
            group["us"] += us
            group["kernels"].add(name[:60])
    rows = [{"operator": op, "input_shapes": shapes, "within": within, "calls": g["calls"], "us": round(g["us"], 1),
             "kernels": sorted(g["kernels"])} for (op, shapes, within), g in groups.items()]
    return sorted(rows, key=lambda r: -r["us"])[:top]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=24)
    p.add_argument("--kind", default="copies and fills", help="the kernel class (bench_train.kernel_class) to attribute")
    p.add_argument("--top", type=int, default=40)
    add_with_levers(p)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.bench_train import kernel_class
    from benchmarks.common import bench_config, make_state, random_batch
    from geogan.training.steps import train_step

    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    state, ctx = make_state(bench_config(variant="bf16_cl"), args.size, device, "default", compile_losses=True,
                            with_levers=args.with_levers)
    batch = random_batch(args.batch, args.size, device, 0)
    for _ in range(4):  # the compile, cuDNN's search, then steady steps
        train_step(state, batch, ctx)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], record_shapes=True) as prof:
        train_step(state, batch, ctx)
        torch.cuda.synchronize()

    def launched(event) -> list[tuple[str, float]]:
        return [(k.name, k.duration) for k in getattr(event, "kernels", []) if kernel_class(k.name) == args.kind]

    rows = attribute(prof.events(), launched, args.top)
    total_us, total_calls = sum(r["us"] for r in rows), sum(r["calls"] for r in rows)
    print(f"\n{torch.cuda.get_device_name()}: '{args.kind}' kernels of one compiled step, {args.size} px, batch "
          f"{args.batch}: {total_calls} kernels, {total_us / 1e3:.2f} ms in the top {len(rows)} groups")
    print(f"{'us':>8} {'calls':>5}  operator  [input shapes]  within")
    for r in rows:
        print(f"{r['us']:>8.1f} {r['calls']:>5}  {r['operator']}  {r['input_shapes'][:80]}  {r['within'][:150]}")
    if args.out:
        args.out.write_text(json.dumps({"device": torch.cuda.get_device_name(), "size": args.size, "batch": args.batch,
                                        "kind": args.kind, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
