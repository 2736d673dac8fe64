"""`geogan transfer` and `geogan showcase` on real files (real faces: skips without ../shared)."""

from __future__ import annotations

import numpy as np
import pytest

from geogan.model import save_generator
from geogan.stages._common import StageError
from tests.helpers.training import tiny_nets


def _generator_file(tmp_path, flow_inputs: str, size: int = 64):
    gen = tiny_nets(ngf=4, ndf=4, n_blocks=1, n_scales=1, flow_scale=0.1, flow_inputs=flow_inputs).generator
    return save_generator(tmp_path / "generator.pt", gen, {"attribute": "Eyeglasses", "resolution": size, "step": 0})


def test_a_heatmap_model_gets_dlib_landmarks_at_inference(tmp_path, shared_faces):
    pytest.importorskip("dlib", reason="dlib not installed")
    from PIL import Image

    from geogan.stages.transfer import run_transfer

    model = _generator_file(tmp_path, "rgb+landmarks")
    src, ref = sorted((shared_faces / "images").glob("*.jpg"))[:2]
    res = run_transfer(str(model), src, ref, tmp_path / "out.png", grid=True)
    out = np.asarray(Image.open(res["out"]))
    assert out.shape == (64, 5 * 64, 3)
    # Not a face: the model cannot run without landmarks, and says which file.
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(blank)
    with pytest.raises(StageError, match="blank.png: no face found"):
        run_transfer(str(model), blank, ref, tmp_path / "out2.png")


def test_showcase_draws_sources_by_references_and_fills_from_training(tmp_path):
    from PIL import Image

    from geogan.stages import showcase
    from tests.helpers.data import make_tiny_data
    from tests.helpers.params import tiny_config

    data = make_tiny_data(tmp_path / "data", attributes=("Mustache",))
    model = _generator_file(tmp_path, "rgb")
    cfg = tiny_config()
    res = showcase.run(cfg, "Mustache", data.prepared, data.landmarks, data.splits["Mustache"], model,
                       tmp_path / "fig.jpg", n_sources=2, n_references=6, cell=32)
    assert len(res["references"]) == 6 and res["references_from_train"], res
    image = np.asarray(Image.open(tmp_path / "fig.jpg"))
    assert image.shape[0] == (2 + 3 * 2) * 32 and image.shape[1] == 96 + 7 * 32
    with pytest.raises(StageError, match="asked for 50 x 2"):
        showcase.run(cfg, "Mustache", data.prepared, data.landmarks, data.splits["Mustache"], model,
                     tmp_path / "fig2.jpg", n_sources=50, n_references=2)
