"""Fashion-MNIST and MNIST from IDX files: generated files here, the real ones when installed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from sakd.data import channel_stats, load_dataset
from sakd.data.embedded import load_embedded
from sakd.data.idx import DATASETS
from sakd.errors import SakdError

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX file of a uint8 array: magic 0x08<ndim>, big-endian dims, payload."""
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_split(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """``<prefix>-images-idx3-ubyte.gz`` and ``<prefix>-labels-idx1-ubyte.gz`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def write_idx_dataset(folder: Path, train: int = 30, test: int = 10, seed: int = 0) -> Path:
    """Random 28x28 images with labels ``k % 10`` for both splits, in the official file names."""
    rng = np.random.default_rng(seed)
    for prefix, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        write_idx_split(folder, prefix, images, np.arange(count, dtype=np.uint8) % 10)
    return folder


@pytest.mark.parametrize("name", ["fashion-mnist", "mnist"])
@pytest.mark.parametrize("train", [True, False])
def test_idx_split_is_padded_gray_copied_to_rgb(tmp_path, name, train):
    folder = write_idx_dataset(tmp_path)
    prefix, count = ("train", 30) if train else ("t10k", 10)
    raw = gzip.decompress((folder / f"{prefix}-images-idx3-ubyte.gz").read_bytes())
    gray = np.frombuffer(raw, np.uint8, offset=16).reshape(count, 28, 28)

    data = load_dataset(name, str(tmp_path), train=train)

    assert data.images.shape == (count, 3, 32, 32) and data.images.dtype == torch.uint8
    expected = np.zeros((count, 32, 32), np.uint8)
    expected[:, 2:30, 2:30] = gray
    for channel in range(3):
        assert np.array_equal(data.images[:, channel].numpy(), expected)
    assert data.labels.tolist() == [k % 10 for k in range(count)]
    assert data.num_classes == len(data.class_names) == 10
    assert data.augment.crop_padding == 4
    assert data.augment.horizontal_flip is (name == "fashion-mnist")  # no mirrored digits


def test_class_names_and_statistics():
    assert DATASETS["fashion-mnist"].class_names[0] == "T-shirt/top"
    assert DATASETS["mnist"].class_names == tuple("0123456789")
    # MNIST's served stats follow from its 28x28 ones (0.1307, 0.3081) and the 784/1024 share.
    share = 784 / 1024
    mean = 0.1307 * share
    std = ((0.3081**2 + 0.1307**2) * share - mean**2) ** 0.5
    assert DATASETS["mnist"].mean == pytest.approx(mean, abs=1e-4)
    assert DATASETS["mnist"].std == pytest.approx(std, abs=1e-4)


def test_root_may_hold_a_folder_named_after_the_dataset(tmp_path):
    write_idx_dataset(tmp_path / "fashion-mnist")
    assert len(load_dataset("fashion-mnist", str(tmp_path), train=True)) == 30
    assert len(load_dataset("fashion-mnist", str(tmp_path / "fashion-mnist"), train=False)) == 10


def _corrupt(folder: Path, file: str, content: bytes) -> None:
    (folder / file).write_bytes(content)


IMAGES = "train-images-idx3-ubyte.gz"
LABELS = "train-labels-idx1-ubyte.gz"


@pytest.mark.fault("data")
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / IMAGES).unlink(), f"{IMAGES} is missing: put the four official IDX"),
        (
            lambda f: _corrupt(f, IMAGES, (f / IMAGES).read_bytes()[:200]),
            f"{IMAGES} is not a complete gzip file",
        ),
        (lambda f: _corrupt(f, IMAGES, b"not gzip at all"), f"{IMAGES} is not a complete gzip"),
        (
            lambda f: _corrupt(f, IMAGES, gzip.compress(idx_bytes(np.zeros((3, 28), np.uint8)))),
            r"not an IDX file of 3 dimension\(s\) \(magic number 0x00000802, expected 0x00000803\)",
        ),
        (
            lambda f: _corrupt(f, LABELS, gzip.compress(idx_bytes(np.zeros((3, 28, 28))))),
            r"not an IDX file of 1 dimension\(s\) \(magic number 0x00000803",
        ),
        (
            lambda f: _corrupt(
                f, IMAGES, gzip.compress(idx_bytes(np.zeros((30, 28, 28), np.uint8))[:-5])
            ),
            r"holds 23515 bytes of data for dimensions \(30, 28, 28\) \(23520 expected\): the file is truncated",
        ),
        (
            lambda f: _corrupt(
                f, IMAGES, gzip.compress(idx_bytes(np.zeros((30, 32, 32), np.uint8)))
            ),
            "holds 32x32 images, expected 28x28",
        ),
        (
            lambda f: _corrupt(f, LABELS, gzip.compress(idx_bytes(np.zeros(29, np.uint8)))),
            "holds 30 images but .* 29 labels",
        ),
        (
            lambda f: _corrupt(f, LABELS, gzip.compress(idx_bytes(np.full(30, 10, np.uint8)))),
            r"has labels outside \[0, 10\): is this fashion-mnist\?",
        ),
    ],
    ids=[
        "missing",
        "truncated-gzip",
        "not-gzip",
        "wrong-magic",
        "labels-magic",
        "truncated-data",
        "size",
        "count",
        "labels",
    ],
)
def test_bad_files_are_one_line(tmp_path, damage, message):
    folder = write_idx_dataset(tmp_path)
    damage(folder)
    with pytest.raises(SakdError, match=message) as error:
        load_dataset("fashion-mnist", str(folder), train=True)
    assert "\n" not in str(error.value)


@pytest.mark.fault("data")
def test_missing_root_and_wrong_size_are_one_line(tmp_path):
    with pytest.raises(SakdError, match="'mnist' needs a data root"):
        load_dataset("mnist", None, train=True)
    with pytest.raises(SakdError, match="sakd does not download them"):
        load_dataset("mnist", str(tmp_path), train=True, download=True)
    with pytest.raises(SakdError, match="32x32"):
        load_dataset("fashion-mnist", str(tmp_path), train=True, image_size=28)


@pytest.mark.skipif(not DEBIAN_FOLDER.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_holds_the_embedded_subset_and_its_statistics():
    train = load_dataset("fashion-mnist", str(DEBIAN_FOLDER), train=True)
    test = load_dataset("fashion-mnist", str(DEBIAN_FOLDER), train=False)
    assert (len(train), len(test)) == (60000, 10000)
    mean, std = channel_stats(train.images)
    assert train.mean == pytest.approx(mean, abs=1e-4) and train.std == pytest.approx(std, abs=1e-4)
    # The embedded subset is the first 500 train / 100 test images of each class, interleaved.
    for full, embedded, per_class in (
        (train, load_embedded(True, None), 500),
        (test, load_embedded(False, None), 100),
    ):
        chosen = torch.stack(
            [torch.nonzero(full.labels == c).flatten()[:per_class] for c in range(10)], dim=1
        ).flatten()
        assert torch.equal(full.images[chosen], embedded.images)
        assert torch.equal(full.labels[chosen], embedded.labels)
