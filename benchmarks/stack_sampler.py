"""Where one thread's time goes, by sampling its Python stack: a profile of a long compile at about 1% overhead.

cProfile traces every call and roughly doubles the time of Inductor's Python-heavy compile (NOTES run 30), so a
profiled cold start no longer fits beside its baseline in one 10-minute GPU call. This samples the thread's stack
every `interval_s` from a helper thread instead and reports, per function, the share of samples in which it was on
the stack (inclusive) and at its top (self), scaled to seconds by the wall time sampled.

    sampler = StackSampler()
    sampler.start()
    ...                     # the work, on this thread
    report = sampler.stop()  # {"samples", "wall_s", "inclusive": [[function, seconds], ...], "self": [...]}
"""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from types import FrameType


def function_key(frame: FrameType) -> str:
    """'package/module.py:Class.function': the path after site-packages (or the file's last two parts)."""
    code = frame.f_code
    path = code.co_filename.replace("\\", "/")
    short = path.split("site-packages/")[-1] if "site-packages/" in path else "/".join(path.split("/")[-2:])
    return f"{short}:{getattr(code, 'co_qualname', code.co_name)}"  # qualified names from Python 3.11


class StackSampler:
    """Samples one thread's Python stack from a daemon thread until `stop()`.

    Args:
        interval_s: seconds between samples (a sample waits for the GIL, so long C calls delay it).
        thread_id: the thread to sample; the calling thread by default.
    """

    def __init__(self, interval_s: float = 0.005, thread_id: int | None = None):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.thread_id = threading.get_ident() if thread_id is None else thread_id
        self.inclusive: Counter[str] = Counter()
        self.self_time: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def _sample_once(self) -> None:
        frame = sys._current_frames().get(self.thread_id)
        if frame is None:
            return
        self.samples += 1
        self.self_time[function_key(frame)] += 1
        seen: set[str] = set()  # a recursive function counts once per sample
        while frame is not None:
            seen.add(function_key(frame))
            frame = frame.f_back
        self.inclusive.update(seen)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_once()

    def start(self) -> None:
        """Begin sampling (once)."""
        if self._thread is not None:
            raise RuntimeError("StackSampler.start() called twice")
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)
        self._thread.start()

    def stop(self, top: int = 60) -> dict:
        """End sampling; the report: samples, wall seconds, and the `top` functions by inclusive and self seconds."""
        if self._thread is None:
            raise RuntimeError("StackSampler.stop() before start()")
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._started
        per_sample = wall / self.samples if self.samples else 0.0
        scaled = lambda counts: [[k, round(n * per_sample, 2)] for k, n in counts.most_common(top)]  # noqa: E731
        return {"samples": self.samples, "wall_s": round(wall, 2), "interval_s": self.interval_s,
                "inclusive": scaled(self.inclusive), "self": scaled(self.self_time)}
