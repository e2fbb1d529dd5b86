"""Any torch Dataset of (image, label) as a source: materialised in memory or streamed."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

from sakd.data import ImageSet, StreamSet, from_dataset, iterate_source, normalize
from sakd.errors import SakdError


class Items(Dataset):
    """``count`` items of ``kind`` images (uint8 / float / pil / gray) of size ``size``."""

    def __init__(self, count, kind="uint8", size=(12, 12), classes=3, targets=False, seed=0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randint(
            0, 256, (count, 3, *size), dtype=torch.uint8, generator=generator
        )
        self.labels = [i % classes for i in range(count)]
        self.kind = kind
        self.reads = 0
        if targets:
            self.targets = list(self.labels)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        self.reads += 1
        image = self.images[index]
        if self.kind == "float":
            image = image.float() / 255
        elif self.kind == "pil":
            image = Image.fromarray(image.permute(1, 2, 0).numpy())
        elif self.kind == "gray":
            image = image[:1]
        elif self.kind == "numpy":
            image = image.numpy()
        return image, torch.tensor(self.labels[index])


@pytest.mark.parametrize("kind", ["uint8", "float", "pil", "numpy"])
def test_small_datasets_are_materialised_exactly(kind):
    train, val = from_dataset(Items(9, kind), Items(4, kind, seed=1))
    assert isinstance(train, ImageSet) and isinstance(val, ImageSet)
    assert torch.equal(train.images, Items(9).images)  # float k/255 rounds back to k
    assert train.labels.tolist() == [0, 1, 2] * 3 and train.num_classes == 3
    assert train.augment.crop_padding == 12 // 8 and train.augment.horizontal_flip
    images, labels, index = next(iterate_source(val, 4, train=False, seed=0, epoch=0))
    torch.testing.assert_close(images, normalize(Items(4, seed=1).images, val.mean, val.std))


def test_gray_images_are_repeated_to_three_channels():
    train, _ = from_dataset(Items(3, "gray"), Items(2, "gray"))
    assert torch.equal(train.images[:, 0], train.images[:, 2])


def test_num_classes_and_class_names():
    data = Items(6, classes=2)
    data.classes = ["cat", "dog"]
    train, _ = from_dataset(data, Items(2, classes=2))
    assert train.class_names == ["cat", "dog"] and train.num_classes == 2
    train, _ = from_dataset(Items(6, classes=2), Items(2, classes=2), num_classes=5)
    assert train.num_classes == 5 and train.class_names == ["0", "1", "2", "3", "4"]
    with pytest.raises(SakdError, match=r"outside \[0, 2\)"):
        from_dataset(Items(6, classes=2), Items(4, classes=4), num_classes=2)


def test_streamed_dataset_gives_the_streaming_transforms():
    data = Items(10, size=(20, 30), targets=True)
    train, val = from_dataset(data, Items(4, size=(20, 30)), loader="stream", image_size=16)
    assert isinstance(train, StreamSet) and train.image_size == (16, 16)
    assert data.reads == 1  # labels came from .targets; only item 0 was read (for its size)
    batches = list(iterate_source(train, 4, train=True, seed=1, epoch=0))
    assert [b[0].shape for b in batches] == [(4, 3, 16, 16), (4, 3, 16, 16), (2, 3, 16, 16)]
    again = list(iterate_source(train, 4, train=True, seed=1, epoch=0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    eval_images, _, _ = next(iterate_source(val, 4, train=False, seed=0, epoch=0))
    assert eval_images.shape == (4, 3, 16, 16)
    default = from_dataset(data, Items(4, size=(20, 30)), loader="stream")[0]
    assert default.image_size == (20, 20)  # the shorter side of item 0


class RandomTransformItems(Items):
    """Items whose own augmentation draws from torch's and Python's global generators."""

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        shift = int(torch.randint(0, 4, (1,))) + random.randint(0, 3)
        return image.roll(shift, dims=-1), label


def test_a_datasets_own_randomness_is_seeded_per_sample_and_leaves_global_state_alone():
    train, _ = from_dataset(RandomTransformItems(8, targets=True), Items(2), loader="stream")
    state, py_state = torch.get_rng_state(), random.getstate()
    first = [b[0] for b in iterate_source(train, 3, train=True, seed=0, epoch=0)]
    assert torch.equal(torch.get_rng_state(), state) and random.getstate() == py_state
    torch.manual_seed(123)
    random.seed(123)
    second = [b[0] for b in iterate_source(train, 3, train=True, seed=0, epoch=0)]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_auto_streams_what_does_not_fit(monkeypatch):
    from sakd.data import sources

    monkeypatch.setattr(sources, "MEMORY_LIMIT_BYTES", 3 * 12 * 12 * 5)
    small, _ = from_dataset(Items(5), Items(2))
    large, _ = from_dataset(Items(6, targets=True), Items(2))
    assert isinstance(small, ImageSet) and isinstance(large, StreamSet)


@pytest.mark.fault("user-code")
@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ([], "empty"),
        ([(torch.zeros(3, 4, 4), 0.5)], "integer class indices"),
        ([(torch.zeros(4, 4), 0)], "C x H x W"),
        ([(torch.full((3, 4, 4), 2.0), 0)], r"float images in \[0, 1\]"),
        ([("a path", 0)], "is a str"),
        ([torch.zeros(3, 4, 4)], "is a Tensor"),
    ],
)
def test_bad_items_are_one_clear_error(dataset, message):
    with pytest.raises(SakdError, match=message):
        from_dataset(dataset, [(torch.zeros(3, 4, 4, dtype=torch.uint8), 0)])


def test_mixed_sizes_need_the_streaming_loader():
    mixed = [
        (torch.zeros(3, 8, 8, dtype=torch.uint8), 0),
        (torch.zeros(3, 9, 8, dtype=torch.uint8), 1),
    ]
    with pytest.raises(SakdError, match="loader='stream'"):
        from_dataset(mixed, mixed, loader="memory")
    train, _ = from_dataset(mixed, mixed, loader="stream", image_size=8)
    images, _, _ = next(iterate_source(train, 2, train=True, seed=0, epoch=0))
    assert images.shape == (2, 3, 8, 8)


def test_numpy_labels_and_augment_off():
    # Not blank: images with no spread are refused where their statistics are computed.
    image = np.arange(192, dtype=np.uint8).reshape(3, 8, 8)
    data = [(image, np.int64(1)) for _ in range(4)]
    train, _ = from_dataset(data, data, augment=False)
    assert train.labels.tolist() == [1] * 4 and train.augment.crop_padding == 0
    assert not train.augment.horizontal_flip
