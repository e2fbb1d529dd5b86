"""Training runs end to end: outputs, exact resume, NaN handling, safe checkpoints."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from sakd.config import load_config
from sakd.engine.checkpoint import load_checkpoint
from sakd.engine.run import run
from sakd.errors import SakdError

from ..conftest import stop_after_saves, tiny_overrides


def _train_config(out, *extra):
    return load_config("quickstart/student", tiny_overrides(out, *extra))


def test_run_writes_the_contracted_files(tmp_path):
    summary = run(_train_config(tmp_path / "r"))
    out = tmp_path / "r"
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        for key in ("epoch", "lr", "losses", "test_top1", "test_top5", "images_per_sec"):
            assert key in record
        assert set(record["losses"]) == {"ce"}
    assert summary.last_top1 == records[-1]["test_top1"]
    assert summary.best_top1 == max(r["test_top1"] for r in records)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out / "tb"))


@pytest.mark.fault("interrupted")
def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch):
    run(_train_config(tmp_path / "straight"))
    stop_after_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(_train_config(tmp_path / "resumed"))
    monkeypatch.undo()
    run(_train_config(tmp_path / "resumed"))
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    for key, value in a["modules"]["student"].items():
        assert torch.equal(value, b["modules"]["student"][key]), key
    lines = (tmp_path / "resumed/metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]


@pytest.mark.fault("run-folder")
def test_resume_refuses_a_different_config(tmp_path, monkeypatch):
    stop_after_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(_train_config(tmp_path / "r"))
    monkeypatch.undo()
    before = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(SakdError, match="different configuration"):
        run(_train_config(tmp_path / "r", "lr=0.2"))
    assert (tmp_path / "r" / "config.yaml").read_text() == before  # the folder still matches


@pytest.mark.fault("divergence")
def test_non_finite_loss_is_one_clear_error(tmp_path):
    with pytest.raises(SakdError, match="not finite"):
        run(_train_config(tmp_path / "r", "lr=1e12", "epochs=1"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.fault("stored-code")
@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoints_never_run_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"model": _Evil()}, handle)
    with pytest.raises(SakdError, match="cannot be loaded safely"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
