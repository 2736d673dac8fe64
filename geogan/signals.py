"""SIGTERM as an exception, so a stage stopped by a signal ends its MLflow run KILLED and exits 143."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

EXIT_CODE = 128 + signal.SIGTERM  # what a shell and Kubernetes report for a process ended by SIGTERM


class Stopped(BaseException):
    """A stop signal arrived (Kubernetes sends SIGTERM before it kills a pod).

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way out
    swallows it; `finally` blocks and `geogan.tracking.run_ends` still run.
    """


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Within the block SIGTERM raises `Stopped` (the training loop installs its own handler inside)."""
    if threading.current_thread() is not threading.main_thread():  # e.g. a KFP local runner thread
        yield
        return

    def handler(signum: int, frame: object) -> None:  # noqa: ARG001
        raise Stopped(f"stopped by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
