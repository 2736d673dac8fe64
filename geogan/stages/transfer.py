"""`geogan transfer`: put the reference's attribute instance onto the source face, one pair or many.

    geogan transfer --model models:/geogan-Mustache@champion --source a.jpg --reference b.jpg --out out.png
    geogan transfer --model models:/geogan-Mustache@champion --sources faces/ --references refs/ --out results/ --sheet sheet.jpg

`--model`: models:/name@alias, models:/name/version, a run artifact URI, or a local folder/file holding
generator.pt. Faces are framed as the training images were; faceless photos are refused or skipped (docs/serving.md).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from geogan.data.faces import ALIGN_MODES, Face, FaceError, FacePreparer, heatmaps
from geogan.stages._common import StageError, exit_with, prog_name, run_main

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
SHEET_MAX = 40  # sources and references a contact sheet shows at most: beyond that no tile is legible


def resolve_generator_file(model: str) -> Path:
    """A local generator.pt for a path or an MLflow URI (downloaded through MLflow)."""
    local = Path(model)
    if local.is_file():
        return local
    if local.is_dir():
        found = sorted(local.rglob("generator.pt"))
        if found:
            return found[0]
        raise StageError(f"{local}: no generator.pt inside")
    if "://" in model or model.startswith("models:/"):
        import mlflow
        from mlflow.exceptions import MlflowException

        from geogan.registry import ModelNotFound, check_model_uri
        from geogan.tracking import checked_tracking_uri

        uri = checked_tracking_uri("sqlite:///mlflow/mlflow.db")
        try:
            if model.startswith("models:/"):
                check_model_uri(model, uri)
            mlflow.set_tracking_uri(uri)
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model))
        except ModelNotFound as e:
            raise StageError(str(e)) from None
        except MlflowException as e:
            raise StageError(f"{model}: {str(e.message).splitlines()[0]}") from None
        return _generator_in_model(folder, model)
    raise StageError(f"{model}: no such file, folder or model URI")


def _generator_in_model(folder: Path, model: str) -> Path:
    """The generator file of a downloaded MLflow model: its pyfunc artifact (any file name), else generator.pt."""
    import yaml

    mlmodel = folder / "MLmodel"
    if mlmodel.is_file():
        from geogan.serving import GENERATOR_ARTIFACT  # mlflow is loaded already: this is a downloaded model

        artifacts = (yaml.safe_load(mlmodel.read_text()).get("flavors", {}).get("python_function", {})
                     .get("artifacts", {}))
        path = artifacts.get(GENERATOR_ARTIFACT, {}).get("path")
        if path and (folder / path).is_file():
            return folder / path
    found = sorted(folder.rglob("generator.pt"))
    if not found:
        raise StageError(f"{model}: the model has no generator artifact")
    return found[0]


@dataclass(frozen=True)
class LoadedModel:
    """A generator ready for inference, and what preparing its inputs needs."""

    generator: Any
    meta: dict
    size: int
    refine_weight: float
    device: Any
    needs_landmarks: bool

    def run(self, faces_a: list[Face], faces_b: list[Face]) -> Any:
        """Transfer b onto a for lists of prepared faces; TransferOutputs on the CPU."""
        import torch

        from geogan.model import to_tensor, transfer

        def batch(faces):
            return to_tensor(np.stack([f.image for f in faces])).to(self.device)

        heat = [None, None]
        if self.needs_landmarks:  # trained with flow_inputs rgb+landmarks: the flow needs dlib's points
            heat = [heatmaps(f, self.size).to(self.device) for f in (faces_a, faces_b)]
        with torch.no_grad():
            o = transfer(self.generator, batch(faces_a), batch(faces_b), self.refine_weight, *heat)
        return dataclasses.replace(o, **{f.name: getattr(o, f.name).cpu() for f in dataclasses.fields(o)})


def load_model(model: str, device: str = "auto") -> LoadedModel:
    """The generator behind a path or MLflow URI, on `device` (auto: the first GPU when there is one)."""
    from geogan.model import inference_refine_weight, load_generator
    from geogan.training.distributed import resolve_device

    dev = resolve_device(device)
    generator, meta = load_generator(resolve_generator_file(model), map_location=dev)
    return LoadedModel(generator, meta, int(meta["resolution"]), inference_refine_weight(meta), dev,
                       bool(generator.hparams.get("flow_extra_in", 0)))


def preparer(loaded: LoadedModel, align: str) -> FacePreparer:
    return FacePreparer(loaded.size, align, landmarks=loaded.needs_landmarks)


def _image(o: Any, faces_a: list[Face], faces_b: list[Face], i: int, grid: bool) -> np.ndarray:
    """Pair i of a transfer: a*, or with grid source | reference | warped b' | mask | a*."""
    from geogan.model import to_uint8

    out = [to_uint8(t[i:i + 1])[0] for t in ((o.x_warp, o.mask.expand(-1, 3, -1, -1) * 2 - 1, o.x_out) if grid
                                              else (o.x_out,))]
    return np.concatenate([faces_a[i].image, faces_b[i].image, *out], axis=1) if grid else out[0]


