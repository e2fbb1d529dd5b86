"""The dataset shipped inside the package: a class-balanced Fashion-MNIST subset (10 classes).

5,000 train / 1,000 test images, stored 28x28 grayscale in ``embedded/fashion_mnist.npz`` (built
by ``scripts/make_embedded_data.py``; provenance and licence in docs/data.md) and served as 32x32
RGB: a 2-px zero border, the gray channel copied three times (as the full ``fashion-mnist``).
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from sakd.data.idx import FASHION_CLASSES, SIZE, gray_to_rgb32
from sakd.data.imageset import AugmentSpec, ImageSet
from sakd.errors import SakdError

CLASS_NAMES = list(FASHION_CLASSES)
# Mean and std of the embedded train split as served (32x32 with the zero border), over [0, 1].
EMBEDDED_MEAN = (0.2200, 0.2200, 0.2200)
EMBEDDED_STD = (0.3331, 0.3331, 0.3331)


def load_embedded(train: bool, image_size: int | None) -> ImageSet:
    """Load the embedded train (5,000) or test (1,000) split as uint8 (N, 3, 32, 32)."""
    if image_size not in (None, SIZE):
        raise SakdError(
            f"the embedded dataset is {SIZE}x{SIZE}; got image size {image_size}: leave it unset"
        )
    split = "train" if train else "test"
    source = resources.files("sakd.data").joinpath("embedded/fashion_mnist.npz")
    with source.open("rb") as handle, np.load(handle) as arrays:
        gray = torch.from_numpy(arrays[f"{split}_images"])
        labels = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
    return ImageSet(
        images=gray_to_rgb32(gray),
        labels=labels,
        num_classes=len(CLASS_NAMES),
        class_names=list(CLASS_NAMES),
        mean=EMBEDDED_MEAN,
        std=EMBEDDED_STD,
        augment=AugmentSpec(crop_padding=4, horizontal_flip=True),
    )
