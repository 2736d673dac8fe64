"""The GPU benchmark scripts' own logic, run on the CPU at toy sizes (no timing is asserted)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.params import ROOT
from tests.helpers.processes import run_stage, stage_env
from tests.helpers.training import tiny_nets

TOY = ["--ngf", "4", "--ndf", "8", "--n-blocks", "1"]


def _run(args: list[str], tmp: Path, timeout: int = 300) -> None:
    proc = run_stage([sys.executable, *args], stage_env(tmp, threads=1), ROOT, timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_bench_convs_records_each_conv_with_the_backward_the_step_needs(tmp_path):
    out = tmp_path / "convs.json"
    _run(["-m", "benchmarks.bench_convs", "--device", "cpu", "--size", "64", "--batch", "2", "--reps", "1", *TOY,
          "--alternatives", "--top", "4", "--out", str(out)], tmp_path)
    rows = json.loads(out.read_text())["rows"]
    by_layer: dict[str, list[dict]] = {}
    for r in rows:
        for layer in r["layers"]:
            by_layer.setdefault(layer, []).append(r)
    # D runs twice a step: its update (weight gradients, detached input) and G's update (frozen, input gradients).
    dilated = by_layer["D.scales.0.dilated.0"]
    assert sorted((r["dgrad"], r["wgrad"]) for r in dilated) == [(True, False), (True, True)]
    first = by_layer["D.scales.0.trunk.0"]
    assert sorted((r["dgrad"], r["wgrad"]) for r in first) == [(False, True), (True, False)]
    assert first[0]["x"][0] != first[1]["x"][0]  # 6 x batch images in D's update, 4 x batch fakes in G's
    # The flow net's stem sees real a, b (no input gradient) in the cycle's first transfer, fakes in its second.
    assert sorted(r["dgrad"] for r in by_layer["G.flow.encoder.stem.1"]) == [False, True]
    assert all(r["ms_per_call"] > 0 for r in rows)
    # The alternatives: every top row in NCHW and padded; 2x2 blocks only where they compute the same conv.
    for r in rows[:4]:
        alt = r["alternatives_ms"]
        assert {"nchw", "pad8", "pad32"} <= alt.keys()
        assert ("blocks" in alt) == (r["stride"] == 1 and r["padding"] == 0 and r["w"][2] % 2 == 1 and r["w"][2] >= 3)


def test_each_kernel_lever_reaches_every_layer_it_lives_in():
    """`benchmarks.bench_train --without LEVER` builds nets whose kernel-choosing layers all run the
    compiled kernels but that lever, and `without` every lever is the stock kernels."""
    from benchmarks.common import LEVERS
    from geogan.nets import COMPILED, STOCK
    from geogan.nets.layers import Conv2d, InstanceNorm, ReflectionPad, Upsample2x

    for lever in LEVERS:
        kernels = COMPILED.without([lever])
        assert [name for name in LEVERS if not getattr(kernels, name)] == [lever]
        nets = tiny_nets(kernels, n_scales=2)
        layers = [m for net in (nets.generator, nets.discriminator) for m in net.modules()
                  if isinstance(m, (Conv2d, InstanceNorm, ReflectionPad, Upsample2x))]
        assert {type(m) for m in layers} == {Conv2d, InstanceNorm, ReflectionPad, Upsample2x}
        assert all(m.kernels == kernels for m in layers)
    assert COMPILED.without(LEVERS) == STOCK and STOCK.name == "stock" and COMPILED.name == "compiled"


def test_tried_levers_stay_out_of_the_compiled_kernels_until_asked_for():
    """`bench_train --with norm_bands` turns on what `COMPILED` leaves out, and the run's name says so."""
    import torch

    from benchmarks.common import LEVERS, TRIED_LEVERS, bench_config, make_state
    from geogan.nets import COMPILED
    from geogan.nets.layers import InstanceNorm

    assert not set(LEVERS) & set(TRIED_LEVERS) and not any(getattr(COMPILED, lever) for lever in TRIED_LEVERS)
    banded = COMPILED.with_levers(["norm_bands"])
    assert banded.norm_bands and banded.name == "compiled+norm_bands"
    assert COMPILED.without(["upsample"]).with_levers(["norm_bands"]).name == "compiled-without-upsample+norm_bands"
    with pytest.raises(ValueError, match="unknown kernel levers"):
        COMPILED.with_levers(["norm_band"])
    cfg = bench_config(variant="fp32")
    state, _ = make_state(cfg, 64, torch.device("cpu"), "default", with_levers=["norm_bands"])
    norms = [m for m in getattr(state.gen_fwd, "_orig_mod", state.gen_fwd).modules() if isinstance(m, InstanceNorm)]
    assert norms and all(m.kernels == banded for m in norms)


