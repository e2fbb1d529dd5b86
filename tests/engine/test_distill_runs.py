"""Distillation runs end to end on the embedded data with the packaged teacher."""

from __future__ import annotations

import json

import pytest
import torch

from sakd.config import load_config
from sakd.engine.checkpoint import load_checkpoint
from sakd.engine.run import run
from sakd.errors import SakdError
from sakd.losses import list_distillers

from ..conftest import stop_after_saves, tiny_overrides

PRETRAINED = {"ft", "ab", "fsp"}


def _distill(out, *extra):
    return load_config("quickstart", tiny_overrides(out, "epochs=1", *extra))


def _records(out):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("name", list_distillers())
def test_one_epoch_per_distiller_at_fixed_spots(tmp_path, name):
    extra = [f"distiller.name={name}"]
    if name in PRETRAINED:
        extra.append("distiller.params.pretrain_epochs=1")
    run(_distill(tmp_path / name, *extra))
    record = _records(tmp_path / name)[-1]
    losses = record["losses"]
    assert all(v == v and abs(v) != float("inf") for v in losses.values()), losses
    if name != "kd":
        assert name in losses
    assert set(record["spot_rates"].values()) == {1.0}
    if name in PRETRAINED:
        pre = [json.loads(x) for x in (tmp_path / name / "pretrain.jsonl").read_text().splitlines()]
        assert len(pre) == 1 and f"pretrain_{name}" in pre[0]["losses"]


@pytest.mark.parametrize("mode", ["random", "adaptive", "anti"])
def test_modes_run_through_the_same_path(tmp_path, mode):
    run(
        _distill(
            tmp_path / mode, "distiller.name=at", f"spots.mode={mode}", "spots.homogeneous=false"
        )
    )
    record = _records(tmp_path / mode)[-1]
    rates = record["spot_rates"]
    # AT's three stage outputs of resnet8, then the logit spot, by name
    assert list(rates) == ["stage1", "stage2", "stage3", "logits"]
    assert all(0.0 <= r <= 1.0 for r in rates.values())
    if mode in ("adaptive", "anti"):
        assert "routing" in record["losses"]
        assert record["lrs"]["agent"] == pytest.approx(record["lrs"]["student"] / 2)


KNOBS = {
    "paper": [],
    "adamw-cosine-warmup-smoothing-clip-ema": [
        "optimizer.name=adamw",
        "lr=0.002",
        "optimizer.clip_grad_norm=1.0",
        "schedule.name=cosine",
        "schedule.warmup_epochs=0.5",
        "schedule.min_lr=1e-5",
        "loss.label_smoothing=0.1",
        "ema.decay=0.9",
    ],
    "agent-on-the-main-optimiser": [
        "optimizer.name=adam",
        "lr=0.001",
        "schedule.name=linear",
        "schedule.warmup_epochs=1",
        "spots.agent_optimizer=main",
        "optimizer.clip_grad_norm=0.5",
    ],
}


@pytest.mark.fault("interrupted")
@pytest.mark.parametrize("knobs", list(KNOBS))
def test_resumed_adaptive_run_equals_uninterrupted(tmp_path, monkeypatch, knobs):
    extra = [
        "distiller.name=at",
        "spots.mode=adaptive",
        "spots.homogeneous=false",
        "epochs=2",
        *KNOBS[knobs],
    ]
    run(load_config("quickstart", tiny_overrides(tmp_path / "straight", *extra)))
    stop_after_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(load_config("quickstart", tiny_overrides(tmp_path / "resumed", *extra)))
    monkeypatch.undo()
    run(load_config("quickstart", tiny_overrides(tmp_path / "resumed", *extra)))
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    for module in ("student", "selector"):
        for key, value in a["modules"][module].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b["modules"][module][key]), (module, key)
    assert a["schedulers"] == b["schedulers"]
    if knobs == "adamw-cosine-warmup-smoothing-clip-ema":
        for key, value in a["ema"]["student"].items():
            assert torch.equal(value, b["ema"]["student"][key]), key
        assert a["ema"]["updates"] == b["ema"]["updates"]
    for name, state in a["optimizers"].items():
        for index, slots in state["state"].items():
            for slot, value in slots.items():
                assert torch.equal(
                    torch.as_tensor(value),
                    torch.as_tensor(b["optimizers"][name]["state"][index][slot]),
                ), (name, index, slot)
    assert _records(tmp_path / "straight") == [
        {**r, "images_per_sec": a_r["images_per_sec"], "epoch_seconds": a_r["epoch_seconds"]}
        for r, a_r in zip(
            _records(tmp_path / "resumed"), _records(tmp_path / "straight"), strict=True
        )
    ]


@pytest.mark.fault("teacher")
def test_teacher_checksum_is_verified(tmp_path):
    with pytest.raises(SakdError, match="SHA-256"):
        run(_distill(tmp_path / "r", "teacher.sha256=" + "ab" * 32))
    assert not (tmp_path / "r").exists()


@pytest.mark.fault("config")
def test_unalignable_spots_are_refused_for_routing(tmp_path):
    with pytest.raises(SakdError, match="cannot be aligned"):
        # SP uses the last stage: F[4] of vgg8 but F[3] of resnet32.
        run(_distill(tmp_path / "r", "model.name=vgg8", "distiller.name=sp", "spots.mode=adaptive"))
