"""FID and KID on Inception features: the Fréchet distance, KID over subsets and its bootstrap, the feature pass.

The distances are our own numpy code (tested against pytorch-fid's function); the network and
its pinned weights are `geogan.metrics.inception`. Features are computed in fp32 with autocast
off (never bf16 for a published metric); cuDNN may use TF32 (its speed: benchmarks/RESULTS.md).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from geogan.metrics.inception import FeatureExtractor

_KID_FULL_KERNEL_MAX = 3000  # sets up to this size get whole kernel matrices (72 MB each)


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


def kid_bootstrap(features_fake: np.ndarray, features_real: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """KID of each bootstrap replicate of the fakes against all the reals (whole sets, no subsets).

    A replicate counts fake i `weights[b, i]` times. Its within-fakes term averages the kernel
    over pairs of *different* fakes (weighted w_i w_j), so the copies a resample makes do not
    pair with themselves: k(x, x) is far larger than k(x, y) and would bias every replicate up.
    Different pairs holding the same image (a do-nothing output shared by R pairs) are different
    fakes here and in `kid` alike.

    Args:
        features_fake, features_real: (P, D) and (M, D).
        weights: (B, P) counts per replicate.
    Returns:
        (B,) replicate KIDs; NaN for a replicate of one distinct fake.
    """
    ff, fr = np.asarray(features_fake, np.float64), np.asarray(features_real, np.float64)
    d, m = ff.shape[1], len(fr)
    k_ff, k_rr, k_fr = (ff @ ff.T / d + 1) ** 3, (fr @ fr.T / d + 1) ** 3, (ff @ fr.T / d + 1) ** 3
    w = np.asarray(weights, np.float64)
    n, same = w.sum(1), (w * w).sum(1)
    # A replicate that drew one fake only has no pair of different fakes: NaN, which the interval leaves out.
    with np.errstate(invalid="ignore", divide="ignore"):
        within_fake = (((w @ k_ff) * w).sum(1) - (w * w) @ np.diag(k_ff)) / (n * n - same)
    within_real = (k_rr.sum() - np.trace(k_rr)) / (m * (m - 1))
    across = (w @ k_fr.sum(1)) / (n * m)
    return within_fake + within_real - 2 * across


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
        extractor: from `load_inception` or `random_inception`.
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


