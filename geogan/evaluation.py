"""Run a method (a generator or a baseline) over the pairs of an evaluation set and collect what the metrics read.

Every output is rounded to uint8 (what a user saves) before anything measures it; what is measured per
pair goes into `Observations`, which `geogan.metrics.registry` turns into named estimates. Per-face work
on the untouched sources, references and real test images is done once per evaluation and shared by
every method (`EvalInputs.cache`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from geogan.config import RegionConfig
from geogan.data.dataset import to_model_landmarks
from geogan.landmarks.regions import attribute_box, box_crop, box_mask, crop_size
from geogan.metrics import geometry
from geogan.metrics.baselines import MethodOutputs

Method = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], MethodOutputs]
GRID_PAIRS = 8  # pairs kept as images for the results grid


@dataclass
class EvalInputs:
    """Everything a method is scored against: the pairs, the faces, and the measuring instruments.

    `judge`, `inception`, `embedder` and `faces` are None when not measured (no judge, FID off,
    no dlib, real faces); the metrics that need them are then left out.
    """

    images: np.ndarray  # (N, S, S, 3) uint8 (a memory map is fine)
    landmarks: np.ndarray  # (N, 68, 2) pixel coordinates
    src_rows: np.ndarray  # (P,) each pair's source row
    ref_rows: np.ndarray  # (P,) each pair's reference row
    src_pos: np.ndarray  # (P,) each pair's source position in 0..S-1
    ref_pos: np.ndarray  # (P,) each pair's reference position in 0..R-1
    attribute: str
    region: RegionConfig
    real_with: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # rows: real faces with it
    real_without: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # ... and without it
    judge: Any = None  # geogan.metrics.judge.Judge
    inception: Any = None  # geogan.metrics.inception.FeatureExtractor
    embedder: Any = None  # geogan.metrics.identity.FaceEmbedder
    faces: list | None = None  # synthetic faces (exact ground truth), in row order
    batch_size: int = 16
    device: torch.device = torch.device("cpu")
    progress: bool = True
    cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_pairs(cls, images: np.ndarray, landmarks: np.ndarray, src_rows: Sequence[int], ref_rows: Sequence[int],
                  attribute: str, region: RegionConfig, **kwargs: Any) -> "EvalInputs":
        """Inputs for any list of (source row, reference row) pairs; positions number the distinct rows."""
        src_rows, ref_rows = np.asarray(src_rows, np.int64), np.asarray(ref_rows, np.int64)
        _, src_pos = np.unique(src_rows, return_inverse=True)
        _, ref_pos = np.unique(ref_rows, return_inverse=True)
        return cls(images, landmarks, src_rows, ref_rows, src_pos.reshape(-1), ref_pos.reshape(-1), attribute, region,
                   **kwargs)

    @property
    def num_pairs(self) -> int:
        return len(self.src_rows)

    def unique_rows(self, which: str) -> np.ndarray:
        """The source (or reference) rows by position: (S,) or (R,)."""
        rows, pos = (self.src_rows, self.src_pos) if which == "src" else (self.ref_rows, self.ref_pos)
        out = np.empty(int(pos.max()) + 1, np.int64)
        out[pos] = rows
        return out


def generator_method(generator: torch.nn.Module, refine_weight: float) -> Method:
    """A trained generator as a method: a* = G(a, b), F(b) with the mask carried back into b's frame."""
    from geogan.model import remove, transfer
    from geogan.nets.flow import landmark_heatmaps, warp

    def run(x_a: torch.Tensor, x_b: torch.Tensor, lm_a: torch.Tensor, lm_b: torch.Tensor) -> MethodOutputs:
        heat_a = heat_b = None
        if generator.hparams.get("flow_extra_in", 0):
            heat_a, heat_b = landmark_heatmaps(lm_a, x_a.shape[-1]), landmark_heatmaps(lm_b, x_a.shape[-1])
        out = transfer(generator, x_a, x_b, refine_weight, heat_a, heat_b)
        x_removed = remove(generator, x_b, warp(out.mask, -out.flow_ab))  # as in training
        return MethodOutputs(x_warp=out.x_warp.float(), mask=out.mask.float(), x_out=out.x_out.float(),
                             flow=out.flow_ab.float(), x_removed=x_removed.float())

    def remove_standalone(x_b: torch.Tensor, lm_b: torch.Tensor) -> torch.Tensor:
        """F(b) with no source, as `geogan remove` runs it (the mask of G(b, b))."""
        heat_b = landmark_heatmaps(lm_b, x_b.shape[-1]) if generator.hparams.get("flow_extra_in", 0) else None
        return remove(generator, x_b, None, heat_b).float()

    run.remove_standalone = remove_standalone  # scored on every real test face with the attribute
    return run


