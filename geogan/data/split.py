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


PARTITION_NAMES = ("train", "val", "test")


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
    val_fraction: float = 0.0,
    population: np.ndarray | None = None,
    match: Sequence[str] = (),
) -> dict:
    """Split the dataset into unpaired train/val/test A (without) and B (with) index lists.

    Args:
        manifest: the prepared dataset's manifest.
        attribute: the attribute name (matched case-insensitively).
        valid: (N,) bool, images usable for training (e.g. landmarks found).
        seed: makes the split deterministic.
        test_fraction, val_fraction: shares of identities (or images, where identities are
            unknown) held out, when the source has no partition of its own.
        max_per_domain: cap on each of A and B per partition (0 = none).
        use_source_partition: use the manifest's partition column when it has one.
        population: optional (N,) bool, who may enter either domain (e.g. men only).
        match: label columns on which A is subsampled, per partition, to B's joint distribution.
    Returns:
        The split as a JSON-ready dict (see module docstring); raises SplitError when a
        domain of the training partition is empty.
    """
    column = resolve_attribute(manifest, attribute)
    match_columns = [resolve_attribute(manifest, c, "the manifest (split.match)") for c in match]
    labels = manifest.labels[column].astype(bool)
    n = len(manifest)
    rng = np.random.default_rng([seed, _stable_int(column)])
    groups = _groups(manifest)
    in_population = np.ones(n, dtype=bool) if population is None else np.asarray(population, dtype=bool)

    # Partitions are the dataset's, not the attribute's: the same for every attribute and for the judge.
    partition_of_row = row_partitions(manifest, seed, test_fraction, val_fraction, use_source_partition)
    out, dropped = _assign(groups, labels, valid, in_population, partition_of_row)
    match_labels = [manifest.labels[c] for c in match_columns]
    dropped["unmatched"] = _subsample(out, match_labels, max_per_domain, rng)
    for domain, name in (("A", "without"), ("B", "with")):
        if not out["train"][domain]:
            raise SplitError(
                f"split for '{attribute}': no training images {name} the attribute "
                f"(of {n} images, {int(labels.sum())} have it, {int((~valid).sum())} lack landmarks, "
                f"{int((~in_population).sum())} are outside the population)"
            )
    counts = {f"{p}_{d}": len(out[p][d]) for p in out for d in out[p]}
    counts.update({f"dropped_{k}": v for k, v in dropped.items()})
    return {"attribute": attribute, "column": column, "seed": seed, "match": match_columns,
            **{p: out[p] for p in PARTITION_NAMES}, "counts": counts}


def _assign(groups: dict, labels: np.ndarray, valid: np.ndarray, in_population: np.ndarray,
            partition_of_row: list[str]) -> tuple[dict[str, dict[str, list[int]]], dict[str, int]]:
    """Each usable image into its partition's A or B, and the count of each reason an image was left out.

    One person never sits in both A and B: a person seen with the attribute belongs to B (the
    scarce domain), and their images without it are dropped (A has plenty).
    """
    out: dict[str, dict[str, list[int]]] = {p: {"A": [], "B": []} for p in PARTITION_NAMES}
    dropped = {"no_landmarks": 0, "identity_in_both": 0, "outside_population": 0, "unmatched": 0}
    for members in groups.values():
        domain = "B" if labels[members].any() else "A"
        for i in members:
            if not in_population[i]:
                dropped["outside_population"] += 1
            elif not valid[i]:
                dropped["no_landmarks"] += 1
            elif labels[i] != (domain == "B"):
                dropped["identity_in_both"] += 1
            else:
                out[partition_of_row[i]][domain].append(int(i))
    return out, dropped


def _subsample(out: dict[str, dict[str, list[int]]], match_labels: list[np.ndarray], max_per_domain: int,
               rng: np.random.Generator) -> int:
    """In place, per partition: A matched to B's distribution over `match_labels`, then each domain capped
    and sorted. Returns how many images of A the matching dropped."""
    unmatched = 0
    for part in out:
        if match_labels and out[part]["B"]:
            kept = _match_distribution(out[part]["A"], out[part]["B"], match_labels, rng)
            unmatched += len(out[part]["A"]) - len(kept)
            out[part]["A"] = kept
        for domain in out[part]:
            idx = np.array(sorted(out[part][domain]), dtype=np.int64)
            if max_per_domain and len(idx) > max_per_domain:
                idx = np.sort(rng.choice(idx, size=max_per_domain, replace=False))
            out[part][domain] = idx.tolist()
    return unmatched


