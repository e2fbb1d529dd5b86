"""Batch sources: what the trainer and the evaluator iterate, in memory or streamed.

A source is an :class:`~sakd.data.imageset.ImageSet` (the whole split as one uint8 tensor) or a
:class:`~sakd.data.streaming.StreamSet` (images read on demand through a DataLoader). Both offer
``len()``, ``labels`` int64 (N,), ``num_classes``, ``class_names``, ``mean``, ``std``,
``image_size`` (H, W), ``subset(n)`` and ``to(device)``; :func:`iterate_source` yields the same
``(images, labels, index)`` batches from either. :func:`open_stream` opens a named dataset on
disk as a stream; :func:`from_dataset` turns any torch ``Dataset`` into a pair of sources.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from sakd.data.batching import iterate_batches
from sakd.data.decoded import check_headers
from sakd.data.folder import folder_files
from sakd.data.imageset import (
    CIFAR10_MEAN,
    CIFAR10_STD_AUTHORS,
    AugmentSpec,
    ImageSet,
    channel_stats,
)
from sakd.data.streaming import (
    NOTE_PREFIX,
    DatasetReader,
    FileReader,
    StreamSet,
    add_note,
    labels_tensor,
    read_item,
    stream_transforms,
    to_label,
    to_uint8_chw,
)
from sakd.data.tiny_imagenet import tiny_imagenet_files
from sakd.data.transforms import DEFAULT_CROP_FRACTION, DEFAULT_SCALE, IMAGENET_MEAN, IMAGENET_STD
from sakd.errors import SakdError, quoted

BatchSource = ImageSet | StreamSet

# Datasets on disk that can be streamed: default image size and normalisation.
STREAMABLE: dict[str, tuple[int, tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (224, IMAGENET_MEAN, IMAGENET_STD),
    "folder": (224, IMAGENET_MEAN, IMAGENET_STD),
    "tiny-imagenet": (64, CIFAR10_MEAN, CIFAR10_STD_AUTHORS),
}
# from_dataset(loader="auto") keeps a training split in memory up to this many bytes of uint8.
MEMORY_LIMIT_BYTES = 2 * 1024**3


def iterate_source(
    source: BatchSource,
    batch_size: int,
    *,
    train: bool,
    seed: int,
    epoch: int,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
    drop_last: bool | None = None,
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Batches (images float32 normalised, labels int64, dataset index int64) of either source.

    Arguments as :func:`~sakd.data.batching.iterate_batches`; order, sharding and augmentation are
    a pure function of ``(seed, epoch)`` (and of the sample index for streamed augmentation).
    """
    kwargs = dict(
        train=train,
        seed=seed,
        epoch=epoch,
        device=device,
        rank=rank,
        world_size=world_size,
        drop_last=drop_last,
    )
    if isinstance(source, StreamSet):
        return source.batches(batch_size, **kwargs)
    return iterate_batches(source, batch_size, **kwargs)


