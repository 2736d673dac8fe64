"""The judge: an attribute classifier independent of the GAN, its file format and its verdicts.

A small CNN trained from scratch (no pretrained weights exist offline) on the whole face at the GAN's
resolution. Its file carries the per-attribute thresholds chosen on val and the rows it trained on,
so every evaluation can prove it never saw an evaluated face (`geogan.data.evalset.check_judge_disjoint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from geogan.io import atomic_path
from geogan.metrics.fid import images_to_float

FORMAT = "geogan-judge/1"


def _conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class JudgeNet(nn.Module):
    """Images (B, 3, S, S) in [-1, 1] -> (B, A) logits; S divisible by 32.

    A 4x4 stride-4 patch stem, then three stride-2 stages of two 3x3 convs with BatchNorm, global
    average pooling and one logit per attribute: at width 32 about 45 MMACs per 128 px image, small
    enough to train on a CPU (docs/celeba.md: how long).
    """

    def __init__(self, num_attributes: int, width: int = 32, input_size: int = 128):
        super().__init__()
        if num_attributes < 1 or width < 1 or input_size < 32 or input_size % 32:
            raise ValueError(f"bad judge shape: {num_attributes} attributes, width {width}, input {input_size} px "
                             "(the input must be a multiple of 32)")
        self.num_attributes, self.width, self.input_size = num_attributes, width, input_size
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 4, 4, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),  # S/4
            *_conv(w, w), *_conv(w, 2 * w, 2), *_conv(2 * w, 2 * w),  # S/8
            *_conv(2 * w, 4 * w, 2), *_conv(4 * w, 4 * w),  # S/16
            *_conv(4 * w, 8 * w, 2), *_conv(8 * w, 8 * w),  # S/32
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8 * w, num_attributes)
        self.feature_dim = 8 * w

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (B, 8 * width)."""
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ValueError(f"the judge takes {self.input_size} px images, got {tuple(x.shape[-2:])}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x)))  # (B, A) logits


@dataclass
class Judge:
    """A trained judge: the network, what it judges, where it decides, and what it was trained on.

    Attributes:
        net: the network (eval mode).
        attributes: attribute names in logit order.
        thresholds: attribute -> probability at or above which the judge says "has it" (chosen on val).
        trained_on: {"train": [row indices], "val": [...]} of the prepared dataset, or {} when unknown
            (a judge supplied by the user).
        meta: the rest (test report, data version, training figures).
    """

    net: JudgeNet
    attributes: tuple[str, ...]
    thresholds: dict[str, float]
    trained_on: dict[str, list[int]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def index(self, attribute: str) -> int:
        """The logit of `attribute` (case-insensitive); raises naming what the judge knows."""
        names = [a.lower() for a in self.attributes]
        if attribute.lower() not in names:
            raise ValueError(f"the judge was trained on {list(self.attributes)}, not '{attribute}'")
        return names.index(attribute.lower())

    def threshold(self, attribute: str) -> float:
        return float(self.thresholds[self.attributes[self.index(attribute)]])


@torch.no_grad()
def predict_proba(judge: Judge | JudgeNet, images: np.ndarray | torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Attribute probabilities (N, A) on the CPU, for uint8 NHWC or float NCHW [-1, 1] images."""
    net = judge.net if isinstance(judge, Judge) else judge
    dev = next(net.parameters()).device
    out = [torch.sigmoid(net(images_to_float(images[i:i + batch_size], dev))).float().cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out) if out else torch.empty(0, net.num_attributes)


def save_judge(path: str | Path, judge: Judge) -> None:
    """Write the judge (plain state dict, names, thresholds, training rows, meta) atomically."""
    missing = [a for a in judge.attributes if a not in judge.thresholds]
    if missing:
        raise ValueError(f"save_judge: no threshold for {missing}")
    payload = {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in judge.net.state_dict().items()},
        "net": {"num_attributes": judge.net.num_attributes, "width": judge.net.width,
                "input_size": judge.net.input_size},
        "attributes": list(judge.attributes),
        "thresholds": {k: float(v) for k, v in judge.thresholds.items()},
        "trained_on": {k: [int(i) for i in v] for k, v in judge.trained_on.items()},
        "meta": dict(judge.meta),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_judge(path: str | Path, map_location: str | torch.device = "cpu") -> Judge:
    """Load a judge written by `save_judge` (eval mode); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: judge file not found (run the train_judge stage, or set judge.weights)")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unpickling failure means "not our file"
        raise ValueError(f"{path}: cannot read the judge file ({e})") from e
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a judge file (expected format {FORMAT!r})")
    try:
        net = JudgeNet(**blob["net"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, RuntimeError) as e:
        raise ValueError(f"{path}: weights do not match the stored network description ({e})") from e
    return Judge(net=net.to(map_location).eval(), attributes=tuple(blob["attributes"]),
                 thresholds=dict(blob["thresholds"]), trained_on=dict(blob.get("trained_on") or {}),
                 meta=dict(blob.get("meta") or {}))

