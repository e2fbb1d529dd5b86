"""Datasets loaded by name."""

from __future__ import annotations

from collections.abc import Callable

from sakd.data.cifar import load_cifar
from sakd.data.embedded import load_embedded
from sakd.data.folder import load_folder
from sakd.data.idx import load_idx
from sakd.data.imageset import ImageSet
from sakd.data.tiny_imagenet import load_tiny_imagenet
from sakd.errors import SakdError

_FIXED_SIZE = {"cifar10": 32, "cifar100": 32, "fashion-mnist": 32, "mnist": 32}

_LOADERS: dict[str, Callable[[str | None, bool, bool, int | None], ImageSet]] = {
    "embedded": lambda root, train, download, size: load_embedded(train, size),
    "cifar10": lambda root, train, download, size: load_cifar("cifar10", root, train, download),
    "cifar100": lambda root, train, download, size: load_cifar("cifar100", root, train, download),
    "fashion-mnist": lambda root, train, download, size: load_idx(
        "fashion-mnist", root, train, download
    ),
    "mnist": lambda root, train, download, size: load_idx("mnist", root, train, download),
    "tiny-imagenet": lambda root, train, download, size: load_tiny_imagenet(
        root, train, download, size
    ),
    "folder": lambda root, train, download, size: load_folder(root, train, size),
    "imagenet": lambda root, train, download, size: _streamed_only("imagenet"),
}


def _streamed_only(name: str) -> ImageSet:
    raise SakdError(
        f"dataset {name!r} does not fit in memory: set data.loader=stream (the imagenet recipes do)"
    )


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`; the first one, ``embedded``, is the default."""
    return list(_LOADERS)


def load_dataset(
    name: str, root: str | None, train: bool, download: bool = False, image_size: int | None = None
) -> ImageSet:
    """Load the train (``train=True``) or evaluation split of dataset ``name`` from ``root``."""
    if name not in _LOADERS:
        raise SakdError(f"unknown dataset {name!r}: choose one of {', '.join(_LOADERS)}")
    fixed = _FIXED_SIZE.get(name)
    if fixed is not None and image_size not in (None, fixed):
        raise SakdError(
            f"{name} images are {fixed}x{fixed}; got image size {image_size}: leave it unset"
        )
    return _LOADERS[name](root, train, download, image_size)
