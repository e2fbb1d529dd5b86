"""Tiny-ImageNet-200 from its official folder layout (64x64 RGB, 200 classes, val = test split)."""

from __future__ import annotations

from pathlib import Path

import torch

from sakd.data.decoded import interleave, list_images, load_decoded
from sakd.data.imageset import CIFAR10_MEAN, CIFAR10_STD_AUTHORS, AugmentSpec, ImageSet
from sakd.errors import SakdError

FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
NATIVE_SIZE = 64
JPEG_EXTENSIONS = frozenset({".jpeg", ".jpg"})


def _find_folder(root: str | None, download: bool) -> Path:
    """``root/tiny-imagenet-200`` or ``root`` itself, whichever holds ``wnids.txt``."""
    if root is None:
        raise SakdError(
            "dataset 'tiny-imagenet' needs a data root: set it to the folder holding tiny-imagenet-200"
        )
    root_path = Path(root).expanduser()
    for candidate in (root_path / FOLDER, root_path):
        if (candidate / "wnids.txt").is_file():
            return candidate
    hint = " (sakd does not download it)" if download else ""
    raise SakdError(
        f"no wnids.txt in {root_path / FOLDER} or {root_path}{hint}: download {URL} and unzip it into {root_path}"
    )


def _class_names(folder: Path, wnids: list[str]) -> list[str]:
    """Human-readable names from the optional words.txt (``wnid<TAB>names``), else the wnids."""
    words_file = folder / "words.txt"
    words: dict[str, str] = {}
    if words_file.is_file():
        for line in words_file.read_text(encoding="utf-8").splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid.strip()] = names.strip()
    return [words.get(wnid) or wnid for wnid in wnids]


def _train_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """train/<wnid>/images/*.JPEG for each class, interleaved over classes."""
    groups = []
    for wnid in wnids:
        images_dir = folder / "train" / wnid / "images"
        if not images_dir.is_dir():
            raise SakdError(
                f"{images_dir} is missing: the Tiny-ImageNet train folder is incomplete; unzip it again"
            )
        files = list_images(images_dir, JPEG_EXTENSIONS)
        if not files:
            raise SakdError(
                f"{images_dir} holds no JPEG images: the class is empty; unzip Tiny-ImageNet again"
            )
        groups.append(files)
    return interleave(groups)


def _val_files(folder: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """val/images/* labelled by val/val_annotations.txt, sorted by file name."""
    annotations = folder / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise SakdError(
            f"{annotations} is missing: the Tiny-ImageNet val folder is incomplete; unzip it again"
        )
    label_of = {wnid: index for index, wnid in enumerate(wnids)}
    entries = []
    for line_number, line in enumerate(
        annotations.read_text(encoding="utf-8").splitlines(), start=1
    ):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in label_of:
            raise SakdError(
                f"{annotations}:{line_number} does not name a file and a wnid from wnids.txt: fix or replace the file"
            )
        entries.append((fields[0], label_of[fields[1]]))
    if not entries:
        raise SakdError(f"{annotations} lists no images: replace it with the official file")
    entries.sort()
    paths = [folder / "val" / "images" / name for name, _ in entries]
    for path in paths:
        if not path.is_file():
            raise SakdError(
                f"{path} is listed in val_annotations.txt but missing: unzip Tiny-ImageNet again"
            )
    return paths, [label for _, label in entries]


def tiny_imagenet_files(
    root: str | None, train: bool, download: bool = False
) -> tuple[Path, list[str], list[Path], list[int]]:
    """The dataset folder, class names, files and labels of the train or val split."""
    folder = _find_folder(root, download)
    wnids = sorted(
        line.strip()
        for line in (folder / "wnids.txt").read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    if not wnids:
        raise SakdError(
            f"{folder / 'wnids.txt'} lists no classes: replace it with the official file"
        )
    paths, labels = _train_files(folder, wnids) if train else _val_files(folder, wnids)
    return folder, _class_names(folder, wnids), paths, labels


def load_tiny_imagenet(
    root: str | None, train: bool, download: bool, image_size: int | None
) -> ImageSet:
    """Load Tiny-ImageNet train (100,000) or val (10,000) as uint8 (N, 3, S, S), S = 64 by default."""
    folder, class_names, paths, labels = tiny_imagenet_files(root, train, download)
    size = image_size or NATIVE_SIZE
    images, label_array = load_decoded(folder, "train" if train else "val", paths, labels, size)
    return ImageSet(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(label_array),
        num_classes=len(class_names),
        class_names=class_names,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD_AUTHORS,
        augment=AugmentSpec(crop_padding=0, horizontal_flip=True),
    )
