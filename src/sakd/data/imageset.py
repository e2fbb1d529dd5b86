"""A dataset held as one uint8 image tensor plus labels, with its normalisation and augmentation."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from sakd.errors import SakdError

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# The CIFAR-10 std that kuangliu/pytorch-cifar popularised; the SAKD authors normalise
# Tiny-ImageNet with CIFAR10_MEAN and this std, so we do too.
CIFAR10_STD_AUTHORS = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)


@dataclass(frozen=True)
class AugmentSpec:
    """Training augmentation: random crop after ``crop_padding`` px of zero padding, random h-flip."""

    crop_padding: int = 0
    horizontal_flip: bool = True


@dataclass
class ImageSet:
    """A whole split in memory: ``images`` uint8 (N, 3, H, W), ``labels`` int64 (N,)."""

    images: Tensor
    labels: Tensor
    num_classes: int
    class_names: list[str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    augment: AugmentSpec

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be uint8 (N, 3, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(
                f"labels must be int64 (N,), got {self.labels.dtype} {tuple(self.labels.shape)}"
            )
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of every image."""
        return (self.images.shape[2], self.images.shape[3])

    def subset(self, n: int) -> ImageSet:
        """The first ``n`` samples (all of them when ``n`` >= len); the rest of the fields are kept."""
        if n < 1:
            raise SakdError(
                f"a dataset subset needs at least 1 sample, got {n}: use a positive limit"
            )
        return replace(self, images=self.images[:n], labels=self.labels[:n])

    def to(self, device: torch.device | str) -> ImageSet:
        """The same split with ``images`` and ``labels`` moved to ``device`` (still uint8/int64)."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device))


def channel_stats(
    images: Tensor, chunk: int = 4096, what: str = "the images"
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images (N, C, H, W) scaled to [0, 1], in float64.

    A channel whose every pixel has one value (e.g. an all-black folder) has no spread to
    normalise by: :class:`SakdError` naming ``what``, instead of a division by zero later.
    """
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    low = torch.full((channels,), 255, dtype=torch.uint8)
    high = torch.zeros(channels, dtype=torch.uint8)
    for start in range(0, images.shape[0], chunk):
        raw = images[start : start + chunk]
        low = torch.minimum(low, raw.amin(dim=(0, 2, 3)).cpu())
        high = torch.maximum(high, raw.amax(dim=(0, 2, 3)).cpu())
        block = raw.to(torch.float64) / 255.0
        total += block.sum(dim=(0, 2, 3))
        total_sq += block.square().sum(dim=(0, 2, 3))
    flat = [c for c in range(channels) if low[c] == high[c]]
    if images.shape[0] and flat:
        values = ", ".join(f"channel {c} is {int(low[c])} everywhere" for c in flat)
        raise SakdError(
            f"{what} have no spread to normalise by ({values}; {images.shape[0]} images): "
            "check that they are the images you meant (not blank or single-colour)"
        )
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())
