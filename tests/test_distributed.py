"""Collectives the trainer uses under DDP, on 2 real gloo processes: logged losses and the NaN stop."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from geogan.training.distributed import DistEnv, first_over_ranks, mean_over_ranks
    from geogan.training.steps import LossGuard, NonFiniteLossError

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=world)
    env = DistEnv(rank=rank, local_rank=rank, world_size=world, device=torch.device("cpu"))
    result: dict = {"mean": mean_over_ranks(env, torch.tensor([float(rank), 10.0 * rank])).tolist(),
                    "first": first_over_ranks(env, 5 if rank == 1 else -1), "none": first_over_ranks(env, -1)}
    guard = LossGuard(env.device)
    for step in range(4):
        bad = rank == 1 and step == 2  # only rank 1 sees a NaN, at step 2
        guard.update({"g/total": torch.tensor(float("nan") if bad else 1.0), "d/total": torch.tensor(0.5)}, step)
    result["logged"] = LossGuard.read({"g/total": torch.tensor(1.0 + rank)}, env)
    try:
        guard.check(env)
        result["raised"] = None
    except NonFiniteLossError as e:
        result["raised"] = str(e)
    Path(out, f"{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def test_losses_are_averaged_and_a_nan_on_one_rank_stops_every_rank(tmp_path):
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank, args=(r, 2, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.terminate()
    assert not hung, "a rank hung in a collective (the other left it waiting)"
    assert [p.exitcode for p in procs] == [0, 0]
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2))
    assert r0["mean"] == r1["mean"] == [0.5, 5.0]
    assert r0["first"] == r1["first"] == 5 and r0["none"] == r1["none"] == -1
    assert math.isclose(r0["logged"]["g/total"], 1.5) and r0["logged"] == r1["logged"]  # the global batch's loss
    # Both ranks stop at the same step; the rank that saw it names the loss, the other says where it was.
    assert r1["raised"] and "g/total" in r1["raised"] and "at step 3" in r1["raised"]
    assert r0["raised"] and "on another rank" in r0["raised"] and "at step 3" in r0["raised"]
