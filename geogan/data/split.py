"""Unpaired A/B splits per attribute: A = faces without it, B = faces with it.

A split is a small JSON index file that DVC versions. Where identities are known, one
person never appears in both A and B (nor in both train and test), so the model cannot
learn a pairing that the unpaired setting does not have.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np


class SplitError(ValueError):
    """A split that cannot be made (unknown attribute, empty domain)."""


@dataclass(frozen=True)
class Manifest:
    """The prepared dataset's manifest: one row per image, in images.npy order."""

    images: tuple[str, ...]
    identities: tuple[str, ...]  # "" where unknown
    partitions: tuple[str, ...]  # "train"/"val"/"test" or "" where the source has none
    labels: dict[str, np.ndarray]  # attribute -> (N,) int8 0/1

    def __len__(self) -> int:
        return len(self.images)


def read_manifest(path: str | Path) -> Manifest:
    """Read manifest.csv (index,image,identity[,partition],<attributes...>)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found (run the ingest stage first)")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SplitError(f"{path}: manifest has no rows")
    fixed = {"index", "image", "identity", "partition"}
    columns = [c for c in rows[0] if c not in fixed]
    for i, row in enumerate(rows):
        if int(row["index"]) != i:
            raise SplitError(f"{path}: row {i} has index {row['index']}; the manifest must follow images.npy order")
    labels = {c: np.array([int(float(r[c] or 0)) for r in rows], dtype=np.int8) for c in columns}
    return Manifest(
        images=tuple(r["image"] for r in rows),
        identities=tuple(r.get("identity", "") or "" for r in rows),
        partitions=tuple(r.get("partition", "") or "" for r in rows),
        labels=labels,
    )


def resolve_attribute(manifest: Manifest, attribute: str, source: str = "manifest") -> str:
    """Return the manifest's column for `attribute` (case-insensitive), or raise naming it."""
    by_lower = {c.lower(): c for c in manifest.labels}
    if attribute.lower() in by_lower:
        return by_lower[attribute.lower()]
    hint = difflib.get_close_matches(attribute, list(manifest.labels), n=1, cutoff=0.6)
    suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
    raise SplitError(f"attribute '{attribute}' is not in {source} (has {sorted(manifest.labels)}){suggestion}")


def make_split(
    manifest: Manifest,
    attribute: str,
    valid: np.ndarray,
    seed: int,
    test_fraction: float,
    max_per_domain: int = 0,
    use_source_partition: bool = True,
) -> dict:
    """Split the dataset into unpaired train/test A (without) and B (with) index lists.

    Args:
        manifest: the prepared dataset's manifest.
        attribute: the attribute name (matched case-insensitively).
        valid: (N,) bool, images usable for training (e.g. landmarks found).
        seed: makes the split deterministic.
        test_fraction: share of identities (or images, where identities are unknown) held out.
        max_per_domain: cap on each of A and B per partition (0 = none).
        use_source_partition: use the manifest's partition column when it has one.
    Returns:
        The split as a JSON-ready dict (see module docstring); raises SplitError when a
        domain of the training partition is empty.
    """
    column = resolve_attribute(manifest, attribute)
    labels = manifest.labels[column].astype(bool)
    n = len(manifest)
    rng = np.random.default_rng([seed, _stable_int(column)])
    groups = _groups(manifest)

    # One person never sits in both A and B: a person with and without the attribute is
    # assigned to one domain by a seeded coin, and only their images of that domain are kept.
    domain_of_group = {}
    for g, members in groups.items():
        has = labels[members]
        if has.all() or not has.any():
            domain_of_group[g] = "B" if has.all() else "A"
        else:
            domain_of_group[g] = "B" if rng.random() < 0.5 else "A"

    partition_of_group = _assign_partitions(manifest, groups, rng, test_fraction, use_source_partition)
    out = {"train": {"A": [], "B": []}, "test": {"A": [], "B": []}}
    dropped = {"no_landmarks": 0, "identity_in_both": 0}
    for g, members in groups.items():
        domain = domain_of_group[g]
        part = partition_of_group[g]
        for i in members:
            if not valid[i]:
                dropped["no_landmarks"] += 1
            elif labels[i] != (domain == "B"):
                dropped["identity_in_both"] += 1
            else:
                out[part][domain].append(int(i))
    for part in out:
        for domain in out[part]:
            idx = np.array(sorted(out[part][domain]), dtype=np.int64)
            if max_per_domain and len(idx) > max_per_domain:
                idx = np.sort(rng.choice(idx, size=max_per_domain, replace=False))
            out[part][domain] = idx.tolist()
    for domain, name in (("A", "without"), ("B", "with")):
        if not out["train"][domain]:
            raise SplitError(
                f"split for '{attribute}': no training images {name} the attribute "
                f"(of {n} images, {int(labels.sum())} have it, {int((~valid).sum())} lack landmarks)"
            )
    counts = {f"{p}_{d}": len(out[p][d]) for p in out for d in out[p]}
    counts.update({f"dropped_{k}": v for k, v in dropped.items()})
    return {"attribute": attribute, "column": column, "seed": seed, "train": out["train"], "test": out["test"], "counts": counts}


def test_mask(manifest: Manifest, seed: int, test_fraction: float, use_source_partition: bool = True) -> np.ndarray:
    """(N,) bool, True for held-out images: the source partition or a seeded split by identity.

    Used for datasets-wide models (the attribute classifier) that need one train/test
    partition consistent with the per-attribute splits' notion of a person.
    """
    rng = np.random.default_rng([seed, _stable_int("__dataset__")])
    groups = _groups(manifest)
    part = _assign_partitions(manifest, groups, rng, test_fraction, use_source_partition)
    mask = np.zeros(len(manifest), dtype=bool)
    for g, members in groups.items():
        mask[members] = part[g] == "test"
    return mask


def _groups(manifest: Manifest) -> dict[str, list[int]]:
    # Images with an unknown identity form a group of their own.
    groups: dict[str, list[int]] = {}
    for i, ident in enumerate(manifest.identities):
        groups.setdefault(ident if ident else f"__image_{i}", []).append(i)
    return groups


def _assign_partitions(
    manifest: Manifest, groups: dict[str, list[int]], rng: np.random.Generator, test_fraction: float, use_source: bool
) -> dict[str, str]:
    has_source = use_source and all(p in {"train", "val", "test"} for p in manifest.partitions)
    if has_source:
        # The source's own partition (CelebA: 0 train, 1 val, 2 test); val is kept for training.
        return {g: ("test" if manifest.partitions[m[0]] == "test" else "train") for g, m in groups.items()}
    names = sorted(groups)
    order = rng.permutation(len(names))
    n_test = int(round(test_fraction * len(names)))
    test = {names[j] for j in order[:n_test]}
    return {g: ("test" if g in test else "train") for g in names}


def _stable_int(text: str) -> int:
    # Python's hash() is salted per process; splits must not depend on it.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def split_fingerprint(split_path: str | Path) -> str:
    """md5 of the split file: the data version tagged on runs and registered models."""
    return hashlib.md5(Path(split_path).read_bytes()).hexdigest()


def domain_indices(split: dict, partition: str) -> tuple[Sequence[int], Sequence[int]]:
    """(A indices, B indices) of one partition of a split dict."""
    return split[partition]["A"], split[partition]["B"]
