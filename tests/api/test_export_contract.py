"""The export carries its input contract: docs/api.md's reload recipe reproduces the run's top-1.

The recipe ("Deploying an export") is extracted from the page and run as written, on raw images
the run never saw normalised: the embedded data's uint8 tensors (a split held in memory, whose
mean/std sakd computed) and PNG files of a class-folder tree (streamed: resize + centre crop).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

import sakd
from sakd.cli import main
from sakd.data.embedded import load_embedded
from sakd.engine.rundir import RunFolder
from sakd.errors import SakdError

from .conftest import write_tree

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _recipe() -> str:
    blocks = re.findall(r"```python\n(.*?)```", API_DOC.read_text(), flags=re.S)
    return next(code for code in blocks if code.startswith("# reload an export"))


class MyNet(nn.Module):
    """The recipe's architecture: a small CNN (strided convs, BN, ReLU)."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.layer2 = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.fc(self.layer2(self.layer1(x)).mean(dim=(2, 3)))


class RawImages(torch.utils.data.Dataset):
    """(uint8 3x32x32, label) items of the embedded data: raw pixels, as a deployer has them."""

    def __init__(self, train: bool, count: int) -> None:
        split = load_embedded(train, None)
        self.images, self.labels = split.images[:count], split.labels[:count].tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def _run_recipe(tmp_path, monkeypatch, capsys, val_ds, net_class) -> float:
    monkeypatch.chdir(tmp_path)
    namespace = {"MyNet": net_class, "val_ds": val_ds}
    exec(compile(_recipe(), str(API_DOC), "exec"), namespace)
    printed = capsys.readouterr().out
    return float(re.search(r"top-1 ([\d.]+)%", printed).group(1))


def test_reload_recipe_reproduces_the_runs_top1_from_raw_uint8_images(
    tmp_path, monkeypatch, capsys
):
    torch.manual_seed(0)
    train_ds, val_ds = RawImages(True, 256), RawImages(False, 200)
    run = sakd.train(
        MyNet(),
        train_ds,
        val_ds,
        epochs=1,
        batch_size=32,
        lr=0.1,
        progress=False,
        device="cpu",
        output_dir=str(tmp_path / "run"),
    )
    info = RunFolder(run.output_dir).read_info()
    contract = info.input
    assert contract is not None and contract.size == (32, 32) and contract.resize is None
    # The mean sakd computed from the training split: not ImageNet's, not the embedded constant.
    expected = train_ds.images.double().div(255).mean().item()
    assert contract.mean == pytest.approx((expected,) * 3, abs=1e-6)
    capsys.readouterr()
    run.export(tmp_path / "student.pt")
    card = json.loads((tmp_path / "student.json").read_text())
    assert card["architecture"].endswith("MyNet") and card["checkpoint"] == "best"
    assert card["top1"] == pytest.approx(run.best_top1)
    assert card["mean"] == list(contract.mean) and card["input_size"] == [32, 32]
    assert card["class_names"] == [str(k) for k in range(10)]
    top1 = _run_recipe(tmp_path, monkeypatch, capsys, val_ds, MyNet)
    assert top1 == pytest.approx(run.best_top1, abs=0.005)
    # A batch, one image at a time, and [0, 1] floats all give the same input.
    model, transform = sakd.load_export(tmp_path / "student.pt", MyNet())
    images = torch.stack([img for img, _ in val_ds])
    assert torch.equal(transform(images), torch.stack([transform(img) for img in images]))
    assert torch.equal(transform(images.float() / 255), transform(images))


def test_reload_recipe_on_a_streamed_folder_run_resizes_and_crops_like_evaluation(
    tmp_path, monkeypatch, capsys
):
    torch.manual_seed(0)
    root = write_tree(tmp_path / "images", per_class=(6, 5), size=20)
    run = sakd.train(
        MyNet(num_classes=3),
        root,
        epochs=1,
        batch_size=8,
        image_size=16,
        loader="stream",
        workers=0,
        progress=False,
        device="cpu",
        output_dir=str(tmp_path / "run"),
    )
    contract = RunFolder(run.output_dir).read_info().input
    assert (contract.resize, contract.crop, contract.size) == (18, 16, (16, 16))
    assert contract.class_names == ("blue", "green", "red")
    capsys.readouterr()
    run.export(tmp_path / "student.pt")
    val_ds = [
        (Image.open(path).convert("RGB"), label)
        for label, name in enumerate(contract.class_names)
        for path in sorted((root / "val" / name).iterdir())
    ]

    class Three(MyNet):
        def __init__(self, num_classes: int = 10, width: int = 8) -> None:
            super().__init__(num_classes=3, width=width)

    top1 = _run_recipe(tmp_path, monkeypatch, capsys, val_ds, Three)
    assert top1 == pytest.approx(run.best_top1, abs=0.005)
    _, transform = sakd.load_export(tmp_path / "student.pt", Three())
    assert transform(val_ds[0][0]).shape == (3, 16, 16)


@pytest.mark.fault("api")
def test_cli_export_writes_the_card_and_load_export_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "run"
    from ..conftest import tiny_overrides

    assert main(["train", "quickstart/student", *tiny_overrides(out, "epochs=1")]) == 0
    assert main(["export", str(out), "--out", str(tmp_path / "student.pt")]) == 0
    card = json.loads((tmp_path / "student.json").read_text())
    assert card["architecture"] == "resnet8" and card["crop"] is None
    assert card["mean"] == pytest.approx([0.2200] * 3) and card["input_size"] == [32, 32]
    assert card["class_names"][0] == "T-shirt/top"
    from sakd.models import create_source_module

    model, _ = sakd.load_export(tmp_path / "student.pt", create_source_module("resnet8", 10))
    assert not model.training
    with pytest.raises(SakdError, match="does not fit"):
        sakd.load_export(tmp_path / "student.pt", MyNet())
    (tmp_path / "student.json").unlink()
    with pytest.raises(SakdError, match="student.json.*does not exist"):
        sakd.load_export(tmp_path / "student.pt", MyNet())
    assert main(["export", str(out), "--out", str(tmp_path / "x.json")]) != 0
    assert not (tmp_path / "x.json").exists()


def test_old_run_folder_without_contract_still_exports(tmp_path):
    from ..conftest import tiny_overrides

    out = tmp_path / "run"
    assert main(["train", "quickstart/student", *tiny_overrides(out, "epochs=1")]) == 0
    info = json.loads((out / "run.json").read_text())
    del info["input"]
    (out / "run.json").write_text(json.dumps(info))
    assert RunFolder(out).read_info().input is None
    assert main(["export", str(out), "--out", str(tmp_path / "student.pt")]) == 0
    card = json.loads((tmp_path / "student.json").read_text())
    assert "mean" not in card and card["architecture"] == "resnet8"
    from sakd.models import create_source_module

    with pytest.raises(SakdError, match="older sakd"):
        sakd.load_export(tmp_path / "student.pt", create_source_module("resnet8", 10))