def _stats(
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    default: tuple[Sequence[float], Sequence[float]],
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (
        tuple(float(v) for v in (mean if mean is not None else default[0])),
        tuple(float(v) for v in (std if std is not None else default[1])),
    )


def open_stream(
    name: str,
    root: str | None,
    train: bool,
    *,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    workers: int = 0,
    crop_scale: tuple[float, float] = DEFAULT_SCALE,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
    download: bool = False,
) -> StreamSet:
    """The train or evaluation split of a dataset on disk, streamed (see :data:`STREAMABLE`).

    ``imagenet`` and ``folder`` read ``root/train/<class>/*`` and ``root/val/<class>/*`` (ImageNet
    after the usual val re-arrangement into class folders); ``tiny-imagenet`` its official layout.
    """
    if name not in STREAMABLE:
        raise SakdError(
            f"dataset {name!r} is held in memory and cannot be streamed: use data.loader=memory, "
            f"or one of {', '.join(STREAMABLE)}"
        )
    default_size, default_mean, default_std = STREAMABLE[name]
    if name == "tiny-imagenet":
        _, class_names, paths, labels = tiny_imagenet_files(root, train, download)
    else:
        if root is None:
            raise SakdError(
                f"dataset {name!r} needs a data root: set it to a folder holding train/<class>/ "
                "and val/<class>/"
            )
        class_names, paths, labels, _ = folder_files(root, train)
    # Every file's header now, so a file that is not an image fails before anything is written.
    check_headers(paths)
    return _stream_set(
        FileReader(tuple(Path(p) for p in paths)),
        labels_tensor(labels),
        class_names,
        size=image_size or default_size,
        stats=_stats(mean, std, (default_mean, default_std)),
        workers=workers,
        crop_scale=crop_scale,
        crop_fraction=crop_fraction,
    )


def _stream_set(
    reader,
    labels: Tensor,
    class_names: Sequence[str],
    *,
    size: int,
    stats: tuple[Tensor, Tensor],
    workers: int,
    crop_scale: tuple[float, float],
    crop_fraction: float,
) -> StreamSet:
    """A streamed split with the ImageNet-style transforms at ``size`` and normalisation ``stats``."""
    train_tf, eval_tf = stream_transforms(size, scale=crop_scale, crop_fraction=crop_fraction)
    return StreamSet(
        reader=reader,
        labels=labels,
        num_classes=len(class_names),
        class_names=list(class_names),
        mean=stats[0],
        std=stats[1],
        train_transform=train_tf,
        eval_transform=eval_tf,
        size=size,
        workers=workers,
    )


def _dataset_length(dataset: Any, role: str) -> int:
    """``len(dataset)``; a missing ``__len__`` or one returning no count is one line.

    An exception the user's ``__len__`` raises is theirs: it keeps its type and traceback, with
    a note saying which dataset raised it.
    """
    method = getattr(type(dataset), "__len__", None)
    if method is None:
        raise SakdError(
            f"the {role} dataset has no len(): give a map-style torch Dataset (with __len__ and "
            "__getitem__)"
        )
    try:
        raw = method(dataset)
    except Exception as error:
        add_note(error, f"{NOTE_PREFIX}{role} dataset's __len__()")
        raise
    try:
        length = operator.index(raw)
    except TypeError:
        length = None
    if length is None or isinstance(raw, bool) or length < 0:
        raise SakdError(
            f"the {role} dataset's __len__ returned {quoted(raw)}: make it return the number of "
            "items (an int)"
        )
    if length < 1:
        raise SakdError(f"the {role} dataset is empty: give it at least one (image, label) item")
    return length


def _item(dataset: Any, index: int, length: int, role: str) -> tuple[Tensor, int]:
    item = read_item(dataset, index, length, role)
    where = f"{role} dataset item {index}"
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise SakdError(f"{where} is a {type(item).__name__}: items must be (image, label) pairs")
    return to_uint8_chw(item[0], where), to_label(item[1], where)


def _labels(dataset: Any, length: int, role: str) -> Tensor:
    """All labels: the dataset's ``targets`` when it has them (torchvision style), else read."""
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == length:
        return labels_tensor(
            [to_label(t, f"{role} dataset target {i}") for i, t in enumerate(targets)]
        )
    return labels_tensor([_item(dataset, i, length, role)[1] for i in range(length)])


def _materialise(dataset: Any, length: int, role: str) -> tuple[Tensor, Tensor]:
    """uint8 (N, 3, H, W) and int64 (N,) from every item; every image must have one size."""
    first, _ = _item(dataset, 0, length, role)
    images = torch.empty((length, *first.shape), dtype=torch.uint8)
    labels = torch.empty(length, dtype=torch.int64)
    for index in range(length):
        image, label = _item(dataset, index, length, role)
        if image.shape != first.shape:
            raise SakdError(
                f"{role} dataset item {index} is {tuple(image.shape)}, item 0 is "
                f"{tuple(first.shape)}: in memory every image needs one size; resize them, or use "
                "loader='stream'"
            )
        images[index], labels[index] = image, label
    return images, labels


def _class_names(train: Any, num_classes: int | None, labels: Tensor) -> tuple[list[str], str]:
    """``train.classes`` (names, or an int: the class count), else numbered classes.

    Returns the names and where their number came from (for the label check's message).
    """
    names = getattr(train, "classes", None)
    attribute = "the train dataset's classes attribute"
    if isinstance(names, int) and not isinstance(names, bool):
        if names < 1:
            raise SakdError(
                f"{attribute} is {names}: as a number it is the number of classes (at least 1); "
                "fix it, or make it the list of class names"
            )
        names = [str(k) for k in range(names)]
    elif isinstance(names, (str, bytes)):
        raise SakdError(
            f"{attribute} is the string {quoted(names)}: sakd reads it as the class names; make "
            "it a list of names (or the number of classes)"
        )
    elif names is not None:
        try:
            names = [str(n) for n in names]
        except TypeError:
            raise SakdError(
                f"{attribute} is a {type(names).__name__}: sakd reads it as the class names; "
                "make it a list of names (or the number of classes)"
            ) from None
        if not names:
            raise SakdError(f"{attribute} is empty: list the class names (or their number)")
    if names is not None and (num_classes is None or len(names) == num_classes):
        return names, attribute
    if num_classes is not None:
        return [str(i) for i in range(num_classes)], "num_classes"
    return [str(i) for i in range(int(labels.max()) + 1)], "the largest train label"


def _check_labels(labels: Tensor, num_classes: int, role: str, origin: str) -> None:
    """Every label a class index below ``num_classes`` (which ``origin`` set); else one line."""
    if not labels.numel():
        return
    low, high = int(labels.min()), int(labels.max())
    if 0 <= low <= high < num_classes:
        return
    if low < 0:
        fix = "labels must be class indices 0, 1, ...: fix the negative ones"
    elif origin == "the largest train label":
        fix = (
            "the train dataset lacks the higher classes: give it a classes attribute naming "
            "every class (or their number)"
        )
    else:
        fix = f"fix the labels, or {origin} (it must count every class)"
    raise SakdError(
        f"the {role} dataset has labels in [{low}, {high}], outside [0, {num_classes}) "
        f"({num_classes} classes, from {origin}): {fix}"
    )


def from_dataset(
    train: Any,
    val: Any,
    *,
    num_classes: int | None = None,
    loader: Literal["auto", "memory", "stream"] = "auto",
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    augment: bool = True,
    workers: int = 0,
    crop_scale: tuple[float, float] = DEFAULT_SCALE,
    crop_fraction: float = DEFAULT_CROP_FRACTION,
) -> tuple[BatchSource, BatchSource]:
    """Train and evaluation sources from two torch Datasets of ``(image, label)`` items.

    ``image`` is a C x H x W tensor (uint8 0-255, or float 0-1; C = 1 or 3) or a PIL image;
    ``label`` an int class index. ``num_classes`` defaults to ``len(train.classes)`` or the
    largest train label + 1. ``loader``:

    - ``memory``: every item is read once into an :class:`ImageSet` (one image size throughout;
      ``image_size`` is ignored); augmentation is the CIFAR-style random crop with
      ``H // 8`` px zero padding + flip; mean / std default to the train split's channel stats.
    - ``stream``: a :class:`StreamSet` reads items on demand through a DataLoader with
      ``workers`` processes; RandomResizedCrop (``crop_scale``) + flip to ``image_size`` (default:
      the shorter side of item 0) for training, resize + centre crop (``crop_fraction``) for
      evaluation; mean / std default to ImageNet's. Labels come from ``dataset.targets`` when
      present, else every item is read once.
    - ``auto``: ``memory`` when the train split fits in :data:`MEMORY_LIMIT_BYTES` as uint8
      (estimated from item 0), else ``stream``.
    """
    if loader not in ("auto", "memory", "stream"):
        raise SakdError(f"loader must be 'auto', 'memory' or 'stream', got {loader!r}")
    if num_classes is not None and num_classes < 1:
        raise SakdError(f"num_classes must be at least 1, got {num_classes}")
    n_train, n_val = _dataset_length(train, "train"), _dataset_length(val, "val")
    first, _ = _item(train, 0, n_train, "train")
    if loader == "auto":
        loader = "memory" if n_train * first.numel() <= MEMORY_LIMIT_BYTES else "stream"
    if loader == "memory":
        train_images, train_labels = _materialise(train, n_train, "train")
        val_images, val_labels = _materialise(val, n_val, "val")
        if val_images.shape[1:] != train_images.shape[1:]:
            raise SakdError(
                f"val images are {tuple(val_images.shape[1:])}, train images "
                f"{tuple(train_images.shape[1:])}: give both splits one image size"
            )
        names, origin = _class_names(train, num_classes, train_labels)
        for labels, role in ((train_labels, "train"), (val_labels, "val")):
            _check_labels(labels, len(names), role, origin)
        computed = (
            channel_stats(train_images, what="the train dataset's images")
            if mean is None or std is None
            else (mean, std)
        )
        mean_t, std_t = _stats(mean, std, computed)
        spec = AugmentSpec(
            crop_padding=train_images.shape[-1] // 8 if augment else 0, horizontal_flip=augment
        )
        return tuple(
            ImageSet(
                images=images,
                labels=labels,
                num_classes=len(names),
                class_names=names,
                mean=mean_t,
                std=std_t,
                augment=spec,
            )
            for images, labels in ((train_images, train_labels), (val_images, val_labels))
        )
    train_labels, val_labels = _labels(train, n_train, "train"), _labels(val, n_val, "val")
    names, origin = _class_names(train, num_classes, train_labels)
    for labels, role in ((train_labels, "train"), (val_labels, "val")):
        _check_labels(labels, len(names), role, origin)
    stats = _stats(mean, std, (IMAGENET_MEAN, IMAGENET_STD))
    sources = []
    splits = ((train, n_train, train_labels, "train"), (val, n_val, val_labels, "val"))
    for dataset, length, labels, role in splits:
        source = _stream_set(
            DatasetReader(dataset, length, role),
            labels,
            names,
            size=image_size or min(first.shape[1:]),
            stats=stats,
            workers=workers,
            crop_scale=crop_scale,
            crop_fraction=crop_fraction,
        )
        sources.append(source if augment else source.without_augmentation())
    return sources[0], sources[1]
