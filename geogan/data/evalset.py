"""The fixed evaluation set of an attribute: test-partition sources x references, drawn once, pinned by a digest.

Sources are test faces without the attribute and references test faces with it, each drawn one
per person while people last, and no source shares a person with a reference. Every source is
paired with every reference (source-major), so every model and baseline is scored on the same
pairs and a bootstrap can resample sources and references separately. The file names each face
by row, image and identity, so a test can prove from files alone that the judge never saw one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from geogan.data.population import select
from geogan.data.split import Manifest, SplitError, _stable_int, resolve_attribute
from geogan.io import atomic_write_json, read_json

FORMAT = "geogan-evalset/1"


def _people(manifest: Manifest, rows: np.ndarray) -> list[str]:
    # An unknown identity is a person of its own (as in the split).
    return [manifest.identities[i] or f"__image_{i}" for i in rows]


def _one_per_person(manifest: Manifest, pool: np.ndarray, n: int, rng: np.random.Generator) -> list[int]:
    """n rows of a seeded shuffle of `pool`: one per person first, then further images of the same people."""
    order = pool[rng.permutation(len(pool))]
    seen: set[str] = set()
    first, rest = [], []
    for row, person in zip(order, _people(manifest, order)):
        (rest if person in seen else first).append(int(row))
        seen.add(person)
    return sorted((first + rest)[:n])


def draw_evalset(manifest: Manifest, partitions: np.ndarray, has_landmarks: np.ndarray, attribute: str,
                 population: str, n_sources: int, n_references: int, seed: int) -> dict[str, Any]:
    """Draw the evaluation set of one attribute.

    Args:
        manifest: the prepared dataset's manifest.
        partitions: (N,) "train"/"val"/"test" (`geogan.data.split.row_partitions`).
        has_landmarks: (N,) bool; faces without landmarks are never drawn.
        attribute: the attribute (its manifest column, case-insensitively).
        population: who may be drawn ("" = everyone), e.g. "Male" (`evaluate.populations`).
        n_sources, n_references: how many of each; every source meets every reference.
        seed: the draw's seed.
    Returns:
        The evaluation set as a JSON-ready dict with its `digest`.
    Raises:
        SplitError: too few test faces, naming the counts and the parameters.
    """
    column = resolve_attribute(manifest, attribute)
    has = manifest.labels[column].astype(bool)
    test = (np.asarray(partitions) == "test") & select(population, manifest.labels, len(manifest))
    usable = test & np.asarray(has_landmarks, bool)
    rng = np.random.default_rng([seed, _stable_int("evalset"), _stable_int(column)])
    pool_b = np.flatnonzero(usable & has)
    references = _one_per_person(manifest, pool_b, n_references, rng)
    taken = set(_people(manifest, np.asarray(references, np.int64)))
    pool_a = np.array([i for i in np.flatnonzero(usable & ~has) if _people(manifest, [i])[0] not in taken], np.int64)
    sources = _one_per_person(manifest, pool_a, n_sources, rng)
    if len(references) < n_references or len(sources) < n_sources:
        raise SplitError(f"evaluation set for '{attribute}': the test partition has {len(pool_b)} usable faces with it "
                         f"and {len(pool_a)} without it (population '{population or 'everyone'}', landmarks found); "
                         f"evaluate.sources={n_sources} and evaluate.references={n_references} ask for more")
    out = {"format": FORMAT, "attribute": attribute, "column": column, "seed": seed, "population": population,
           "partition": "test", "pairs": "every source with every reference, source-major",
           "sources": _faces(manifest, sources), "references": _faces(manifest, references),
           # FID/KID's real sets: every test face of the population with (without) the attribute
           "real": {"with": np.flatnonzero(test & has).tolist(), "without": np.flatnonzero(test & ~has).tolist()}}
    out["num_pairs"] = len(sources) * len(references)
    out["digest"] = evalset_digest(out)
    return out


def _faces(manifest: Manifest, rows: Sequence[int]) -> list[dict[str, Any]]:
    return [{"row": int(i), "image": manifest.images[i], "identity": manifest.identities[i]} for i in rows]


def evalset_digest(evalset: Mapping[str, Any]) -> str:
    """sha256 of what the set holds (attribute, column, the faces in order, the real rows), independent of formatting."""
    content = {k: evalset[k] for k in ("attribute", "column", "sources", "references", "real")}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_evalset(path: str | Path, evalset: Mapping[str, Any]) -> None:
    atomic_write_json(path, dict(evalset))


def read_evalset(path: str | Path, manifest: Manifest | None = None) -> dict[str, Any]:
    """Read an evaluation set, checking its digest (and, given the manifest, that its rows still hold its images)."""
    evalset = read_json(path)
    if not isinstance(evalset, dict) or evalset.get("format") != FORMAT:
        raise ValueError(f"{path}: not an evaluation set file (format {FORMAT!r}; run the evalset stage)")
    if evalset_digest(evalset) != evalset.get("digest"):
        raise ValueError(f"{path}: its content does not match its digest (edited by hand?); run the evalset stage again")
    if manifest is not None:
        for face in evalset["sources"] + evalset["references"]:
            i = face["row"]
            if i >= len(manifest) or manifest.images[i] != face["image"]:
                raise ValueError(f"{path}: row {i} is not {face['image']} in this prepared dataset; run the evalset stage again")
    return evalset


def pair_rows(evalset: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(source row, reference row, source position, reference position) of every pair, source-major."""
    n_s, n_r = len(evalset["sources"]), len(evalset["references"])
    src_pos, ref_pos = np.repeat(np.arange(n_s), n_r), np.tile(np.arange(n_r), n_s)
    src_rows = np.array([f["row"] for f in evalset["sources"]], np.int64)
    ref_rows = np.array([f["row"] for f in evalset["references"]], np.int64)
    return src_rows[src_pos], ref_rows[ref_pos], src_pos, ref_pos


def check_judge_disjoint(trained_on: Mapping[str, Sequence[int]], evalset: Mapping[str, Any], manifest: Manifest) -> None:
    """Raise ValueError if the judge trained or was selected on a face, or a person, of the evaluation set.

    Args:
        trained_on: the judge's {"train": rows, "val": rows} (`Judge.trained_on`); empty = unknown.
        evalset: an evaluation set.
        manifest: the prepared dataset's manifest (for the people of the judge's rows).
    """
    seen = np.unique(np.concatenate([np.asarray(v, np.int64) for v in trained_on.values()] or [np.empty(0, np.int64)]))
    faces = evalset["sources"] + evalset["references"]
    rows = {f["row"] for f in faces}
    shared_rows = sorted(rows & set(seen.tolist()))
    people = {f["identity"] for f in faces} - {""}
    shared_people = sorted(people & ({manifest.identities[i] for i in seen} - {""}))
    if shared_rows or shared_people:
        raise ValueError(f"the judge saw {len(shared_rows)} faces (e.g. rows {shared_rows[:3]}) and "
                         f"{len(shared_people)} people (e.g. {shared_people[:3]}) of the '{evalset['attribute']}' "
                         "evaluation set: it is not independent of what it scores")
