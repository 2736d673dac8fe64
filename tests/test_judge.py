"""The judge: AUC, thresholds and the test report on known cases; it learns, round-trips and refuses bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geogan.metrics.judge import Judge, JudgeNet, load_judge, predict_proba, save_judge
from geogan.metrics.judge_fit import auc, best_threshold, fit_judge, recalls, report
from tests.helpers.training import torch_threads

ATTRIBUTES = ["Mustache", "Eyeglasses"]


def test_auc_counts_ordered_pairs_and_ties_half():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75  # 3 of 4 (pos, neg) pairs ordered
    assert auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1])) == 0.5  # all ties
    assert auc(np.array([0.2, 0.2, 0.9]), np.array([0, 1, 1])) == 0.75  # one tie (1/2) + one win
    assert auc(np.array([0.9, 0.1]), np.array([0, 1])) == 0.0
    assert np.isnan(auc(np.array([0.3, 0.4]), np.array([1, 1])))


def test_threshold_maximises_balanced_accuracy_and_report_counts_confusions():
    probs = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.4])
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert best_threshold(probs, labels) == 0.4  # p >= 0.4 separates the classes
    assert recalls(probs >= 0.65, labels) == (pytest.approx(1 / 3), 1.0)
    goatee = np.array([1, 0, 1, 0, 0, 1])  # (goatee, mustache) cells: (1,0) x2, (0,0), (0,1) x2, (1,1)
    out = report(probs[:, None], labels[:, None], ["Mustache"], {"Mustache": 0.25}, {"Mustache": {"Goatee": goatee}})
    assert out["Mustache/recall"] == 1.0 and out["Mustache/specificity"] == pytest.approx(2 / 3)
    assert out["Mustache/bacc"] == pytest.approx(5 / 6) and out["Mustache/auc"] == 1.0
    assert out["Mustache/said_yes|Goatee=1,Mustache=0"] == 0.5 and out["Mustache/said_yes|Goatee=1,Mustache=0_n"] == 2
    assert out["Mustache/said_yes|Goatee=0,Mustache=0"] == 0.0 and out["Mustache/said_yes|Goatee=1,Mustache=1_n"] == 1


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
            img[i, int(0.64 * size) + dy:int(0.70 * size) + dy, int(0.38 * size) + dx:int(0.62 * size) + dx] = 30
        if labels[i, 1]:
            img[i, int(0.40 * size) + dy:int(0.44 * size) + dy, int(0.25 * size) + dx:int(0.75 * size) + dx] = 20
    return img.clip(0, 255).astype(np.uint8), labels.astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    images, labels = _faces_with_attributes(240)
    rows = {"train": np.arange(160), "val": np.arange(160, 200), "test": np.arange(200, 240)}
    with torch_threads(1):  # module-scoped, so the context manager behind the `one_thread` fixture
        judge, figures = fit_judge(images, labels, rows, ATTRIBUTES, width=8, max_steps=80, eval_every=20, patience=2,
                                   batch_size=16, seed=0, progress=False)
    return judge, figures, images, rows


def test_learns_separable_attributes_and_reports_on_test(fitted):
    judge, figures, _, rows = fitted
    for a in ATTRIBUTES:  # stated: a width-8 judge separates these bars within 80 steps
        assert figures[f"{a}/auc"] >= 0.95 and figures[f"{a}/bacc"] >= 0.9, figures
        assert 0 < judge.thresholds[a] < 1
    assert figures["train/n_test"] == 40 and figures["train/best_step"] <= figures["train/steps"] <= 80
    assert judge.trained_on == {"train": rows["train"].tolist(), "val": rows["val"].tolist()}  # never test rows


def test_round_trip_keeps_predictions_thresholds_and_training_rows(fitted, tmp_path):
    judge, _, images, _ = fitted
    path = tmp_path / "judge" / "judge.pt"
    save_judge(path, judge)
    assert [p.name for p in path.parent.iterdir()] == ["judge.pt"]  # no temp files left
    loaded = load_judge(path)
    assert torch.equal(predict_proba(loaded, images[:8]), predict_proba(judge, images[:8]))
    assert loaded.thresholds == judge.thresholds and loaded.trained_on == judge.trained_on
    assert loaded.threshold("eyeglasses") == judge.thresholds["Eyeglasses"]  # names case-insensitively
    with pytest.raises(ValueError, match="not 'Goatee'"):
        loaded.index("Goatee")


def test_bad_input_is_one_clear_error(tmp_path):
    images, labels = _faces_with_attributes(40)
    rows = {"train": np.arange(20), "val": np.arange(20, 30), "test": np.arange(30, 40)}
    no_positive = labels.copy()
    no_positive[20:30, 0] = 0
    with pytest.raises(ValueError, match="val partition .* both classes"):
        fit_judge(images, no_positive, rows, ATTRIBUTES, max_steps=1, progress=False)
    with pytest.raises(ValueError, match="multiple of 32"):
        JudgeNet(2, 8, 48)
    with pytest.raises(FileNotFoundError, match="train_judge"):
        load_judge(tmp_path / "missing.pt")
    (tmp_path / "other.pt").write_bytes(b"not a judge")
    with pytest.raises(ValueError, match="cannot read the judge file"):
        load_judge(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no threshold"):
        save_judge(tmp_path / "j.pt", Judge(JudgeNet(2, 8, 64), ("A", "B"), {"A": 0.5}))


def test_the_seed_fixes_the_judge_whatever_the_global_rng(one_thread):
    """Two fits with one seed give the same weights even after other draws from torch's global RNG (dropout)."""
    images, labels = _faces_with_attributes(48)
    rows = {"train": np.arange(32), "val": np.arange(32, 40), "test": np.arange(40, 48)}

    def fit():
        torch.rand(7)  # what other code might have drawn before
        judge, _ = fit_judge(images, labels, rows, ATTRIBUTES, width=8, max_steps=4, eval_every=2, patience=2,
                             batch_size=8, seed=0, progress=False)
        return judge.net.state_dict()

    first, second = fit(), fit()
    assert all(torch.equal(first[k], second[k]) for k in first)
