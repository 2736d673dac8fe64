"""The MLflow UI after `make demo`, seen in headless Chromium: screenshots for docs/, and the browser test's steps.

    .venv/bin/python docs/screenshots.py [--store mlflow] [--out docs/ui]

Starts `mlflow ui` on the local store (sqlite:///<store>/mlflow.db), opens it in the system's Chromium
(Debian's `chromium` package) and writes experiments.png, training-run.png, image-grids.png,
registered-model.png and attributes-compared.png. Playwright drives that Chromium over its DevTools
protocol and never downloads a browser of its own; unlike `chromium --headless --screenshot`, it can
wait for what the single-page app renders (a metric's name, a loaded image) instead of a fixed delay.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: geogan importable without installing

MODE = "workflowType=machine_learning"  # MLflow 3.17 picks GenAI vs model training per browser, not per experiment
WAIT_MS = 90_000  # the UI's first load on a busy 2-core machine
# MLflow's assistant panel opens itself on a browser's first visit and covers a third of the page.
QUIET_UI = ("localStorage.setItem('mlflow.assistant.panelOpen_v1', 'false');"
            "localStorage.setItem('mlflow.assistant.fab.autoOpenedOnFirstLoad_v1', 'true');")


def chromium_path() -> str | None:
    """The system Chromium: $CHROMIUM, else `chromium` or `chromium-browser` on PATH."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@contextlib.contextmanager
def mlflow_ui(db: Path, timeout: float = 180.0) -> Iterator[str]:
    """`mlflow ui` on a SQLite store, on a free loopback port; yields its URL and stops it (whole process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # its GenAI job runners are unused and slow the start
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{Path(db).resolve()}",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow ui exited with {proc.returncode}: {proc.stderr.read().decode()[-1500:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow ui not answering on {url} after {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def browser_page(width: int = 1280, height: int = 800) -> Iterator[Any]:
    """A Playwright page in the system's headless Chromium, with a fresh profile (as a new user)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise RuntimeError("Chromium not found: install Debian's `chromium` package or set CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            context.add_init_script(QUIET_UI)
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            yield page
        finally:
            browser.close()


@dataclass(frozen=True)
class Demo:
    """What the screenshots show, found in the store: a training run and its neighbours."""

    experiment_id: str
    run_id: str
    key_metric: str
    grid: str  # artifact path of the run's last transfer grid
    grid_width: int  # its width in pixels: how the page's <img> is told from the UI's own
    model: str  # registered model name
    comparison: str  # URL path + query of the cross-attribute chart view


def find_demo(url: str, attributes: list[str], prefix: str = "geogan") -> Demo:
    """The newest finished training run of the first attribute, its key metric and last grid."""
    import tempfile

    import mlflow
    from PIL import Image

    from geogan.tracking import comparison_url, experiment_name

    client = mlflow.MlflowClient(url)
    experiments = [client.get_experiment_by_name(experiment_name(prefix, a)) for a in attributes]
    ids = [e.experiment_id for e in experiments if e is not None]
    if not ids:
        raise RuntimeError(f"no experiment {experiment_name(prefix, attributes[0])} in the store: run `make demo` first")
    runs = client.search_runs([ids[0]], "tags.stage = 'train' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise RuntimeError(f"no finished training run in {experiment_name(prefix, attributes[0])}")
    run = runs[0]
    metrics = sorted(run.data.metrics)
    key = next((m for m in ("eval/transfer_success", "eval/landmark_err") if m in metrics), None)
    key = key or next((m for m in metrics if m.startswith("eval/")), "loss/g/total")
    grids = sorted(f.path for f in client.list_artifacts(run.info.run_id, "grids") if f.path.endswith(".png"))
    if not grids:
        raise RuntimeError(f"training run {run.info.run_id} has no grids/*.png artifact")
    with tempfile.TemporaryDirectory() as tmp, Image.open(client.download_artifacts(run.info.run_id, grids[-1], tmp)) as im:
        width = im.width
    return Demo(ids[0], run.info.run_id, key, grids[-1], width, f"geogan-{attributes[0]}",
                comparison_url(url, ids).removeprefix(url))


def run_page_shows(page: Any, url: str, demo: Demo) -> tuple[bool, bool]:
    """Open the run page and its last grid; (the page names the key metric, the grid image loaded)."""
    page.goto(f"{url}/#/experiments/{demo.experiment_id}/runs/{demo.run_id}?{MODE}")
    metric_named = _wait_text(page, demo.key_metric)
    page.goto(f"{url}/#/experiments/{demo.experiment_id}/runs/{demo.run_id}/artifacts/{demo.grid}?{MODE}")
    try:  # the artifact viewer shows the PNG itself: an <img> decoded at the grid's own width
        page.wait_for_function("w => Array.from(document.images).some(i => i.complete && i.naturalWidth === w)",
                               arg=demo.grid_width)
        image_loaded = True
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError: the image never loaded
        image_loaded = False
    return metric_named, image_loaded


def _wait_text(page: Any, text: str) -> bool:
    try:
        page.get_by_text(text, exact=False).first.wait_for(state="visible")
        return True
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError: the text never appeared
        return False


def take_screenshots(url: str, demo: Demo, out: Path) -> list[Path]:
    """The five views of docs/mlflow-ui.md, each after what it is about has rendered."""
    out.mkdir(parents=True, exist_ok=True)
    shots = [
        ("experiments.png", f"/#/experiments?{MODE}", demo.model, 800),
        ("training-run.png", f"/#/experiments/{demo.experiment_id}/runs/{demo.run_id}?{MODE}", demo.key_metric, 1100),
        ("image-grids.png", f"/#/experiments/{demo.experiment_id}/runs/{demo.run_id}/artifacts/{demo.grid}?{MODE}",
         demo.grid.rsplit("/", 1)[-1], 900),
        ("registered-model.png", f"/#/models/{demo.model}?{MODE}", "candidate", 700),
        ("attributes-compared.png", demo.comparison, "eval/", 1100),
    ]
    written = []
    with browser_page() as page:
        for name, path, wait_for, height in shots:
            page.set_viewport_size({"width": 1280, "height": height})
            page.goto(url + path)
            if not _wait_text(page, wait_for):
                raise RuntimeError(f"{name}: '{wait_for}' never appeared on {url + path}")
            page.wait_for_timeout(2500)  # charts and images settle after their text
            written.append(_save_small(page.screenshot(), out / name))
    return written


def _save_small(png: bytes, path: Path) -> Path:
    """A 256-colour PNG (UI screenshots are flat colours: a few hundred KB become well under 300 KB)."""
    import io

    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", type=Path, default=ROOT / "mlflow", help="folder holding mlflow.db (make demo's)")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "ui")
    args = p.parse_args(argv)
    from geogan.config import load_config

    cfg = load_config(args.params)
    db = args.store / "mlflow.db"
    if not db.is_file():
        sys.exit(f"{db}: no MLflow store (run `make demo` first)")
    with mlflow_ui(db) as url:
        demo = find_demo(url, list(cfg.attributes), cfg.mlflow.experiment_prefix)
        for path in take_screenshots(url, demo, args.out):
            print(f"{path}  {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
