"""Training data: the prepared uint8 images held in (device) memory, sampled as unpaired pairs.

An attribute's prepared set fits on the training device as one pre-resized uint8 tensor, so a batch is an
index gather plus a cast: the GPU never waits on a loader. Batches are a pure function of (seed, step), so
resumption is exact without sampler state and the same global batch shards over any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

# Horizontal flip of the 68 iBUG 300-W landmarks: new point i is old point FLIP_68[i].
FLIP_68: tuple[int, ...] = (
    tuple(range(16, -1, -1))  # jaw
    + tuple(range(26, 16, -1))  # brows
    + (27, 28, 29, 30)  # nose bridge
    + (35, 34, 33, 32, 31)  # nostrils
    + (45, 44, 43, 42, 47, 46)  # left eye <- right eye
    + (39, 38, 37, 36, 41, 40)  # right eye <- left eye
    + (54, 53, 52, 51, 50, 49, 48)  # outer upper lip
    + (59, 58, 57, 56, 55)  # outer lower lip
    + (64, 63, 62, 61, 60)  # inner upper lip
    + (67, 66, 65)  # inner lower lip
)


@dataclass(frozen=True)
class PreparedData:
    """Images and landmarks of the prepared dataset, aligned row for row."""

    images: np.ndarray  # (N, H, W, 3) uint8
    landmarks: np.ndarray  # (N, 68, 2) float32 pixel coords, NaN where missing

    @property
    def resolution(self) -> int:
        return int(self.images.shape[1])


def load_prepared(prepared_dir: str | Path, landmarks_dir: str | Path) -> PreparedData:
    """Load images.npy (memory-mapped; or a packed folder's WebP images, decoded) and landmarks.npy, checking that they agree."""
    from geogan.data.packed import PACKED_IMAGES, decode_packed

    prepared_dir, landmarks_dir = Path(prepared_dir), Path(landmarks_dir)
    images_file, lm_file = prepared_dir / "images.npy", landmarks_dir / "landmarks.npy"
    if not images_file.is_file() and (prepared_dir / PACKED_IMAGES).is_file():
        images_file = prepared_dir / PACKED_IMAGES
    for f, stage in ((images_file, "ingest"), (lm_file, "landmarks")):
        if not f.is_file():
            raise FileNotFoundError(f"{f}: not found (run the {stage} stage first)")
    images = decode_packed(images_file) if images_file.name == PACKED_IMAGES else np.load(images_file, mmap_mode="r")
    landmarks = np.load(lm_file)
    if images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8 or images.shape[1] != images.shape[2]:
        raise ValueError(f"{images_file}: expected uint8 (N, S, S, 3), got {images.dtype} {images.shape}")
    if landmarks.shape != (images.shape[0], 68, 2):
        raise ValueError(f"{lm_file}: expected ({images.shape[0]}, 68, 2) to match {images_file}, got {landmarks.shape}")
    return PreparedData(images=images, landmarks=landmarks.astype(np.float32))


def to_model_landmarks(landmarks_px: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinates -> [-1, 1] grid units (align_corners=True: pixel centres at the ends)."""
    return landmarks_px * (2.0 / (size - 1)) - 1.0


def to_pixel_landmarks(landmarks_norm: torch.Tensor, size: int) -> torch.Tensor:
    """[-1, 1] grid units -> pixel coordinates (inverse of `to_model_landmarks`)."""
    return (landmarks_norm + 1.0) * ((size - 1) / 2.0)


@dataclass
class Batch:
    """One unpaired batch: sources a (without y) and references b (with y)."""

    x_a: torch.Tensor  # (B, 3, S, S) float in [-1, 1]
    x_b: torch.Tensor
    lm_a: torch.Tensor  # (B, 68, 2) in [-1, 1]
    lm_b: torch.Tensor


class DomainTensors:
    """The images and landmarks of one domain (A or B) held on the training device."""

    def __init__(self, data: PreparedData, indices: Sequence[int], device: torch.device):
        if len(indices) == 0:
            raise ValueError("empty domain: no images to train on")
        idx = np.asarray(indices, dtype=np.int64)
        lm = data.landmarks[idx]
        if np.isnan(lm).any():
            raise ValueError("a training image has no landmarks; the split stage should have excluded it")
        self.size = data.resolution
        self.images = torch.from_numpy(np.ascontiguousarray(data.images[idx])).permute(0, 3, 1, 2).contiguous().to(device)
        self.landmarks = to_model_landmarks(torch.from_numpy(lm), self.size).to(device)
        # Built once: a Python list or a new tensor in the step would be a host-to-device copy (a sync).
        self._flip_index = torch.tensor(FLIP_68, device=device)
        self._mirror_x = torch.tensor([-1.0, 1.0], device=device)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def gather(self, idx: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images as float [-1, 1] and landmarks, with per-sample horizontal flips.

        Args:
            idx: (B,) int64 indices into this domain, on its device.
            flip: (B,) bool, which samples to mirror (landmarks are mirrored and re-ordered).
        """
        x = self.images.index_select(0, idx).float().div_(127.5).sub_(1.0)
        lm = self.landmarks.index_select(0, idx)
        f = flip.view(-1, 1, 1, 1)
        x = torch.where(f, x.flip(3), x)
        lm_flipped = lm.index_select(1, self._flip_index) * self._mirror_x
        lm = torch.where(flip.view(-1, 1, 1), lm_flipped, lm)
        return x, lm


class UnpairedSampler:
    """Deterministic unpaired batches, sharded over ranks like DistributedSampler.

    The global batch of step s takes the next `batch_size` positions of an epoch-wise
    permutation of A (and independently of B), seeded by (seed, epoch); rank r takes
    its contiguous share. Flips are drawn per global sample from (seed, step).
    """

    def __init__(self, domain_a: DomainTensors, domain_b: DomainTensors, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, augment_flip: bool = True):
        if batch_size % world_size:
            raise ValueError(f"train.batch_size={batch_size} must be divisible by the number of processes ({world_size})")
        self.a, self.b = domain_a, domain_b
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.augment_flip = augment_flip
        self._perms: dict[tuple[int, int, int], torch.Tensor] = {}  # (n, epoch, stream) -> permutation

    def batch(self, step: int) -> Batch:
        """The rank-local share of the global batch of `step`."""
        lo = self.rank * (self.batch_size // self.world_size)
        hi = lo + self.batch_size // self.world_size
        idx_a = self._positions(len(self.a), step, stream=0)[lo:hi]
        idx_b = self._positions(len(self.b), step, stream=1)[lo:hi]
        g = torch.Generator().manual_seed(_mix(self.seed, step, 2))
        flips = torch.rand(2, self.batch_size, generator=g) < 0.5
        if not self.augment_flip:
            flips[:] = False
        dev = self.a.images.device
        if dev.type == "cuda":  # pinned + non_blocking: the copy queues behind the step instead of waiting for it
            flips = flips.pin_memory().to(dev, non_blocking=True)
        x_a, lm_a = self.a.gather(idx_a, flips[0, lo:hi])
        x_b, lm_b = self.b.gather(idx_b, flips[1, lo:hi])
        return Batch(x_a=x_a, x_b=x_b, lm_a=lm_a, lm_b=lm_b)

    def _positions(self, n: int, step: int, stream: int) -> torch.Tensor:
        # Global positions step*B ... step*B+B-1 in an endless sequence of per-epoch permutations.
        start = step * self.batch_size
        out = []
        pos = start
        while pos < start + self.batch_size:
            epoch, offset = divmod(pos, n)
            perm = self._permutation(n, epoch, stream)
            take = min(n - offset, start + self.batch_size - pos)
            out.append(perm[offset : offset + take])
            pos += take
        return torch.cat(out)

    def _permutation(self, n: int, epoch: int, stream: int) -> torch.Tensor:
        key = (n, epoch, stream)
        if key not in self._perms:
            if len(self._perms) > 8:  # only the current and next epoch of each stream are needed
                self._perms.clear()
            g = torch.Generator().manual_seed(_mix(self.seed, epoch, stream))
            # Drawn on the CPU (the same on every device), kept on the training device: one copy per epoch.
            self._perms[key] = torch.randperm(n, generator=g).to(self.a.images.device)
        return self._perms[key]


def _mix(*values: int) -> int:
    # A stable 63-bit seed from a tuple of ints (numpy's SeedSequence does the mixing).
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)
