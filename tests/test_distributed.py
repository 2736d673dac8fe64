"""Collectives the trainer uses under DDP, on 2 real gloo processes: logged losses and the NaN stop."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.helpers.processes import free_port
from tests.helpers.training import no_effect_biases, random_batch, tiny_context, tiny_nets, tiny_state


def _two_ranks(target, *args, timeout: float) -> None:
    """Run target(rank, port, *args) in 2 spawned processes; fail if one hangs in a collective or exits non-zero."""
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=target, args=(r, port, *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.terminate()
    assert not hung, "a rank hung in a collective (the other left it waiting)"
    assert [p.exitcode for p in procs] == [0, 0]


def _rank(rank: int, port: int, out: str, world: int = 2) -> None:
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
    _two_ranks(_rank, str(tmp_path), timeout=120)
    r0, r1 = (json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2))
    assert r0["mean"] == r1["mean"] == [0.5, 5.0]
    assert r0["first"] == r1["first"] == 5 and r0["none"] == r1["none"] == -1
    assert math.isclose(r0["logged"]["g/total"], 1.5) and r0["logged"] == r1["logged"]  # the global batch's loss
    # Both ranks stop at the same step; the rank that saw it names the loss, the other says where it was.
    assert r1["raised"] and "g/total" in r1["raised"] and "at step 3" in r1["raised"]
    assert r0["raised"] and "on another rank" in r0["raised"] and "at step 3" in r0["raised"]


def _compiled_state(distributed: bool, losses: bool = False, grad_sync: str = "ddp"):
    from geogan.nets import COMPILED

    # aot_eager: Dynamo (with DDP's graph splitting) and AOTAutograd as Inductor sees them, no kernels generated.
    aot_eager = functools.partial(torch.compile, backend="aot_eager")
    state = tiny_state(aot_eager, losses, distributed=distributed, kernels=COMPILED, grad_sync=grad_sync, ndf=16, n_scales=2)
    # The second step's gradients on the first step's weights in both runs: Adam's first step, about
    # lr * sign(gradient), turns float noise in a near-zero gradient into a +-lr weight difference, which
    # moves the next gradients by up to 1% on one CPU and not on another.
    for opt in (state.opt_g, state.opt_d):
        for group in opt.param_groups:
            group["lr"] = 0.0
    return state


def _compiled_steps(state, batches, rank: int | None) -> list[dict[str, torch.Tensor]]:
    """Train on the batches; per step, the gradients G and D were updated with (under DDP: all-reduced)."""
    from geogan.data.dataset import Batch
    from geogan.training.steps import train_step

    # channels_last activations, as on a GPU (the context factory sets them on CUDA only).
    ctx = dataclasses.replace(tiny_context(), channels_last=True)
    grads = []
    for b in batches:
        if rank is not None:  # this rank's half of the global batch
            b = Batch(*(t[2 * rank:2 * rank + 2] for t in (b.x_a, b.x_b, b.lm_a, b.lm_b)))
        train_step(state, b, ctx)
        grads.append({f"{net}.{name}": p.grad.detach().clone() for net in ("gen", "disc")
                      for name, p in getattr(state, net).named_parameters()})
    return grads


def _compiled_ddp_rank(rank: int, port: int, out: str, losses: bool, grad_sync: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # a spawned rank: its own process
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    state = _compiled_state(distributed=True, losses=losses, grad_sync=grad_sync)
    grads = _compiled_steps(state, [random_batch(0, n=4), random_batch(1, n=4)], rank)
    if rank == 0:
        torch.save(grads, Path(out, "grads.pt"))
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("grad_sync,losses", [("ddp", False), ("ddp", True), ("flat", True)],
                         ids=["ddp-d-alone", "ddp-compile-losses", "flat-compile-losses"])
def test_compiled_ddp_matches_one_compiled_process(tmp_path, one_thread, grad_sync, losses):
    """torch.compile over DDP (as `train.compile` runs on several GPUs, with or without
    `train.compile_losses`: D's DDP module called inside the compiled terms), or over the plain modules
    with one flat all-reduce per net (`train.grad_sync: flat`), with every compiled-only layer rewrite:
    at each of two steps (DDP rebuilds its buckets after the first), 2 gloo ranks on half batches
    update every tensor of G and D with the gradient one process computes on the whole batch.

    Gradients, not weights after Adam, and at a learning rate of 0 (`_compiled_state`): Adam's first
    steps are about lr * sign(gradient), which turns float noise in a near-zero gradient into a +-lr
    step on one CPU and not on another.
    """
    _two_ranks(_compiled_ddp_rank, str(tmp_path), losses, grad_sync, timeout=900)
    state = _compiled_state(distributed=False, losses=losses)
    ref, ddp = _compiled_steps(state, [random_batch(0, n=4), random_batch(1, n=4)], None), torch.load(tmp_path / "grads.pt")
    # Every tensor counts except the biases that cannot change any output (`no_effect_biases`, proven
    # below): their true gradient is 0, so both runs hold rounding noise there.
    skip = {f"gen.{n}" for n in no_effect_biases(state.gen)} | {f"disc.{n}" for n in no_effect_biases(state.disc)}
    ratios = {(step, k): float((ddp[step][k] - g).norm() / g.norm().clamp_min(1e-12))
              for step, grads in enumerate(ref) for k, g in grads.items() if k not in skip}
    worst = sorted(ratios.items(), key=lambda kv: -kv[1])[:3]
    print(f"compiled DDP vs one process: {len(ratios)} gradients compared ({len(skip)} no-effect biases "
          f"skipped per step), worst {worst}")
    assert len(ratios) == len(ref) * (len(ref[0]) - len(skip)) and skip <= set(ref[0])
    assert worst[0][1] < 1e-3, worst


def test_no_effect_biases_are_exactly_the_parameters_that_change_no_output(one_thread):
    """Each parameter nudged alone, in float64: the listed biases change no output, every other tensor does."""
    # The nets' smallest input; one D scale (a second, at 8 px, would normalise 1x1 maps: all zeros).
    nets = tiny_nets(ngf=4, ndf=4, n_scales=1)
    gen, disc = nets.generator.double(), nets.discriminator.double()
    x_a, x_b = (torch.rand(1, 3, 16, 16, dtype=torch.float64) * 2 - 1 for _ in range(2))

    def outputs(net) -> list[torch.Tensor]:
        with torch.no_grad():
            if net is gen:
                return [v for v in vars(gen(x_a, x_b, 0.1)).values()]
            return [t for scale in disc(torch.cat([x_a, x_b])) for t in scale]

    for net in (gen, disc):
        before = outputs(net)
        no_effect = set()
        for name, p in net.named_parameters():
            saved = p.detach().clone()
            with torch.no_grad():
                p.add_(torch.randn_like(p) * 0.5)
            change = max(float((a - b).abs().max()) for a, b in zip(outputs(net), before))
            with torch.no_grad():
                p.copy_(saved)
            if change < 1e-9:
                no_effect.add(name)
        assert no_effect == no_effect_biases(net), sorted(no_effect ^ no_effect_biases(net))


def _flat_sync_rank(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from geogan.training.grad_sync import FlatGradSync

    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(rank)  # each rank starts from other weights
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 2, 1), torch.nn.Linear(5, 5))
    net = net.to(memory_format=torch.channels_last)
    sync = FlatGradSync(net)
    start = [p.detach().clone() for p in net.parameters()]
    x = torch.full((1, 3, 7, 7), float(rank + 1)).to(memory_format=torch.channels_last)
    net(x).sum().backward()
    net[2].weight.grad = None  # a parameter this step left without a gradient counts as zero
    own = [None if p.grad is None else p.grad.clone() for p in net.parameters()]
    sync()
    torch.save({"start": start, "own": own, "synced": [p.grad for p in net.parameters()]}, Path(out, f"{rank}.pt"))
    dist.destroy_process_group()


def test_flat_grad_sync_starts_from_rank_0_and_averages_gradients(tmp_path):
    """`train.grad_sync: flat`: rank 0's weights reach every rank, and after a backward each rank holds the mean of
    both ranks' gradients (channels_last ones included, a missing one as zero), with its layout unchanged."""
    _two_ranks(_flat_sync_rank, str(tmp_path), timeout=120)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in range(2))
    assert all(torch.equal(a, b) for a, b in zip(r0["start"], r1["start"]))
    assert not torch.equal(r0["own"][0], r1["own"][0])  # the ranks' own gradients differ
    for i, (a, b) in enumerate(zip(r0["own"], r1["own"])):
        mean = torch.zeros_like(r0["synced"][i]) if a is None else (a + b) / 2
        for synced in (r0["synced"][i], r1["synced"][i]):
            torch.testing.assert_close(synced, mean)
            assert synced.stride() == r0["start"][i].stride()


def test_memory_order_view_is_a_view_or_names_the_layout():
    from geogan.training.grad_sync import memory_order_view

    t = torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)
    v = memory_order_view(t)
    assert v.data_ptr() == t.data_ptr() and torch.equal(v, t.permute(0, 2, 3, 1).reshape(-1))
    with pytest.raises(ValueError, match="neither contiguous nor channels_last"):
        memory_order_view(torch.randn(4, 6)[:, ::2])
