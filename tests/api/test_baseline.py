"""``baseline=True``: the student alone with the same budget and seed, and the gain printed."""

from __future__ import annotations

import json

import pytest
import torch

import sakd
from sakd.engine.rundir import RunFolder
from sakd.errors import SakdError

from .conftest import OwnNet, TensorPairs


def test_baseline_trains_the_student_alone_from_the_same_start(tree, tmp_path, capsys):
    train, val = TensorPairs(tree / "train"), TensorPairs(tree / "val")
    torch.manual_seed(0)
    teacher = OwnNet(width=16)
    torch.manual_seed(1)
    student = OwnNet()
    options = dict(epochs=1, batch_size=8, device="cpu", progress=False, seed=3)
    out = tmp_path / "run"
    run = sakd.distill(teacher, student, train, val, output_dir=str(out), baseline=True, **options)
    printed = capsys.readouterr().out
    alone = RunFolder(out / "baseline").read_summary()
    assert alone is not None and (out / "baseline" / "config.yaml").is_file()
    assert RunFolder(out / "baseline").read_config().teacher is None
    gain = run.best_top1 - alone.best_top1
    assert f"gain from distilling: {gain:+.2f} points (best)" in printed
    # The same as training a copy of the untrained student alone with the same options.
    torch.manual_seed(1)
    same = sakd.train(OwnNet(), train, val, output_dir=str(tmp_path / "alone"), **options)
    assert same.best_top1 == alone.best_top1


@pytest.mark.fault("api")
def test_train_refuses_a_baseline_in_one_line(tmp_path):
    with pytest.raises(SakdError, match="use it with sakd.distill") as info:
        sakd.train("resnet8", "embedded", output_dir=tmp_path / "r", baseline=True)
    assert "\n" not in str(info.value) and not (tmp_path / "r").exists()


def test_the_gain_over_the_baseline_is_stored_in_summary_json(tree, tmp_path):
    train, val = TensorPairs(tree / "train"), TensorPairs(tree / "val")
    torch.manual_seed(0)
    teacher = OwnNet(width=16)
    options = dict(epochs=1, batch_size=8, device="cpu", progress=False, seed=3)
    out = tmp_path / "run"
    run = sakd.distill(teacher, OwnNet(), train, val, output_dir=str(out), **options)
    assert run.summary.gain_best is None
    assert "gain_best" not in json.loads((out / "summary.json").read_text())
    # Turned on for the finished run: only the baseline trains, and summary.json records it.
    run = sakd.distill(teacher, OwnNet(), train, val, output_dir=str(out), baseline=True, **options)
    alone = RunFolder(out / "baseline").read_summary()
    stored = json.loads((out / "summary.json").read_text())
    assert stored["baseline_best_top1"] == alone.best_top1
    assert stored["gain_best"] == pytest.approx(run.best_top1 - alone.best_top1)
    assert stored["gain_last"] == pytest.approx(run.summary.last_top1 - alone.last_top1)
    summary = RunFolder(out).read_summary()
    assert summary.gain_best == pytest.approx(stored["gain_best"])
    before = (out / "summary.json").stat().st_mtime_ns
    sakd.distill(teacher, OwnNet(), train, val, output_dir=str(out), baseline=True, **options)
    assert (out / "summary.json").stat().st_mtime_ns == before  # complete: left as it is
