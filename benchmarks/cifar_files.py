"""Write random images in the official CIFAR python-pickle layout, for runs through ``sakd distill``.

    python benchmarks/cifar_files.py OUT --dataset cifar100 --train 50000 --test 10000

writes ``OUT/cifar-100-python/{train,test,meta}`` (or ``OUT/cifar-10-batches-py/...`` with
``--dataset cifar10``), so that ``data.name=cifar100 data.root=OUT`` reads them like the real
files. Pixels are uniform random bytes from ``--seed``; labels cycle over the classes.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np


def _dump(path: Path, content: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def write_cifar(root: Path, dataset: str, train: int, test: int, seed: int = 0) -> Path:
    """The extracted official folder of ``dataset`` (cifar10 / cifar100) with random images."""
    rng = np.random.default_rng(seed)
    classes = 10 if dataset == "cifar10" else 100
    folder = root / ("cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python")
    folder.mkdir(parents=True, exist_ok=True)

    def split(count: int) -> tuple[np.ndarray, list[int]]:
        pixels = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
        return pixels, [k % classes for k in range(count)]

    if dataset == "cifar10":
        bounds = np.linspace(0, train, 6).astype(int)
        for batch in range(5):
            pixels, labels = split(int(bounds[batch + 1] - bounds[batch]))
            _dump(folder / f"data_batch_{batch + 1}", {"data": pixels, "labels": labels})
        pixels, labels = split(test)
        _dump(folder / "test_batch", {"data": pixels, "labels": labels})
        _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
        return folder
    for name, count in (("train", train), ("test", test)):
        pixels, labels = split(count)
        coarse = [label // 5 for label in labels]
        _dump(folder / name, {"data": pixels, "fine_labels": labels, "coarse_labels": coarse})
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        },
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the data root to write into")
    parser.add_argument("--dataset", choices=("cifar10", "cifar100"), default="cifar100")
    parser.add_argument("--train", type=int, default=50000)
    parser.add_argument("--test", type=int, default=10000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = write_cifar(args.out, args.dataset, args.train, args.test, args.seed)
    print(f"wrote {args.train} train / {args.test} test images to {folder}")


if __name__ == "__main__":
    main()
