"""Damaged data is one clear error: decompression bombs, oversized decodes, malformed CIFAR pickles."""

from __future__ import annotations

import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from sakd.data import decoded, load_dataset
from sakd.data.folder import folder_files
from sakd.errors import SakdError

pytestmark = pytest.mark.fault("data")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG signature and IHDR claiming ``width`` x ``height``, a tiny IDAT, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


def test_a_decompression_bomb_is_one_line(tmp_path, formats):
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            formats.solid_image(tmp_path / split / name / "ok.png", (1, 2, 3), (8, 8))
    _png_header_only(tmp_path / "train" / "a" / "bomb.png", 100_000, 100_000)
    with pytest.raises(SakdError, match="too large to decode safely"):
        load_dataset("folder", str(tmp_path), train=True)


def test_an_image_array_too_large_for_memory_is_one_line(monkeypatch):
    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(decoded.np, "empty", no_memory)
    with pytest.raises(SakdError, match="choose a smaller data.image_size"):
        decoded.decode_images([Path("x.png")] * 10, 100_000)


@pytest.mark.parametrize(
    "batch",
    [
        {"data": [["not", "pixels"]], "labels": [0]},  # pixels as text
        {"data": {"a": 1}, "labels": [0]},  # pixels a mapping
        {"data": np.zeros((1, 3072), np.uint8), "labels": ["cat"]},  # labels as text
        {"data": np.zeros((1, 3072), np.uint8), "labels": 7},  # labels not a list
    ],
)
def test_malformed_cifar_pickles_are_one_line(tmp_path, formats, batch):
    folder = formats.write_cifar10(tmp_path, per_batch=1, test_size=1)
    with open(folder / "data_batch_3", "wb") as handle:
        pickle.dump(batch, handle, protocol=2)
    with pytest.raises(SakdError, match="replace"):
        load_dataset("cifar10", str(tmp_path), train=True)


def test_malformed_cifar_meta_is_one_line(tmp_path, formats):
    folder = formats.write_cifar10(tmp_path, per_batch=1, test_size=1)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": 10}, handle, protocol=2)
    with pytest.raises(SakdError, match="replace"):
        load_dataset("cifar10", str(tmp_path), train=False)


@pytest.mark.parametrize("kind", ["dangling link", "folder"])
def test_an_entry_named_like_an_image_that_is_no_file_is_one_line(tmp_path, formats, kind):
    for split in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            formats.solid_image(tmp_path / split / name / "ok.png", (1, 2, 3), (8, 8))
    (tmp_path / "train" / "a" / "README.txt").write_text("skipped: not named like an image")
    odd = tmp_path / "train" / "b" / "x.jpg"
    if kind == "folder":
        odd.mkdir()
    else:
        odd.symlink_to(tmp_path / "gone.jpg")
    what = "a link to nothing" if kind == "dangling link" else "no file"
    needle = f"x.jpg' is named like an image but is {what}"
    with pytest.raises(SakdError, match=needle):  # decoded into memory
        load_dataset("folder", str(tmp_path), train=True)
    with pytest.raises(SakdError, match=needle):  # listed for streaming
        folder_files(str(tmp_path), train=True)
