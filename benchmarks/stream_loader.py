"""Throughput of the streaming loader: images/s decoding and transforming a generated JPEG tree.

Writes ``--images`` JPEGs of ImageNet's typical size (500x375, quality 90, smooth random content)
into a temporary class-folder tree, then times full epochs of ``StreamSet.batches`` for training
(RandomResizedCrop + flip) and evaluation (resize + centre crop) at ``--size`` with each worker
count of ``--workers`` (median of ``--rounds`` epochs, the first epoch of each setting discarded
as warm-up). Batches stay on the CPU (decode and transform cost only, no model). With 0 workers
it also reports the process's CPU milliseconds per image, which a loaded machine inflates less
than wall time.

    python benchmarks/stream_loader.py                          # 256 images, 224 px, workers 0 2
    python benchmarks/stream_loader.py --images 1024 --workers 0 2 4 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sakd.data import open_stream


def write_tree(root: Path, images: int, classes: int, width: int, height: int) -> None:
    """``images`` JPEGs spread over ``classes`` folders of train/ (val/ gets a copy of the list)."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (images, height // 25, width // 25, 3), dtype=np.uint8)
    for i in range(images):
        image = Image.fromarray(coarse[i]).resize((width, height), Image.Resampling.BICUBIC)
        for split in ("train", "val"):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            if split == "train":
                image.save(folder / f"{i}.JPEG", quality=90)
            else:
                (folder / f"{i}.JPEG").symlink_to(root / "train" / f"c{i % classes}" / f"{i}.JPEG")


def time_epoch(source, batch_size: int, train: bool, epoch: int) -> tuple[float, float]:
    """(images per wall second, CPU milliseconds of this process per image) of one epoch."""
    start, cpu_start = time.perf_counter(), time.process_time()
    seen = 0
    for images, _, _ in source.batches(batch_size, train=train, seed=0, epoch=epoch):
        seen += images.shape[0]
    return seen / (time.perf_counter() - start), 1000 * (time.process_time() - cpu_start) / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, args.images, classes=8, width=500, height=375)
        for workers in args.workers:
            for train in (True, False):
                source = open_stream(
                    "folder", str(root), train, image_size=args.size, workers=workers
                )
                time_epoch(source, args.batch_size, train, epoch=0)  # warm-up (page cache, forks)
                timings = [
                    time_epoch(source, args.batch_size, train, epoch=r + 1)
                    for r in range(args.rounds)
                ]
                row = {
                    "workers": workers,
                    "split": "train" if train else "eval",
                    "images_per_sec": round(statistics.median(t[0] for t in timings), 1),
                }
                if workers == 0:  # all the work is in this process: its CPU time per image
                    row["cpu_ms_per_image"] = round(statistics.median(t[1] for t in timings), 2)
                results.append(row)
                print(json.dumps(row), flush=True)
    report = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "images": args.images,
        "source_size": "500x375 JPEG q90",
        "size": args.size,
        "batch_size": args.batch_size,
        "results": results,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
