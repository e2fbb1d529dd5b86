"""Diverged weights (:mod:`sakd.engine.divergence`): never saved, never resumed, warned on export.

Weights that are finite but huge (a learning rate far too high grows them to 1e20-1e30 before
any loss turns NaN) count as diverged, like NaN/inf ones: training stops before saving them, a
resume refuses a checkpoint that holds them, and ``sakd export`` warns about a diverged run.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from sakd.cli import main
from sakd.config import load_config
from sakd.engine import trainer as trainer_module
from sakd.engine.checkpoint import load_checkpoint, save_checkpoint
from sakd.engine.divergence import WEIGHT_LIMIT, find_divergence, module_divergence
from sakd.engine.run import run
from sakd.engine.rundir import DIVERGED_NAME
from sakd.errors import SakdError

from ..conftest import stop_after_saves, tiny_overrides

pytestmark = pytest.mark.fault("divergence")


def _config(out, *extra):
    return load_config("quickstart/student", tiny_overrides(out, *extra))


def _grow_weights_at(monkeypatch, epoch: int, factor: float) -> None:
    """After (0-based) ``epoch``, multiply the student's head by ``factor``: finite, huge."""
    original = trainer_module.Trainer._train_epoch

    def train_epoch(self, phase, index, ep, optimizers):
        record = original(self, phase, index, ep, optimizers)
        if ep == epoch:
            with torch.no_grad():
                self.task.student.head.weight.mul_(factor)
        return record

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", train_epoch)


def _peak(state: dict) -> float:
    return max(t.abs().max().item() for k, t in state.items() if "running" not in k and t.numel())


def test_the_rule_limits_trained_parameters_and_checks_every_tensor_for_nan():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert module_divergence({"student": net}) is None
    net[1].running_var.fill_(1e12)  # statistics follow the data's scale: not limited
    assert module_divergence({"student": net}) is None
    net[1].running_mean[0] = float("nan")
    assert module_divergence({"student": net}) == (
        "student tensor '1.running_mean' is not finite (NaN/inf)"
    )
    net[1].running_mean.zero_()
    with torch.no_grad():
        net[0].weight[1, 1] = -3 * WEIGHT_LIMIT
    reached = f"student parameter '0.weight' reached {3 * WEIGHT_LIMIT:.2g} in magnitude"
    assert reached in module_divergence({"student": net})
    net[0].weight.requires_grad_(False)  # frozen: the user's, not trained by sakd
    assert module_divergence({"student": net}) is None
    state = {"w": torch.full((2,), 2 * WEIGHT_LIMIT)}
    assert find_divergence({"m": state}, {"m": set()}) is None
    assert find_divergence({"m": state}, {"m": {"w"}}).startswith("m parameter 'w' reached")


def test_weights_that_blow_up_stop_the_run_before_they_are_saved(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _grow_weights_at(monkeypatch, epoch=1, factor=1e9)  # finite losses, huge weights
    with pytest.raises(SakdError) as caught:
        run(_config(out, "epochs=3"))
    message = str(caught.value)
    assert "training diverged in train epoch 2" in message and "\n" not in message
    assert "parameter 'head.weight' reached" in message
    assert "checkpoints/last.pt (after train epoch 1) holds the last healthy weights" in message
    kept = load_checkpoint(out / "checkpoints" / "last.pt")
    assert kept["epoch"] == 1 and _peak(kept["modules"]["student"]) < 100
    assert (out / DIVERGED_NAME).is_file()
    monkeypatch.undo()
    summary = run(_config(out, "epochs=3", "lr=0.005"))  # the lower lr finishes it
    assert summary.epochs == 3 and not (out / DIVERGED_NAME).exists()


def test_weight_limit_sets_the_limit_and_may_change_at_resume(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _grow_weights_at(monkeypatch, epoch=0, factor=1e5)  # head weights of ~1e4 after epoch 1
    with pytest.raises(SakdError, match=r"past the limit of 1e\+02 for trained weights"):
        run(_config(out, "weight_limit=100"))
    assert not (out / "checkpoints" / "last.pt").exists()  # stopped before the first save
    summary = run(_config(out, "weight_limit=null"))  # the user's call: no limit
    assert summary.epochs == 2
    assert _peak(load_checkpoint(out / "checkpoints" / "last.pt")["modules"]["student"]) > 100


def test_a_huge_lr_stops_with_healthy_weights_or_none(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SakdError, match="training diverged"):
        run(_config(out, "lr=100", "precision=fp32", "epochs=8"))
    last = out / "checkpoints" / "last.pt"
    if last.exists():
        assert _peak(load_checkpoint(last)["modules"]["student"]) <= WEIGHT_LIMIT


def test_a_checkpoint_holding_diverged_weights_is_not_resumed(tmp_path):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as monkeypatch:  # stopped after epoch 1 of 2
        stop_after_saves(monkeypatch)
        with pytest.raises(KeyboardInterrupt):
            run(_config(out, "epochs=2"))
    last = out / "checkpoints" / "last.pt"
    data = load_checkpoint(last)  # what an older sakd saved: finite, 1e24
    del data["digest"]
    data["modules"]["student"]["head.weight"].mul_(1e24)
    save_checkpoint(last, data)
    with pytest.raises(SakdError) as caught:
        run(_config(out, "epochs=2"))
    message = str(caught.value)
    assert "holds diverged weights (student parameter 'head.weight' reached" in message
    assert "no healthy checkpoint" in message and "resume=false" in message
    assert not (out / "metrics.jsonl").read_text().count('"epoch": 2')


def test_export_warns_about_a_diverged_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    _grow_weights_at(monkeypatch, epoch=1, factor=1e9)
    with pytest.raises(SakdError):
        run(_config(out, "epochs=2"))
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["export", str(out), "--out", str(tmp_path / "student.pt")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sakd: warning: the run in ")
    assert "diverged in train epoch 2" in err[0] and "checkpoints/best.pt (epoch 1)" in err[0]
    assert torch.load(tmp_path / "student.pt", weights_only=True)  # written all the same


def test_export_warns_about_diverged_weights_of_an_older_sakd(tmp_path, capsys):
    out = tmp_path / "run"
    run(_config(out, "epochs=1"))
    best = out / "checkpoints" / "best.pt"
    data = load_checkpoint(best)
    del data["digest"]
    data["modules"]["student"]["head.weight"].mul_(1e24)
    save_checkpoint(best, data)
    capsys.readouterr()
    assert main(["export", str(out), "--out", str(tmp_path / "student.pt")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("sakd: warning: the exported weights look diverged (student parameter")
    assert err.count("\n") == 1
    card = json.loads((tmp_path / "student.json").read_text())
    assert card["epoch"] == 1


def test_export_of_a_healthy_run_says_nothing_more(tmp_path, capsys):
    out = tmp_path / "run"
    run(_config(out, "epochs=1"))
    capsys.readouterr()
    assert main(["export", str(out), "--out", str(tmp_path / "student.pt")]) == 0
    assert capsys.readouterr().err == ""