@pytest.mark.slow
def test_bench_ddp_measures_one_and_two_gloo_ranks(tmp_path):
    _run(["-m", "benchmarks.bench_ddp", "--device", "cpu", "--variant", "fp32", "--gpus", "1", "2", "--size", "64",
          "--batch", "1", "--steps", "1", "--warmup", "1", "--skip-curves", "--out-dir", str(tmp_path)], tmp_path, timeout=600)
    steps = json.loads((tmp_path / "ddp.json").read_text())["steps"]
    assert [s["gpus"] for s in steps] == [1, 2] and {s["grad_sync"] for s in steps} == {"flat"}
    one, two = steps
    assert one["exposed_comm_ms"] == 0 and one["allreduce_all_grads_ms"] == 0
    assert two["allreduce_all_grads_ms"] > 0 and two["pairs_per_s"] > 0
    assert two["grad_mbytes"] == one["grad_mbytes"] > 50  # the reference widths: G 4.2 M + D 14.1 M parameters


@pytest.mark.slow
def test_bench_epoch_runs_the_train_stage_on_rendered_faces(tmp_path):
    work, out = tmp_path / "work", tmp_path / "epoch.json"
    _run(["-m", "benchmarks.bench_epoch", "--size", "64", "--batch", "2", "--steps", "6", "--identities", "8",
          "--bare-steps", "2", "--work", str(work), "--out", str(out)], tmp_path, timeout=600)
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["compiled"] is False
    assert len(result["loop_windows"]) == 3 and all(w > 0 for w in result["loop_windows"])
    assert result["bare_step_pairs_per_s_one_gpu"] > 0 and result["loop_over_bare"] > 0
    history = json.loads((work / "model" / "train_history.json").read_text())
    assert [h["step"] for h in history][-1] == 6  # the stage trained the steps asked for, on the params written


def test_celeba_runs_writes_each_runs_params_over_the_recipe_and_names_a_wrong_key(tmp_path):
    from benchmarks.celeba_runs import COMPILED, run_table, write_params
    from geogan.config import ConfigError, load_config

    spec = run_table()["Mustache-region5-cls3-s1"]
    path = tmp_path / "run" / "params.yaml"
    path.parent.mkdir()
    write_params(path, {**spec["overrides"], **COMPILED, "train.steps": 48})  # keys the recipe itself leaves out
    cfg = load_config(path)
    assert (cfg.loss.lambda_mask_region, cfg.loss.lambda_local_cls, cfg.train.seed, cfg.train.steps) == (5.0, 3.0, 1, 48)
    assert cfg.train.compile and cfg.train.compile_cuda_graphs and cfg.train.compile_losses
    assert cfg.model.local_ndf == 64 and cfg.split.populations == {"Mustache": "Male"}  # the rest is the recipe's
    with pytest.raises(ConfigError, match="loss.lambda_nope"):
        write_params(tmp_path / "bad.yaml", {"loss.lambda_nope": 1.0})
    # Each run keeps the weights it was measured with, whatever the recipe says now
    measured = {"Mustache-all-s0": (2.0, 1.0), "Eyeglasses-local_d": (0.0, 1.0), "Mustache-region5-s1": (5.0, 1.0),
                "Eyeglasses-region10-cls3-s0": (10.0, 3.0)}
    for name, weights in measured.items():
        write_params(tmp_path / f"{name}.yaml", run_table()[name]["overrides"])
        loss = load_config(tmp_path / f"{name}.yaml").loss
        assert (loss.lambda_mask_region, loss.lambda_local_cls) == weights, name


