"""Collectives the trainer uses under DDP, on 2 real gloo processes: logged losses and the NaN stop."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers_train import LOSS_WEIGHTS, random_batch


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


def _compiled_state(distributed: bool):
    from geogan.nets import build_nets
    from geogan.training.steps import build_training

    torch.manual_seed(0)
    nets = build_nets(ngf=8, ndf=16, n_blocks=1, n_scales=2)
    # aot_eager: Dynamo (with DDP's graph splitting) and AOTAutograd as Inductor sees them, no kernels generated.
    return build_training(nets.generator, nets.discriminator, torch.device("cpu"), 1e-4, 1e-4, (0.5, 0.999),
                          channels_last=False, compile=True, distributed=distributed, compile_backend="aot_eager")


def _compiled_steps(state, batches, rank: int | None) -> None:
    from geogan.data.dataset import Batch
    from geogan.training.steps import StepContext, train_step

    ctx = StepContext(size=32, weights=LOSS_WEIGHTS, refine_weight=0.1, channels_last=True)
    for b in batches:
        if rank is not None:  # this rank's half of the global batch
            b = Batch(*(t[2 * rank:2 * rank + 2] for t in (b.x_a, b.x_b, b.lm_a, b.lm_b)))
        train_step(state, b, ctx)


def _compiled_ddp_rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    state = _compiled_state(distributed=True)
    _compiled_steps(state, [random_batch(0, n=4), random_batch(1, n=4)], rank)
    if rank == 0:
        torch.save(state.gen.state_dict(), Path(out, "gen.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
def test_compiled_ddp_matches_one_compiled_process(tmp_path):
    """torch.compile over DDP (as `train.compile` runs on several GPUs) with every compiled-only layer
    rewrite: 2 gloo ranks on half batches end where one process on the whole batch ends."""
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_compiled_ddp_rank, args=(r, port, str(tmp_path))) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    for p in procs:
        if p.is_alive():
            p.terminate()
    assert [p.exitcode for p in procs] == [0, 0]
    torch.set_num_threads(1)
    init = _compiled_state(distributed=False).gen.state_dict()
    state = _compiled_state(distributed=False)
    _compiled_steps(state, [random_batch(0, n=4), random_batch(1, n=4)], None)
    ref, ddp = state.gen.state_dict(), torch.load(tmp_path / "gen.pt")
    # Per tensor: how far the two runs' weights are apart, against how far training moved them. Adam's
    # first steps are about lr * sign(gradient), so elements whose gradient is rounding noise (biases
    # before an InstanceNorm) differ at the scale of the movement itself: judge the median tensor.
    ratios = sorted(float((ddp[k] - ref[k]).norm() / ((ref[k] - init[k]).norm() + 1e-12)) for k in ref)
    assert ratios[len(ratios) // 2] < 1e-3, ratios[len(ratios) // 2]
