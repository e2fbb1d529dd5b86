"""CIFAR-10 and CIFAR-100 from the official python-pickle archives, with optional download."""

from __future__ import annotations

import codecs
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sakd.data.download import ArchiveSource, fetch_and_extract
from sakd.data.imageset import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    AugmentSpec,
    ImageSet,
)
from sakd.errors import SakdError

try:
    from numpy._core.multiarray import _reconstruct as numpy_reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct as numpy_reconstruct

# Official archives (https://www.cs.toronto.edu/~kriz/cifar.html); md5 as published there and in
# torchvision's datasets/cifar.py. Tests point these entries at a local server.
CIFAR_SOURCES: dict[str, ArchiveSource] = {
    "cifar10": ArchiveSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        filename="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
    ),
    "cifar100": ArchiveSource(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        filename="cifar-100-python.tar.gz",
        folder="cifar-100-python",
    ),
}

_LAYOUT = {
    "cifar10": {
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "names_key": "label_names",
        "labels_key": "labels",
        "num_classes": 10,
        "stats": (CIFAR10_MEAN, CIFAR10_STD),
    },
    "cifar100": {
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "names_key": "fine_label_names",
        "labels_key": "fine_labels",
        "num_classes": 100,
        "stats": (CIFAR100_MEAN, CIFAR100_STD),
    },
}

# The only globals a CIFAR pickle (python 2 original, or python 3 protocol 2) may reference.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): numpy_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that refuses every global but numpy arrays, so a planted file cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR file")
        return allowed


def _read_pickle(path: Path) -> dict[str, Any]:
    """Load one CIFAR pickle (latin1, str keys) with the restricted unpickler."""
    if not path.is_file():
        raise SakdError(
            f"{path} is missing: the CIFAR folder is incomplete; delete it and extract the official archive again"
        )
    try:
        with open(path, "rb") as handle:
            content = _CifarUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise SakdError(
            f"{path} is not a valid CIFAR pickle ({error}): replace it with the official file"
        ) from error
    except (
        KeyError,
        IndexError,
        OverflowError,
        MemoryError,
        RecursionError,
        ImportError,
        struct.error,
    ) as error:
        raise SakdError(
            f"{path} is not a valid CIFAR pickle ({type(error).__name__}): replace it with the "
            "official file"
        ) from None
    if not isinstance(content, dict):
        raise SakdError(f"{path} does not hold a dict: replace it with the official file")
    return content


def _find_folder(name: str, root: str | None, download: bool) -> Path:
    """The extracted CIFAR folder: ``root/<official folder>``, ``root`` itself, or a fresh download."""
    if root is None:
        raise SakdError(
            f"dataset {name!r} needs a data root: set the data root to a folder that holds it"
        )
    source = CIFAR_SOURCES[name]
    root_path = Path(root).expanduser()
    if (root_path / source.folder).is_dir():
        return root_path / source.folder
    if (root_path / _LAYOUT[name]["meta"]).is_file():
        return root_path
    return fetch_and_extract(source, root_path, download)


def load_cifar(name: str, root: str | None, train: bool, download: bool) -> ImageSet:
    """Load the train (50,000) or test (10,000) split of ``cifar10`` or ``cifar100``."""
    try:
        return _load_cifar(name, root, train, download)
    except (TypeError, ValueError, OverflowError, AttributeError) as error:
        # A pickle that loads but holds the wrong kinds of values (labels as text, data a dict...)
        raise SakdError(
            f"the {name} files hold malformed contents ({type(error).__name__}: "
            f"{str(error)[:80]}): replace them with the official archive's files"
        ) from None


def _load_cifar(name: str, root: str | None, train: bool, download: bool) -> ImageSet:
    layout = _LAYOUT[name]
    folder = _find_folder(name, root, download)
    meta = _read_pickle(folder / layout["meta"])
    class_names = [str(n) for n in meta.get(layout["names_key"], [])]
    if len(class_names) != layout["num_classes"]:
        raise SakdError(
            f"{folder / layout['meta']} lists {len(class_names)} class names under {layout['names_key']!r}, "
            f"expected {layout['num_classes']}: replace it with the official file"
        )
    images, labels = [], []
    for file_name in layout["train" if train else "test"]:
        batch = _read_pickle(folder / file_name)
        data, batch_labels = batch.get("data"), batch.get(layout["labels_key"])
        if data is None or batch_labels is None:
            raise SakdError(
                f"{folder / file_name} lacks 'data' or {layout['labels_key']!r}: is this {name}? "
                "replace it with the official file"
            )
        data = np.asarray(data, dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(batch_labels) != data.shape[0]:
            raise SakdError(
                f"{folder / file_name} holds data {data.shape} and {len(batch_labels)} labels, expected "
                "(N, 3072) and N: replace it with the official file"
            )
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    label_array = np.concatenate(labels)
    if label_array.size and not 0 <= label_array.min() <= label_array.max() < layout["num_classes"]:
        raise SakdError(
            f"{folder} has labels outside [0, {layout['num_classes']}): replace it with the official files"
        )
    mean, std = layout["stats"]
    return ImageSet(
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(label_array),
        num_classes=layout["num_classes"],
        class_names=class_names,
        mean=mean,
        std=std,
        augment=AugmentSpec(crop_padding=4, horizontal_flip=True),
    )
