"""sakd.train / sakd.distill on the user's own (non-zoo) teacher and student classes."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import sakd
from sakd.cli import main
from sakd.data import iterate_source
from sakd.engine.build import load_data
from sakd.engine.checkpoint import sha256_file
from sakd.errors import SakdError

from .conftest import OwnNet, TensorPairs

TINY = dict(epochs=1, batch_size=8, progress=False, seed=0)


def _top1(module: torch.nn.Module, source) -> float:
    """Top-1 (%) of a plain nn.Module on an evaluation source (sakd's eval transform)."""
    module.eval()
    hits = total = 0
    with torch.no_grad():
        for images, labels, _ in iterate_source(source, 5, train=False, seed=0, epoch=0):
            hits += int((module(images).argmax(1) == labels).sum())
            total += labels.numel()
    return 100.0 * hits / total


def test_own_classes_distilled_adaptively_come_back_as_the_users_objects(tree, tmp_path, capsys):
    torch.manual_seed(0)
    teacher, student = OwnNet(width=12), OwnNet(width=6)
    names = list(student.state_dict())
    teacher_run = sakd.train(teacher, tree, output_dir=str(tmp_path / "t"), lr=0.1, **TINY)
    assert teacher_run.model is teacher
    frozen_before = {k: v.clone() for k, v in teacher.state_dict().items()}

    run = sakd.distill(
        teacher_run,
        student,
        tree / "train",
        tree / "val",
        distiller="at",
        mode="adaptive",
        output_dir=str(tmp_path / "s"),
        **TINY,
    )
    assert run.model is student and type(run.model) is OwnNet
    assert list(run.model.state_dict()) == names
    assert run.output_dir == tmp_path / "s" and 0 <= run.last_top1 <= run.best_top1 <= 100
    # The teacher was frozen during the run, and is given back as it was (gradients on).
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, frozen_before[key]), key
    assert all(p.requires_grad for p in teacher.parameters())

    # The same engine wrote the run folder; config.yaml records the objects by class name.
    saved = yaml.safe_load((run.output_dir / "config.yaml").read_text())
    assert saved["model"]["name"] == "object:tests.api.conftest.OwnNet"
    assert saved["teacher"]["name"] == "object:tests.api.conftest.OwnNet"
    assert saved["teacher"]["checkpoint"] is None
    assert saved["distiller"]["name"] == "at" and saved["spots"]["mode"] == "adaptive"
    assert saved["data"]["name"] == "folder" and saved["data"]["root"] == str(tree)
    info = json.loads((run.output_dir / "run.json").read_text())
    assert len(info["teacher_sha256"]) == 64
    records = [json.loads(line) for line in (run.output_dir / "metrics.jsonl").open()]
    assert len(records) == 1 and "spot_rates" in records[0]
    assert records[-1]["test_top1"] == pytest.approx(run.last_top1)
    assert list((run.output_dir / "tb").iterdir())

    # Exported weights load strictly into a fresh instance and reproduce the last top-1.
    out = run.export(tmp_path / "student.pt", checkpoint="last")
    fresh = OwnNet(width=6)
    fresh.load_state_dict(torch.load(out, weights_only=True), strict=True)
    _, val = load_data(run.config)
    assert _top1(fresh, val) == pytest.approx(run.last_top1)
    # `sakd export` rebuilds models by name: for a run of objects it says to use run.export.
    assert main(["export", str(run.output_dir), "--out", str(tmp_path / "cli.pt")]) != 0
    err = capsys.readouterr().err.strip()
    assert "trained from a Python object" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cli.pt").exists()
    # run.model holds those same last weights.
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, run.model.state_dict()[key]), key

    # config.yaml names the teacher's class only: resuming with other weights is refused.
    with pytest.raises(SakdError, match="distilled from a teacher with other weights"):
        sakd.distill(
            OwnNet(width=12),
            OwnNet(width=6),
            tree,
            distiller="at",
            mode="adaptive",
            output_dir=str(tmp_path / "s"),
            **TINY,
        )


def test_datasets_of_tensors_and_resume_of_a_finished_run(tree, tmp_path):
    torch.manual_seed(1)
    train_ds, val_ds = TensorPairs(tree / "train"), TensorPairs(tree / "val")
    model = OwnNet(width=6)
    first = sakd.train(model, train_ds, val_ds, output_dir=str(tmp_path / "r"), **TINY)
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["data"]["name"] == "object:tests.api.conftest.TensorPairs"
    assert saved["data"]["workers"] == 0

    # Again with a fresh object of the same class: the finished run is resumed, not retrained,
    # and its weights come back in the new object.
    again = OwnNet(width=6)
    second = sakd.train(again, train_ds, val_ds, output_dir=str(tmp_path / "r"), **TINY)
    assert second.last_top1 == pytest.approx(first.last_top1)
    assert second.best_top1 == pytest.approx(first.best_top1)
    for key, value in again.state_dict().items():
        assert torch.equal(value, trained[key]), key

    # A different object (another class) is a different configuration: refused, one line.
    class Other(OwnNet):
        pass

    with pytest.raises(SakdError, match=r"different configuration \(model differ"):
        sakd.train(Other(width=6), train_ds, val_ds, output_dir=str(tmp_path / "r"), **TINY)


def test_zoo_names_and_float_images(tree, tmp_path):
    class Floats(TensorPairs):
        def __getitem__(self, index):
            image, label = self.items[index]
            return image.float() / 255, label

    run = sakd.train(
        "resnet8",
        Floats(tree / "train"),
        Floats(tree / "val"),
        output_dir=str(tmp_path / "z"),
        **{"data.loader": "stream"},
        **TINY,
    )
    assert isinstance(run.model, sakd.api.StagedNet)
    assert run.model.head.out_features == 3
    info = json.loads((run.output_dir / "run.json").read_text())
    assert info["data_loader"] == "stream" and info["train_size"] == 24

    # A teacher by zoo name with its checkpoint file, distilled into an own student.
    checkpoint = run.output_dir / "checkpoints" / "best.pt"
    student = OwnNet(width=4)
    distilled = sakd.distill(
        "resnet8",
        student,
        tree,
        teacher_checkpoint=str(checkpoint),
        output_dir=str(tmp_path / "zs"),
        **TINY,
    )
    assert distilled.model is student
    info = json.loads((distilled.output_dir / "run.json").read_text())
    assert info["teacher_sha256"] == sha256_file(checkpoint)
