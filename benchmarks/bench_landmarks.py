"""Benchmark: batched FAN landmarks (geogan.landmarks.fan) vs face-alignment's stock per-image call.

Both run the same 2DFAN4 network with the same weights and the same known face box on the same
256 px images: the stock path is `FaceAlignment.get_landmarks_from_image(image, detected_faces=[box])`
(face-alignment 1.5.0, eager, fp32, one face per call: numpy/cv2 crop, forward, numba decode); ours
crops, runs and decodes whole batches on the device (fp32, then bf16 autocast + channels_last).
Without a 2DFAN4 checkpoint (offline machines) the weights are *random* (seeded), which is
fine for timing and for the agreement check between the two paths but says nothing about
landmark accuracy; the table says which weights were used. Images are random noise unless
--prepared points at a prepared dataset.

On a machine without face-alignment, pass a folder holding its wheel (pure Python; its
dependencies numba, scikit-image, opencv and scipy must be importable already):

    python -m pip download --no-deps -d .whl face-alignment==1.5.0       # where pip can reach PyPI
    python -m benchmarks.bench_landmarks --wheels .whl --out bench_landmarks.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def ensure_face_alignment(wheels: Path | None) -> None:
    """Import face_alignment, installing it from a wheel folder into a temp dir if asked."""
    try:
        import face_alignment  # noqa: F401
        return
    except ImportError as e:
        if wheels is None:
            sys.exit(f"bench_landmarks: face-alignment is not importable ({e}); pip install face-alignment==1.5.0 "
                     "or pass --wheels DIR holding face_alignment-1.5.0-py2.py3-none-any.whl")
    target = Path(tempfile.mkdtemp(prefix="fa_site_"))
    found = sorted(Path(wheels).glob("face_alignment-*.whl"))
    if not found:
        sys.exit(f"bench_landmarks: no face_alignment-*.whl in {wheels}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(target),
                    str(found[-1])], check=True)
    sys.path.insert(0, str(target))
    try:
        import face_alignment  # noqa: F401
    except ImportError as e:
        sys.exit(f"bench_landmarks: face-alignment installed from {found[-1]} but does not import ({e}); "
                 "it needs numba, scikit-image, opencv-python(-headless) and scipy")


def weights_file(arg: str, hub: Path) -> tuple[Path, str]:
    """The checkpoint to use and a description; random seeded FAN(4) weights when none exists."""
    from geogan.landmarks.base import LandmarkError
    from geogan.landmarks.fan import FAN_WEIGHTS_FILES, find_fan_weights, import_fan_class

    try:
        return find_fan_weights(arg), "2DFAN4 checkpoint"
    except LandmarkError:
        if arg:
            raise
    torch.manual_seed(0)
    path = hub / FAN_WEIGHTS_FILES[0]
    torch.save(import_fan_class()(4).state_dict(), path)
    return path, "RANDOM weights (no 2DFAN4 checkpoint here): timing only"


def load_images(prepared: Path | None, n: int, size: int) -> tuple[np.ndarray, str]:
    if prepared is None:
        return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8), "random noise"
    from PIL import Image

    src = np.load(prepared / "images.npy", mmap_mode="r")
    picks = [np.asarray(Image.fromarray(np.asarray(src[i % len(src)])).resize((size, size), Image.BICUBIC)) for i in range(n)]
    return np.stack(picks), f"{prepared} (resized to {size})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_stock(fa, images: np.ndarray, box: list[float], device: torch.device) -> tuple[float, np.ndarray]:
    for im in images[:3]:  # numba compiles its decoder on the first call
        fa.get_landmarks_from_image(im, detected_faces=[box])
    sync(device)
    start = time.perf_counter()
    out = [fa.get_landmarks_from_image(im, detected_faces=[box])[0] for im in images]
    sync(device)
    return time.perf_counter() - start, np.stack(out)


def time_ours(backend, images: np.ndarray, repeats: int, device: torch.device) -> tuple[float, np.ndarray]:
    backend.detect(images[: backend.batch_size])  # warm-up: cuDNN autotuning, allocator
    sync(device)
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = backend.detect(images)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, out


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512, help="images for the batched runs")
    p.add_argument("--stock-n", type=int, default=64, help="images for the (slow) stock per-image call")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=256, help="image size in pixels")
    p.add_argument("--repeats", type=int, default=3, help="batched runs; the best is reported")
    p.add_argument("--weights", default="", help="2DFAN4 checkpoint; default: torch hub cache, else random weights")
    p.add_argument("--prepared", type=Path, default=None, help="a prepared dataset folder to take images from")
    p.add_argument("--wheels", type=Path, default=None, help="folder with the face_alignment wheel, if not installed")
    p.add_argument("--flip", action="store_true", help="face-alignment's flip test-time augmentation, in both paths")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return p.parse_args(argv)


def stock_hub(arg: str) -> tuple[Path, str]:
    """Our checkpoint and its description, also put where face-alignment's constructor loads 2DFAN4 (no download)."""
    from geogan.landmarks.fan import load_fan

    hub = Path(tempfile.mkdtemp(prefix="fan_hub_"))
    (hub / "checkpoints").mkdir()
    weights, weights_note = weights_file(arg, hub / "checkpoints")
    stock_name = hub / "checkpoints" / "2DFAN4-11f355bf06.pth.tar"
    if weights != stock_name:  # face-alignment 1.5.0 reads a plain state dict under this name
        torch.save(load_fan(weights).state_dict(), stock_name)
    torch.hub.set_dir(str(hub))  # the stock constructor loads 2DFAN4 from here, no download
    return weights, weights_note


