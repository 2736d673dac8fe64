"""Carry a compile cache from one GPU call to the next: pack a folder into numbered parts that fit what a call
brings back (at most 8 files of 16 MiB), and unpack them where the next call finds them.

A compile longer than one call (e.g. `bench_train --inductor coordinate_descent_tuning=True`, NOTES run 25) keeps
the kernels it finished in Inductor's cache folder; the next call, given those parts (`carry`), goes on from there.

    python -m benchmarks.cache_parts pack /tmp/cc $OUT --name inductor      # -> $OUT/inductor.tgz.000, .001, ...
    python -m benchmarks.cache_parts unpack .device_cache/parts /tmp/cc --name inductor
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

MIB = 2**20
MAX_PARTS = 8  # what one call brings back


def pack(src: Path, out_dir: Path, name: str, part_bytes: int = 15 * MIB, max_parts: int = MAX_PARTS) -> list[Path]:
    """Write `src` as a gzipped tar in parts `out_dir/<name>.tgz.NNN` of at most `part_bytes`; returns the parts.

    Raises ValueError, naming the sizes, when it would take more than `max_parts` parts (nothing is written then).
    """
    if not src.is_dir():
        raise ValueError(f"cache_parts: {src} is not a folder")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src, arcname=".")
    data = buffer.getvalue()
    n_parts = max(1, -(-len(data) // part_bytes))
    if n_parts > max_parts:
        raise ValueError(f"cache_parts: {src} packs to {len(data) / MIB:.1f} MiB, {n_parts} parts of "
                         f"{part_bytes / MIB:.0f} MiB; at most {max_parts} come back from a call")
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = [out_dir / f"{name}.tgz.{i:03d}" for i in range(n_parts)]
    for i, part in enumerate(parts):
        part.write_bytes(data[i * part_bytes:(i + 1) * part_bytes])
    return parts


def unpack(parts_dir: Path, dest: Path, name: str) -> int:
    """Join `parts_dir/<name>.tgz.NNN` in order and extract into `dest`; returns the number of files extracted."""
    parts = sorted(parts_dir.glob(f"{name}.tgz.[0-9][0-9][0-9]"))
    if not parts:
        raise ValueError(f"cache_parts: no {name}.tgz.NNN parts in {parts_dir}")
    expected = [f"{name}.tgz.{i:03d}" for i in range(len(parts))]
    if [p.name for p in parts] != expected:
        raise ValueError(f"cache_parts: parts missing in {parts_dir}: found {[p.name for p in parts]}")
    data = b"".join(p.read_bytes() for p in parts)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]  # no links or devices
        tar.extractall(dest, members=members, filter="data")
    return sum(1 for m in members if m.isfile())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["pack", "unpack"])
    p.add_argument("src", type=Path, help="pack: the cache folder; unpack: the folder holding the parts")
    p.add_argument("dest", type=Path, help="pack: where the parts go; unpack: the cache folder to fill")
    p.add_argument("--name", default="cache")
    p.add_argument("--part-mib", type=float, default=15.0)
    args = p.parse_args(argv)
    if args.action == "pack":
        parts = pack(args.src, args.dest, args.name, int(args.part_mib * MIB))
        print(f"cache_parts: {args.src} -> {len(parts)} part(s), {sum(q.stat().st_size for q in parts) / MIB:.1f} MiB")
    else:
        print(f"cache_parts: {unpack(args.src, args.dest, args.name)} files -> {args.dest}")


if __name__ == "__main__":
    main()
