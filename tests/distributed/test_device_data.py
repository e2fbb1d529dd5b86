"""The device data path: a split held on the device, batched and augmented there, rank by rank.

``iterate_batches`` on an ``ImageSet.to(device)`` must give, for every rank's shard, exactly the
per-sample reference (pad, crop, mirror, normalise one image at a time, at its epoch position),
and must not copy anything from the host per batch. No GPU here: the "meta" device stands in for
one to count host-to-device copies (it holds no data, but every copy onto it is an operation).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sakd.data import AugmentSpec, ImageSet, iterate_batches
from sakd.data.batching import epoch_generator


def make_set(n: int = 29, pad: int = 3, flip: bool = True) -> ImageSet:
    generator = torch.Generator().manual_seed(n)
    return ImageSet(
        images=torch.randint(0, 256, (n, 3, 6, 5), dtype=torch.uint8, generator=generator),
        labels=torch.arange(n) % 4,
        num_classes=4,
        class_names=[f"c{i}" for i in range(4)],
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        augment=AugmentSpec(crop_padding=pad, horizontal_flip=flip),
    )


def reference_shard(
    data: ImageSet, seed: int, epoch: int, rank: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One image at a time: (float images (n, C, H, W), dataset indices (n,)) of a rank's shard.

    The documented draws: one generator from (seed, epoch); the permutation, then per epoch
    position a crop row, a crop column and a flip coin. Rank r visits positions r, r + W, ... of
    the order padded by wrapping to a multiple of W.
    """
    n, pad = len(data), data.augment.crop_padding
    generator = epoch_generator(seed, epoch)
    order = torch.randperm(n, generator=generator)
    tops = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    lefts = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    _, channels, height, width = data.images.shape
    images, indices = [], []
    for position in range(rank, math.ceil(n / world_size) * world_size, world_size):
        q = position % n
        index = int(order[q])
        canvas = torch.zeros(channels, height + 2 * pad, width + 2 * pad)
        canvas[:, pad : pad + height, pad : pad + width] = data.images[index].float()
        top, left = int(tops[q]), int(lefts[q])
        window = canvas[:, top : top + height, left : left + width]
        if flips[q]:
            window = window.flip(-1)
        mean = torch.tensor(data.mean).view(-1, 1, 1)
        std = torch.tensor(data.std).view(-1, 1, 1)
        images.append((window / 255.0 - mean) / std)
        indices.append(index)
    return torch.stack(images), torch.tensor(indices)


@pytest.mark.parametrize(("world_size", "batch_size"), [(1, 8), (2, 5), (3, 4)])
def test_device_resident_shards_equal_the_per_sample_reference(world_size, batch_size):
    data = make_set().to("cpu")
    for rank in range(world_size):
        batches = list(
            iterate_batches(
                data,
                batch_size,
                train=True,
                seed=11,
                epoch=3,
                device="cpu",
                rank=rank,
                world_size=world_size,
            )
        )
        images = torch.cat([x for x, _, _ in batches])
        indices = torch.cat([i for _, _, i in batches])
        labels = torch.cat([y for _, y, _ in batches])
        expected_images, expected_indices = reference_shard(data, 11, 3, rank, world_size)
        assert torch.equal(indices, expected_indices)
        assert torch.equal(labels, data.labels[expected_indices])
        torch.testing.assert_close(images, expected_images, rtol=0, atol=1e-5)


class HostToDeviceCopies(TorchDispatchMode):
    """Counts operations that copy a CPU tensor onto another device."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._to_copy.default:
            source, target = args[0].device, torch.device(kwargs.get("device", args[0].device))
        elif func is torch.ops.aten.copy_.default:
            source, target = args[1].device, args[0].device
        else:
            return func(*args, **kwargs)
        if source.type == "cpu" and target.type != "cpu":
            self.count += 1
        return func(*args, **kwargs)


def _copies_for_one_epoch(data: ImageSet, batch_size: int) -> int:
    with HostToDeviceCopies() as counter:
        for images, labels, index in iterate_batches(
            data, batch_size, train=True, seed=0, epoch=1, device="meta", rank=1, world_size=2
        ):
            assert images.device.type == labels.device.type == index.device.type == "meta"
    return counter.count


def test_no_host_to_device_copy_per_batch():
    data = make_set(n=64).to("meta")
    few_batches = _copies_for_one_epoch(data, 16)  # 2 batches on this rank
    many_batches = _copies_for_one_epoch(data, 2)  # 16 batches
    assert few_batches == many_batches
    assert few_batches <= 7  # the epoch's order, positions, three draws, mean and std
