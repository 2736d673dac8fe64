"""torch.compile's persistent caches kept beside a run's checkpoints, so a restart skips most of the compile.

Inductor's, AOTAutograd's and Triton's caches live by default in a temp folder of the machine
(`/tmp/torchinductor_<user>`), which a new pod does not have; under `<run>/compile_cache` (the PVC on a
cluster) a restarted run finds its graphs and kernels and pays only Dynamo's tracing. Entries are keyed
by the graph, torch, Triton and the GPU, so a stale or foreign entry is a miss, never a wrong kernel.
"""

from __future__ import annotations

import os
from pathlib import Path

INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"  # read by Inductor (and Triton's cache under it) at first compile
CACHE_FOLDER = "compile_cache"


def use_compile_cache(run_dir: Path) -> Path:
    """Point Inductor's and Triton's caches at `run_dir/compile_cache` for this process; return the folder used.

    Call before the first torch.compile of the process. A cache folder the user set already
    (TORCHINDUCTOR_CACHE_DIR, e.g. one shared by all runs of a node) is kept and returned.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    chosen = os.environ.get(INDUCTOR_CACHE_ENV)
    # Inductor writes its default back into the variable once it has used it: that is no user's choice.
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return Path(chosen)
    folder = Path(run_dir).resolve() / CACHE_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[INDUCTOR_CACHE_ENV] = str(folder)
    return folder


def cached_graphs(folder: Path) -> int:
    """How many compiled graphs `folder` holds (Inductor's FX graph entries and AOTAutograd's), 0 if none."""
    return sum(1 for kind in ("fxgraph", "aotautograd") if (Path(folder) / kind).is_dir()
               for entry in (Path(folder) / kind).rglob("*") if entry.is_file())


def compile_notice(folder: Path | None) -> str:
    """The line a compiled run prints before its first step, so a silent start of minutes is expected.

    Figures: the 256 px step on one H200 (benchmarks/NOTES.md runs 30-35): cold 3-5 min, warm 31-60 s.
    """
    if folder is None:
        return "compiling before the first step, cache off (train.compile_cache: false): 3-5 min on an H200"
    entries = cached_graphs(folder)
    if entries == 0:
        return (f"compiling before the first step, a cold start (compile cache {folder} is empty): 3-5 min on an "
                "H200; a restart on this cache takes under a minute")
    return (f"compiling before the first step from compile cache {folder} ({entries} graph entries): under a minute "
            "on an H200 if torch, the GPU and the settings match, else minutes for each graph that misses")


def cache_counters() -> dict[str, int]:
    """This process's compile-cache hits and misses so far (FX graphs and AOTAutograd), for the run's log."""
    from torch._dynamo.utils import counters

    inductor, aot = counters["inductor"], counters["aot_autograd"]
    return {"fx_graph_hits": int(inductor["fxgraph_cache_hit"]), "fx_graph_misses": int(inductor["fxgraph_cache_miss"]),
            "aot_autograd_hits": int(aot["autograd_cache_hit"]), "aot_autograd_misses": int(aot["autograd_cache_miss"]),
            # A graph AOTAutograd will not cache: every start traces its joint graph and partitions it again.
            "aot_autograd_bypasses": int(aot["autograd_cache_bypass"])}


def cache_custom_autograd_functions() -> bool:
    """Let AOTAutograd's cache keep graphs that call a custom `torch.autograd.Function`; True if this torch can.

    By default AOTAutograd bypasses its cache for any graph holding one, and G's graph holds the compiled
    kernels' folded reflection pad and upsampling stencil (`geogan.nets.fast_ops`). Every warm start then
    traced and partitioned G's joint graph again: about 20 s of a 256 px warm start (benchmarks/NOTES.md runs
    30 and 33). Safe for these functions: Dynamo traces their forward and backward into the graph the cache key is
    hashed from, and they keep no state outside their inputs (pytorch/pytorch#149751, which added the flag).
    """
    import torch._functorch.config as functorch_config

    if not hasattr(functorch_config, "autograd_cache_allow_custom_autograd_functions"):
        return False
    functorch_config.autograd_cache_allow_custom_autograd_functions = True
    return True


# Dynamo's own timers (torch._dynamo.utils.compilation_time_metrics): where a start's compile time went.
COMPILE_PHASES = {
    "compile_s": "_compile.compile_inner",  # all of torch.compile: tracing, AOTAutograd, Inductor or its cache
    "trace_s": "bytecode_tracing",  # Dynamo's tracing of the Python code: what no cache skips
    "backend_s": "OutputGraph.call_user_compiler",  # AOTAutograd and Inductor, cache lookups and loads included
    # Inductor on the backward graphs: may run at the first backward, outside compile_s (a cold start's missing minutes)
    "backward_s": "compile_fx.<locals>.bw_compiler",
}


def compile_phases() -> dict[str, float]:
    """This process's compile seconds so far, by phase (`COMPILE_PHASES`); a phase this torch does not time is left out.

    A warm start (every cache hit) still pays `trace_s`, plus `backend_s` for reading the cached graphs and kernels.
    """
    from torch._dynamo.utils import compilation_time_metrics

    return {name: round(float(sum(compilation_time_metrics[key])), 2)
            for name, key in COMPILE_PHASES.items() if key in compilation_time_metrics}
