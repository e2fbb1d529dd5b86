"""A split read sample by sample through ``torch.utils.data.DataLoader``: for data that does not fit in RAM.

A :class:`StreamSet` knows its samples' labels up front (from the file listing or the dataset) and
reads the images lazily through a *reader*: :class:`FileReader` decodes image files with Pillow,
:class:`DatasetReader` takes items ``(image, label)`` of any torch ``Dataset``. Batches have the
same form, order and sharding as the in-memory :func:`~sakd.data.batching.iterate_batches`:

- the epoch's permutation is the same ``randperm`` of the generator seeded from ``(seed, epoch)``,
  and rank ``r`` of ``W`` takes the same positions (padded by wrapping, or trimmed with
  ``drop_last``), so the yielded ``index`` tensors equal the in-memory path's;
- every sample's augmentation draws from its own generator seeded from ``(seed, epoch, index)``,
  so it does not depend on the batch size, the number of workers or of ranks, or on where a run
  was resumed;
- images travel as uint8 and are normalised on the target device.

Worker processes (``workers`` > 0) each decode whole batches; the batch order is the sampler's
whatever the number of workers.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from sakd.data.augment import normalize
from sakd.data.batching import _rank_positions, epoch_generator, num_batches
from sakd.data.decoded import read_rgb
from sakd.data.transforms import EvalTransform, TrainTransform
from sakd.errors import SakdError

Transform = Callable[[Tensor, torch.Generator], Tensor]


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, epoch, index)``."""
    digest = hashlib.sha256(f"sakd-sample:{seed}:{epoch}:{index}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def to_uint8_chw(image: Any, where: str) -> Tensor:
    """A PIL image, or a C x H x W tensor / array (uint8 0-255, or float 0-1), as uint8 (3, H, W).

    One channel is repeated to three; floats are scaled by 255 and rounded (exact for images that
    came from uint8, e.g. through ``ToTensor``). Anything else raises :class:`SakdError`.
    """
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(
            2, 0, 1
        )
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, Tensor):
        raise SakdError(
            f"{where} is a {type(image).__name__}: items must be (image, label) with image a "
            "C x H x W tensor or a PIL image"
        )
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise SakdError(
            f"{where} has shape {tuple(image.shape)}: images must be C x H x W with C = 1 or 3"
        )
    if image.dtype == torch.uint8:
        out = image
    elif image.is_floating_point():
        low, high = float(image.min()), float(image.max())
        if low < 0 or high > 1:
            raise SakdError(
                f"{where} has float values in [{low:.3g}, {high:.3g}]: give float images in [0, 1] "
                "(unnormalised; sakd normalises with data.mean / data.std) or uint8 images"
            )
        out = (image.to(torch.float32) * 255).round_().to(torch.uint8)
    else:
        raise SakdError(f"{where} has dtype {image.dtype}: use uint8 (0-255) or float (0-1)")
    if out.shape[0] == 1:
        out = out.expand(3, -1, -1)
    return out.contiguous()


def to_label(label: Any, where: str) -> int:
    """An int class index from an int or a one-element integer tensor / array."""
    if isinstance(label, Tensor):
        label = label.item() if label.numel() == 1 and not label.is_floating_point() else label
    elif isinstance(label, np.ndarray) and label.size == 1:
        label = label.item()
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return int(label)
    raise SakdError(f"{where} has label {label!r}: labels must be integer class indices")


# How the note on a user's exception starts (it names the dataset and the sample index).
NOTE_PREFIX = "sakd: raised by the "


def add_note(error: BaseException, note: str) -> None:
    """Attach ``note`` to ``error`` (PEP 678; on Python 3.10 the ``__notes__`` list it defines)."""
    if hasattr(error, "add_note"):
        error.add_note(note)
    else:
        error.__notes__ = [*getattr(error, "__notes__", []), note]


def read_item(dataset: Any, index: int, length: int, role: str) -> Any:
    """``dataset[index]`` of a user's Dataset of ``length`` items (``role``: train / val).

    An IndexError inside ``len()`` is a ``__len__`` that promises too much: :class:`SakdError`.
    Any other exception is the user's own: it propagates with its type and traceback, noted with
    the sample index.
    """
    try:
        return dataset[index]
    except IndexError as error:
        if 0 <= index < length:
            raise SakdError(
                f"the {role} dataset's len() is {length} but item {index} raised IndexError "
                f"({error}): make __len__ return the number of items __getitem__ can give"
            ) from error
        raise
    except Exception as error:
        add_note(error, f"{NOTE_PREFIX}{role} dataset's __getitem__({index})")
        raise


@dataclass(frozen=True)
class FileReader:
    """Decodes ``paths[i]`` (any format Pillow reads) to RGB uint8 (3, H, W)."""

    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def __call__(self, index: int) -> Tensor:
        rgb = read_rgb(self.paths[index])
        return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)

    def subset(self, n: int) -> FileReader:
        return FileReader(self.paths[:n])


@dataclass(frozen=True)
class DatasetReader:
    """Item ``i`` of a torch ``Dataset`` of ``(image, label)`` pairs, its image as uint8 (3, H, W).

    The dataset's own random transforms (if any) draw from torch's and Python's global generators;
    they are seeded from ``(seed, epoch, index)`` around the call and restored afterwards, so they
    too are a pure function of the sample's key.
    """

    dataset: Any
    length: int
    role: str = "train"

    def __len__(self) -> int:
        return self.length

    def __call__(self, index: int, seed: int | None = None) -> Tensor:
        if seed is None:
            item = read_item(self.dataset, index, self.length, self.role)
        else:
            state = random.getstate()
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                random.seed(seed)
                item = read_item(self.dataset, index, self.length, self.role)
            random.setstate(state)
        where = f"{self.role} dataset item {index}"
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise SakdError(
                f"{where} is a {type(item).__name__}: items must be (image, label) pairs"
            )
        return to_uint8_chw(item[0], where)

    def subset(self, n: int) -> DatasetReader:
        return DatasetReader(self.dataset, min(n, self.length), self.role)


