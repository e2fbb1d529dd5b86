"""Epoch iteration: coverage, determinism in (seed, epoch), sharding, eval order, subsets."""

from __future__ import annotations

import collections

import pytest
import torch

from sakd.data import AugmentSpec, ImageSet, iterate_batches, normalize, num_batches
from sakd.data.augment import crop_flip, draw_crop_flip
from sakd.data.batching import epoch_generator
from sakd.errors import SakdError


def make_set(n: int = 50, size: int = 8, pad: int = 2, flip: bool = True) -> ImageSet:
    generator = torch.Generator().manual_seed(n)
    return ImageSet(
        images=torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator),
        labels=torch.arange(n) % 5,
        num_classes=5,
        class_names=[f"c{i}" for i in range(5)],
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        augment=AugmentSpec(crop_padding=pad, horizontal_flip=flip),
    )


def collect(
    data: ImageSet, batch_size: int, **kwargs
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    return list(iterate_batches(data, batch_size, **kwargs))


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 50, 64])
def test_every_index_exactly_once_per_epoch(train, batch_size):
    data = make_set()
    batches = collect(data, batch_size, train=train, seed=3, epoch=2)
    indices = torch.cat([index for _, _, index in batches])
    assert sorted(indices.tolist()) == list(range(len(data)))
    assert len(batches) == num_batches(data, batch_size)
    for images, labels, index in batches:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 8, 8)
        assert labels.dtype == torch.int64 and torch.equal(labels, data.labels[index])
        assert index.dtype == torch.int64


