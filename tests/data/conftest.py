"""Generators for small datasets in the official on-disk formats, and a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import pickle
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def cifar_pixels(offset: int, count: int) -> np.ndarray:
    """Rows (count, 3072) uint8 whose value at (k, c*1024 + h*32 + w) is (c*1024+h*32+w + offset+k) % 256."""
    return ((np.arange(3072)[None, :] + np.arange(offset, offset + count)[:, None]) % 256).astype(
        np.uint8
    )


def _dump(path: Path, content: dict) -> None:
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=2)


def write_cifar10(parent: Path, per_batch: int = 4, test_size: int = 3) -> Path:
    """A cifar-10-batches-py folder: 5 train batches of ``per_batch``, a test batch, batches.meta."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for batch in range(5):
        offset = batch * per_batch
        labels = [(offset + k) % 10 for k in range(per_batch)]
        _dump(
            folder / f"data_batch_{batch + 1}",
            {"data": cifar_pixels(offset, per_batch), "labels": labels},
        )
    _dump(
        folder / "test_batch",
        {"data": cifar_pixels(1000, test_size), "labels": [9 - k for k in range(test_size)]},
    )
    _dump(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch})
    return folder


def write_cifar100(parent: Path, train_size: int = 6, test_size: int = 2) -> Path:
    """A cifar-100-python folder with train, test (fine and coarse labels) and meta."""
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, size, first in (("train", train_size, 0), ("test", test_size, 500)):
        fine = [(first + 17 * k) % 100 for k in range(size)]
        _dump(
            folder / name,
            {
                "data": cifar_pixels(first, size),
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
            },
        )
    _dump(
        folder / "meta",
        {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"c{i}" for i in range(20)],
        },
    )
    return folder


def make_tar_gz(folder: Path, archive: Path) -> Path:
    """Pack ``folder`` as a .tar.gz whose top entry is the folder's name."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def solid_image(
    path: Path, color: tuple[int, int, int], size: tuple[int, int], mode: str = "RGB"
) -> None:
    """Write a one-colour image (format from the extension)."""
    image = Image.new("RGB", size, color)
    if mode == "L":
        image = image.convert("L")
    image.save(path)


def write_image_tree(
    root: Path, classes: int = 3, train: int = 6, val: int = 2, seed: int = 0
) -> Path:
    """root/{train,val}/class<k>/<i>.{jpg,png}: RGB images of random sizes 40-89 px, per-class tint."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                height, width = (int(v) for v in rng.integers(40, 90, 2))
                pixels = rng.random((height, width, 3)) * 80 + label * 170 / max(classes - 1, 1)
                suffix = "jpg" if i % 2 == 0 else "png"
                Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.{suffix}")
    return root


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder): a real HTTP server on 127.0.0.1 in a thread."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def formats() -> SimpleNamespace:
    """The generators above, for test modules (importlib mode cannot import conftest)."""
    return SimpleNamespace(
        cifar_pixels=cifar_pixels,
        write_cifar10=write_cifar10,
        write_cifar100=write_cifar100,
        make_tar_gz=make_tar_gz,
        solid_image=solid_image,
        write_image_tree=write_image_tree,
        cifar10_names=CIFAR10_NAMES,
    )
