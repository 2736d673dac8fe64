"""The step's loss terms compile as whole graphs (`compiled_state(state, compiler, losses=True)`).

The GPU benchmark compiles them with Inductor; here the `aot_eager` backend traces the same
graphs (Dynamo + AOTAutograd, forward and backward) without generating kernels, so the
test is quick on a CPU and still fails on a graph break, a recompilation or a wrong gradient.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
import torch._dynamo

from torch._dynamo.utils import counters

from geogan.nets import COMPILED, STOCK
from geogan.training.steps import train_step
from tests.helpers.training import random_batch as _batch
from tests.helpers.training import tiny_context, tiny_state


def _state(compiled: bool):
    if not compiled:
        return tiny_state(ndf=16, n_scales=2, kernels=STOCK)
    aot_eager = functools.partial(torch.compile, backend="aot_eager")
    return tiny_state(aot_eager, losses=True, ndf=16, n_scales=2, kernels=COMPILED)


@pytest.mark.parametrize("d_augment", [(), ("color", "translation", "cutout")])
def test_compiled_loss_terms_match_eager_without_breaks_or_recompiles(d_augment):
    torch._dynamo.reset()
    counters.clear()
    eager, compiled = _state(False), _state(True)
    ctx = tiny_context(d_augment=d_augment)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(3):
            # The mask weight changes every step during its warm-up, and the refinement turns on at
            # refine_start_step: neither may compile G or the terms again.
            step_ctx = dataclasses.replace(ctx, weights={**ctx.weights, "lambda_mask": 0.1 * step / 3},
                                           refine_weight=0.0 if step == 0 else ctx.refine_weight)
            batch = _batch(step)
            torch.manual_seed(100 + step)  # DiffAugment draws the same augmentations in both (CPU: same order)
            logs_e = train_step(eager, batch, step_ctx)
            torch.manual_seed(100 + step)
            logs_c = train_step(compiled, batch, step_ctx)
            for k in logs_e:
                torch.testing.assert_close(logs_c[k], logs_e[k], rtol=1e-4, atol=1e-5, msg=k)
            if step == 0:  # same weights so far: the compiled backward gives eager's gradients
                _assert_same_grads(eager, compiled)
    assert not counters["graph_break"], dict(counters["graph_break"])  # G, each phase's terms: one graph each


def _assert_same_grads(eager, compiled) -> None:
    # After a step, G holds its phase's gradients and D its own. Real gradients agree to ~1e-5
    # relative; conv biases before an InstanceNorm get only rounding noise (~1e-7), hence atol.
    # (Weights after several Adam updates are no test: Adam turns that noise into lr-sized steps.)
    for net in ("gen", "disc"):
        for (name, p_e), p_c in zip(getattr(eager, net).named_parameters(), getattr(compiled, net).parameters()):
            assert (p_e.grad is None) == (p_c.grad is None), f"{net}.{name}"
            if p_e.grad is not None:
                torch.testing.assert_close(p_c.grad, p_e.grad, rtol=1e-3, atol=1e-5, msg=f"{net}.{name}")


def test_the_recipes_region_terms_compile_with_d_without_breaks():
    """The real recipe's D inputs (region-sparing cutout, the local D's crops) and its mask prior
    compile inside each phase's graph (`train.compile_losses`), and the step's losses stay eager's."""
    from geogan.landmarks.regions import RegionSpec
    from geogan.training.steps import RegionView

    torch._dynamo.reset()
    counters.clear()
    aot_eager = functools.partial(torch.compile, backend="aot_eager")
    eager = tiny_state(n_scales=2, local_ndf=8, kernels=STOCK)
    compiled = tiny_state(aot_eager, losses=True, n_scales=2, local_ndf=8, kernels=COMPILED)
    eyes = RegionView(RegionSpec(points=tuple(range(36, 48)), margin=(0.3, 0.3), crop_hw=(8, 16)),
                      local_d=True, spare_cutout=True, mask_prior=True)
    ctx = tiny_context(region=eyes, loss={"lambda_mask_region": 1.0}, d_augment=("color", "translation", "cutout"))
    for step in range(2):
        batch = _batch(step)
        torch.manual_seed(7 + step)
        logs_e = train_step(eager, batch, ctx)
        torch.manual_seed(7 + step)
        logs_c = train_step(compiled, batch, ctx)
        assert {"g/local_adv", "g/mask_region", "d/local_adv"} <= logs_c.keys()
        for k in logs_e:
            torch.testing.assert_close(logs_c[k], logs_e[k], rtol=1e-4, atol=1e-5, msg=k)
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_train_compile_losses_compiles_each_phases_terms(monkeypatch):
    from geogan.training.build import build_training
    from tests.helpers.params import tiny_config
    from tests.helpers.training import tiny_nets

    compiled = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: compiled.append(getattr(fn, "__name__", type(fn).__name__)) or fn)
    for losses in (False, True):
        compiled.clear()
        train = dataclasses.replace(tiny_config().train, compile=True, compile_losses=losses)
        build_training(tiny_nets(), train, torch.device("cpu"), distributed=False)
        terms = {"discriminator_terms", "generator_terms"}
        assert terms <= set(compiled) if losses else not terms & set(compiled), compiled


