"""Own-model defaults a user can trust: AT + KD with no weights given does not fall below the
student alone, on two differently built own pairs, on real images (the embedded Fashion-MNIST).

The slow test of the suite (marked ``defaults``: a teacher and four students, ~1 min on an idle
2-core CPU): the published β of AT (1000) swamps the cross-entropy on these nets; the
``auto:initial-share`` rule (docs/distillers.md) must not. Same budget and seed for both arms.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import sakd

from .test_export_contract import RawImages

pytestmark = pytest.mark.defaults
# Accuracy on 1,000 test images: a binomial std of ~1.6 points near 50 %; two of them apart.
NOISE = 3.0


def _block(cin: int, cout: int, act: type[nn.Module], down: str) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, 2 if down == "stride" else 1, 1, bias=False)]
    layers += [nn.BatchNorm2d(cout), act()]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if down == "pool" else []))


class Net(nn.Module):
    """Three stages that halve the resolution by stride or by max-pooling, then a linear head."""

    def __init__(self, widths, act=nn.ReLU, down="stride", num_classes=10) -> None:
        super().__init__()
        chans = [3, *widths]
        self.stages = nn.Sequential(
            *[_block(chans[i], chans[i + 1], act, down) for i in range(len(widths))]
        )
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x):
        return self.fc(self.stages(x).mean(dim=(2, 3)))


STUDENTS = {
    "strided-relu": lambda: Net((8, 16, 32), nn.ReLU, "stride"),
    "pooling-silu": lambda: Net((12, 24, 48), nn.SiLU, "pool"),
}


def test_auto_weights_keep_at_kd_at_least_as_good_as_the_student_alone(tmp_path):
    train, test = RawImages(True, 1500), RawImages(False, 1000)
    common = dict(batch_size=64, lr=0.05, device="cpu", progress=False, seed=0)
    torch.manual_seed(0)
    teacher = Net((32, 64, 128), nn.ReLU, "stride")
    sakd.train(teacher, train, test, epochs=3, output_dir=str(tmp_path / "teacher"), **common)
    for name, build in STUDENTS.items():
        torch.manual_seed(1)
        alone = sakd.train(
            build(), train, test, epochs=3, output_dir=str(tmp_path / name), **common
        )
        torch.manual_seed(1)
        distilled = sakd.distill(
            teacher,
            build(),
            train,
            test,
            distiller="at",
            epochs=3,
            output_dir=str(tmp_path / f"{name}-at"),
            **common,
        )
        weights = json.loads((distilled.output_dir / "run.json").read_text())["resolved_weights"]
        beta = weights["distiller.loss_weight"]
        assert beta["source"] == "auto:initial-share" and 0 < beta["value"] < 1000
        assert weights["loss.kd_weight"] == {"value": 1.0, "source": "published:sakd"}
        assert distilled.last_top1 >= alone.last_top1 - NOISE, (name, beta)
