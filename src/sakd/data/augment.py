"""Batched augmentation (random crop with zero padding + horizontal flip) and normalisation.

The random numbers are always drawn on a CPU generator and then moved to the images' device, so a
batch is augmented identically whether the data lives on the CPU or on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def draw_crop_flip(
    batch_size: int, pad: int, flip: bool, generator: torch.Generator | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Random crop offsets ``top``, ``left`` int64 (B,) in [0, 2*pad] and ``flip`` bool (B,), on CPU.

    ``generator`` must be a CPU generator. Draw order: top, left, then flip (only when ``flip`` is
    True; otherwise all False).
    """
    top = torch.randint(0, 2 * pad + 1, (batch_size,), generator=generator)
    left = torch.randint(0, 2 * pad + 1, (batch_size,), generator=generator)
    if flip:
        flipped = torch.rand(batch_size, generator=generator) < 0.5
    else:
        flipped = torch.zeros(batch_size, dtype=torch.bool)
    return top, left, flipped


def crop_flip(images: Tensor, top: Tensor, left: Tensor, flip: Tensor, pad: int) -> Tensor:
    """Zero-pad (B, C, H, W) by ``pad``, crop the H x W window at (top, left), mirror where ``flip``."""
    batch, channels, height, width = images.shape
    device = images.device
    top, left, flip = top.to(device), left.to(device), flip.to(device)
    padded = F.pad(images, (pad, pad, pad, pad)) if pad > 0 else images
    rows = top[:, None] + torch.arange(height, device=device)
    rows = rows[:, None, :, None].expand(batch, channels, height, width + 2 * pad)
    cropped_rows = torch.gather(padded, 2, rows)
    cols = left[:, None] + torch.arange(width, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :].expand(batch, channels, height, width)
    return torch.gather(cropped_rows, 3, cols)


def augment_batch(
    images: Tensor, pad: int, flip: bool, generator: torch.Generator | None
) -> Tensor:
    """Random crop (zero padding ``pad``) and optional horizontal flip of uint8 (B, C, H, W)."""
    if pad == 0 and not flip:
        return images
    top, left, flipped = draw_crop_flip(images.shape[0], pad, flip, generator)
    return crop_flip(images, top, left, flipped, pad)


def normalize(
    images: Tensor, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> Tensor:
    """uint8 (B, C, H, W) in [0, 255] -> float32 (B, C, H, W), ``(x / 255 - mean) / std`` per channel.

    ``mean`` and ``std`` (C,) may be tensors already on the images' device (then nothing is copied).
    """
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.to(torch.float32) / 255.0 - mean_t) / std_t
