"""Train the judge on the train partition, stop early and set thresholds on val, report on test.

The partitions are the dataset's (`geogan.data.split.row_partitions`): the same people are
held out for the judge and for every GAN evaluation, so the judge never sees an evaluated face.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geogan.metrics.fid import images_to_float
from geogan.metrics.judge import Judge, JudgeNet, predict_proba


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half); NaN when a class is absent."""
    s, y = np.asarray(scores, np.float64).reshape(-1), np.asarray(labels).reshape(-1) >= 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    _, first, counts = np.unique(s[order], return_index=True, return_counts=True)
    ranks = np.empty(len(s), np.float64)
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)  # 1-based ranks, averaged over ties
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def recalls(said: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(recall of the positives, recall of the negatives) of boolean verdicts; NaN for an absent class."""
    said, y = np.asarray(said, bool), np.asarray(labels) >= 0.5
    pos = float(said[y].mean()) if y.any() else float("nan")
    neg = float((~said[~y]).mean()) if (~y).any() else float("nan")
    return pos, neg


def best_threshold(probs: np.ndarray, labels: np.ndarray) -> float:
    """The probability threshold (verdict: p >= t) that maximises balanced accuracy on these labels."""
    p, y = np.asarray(probs, np.float64), np.asarray(labels) >= 0.5
    if not y.any() or y.all():
        return 0.5
    candidates = np.unique(p)
    said = p[None, :] >= candidates[:, None]  # (T, N)
    bacc = (said[:, y].mean(1) + (~said[:, ~y]).mean(1)) / 2
    return float(candidates[int(np.argmax(bacc))])


def report(probs: np.ndarray, labels: np.ndarray, attributes: Sequence[str], thresholds: Mapping[str, float],
           confusions: Mapping[str, Mapping[str, np.ndarray]] | None = None) -> dict[str, float]:
    """Per attribute: auc, bacc, recall (positives), specificity (negatives' recall), acc, base rate, counts.

    Args:
        probs, labels: (N, A).
        attributes: names in column order.
        thresholds: attribute -> decision threshold.
        confusions: attribute -> {column: (N,) 0/1}: the share judged positive in each cell of
            (attribute, column), e.g. how often a goatee without a mustache is called a mustache.
    Returns:
        Flat `<attr>/<figure>` keys, and `<attr>/said_yes|<column>=c,<attr>=a` with `..._n` counts.
    """
    out: dict[str, float] = {}
    for j, name in enumerate(attributes):
        y = labels[:, j] >= 0.5
        said = probs[:, j] >= thresholds[name]
        rec, spec = recalls(said, y)
        out.update({f"{name}/auc": auc(probs[:, j], y), f"{name}/bacc": float(np.nanmean([rec, spec])),
                    f"{name}/recall": rec, f"{name}/specificity": spec, f"{name}/acc": float((said == y).mean()),
                    f"{name}/base_rate": float(max(y.mean(), 1 - y.mean())), f"{name}/n_pos": float(y.sum()),
                    f"{name}/n_neg": float((~y).sum()), f"{name}/threshold": float(thresholds[name])})
        for column, values in (confusions or {}).get(name, {}).items():
            c = np.asarray(values) >= 0.5
            for c_val in (0, 1):
                for y_val in (0, 1):
                    cell = (c == c_val) & (y == y_val)
                    key = f"{name}/said_yes|{column}={c_val},{name}={y_val}"
                    out[key] = float(said[cell].mean()) if cell.any() else float("nan")
                    out[f"{key}_n"] = float(cell.sum())
    return out


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flips, shifts of up to S/16 pixels (edge-replicated) and mild brightness/contrast changes."""
    b, _, s, _ = x.shape
    dev = x.device
    flip = torch.rand(b, generator=g) < 0.5
    x = torch.where(flip.to(dev).view(-1, 1, 1, 1), x.flip(-1), x)
    pad = max(1, s // 16)
    xp = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = (torch.randint(0, 2 * pad + 1, (2, b), generator=g)).to(dev)
    rows = (torch.arange(s, device=dev)[None] + dy[:, None])  # (B, S)
    cols = (torch.arange(s, device=dev)[None] + dx[:, None])
    x = xp[torch.arange(b, device=dev)[:, None, None], :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    contrast = (0.8 + 0.4 * torch.rand(b, 1, 1, 1, generator=g)).to(dev)
    bright = (0.2 * torch.rand(b, 1, 1, 1, generator=g) - 0.1).to(dev)
    return ((x * contrast + bright).clamp(-1, 1)).contiguous()


def fit_judge(images: np.ndarray, labels: np.ndarray, rows: Mapping[str, np.ndarray], attributes: Sequence[str], *,
              width: int = 32, max_steps: int = 3000, eval_every: int = 250, patience: int = 4, batch_size: int = 64,
              lr: float = 2e-3, weight_decay: float = 1e-4, device: torch.device | str = "cpu", seed: int = 0,
              confusions: Mapping[str, Mapping[str, np.ndarray]] | None = None,
              progress: bool = True) -> tuple[Judge, dict[str, float]]:
    """Train a judge; early stopping on val's mean AUC, thresholds on val, the report on test.

    Args:
        images: uint8 (N, S, S, 3), S a multiple of 32 (the GAN's resolution).
        labels: (N, A) 0/1 in `attributes` order.
        rows: "train", "val", "test" -> row indices (disjoint people).
        attributes: the judged attributes.
        width, max_steps, eval_every, patience, batch_size, lr, weight_decay: the training.
        device: where to train (the images are copied there as uint8 when it is a GPU).
        seed: seeds the initialisation, batches and augmentation.
        confusions: attribute -> {column: (N,) labels} broken down in the test report.
        progress: a tqdm bar.
    Returns:
        (the judge with `trained_on` set, the test report with `train/*` figures).
    """
    labels = np.asarray(labels, np.float32)
    train, val, test = _partitions(labels, rows, attributes)
    dev = torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = JudgeNet(len(attributes), width, images.shape[1]).to(dev)
    source = torch.from_numpy(np.ascontiguousarray(images)).to(dev) if dev.type == "cuda" else images
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed + 1)  # dropout draws from the global RNG: seeded too, so `seed` fixes the judge
        best, step, history = _train(net, source, labels, train, val, dev, seed=seed, max_steps=max_steps,
                                     eval_every=eval_every, patience=patience, batch_size=batch_size, lr=lr,
                                     weight_decay=weight_decay, progress=progress)
    train_s = time.perf_counter() - t0
    net.load_state_dict(best["state"])
    net.eval()
    p_val = predict_proba(net, _rows(source, val)).numpy()
    thresholds = {a: best_threshold(p_val[:, j], labels[val, j]) for j, a in enumerate(attributes)}
    p_test = predict_proba(net, _rows(source, test)).numpy()
    cells = {a: {c: np.asarray(v)[test] for c, v in cols.items()} for a, cols in (confusions or {}).items()}
    figures = report(p_test, labels[test], attributes, thresholds, cells)
    figures.update({"train/steps": float(step), "train/best_step": float(best["step"]),
                    "train/val_mean_auc": float(best["auc"]), "train/seconds": train_s,
                    "train/images_per_s": step * batch_size / max(train_s, 1e-9),
                    "train/n_train": float(len(train)), "train/n_val": float(len(val)), "train/n_test": float(len(test))})
    judge = Judge(net=net.cpu(), attributes=tuple(attributes), thresholds=thresholds,
                  trained_on={"train": train.tolist(), "val": val.tolist()},
                  meta={"test": figures, "history": history})
    return judge, figures


def _partitions(labels: np.ndarray, rows: Mapping[str, np.ndarray],
                attributes: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted train, val and test rows; each must hold both classes of every attribute."""
    train, val, test = (np.sort(np.asarray(rows[k], np.int64)) for k in ("train", "val", "test"))
    for name, idx in (("train", train), ("val", val), ("test", test)):
        pos = labels[idx].sum(0)
        if len(idx) == 0 or (pos == 0).any() or (pos == len(idx)).any():
            raise ValueError(f"the judge's {name} partition has {len(idx)} images and {pos.astype(int).tolist()} "
                             f"positives of {list(attributes)}: every attribute needs both classes")
    return train, val, test


def _train(net: JudgeNet, source, labels: np.ndarray, train: np.ndarray, val: np.ndarray, dev: torch.device, *,
           seed: int, max_steps: int, eval_every: int, patience: int, batch_size: int, lr: float,
           weight_decay: float, progress: bool) -> tuple[dict, int, list[dict]]:
    """AdamW with a cosine schedule and balanced classes, stopped early on val's mean AUC.

    Returns:
        (the best {"auc", "step", "state"}, the last step run, the history of val checks).
    """
    pos = labels[train].sum(0)
    pos_weight = torch.tensor((len(train) - pos) / pos, dtype=torch.float32, device=dev)  # balanced classes
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    rng, g = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    y_all = torch.from_numpy(labels)
    best = {"auc": -1.0, "step": 0, "state": copy.deepcopy(net.state_dict())}
    history, stale, step = [], 0, 0
    bar = _bar(max_steps, progress)
    for step in range(1, max_steps + 1):
        for group in opt.param_groups:  # cosine to 5% over max_steps
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - 1) / max_steps)))
        idx = np.sort(rng.choice(train, size=min(batch_size, len(train)), replace=False))
        x = _augment(images_to_float(_rows(source, idx), dev), g)
        loss = F.binary_cross_entropy_with_logits(net.train()(x), y_all[idx].to(dev), pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        if step % eval_every and step != max_steps:
            continue
        val_auc = _mean_auc(net.eval(), source, labels, val)
        history.append({"step": step, "val_mean_auc": val_auc, "loss": float(loss.detach())})
        bar.set_postfix(val_auc=f"{val_auc:.4f}")
        if val_auc > best["auc"]:
            best, stale = {"auc": val_auc, "step": step, "state": copy.deepcopy(net.state_dict())}, 0
        else:
            stale += 1
            if stale >= patience:
                break
    bar.close()
    return best, step, history


def _mean_auc(net: JudgeNet, source, labels: np.ndarray, idx: np.ndarray) -> float:
    probs = predict_proba(net, _rows(source, idx)).numpy()
    return float(np.nanmean([auc(probs[:, j], labels[idx, j]) for j in range(labels.shape[1])]))


def _rows(source: np.ndarray | torch.Tensor, idx: np.ndarray) -> np.ndarray | torch.Tensor:
    # Sorted indices read a memory-mapped array sequentially; a GPU tensor wants a tensor index.
    return source[torch.from_numpy(idx).to(source.device)] if isinstance(source, torch.Tensor) else source[idx]


def _bar(total: int, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="judge", leave=False, disable=not progress)
