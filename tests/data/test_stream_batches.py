"""Streamed batches: same order and sharding as the in-memory path, per-sample augmentation, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sakd.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AugmentSpec,
    ImageSet,
    StreamSet,
    iterate_batches,
    iterate_source,
    normalize,
    open_stream,
    sample_generator,
)
from sakd.data.transforms import EvalTransform, TrainTransform
from sakd.errors import SakdError


@pytest.fixture
def tree(tmp_path, formats):
    return formats.write_image_tree(tmp_path / "tree", classes=3, train=5, val=2)


def collect(source, batch_size=4, **kwargs):
    kwargs.setdefault("seed", 3)
    kwargs.setdefault("epoch", 1)
    return list(iterate_source(source, batch_size, **kwargs))


def decode(path):
    with Image.open(path) as image:
        return torch.from_numpy(np.asarray(image.convert("RGB")).copy()).permute(2, 0, 1)


def test_open_stream_lists_the_folder_like_the_memory_loader(tree):
    train = open_stream("folder", str(tree), True, image_size=16)
    val = open_stream("folder", str(tree), False, image_size=16)
    assert isinstance(train, StreamSet) and len(train) == 15 and len(val) == 6
    assert train.class_names == ["class0", "class1", "class2"] and train.num_classes == 3
    # round-robin over the classes, as data/folder.py orders samples
    assert train.labels.tolist()[:6] == [0, 1, 2, 0, 1, 2]
    assert train.image_size == (16, 16)
    assert (train.mean, train.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert train.subset(4).labels.tolist() == [0, 1, 2, 0] and len(train.subset(99)) == 15


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize(
    ("world_size", "drop_last"), [(1, False), (2, False), (4, True), (4, False)]
)
def test_order_and_sharding_equal_the_in_memory_path(tree, train, world_size, drop_last):
    stream = open_stream("folder", str(tree), True, image_size=8, workers=0)
    memory = ImageSet(
        images=torch.zeros(len(stream), 3, 8, 8, dtype=torch.uint8),
        labels=stream.labels.clone(),
        num_classes=3,
        class_names=stream.class_names,
        mean=stream.mean,
        std=stream.std,
        augment=AugmentSpec(0, False),
    )
    for rank in range(world_size):
        kwargs = dict(train=train, rank=rank, world_size=world_size, drop_last=drop_last)
        streamed = collect(stream, 3, **kwargs)
        in_memory = list(iterate_batches(memory, 3, seed=3, epoch=1, **kwargs))
        assert len(streamed) == len(in_memory)
        for (_, s_labels, s_index), (_, m_labels, m_index) in zip(streamed, in_memory, strict=True):
            assert torch.equal(s_index, m_index) and torch.equal(s_labels, m_labels)


def test_every_sample_is_its_transform_under_its_own_generator(tree):
    stream = open_stream("folder", str(tree), True, image_size=12)
    paths = stream.reader.paths
    transform = TrainTransform(12)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    for images, labels, index in collect(stream, 4, train=True):
        assert images.dtype == torch.float32 and images.shape[1:] == (3, 12, 12)
        for image, label, i in zip(images, labels, index.tolist(), strict=True):
            expected = transform(decode(paths[i]), sample_generator(3, 1, i))
            torch.testing.assert_close(image, normalize(expected[None], mean, std)[0])
            assert label == stream.labels[i]


def test_evaluation_batches_are_the_eval_transform_in_order(tree):
    val = open_stream("folder", str(tree), False, image_size=10, crop_fraction=0.5)
    transform = EvalTransform(10, crop_fraction=0.5)
    seen = []
    for images, _, index in collect(val, 4, train=False):
        for image, i in zip(images, index.tolist(), strict=True):
            expected = normalize(transform(decode(val.reader.paths[i]))[None], val.mean, val.std)
            torch.testing.assert_close(image, expected[0])
            seen.append(i)
    assert seen == list(range(len(val)))


def test_augmentation_depends_on_seed_and_epoch_not_on_batch_size(tree):
    stream = open_stream("folder", str(tree), True, image_size=12)

    def by_index(batch_size, seed=3, epoch=1):
        out = {}
        for images, _, index in collect(stream, batch_size, train=True, seed=seed, epoch=epoch):
            out.update(zip(index.tolist(), images, strict=True))
        return out

    a, b = by_index(4), by_index(7)
    assert all(torch.equal(a[i], b[i]) for i in a)
    c = by_index(4, epoch=2)
    assert any(not torch.equal(a[i], c[i]) for i in a)


def test_workers_give_bitwise_the_same_batches(tree):
    stream = open_stream("folder", str(tree), True, image_size=12, workers=0)
    parallel = open_stream("folder", str(tree), True, image_size=12, workers=2)
    for (xa, ya, ia), (xb, yb, ib) in zip(
        collect(stream, 4, train=True), collect(parallel, 4, train=True), strict=True
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)


def test_without_augmentation_trains_on_the_eval_transform(tree):
    stream = open_stream("folder", str(tree), True, image_size=12).without_augmentation()

    def by_index(train):
        out = {}
        for images, _, index in collect(stream, 4, train=train):
            out.update(zip(index.tolist(), images, strict=True))
        return out

    a, b = by_index(True), by_index(False)
    assert a.keys() == b.keys() and all(torch.equal(a[i], b[i]) for i in a)


def test_mean_and_std_are_configurable(tree):
    stream = open_stream("folder", str(tree), False, image_size=8, mean=(0, 0, 0), std=(1, 1, 1))
    images, _, _ = collect(stream, 6, train=False)[0]
    assert images.min() >= 0 and images.max() <= 1


@pytest.mark.fault("data")
def test_undecodable_file_is_one_line_even_from_a_worker(tree):
    streams = [open_stream("folder", str(tree), True, image_size=8, workers=w) for w in (0, 1)]
    bad = tree / "train" / "class1" / "0.jpg"
    bad.write_bytes(b"not an image")  # damaged after the header check at open
    for stream in streams:
        with pytest.raises(SakdError, match=r"cannot decode image .*0\.jpg") as info:
            collect(stream, 15, train=True)
        assert "\n" not in str(info.value) and "Traceback" not in str(info.value)


@pytest.mark.fault("api")
def test_datasets_held_in_memory_refuse_to_stream():
    with pytest.raises(SakdError, match="cannot be streamed"):
        open_stream("cifar100", "/nowhere", True)
    with pytest.raises(SakdError, match="needs a data root"):
        open_stream("imagenet", None, True)


def test_tiny_imagenet_streams_from_its_official_layout(tmp_path):
    folder = tmp_path / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for k, wnid in enumerate(wnids):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (k * 100, i * 50, 0)).save(images / f"{wnid}_{i}.JPEG")
        Image.new("RGB", (64, 64), (k * 100, 0, 0)).save(folder / "val" / "images" / f"v{k}.JPEG")
        lines.append(f"v{k}.JPEG\t{wnid}\t0\t0\t1\t1")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    train = open_stream("tiny-imagenet", str(tmp_path), True)
    val = open_stream("tiny-imagenet", str(tmp_path), False)
    assert len(train) == 4 and len(val) == 2 and train.image_size == (64, 64)
    assert val.labels.tolist() == [0, 1]
    images, _, _ = collect(val, 2, train=False)[0]
    assert images.shape == (2, 3, 64, 64)
