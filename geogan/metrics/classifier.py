"""The multi-label attribute classifier that judges transfer (ResNet-18 layout, trained here).

A torchvision-layout ResNet-18 (torchvision's `BasicBlock`, the same module names, so at
width 64 its state dict is torchvision's `resnet18` and ImageNet weights load into it) with
one logit per attribute. `width` scales every stage: the default 32 (channels 32..256)
trains 300 steps of batch 32 at 64 px in 46-60 s on 2 CPU cores, where width 64 needs
about three minutes. Inputs of any size are resized to `input_size` inside the network.
torchvision is imported inside `build_classifier` only.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from geogan.io import atomic_path
from geogan.training.distributed import resolve_device
from geogan.metrics.fid import FeatureExtractor, images_to_float

FORMAT = "geogan-attribute-classifier/1"
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class AttributeClassifier(nn.Module):
    """ResNet-18 layout at a given width; forward gives (B, A) logits for images in [-1, 1].

    Attributes:
        attributes: attribute names in logit order (plain Python, set by train/load).
    """

    def __init__(self, num_attributes: int, width: int = 32, input_size: int = 64):
        super().__init__()
        from torchvision.models.resnet import BasicBlock, conv1x1

        if input_size < 32 or num_attributes < 1 or width < 1:
            raise ValueError(f"bad classifier shape: num_attributes={num_attributes} width={width} input_size={input_size}")
        self.num_attributes, self.width, self.input_size = num_attributes, width, input_size
        self.attributes: tuple[str, ...] = tuple(f"attr{i}" for i in range(num_attributes))
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = width
        for i, (ch, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)]):
            down = None
            if stride != 1 or in_ch != ch:
                down = nn.Sequential(conv1x1(in_ch, ch, stride), nn.BatchNorm2d(ch))
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(in_ch, ch, stride, down), BasicBlock(ch, ch)))
            in_ch = ch
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_attributes)
        self.feature_dim = in_ch
        # ImageNet normalisation: harmless from scratch, needed for pretrained weights.
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate (pooled) features (B, 8*width) of images (B, 3, H, W) in [-1, 1]."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            size = (self.input_size, self.input_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = ((x + 1) / 2 - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))  # (B, A) logits


def build_classifier(num_attributes: int, weights: str = "", width: int = 32, input_size: int = 64) -> AttributeClassifier:
    """A fresh classifier, optionally starting from ResNet-18 weights.

    Args:
        num_attributes: logits (multi-label).
        weights: a torchvision ResNet-18 state dict (e.g. resnet18-f37072fd.pth, needs
            width 64); its `fc` is dropped. "" = random init.
        width: channels of the first stage (64 = torchvision's resnet18).
        input_size: images are resized to this square size inside the network.
    Returns:
        The classifier (train mode, CPU).
    """
    model = AttributeClassifier(num_attributes, width, input_size)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: classifier weights (classifier.weights) not found")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise ValueError(f"{path}: not ResNet-18 weights for width {width}: {e}") from e
        if unexpected or [k for k in missing if not k.startswith("fc.")]:
            raise ValueError(f"{path}: not ResNet-18 weights (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def _batch(images: np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    # Sorted indices read memory-mapped arrays sequentially.
    order = np.argsort(idx)
    x = images_to_float(np.asarray(images[idx[order]]), device)
    return x[torch.as_tensor(np.argsort(order), device=device)].contiguous(memory_format=torch.channels_last)


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    train_idx: Sequence[int],
    test_idx: Sequence[int],
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 1e-3,
    device: str | torch.device = "auto",
    seed: int = 0,
    progress: bool = True,
    *,
    attributes: Sequence[str] | None = None,
    weights: str = "",
    width: int = 32,
    input_size: int = 64,
) -> tuple[AttributeClassifier, dict[str, float]]:
    """Train the multi-label classifier (BCE balanced per attribute, flips, Adam + cosine).

    Args:
        images: uint8 (N, H, W, 3) (a memory-mapped array is fine).
        labels: (N, A) 0/1.
        train_idx, test_idx: indices into `images`.
        steps, batch_size, lr: the optimisation.
        device: "auto", "cpu", "cuda[:i]" or a torch.device.
        seed: seeds the initialisation, the batches and the flips.
        progress: show a tqdm bar.
        attributes: A names in label column order, used in the metric names
            (default "attr0".."attr<A-1>").
        weights, width, input_size: see `build_classifier`.
    Returns:
        (model in eval mode, metrics) with test `acc/<Attr>`, `bacc/<Attr>` (balanced),
        `base_rate/<Attr>` (majority-class accuracy, the trivial baseline), their means
        `acc/mean` and `bacc/mean`, `loss/final` and `timing/train_s`.
    """
    labels = np.asarray(labels, dtype=np.float32)
    attributes = tuple(attributes) if attributes is not None else tuple(f"attr{j}" for j in range(labels.shape[-1]))
    train_idx, test_idx = np.asarray(train_idx, np.int64), np.asarray(test_idx, np.int64)
    if labels.ndim != 2 or labels.shape[0] != len(images) or labels.shape[1] != len(attributes):
        raise ValueError(f"labels {labels.shape} must be (N={len(images)}, A={len(attributes)})")
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ValueError(f"empty partition: {len(train_idx)} train, {len(test_idx)} test images")
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(len(attributes), weights, width, input_size)
    model.attributes = tuple(attributes)
    model = model.to(dev, memory_format=torch.channels_last).train()

    # Balance each attribute: rare attributes (Mustache ~4% in CelebA) would otherwise be
    # learnt as "never", and transfer success would be meaningless.
    pos = labels[train_idx].sum(0)
    neg = len(train_idx) - pos
    ratio = np.where(pos > 0, np.clip(neg / np.maximum(pos, 1), 0.02, 50.0), 1.0)
    pos_weight = torch.tensor(ratio, dtype=torch.float32, device=dev)  # (A,)
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    rng = np.random.default_rng(seed)
    y_all = torch.from_numpy(labels)
    t0 = time.perf_counter()
    loss = torch.tensor(float("nan"))
    bar = range(steps)
    if progress:
        from tqdm import tqdm

        bar = tqdm(bar, desc="classifier", leave=False)
    for step in bar:
        for group in opt.param_groups:  # cosine decay to 5% of lr
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
        idx = rng.choice(train_idx, size=min(batch_size, len(train_idx)), replace=len(train_idx) < batch_size)
        x = _batch(images, idx, dev)
        flip = torch.from_numpy(rng.random(len(idx)) < 0.5).to(dev)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        loss = F.binary_cross_entropy_with_logits(model(x), y_all[idx].to(dev), pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss_value = float(loss.detach())  # read once: a per-step read would sync the GPU
    train_s = time.perf_counter() - t0
    model.eval()
    probs = predict_proba(model, images[np.sort(test_idx)]).numpy()
    metrics = attribute_accuracy(probs, labels[np.sort(test_idx)], attributes)
    metrics.update({"loss/final": loss_value, "timing/train_s": train_s})
    return model, metrics


def attribute_accuracy(probs: np.ndarray, labels: np.ndarray, attributes: Sequence[str]) -> dict[str, float]:
    """Per-attribute accuracy, balanced accuracy and majority baseline at threshold 0.5."""
    pred, y = np.asarray(probs) >= 0.5, np.asarray(labels) >= 0.5
    out: dict[str, float] = {}
    for j, name in enumerate(attributes):
        hit = pred[:, j] == y[:, j]
        tpr = hit[y[:, j]].mean() if y[:, j].any() else float("nan")
        tnr = hit[~y[:, j]].mean() if (~y[:, j]).any() else float("nan")
        out[f"acc/{name}"] = float(hit.mean())
        out[f"bacc/{name}"] = float(np.nanmean([tpr, tnr]))
        out[f"base_rate/{name}"] = float(max(y[:, j].mean(), 1 - y[:, j].mean()))
    out["acc/mean"] = float(np.mean([out[f"acc/{a}"] for a in attributes]))
    out["bacc/mean"] = float(np.mean([out[f"bacc/{a}"] for a in attributes]))
    return out


def save_classifier(
    path: str | Path, model: AttributeClassifier, attributes: Sequence[str] | None = None, meta: dict[str, Any] | None = None
) -> None:
    """Write a plain state dict + attribute names + shape + meta to `path`, atomically.

    Args:
        path: the .pt file.
        model: the classifier.
        attributes: names in logit order (default: `model.attributes`).
        meta: JSON-like extras (metrics, data version, ...).
    """
    names = list(attributes) if attributes is not None else list(model.attributes)
    if len(names) != model.num_attributes:
        raise ValueError(f"{len(names)} attribute names for a classifier with {model.num_attributes} outputs")
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "attributes": names,
        "width": model.width,
        "input_size": model.input_size,
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_classifier(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[AttributeClassifier, dict[str, Any]]:
    """Load a classifier written by `save_classifier`.

    Returns:
        (model in eval mode with `.attributes` set, meta: the saved meta plus "attributes",
        "width" and "input_size").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: classifier file not found (run the train_classifier stage)")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    model = AttributeClassifier(len(payload["attributes"]), payload["width"], payload["input_size"])
    model.load_state_dict(payload["state_dict"])
    model.attributes = tuple(payload["attributes"])
    meta = {**payload["meta"], "attributes": list(model.attributes), "width": model.width, "input_size": model.input_size}
    return model.to(map_location).eval(), meta


@torch.no_grad()
def predict_proba(model: AttributeClassifier, images: torch.Tensor | np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """Attribute probabilities (B, A) on the CPU for images (B, 3, H, W) in [-1, 1] or uint8 NHWC."""
    dev = next(model.parameters()).device
    out = [torch.sigmoid(model(images_to_float(images[i : i + batch_size], dev))).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, model.num_attributes)


@torch.no_grad()
def penultimate_features(
    model: AttributeClassifier, images: torch.Tensor | np.ndarray, batch_size: int = 64
) -> torch.Tensor:
    """Pooled penultimate features (B, 8*width) on the CPU, the basis of `fid_clf`."""
    dev = next(model.parameters()).device
    out = [model.features(images_to_float(images[i : i + batch_size], dev)).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, model.feature_dim)


class _Features(nn.Module):
    def __init__(self, model: AttributeClassifier):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x)


def as_feature_extractor(model: AttributeClassifier) -> FeatureExtractor:
    """The classifier's penultimate features as a FeatureExtractor of kind "classifier" (fid_clf)."""
    dev = next(model.parameters()).device
    name = f"attribute-classifier resnet18-w{model.width}@{model.input_size}px penultimate {model.feature_dim}-d"
    return FeatureExtractor(_Features(model.eval()), name, "classifier", model.feature_dim, dev)


def transfer_success(probs_for_attr: torch.Tensor | np.ndarray, threshold: float = 0.5) -> float:
    """Share of transferred images the classifier calls positive for the attribute."""
    p = np.asarray(probs_for_attr, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("transfer_success of no images")
    return float((p >= threshold).mean())


def removal_success(probs_for_attr: torch.Tensor | np.ndarray, threshold: float = 0.5) -> float:
    """Share of images with the attribute removed that the classifier calls negative."""
    return 1.0 - transfer_success(probs_for_attr, threshold)
