"""Bad input to sakd.train / sakd.distill: one-line SakdErrors, nothing written."""

from __future__ import annotations

import pytest
import torch
from torch import nn

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


class Lying(TensorPairs):
    """Claims more items than it can give."""

    def __len__(self):
        return len(self.items) + 5


class OddLength(TensorPairs):
    """``__len__`` returns what the class sets as ``length``."""

    length: object = 2.5

    def __len__(self):
        return self.length


class NegativeLength(OddLength):
    length = -1


class BadLabels(TensorPairs):
    """Names three classes but labels some items 7."""

    classes = ("blue", "green", "red")

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return image, 7 if index == 2 else label


class Negative(TensorPairs):
    """Labels item 1 -1 (e.g. an 'ignore' marker)."""

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return image, -1 if index == 1 else label


class GrayNet(OwnNet):
    """A net whose first convolution takes one channel."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__(num_classes)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)


class HeadlessNet(nn.Module):
    """Its output comes from a pooled convolution: no nn.Linear head to find."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


class FlatNet(nn.Module):
    """Flattens 3×16×16 images into a linear layer: it takes no other size."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 8), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.body(x))


class Blank(TensorPairs):
    """Every image black."""

    def __getitem__(self, index):
        image, label = super().__getitem__(index)
        return torch.zeros_like(image), label


def _bad_checkpoint(tree, state) -> str:
    path = tree.parent / "teacher.pt"
    torch.save(state, path)
    return str(path)


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
    "teacher and student with other class counts": (
        lambda tree: sakd.distill(OwnNet(num_classes=5), OwnNet(), tree),
        r"the teacher OwnNet has 5 outputs but the data has 3 classes: build it with 3 classes",
    ),
    "labels out of range": (
        lambda tree: sakd.train(OwnNet(), BadLabels(tree / "train"), TensorPairs(tree / "val")),
        r"the train dataset has labels in \[0, 7\], outside \[0, 3\) \(3 classes, from the train "
        r"dataset's classes attribute\): fix the labels, or the train dataset's classes attribute",
    ),
    "val labels beyond the train classes": (
        lambda tree: sakd.train(OwnNet(), TensorPairs(tree / "train"), BadLabels(tree / "val")),
        r"the val dataset has labels in \[0, 7\], outside \[0, 3\) \(3 classes, from the largest "
        r"train label\): the train dataset lacks the higher classes: give it a classes attribute",
    ),
    "negative labels": (
        lambda tree: sakd.train(OwnNet(), Negative(tree / "train"), TensorPairs(tree / "val")),
        r"labels in \[-1, 2\].*fix the negative ones",
    ),
    "len lies (memory)": (
        lambda tree: sakd.train(OwnNet(), Lying(tree / "train"), TensorPairs(tree / "val")),
        r"the train dataset's len\(\) is 29 but item 24 raised IndexError.*__len__",
    ),
    "len lies (stream)": (
        lambda tree: sakd.train(
            OwnNet(), Lying(tree / "train"), TensorPairs(tree / "val"), loader="stream"
        ),
        r"the train dataset's len\(\) is 29 but item 24 raised IndexError",
    ),
    "len returns a float": (
        lambda tree: sakd.train(OwnNet(), OddLength(tree / "train"), TensorPairs(tree / "val")),
        r"the train dataset's __len__ returned 2\.5: make it return the number of items",
    ),
    "len returns a negative number": (
        lambda tree: sakd.train(
            OwnNet(), TensorPairs(tree / "train"), NegativeLength(tree / "val")
        ),
        r"the val dataset's __len__ returned -1: make it return the number of items",
    ),
    "no findable head": (
        lambda tree: sakd.train(HeadlessNet(), tree),
        r"cannot find the head of HeadlessNet.*head='path'",
    ),
    "spots not a list": (
        lambda tree: sakd.distill(OwnNet(), OwnNet(), tree, spots="block1"),
        r"student_spots= \(config key 'model.stages'\).*valid list",
    ),
    "cuda without CUDA": (
        lambda tree: sakd.train(OwnNet(), tree, device="cuda:0"),
        r"device 'cuda:0' requested but CUDA is not available: use device=cpu",
    ),
    "teacher checkpoint with wrong keys": (
        lambda tree: sakd.distill(
            "tests.api.conftest:OwnNet",
            OwnNet(),
            tree,
            teacher_checkpoint=_bad_checkpoint(tree, {"fc.weight": torch.zeros(3, 16)}),
        ),
        r"teacher checkpoint .* does not fit the architecture of OwnNet: \d+ missing",
    ),
    "teacher checkpoint with wrong shapes": (
        lambda tree: sakd.distill(
            "tests.api.conftest:OwnNet",
            OwnNet(),
            tree,
            teacher_checkpoint=_bad_checkpoint(tree, OwnNet(width=4).state_dict()),
        ),
        r"does not fit the architecture of OwnNet: 18 wrong shape \(conv1.weight",
    ),
    "a first layer for one channel": (
        lambda tree: sakd.train(GrayNet(), tree),
        r"GrayNet.*conv1 takes 1 input channel.*sakd feeds 3-channel",
    ),
    "a model for another image size": (
        lambda tree: sakd.train(FlatNet(), tree),  # the folder is read at 32x32 by default
        r"probe forward of FlatNet on a 32×32 input failed .*: feed the size the model expects: "
        r"data.image_size=N \(sakd.train / sakd.distill: image_size=N",
    ),
    "blank images": (
        lambda tree: sakd.train(OwnNet(), Blank(tree / "train"), Blank(tree / "val")),
        r"the train dataset's images have no spread to normalise by \(channel 0 is 0 everywhere",
    ),
}


@pytest.mark.fault("api")
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_writes_nothing(case, tree, tmp_path, monkeypatch):
    if case == "cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)  # the default output_dir (runs/run) would land here
    call, pattern = CASES[case]
    with pytest.raises(SakdError, match=pattern) as info:
        call(tree)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "runs").exists()


class IntClasses(TensorPairs):
    """``classes`` holds the number of classes, not their names."""

    classes = 3


@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_an_integer_classes_attribute_is_the_class_count(tree, tmp_path, loader):
    run = sakd.train(
        OwnNet(),
        IntClasses(tree / "train"),
        IntClasses(tree / "val"),
        epochs=1,
        loader=loader,
        output_dir=tmp_path / "run",
    )
    assert run.best_epoch == 1
    info = (tmp_path / "run" / "run.json").read_text()
    assert '"num_classes": 3' in info


@pytest.mark.fault("api")
@pytest.mark.parametrize(
    ("classes", "needle"),
    [
        (2.5, r"classes attribute is a float"),
        (0, r"classes attribute is 0: as a number it is the number of classes \(at least 1\)"),
        (-3, r"classes attribute is -3: as a number"),
        ("rgb", r"classes attribute is the string 'rgb': .* make it a list of names"),
        ([], r"classes attribute is empty"),
    ],
)
def test_classes_that_are_no_names_are_one_line(tree, tmp_path, classes, needle):
    data = TensorPairs(tree / "train")
    data.classes = classes
    with pytest.raises(SakdError, match=r"the train dataset's " + needle) as info:
        sakd.train(OwnNet(), data, TensorPairs(tree / "val"), output_dir=tmp_path / "run")
    assert "\n" not in str(info.value) and not (tmp_path / "run").exists()


class Broken(TensorPairs):
    """The user's own bug: item 5 raises."""

    def __getitem__(self, index):
        if index == 5:
            raise KeyError("no annotation for image 5")
        return super().__getitem__(index)


