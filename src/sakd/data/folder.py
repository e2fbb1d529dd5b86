"""User data in an ImageFolder-style tree: ``root/train/<class>/*`` and ``root/val/<class>/*``."""

from __future__ import annotations

from pathlib import Path

import torch

from sakd.data.decoded import interleave, list_images, load_decoded
from sakd.data.imageset import AugmentSpec, ImageSet, channel_stats
from sakd.errors import SakdError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
EVAL_FOLDERS = ("val", "test")
DEFAULT_SIZE = 32


def _class_dirs(split_dir: Path) -> list[Path]:
    """Class folders of a split, sorted by name (hidden folders skipped)."""
    return sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _split_files(split_dir: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    """Image files of a split whose class folders all belong to ``class_names``, interleaved."""
    groups: list[list[Path]] = [[] for _ in class_names]
    for class_dir in _class_dirs(split_dir):
        if class_dir.name not in class_names:
            raise SakdError(
                f"class folder {class_dir} has no counterpart in the train split: add it to train/ or remove it"
            )
        files = list_images(class_dir, IMAGE_EXTENSIONS)
        if not files:
            raise SakdError(
                f"class folder {class_dir} holds no .png/.jpg/.jpeg/.bmp images: add images or remove the folder"
            )
        groups[class_names.index(class_dir.name)] = files
    return interleave(groups)


def _eval_dir(root: Path) -> Path:
    """``root/val``, or ``root/test`` when there is no val folder."""
    for name in EVAL_FOLDERS:
        if (root / name).is_dir():
            return root / name
    raise SakdError(
        f"{root} has neither val/ nor test/: add an evaluation split as {root}/val/<class>/<images>"
    )


def folder_files(root: str | None, train: bool) -> tuple[list[str], list[Path], list[int], str]:
    """Class names (sorted train folders), files, labels and split folder name of a split.

    The train split is ``root/train``; the evaluation split ``root/val`` (or ``root/test``).
    """
    if root is None:
        raise SakdError(
            "dataset 'folder' needs a data root: set it to a folder holding train/<class>/ and val/<class>/"
        )
    root_path = Path(root).expanduser()
    train_dir = root_path / "train"
    if not train_dir.is_dir():
        raise SakdError(
            f"{train_dir} not found: arrange the data as {root_path}/train/<class>/<images> and val/<class>/"
        )
    class_names = [d.name for d in _class_dirs(train_dir)]
    if not class_names:
        raise SakdError(
            f"{train_dir} has no class folders: put each class's images in train/<class>/"
        )
    split_dir = train_dir if train else _eval_dir(root_path)
    paths, labels = _split_files(split_dir, class_names)
    return class_names, paths, labels, split_dir.name


def load_folder(root: str | None, train: bool, image_size: int | None) -> ImageSet:
    """Load the train or val/test split, resized to ``image_size`` (default 32), normalised by train stats."""
    size = image_size or DEFAULT_SIZE
    if size < 1:
        raise SakdError(f"image size must be positive, got {size}: set a positive image size")
    class_names, train_paths, train_labels, _ = folder_files(root, train=True)
    root_path = Path(str(root)).expanduser()
    train_images, train_label_array = load_decoded(
        root_path, "train", train_paths, train_labels, size
    )
    mean, std = channel_stats(
        torch.from_numpy(train_images), what=f"the train images under {root_path / 'train'}"
    )
    if train:
        images, labels = train_images, train_label_array
    else:
        _, eval_paths, eval_labels, eval_name = folder_files(root, train=False)
        images, labels = load_decoded(root_path, eval_name, eval_paths, eval_labels, size)
    return ImageSet(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        num_classes=len(class_names),
        class_names=class_names,
        mean=mean,
        std=std,
        augment=AugmentSpec(crop_padding=size // 8, horizontal_flip=True),
    )
