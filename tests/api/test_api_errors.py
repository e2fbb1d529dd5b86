"""Bad input to sakd.train / sakd.distill: one-line SakdErrors, nothing written."""

from __future__ import annotations

import pytest
import torch

import sakd
from sakd.errors import SakdError

from .conftest import OwnNet, TensorPairs


class Labels(torch.utils.data.Dataset):
    """Items that are bare labels, not (image, label) pairs."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index % 3


class Strings(Labels):
    def __getitem__(self, index):
        return "image.png", index % 3


CASES = {
    "unknown keyword": (
        lambda tree: sakd.train(OwnNet(), tree, epoch=1),
        r"sakd\.train: unknown option 'epoch'; did you mean 'epochs'\?",
    ),
    "distill-only keyword to train": (
        lambda tree: sakd.train(OwnNet(), tree, kd_weight=1.0),
        r"unknown option 'kd_weight'",
    ),
    "bad value names the keyword": (
        lambda tree: sakd.train(OwnNet(), tree, epochs=0),
        r"epochs= \(config key 'epochs'\).*greater than or equal to 1",
    ),
    "bad spot mode": (
        lambda tree: sakd.distill(OwnNet(), OwnNet(), tree, mode="sometimes"),
        r"mode= \(config key 'spots.mode'\)",
    ),
    "items not pairs": (
        lambda tree: sakd.train(OwnNet(), Labels(), Labels()),
        r"train dataset item 0 is a int: items must be \(image, label\) pairs",
    ),
    "image of the wrong type": (
        lambda tree: sakd.train(OwnNet(), Strings(), Strings()),
        r"train dataset item 0",
    ),
    "student not a module": (
        lambda tree: sakd.distill(OwnNet(), 3, tree),
        r"the student is a int: give an nn.Module object or a model name",
    ),
    "data not a dataset": (
        lambda tree: sakd.train(OwnNet(), 5),
        r"train_data is a int: give a torch Dataset",
    ),
    "dataset without val": (
        lambda tree: sakd.train(OwnNet(), TensorPairs(tree / "train")),
        r"val_data is missing",
    ),
    "folder without train/": (
        lambda tree: sakd.train(OwnNet(), tree / "val"),
        r"has no train/ folder",
    ),
    "spots= reaches both nets": (
        lambda tree: sakd.distill(OwnNet(), OwnNet(), tree, spots=["block9"]),
        r"module path 'block9' does not exist in OwnNet",
    ),
    "spots= and student_spots=": (
        lambda tree: sakd.distill(OwnNet(), OwnNet(), tree, spots=["a"], student_spots=["b"]),
        r"give spots= or student_spots=, not both",
    ),
    "unknown distiller": (
        lambda tree: sakd.distill(OwnNet(), OwnNet(), tree, distiller="nope"),
        r"nope",
    ),
    "classes differ": (
        lambda tree: sakd.train(OwnNet(num_classes=5), tree),
        r"OwnNet has 5 outputs but the data has 3 classes",
    ),
    "unknown spot path": (
        lambda tree: sakd.distill(OwnNet(), OwnNet(), tree, student_spots=["block9"]),
        r"block9",
    ),
    "teacher by name without weights": (
        lambda tree: sakd.distill("resnet8", OwnNet(), tree),
        r"teacher 'resnet8' has no weights: set teacher.checkpoint",
    ),
    "same object twice": (
        lambda tree: (lambda net: sakd.distill(net, net, tree))(OwnNet()),
        r"the teacher and the student are the same object",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, tree, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir (runs/run) would land here
    call, pattern = CASES[case]
    with pytest.raises(SakdError, match=pattern) as info:
        call(tree)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()
