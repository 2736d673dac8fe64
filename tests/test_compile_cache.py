"""torch.compile's caches live beside the run's checkpoints: a second start of the same run hits them.

Each start is its own process, as a restarted pod is: Inductor's in-memory caches do not carry
over, only what the run folder holds (the first start's entries are written there, not to the
machine's default cache).
"""

from __future__ import annotations

import json
import os
import re
import sys

from tests.helpers.data import make_tiny_data
from tests.helpers.processes import ROOT, run_stage, stage_env

ATTR = "Mustache"

COMPILE_IN_RUN = """
import json, sys, torch
from pathlib import Path
from geogan.training.compile_cache import cache_counters, compile_phases, use_compile_cache
folder = use_compile_cache(Path(sys.argv[1]))
f = torch.compile(lambda x: torch.sin(x) * 2 + x.mean())
f(torch.ones(8, requires_grad=True)).sum().backward()
print(json.dumps({"folder": str(folder), **cache_counters(), **compile_phases()}))
"""


# G's graph calls custom autograd.Functions (the compiled kernels' folded pad and upsampling stencil).
COMPILE_CUSTOM_FUNCTIONS = """
import json, sys, torch
from pathlib import Path
from geogan.nets.fast_ops import reflection_pad_folded, upsample2x_stencil
from geogan.training.compile_cache import cache_counters, cache_custom_autograd_functions, use_compile_cache
use_compile_cache(Path(sys.argv[1]))
if sys.argv[2] == "allow":
    assert cache_custom_autograd_functions()
f = torch.compile(lambda x: upsample2x_stencil(reflection_pad_folded(x, 1)).square().mean())
f(torch.ones(2, 3, 8, 8, requires_grad=True)).backward()
print(json.dumps(cache_counters()))
"""


# One step of the tiny config with only some of its graphs compiled (`compiled_state(parts=...)`), the rest eager.
COMPILE_PARTS = """
import json, sys, torch
from pathlib import Path
from geogan.training.compile_cache import cache_counters, use_compile_cache
from geogan.training.steps import train_step
from tests.helpers.training import random_batch, tiny_context, tiny_state
use_compile_cache(Path(sys.argv[1]))
torch.set_num_threads(1)
state = tiny_state(compiler=torch.compile, losses=True, parts=sys.argv[2].split(","), ngf=4, ndf=4, n_scales=1)
train_step(state, random_batch(0), tiny_context())
print(json.dumps(cache_counters()))
"""


def _env_with_default_caches(tmp_path) -> dict:
    """A stage's environment with no cache folder chosen, so the run folder's is used."""
    env = stage_env(tmp_path)
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    env.pop("TRITON_CACHE_DIR", None)
    return env