def _quantise(x: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
    """An image batch rounded to uint8, as float in [-1, 1] and as uint8 NHWC."""
    u8 = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return u8.float() / 127.5 - 1, u8.permute(0, 2, 3, 1).cpu().numpy()


def _digests(images_u8: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(im.tobytes(), digest_size=16).digest() for im in images_u8]


def _features_once(images_u8: np.ndarray, store: dict[bytes, np.ndarray], fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """fn over the images, each distinct image computed once (do-nothing outputs repeat a source R times)."""
    keys = _digests(images_u8)
    new = [i for i, k in enumerate(keys) if k not in store]
    if new:
        for i, f in zip(new, fn(images_u8[new])):
            store[keys[i]] = f
    return np.stack([store[k] for k in keys])


def _stores(inputs: "EvalInputs") -> dict[str, dict[bytes, np.ndarray]]:
    """Per-image judge and Inception outputs of this evaluation, keyed by the image's digest."""
    return inputs.cache.setdefault("features", {"judge": {}, "inception": {}})


class _Collector:
    """Per-batch measurements of one method's outputs, gathered into per-pair arrays."""

    def __init__(self, inputs: EvalInputs):
        # Shared by every method and the real sets: do-nothing's a* are sources, every F(b) of it a reference.
        self.inputs, self.obs, self.store = inputs, {}, _stores(inputs)
        self.grid: dict[str, torch.Tensor] = {}

    def add(self, key: str, value: Any) -> None:
        self.obs.setdefault(key, []).append(np.asarray(value))

    def batch(self, sl: slice, x_a, x_b, lm_a, lm_b, out: MethodOutputs) -> None:
        inp = self.inputs
        x_out, out_u8 = _quantise(out.x_out)
        x_removed, removed_u8 = _quantise(out.x_removed)
        if not self.grid:
            self.grid = {"x_a": x_a, "x_b": x_b, "x_warp": out.x_warp, "mask": out.mask, "x_out": x_out,
                         "x_removed": x_removed, "flow": out.flow}
            self.grid = {k: v[:GRID_PAIRS].cpu() for k, v in self.grid.items()}
        if inp.judge is not None:
            self.add("p_out", _features_once(out_u8, self.store["judge"], self._judge))
            self.add("p_removed", _features_once(removed_u8, self.store["judge"], self._judge))
        if inp.inception is not None:
            self.add("f_out", _features_once(out_u8, self.store["inception"], self._inception))
            self.add("f_removed", _features_once(removed_u8, self.store["inception"], self._inception))
        if inp.embedder is not None:
            lm_px = inp.landmarks[inp.src_rows[sl]]  # a* is in a's geometry
            self.add("e_out", inp.embedder.embed(out_u8, lm_px))
        r = inp.region
        region = box_mask(attribute_box(lm_a, r.points, r.margin), x_a.shape[-1])  # (B, 1, S, S)
        self.add("mask_in_region", geometry.mask_in_region(out.mask, region).cpu())
        self.add("change_outside_region", geometry.change_outside(x_a, x_out, region).cpu())
        self.add("mask_area", out.mask.float().mean((1, 2, 3)).cpu())
        self.add("landmark_err", geometry.warped_landmark_error(out.flow, lm_a, lm_b).cpu())
        self.add("landmark_err_no_flow", geometry.unwarped_landmark_error(lm_a, lm_b).cpu())
        hw = crop_size(r.crop, x_a.shape[-1])
        self.add("crop_out", box_crop(x_out, attribute_box(lm_a, r.points, r.margin), hw).flatten(1).cpu())
        if inp.faces is not None:
            self._ground_truth(sl, x_a, x_out)

    def _judge(self, images_u8: np.ndarray) -> np.ndarray:
        from geogan.metrics.judge import predict_proba

        judge = self.inputs.judge
        return predict_proba(judge, images_u8)[:, judge.index(self.inputs.attribute)].numpy()

    def _inception(self, images_u8: np.ndarray) -> np.ndarray:
        from geogan.metrics.fid import extract_features

        return extract_features(self.inputs.inception, images_u8, self.inputs.batch_size)

    def _ground_truth(self, sl: slice, x_a: torch.Tensor, x_out: torch.Tensor) -> None:
        from geogan.data import synthetic

        inp, size = self.inputs, x_a.shape[-1]
        rendered = inp.cache.setdefault("ground_truth", {})  # the same for every method: rendered once per pair
        for a, b in zip(inp.src_rows[sl], inp.ref_rows[sl]):
            if (a, b) not in rendered:
                rendered[a, b] = (synthetic.render_transfer(inp.faces[a], inp.faces[b], inp.attribute, size),
                                  synthetic.attribute_mask_for(inp.faces[a], inp.faces[b], inp.attribute, size))
        gt, cover = (np.stack(v) for v in zip(*(rendered[a, b] for a, b in zip(inp.src_rows[sl], inp.ref_rows[sl]))))
        gt_t = torch.from_numpy(gt).permute(0, 3, 1, 2).float().to(x_out.device) / 127.5 - 1
        cover_t = torch.from_numpy(cover).float().unsqueeze(1).to(x_out.device)
        self.add("gt_psnr", geometry.psnr(x_out, gt_t).cpu())
        self.add("gt_l1_region", geometry.region_l1(x_out, gt_t, cover_t).cpu())

    def result(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(v) for k, v in self.obs.items()}


@torch.no_grad()
def collect(method: Method, inputs: EvalInputs, name: str = "method") -> tuple[dict[str, np.ndarray], dict]:
    """Run `method` over every pair of `inputs` in batches and measure its outputs.

    Returns:
        (observations: per-pair arrays plus the shared per-face ones, grid: the first pairs' images).
    """
    from tqdm import tqdm

    shared = shared_observations(inputs)  # first: the real sets' features serve the outputs that equal them
    col = _Collector(inputs)
    size = inputs.images.shape[1]
    starts = range(0, inputs.num_pairs, inputs.batch_size)
    for lo in tqdm(starts, desc=f"evaluate {name}", leave=False, disable=not inputs.progress):
        sl = slice(lo, min(inputs.num_pairs, lo + inputs.batch_size))
        x_a, lm_a = _faces(inputs, inputs.src_rows[sl], size)
        x_b, lm_b = _faces(inputs, inputs.ref_rows[sl], size)
        col.batch(sl, x_a, x_b, lm_a, lm_b, method(x_a, x_b, lm_a, lm_b))
    obs = col.result()
    obs.update(shared)
    standalone = getattr(method, "remove_standalone", None)
    if standalone is not None and len(inputs.real_with) and (inputs.judge is not None or inputs.inception is not None):
        obs.update(_standalone_removals(standalone, col, name))
    if "crop_out" in obs:
        obs["instance_hit"] = instance_hits(obs.pop("crop_out"), obs["crop_ref"], inputs.src_pos, inputs.ref_pos)
    if "e_out" in obs:
        obs["identity_dist"] = np.linalg.norm(obs["e_src"][inputs.src_pos] - obs.pop("e_out"), axis=1)
    return obs, col.grid


def _standalone_removals(remove_standalone: Callable, col: "_Collector", name: str) -> dict[str, np.ndarray]:
    """The judge's verdict on (and Inception features of) F(b) for every real test face with the attribute.

    F(b) depends on b alone here, so each face counts once: many more removals than the set's R references.
    """
    from tqdm import tqdm

    inp = col.inputs
    rows, size = np.sort(inp.real_with), inp.images.shape[1]
    p, f = [], []
    for lo in tqdm(range(0, len(rows), inp.batch_size), desc=f"remove {name}", leave=False, disable=not inp.progress):
        x_b, lm_b = _faces(inp, rows[lo:lo + inp.batch_size], size)
        _, u8 = _quantise(remove_standalone(x_b, lm_b))
        if inp.judge is not None:
            p.append(_features_once(u8, col.store["judge"], col._judge))
        if inp.inception is not None:
            f.append(_features_once(u8, col.store["inception"], col._inception))
    out = {"p_removed_standalone": np.concatenate(p)} if p else {}
    return {**out, **({"f_removed_standalone": np.concatenate(f)} if f else {})}


def evaluate(methods: dict[str, Method], inputs: EvalInputs, bootstrap: int = 1000, kid_subsets: int = 100,
             seed: int = 0) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, torch.Tensor]]]:
    """Score every method on the same pairs with the same bootstrap replicates.

    Returns:
        ({method: {metric key: Estimate}}, {method: images of its first pairs for the figure}).
    """
    from geogan.metrics.bootstrap import draw_resamples
    from geogan.metrics.registry import Context, compute

    n_src, n_ref = int(inputs.src_pos.max()) + 1, int(inputs.ref_pos.max()) + 1
    ctx = Context(inputs.src_pos, inputs.ref_pos, draw_resamples(n_src, n_ref, bootstrap, seed), kid_subsets, seed)
    results, grids = {}, {}
    for name, method in methods.items():
        obs, grids[name] = collect(method, inputs, name)
        results[name] = compute(obs, ctx)
    return results, grids


