"""The attribute classifier: learns separable attributes fast, round-trips, judges transfers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geogan.metrics.classifier import (
    as_feature_extractor,
    build_classifier,
    load_classifier,
    penultimate_features,
    predict_proba,
    removal_success,
    save_classifier,
    train_classifier,
    transfer_success,
)
from geogan.metrics.fid import compute_fid_metrics, extract_features

ATTRIBUTES = ["Mustache", "Eyeglasses"]


def _faces_with_attributes(n: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy face-like ellipses; attribute 0 a dark bar under the nose, 1 a dark band at eye height."""
    rng = np.random.default_rng(seed)
    img = rng.normal(128, 30, size=(n, size, size, 3))
    yy, xx = np.mgrid[:size, :size]
    face = ((yy - size / 2) / (0.35 * size)) ** 2 + ((xx - size / 2) / (0.28 * size)) ** 2 < 1
    img[:, face] = img[:, face] * 0.5 + np.array([200, 160, 130]) * 0.5
    labels = rng.random((n, 2)) < 0.4
    for i in range(n):
        dy, dx = rng.integers(-3, 4, 2)
        if labels[i, 0]:
            img[i, int(0.64 * size) + dy : int(0.70 * size) + dy, int(0.38 * size) + dx : int(0.62 * size) + dx] = 30
        if labels[i, 1]:
            img[i, int(0.40 * size) + dy : int(0.44 * size) + dy, int(0.25 * size) + dx : int(0.75 * size) + dx] = 20
    return img.clip(0, 255).astype(np.uint8), labels.astype(np.float32)


@pytest.fixture(scope="module")
def trained():
    images, labels = _faces_with_attributes(160)
    # One intra-op thread: on a shared 2-core machine, 2 spinning threads can run 5x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model, metrics = train_classifier(images, labels, np.arange(128), np.arange(128, 160), steps=40, batch_size=16,
                                          lr=2e-3, device="cpu", seed=0, progress=False, attributes=ATTRIBUTES, width=16)
    finally:
        torch.set_num_threads(before)
    return model, metrics, images, labels


def test_learns_separable_attributes_quickly(trained):
    model, metrics, _, _ = trained
    # Stated accuracy: >= 0.9 on each attribute after 40 steps of batch 16 (width 16, 64 px).
    assert metrics["acc/Mustache"] >= 0.9 and metrics["acc/Eyeglasses"] >= 0.9, metrics
    assert metrics["acc/mean"] >= 0.9 and metrics["bacc/mean"] >= 0.9
    assert 0.5 <= metrics["base_rate/Mustache"] < 1.0  # the trivial baseline, reported beside
    assert model.attributes == tuple(ATTRIBUTES) and not model.training


def test_save_load_round_trip_and_predictions(trained, tmp_path):
    model, metrics, images, _ = trained
    path = tmp_path / "classifier" / "classifier.pt"
    save_classifier(path, model, ATTRIBUTES, {"metrics": metrics})
    assert [p.name for p in path.parent.iterdir()] == ["classifier.pt"]  # no temp files left
    loaded, meta = load_classifier(path)
    assert loaded.attributes == tuple(ATTRIBUTES) and meta["attributes"] == ATTRIBUTES
    assert meta["metrics"]["acc/Mustache"] == metrics["acc/Mustache"] and meta["width"] == 16
    x = torch.from_numpy(images[:5]).permute(0, 3, 1, 2).float() / 127.5 - 1  # (5, 3, 64, 64) in [-1, 1]
    torch.testing.assert_close(predict_proba(loaded, x), predict_proba(model, images[:5]))
    assert predict_proba(loaded, x).shape == (5, 2)
    # Bigger inputs are resized inside the network.
    big = torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", align_corners=False)
    assert predict_proba(loaded, big).shape == (5, 2)
    with pytest.raises(FileNotFoundError, match="train_classifier"):
        load_classifier(tmp_path / "missing.pt")


def test_penultimate_features_feed_fid_clf(trained):
    model, _, images, _ = trained
    feats = penultimate_features(model, images[:4])
    assert feats.shape == (4, 128)  # 8 * width
    extractor = as_feature_extractor(model)
    np.testing.assert_allclose(extract_features(extractor, images[:4]), feats.double().numpy(), rtol=1e-5, atol=1e-6)
    out = compute_fid_metrics(images[:20], images[20:40], None, fallback_extractor=extractor, allow_fallback=True,
                              kid_subsets=5)
    assert set(out) >= {"fid_clf", "kid_clf", "fid_clf_features"} and "fid" not in out


def test_width_64_is_torchvision_resnet18(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet18(weights=None)
    ours = build_classifier(3, width=64)
    shapes = lambda sd: {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("fc.")}
    assert shapes(ours.state_dict()) == shapes(reference.state_dict())
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    loaded = build_classifier(3, weights=str(path), width=64)
    torch.testing.assert_close(loaded.conv1.weight, reference.conv1.weight)
    with pytest.raises(ValueError, match="not ResNet-18 weights"):
        build_classifier(3, weights=str(path), width=32)


def test_transfer_and_removal_success():
    probs = np.array([0.9, 0.6, 0.4, 0.1])
    assert transfer_success(probs) == 0.5 and transfer_success(torch.tensor(probs), threshold=0.65) == 0.25
    assert removal_success(probs) == 0.5
    with pytest.raises(ValueError):
        transfer_success(np.array([]))