def _compile_in(run_dir, env, script: str = COMPILE_IN_RUN, *args: str) -> dict:
    result = run_stage([sys.executable, "-c", script, str(run_dir), *args], env, ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_second_process_of_the_same_run_hits_the_cache_in_its_run_folder(tmp_path):
    env = _env_with_default_caches(tmp_path)
    first = _compile_in(tmp_path / "run", env)
    assert first["folder"] == str((tmp_path / "run" / "compile_cache").resolve())
    assert first["fx_graph_misses"] >= 1 and first["fx_graph_hits"] == 0
    assert any((tmp_path / "run" / "compile_cache").rglob("*")), "the run folder holds no cache entries"

    # What a compiled run says before its first step: a cold start on an empty folder, a warm one on this one.
    from geogan.training.compile_cache import cached_graphs, compile_notice

    folder = tmp_path / "run" / "compile_cache"
    assert cached_graphs(folder) >= 2, "the forward and backward graphs and the AOTAutograd entry"
    assert f"({cached_graphs(folder)} graph entries): under a minute" in compile_notice(folder)
    assert "a cold start" in compile_notice(tmp_path / "empty") and cached_graphs(tmp_path / "empty") == 0

    second = _compile_in(tmp_path / "run", env)
    assert second["fx_graph_hits"] >= 1 and second["fx_graph_misses"] == 0, second
    # Where each start's compile time went: the warm start still traces (no cache holds Dynamo's work).
    for start in (first, second):
        assert 0 < start["trace_s"] <= start["compile_s"] and 0 < start["backend_s"] <= start["compile_s"], start
    # The backward graph's Inductor compile is timed on its own; the warm start reads it from the cache instead.
    assert first["backward_s"] > 0 and second.get("backward_s", 0) == 0, (first, second)


def test_a_graph_with_custom_autograd_functions_is_cached_whole_once_allowed(tmp_path):
    """AOTAutograd's default bypasses its cache for such a graph: each start traced and partitioned G's joint
    graph again (benchmarks/NOTES.md run 30: about 20 s of a 60 s warm start). Allowed, a second start hits it."""
    env = _env_with_default_caches(tmp_path)
    by_default = _compile_in(tmp_path / "run", env, COMPILE_CUSTOM_FUNCTIONS, "default")
    assert by_default["aot_autograd_bypasses"] == 1 and by_default["aot_autograd_hits"] == 0, by_default
    first = _compile_in(tmp_path / "run", env, COMPILE_CUSTOM_FUNCTIONS, "allow")
    assert first["aot_autograd_bypasses"] == 0 and first["aot_autograd_misses"] == 1, first
    second = _compile_in(tmp_path / "run", env, COMPILE_CUSTOM_FUNCTIONS, "allow")
    assert second["aot_autograd_hits"] == 1 and second["aot_autograd_misses"] == 0, second
    assert second["aot_autograd_bypasses"] == 0, second


def test_a_graph_compiled_while_the_rest_of_the_step_ran_eager_is_the_one_the_whole_step_looks_up(tmp_path):
    """What lets each of the step's graphs be compiled in a process of its own (benchmarks/NOTES.md run 35): the D
    phase's graph, compiled with G and the G phase eager, is a hit for a process that compiles more of the step.
    A graph whose inputs are strided differently then (on the GPU, the G phase's: run 37) would miss instead."""
    env = _env_with_default_caches(tmp_path)
    alone = _compile_in(tmp_path / "run", env, COMPILE_PARTS, "d_phase")
    assert alone["aot_autograd_misses"] == 1 and alone["aot_autograd_hits"] == 0, alone
    more = _compile_in(tmp_path / "run", env, COMPILE_PARTS, "d_phase,g_phase")
    assert more["aot_autograd_hits"] == 1 and more["aot_autograd_misses"] == 1, more  # the G phase is new


def test_a_cache_folder_the_user_chose_is_kept(tmp_path):
    env = stage_env(tmp_path, TORCHINDUCTOR_CACHE_DIR=str(tmp_path / "shared-cache"))
    assert _compile_in(tmp_path / "run", env)["folder"] == str(tmp_path / "shared-cache")
    assert not (tmp_path / "run" / "compile_cache").exists()


def test_compiled_training_keeps_its_cache_in_the_run_folder(tmp_path, monkeypatch, capsys):
    """train.compile with train.compile_cache: the loop points the caches at <work>/compile_cache before
    compiling and reports its first step; compile_cuda_graphs picks the mode (CPU: always default).

    torch.compile is recorded instead of run: compiling the whole cycle on a CPU takes many minutes,
    and the cache itself is proven by the two tests above.
    """
    import torch
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from geogan.training.compile_cache import INDUCTOR_CACHE_ENV
    from geogan.training.loop import train
    from tests.helpers.data import library_sampler
    from tests.helpers.params import tiny_config
    from tests.helpers.training import cpu_env

    monkeypatch.setenv(INDUCTOR_CACHE_ENV, default_cache_dir())  # what Inductor writes itself; restored afterwards
    import torch._functorch.config as functorch_config

    monkeypatch.setattr(functorch_config, "autograd_cache_allow_custom_autograd_functions", False)
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append((os.environ[INDUCTOR_CACHE_ENV], kw)) or fn)
    data = make_tiny_data(tmp_path / "data")
    cfg = tiny_config(**{"train.steps": 2, "train.compile": True, "train.compile_cuda_graphs": True,
                         "train.log_every": 1000, "train.image_every": 1000, "train.checkpoint_every": 1000,
                         "model.ngf": 4, "model.ndf": 4, "model.n_scales": 1})
    result = train(cfg, library_sampler(cfg, data, ATTR), cpu_env(), tmp_path / "work", key="k", progress=False,
                   region=cfg.regions[ATTR])
    assert result.step == 2
    folder = str((tmp_path / "work" / "compile_cache").resolve())
    assert len(calls) == 3 and all(c == (folder, {"mode": "default"}) for c in calls), calls  # G, D, frozen D
    assert functorch_config.autograd_cache_allow_custom_autograd_functions, "G's graph would miss the cache"
    printed = capsys.readouterr().out
    notice = f"a cold start (compile cache {folder} is empty)"
    assert notice in printed and printed.index(notice) < printed.index("compiled: first step"), printed
    assert re.search(r"compiled: first step after [\d.]+ s \(compile cache: fx_graph_hits \d+.*; ", printed)
