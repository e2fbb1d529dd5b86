"""The typed epoch record: 1-based epochs and named spots in metrics.jsonl, TensorBoard, the console
line per epoch (also with progress=false), run.json's provenance, and its readers' errors."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess

import pytest
import torch

from sakd.config import load_config
from sakd.engine import run as run_module
from sakd.engine.records import EpochRecord, parse_records, read_records
from sakd.engine.run import run
from sakd.errors import SakdError
from tests.conftest import tiny_overrides

SPOTS = ["stage1", "stage2", "stage3", "logits"]


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("records") / "adaptive"
    extra = ["distiller.name=at", "spots.mode=adaptive", "spots.homogeneous=false"]
    return folder, load_config("quickstart", tiny_overrides(folder, *extra))


@pytest.fixture(scope="module")
def finished(adaptive_run):
    folder, cfg = adaptive_run
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summary = run(cfg)
    return folder, summary, printed.getvalue()


def test_metrics_hold_typed_records_with_one_based_epochs_and_named_spots(finished):
    folder, summary, _ = finished
    records = read_records(folder / "metrics.jsonl")
    assert [r.epoch for r in records] == [1, 2]
    for record in records:
        assert isinstance(record, EpochRecord) and record.phase == "distill"
        assert record.spot_names == SPOTS
        assert all(0.0 <= v <= 1.0 for v in record.spot_rates.values())
        assert set(record.stats) == {"routing_ce", "hinge", "gamma_weight"}
        assert {"ce", "kd", "at", "routing"} == set(record.losses)
    best = max(range(2), key=lambda i: (records[i].test_top1, -i))
    assert summary.best_epoch == best + 1  # 1-based, like the records
    written = json.loads((folder / "summary.json").read_text())
    assert written["best_epoch"] == summary.best_epoch


def test_tensorboard_tags_name_the_spots(finished):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, _, _ = finished
    events = EventAccumulator(str(folder / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {f"spot_rates/{name}" for name in SPOTS} <= tags
    assert {"losses/ce", "losses/routing", "stats/hinge", "test_top1", "lr"} <= tags
    assert not any(re.search(r"/\d+$", tag) for tag in tags)  # no positional spot_rates/0
    assert [e.step for e in events.Scalars("spot_rates/stage2")] == [1, 2]


def test_one_line_per_epoch_with_progress_off(finished):
    _, _, printed = finished
    lines = printed.splitlines()
    start = [line for line in lines if line.startswith("sakd ")]
    assert len(start) == 1
    assert "distill resnet32" in start[0] and "-> resnet8 with at" in start[0]
    assert "spots adaptive, 50/50 start at stage1, stage2, stage3, logits" in start[0]
    assert "epochs" in start[0] and "train / 64 test images" in start[0]
    epochs = [line for line in lines if line.startswith("distill epoch ")]
    assert [line.split(" | ")[0] for line in epochs] == ["distill epoch 1/2", "distill epoch 2/2"]
    for line in epochs:
        for part in ("lr ", "ce ", "kd ", "at ", "routing ", "test top-1 ", "(best "):
            assert part in line, (part, line)
        assert re.search(r"spots stage1 [01]\.\d\d stage2 .* logits [01]\.\d\d", line)
        assert re.search(r"\d+ img/s \| \d+\.\d s$", line)


def test_run_json_records_provenance_and_spots(finished):
    import sakd

    folder, _, _ = finished
    info = json.loads((folder / "run.json").read_text())
    assert info["sakd_version"] == sakd.__version__
    assert info["git_commit"] is None or re.fullmatch(r"[0-9a-f]{40}", info["git_commit"])
    assert isinstance(info["command"], str) and info["command"]
    assert info["torch"] == torch.__version__ and info["cuda"] == torch.version.cuda
    assert info["device_name"]
    assert [s["name"] for s in info["spots"]] == SPOTS
    assert info["spots"][1]["student"] == "stage2 (32×16×16)"


def test_git_state_outside_a_checkout_and_without_git(tmp_path, monkeypatch):
    assert run_module._git_state(tmp_path) == {"git_commit": None, "git_dirty": None}

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert run_module._git_state(tmp_path) == {"git_commit": None, "git_dirty": None}
    assert run_module.provenance()["git_commit"] is None


def test_records_of_a_single_network_have_no_spots(tmp_path):
    run(load_config("quickstart/student", tiny_overrides(tmp_path / "s", "epochs=1")))
    (record,) = read_records(tmp_path / "s" / "metrics.jsonl")
    assert record.epoch == 1 and record.spot_rates == {} and record.phase == "train"
    assert "spots" not in json.loads((tmp_path / "s" / "run.json").read_text())


@pytest.mark.fault("run-folder")
def test_bad_lines_are_named():
    good = EpochRecord(epoch=1, phase="train", lr=0.1, test_top1=50.0).to_json()
    assert parse_records(good + "\n\n")[0].test_top1 == 50.0
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2 is not JSON"):
        parse_records(good + '\n{"epoch": 2, "pha')
    with pytest.raises(ValueError, match=r"line 1 is not an epoch record \(epoch"):
        parse_records('{"epoch": 0, "phase": "train", "lr": 0.1}')
    with pytest.raises(ValueError, match=r"line 1 is not an epoch record \(spot_rates"):
        parse_records('{"epoch": 1, "phase": "train", "lr": 0.1, "spot_rates": [1.0, 1.0]}')


@pytest.mark.fault("run-folder")
def test_reading_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(SakdError, match="cannot read"):
        read_records(tmp_path / "metrics.jsonl")
