"""A user's own nn.Module, named as `package.module:factory` and split at module paths, end to end."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from sakd.cli import main

from ..conftest import tiny_overrides

USER_MODULE = textwrap.dedent(
    """
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
            self.layer2 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(32, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.layer2(self.layer1(self.stem(x)))))


    def build(num_classes=10):
        return TinyNet(num_classes)
    """
)


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_user_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_user_models:build"
    sys.modules.pop("my_user_models", None)


def _model_overrides(name: str) -> list[str]:
    return [
        f"model.name={name}",
        "model.stem=stem",
        "model.stages=[layer1, layer2]",
        "model.head=fc",
    ]


def test_train_and_distil_a_user_model(tmp_path, user_module, capsys):
    out = tmp_path / "alone"
    assert (
        main(["train", "quickstart/student", *tiny_overrides(out), *_model_overrides(user_module)])
        == 0
    )
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    out = tmp_path / "distilled"
    argv = [
        "distill",
        "quickstart",
        *tiny_overrides(out),
        *_model_overrides(user_module),
        "distiller.name=at",
        "spots.mode=adaptive",
        "spots.homogeneous=false",
    ]
    assert main(argv) == 0, capsys.readouterr().err
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert "at" in record["losses"] and "routing" in record["losses"]
    # the spots are named by the module paths the user cut at, then the logit spot
    assert list(record["spot_rates"]) == ["layer1", "layer2", "logits"]


@pytest.mark.fault("user-code")
def test_a_user_model_that_cannot_be_imported_is_one_line(tmp_path, capsys):
    out = tmp_path / "never"
    argv = [
        "train",
        "quickstart/student",
        f"output_dir={out}",
        *_model_overrides("no_such_pkg:build"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("sakd: error:") and "cannot import model factory" in err and "\n" not in err
    )
    assert not out.exists()
