"""`geogan demo` in a real headless browser: two registered versions side by side on two real test faces."""

from __future__ import annotations

import base64
import importlib.util
import io
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlflow", reason="mlflow not installed")

from tests.helpers.params import ROOT  # noqa: E402


def _browser():
    """docs/screenshots.py's system-Chromium page, or a skip naming what is missing."""
    spec = importlib.util.spec_from_file_location("docs_screenshots", ROOT / "docs" / "screenshots.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if module.chromium_path() is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium; or set CHROMIUM): the demo page check is skipped")
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright not installed (requirements.lock): the demo page check is skipped")
    return module


def _generator(path: Path, seed: int) -> Path:
    from geogan.model import save_generator
    from tests.helpers.training import tiny_nets

    generator = tiny_nets(seed=seed, ngf=4, ndf=4, n_blocks=1, n_scales=1).generator
    meta = {"attribute": "Mustache", "resolution": 64, "step": 4,
            "config": {"loss": {"refine_weight": 0.1, "refine_start_step": 0}, "model": {"flow_inputs": "rgb"}}}
    return save_generator(path, generator, meta)


def _image(data_url: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_page_compares_two_registered_versions_on_two_test_faces(tmp_path, shared_faces, monkeypatch):
    ui = _browser()
    from mlflow import MlflowClient
    from PIL import Image

    from geogan.model import to_uint8
    from geogan.registry import log_and_register
    from geogan.stages.demo import Demo, serve
    from geogan.stages.transfer import load_model, preparer

    monkeypatch.chdir(tmp_path)  # the SQLite store's artefacts land here
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    files = [_generator(tmp_path / f"generator{i}.pt", seed=i) for i in range(2)]
    for f, success in zip(files, (0.8, 0.6)):
        log_and_register(f, "Mustache", None, store, {}, {"transfer_success_64": success})
    MlflowClient(store).set_registered_model_alias("geogan-Mustache", "champion", "1")

    source, reference = sorted((shared_faces / "images").glob("*.jpg"))[:2]
    examples = tmp_path / "examples"
    examples.mkdir()
    (examples / reference.name).write_bytes(reference.read_bytes())
    Image.new("RGB", (400, 300), (128, 128, 128)).save(tmp_path / "no_face.png")

    server = serve(Demo("models:/geogan-Mustache@champion", examples), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with ui.browser_page() as page:
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#model-b option').length === 3")
            labels = page.eval_on_selector_all("#model-a option", "els => els.map(e => e.textContent)")
            page.set_input_files("#source-file", str(source))  # uploaded
            page.select_option("#reference-example", reference.name)  # picked from the examples
            page.select_option("#model-b", "models:/geogan-Mustache/2")
            page.wait_for_function("!document.getElementById('run').disabled")
            page.click("#run")
            page.wait_for_function("document.getElementById('output-1') && document.getElementById('output-1').complete"
                                   " && document.getElementById('output-1').naturalWidth > 0")
            shown = page.eval_on_selector_all("img.result-output", "els => els.map(e => e.src)")
            masks = page.eval_on_selector_all("img.result-mask", "els => els.map(e => e.naturalWidth)")
            rows = page.eval_on_selector_all("#results tr td:first-child", "els => els.map(e => e.textContent)")
            # A picture without a face: the page says why, naming the input.
            page.set_input_files("#source-file", str(tmp_path / "no_face.png"))
            page.wait_for_function("document.getElementById('source-preview').src.length > 100")
            page.click("#run")
            page.wait_for_function("document.getElementById('status').className === 'error'")
            error = page.text_content("#status")
    finally:
        server.shutdown()
        server.server_close()

    assert labels == ["geogan-Mustache v2 (candidate): transfer_success_64 0.6",
                      "geogan-Mustache v1 (champion): transfer_success_64 0.8"]
    assert rows == ["geogan-Mustache v1 (champion): transfer_success_64 0.8",
                    "geogan-Mustache v2 (candidate): transfer_success_64 0.6"]
    assert len(shown) == 2 and masks == [64, 64]
    for f, data_url in zip(files, shown):  # each column is its version's transfer of the two faces
        loaded = load_model(str(f))
        prep = preparer(loaded, "auto")
        expected = to_uint8(loaded.run([prep.from_file(source)], [prep.from_file(reference)]).x_out)[0]
        np.testing.assert_array_equal(_image(data_url), expected)
    assert not np.array_equal(_image(shown[0]), _image(shown[1]))
    assert error.startswith("source: no face found by dlib"), error
