"""The data path on the device: a split moved there once gives the CPU's batches, batch for batch."""

from __future__ import annotations

import pytest
import torch

from sakd.data import iterate_batches
from tests.distributed.test_device_data import make_set, reference_shard


@pytest.mark.parametrize(("world_size", "batch_size"), [(1, 8), (2, 5), (3, 4)])
@pytest.mark.parametrize("train", [True, False])
def test_device_batches_equal_the_cpu_batches(device, world_size, batch_size, train):
    data = make_set(n=29)
    on_device = data.to(device)
    for rank in range(world_size):
        options = dict(train=train, seed=5, epoch=2, rank=rank, world_size=world_size)
        cpu = list(iterate_batches(data, batch_size, device="cpu", **options))
        dev = list(iterate_batches(on_device, batch_size, device=device, **options))
        assert len(cpu) == len(dev)
        for (x, y, i), (dx, dy, di) in zip(cpu, dev, strict=True):
            assert dx.device.type == dy.device.type == di.device.type == device
            assert torch.equal(dy.cpu(), y) and torch.equal(di.cpu(), i)
            torch.testing.assert_close(dx.cpu(), x, rtol=0, atol=1e-6)
        if train:  # and both equal the per-sample reference of the documented draws
            images = torch.cat([dx.cpu() for dx, _, _ in dev])
            expected, indices = reference_shard(data, 5, 2, rank, world_size)
            assert torch.equal(torch.cat([di.cpu() for _, _, di in dev]), indices)
            torch.testing.assert_close(images, expected, rtol=0, atol=1e-5)
