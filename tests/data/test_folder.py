"""ImageFolder-style user data: layout, resizing, class order, train statistics, bad trees."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sakd.data import channel_stats, load_dataset
from sakd.errors import SakdError


def write_tree(root: Path, formats, eval_name: str = "val") -> Path:
    """train/{dog,cat,bird}, val/{cat,dog} with PNG/JPG/BMP of assorted sizes and one stray text file."""
    colors = {"bird": (250, 250, 0), "cat": (255, 0, 0), "dog": (0, 0, 255)}
    for split, counts in (
        ("train", {"dog": 3, "cat": 2, "bird": 1}),
        (eval_name, {"cat": 1, "dog": 2}),
    ):
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for k in range(count):
                extension = (".png", ".JPG", ".bmp")[k % 3]
                formats.solid_image(folder / f"{k}{extension}", colors[name], (40 + 10 * k, 30))
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def test_train_split_is_resized_sorted_and_normalised_by_its_own_statistics(tmp_path, formats):
    write_tree(tmp_path, formats)
    data = load_dataset("folder", str(tmp_path), train=True)
    assert data.class_names == ["bird", "cat", "dog"] and data.num_classes == 3
    assert data.images.shape == (6, 3, 32, 32)
    assert data.labels.tolist() == [0, 1, 2, 1, 2, 2]
    assert data.images[0, :, 16, 16].tolist() == [250, 250, 0] and data.images[
        1, :, 16, 16
    ].tolist() == [255, 0, 0]
    mean, std = channel_stats(data.images)
    assert data.mean == pytest.approx(mean) and data.std == pytest.approx(std)
    assert data.mean[0] == pytest.approx((250 + 2 * 255) / 6 / 255, abs=1e-3)
    assert data.augment.crop_padding == 4


@pytest.mark.parametrize("eval_name", ["val", "test"])
def test_eval_split_uses_train_classes_and_statistics(tmp_path, formats, eval_name):
    write_tree(tmp_path, formats, eval_name)
    train = load_dataset("folder", str(tmp_path), train=True, image_size=16)
    evaluation = load_dataset("folder", str(tmp_path), train=False, image_size=16)
    assert evaluation.images.shape == (3, 3, 16, 16)
    assert evaluation.labels.tolist() == [1, 2, 2] and evaluation.class_names == train.class_names
    assert (evaluation.mean, evaluation.std) == (train.mean, train.std)
    assert torch.equal(evaluation.images[0, :, 8, 8], torch.tensor([255, 0, 0], dtype=torch.uint8))


@pytest.mark.fault("data")
def test_bad_trees_raise_sakd_error(tmp_path, formats):
    with pytest.raises(SakdError, match="train not found"):
        load_dataset("folder", str(tmp_path), train=True)
    with pytest.raises(SakdError, match="needs a data root"):
        load_dataset("folder", None, train=True)
    write_tree(tmp_path, formats)
    (tmp_path / "val" / "fish").mkdir()
    formats.solid_image(tmp_path / "val" / "fish" / "0.png", (1, 1, 1), (8, 8))
    with pytest.raises(SakdError, match="fish has no counterpart"):
        load_dataset("folder", str(tmp_path), train=False)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(SakdError, match="empty holds no"):
        load_dataset("folder", str(tmp_path), train=True)
    (tmp_path / "train" / "empty").rmdir()
    for path in sorted((tmp_path / "val").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (tmp_path / "val").rmdir()
    with pytest.raises(SakdError, match="neither val/ nor test/"):
        load_dataset("folder", str(tmp_path), train=False)