def test_bench_train_counts_a_recipes_step_flops_on_the_cpu(tmp_path):
    from benchmarks import bench_train

    def tflop(*args):
        return bench_train.main(["--flops-only", "--sizes", "64", *args])["rows"][0]["tflop_per_step"]

    plain = tflop("--batches", "2")
    recipe = tflop("--batches", "2", "--params", str(ROOT / "params" / "celeba-128.yaml"), "--out", str(tmp_path / "f.json"))
    # Same widths; the recipe's local discriminator and landmark heatmaps add work on top
    assert recipe > plain > 0
    assert tflop("--batches", "4") == pytest.approx(2 * plain, rel=1e-6)  # FLOPs follow the batch
    assert json.loads((tmp_path / "f.json").read_text())["config"].endswith("celeba-128.yaml")


def test_regional_compile_traces_each_subnet_and_keeps_the_step_and_its_weights():
    import torch

    from benchmarks.common import bench_config, compile_regions, make_state, random_batch
    from geogan.training.steps import train_step

    cpu = torch.device("cpu")
    cfg = bench_config(ngf=4, ndf=8, n_blocks=1)
    plain, ctx = make_state(cfg, 64, cpu)
    regional, _ = make_state(cfg, 64, cpu)  # same seed: the same initial weights
    graphs = []

    def record(gm, example_inputs):  # a Dynamo backend that runs the traced graph as it is
        graphs.append(gm)
        return gm.forward

    keys = list(regional.gen.state_dict())
    compile_regions(regional, backend=record)
    assert list(regional.gen.state_dict()) == keys  # checkpoints keep their keys
    batch = random_batch(2, 64, cpu, 0)
    losses = []
    for state in (plain, regional):
        torch.manual_seed(0)  # DiffAugment draws the same
        losses.append({k: v.item() for k, v in train_step(state, batch, ctx).items()})
    # G's flow, mask, refine and removal nets and D's 3 scales, each traced; the step is the eager one
    assert len(graphs) >= 7
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)


def test_bench_train_reads_inductor_settings_and_names_a_wrong_one(capsys):
    from benchmarks import bench_train

    args = bench_train._parse_args(["--inductor", "coordinate_descent_tuning=True", "triton.cudagraphs=False"])
    assert args.inductor_settings == {"coordinate_descent_tuning": True, "triton.cudagraphs": False}
    for bad in ("coordinate_descent_tunning=True", "coordinate_descent_tuning"):
        with pytest.raises(SystemExit):
            bench_train._parse_args(["--inductor", bad])
        assert bad in capsys.readouterr().err


def test_profile_kinds_sort_kernels_by_their_names():
    from benchmarks.bench_train import kernel_class

    kinds = {name: kernel_class(name) for name in (
        "triton_red_fused_var_mean_3", "triton_per_fused_native_layer_norm_0", "triton_poi_fused_add_relu_7",
        "sm90_xmma_wgrad_implicit_gemm_indexed_bf16", "void cudnn::cnn::conv2d_grouped_direct_kernel",
        "void at::native::elementwise_kernel<direct_copy_kernel_cuda>", "multi_tensor_apply_kernel<FusedAdamMathFunctor>")}
    assert [kinds[n].split()[0] for n in kinds] == ["Triton", "Triton", "Triton", "cuDNN", "cuDNN", "copies", "optimiser"]
    assert kinds["triton_red_fused_var_mean_3"] != kinds["triton_poi_fused_add_relu_7"]


