"""A tiny distillation run with a torchvision teacher (the user's own state_dict) and student."""

from __future__ import annotations

import json

import pytest
import torch

torchvision = pytest.importorskip("torchvision")

from sakd.cli import main  # noqa: E402

from ..conftest import tiny_overrides  # noqa: E402

pytestmark = pytest.mark.vision


def test_distill_torchvision_resnet34_to_resnet18_adaptive(tmp_path):
    # The teacher checkpoint is a plain torchvision state_dict, in torchvision's own names.
    torch.manual_seed(0)
    teacher = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34(num_classes=10).state_dict(), teacher)
    run = tmp_path / "run"
    overrides = tiny_overrides(
        run,
        "epochs=1",
        "model.name=torchvision:resnet18",
        "teacher.name=torchvision:resnet34",
        f"teacher.checkpoint={teacher}",
        "distiller.name=at",
        "spots.mode=adaptive",
    )
    assert main(["distill", "quickstart", *overrides]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert 0.0 <= summary["last_top1"] <= 100.0
    out = tmp_path / "student.pt"
    assert main(["export", str(run), "--out", str(out), "--checkpoint", "last"]) == 0
    student = torchvision.models.resnet18(num_classes=10)
    student.load_state_dict(torch.load(out, weights_only=True), strict=True)