@pytest.mark.parametrize("losses", [False, True])
def test_compiled_state_compiles_only_the_parts_asked_for_and_names_a_wrong_one(losses):
    from geogan.training.build import COMPILED_PARTS, compiled_state

    def compiled(fn):  # a marked wrapper, so the state shows which callables were compiled
        def wrapper(*args, **kwargs):
            return fn(*args, **kwargs)
        wrapper.compiled = True
        return wrapper

    state = tiny_state()
    names = {"generator_cycle": ["gen_fwd"], "d_phase": ["d_terms" if losses else "disc_fwd"],
             "g_phase": ["g_terms" if losses else "disc_frozen"]}
    for part in COMPILED_PARTS:
        only = compiled_state(state, compiled, losses, parts=[part])
        marked = {name for name in ("gen_fwd", "disc_fwd", "disc_frozen", "d_terms", "g_terms")
                  if getattr(getattr(only, name), "compiled", False)}
        assert marked == set(names[part]), (part, marked)
    whole = compiled_state(state, compiled, losses)
    assert all(getattr(getattr(whole, n[0]), "compiled", False) for n in names.values())
    with pytest.raises(ValueError, match="unknown parts \\['d_terms'\\]"):
        compiled_state(state, compiled, losses, parts=["d_terms"])


def test_compiled_blocks_compile_the_transfer_and_the_removal_once_each_and_match_eager():
    """`compiled_state(blocks=True)`: the cycle calls each block twice (data, then generated images that need
    gradients); both calls share one graph per block, and the step's losses and gradients stay eager's."""
    torch._dynamo.reset()
    counters.clear()
    aot_eager = functools.partial(torch.compile, backend="aot_eager")
    small = {"ndf": 4, "n_scales": 1}  # D as small as it goes, and eager: the blocks are G's
    eager = tiny_state(kernels=STOCK, **small)
    blocks = tiny_state(aot_eager, blocks=True, parts=["generator_cycle"], kernels=COMPILED, **small)
    ctx = tiny_context()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for step in range(2):
            batch = _batch(step)
            logs_e, logs_b = train_step(eager, batch, ctx), train_step(blocks, batch, ctx)
            for k in logs_e:
                torch.testing.assert_close(logs_b[k], logs_e[k], rtol=1e-4, atol=1e-5, msg=k)
            if step == 0:  # same weights so far: eager's gradients
                _assert_same_grads(eager, blocks)
    # The transfer and the removal: two graphs (G's whole cycle is one, holding each block twice). Under bf16 the
    # inputs' dtypes differ between the calls too: the next test.
    assert counters["stats"]["unique_graphs"] == 2, dict(counters["stats"])
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_compiled_blocks_give_every_input_one_layout_so_producers_strides_do_not_recompile():
    """A 1-channel mask has the same bytes under two strides, (HW, HW, W, 1) from eager ops and (HW, 1, W, 1) from
    Inductor (benchmarks/NOTES.md run 37), and comes bf16 from G but float32 from the eager warp (run 38); an image
    may come channels_last or not. Each block still compiles once."""
    from geogan.training.build import CompiledBlocks
    from tests.helpers.training import tiny_nets

    torch._dynamo.reset()
    counters.clear()
    gen = tiny_nets().generator.to(memory_format=torch.channels_last)
    blocks = CompiledBlocks(gen, functools.partial(torch.compile, backend="aot_eager"), channels_last=True)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    mask = torch.rand(2, 1, 32, 32, generator=g).bfloat16().float()  # values a bf16 mask holds exactly
    mask_inductor = mask.reshape(2, 32, 32, 1).permute(0, 3, 1, 2).bfloat16()  # Inductor's strides, G's bf16
    assert mask_inductor.stride() != mask.stride() and torch.equal(mask_inductor.float(), mask)
    with torch._dynamo.config.patch(error_on_recompile=True):
        first = blocks.remove(x, mask)
        second = blocks.remove(x.contiguous(memory_format=torch.channels_last).requires_grad_(),
                               mask_inductor.requires_grad_())
    torch.testing.assert_close(second, first)
    torch.testing.assert_close(first, gen.remove(x, mask), rtol=1e-5, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