def time_paths(args: argparse.Namespace, images: np.ndarray, weights: Path,
               device: torch.device) -> tuple[list[tuple[str, int, float]], np.ndarray, np.ndarray]:
    """(method, images, seconds) of the stock call and our two batched paths; |ours - stock| and |fast - fp32| in px."""
    from face_alignment import FaceAlignment, LandmarksType

    from geogan.landmarks.fan import FanBackend, load_fan

    fa = FaceAlignment(LandmarksType.TWO_D, device=str(device), face_detector="folder", compile=False,
                       flip_input=args.flip)
    rows = []
    backend = FanBackend(load_fan(weights, device), device, args.batch_size, precision="fp32",
                         channels_last=False, flip_input=args.flip)
    box = [float(v) for v in backend.default_boxes(1, args.size, args.size)[0]]
    stock_n = min(args.stock_n, args.n)
    t_stock, stock_pts = time_stock(fa, images[:stock_n], box, device)
    rows.append(("face-alignment get_landmarks_from_image (per image, fp32)", stock_n, t_stock))
    t32, ours32 = time_ours(backend, images, args.repeats, device)
    rows.append((f"geogan FanBackend batched {args.batch_size} (fp32)", args.n, t32))
    fast = FanBackend(backend.net, device, args.batch_size, precision="auto", channels_last=True, flip_input=args.flip)
    tfast, ours_fast = time_ours(fast, images, args.repeats, device)
    mode = "bf16 + channels_last" if fast.bf16 else "fp32"
    rows.append((f"geogan FanBackend batched {args.batch_size} ({mode})", args.n, tfast))
    return rows, np.abs(ours32[:stock_n] - stock_pts), np.abs(ours_fast - ours32)


def print_table(summary: dict, diff_stock: np.ndarray, diff_bf16: np.ndarray) -> None:
    """The header, one line per method with its speed-up over the stock call, and the agreement lines."""
    print(f"\nFAN landmarks at {summary['size']} px on {summary['device']}; weights: {summary['weights']}; "
          f"images: {summary['images']}; flip TTA: {summary['flip']}; torch {summary['torch']}\n")
    print(f"{'method':<62} {'images':>7} {'seconds':>9} {'images/s':>10} {'speed-up':>9}")
    for r in summary["rows"]:
        print(f"{r['method']:<62} {r['images']:>7} {r['seconds']:>9.3f} {r['images_per_s']:>10.1f} {r['speedup']:>8.1f}x")
    print(f"\nagreement with the stock call (fp32, stock rounds to integers): median {np.median(diff_stock):.3f} px, "
          f"{100 * np.mean(diff_stock <= 1.0 + 1e-4):.1f}% of coordinates within 1 px")
    print(f"bf16 vs fp32 batched: median {np.median(diff_bf16):.3f} px, "
          f"{100 * np.mean(diff_bf16 <= 1.0):.1f}% of coordinates within 1 px (random weights: a weak check)")


def main(argv: list[str] | None = None) -> dict:
    """Time the stock and batched FAN paths, print the table and return (and optionally write) the results."""
    args = _parse_args(argv)
    ensure_face_alignment(args.wheels)
    from geogan.training.distributed import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    weights, weights_note = stock_hub(args.weights)
    images, image_note = load_images(args.prepared, args.n, args.size)
    rows, diff_stock, diff_bf16 = time_paths(args, images, weights, device)

    stock_rate = rows[0][1] / rows[0][2]
    results = [{"method": name, "images": n, "seconds": secs, "images_per_s": n / secs, "speedup": n / secs / stock_rate}
               for name, n, secs in rows]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    summary = {"size": args.size, "device": gpu, "weights": weights_note, "images": image_note, "flip": args.flip,
               "torch": torch.__version__, "rows": results,
               "agreement_stock_median_px": float(np.median(diff_stock)),
               "agreement_bf16_median_px": float(np.median(diff_bf16))}
    print_table(summary, diff_stock, diff_bf16)
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return summary

if __name__ == "__main__":
    main()
