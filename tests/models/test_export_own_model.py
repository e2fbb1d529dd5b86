"""`sakd export`: a user module trained by `sakd train` comes back in the module's own names."""

from __future__ import annotations

import importlib
import sys
import textwrap

import pytest
import torch

from sakd.cli import main
from sakd.engine.checkpoint import extract_state_dict, load_checkpoint
from sakd.export import export
from sakd.models import create_model
from sakd.models.registry import import_factory

from ..conftest import tiny_overrides

NETS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class MyNet(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.layer2 = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
            self.drop = nn.Dropout(0.2)
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.layer2(self.layer1(x))
            return self.fc(self.drop(x.mean(dim=(2, 3))))


    def my_net(num_classes):
        return MyNet(num_classes)
    """
)


@pytest.fixture
def user_package(tmp_path, monkeypatch):
    """``ownnets_export.py`` in the current directory (not on sys.path: sakd adds it)."""
    (tmp_path / "ownnets_export.py").write_text(NETS)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    yield tmp_path
    sys.modules.pop("ownnets_export", None)


def test_export_round_trip_of_a_trained_user_model(user_package, capsys):
    run = user_package / "run"
    overrides = tiny_overrides(run, "epochs=1", "model.name=ownnets_export:my_net")
    assert main(["train", "quickstart/student", *overrides]) == 0
    out = user_package / "student.pt"
    argv = ["export", str(run), "--out", str(out), "--checkpoint", "last", "--trust-code"]
    assert main(argv) == 0
    assert "exported the last student" in capsys.readouterr().out

    state = torch.load(out, weights_only=True)
    nets = importlib.import_module("ownnets_export")
    fresh = nets.MyNet(num_classes=state["fc.weight"].shape[0])
    fresh.load_state_dict(state, strict=True)
    assert list(state) == list(fresh.state_dict())

    # The exported weights reproduce the run's student (eval logits of the checkpoint).
    data = load_checkpoint(run / "checkpoints" / "last.pt")
    staged = create_model("ownnets_export:my_net", num_classes=fresh.fc.out_features, input_size=32)
    staged.load_weights(extract_state_dict(data))
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), staged.eval()(x), rtol=0, atol=0)
    assert staged.stage_paths == ("bn1", "layer1", "layer2")


def test_export_of_a_zoo_student_and_best_by_default(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "quickstart/student", *tiny_overrides(run, "epochs=1")]) == 0
    path = export(run, tmp_path / "zoo.pt")
    state = torch.load(path, weights_only=True)
    model = create_model("resnet8", num_classes=state["head.weight"].shape[0])
    model.load_state_dict(state, strict=True)


def _one_line_error(capsys, argv, needle):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("sakd: error:") and needle in err, err


@pytest.mark.fault("api")
def test_export_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "student.pt"
    _one_line_error(capsys, ["export", str(tmp_path / "nope"), "--out", str(out)], "does not exist")
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    _one_line_error(
        capsys,
        ["export", str(tmp_path / "empty"), "--out", str(out)],
        "has not finished an epoch",
    )
    bad = tmp_path / "bad" / "checkpoints"
    bad.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(1)}}, bad / "best.pt")
    _one_line_error(
        capsys, ["export", str(tmp_path / "bad"), "--out", str(out)], "not a sakd checkpoint"
    )
    assert not out.exists()
    assert not list(tmp_path.glob(".student*"))  # no temp file left behind


def test_distill_with_an_own_teacher_checkpoint_in_its_own_names(user_package, capsys):
    my_net = import_factory("ownnets_export:MyNet")  # found in the current directory
    torch.manual_seed(0)
    teacher = user_package / "teacher.pt"
    torch.save(my_net(num_classes=10).state_dict(), teacher)  # the user's own names
    run = user_package / "distilled"
    overrides = tiny_overrides(
        run,
        "epochs=1",
        "model.name=ownnets_export:my_net",
        "teacher.name=ownnets_export:MyNet",
        f"teacher.checkpoint={teacher}",
        "distiller.name=at",
        "spots.mode=adaptive",
    )
    assert main(["distill", "quickstart", *overrides]) == 0
    out = user_package / "student.pt"
    assert main(["export", str(run), "--out", str(out), "--trust-code"]) == 0
    my_net(num_classes=10).load_state_dict(torch.load(out, weights_only=True), strict=True)
    # A teacher file that is not the teacher's state dict is one line, naming the first keys.
    torch.save({"conv1.weight": torch.zeros(1)}, teacher)
    _one_line_error(
        capsys, ["distill", "quickstart", *overrides[1:], f"output_dir={run}2"], "does not fit"
    )
