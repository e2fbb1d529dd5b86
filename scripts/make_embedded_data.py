"""Build src/sakd/data/embedded/fashion_mnist.npz from Debian's ``dataset-fashion-mnist`` package.

The embedded dataset is a class-balanced subset of Fashion-MNIST: the first 500 training and the
first 100 test images of every class, in the official file order, stored 28x28 grayscale uint8 and
interleaved round-robin over the classes (sample ``k * 10 + c`` is the ``k``-th image of class
``c``), so that every prefix of ``10 * k`` samples holds ``k`` images per class. The licence notice
is stored in the same file under the key ``notice``.

Usage (as root, from the repository root)::

    apt-get update && apt-get install -y dataset-fashion-mnist
    .venv/bin/python scripts/make_embedded_data.py
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np

SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
OUTPUT = (
    Path(__file__).resolve().parents[1] / "src" / "sakd" / "data" / "embedded" / "fashion_mnist.npz"
)
NUM_CLASSES = 10
TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 100
# sha256 of the decompressed IDX files of dataset-fashion-mnist 0.0~git20200523.55506a9-1.
SOURCE_SHA256 = {
    "train-images-idx3-ubyte.gz": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte.gz": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte.gz": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte.gz": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
# Shipped inside the npz (key "notice") because the MIT licence asks for it to travel with the data.
NOTICE = """Fashion-MNIST subset (500 train + 100 test images per class) selected by
scripts/make_embedded_data.py from Debian's dataset-fashion-mnist 0.0~git20200523.55506a9-1
(upstream https://github.com/zalandoresearch/fashion-mnist).

The MIT License (MIT)
Copyright (c) 2017 Zalando SE, https://tech.zalando.com

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES
OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def read_idx(path: Path, magic: int, header_bytes: int) -> np.ndarray:
    """Decompress an IDX file, check its magic number and digest, return its payload as uint8."""
    raw = gzip.decompress(path.read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SOURCE_SHA256[path.name]:
        raise SystemExit(
            f"{path}: sha256 {digest} differs from the recorded source; check the package"
        )
    if int.from_bytes(raw[:4], "big") != magic:
        raise SystemExit(f"{path}: not an IDX file with magic number {magic:#x}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes)


def read_split(source: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one official split."""
    images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz", 0x803, 16).reshape(-1, 28, 28)
    labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz", 0x801, 8)
    if len(images) != len(labels):
        raise SystemExit(f"{prefix}: {len(images)} images but {len(labels)} labels")
    return images, labels


def balanced_interleaved(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` samples of each class, interleaved round-robin (k*C + c)."""
    per_class_indices = [np.flatnonzero(labels == c)[:per_class] for c in range(NUM_CLASSES)]
    if any(len(indices) < per_class for indices in per_class_indices):
        raise SystemExit(f"a class has fewer than {per_class} samples")
    return np.stack(per_class_indices, axis=1).reshape(-1)


def main() -> None:
    """Read the Debian files, select the subset, write the compressed npz."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE_DIR)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()

    arrays = {}
    for split, prefix, per_class in (
        ("train", "train", TRAIN_PER_CLASS),
        ("test", "t10k", TEST_PER_CLASS),
    ):
        images, labels = read_split(args.source, prefix)
        chosen = balanced_interleaved(labels, per_class)
        arrays[f"{split}_images"] = np.ascontiguousarray(images[chosen])
        arrays[f"{split}_labels"] = np.ascontiguousarray(labels[chosen])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.output, notice=np.array(NOTICE), **arrays)
    for key, value in arrays.items():
        digest = hashlib.sha256(value.tobytes()).hexdigest()
        print(f"{key}: shape {value.shape} sha256 {digest}")
    print(f"wrote {args.output} ({args.output.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
