"""A real `mlflow server` on loopback for tests (SQLite backend, local proxied artifacts), and `mlflow models serve`."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

from tests.helpers.processes import free_port


@contextlib.contextmanager
def mlflow_server(folder: Path, startup_timeout: float = 180.0) -> Iterator[str]:
    """Start `mlflow server` with its store under `folder`; yield its http URI; stop it.

    The server runs in its own process group (it forks a uvicorn worker), which is
    signalled as a whole on exit, so no worker outlives the test.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}  # not a client URI
    # No job runner: it forks eight more Python processes that import mlflow (GenAI jobs,
    # unused here), which triples the start time on a 2-core machine.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with open(folder / "server.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}: {_tail(folder / 'server.log')}")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                log_tail = _tail(folder / "server.log")
                raise RuntimeError(f"mlflow server not healthy after {startup_timeout:.0f} s: {log_tail}")
            time.sleep(0.2)
        yield uri
    finally:
        _stop(proc)


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, log: Path, startup_timeout: float = 180.0) -> Iterator[str]:
    """Start `mlflow models serve -m <model_uri> --env-manager local` on loopback; yield its URL; stop it.

    The model is resolved through `tracking_uri` (a `models:/` URI); readiness is its /ping.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _healthy(f"{url}/ping"):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow models serve exited with {proc.returncode}: {_tail(log)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow models serve not ready after {startup_timeout:.0f} s: {_tail(log)}")
            time.sleep(0.3)
        yield url
    finally:
        _stop(proc)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    # The group id is the server's own pid (start_new_session): only our processes get the signal.
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _tail(path: Path, n: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"
