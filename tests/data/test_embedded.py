"""The shipped Fashion-MNIST subset: content, balance, border, statistics; the dataset registry."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
import pytest
import torch

from sakd.data import channel_stats, list_datasets, load_dataset
from sakd.errors import SakdError

# sha256 of each array in fashion_mnist.npz, as printed by scripts/make_embedded_data.py.
ARRAY_SHA256 = {
    "train_images": "1c09648a17b2acf8bdf1dfff09c0eecdd1cff590079a3c9b53c8897cf4b01c91",
    "train_labels": "c9a54e6bf707245247bf724c88fc4a21e5cac18c8d2d759bc64d14a3b99c008a",
    "test_images": "e9f89eb06e8c2328785b00abd588a8528d881d7f062acd7b17be736dfe20f1f5",
    "test_labels": "793e48347f02ec9f49b10d30a93de91d185c4cfb957f09d953b1576548404082",
}


def test_embedded_file_is_small_and_holds_the_recorded_arrays_and_licence():
    source = resources.files("sakd.data").joinpath("embedded/fashion_mnist.npz")
    with source.open("rb") as handle:
        payload = handle.read()
    assert len(payload) < 3_000_000
    with source.open("rb") as handle, np.load(handle) as arrays:
        hashes = {key: hashlib.sha256(arrays[key].tobytes()).hexdigest() for key in ARRAY_SHA256}
        notice = str(arrays["notice"])
    assert hashes == ARRAY_SHA256
    assert "Copyright (c) 2017 Zalando SE" in notice and "The MIT License" in notice


@pytest.mark.parametrize(("train", "per_class"), [(True, 500), (False, 100)])
def test_embedded_splits_are_balanced_padded_gray_rgb(train, per_class):
    data = load_dataset("embedded", None, train=train)
    assert data.images.shape == (10 * per_class, 3, 32, 32) and data.images.dtype == torch.uint8
    assert torch.bincount(data.labels).tolist() == [per_class] * 10
    assert data.labels[:20].tolist() == list(range(10)) * 2
    assert torch.equal(data.images[:, 0], data.images[:, 1]) and torch.equal(
        data.images[:, 0], data.images[:, 2]
    )
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert not data.images[:, :, border].any() and data.images[:, :, 2:30, 2:30].any()
    assert data.class_names[0] == "T-shirt/top" and data.class_names[9] == "Ankle boot"
    assert data.augment.crop_padding == 4 and data.augment.horizontal_flip


def test_embedded_statistics_match_the_train_split():
    data = load_dataset("embedded", None, train=True)
    mean, std = channel_stats(data.images)
    assert data.mean == pytest.approx(mean, abs=1e-4) and data.std == pytest.approx(std, abs=1e-4)


@pytest.mark.fault("config")
def test_registry_names_and_errors():
    assert list_datasets() == [
        "embedded",
        "cifar10",
        "cifar100",
        "fashion-mnist",
        "mnist",
        "tiny-imagenet",
        "folder",
        "imagenet",
    ]
    with pytest.raises(SakdError, match="unknown dataset 'svhn'.*embedded, cifar10"):
        load_dataset("svhn", None, train=True)
    with pytest.raises(SakdError, match="32x32"):
        load_dataset("embedded", None, train=True, image_size=64)