@pytest.mark.slow
def test_compare_gpu_script_trains_evaluates_and_tables_each_variant(tmp_path):
    """`benchmarks/compare_gpu.sh` (behind the quality guards) runs every stage it names, with the arguments each
    stage takes: on the CPU at toy size, two variants are trained, evaluated against the exact ground truth and
    tabled."""
    work, base = tmp_path / "work", tmp_path / "base.yaml"
    _run(["-m", "benchmarks.variant_params", str(ROOT / "params.yaml"), str(base), "data.synthetic_identities=24",
          "model.ngf=4", "model.ndf=8", "model.n_blocks=1", "train.steps=2", "train.batch_size=2",
          "train.log_every=1", "train.image_every=2", "train.checkpoint_every=2", "judge.max_steps=2",
          "judge.eval_every=1", "evaluate.sources=4", "evaluate.references=2", "evaluate.bootstrap=10"], tmp_path)
    env = {**stage_env(tmp_path, threads=1), "PYTHON": sys.executable}
    proc = run_stage(["bash", "benchmarks/compare_gpu.sh", str(base), str(work), "s0=train.seed=0",
                      "s1=train.seed=1 train.lr_g=0.001"], env, ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    header, *rows = (work / "compare.tsv").read_text().strip().splitlines()
    assert header.split("\t")[:2] == ["variant", "gt_psnr"]
    assert [r.split("\t")[0] for r in rows] == ["s0", "s1"]
    assert all(float(r.split("\t")[1]) > 0 for r in rows)  # a PSNR was measured for each, not "-"
    assert "lr_g: 0.001" in (work / "s1" / "params.yaml").read_text()


def test_cache_parts_carry_a_folder_in_parts_and_name_what_does_not_fit(tmp_path):
    import os

    from benchmarks.cache_parts import pack, unpack

    src = tmp_path / "cache"
    files = {f"fxgraph/k{i}/entry": os.urandom(3000) for i in range(6)} | {"triton/kernel.cubin": os.urandom(9000)}
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    parts = pack(src, tmp_path / "out", "inductor", part_bytes=8000)
    assert len(parts) > 1 and all(p.stat().st_size <= 8000 for p in parts)
    assert unpack(tmp_path / "out", tmp_path / "back", "inductor") == len(files)
    assert all((tmp_path / "back" / rel).read_bytes() == data for rel, data in files.items())
    with pytest.raises(ValueError, match=r"MiB.*at most 2 come back"):
        pack(src, tmp_path / "none", "inductor", part_bytes=8000, max_parts=2)
    assert not (tmp_path / "none").exists()
    parts[1].unlink()
    with pytest.raises(ValueError, match="parts missing"):
        unpack(tmp_path / "out", tmp_path / "again", "inductor")


def _spin_for(seconds: float) -> int:
    """Pure-Python work the sampler must find on the stack."""
    end, n = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        n += 1
    return n


def _spin_in_worker(seconds: float) -> int:
    """The same work on another thread, as autograd's device thread compiles a backward."""
    return _spin_for(seconds)


def _wait_first(first):
    first.wait()


def _wait_second(reached, second):
    reached.set()
    second.wait()


def _wait_then_move(first, reached, second):
    _wait_first(first)
    _wait_second(reached, second)


def test_stack_sampler_weighs_each_sample_by_the_time_since_the_last():
    """A fake clock and a worker parked in known functions: every figure is exact, whatever the machine's load."""
    import threading

    from benchmarks.stack_sampler import StackSampler

    first, reached, second = threading.Event(), threading.Event(), threading.Event()
    worker = threading.Thread(target=_wait_then_move, args=(first, reached, second), name="parked")
    worker.start()
    ticks = iter([0.25, 1.0, 1.0])  # from 0: a sample in _wait_first, one in _wait_second, the report
    sampler = StackSampler(clock=ticks.__next__)  # not started: samples taken here, no thread races the checks
    try:
        sampler.sample_once()
        first.set()
        assert reached.wait(10)
        sampler.sample_once()
    finally:
        first.set(), second.set()
        worker.join()
    report = sampler.report()
    inclusive, threads = dict(report["inclusive"]), dict(report["threads"])
    here = "tests/test_benchmarks.py:"
    assert (report["samples"], report["wall_s"], threads["parked"]) == (2, 1.0, 1.0)
    assert (inclusive[here + "_wait_first"], inclusive[here + "_wait_second"]) == (0.25, 0.75)
    assert inclusive[here + "_wait_then_move"] == 1.0  # on the stack under both: inclusive, not top-of-stack only
    assert here + "test_stack_sampler_weighs_each_sample_by_the_time_since_the_last" not in inclusive  # the caller


def test_stack_sampler_finds_a_second_threads_work_on_its_own_thread():
    """Real threads and time: only what holds on a loaded machine (a late sample weighs the whole gap)."""
    import threading

    from benchmarks.stack_sampler import StackSampler

    sampler = StackSampler(interval_s=0.002)
    sampler.start()
    worker = threading.Thread(target=_spin_in_worker, args=(0.4,), name="worker")
    worker.start()
    _spin_for(0.4)
    worker.join()
    report = sampler.stop()
    inclusive, own = dict(report["inclusive"]), dict(report["self"])
    spin, other = "tests/test_benchmarks.py:_spin_for", "tests/test_benchmarks.py:_spin_in_worker"
    assert report["samples"] > 0 and spin in own and "worker" in dict(report["threads"])
    assert 0 < inclusive[other] <= dict(report["threads"])["worker"] <= report["wall_s"] + 0.01
    assert inclusive[spin] >= inclusive[other]  # the worker's every sample holds both; the main thread's holds one
    with pytest.raises(RuntimeError, match="before start"):
        StackSampler().stop()
    with pytest.raises(ValueError, match="interval_s"):
        StackSampler(interval_s=0)


def test_startup_arms_name_their_settings_and_read_the_phases_of_a_stack_report():
    from benchmarks.startup_arms import PHASES, parse_arm, phase_seconds

    assert parse_arm("base=") == ("base", [])
    assert parse_arm("both=triton.autotune_pointwise=False reorder_for_peak_memory=False") == (
        "both", ["triton.autotune_pointwise=False", "reorder_for_peak_memory=False"])
    with pytest.raises(ValueError, match="NAME=SETTINGS"):
        parse_arm("triton.autotune_pointwise")
    import argparse

    from benchmarks.startup_arms import arm_command

    args = argparse.Namespace(size=64, batch=2, mode="default", steps=1, timeout=10, arm_count=2, sample_arms=[],
                              compile_losses=True)
    command = arm_command(*parse_arm("pads=+pad_layout reorder_for_peak_memory=False"), args, Path("/tmp/w"))
    assert command[command.index("--with") + 1] == "pad_layout"
    assert command[command.index("--inductor") + 1:] == ["reorder_for_peak_memory=False"]
    assert "--with" not in arm_command("base", [], args, Path("/tmp/w"))
    report = {"inclusive": [[PHASES["codegen"], 80.5], ["other.py:f", 3.0]]}
    phases = phase_seconds(report)
    assert phases["codegen"] == 80.5 and phases["scheduler"] == 0.0


def test_startup_arms_table_compares_each_arms_first_losses_with_the_first_arms(capsys):
    from benchmarks.startup_arms import loss_difference, print_table

    base = {"first_step_s": 250.0, "step_ms": 72.0, "gpu_busy_ms": 68.1, "peak_gib": 9.5, "kernels_generated": 1929,
            "first_losses": {"d": 2.0, "g": 4.0}}
    other = {**base, "first_step_s": 230.0, "first_losses": {"d": 2.0, "g": 4.02}}
    assert loss_difference(other, base) == pytest.approx(0.005)
    assert loss_difference({}, base) != loss_difference({}, base)  # nan: nothing to compare
    print_table([{"arm": "base", "settings": [], "row": base, "phases_s": {"codegen": 90.0}},
                 {"arm": "pointwise", "settings": ["triton.autotune_pointwise=False"], "row": other},
                 {"arm": "broken", "settings": [], "row": {"error": "exit 1"}}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("base") and "90.0" in lines[1]
    assert "5.0e-03" in lines[2] and lines[2].endswith("triton.autotune_pointwise=False")
    assert lines[3].split() == ["broken", "exit", "1"]


def test_starts_run_at_once_wait_for_each_other_then_time_their_steps_one_at_a_time(tmp_path):
    import fcntl

    from benchmarks.bench_startup import measure_alone

    t0 = time.perf_counter()
    lock = measure_alone(tmp_path, count=2, wait_s=0.5)  # the other start never comes: gives up after wait_s
    assert time.perf_counter() - t0 >= 0.5 and list(tmp_path.glob("compiled-*"))
    with (tmp_path / "gpu.lock").open("w") as other:  # another start cannot measure while this one holds the lock
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.close()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_probe_copies_names_the_operator_and_the_context_that_launched_each_copy():
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    from benchmarks.probe_copies import attribute

    x = torch.randn(64, 32)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        with record_function("Optimizer.step#probe"):
            x.t().contiguous()
        with record_function("glue"):
            x.t().contiguous()
            x.t().contiguous()

    def launched(event):  # on the CPU an operator stands in for the kernel it would launch
        return [(event.name, 1.0)] if event.name == "aten::copy_" else []

    rows = attribute(prof.events(), launched)
    by_context = {r["within"].split(" < ")[0]: r for r in rows}
    assert set(by_context) == {"Optimizer.step#probe", "glue"}
    assert by_context["glue"]["calls"] == 2 and by_context["Optimizer.step#probe"]["calls"] == 1
    assert all(r["operator"] == "aten::copy_" and "32, 64" in r["input_shapes"] for r in rows)