def run_transfer(model: str, source: Path, reference: Path, out: Path, grid: bool = False, align: str = "auto") -> dict:
    """Transfer one pair and write the result (or, with grid, source | reference | warped | mask | result)."""
    from geogan.visualize import save_png

    loaded = load_model(model)
    prep = preparer(loaded, align)
    try:
        a, b = prep.from_file(source), prep.from_file(reference)
    except FaceError as e:
        raise StageError(str(e)) from None
    save_png(out, _image(loaded.run([a], [b]), [a], [b], 0, grid))
    return {"out": str(out), "attribute": loaded.meta.get("attribute"), "resolution": loaded.size,
            "crops": [a.kind, b.kind]}


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder`, sorted by name."""
    if not folder.is_dir():
        raise StageError(f"{folder}: no such folder")
    found = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise StageError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


def read_pairs(csv_path: Path, sources: Path | None, references: Path | None) -> list[tuple[Path, Path]]:
    """(source, reference) paths from a CSV with columns source,reference; relative paths resolve against the folders."""
    try:
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise StageError(f"{csv_path}: cannot read the pairs CSV ({e})") from e
    if not rows or not {"source", "reference"} <= set(rows[0]):
        raise StageError(f"{csv_path}: needs a header with columns source,reference and at least one row")
    base_a, base_b = sources or csv_path.parent, references or csv_path.parent
    return [(base_a / r["source"].strip(), base_b / r["reference"].strip()) for r in rows]


def _prepare_all(prep: FacePreparer, paths: list[Path], progress: bool) -> tuple[dict[Path, Face], dict[Path, str]]:
    """Every distinct image framed once; the ones that cannot be used, each with its one-line reason."""
    from tqdm import tqdm

    faces, skipped = {}, {}
    for path in tqdm(list(dict.fromkeys(paths)), desc="faces", unit="img", disable=not progress, file=sys.stderr):
        try:
            faces[path] = prep.from_file(path)
        except FaceError as e:
            skipped[path] = str(e)
            tqdm.write(f"geogan transfer: skipped {e}", file=sys.stderr)
    return faces, skipped


def run_batch(model: str, pairs: list[tuple[Path, Path]], out: Path, sheet: Path | None = None, grid: bool = False,
              align: str = "auto", batch_size: int = 16, sheet_cell: int = 96, device: str = "auto",
              progress: bool = True) -> dict:
    """Transfer every pair in batches; one PNG per pair in `out`, an optional contact sheet.

    Images that cannot be read or framed are skipped with their pairs and counted; none usable is an error.
    """
    from tqdm import tqdm

    from geogan.visualize import contact_sheet, save_image, save_png

    if batch_size < 1:
        raise StageError(f"--batch-size must be >= 1, got {batch_size}")
    loaded = load_model(model, device)
    faces, skipped = _prepare_all(preparer(loaded, align), [p for pair in pairs for p in pair], progress)
    todo = [(a, b) for a, b in pairs if a in faces and b in faces]
    if not todo:
        raise StageError(f"no pair could be transferred: {len(skipped)} of {len(faces) + len(skipped)} images "
                         "unusable (reasons above)")
    names = {p: p.stem for p in faces}
    out.mkdir(parents=True, exist_ok=True)
    src_order, ref_order = list(dict.fromkeys(a for a, _ in todo)), list(dict.fromkeys(b for _, b in todo))
    on_sheet = {(a, b) for a, b in todo if a in src_order[:SHEET_MAX] and b in ref_order[:SHEET_MAX]}
    tiles: dict[tuple[int, int], np.ndarray] = {}
    with tqdm(total=len(todo), desc="pairs", unit="pair", disable=not progress, file=sys.stderr) as bar:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            fa, fb = [faces[a] for a, _ in chunk], [faces[b] for _, b in chunk]
            o = loaded.run(fa, fb)
            for i, (a, b) in enumerate(chunk):
                save_png(out / f"{names[a]}__{names[b]}.png", _image(o, fa, fb, i, grid))
                if sheet is not None and (a, b) in on_sheet:
                    tiles[src_order.index(a), ref_order.index(b)] = _image(o, fa, fb, i, False)
            bar.update(len(chunk))
    summary = {"out": str(out), "attribute": loaded.meta.get("attribute"), "device": str(loaded.device),
               "pairs_written": len(todo), "pairs_skipped": len(pairs) - len(todo), "images_skipped": len(skipped)}
    if sheet is not None:
        rows = [faces[a].image for a in src_order[:SHEET_MAX]]
        cols = [faces[b].image for b in ref_order[:SHEET_MAX]]
        save_image(sheet, contact_sheet(rows, cols, tiles, sheet_cell))
        summary["sheet"] = str(sheet)
    return summary


def _check_stems(pairs: list[tuple[Path, Path]]) -> None:
    """Outputs are named <source stem>__<reference stem>.png: two files of one stem would overwrite each other."""
    for side, paths in (("source", {a for a, _ in pairs}), ("reference", {b for _, b in pairs})):
        stems: dict[str, Path] = {}
        for p in sorted(paths):
            if p.stem in stems:
                raise StageError(f"{stems[p.stem]} and {p}: two {side}s named '{p.stem}' would write the same outputs")
            stems[p.stem] = p


def _batch_pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    if args.pairs is not None:
        pairs = read_pairs(args.pairs, args.sources, args.references)
    elif args.sources is None or args.references is None:
        raise StageError("many pairs need both --sources and --references (or --pairs CSV)")
    else:
        pairs = [(a, b) for a in list_images(args.sources) for b in list_images(args.references)]
    _check_stems(pairs)
    return pairs


def _run(args: argparse.Namespace) -> dict:
    single = args.source is not None or args.reference is not None
    many = args.sources is not None or args.references is not None or args.pairs is not None
    if single == many:
        raise StageError("give either --source and --reference (one pair) or --sources/--references/--pairs (many)")
    if single:
        if args.source is None or args.reference is None:
            raise StageError("one pair needs both --source and --reference")
        if args.sheet is not None:
            raise StageError("--sheet is for many pairs (--sources/--references or --pairs)")
        return run_transfer(args.model, args.source, args.reference, args.out, args.grid, args.align)
    return run_batch(args.model, _batch_pairs(args), args.out, args.sheet, args.grid, args.align, args.batch_size,
                     args.sheet_cell, args.device, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog=prog_name(), description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--source", type=Path, help="one pair: the face without the attribute")
    p.add_argument("--reference", type=Path, help="one pair: the face with the attribute instance to transfer")
    p.add_argument("--sources", type=Path, help="many pairs: a folder of faces without the attribute")
    p.add_argument("--references", type=Path, help="many pairs: a folder of faces with it")
    p.add_argument("--pairs", type=Path, help="many pairs: a CSV with columns source,reference instead of all x all")
    p.add_argument("--out", type=Path, required=True, help="the output PNG (one pair) or folder (many)")
    p.add_argument("--sheet", type=Path, help="many pairs: also a contact sheet (.jpg or .png), sources x references")
    p.add_argument("--sheet-cell", type=int, default=96, help="contact sheet tile size in px (default 96)")
    p.add_argument("--grid", action="store_true", help="write source | reference | warped | mask | result")
    p.add_argument("--align", choices=ALIGN_MODES, default="auto",
                   help="auto: frame as ingest does (dlib for photos neither CelebA-aligned nor square); "
                        "dlib: detect every face; none: never detect (default auto)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto (the first GPU when there is one), cpu, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    exit_with(run_main("transfer", lambda: _run(args)))


if __name__ == "__main__":
    main()
