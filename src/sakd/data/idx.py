"""Fashion-MNIST and MNIST from their official IDX files (``*-ubyte.gz``), served as 32x32 RGB.

Each split is two gzip-compressed IDX files in ``root`` (or ``root/<name>``):
``train-images-idx3-ubyte.gz`` + ``train-labels-idx1-ubyte.gz`` (60,000) and ``t10k-…`` (10,000).
The 28x28 grayscale images get a 2-px zero border and the gray channel is copied three times,
exactly as the embedded subset is served (:func:`gray_to_rgb32`); samples keep the file order.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sakd.data.imageset import AugmentSpec, ImageSet
from sakd.errors import SakdError

SIZE = 32
IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


@dataclass(frozen=True)
class IdxDataset:
    """One dataset in the IDX format: its class names and the served split's statistics."""

    class_names: tuple[str, ...]
    mean: float
    std: float
    horizontal_flip: bool
    source: str


FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Mean and std over [0, 1] of the full train split as served (32x32 with the zero border), all
# channels alike. Fashion-MNIST: measured on the 60,000 images of dataset-fashion-mnist
# (tests/data/test_idx.py re-measures them when the files are installed). MNIST: derived from its
# usual 28x28 statistics (0.1307, 0.3081) for the 784/1024 of pixels that are not border.
DATASETS = {
    "fashion-mnist": IdxDataset(
        FASHION_CLASSES,
        0.2190,
        0.3318,
        True,
        "the Debian package dataset-fashion-mnist (/usr/share/datasets/fashion-mnist) or "
        "https://github.com/zalandoresearch/fashion-mnist",
    ),
    "mnist": IdxDataset(
        tuple(str(digit) for digit in range(10)),
        0.1001,
        0.2752,
        False,  # a mirrored digit is another glyph: random crops only
        "http://yann.lecun.com/exdb/mnist/ (or a mirror)",
    ),
}
IDX_FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def gray_to_rgb32(gray: torch.Tensor) -> torch.Tensor:
    """uint8 (N, h, w) grayscale, h, w <= 32 -> uint8 (N, 3, 32, 32): centred zero border, 3 copies."""
    top, left = (SIZE - gray.shape[-2]) // 2, (SIZE - gray.shape[-1]) // 2
    bottom, right = SIZE - gray.shape[-2] - top, SIZE - gray.shape[-1] - left
    padded = F.pad(gray, (left, right, top, bottom))
    return padded[:, None].expand(-1, 3, -1, -1).contiguous()


def read_idx(path: Path, magic: int, fix: str) -> tuple[tuple[int, ...], np.ndarray]:
    """The dimensions and the uint8 payload of one gzip-compressed IDX file; bad files are one line."""
    if not path.is_file():
        raise SakdError(f"{path} is missing: {fix}")
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as error:
        raise SakdError(f"{path} is not a complete gzip file ({error}): {fix}") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        found_text = f"{found:#010x}" if found is not None else "nothing"
        raise SakdError(
            f"{path} is not an IDX file of {ndim} dimension(s) (magic number {found_text}, "
            f"expected {magic:#010x}): {fix}"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise SakdError(
            f"{path} holds {len(raw) - header} bytes of data for dimensions {dims} "
            f"({expected} expected): the file is truncated or corrupt; {fix}"
        )
    return dims, np.frombuffer(raw, dtype=np.uint8, offset=header)


def _find_folder(name: str, root: str | None, train: bool) -> Path:
    """``root/<name>`` when it holds the split's images file, else ``root`` itself."""
    if root is None:
        raise SakdError(
            f"dataset {name!r} needs a data root: set it to the folder holding the IDX files "
            f"(from {DATASETS[name].source})"
        )
    root_path = Path(root).expanduser()
    nested = root_path / name
    return nested if (nested / IDX_FILES[train][0]).is_file() else root_path


def load_idx(name: str, root: str | None, train: bool, download: bool = False) -> ImageSet:
    """Load the train (60,000) or test (10,000) split of ``fashion-mnist`` or ``mnist``."""
    spec = DATASETS[name]
    folder = _find_folder(name, root, train)
    fix = f"put the four official IDX .gz files of {name} there (from {spec.source})"
    if download:
        fix += "; sakd does not download them"
    images_file, labels_file = (folder / file for file in IDX_FILES[train])
    dims, pixels = read_idx(images_file, IMAGES_MAGIC, fix)
    if dims[1:] != (28, 28):
        raise SakdError(f"{images_file} holds {dims[1]}x{dims[2]} images, expected 28x28: {fix}")
    (count,), labels = read_idx(labels_file, LABELS_MAGIC, fix)
    if count != dims[0]:
        raise SakdError(
            f"{images_file} holds {dims[0]} images but {labels_file} {count} labels: {fix}"
        )
    if count and int(labels.max()) >= len(spec.class_names):
        raise SakdError(
            f"{labels_file} has labels outside [0, {len(spec.class_names)}): is this {name}? {fix}"
        )
    gray = torch.from_numpy(pixels.reshape(dims).copy())
    return ImageSet(
        images=gray_to_rgb32(gray),
        labels=torch.from_numpy(labels.astype(np.int64)),
        num_classes=len(spec.class_names),
        class_names=list(spec.class_names),
        mean=(spec.mean,) * 3,
        std=(spec.std,) * 3,
        augment=AugmentSpec(crop_padding=4, horizontal_flip=spec.horizontal_flip),
    )
