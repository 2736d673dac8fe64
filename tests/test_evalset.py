"""The fixed evaluation set: test faces only, other people, drawn once, its digest stable and checked."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geogan.data.evalset import (check_judge_disjoint, draw_evalset, evalset_digest, pair_rows, read_evalset,
                                 write_evalset)
from geogan.data.split import Manifest, SplitError

# The digest of the evaluation set `_manifest()` gives with seed 0: it changes only when the draw does.
# If a deliberate change of the draw moves it, every earlier evaluation is on other pairs: update it on purpose.
PINNED_DIGEST = "a67947317d3fa5996c3f651cd2e1484c65bcb2c6db5ffe768ed30a8fbcbb1a98"


def _manifest(people: int = 40, per_person: int = 3) -> tuple[Manifest, np.ndarray]:
    """`people` people, `per_person` images each; every 4th person has a mustache, and every 4th from person 2
    has one in their first image only (CelebA has such people); every other person is male."""
    n = people * per_person
    person = np.repeat(np.arange(people), per_person)
    first = np.arange(n) % per_person == 0
    mustache = (person % 4 == 0) | ((person % 4 == 2) & first)
    labels = {"Mustache": mustache.astype(np.int8), "Male": (person % 2 == 0).astype(np.int8)}
    partitions = np.where(person < people // 2, "test", np.where(person < 3 * people // 4, "val", "train"))
    manifest = Manifest(images=tuple(f"{i:06d}.jpg" for i in range(n)), identities=tuple(str(p) for p in person),
                        partitions=tuple(partitions), labels=labels)
    return manifest, partitions


def _draw(manifest, partitions, **kw) -> dict:
    args = {"has_landmarks": np.ones(len(manifest), bool), "attribute": "mustache", "population": "",
            "n_sources": 8, "n_references": 4, "seed": 0, **kw}
    return draw_evalset(manifest, partitions, **args)


def test_sources_and_references_are_test_faces_of_other_people_one_per_person():
    manifest, partitions = _manifest()
    es = _draw(manifest, partitions)
    src, ref = es["sources"], es["references"]
    assert len(src) == 8 and len(ref) == 4 and es["num_pairs"] == 32 and es["column"] == "Mustache"
    assert all(partitions[f["row"]] == "test" for f in src + ref)
    assert all(manifest.labels["Mustache"][f["row"]] == 0 for f in src)
    assert all(manifest.labels["Mustache"][f["row"]] == 1 for f in ref)
    assert len({f["identity"] for f in src}) == 8 and len({f["identity"] for f in ref}) == 4
    assert not {f["identity"] for f in src} & {f["identity"] for f in ref}
    # Every person with a mustache as a reference (5 of them have it in one image only): of the 15 people
    # with faces without one, only the 10 who are nobody's reference may give the 12 sources.
    every = _draw(manifest, partitions, n_sources=12, n_references=10)
    assert not {f["identity"] for f in every["sources"]} & {f["identity"] for f in every["references"]}
    assert len({f["identity"] for f in every["sources"]}) == 10
    src_rows, ref_rows, src_pos, ref_pos = pair_rows(es)
    assert src_rows.tolist()[:5] == [src[0]["row"]] * 4 + [src[1]["row"]] and ref_pos.tolist()[:5] == [0, 1, 2, 3, 0]
    # FID's real sets: every test face with / without it
    assert sorted(es["real"]["with"]) == [i for i in range(len(manifest)) if partitions[i] == "test"
                                          and manifest.labels["Mustache"][i]]


def test_population_and_missing_landmarks_restrict_the_draw():
    manifest, partitions = _manifest()
    no_lm = np.ones(len(manifest), bool)
    no_lm[:3] = False  # person 0 (a mustache) has no landmarks
    es = _draw(manifest, partitions, population="Male", has_landmarks=no_lm, n_sources=5, n_references=4)
    assert all(manifest.labels["Male"][f["row"]] == 1 for f in es["sources"] + es["references"])
    assert not {0, 1, 2} & {f["row"] for f in es["references"]}
    with pytest.raises(SplitError, match=r"0 usable faces with it .* evaluate.references=1"):
        _draw(manifest, partitions, population="~Male", n_references=1)  # every mustache here is a man's


def test_too_few_test_faces_names_the_counts_and_the_parameters():
    manifest, partitions = _manifest()
    with pytest.raises(SplitError, match=r"20 usable faces with it and 38 without .* evaluate.sources=100"):
        _draw(manifest, partitions, n_sources=100)


def test_digest_is_stable_and_pins_the_pairs(tmp_path):
    manifest, partitions = _manifest()
    es = _draw(manifest, partitions)
    assert _draw(manifest, partitions)["digest"] == es["digest"]  # drawn again: the same set
    assert es["digest"] == PINNED_DIGEST, es["digest"]  # and the same on any machine and numpy version
    assert _draw(manifest, partitions, seed=1)["digest"] != es["digest"]
    path = tmp_path / "Mustache.json"
    write_evalset(path, es)
    assert read_evalset(path, manifest)["digest"] == es["digest"] == evalset_digest(json.loads(path.read_text()))
    edited = json.loads(path.read_text())
    edited["references"][0]["row"] = edited["sources"][0]["row"]
    path.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match="does not match its digest"):
        read_evalset(path)
    write_evalset(path, es)
    renamed = Manifest(manifest.images[:-1] + ("other.jpg",), manifest.identities, manifest.partitions, manifest.labels)
    reordered = Manifest(tuple(reversed(manifest.images)), manifest.identities, manifest.partitions, manifest.labels)
    read_evalset(path, renamed)  # rows the set does not use may change
    with pytest.raises(ValueError, match="run the evalset stage again"):
        read_evalset(path, reordered)


def test_judge_disjointness_is_checked_by_face_and_by_person():
    manifest, partitions = _manifest()
    es = _draw(manifest, partitions)
    train = np.flatnonzero(partitions == "train").tolist()
    check_judge_disjoint({"train": train, "val": np.flatnonzero(partitions == "val").tolist()}, es, manifest)
    with pytest.raises(ValueError, match="saw 1 faces"):
        check_judge_disjoint({"train": train + [es["references"][0]["row"]]}, es, manifest)
    # Another image of a source's person: no shared face, but a shared person.
    person = es["sources"][0]["identity"]
    other_image = next(i for i in range(len(manifest)) if manifest.identities[i] == person
                       and i != es["sources"][0]["row"])
    with pytest.raises(ValueError, match="0 faces .* and 1 people"):
        check_judge_disjoint({"train": train + [other_image]}, es, manifest)
