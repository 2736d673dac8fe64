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


def _photo(face_path, out_path, offset=(232, 64)):
    """An unaligned 'photo': a real face pasted off-centre on a 4:3 canvas (neither CelebA-aligned nor square)."""
    from PIL import Image

    with Image.open(face_path) as face:
        canvas = Image.new("RGB", (480, 360), (90, 110, 130))
        canvas.paste(face.convert("RGB").resize((128, 128)), offset)
    canvas.save(out_path)
    return out_path


def test_batch_transfers_every_pair_skips_what_it_cannot_use_and_draws_a_sheet(tmp_path, shared_faces, capsys):
    pytest.importorskip("dlib", reason="dlib not installed")
    from PIL import Image

    from geogan.stages import transfer

    model = _generator_file(tmp_path, "rgb")
    faces = sorted((shared_faces / "images").glob("*.jpg"))
    sources, references = tmp_path / "sources", tmp_path / "references"
    sources.mkdir()
    references.mkdir()
    for f in faces[:3]:
        (sources / f.name).write_bytes(f.read_bytes())
    for f in faces[3:5]:
        (references / f.name).write_bytes(f.read_bytes())
    _photo(faces[5], sources / "photo.png")
    (sources / "broken.jpg").write_bytes(b"not an image")
    Image.new("RGB", (400, 300), (120, 120, 120)).save(sources / "no_face.png")  # no face for dlib to find

    out = tmp_path / "out"
    transfer.main(["--model", str(model), "--sources", str(sources), "--references", str(references), "--out", str(out),
                   "--sheet", str(tmp_path / "sheet.jpg"), "--sheet-cell", "32", "--batch-size", "3"])
    captured = capsys.readouterr()
    assert "skipped " + str(sources / "broken.jpg") + ": cannot read image" in captured.err
    assert "skipped " + str(sources / "no_face.png") + ": no face found by dlib" in captured.err
    assert '"pairs_written": 8' in captured.out and '"pairs_skipped": 4' in captured.out
    assert '"images_skipped": 2' in captured.out
    written = sorted(p.name for p in out.glob("*.png"))
    assert len(written) == 8 and f"photo__{faces[3].stem}.png" in written
    assert np.asarray(Image.open(out / written[0])).shape == (64, 64, 3)
    assert np.asarray(Image.open(tmp_path / "sheet.jpg")).shape == ((4 + 1) * 32, (2 + 1) * 32, 3)

    # A CSV of pairs instead of all x all; paths relative to the folders.
    (tmp_path / "pairs.csv").write_text(f"source,reference\n{faces[0].name},{faces[4].name}\nphoto.png,{faces[3].name}\n")
    res = transfer.run_batch(str(model), transfer.read_pairs(tmp_path / "pairs.csv", sources, references),
                             tmp_path / "out2", progress=False)
    assert res["pairs_written"] == 2 and sorted(p.name for p in (tmp_path / "out2").glob("*.png")) == sorted(
        [f"{faces[0].stem}__{faces[4].stem}.png", f"photo__{faces[3].stem}.png"])


def test_an_unaligned_photo_is_framed_around_its_face_as_ingest_frames_faces(tmp_path, shared_faces):
    pytest.importorskip("dlib", reason="dlib not installed")
    from geogan.data.faces import FacePreparer

    face = sorted((shared_faces / "images").glob("*.jpg"))[5]
    offset = (232, 64)
    photo = _photo(face, tmp_path / "photo.png", offset)
    prep = FacePreparer(64)
    framed = prep.from_file(photo)
    assert framed.kind == "face" and framed.image.shape == (64, 64, 3)
    # The same face detected in the square alone (128 px, as pasted) gets the same box, moved by the offset.
    square = tmp_path / "square.png"
    from PIL import Image

    Image.open(photo).crop((offset[0], offset[1], offset[0] + 128, offset[1] + 128)).save(square)
    alone = FacePreparer(64, align="dlib").from_file(square)
    moved = np.subtract(framed.box, offset * 2)
    assert np.abs(moved - np.asarray(alone.box)).max() <= 0.05 * (alone.box[2] - alone.box[0]), (framed.box, alone.box)
    # 'none' never detects: the centre square of the canvas, as ingest does without landmarks.
    assert FacePreparer(64, align="none").from_file(photo).box == (60, 0, 420, 360)


def test_transfer_command_line_says_which_form_it_needs(tmp_path, capsys):
    from geogan.stages import transfer

    model = _generator_file(tmp_path, "rgb")
    for argv, message in ((["--source", "a.png", "--sources", str(tmp_path)], "give either --source and --reference"),
                          (["--source", "a.png"], "one pair needs both --source and --reference"),
                          (["--sources", str(tmp_path)], "many pairs need both --sources and --references"),
                          (["--sources", str(tmp_path), "--references", str(tmp_path)], "no image files")):
        with pytest.raises(SystemExit) as stopped:
            transfer.main(["--model", str(model), "--out", str(tmp_path / "o"), *argv])
        assert stopped.value.code == 2 and message in capsys.readouterr().err


def test_remove_frames_a_photo_like_transfer_and_feeds_a_landmark_flow_its_heatmaps(tmp_path, shared_faces):
    """`geogan remove` on an unaligned photo with a heatmap model: the face is found, framed and given landmarks."""
    pytest.importorskip("dlib", reason="dlib not installed")
    from PIL import Image

    from geogan.stages.remove import run_remove

    model = _generator_file(tmp_path, "rgb+landmarks")
    photo = _photo(sorted((shared_faces / "images").glob("*.jpg"))[5], tmp_path / "photo.png")
    res = run_remove(str(model), photo, tmp_path / "removed.png")
    assert res["crop"] == "face" and np.asarray(Image.open(res["out"])).shape == (64, 64, 3)
    Image.new("RGB", (400, 300), (120, 120, 120)).save(tmp_path / "no_face.png")
    with pytest.raises(StageError, match="no_face.png: no face found"):
        run_remove(str(model), tmp_path / "no_face.png", tmp_path / "removed2.png")