@pytest.mark.fault("user-code")
@pytest.mark.parametrize("loader", ["memory", "stream"])
def test_a_datasets_own_exception_keeps_its_type_with_the_sample_index(tree, tmp_path, loader):
    with pytest.raises(KeyError, match="no annotation for image 5") as info:
        sakd.train(
            OwnNet(),
            Broken(tree / "train"),
            TensorPairs(tree / "val"),
            loader=loader,
            output_dir=tmp_path / "run",
        )
    notes = getattr(info.value, "__notes__", [])
    assert notes == ["sakd: raised by the train dataset's __getitem__(5)"], notes
    # The user's traceback is kept: its last frame is their __getitem__.
    assert info.traceback[-1].name == "__getitem__"
    assert not (tmp_path / "run").exists()


@pytest.mark.fault("user-code")
def test_a_datasets_own_exception_from_len_keeps_its_type_with_a_note(tree, tmp_path, monkeypatch):
    class Unready(TensorPairs):
        def __len__(self):
            raise RuntimeError("index file not loaded")

    monkeypatch.chdir(tmp_path)  # the default output_dir (runs/run) would land here
    with pytest.raises(RuntimeError, match="index file not loaded") as info:
        sakd.train(OwnNet(), TensorPairs(tree / "train"), Unready(tree / "val"))
    assert getattr(info.value, "__notes__", []) == ["sakd: raised by the val dataset's __len__()"]
    assert info.traceback[-1].name == "__len__"
    assert not (tmp_path / "runs").exists()


@pytest.mark.fault("user-code")
@pytest.mark.parametrize("workers", [0, 2])  # 2: torch re-raises it from a worker process
def test_a_streamed_datasets_exception_during_training_names_the_index(tree, tmp_path, workers):
    class Late(TensorPairs):
        """Raises only when an image is read for a batch (labels come from ``targets``)."""

        def __init__(self, split):
            super().__init__(split)
            self.targets = [label for _, label in self.items]

        def __getitem__(self, index):
            if index == 3:
                raise OSError("disk gone")
            return super().__getitem__(index)

    with pytest.raises(OSError, match="disk gone") as info:
        sakd.train(
            OwnNet(),
            Late(tree / "train"),
            TensorPairs(tree / "val"),
            loader="stream",
            workers=workers,
            epochs=1,
            output_dir=tmp_path / "run",
        )
    assert getattr(info.value, "__notes__", []) == [
        "sakd: raised by the train dataset's __getitem__(3)"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.fault("api")
def test_load_export_mistakes_are_one_line(tmp_path):
    weights = tmp_path / "student.pt"
    with pytest.raises(SakdError, match=r"model is a str: give a fresh instance") as info:
        sakd.load_export(weights, "resnet8")
    assert "\n" not in str(info.value)
    # The weights file itself is missing: named as such (not its .json card).
    with pytest.raises(
        SakdError, match=r"student\.pt' does not exist: give the file `sakd export`"
    ):
        sakd.load_export(weights, OwnNet())
