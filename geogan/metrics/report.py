"""The evaluation's metrics document, and its tables: each metric with its 95% interval and count, the baselines beside the model."""

from __future__ import annotations

import math
from typing import Any, Mapping

from geogan.metrics.registry import find, flat

METHODS = ("model", "copy_paste", "do_nothing")
# The figures a table shows, in order (docs/metrics.md explains each).
SHOWN = ("transfer_success", "judge_fp", "removal_success", "removal_standalone_success", "kid_a2b", "fid_a2b",
         "kid_b2a", "fid_b2a", "kid_b2a_standalone",
         "mask_in_region", "change_outside_region", "identity_kept", "identity_dist", "instance_fidelity",
         "landmark_err", "landmark_err_large_gap", "gt_psnr", "gt_l1_region")


def by_method(tracked: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Split tracking names (`kid_a2b_1000`, `copy_paste/kid_a2b_1000`) into {method: {name: value}}."""
    out: dict[str, dict[str, Any]] = {m: {} for m in METHODS}
    for key, value in tracked.items():
        method, _, name = key.rpartition("/")
        if (method or "model") in out:
            out[method or "model"][name] = value
    return {m: v for m, v in out.items() if v}


def _number(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.4g}"


def cell(metrics: Mapping[str, Any], name: str) -> tuple[str, str]:
    """(key with its count, "value [lo, hi]") of metric `name`, or ("", "-") when absent."""
    hit = find(metrics, name)
    if hit is None:
        return "", "-"
    key, value = hit
    lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
    text = _number(value)
    if lo is not None and hi is not None and all(math.isfinite(x) for x in (lo, hi)):
        text += f" [{_number(lo)}, {_number(hi)}]"
    if f"{key}_chance" in metrics:
        text += f" (chance {_number(metrics[f'{key}_chance'])})"
    if f"{key}_std" in metrics:
        text += f" ±{_number(metrics[f'{key}_std'])}"
    return key, text


def comparison_table(methods: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per metric (its name with the model's sample count), one column per method."""
    names = [m for m in METHODS if m in methods]
    rows = [["metric", *names]]
    for name in SHOWN:
        cells = [cell(methods[m], name) for m in names]
        if all(text == "-" for _, text in cells):
            continue
        label = next((key for key, _ in cells if key), name)
        rows.append([label, *(text for _, text in cells)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def evaluation_report(attribute: str, evalset: Mapping[str, Any], evalset_file: Any, judge: Any, judge_sha256: str,
                      inception: Any, results: Mapping[str, Mapping[str, Any]], train_steps: int) -> dict[str, Any]:
    """The metrics document of one evaluation: what was scored on what, by whom, and every method's figures."""
    name = judge.attributes[judge.index(attribute)]
    return {
        "attribute": attribute, "train_steps": train_steps,
        "eval_set": {"file": str(evalset_file), "digest": evalset["digest"], "sources": len(evalset["sources"]),
                     "references": len(evalset["references"]), "pairs": evalset["num_pairs"],
                     "population": evalset["population"] or "everyone"},
        "judge": {"sha256": judge_sha256, "threshold": judge.threshold(attribute),
                  "test": {k.split("/", 1)[1]: v for k, v in judge.meta.get("test", {}).items() if k.startswith(f"{name}/")}},
        "fid_weights": inception.name if inception is not None else None,
        **{method: flat(estimates) for method, estimates in results.items()},
    }
