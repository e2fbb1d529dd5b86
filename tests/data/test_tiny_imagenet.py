"""Tiny-ImageNet reader on a generated official-layout tree, and its decoded-array cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sakd.data import decoded, load_dataset
from sakd.errors import SakdError

WNIDS = [
    "n03000000",
    "n01000000",
    "n02000000",
]  # wnids.txt order is not sorted; labels follow sorted order
COLORS = {"n01000000": (200, 30, 30), "n02000000": (30, 200, 30), "n03000000": (30, 30, 200)}
VAL = [
    ("val_2.JPEG", "n03000000"),
    ("val_0.JPEG", "n02000000"),
    ("val_1.JPEG", "n01000000"),
    ("val_10.JPEG", "n01000000"),
]


def write_tree(parent: Path, formats, train_counts=(3, 2, 2)) -> Path:
    """tiny-imagenet-200 with 3 classes: train JPEGs of one colour per class (one grayscale), val, words."""
    folder = parent / "tiny-imagenet-200"
    (folder / "val" / "images").mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    (folder / "words.txt").write_text(
        "n01000000\tgoldfish, Carassius auratus\nn02000000\tcrane\nn09999999\tunused\n"
    )
    for wnid, count in zip(sorted(WNIDS), train_counts, strict=True):
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for k in range(count):
            formats.solid_image(images / f"{wnid}_{k}.JPEG", COLORS[wnid], (64, 64))
    formats.solid_image(
        folder / "train" / "n02000000" / "images" / "n02000000_9.JPEG",
        (90, 90, 90),
        (64, 64),
        mode="L",
    )
    lines = []
    for name, wnid in VAL:
        formats.solid_image(folder / "val" / "images" / name, COLORS[wnid], (64, 64))
        lines.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return folder


def mean_colors(images: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(round(v) for v in image.float().mean(dim=(1, 2)).tolist()) for image in images]


def close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= 3 for x, y in zip(a, b, strict=True))


def test_train_split_labels_names_and_pixels(tmp_path, formats):
    write_tree(tmp_path, formats)
    data = load_dataset("tiny-imagenet", str(tmp_path), train=True)
    assert data.images.shape == (8, 3, 64, 64) and data.images.dtype == torch.uint8
    assert data.num_classes == 3
    assert data.class_names == ["goldfish, Carassius auratus", "crane", "n03000000"]
    assert data.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]  # round-robin over sorted wnids
    expected = [COLORS["n01000000"], COLORS["n02000000"], COLORS["n03000000"]] * 2 + [
        COLORS["n01000000"],
        (90, 90, 90),
    ]
    assert all(
        close(got, want) for got, want in zip(mean_colors(data.images), expected, strict=True)
    )
    assert data.augment.crop_padding == 0 and data.augment.horizontal_flip
    assert data.mean == (0.4914, 0.4822, 0.4465) and data.std == (0.2023, 0.1994, 0.2010)


def test_val_split_follows_annotations_sorted_by_file_name(tmp_path, formats):
    folder = write_tree(tmp_path, formats)
    data = load_dataset("tiny-imagenet", str(folder), train=False)
    assert data.labels.tolist() == [1, 0, 0, 2]  # val_0, val_1, val_10, val_2
    assert all(
        close(c, COLORS[w])
        for c, w in zip(
            mean_colors(data.images),
            ["n02000000", "n01000000", "n01000000", "n03000000"],
            strict=True,
        )
    )


def test_decoded_arrays_are_cached_and_invalidated(tmp_path, formats, monkeypatch):
    folder = write_tree(tmp_path, formats)
    first = load_dataset("tiny-imagenet", str(tmp_path), train=True)
    cached = list((folder / ".sakd-cache").glob("train-64px-*.npz"))
    assert len(cached) == 1 and not list((folder / ".sakd-cache").glob("*.part"))

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again despite a valid cache")

    monkeypatch.setattr(decoded, "decode_images", no_decoding)
    second = load_dataset("tiny-imagenet", str(tmp_path), train=True)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    monkeypatch.undo()
    formats.solid_image(
        folder / "train" / "n03000000" / "images" / "n03000000_7.JPEG", (1, 2, 3), (64, 64)
    )
    third = load_dataset("tiny-imagenet", str(tmp_path), train=True)
    assert len(third) == 9
    remaining = list((folder / ".sakd-cache").glob("train-64px-*.npz"))
    assert len(remaining) == 1 and remaining != cached


def test_image_size_resizes(tmp_path, formats):
    write_tree(tmp_path, formats)
    assert load_dataset(
        "tiny-imagenet", str(tmp_path), train=False, image_size=32
    ).images.shape == (4, 3, 32, 32)


@pytest.mark.fault("data")
def test_bad_layouts_raise_sakd_error(tmp_path, formats):
    with pytest.raises(SakdError, match="wnids.txt.*cs231n"):
        load_dataset("tiny-imagenet", str(tmp_path), train=True, download=True)
    folder = write_tree(tmp_path, formats)
    for image in (folder / "train" / "n02000000" / "images").iterdir():
        image.unlink()
    with pytest.raises(SakdError, match="n02000000/images holds no JPEG"):
        load_dataset("tiny-imagenet", str(tmp_path), train=True)
    (folder / "train" / "n02000000" / "images").rmdir()
    with pytest.raises(SakdError, match="n02000000/images is missing"):
        load_dataset("tiny-imagenet", str(tmp_path), train=True)
    (folder / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn07777777\t0\t0\t1\t1\n")
    with pytest.raises(SakdError, match="val_annotations.txt:1"):
        load_dataset("tiny-imagenet", str(tmp_path), train=False)
    (folder / "val" / "val_annotations.txt").write_text("val_99.JPEG\tn01000000\t0\t0\t1\t1\n")
    with pytest.raises(SakdError, match="val_99.JPEG is listed"):
        load_dataset("tiny-imagenet", str(tmp_path), train=False)


@pytest.mark.fault("data")
def test_corrupt_image_names_the_file(tmp_path, formats):
    folder = write_tree(tmp_path, formats)
    (folder / "val" / "images" / "val_1.JPEG").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(SakdError, match="cannot decode image .*val_1.JPEG"):
        load_dataset("tiny-imagenet", str(tmp_path), train=False)


def test_unreadable_cache_and_unwritable_folder_fall_back_to_decoding(
    tmp_path, formats, monkeypatch
):
    folder = write_tree(tmp_path, formats)
    reference = load_dataset("tiny-imagenet", str(tmp_path), train=False)
    (cache_file,) = (folder / ".sakd-cache").glob("val-64px-*.npz")
    cache_file.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable cache"):
        assert torch.equal(
            load_dataset("tiny-imagenet", str(tmp_path), train=False).images, reference.images
        )

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    cache_file.unlink()
    monkeypatch.setattr(decoded, "_write_atomically", read_only)
    with pytest.warns(UserWarning, match="could not cache"):
        assert torch.equal(
            load_dataset("tiny-imagenet", str(tmp_path), train=False).images, reference.images
        )
    assert not list((folder / ".sakd-cache").glob("*.npz"))