def _match_distribution(a: list[int], b: list[int], columns: list[np.ndarray], rng: np.random.Generator) -> list[int]:
    """The largest subsample of A whose joint distribution over `columns` equals B's."""
    def cell(i: int) -> tuple[int, ...]:
        return tuple(int(c[i]) for c in columns)

    b_cells: dict[tuple[int, ...], int] = {}
    for i in b:
        b_cells[cell(i)] = b_cells.get(cell(i), 0) + 1
    a_by_cell: dict[tuple[int, ...], list[int]] = {}
    for i in a:
        a_by_cell.setdefault(cell(i), []).append(i)
    share = {c: k / len(b) for c, k in b_cells.items()}
    total = min(len(a_by_cell.get(c, [])) / p for c, p in share.items())
    kept: list[int] = []
    for c, p in sorted(share.items()):
        take = min(int(round(total * p)), len(a_by_cell.get(c, [])))
        if take:
            kept.extend(rng.choice(a_by_cell[c], size=take, replace=False).tolist())
    return sorted(kept)


def row_partitions(manifest: Manifest, seed: int, test_fraction: float, val_fraction: float = 0.0,
                   use_source_partition: bool = True) -> np.ndarray:
    """(N,) array of "train" / "val" / "test": the source's partition, or a seeded split by identity.

    Dataset-wide (seeded by `seed` alone), so every attribute's split and the judge agree on
    which people are held out.
    """
    rng = np.random.default_rng([seed, _stable_int("__dataset__")])
    groups = _groups(manifest)
    part = _assign_partitions(manifest, groups, rng, test_fraction, val_fraction, use_source_partition)
    out = np.empty(len(manifest), dtype=object)
    for g, members in groups.items():
        out[members] = part[g]
    return out


def test_mask(manifest: Manifest, seed: int, test_fraction: float, use_source_partition: bool = True) -> np.ndarray:
    """(N,) bool, True for test images (see `row_partitions`)."""
    return row_partitions(manifest, seed, test_fraction, 0.0, use_source_partition) == "test"


def _groups(manifest: Manifest) -> dict[str, list[int]]:
    # Images with an unknown identity form a group of their own.
    groups: dict[str, list[int]] = {}
    for i, ident in enumerate(manifest.identities):
        groups.setdefault(ident if ident else f"__image_{i}", []).append(i)
    return groups


def _assign_partitions(manifest: Manifest, groups: dict[str, list[int]], rng: np.random.Generator,
                       test_fraction: float, val_fraction: float, use_source: bool) -> dict[str, str]:
    has_source = use_source and all(p in {"train", "val", "test"} for p in manifest.partitions)
    if has_source:  # the source's own partition (CelebA: 0 train, 1 val, 2 test)
        return {g: manifest.partitions[m[0]] for g, m in groups.items()}
    names = sorted(groups)
    order = rng.permutation(len(names))
    n_test = int(round(test_fraction * len(names)))
    n_val = int(round(val_fraction * len(names)))
    test = {names[j] for j in order[:n_test]}
    val = {names[j] for j in order[n_test:n_test + n_val]}
    return {g: ("test" if g in test else "val" if g in val else "train") for g in names}


def _stable_int(text: str) -> int:
    # Python's hash() is salted per process; splits must not depend on it.
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def split_fingerprint(split_path: str | Path) -> str:
    """md5 of the split file: the data version tagged on runs and registered models."""
    return hashlib.md5(Path(split_path).read_bytes()).hexdigest()


def domain_indices(split: dict, partition: str) -> tuple[Sequence[int], Sequence[int]]:
    """(A indices, B indices) of one partition of a split dict."""
    return split[partition]["A"], split[partition]["B"]
