"""Where a process's Python time goes, by sampling its threads' stacks: a profile of a long compile.

cProfile traces every call and roughly doubles the time of Inductor's Python-heavy compile (NOTES run 30), so a
profiled cold start no longer fits beside its baseline in one 10-minute GPU call. Sampling costs less, but not
nothing: every thread every 5 ms slowed a cold start by a third (NOTES run 40), so each code object's name is now
looked up once and the default interval is 20 ms; compare a sampled start only with another. It samples the
stacks every `interval_s` from a helper thread and reports, per function, the seconds in which it was on a stack
(inclusive) and at a stack's top (self): each sample weighs the wall time since the one before, since a sample
waits for the GIL and comes late while the sampled threads are busy. Every thread is sampled by
default: autograd runs a CUDA backward, and so compiles a compiled graph's backward, on its own device thread, while
the main thread waits in `_engine_run_backward`. Seconds are summed over threads, so idle threads' waits appear too.

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
from collections.abc import Callable
from types import CodeType, FrameType


_KEYS: dict[CodeType, str] = {}  # one key per code object: a sample then costs a dict lookup per frame


def function_key(frame: FrameType) -> str:
    """'package/module.py:Class.function': the path after site-packages (or the file's last two parts)."""
    code = frame.f_code
    if code in _KEYS:
        return _KEYS[code]
    path = code.co_filename.replace("\\", "/")
    short = path.split("site-packages/")[-1] if "site-packages/" in path else "/".join(path.split("/")[-2:])
    key = _KEYS[code] = f"{short}:{getattr(code, 'co_qualname', code.co_name)}"  # qualified names from 3.11
    return key


class StackSampler:
    """Samples one thread's Python stack from a daemon thread until `stop()`.

    Args:
        interval_s: seconds between samples (a sample waits for the GIL, so long C calls delay it).
        thread_id: the one thread to sample; every thread but the sampler's by default.
        clock: seconds now; a sample weighs the clock's advance since the one before.
    """

    def __init__(self, interval_s: float = 0.02, thread_id: int | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.interval_s = interval_s
        self.thread_id = thread_id
        self.clock = clock
        self.inclusive: Counter[str] = Counter()  # seconds
        self.self_time: Counter[str] = Counter()
        self.threads: Counter[str] = Counter()  # seconds sampled per thread name
        self.samples = 0  # ticks: one per interval, however many threads each saw
        self._last = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = 0.0

    def sample_once(self) -> None:
        """One sample of every other thread's stack now, weighed by the clock's advance; the caller is not sampled."""
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        mine = threading.get_ident()
        now = self.clock()
        weight, self._last = now - self._last, now
        self.samples += 1
        for ident, frame in frames.items():
            if ident == mine or (self.thread_id is not None and ident != self.thread_id):
                continue
            self.threads[names.get(ident, str(ident))] += weight
            self.self_time[function_key(frame)] += weight
            seen: set[str] = set()  # a recursive function counts once per sample
            while frame is not None:
                seen.add(function_key(frame))
                frame = frame.f_back
            self.inclusive.update(dict.fromkeys(seen, weight))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def start(self) -> None:
        """Begin sampling (once)."""
        if self._thread is not None:
            raise RuntimeError("StackSampler.start() called twice")
        self._started = self._last = self.clock()
        self._thread = threading.Thread(target=self._run, name="stack-sampler", daemon=True)
        self._thread.start()

    def stop(self, top: int = 400) -> dict:
        """End sampling and return `report(top)`."""
        if self._thread is None:
            raise RuntimeError("StackSampler.stop() before start()")
        self._stop.set()
        self._thread.join()
        return self.report(top)

    def report(self, top: int = 400) -> dict:
        """Samples, wall seconds since start, and the `top` functions by inclusive and self seconds."""
        wall = self.clock() - self._started
        scaled = lambda seconds: [[k, round(v, 2)] for k, v in seconds.most_common(top)]  # noqa: E731
        return {"samples": self.samples, "wall_s": round(wall, 2), "interval_s": self.interval_s,
                "threads": scaled(self.threads), "inclusive": scaled(self.inclusive), "self": scaled(self.self_time)}