def _faces(inputs: EvalInputs, rows: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from geogan.model import to_tensor

    x = to_tensor(np.asarray(inputs.images[rows])).to(inputs.device)
    lm = to_model_landmarks(torch.from_numpy(np.asarray(inputs.landmarks[rows], np.float32)), size).to(inputs.device)
    return x, lm


def shared_observations(inputs: EvalInputs) -> dict[str, np.ndarray]:
    """Measurements of the untouched faces, the same for every method, computed once per evaluation."""
    if "shared" in inputs.cache:
        return inputs.cache["shared"]
    src, ref = inputs.unique_rows("src"), inputs.unique_rows("ref")
    out: dict[str, np.ndarray] = {}
    if inputs.judge is not None:
        from geogan.metrics.judge import predict_proba

        col = inputs.judge.index(inputs.attribute)
        out["p_src"] = predict_proba(inputs.judge, np.asarray(inputs.images[src]))[:, col].numpy()
        out["p_ref"] = predict_proba(inputs.judge, np.asarray(inputs.images[ref]))[:, col].numpy()
        out["threshold"] = np.float64(inputs.judge.threshold(inputs.attribute))
    if inputs.inception is not None:
        from geogan.metrics.fid import extract_features

        from tqdm import tqdm

        for key, rows in (("f_real_with", inputs.real_with), ("f_real_without", inputs.real_without)):
            with tqdm(total=len(rows), desc=f"Inception, real {key[7:]}", leave=False, disable=not inputs.progress) as bar:
                def features(u8: np.ndarray) -> np.ndarray:
                    return extract_features(inputs.inception, u8, inputs.batch_size, progress=lambda n: bar.update(n - bar.n))

                out[key] = _features_once(np.asarray(inputs.images[np.sort(rows)]), _stores(inputs)["inception"], features)
    if inputs.embedder is not None:
        out["e_src"] = inputs.embedder.embed(np.asarray(inputs.images[src]), np.asarray(inputs.landmarks[src]))
        e_ref = inputs.embedder.embed(np.asarray(inputs.images[ref]), np.asarray(inputs.landmarks[ref]))
        out["identity_dist_reference"] = np.linalg.norm(out["e_src"][inputs.src_pos] - e_ref[inputs.ref_pos], axis=1)
    size, r = inputs.images.shape[1], inputs.region
    x_ref, lm_ref = _faces(inputs, ref, size)
    out["crop_ref"] = box_crop(x_ref, attribute_box(lm_ref, r.points, r.margin), crop_size(r.crop, size)).flatten(1).cpu().numpy()
    inputs.cache["shared"] = out
    return out


def instance_hits(crop_out: np.ndarray, crop_ref: np.ndarray, src_pos: np.ndarray, ref_pos: np.ndarray) -> np.ndarray:
    """(P,) 1 where a*'s attribute crop is closest to its own reference's crop among that source's references.

    Crops are landmark-aligned (each face's region box resampled upright), compared by L2 in pixels.
    A pair whose distance ties with another reference's counts as a share of a hit.
    """
    hits = np.zeros(len(src_pos))
    for s in np.unique(src_pos):
        idx = np.flatnonzero(src_pos == s)
        refs = ref_pos[idx]
        d = ((crop_out[idx, None, :] - crop_ref[None, refs, :]) ** 2).sum(-1)  # (K pairs, K references)
        best = d == d.min(1, keepdims=True)
        hits[idx] = best[np.arange(len(idx)), np.arange(len(idx))] / best.sum(1)
    return hits


def results_grid_rows(grids: dict[str, dict[str, torch.Tensor]], n: int = GRID_PAIRS) -> list[tuple[str, torch.Tensor]]:
    """Rows for the results figure: a, b, then each method's a* (and the model's b', m, F(b), flow)."""
    from geogan.visualize import flow_to_rgb

    first = next(iter(grids.values()))
    rows = [("source a", first["x_a"][:n]), ("ref b", first["x_b"][:n])]
    for name, g in grids.items():
        if name == "model":
            rows += [("warped b'", g["x_warp"][:n]), ("mask m", g["mask"][:n] * 2 - 1), ("a*", g["x_out"][:n]),
                     ("F(b)", g["x_removed"][:n]), ("flow", flow_to_rgb(g["flow"][:n]))]
        else:
            rows.append((f"{name} a*", g["x_out"][:n]))
    return rows


def history_for_plots(history_file) -> list[dict[str, float]]:
    """The training history as DVC plot records (one per logged step)."""
    import json
    from pathlib import Path

    path = Path(history_file)
    return json.loads(path.read_text()) if path.is_file() else []


def cross_pairs(sources: Sequence[int], references: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Every source with every reference, source-major: (source rows, reference rows)."""
    return np.repeat(np.asarray(sources), len(references)), np.tile(np.asarray(references), len(sources))


_NO_REGION = RegionConfig(points=(), margin=(0.0, 0.0), crop=(0.25, 0.5))  # figures score nothing in a region


@torch.no_grad()
def run_pairs(method: Method, images: np.ndarray, landmarks: np.ndarray, src_rows: np.ndarray, ref_rows: np.ndarray,
              batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """All of a method's outputs on a few pairs, on the CPU (for figures): x_a, x_b and MethodOutputs' fields."""
    inputs = EvalInputs.for_pairs(images, landmarks, src_rows, ref_rows, "", _NO_REGION, device=device)
    keep: dict[str, list[torch.Tensor]] = {}
    for lo in range(0, len(src_rows), batch_size):
        sl = slice(lo, lo + batch_size)
        x_a, lm_a = _faces(inputs, inputs.src_rows[sl], images.shape[1])
        x_b, lm_b = _faces(inputs, inputs.ref_rows[sl], images.shape[1])
        out = method(x_a, x_b, lm_a, lm_b)
        for k, v in {"x_a": x_a, "x_b": x_b, **vars(out)}.items():
            keep.setdefault(k, []).append(v.float().cpu())
    return {k: torch.cat(v) for k, v in keep.items()}