def test_same_seed_and_epoch_give_identical_batches_and_other_epochs_differ():
    data = make_set()
    first = collect(data, 16, train=True, seed=11, epoch=4)
    again = collect(data, 16, train=True, seed=11, epoch=4)
    for (x1, y1, i1), (x2, y2, i2) in zip(first, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(i1, i2)
    order = torch.cat([i for _, _, i in first])
    assert not torch.equal(
        order, torch.cat([i for _, _, i in collect(data, 16, train=True, seed=11, epoch=5)])
    )
    assert not torch.equal(
        order, torch.cat([i for _, _, i in collect(data, 16, train=True, seed=12, epoch=4)])
    )


def test_training_batches_are_the_documented_function_of_seed_and_epoch():
    data = make_set(pad=2, flip=True)
    generator = epoch_generator(5, 1)
    order = torch.randperm(len(data), generator=generator)
    top, left, flip = draw_crop_flip(len(data), 2, True, generator)
    expected = normalize(crop_flip(data.images[order], top, left, flip, 2), data.mean, data.std)
    images = torch.cat([x for x, _, _ in collect(data, 13, train=True, seed=5, epoch=1)])
    assert torch.equal(images, expected)


def test_sample_augmentation_does_not_depend_on_batch_size():
    data = make_set()
    by_index = {}
    for batch_size in (3, 50):
        for images, _, index in collect(data, batch_size, train=True, seed=0, epoch=0):
            for image, k in zip(images, index.tolist(), strict=True):
                by_index.setdefault(k, []).append(image)
    assert all(torch.equal(a, b) for a, b in by_index.values())


def test_training_augments_and_evaluation_does_not():
    data = make_set()
    plain = normalize(data.images, data.mean, data.std)
    eval_images = torch.cat([x for x, _, _ in collect(data, 8, train=False, seed=0, epoch=0)])
    assert torch.equal(eval_images, plain)
    assert torch.equal(
        torch.cat([i for _, _, i in collect(data, 8, train=False, seed=9, epoch=3)]),
        torch.arange(50),
    )
    train_images, _, index = next(iterate_batches(data, 50, train=True, seed=0, epoch=0))
    assert not torch.equal(train_images, plain[index])
    unaugmented = make_set(pad=0, flip=False)
    train_images, _, index = next(iterate_batches(unaugmented, 50, train=True, seed=0, epoch=0))
    assert torch.equal(
        train_images, normalize(unaugmented.images, unaugmented.mean, unaugmented.std)[index]
    )


@pytest.mark.parametrize("train", [True, False])
def test_shards_are_disjoint_and_cover_the_epoch(train):
    data = make_set(n=48)
    shards = [
        torch.cat(
            [i for _, _, i in collect(data, 5, train=train, seed=1, epoch=0, rank=r, world_size=4)]
        )
        for r in range(4)
    ]
    assert all(len(s) == 12 for s in shards)
    assert sorted(torch.cat(shards).tolist()) == list(range(48))
    single = torch.cat([i for _, _, i in collect(data, 48, train=train, seed=1, epoch=0)])
    assert torch.equal(torch.stack(shards, dim=1).reshape(-1), single)


def test_uneven_shards_are_padded_by_wrapping_and_have_equal_batch_counts():
    data = make_set(n=50)
    shards = [collect(data, 4, train=True, seed=2, epoch=0, rank=r, world_size=4) for r in range(4)]
    assert {len(s) for s in shards} == {num_batches(data, 4, world_size=4)} == {4}
    seen = collections.Counter(torch.cat([i for s in shards for _, _, i in s]).tolist())
    assert set(seen) == set(range(50)) and sum(seen.values()) == 52
    epoch_order = torch.randperm(50, generator=epoch_generator(2, 0))
    assert {k for k, c in seen.items() if c == 2} == set(epoch_order[:2].tolist())


def test_drop_last_trims_then_drops_partial_batches():
    data = make_set(n=50)
    shards = [
        collect(data, 4, train=True, seed=2, epoch=0, rank=r, world_size=4, drop_last=True)
        for r in range(4)
    ]
    assert (
        [len(s) for s in shards]
        == [3] * 4
        == [num_batches(data, 4, world_size=4, drop_last=True)] * 4
    )
    indices = torch.cat([i for s in shards for _, _, i in s]).tolist()
    assert len(indices) == len(set(indices)) == 48
    assert all(len(i) == 4 for s in shards for _, _, i in s)


@pytest.mark.parametrize(
    ("n", "batch", "world", "drop", "expected"),
    [(50, 7, 1, False, 8), (50, 7, 1, True, 7), (10, 3, 3, False, 2), (10, 3, 3, True, 1)],
)
def test_num_batches(n, batch, world, drop, expected):
    assert num_batches(n, batch, world_size=world, drop_last=drop) == expected


@pytest.mark.fault("api")
def test_bad_batch_settings_raise_sakd_error():
    data = make_set(n=10)
    with pytest.raises(SakdError, match="batch size"):
        num_batches(data, 0)
    with pytest.raises(SakdError, match="no full batch"):
        list(iterate_batches(data, 16, train=True, seed=0, epoch=0, drop_last=True))


def test_subset_keeps_the_first_samples_and_the_metadata():
    data = make_set(n=20)
    part = data.subset(7)
    assert (
        len(part) == 7
        and torch.equal(part.images, data.images[:7])
        and torch.equal(part.labels, data.labels[:7])
    )
    assert (part.mean, part.std, part.augment, part.class_names) == (
        data.mean,
        data.std,
        data.augment,
        data.class_names,
    )
    assert len(data.subset(1000)) == 20
    with pytest.raises(SakdError, match="at least 1"):
        data.subset(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batches_on_cuda_equal_batches_on_cpu():
    data = make_set()
    cpu = collect(data, 16, train=True, seed=4, epoch=1)
    for source in (data, data.to("cuda")):
        cuda = collect(source, 16, train=True, seed=4, epoch=1, device="cuda")
        for (x1, y1, i1), (x2, y2, i2) in zip(cpu, cuda, strict=True):
            assert x2.is_cuda and y2.is_cuda and i2.is_cuda
            torch.testing.assert_close(x2.cpu(), x1, rtol=0, atol=1e-6)
            assert torch.equal(y2.cpu(), y1) and torch.equal(i2.cpu(), i1)