class _Samples(Dataset):
    """Keys ``(index, seed, epoch, train)`` -> ``(image uint8 (3, S, S), label, index)``."""

    def __init__(
        self, reader: Any, labels: Tensor, train_transform: Transform, eval_transform: Transform
    ):
        self.reader = reader
        self.labels = labels
        self.train_transform = train_transform
        self.eval_transform = eval_transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: tuple[int, int, int, bool]) -> tuple[Tensor, Tensor, Tensor]:
        index, seed, epoch, train = key
        generator = sample_generator(seed, epoch, index)
        if isinstance(self.reader, DatasetReader):
            image = self.reader(index, int(torch.randint(0, 2**62, (1,), generator=generator)))
        else:
            image = self.reader(index)
        transform = self.train_transform if train else self.eval_transform
        return transform(image, generator), self.labels[index], torch.tensor(index)


@dataclass
class StreamSet:
    """A split whose images are read on demand: ``labels`` int64 (N,) in memory, images not.

    ``train_transform`` / ``eval_transform`` map uint8 (3, H, W) and a generator to uint8
    (3, S, S); ``workers`` is the number of DataLoader worker processes (0: in this process).
    """

    reader: Any
    labels: Tensor
    num_classes: int
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train_transform: Transform
    eval_transform: Transform
    size: int
    workers: int = 0

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be int64 (N,), got {self.labels.dtype}")
        if len(self.reader) != len(self.labels):
            raise ValueError(f"{len(self.reader)} images for {len(self.labels)} labels")
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every yielded image."""
        return (self.size, self.size)

    @property
    def device(self) -> torch.device:
        """Where the split is held: the images stay on disk, the labels on the CPU."""
        return torch.device("cpu")

    def subset(self, n: int) -> StreamSet:
        """The first ``n`` samples (all of them when ``n`` >= len)."""
        if n < 1:
            raise SakdError(
                f"a dataset subset needs at least 1 sample, got {n}: use a positive limit"
            )
        return replace(self, reader=self.reader.subset(n), labels=self.labels[:n])

    def to(self, device: torch.device | str) -> StreamSet:
        """The split itself: streamed images are moved batch by batch, not up front."""
        return self

    def without_augmentation(self) -> StreamSet:
        """Training batches take the evaluation transform (resize + centre crop)."""
        return replace(self, train_transform=self.eval_transform)

    def batches(
        self,
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
        """Yield (images float32 normalised (B, 3, S, S), labels (B,), index (B,)) on ``device``.

        Same arguments, order and sharding as :func:`~sakd.data.batching.iterate_batches`.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        drop = bool(drop_last)
        count = num_batches(len(self), batch_size, world_size=world_size, drop_last=drop)
        num_samples = len(self)
        if train:
            order = torch.randperm(num_samples, generator=epoch_generator(seed, epoch))
        else:
            order = torch.arange(num_samples)
        indices = order[_rank_positions(num_samples, rank, world_size, drop)].tolist()
        keys = [
            [(i, seed, epoch, train) for i in indices[b * batch_size : (b + 1) * batch_size]]
            for b in range(count)
        ]
        device = torch.device(device)
        loader = DataLoader(
            _Samples(self.reader, self.labels, self.train_transform, self.eval_transform),
            batch_sampler=keys,
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
            # Its own generator: the DataLoader then draws its worker base seed without touching
            # torch's global one (every sample is seeded from its key anyway).
            generator=torch.Generator().manual_seed(0),
        )
        mean = torch.tensor(self.mean, dtype=torch.float32, device=device)
        std = torch.tensor(self.std, dtype=torch.float32, device=device)
        for images, labels, index in _one_line_errors(loader):
            yield (
                normalize(images.to(device, non_blocking=True), mean, std),
                labels.to(device, non_blocking=True),
                index.to(device, non_blocking=True),
            )


def _one_line_errors(loader: DataLoader) -> Iterator[Any]:
    """Iterate ``loader``; a worker's SakdError comes back as its own one line (no traceback).

    A user's exception from a worker process is re-raised by torch as a new exception of its type
    (a ``RuntimeError`` when that type cannot be rebuilt) whose message holds the worker's
    traceback; the note naming the sample index is put back on it.
    """
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except SakdError as error:
            text = str(error)
            if "Original Traceback" in text:
                last = [line for line in text.splitlines() if line.strip()][-1]
                text = last.split("SakdError: ", 1)[-1]
            raise SakdError(text) from None
        except Exception as error:  # the user's, re-raised by torch from a worker: keep its note
            notes = getattr(error, "__notes__", [])
            for line in str(error).splitlines():
                if line.strip().startswith(NOTE_PREFIX) and line.strip() not in notes:
                    add_note(error, line.strip())
            raise
        yield batch


def stream_transforms(
    size: int,
    *,
    scale: tuple[float, float],
    crop_fraction: float,
    horizontal_flip: bool = True,
) -> tuple[TrainTransform, EvalTransform]:
    """The ImageNet-style pair: RandomResizedCrop + flip, and resize + centre crop."""
    if size < 1:
        raise SakdError(f"image size must be positive, got {size}: set a positive image size")
    return (
        TrainTransform(size, scale=tuple(scale), horizontal_flip=horizontal_flip),
        EvalTransform(size, crop_fraction=crop_fraction),
    )


def labels_tensor(labels: Sequence[int]) -> Tensor:
    """int64 (N,) from a list of class indices."""
    return torch.as_tensor(list(labels), dtype=torch.int64)
