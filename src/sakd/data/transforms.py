"""Per-sample ImageNet-style transforms on uint8 (C, H, W) tensors, written with torch ops.

Training: ``RandomResizedCrop`` (area fraction in ``scale``, aspect ratio log-uniform in ``ratio``,
torchvision's ten tries and central fallback) to ``size`` x ``size``, then a horizontal flip with
probability 0.5. Evaluation: resize the shorter side to ``floor(size / crop_fraction)`` (256 for
224 at the standard 0.875), then a central ``size`` x ``size`` crop. Resizing is bilinear with
antialiasing on uint8 (``F.interpolate(..., antialias=True)``, which follows Pillow's filter:
within two levels of it, and one for nearly every pixel), so a batch travels to the device as
uint8 and is normalised there.

Every random number comes from the ``generator`` passed in, which the streaming loader seeds from
``(seed, epoch, sample index)``: a sample's augmentation is a pure function of those three.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_SCALE = (0.08, 1.0)
DEFAULT_RATIO = (3 / 4, 4 / 3)
DEFAULT_CROP_FRACTION = 0.875
CROP_TRIES = 10


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    """One float uniform in [low, high) from ``generator``."""
    return low + (high - low) * float(torch.rand(1, generator=generator))


def _randint(high: int, generator: torch.Generator) -> int:
    """One int uniform in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=generator))


def random_resized_crop_box(
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int, int, int]:
    """The crop ``(top, left, crop_height, crop_width)`` of torchvision's ``RandomResizedCrop``.

    Up to ten tries: area ``U(scale) * H * W``, aspect ``exp(U(log ratio))``, sides rounded; the
    first box that fits gets a uniform position. Otherwise the central box of the whole image with
    its aspect clamped to ``ratio``. Draw order per try: area, aspect, then top and left.
    """
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(CROP_TRIES):
        target_area = area * _uniform(scale[0], scale[1], generator)
        aspect = math.exp(_uniform(log_low, log_high, generator))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = _randint(height - crop_h + 1, generator)
            left = _randint(width - crop_w + 1, generator)
            return top, left, crop_h, crop_w
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        crop_h, crop_w = height, int(round(height * max(ratio)))
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def resize(image: Tensor, height: int, width: int) -> Tensor:
    """uint8 (C, H, W) -> uint8 (C, height, width), bilinear with antialiasing, rounded."""
    if tuple(image.shape[1:]) == (height, width):
        return image
    # uint8 in, uint8 out: torch's CPU kernel for antialiased bilinear on uint8 (the one
    # torchvision's v2 transforms use) rounds like Pillow and is about 3x faster than float32.
    return F.interpolate(
        image[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )[0]


def shorter_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(H', W') with the shorter side ``short`` and the aspect kept (torchvision ``Resize(int)``)."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def center_crop_box(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the central ``size`` x ``size`` box (torchvision ``CenterCrop`` rounding)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def eval_resize_size(size: int, crop_fraction: float) -> int:
    """Shorter side before the central crop: ``floor(size / crop_fraction)`` (224 -> 256)."""
    return max(size, math.floor(size / crop_fraction + 1e-9))


@dataclass(frozen=True)
class TrainTransform:
    """RandomResizedCrop to ``size`` + optional horizontal flip; ``__call__(image, generator)``."""

    size: int
    scale: tuple[float, float] = DEFAULT_SCALE
    ratio: tuple[float, float] = DEFAULT_RATIO
    horizontal_flip: bool = True

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        """uint8 (C, H, W) -> uint8 (C, size, size)."""
        height, width = image.shape[1:]
        top, left, crop_h, crop_w = random_resized_crop_box(
            height, width, self.scale, self.ratio, generator
        )
        out = resize(image[:, top : top + crop_h, left : left + crop_w], self.size, self.size)
        if self.horizontal_flip and float(torch.rand(1, generator=generator)) < 0.5:
            out = out.flip(-1)
        return out.contiguous()


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side to ``floor(size / crop_fraction)``, then centre-crop ``size``."""

    size: int
    crop_fraction: float = DEFAULT_CROP_FRACTION

    def __call__(self, image: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 (C, H, W) -> uint8 (C, size, size); ``generator`` is ignored (deterministic)."""
        height, width = image.shape[1:]
        new_h, new_w = shorter_side_size(
            height, width, eval_resize_size(self.size, self.crop_fraction)
        )
        resized = resize(image, new_h, new_w)
        top, left = center_crop_box(new_h, new_w, self.size)
        return resized[:, top : top + self.size, left : left + self.size].contiguous()
