"""G's cycle outputs, eager (compiled kernels, no torch.compile) against Inductor's G: shape, strides, dtype, views.

A graph that takes these outputs (the G phase) is keyed on their strides, so a difference here means the graph
compiled after an eager G is not the one compiled G feeds (benchmarks/NOTES.md run 37). Prints one line per output.

    python -m benchmarks.probe_cycle_outputs      # on a GPU: compiles G's forward (about 2 min)
"""

from __future__ import annotations

import dataclasses

import torch

from benchmarks.common import bench_config, make_state, random_batch
from geogan.training.steps import generator_forward


def meta(t: torch.Tensor) -> dict:
    """What a compiled graph taking `t` is keyed on, and whether `t` is a view."""
    return dict(shape=tuple(t.shape), stride=t.stride(), dtype=str(t.dtype), grad=t.requires_grad,
                view=t._base is not None, offset=t.storage_offset())


def main() -> None:
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    cfg = bench_config(variant="bf16_cl")
    eager, ctx = make_state(cfg, 256, dev, "default", compile_losses=True, parts=[])
    compiled, _ = make_state(cfg, 256, dev, "default", compile_losses=True, parts=["generator_cycle"])
    compiled.gen.load_state_dict(eager.gen.state_dict())
    batch = random_batch(24, 256, dev, 0)
    outs = {}
    for name, state in (("eager", eager), ("compiled", compiled)):
        out = generator_forward(state, batch, ctx)
        outs[name] = {f.name: getattr(out, f.name) for f in dataclasses.fields(out)}
    for field in outs["eager"]:
        e, c = outs["eager"][field], outs["compiled"][field]
        if not isinstance(e, torch.Tensor):
            continue
        me, mc = meta(e), meta(c)
        flag = "SAME" if me == mc else "DIFF"
        print(f"{flag} {field}: eager {me} | compiled {mc}")
    for name, tensors in outs.items():  # which outputs share storage (aliasing changes AOTAutograd's graph)
        groups = {}
        for field, t in tensors.items():
            if isinstance(t, torch.Tensor):
                groups.setdefault(t.untyped_storage().data_ptr(), []).append(field)
        print(name, "shared storage:", [g for g in groups.values() if len(g) > 1])


if __name__ == "__main__":
    main()
