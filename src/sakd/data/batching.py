"""Epoch iteration over an in-memory :class:`ImageSet`: shuffling, sharding, augmentation.

For training, the epoch's permutation and every sample's crop/flip are drawn from one CPU
generator seeded from ``(seed, epoch)`` alone, so a run resumed at an epoch boundary sees exactly
the batches of an uninterrupted run, and a sample's augmentation in an epoch does not depend on the
batch size or on the number of ranks.

Sharding (``world_size`` > 1): rank ``r`` takes positions ``r, r + world_size, ...`` of the epoch
order. With ``drop_last=False`` the order is first *padded* by wrapping around to its start (as
``torch.utils.data.DistributedSampler`` does), so up to ``world_size - 1`` samples appear twice per
epoch; the yielded dataset index lets an evaluator count each sample once. With ``drop_last=True``
the order is *trimmed* to a multiple of ``world_size`` and each rank drops its last partial batch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor

from sakd.data.augment import crop_flip, draw_crop_flip, normalize
from sakd.data.imageset import ImageSet
from sakd.errors import SakdError


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A CPU generator whose state depends only on ``(seed, epoch)``."""
    digest = hashlib.sha256(f"sakd-data:{seed}:{epoch}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _rank_positions(num_samples: int, rank: int, world_size: int, drop_last: bool) -> Tensor:
    """Positions (into the epoch order) that ``rank`` visits, int64 (samples per rank,)."""
    if drop_last:
        total = (num_samples // world_size) * world_size
        return torch.arange(total)[rank::world_size]
    total = math.ceil(num_samples / world_size) * world_size
    return (torch.arange(total) % num_samples)[rank::world_size]


def num_batches(
    data: ImageSet | int, batch_size: int, *, world_size: int = 1, drop_last: bool | None = None
) -> int:
    """Batches per epoch on each rank for a dataset (or a sample count); same for every rank."""
    num_samples = data if isinstance(data, int) else len(data)
    if batch_size < 1:
        raise SakdError(
            f"batch size must be at least 1, got {batch_size}: set a positive batch size"
        )
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if num_samples < 1:
        raise SakdError("the dataset is empty: check the data root and the sample limit")
    if drop_last:
        count = (num_samples // world_size) // batch_size
        if count == 0:
            raise SakdError(
                f"{num_samples} samples over {world_size} rank(s) give no full batch of {batch_size}: "
                "lower the batch size or turn drop_last off"
            )
        return count
    return math.ceil(math.ceil(num_samples / world_size) / batch_size)


def iterate_batches(
    data: ImageSet,
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
    """Yield (images float32 normalised (B, 3, H, W), labels int64 (B,), dataset index int64 (B,)).

    All three tensors are on ``device``. ``train=True`` shuffles and augments as a pure function of
    ``(seed, epoch)``; ``train=False`` keeps the dataset order and does not augment. ``drop_last``
    None means False. See the module docstring for sharding.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside [0, {world_size})")
    drop = bool(drop_last)
    count = num_batches(data, batch_size, world_size=world_size, drop_last=drop)
    num_samples = len(data)
    pad, flip = data.augment.crop_padding, data.augment.horizontal_flip
    draws = None
    if train:
        generator = epoch_generator(seed, epoch)
        order = torch.randperm(num_samples, generator=generator)
        if pad > 0 or flip:
            draws = draw_crop_flip(num_samples, pad, flip, generator)
    else:
        order = torch.arange(num_samples)
    device = torch.device(device)
    # The epoch's order, augmentation draws and normalisation constants move to the data's device
    # once: a split held on a GPU is then batched without any per-batch host-to-device copy.
    source = data.images.device
    positions = _rank_positions(num_samples, rank, world_size, drop).to(source)
    order = order.to(source)
    if draws is not None:
        draws = tuple(draw.to(source) for draw in draws)
    mean = torch.tensor(data.mean, dtype=torch.float32, device=device)
    std = torch.tensor(data.std, dtype=torch.float32, device=device)
    for batch in range(count):
        batch_positions = positions[batch * batch_size : (batch + 1) * batch_size]
        indices = order[batch_positions]
        images = data.images[indices].to(device)
        if draws is not None:
            top, left, flipped = (draw[batch_positions] for draw in draws)
            images = crop_flip(images, top, left, flipped, pad)
        yield (
            normalize(images, mean, std),
            data.labels[indices.to(data.labels.device)].to(device),
            indices.to(device),
        )
