"""The ``auto:initial-share`` rule: measured once, recorded, reused on resume; zoo pairs untouched."""

from __future__ import annotations

import json

import pytest
import torch

import sakd
from sakd.config import load_config
from sakd.engine.auto_weights import AUTO_RATIO

from .conftest import OwnNet, TensorPairs


def test_auto_beta_is_measured_recorded_and_reused_on_resume(tree, tmp_path, capsys):
    train, val = TensorPairs(tree / "train"), TensorPairs(tree / "val")
    torch.manual_seed(0)
    teacher = OwnNet(width=16)
    options = dict(distiller="at", epochs=1, batch_size=8, device="cpu", progress=False)
    out = tmp_path / "run"
    torch.manual_seed(1)
    run = sakd.distill(teacher, OwnNet(), train, val, output_dir=str(out), **options)
    printed = capsys.readouterr().out
    info = json.loads((out / "run.json").read_text())
    entry = info["resolved_weights"]["distiller.loss_weight"]
    initial = entry["initial_losses"]
    assert entry["source"] == "auto:initial-share"
    assert entry["value"] == pytest.approx(AUTO_RATIO * initial["ce"] / initial["at"])
    assert "loss_weight: auto" in (out / "config.yaml").read_text()
    assert "(auto:initial-share, measured" in printed and "share ce " in printed
    # The measurement left nothing behind: the same run without it (β given) trains identically.
    torch.manual_seed(1)
    again = sakd.distill(
        teacher,
        OwnNet(),
        train,
        val,
        output_dir=str(tmp_path / "fixed"),
        loss_weight=entry["value"],
        **options,
    )
    assert again.last_top1 == run.last_top1
    for a, b in zip(
        run.model.state_dict().values(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    # Resume (one more epoch): the stored value is read back, not measured again.
    info["resolved_weights"]["distiller.loss_weight"]["value"] = 0.125
    (out / "run.json").write_text(json.dumps(info))
    (out / "summary.json").unlink()
    torch.manual_seed(1)
    sakd.distill(teacher, OwnNet(), train, val, output_dir=str(out), **options)
    assert "read back from run.json" in capsys.readouterr().out
    stored = json.loads((out / "run.json").read_text())["resolved_weights"]
    assert stored["distiller.loss_weight"]["value"] == 0.125


def test_zoo_pairs_and_logit_distillers_keep_the_published_weights():
    zoo = load_config("quickstart", ["distiller.name=at"])
    assert zoo.distiller.loss_weight == 1000.0
    assert zoo.weight_sources()["distiller.loss_weight"] == "published:sakd"
    own = ["model.name=my.module:net", "distiller.name=at"]
    assert load_config("quickstart", own).distiller.loss_weight == "auto"
    assert (
        load_config("quickstart", [*own, "distiller.published=sakd"]).distiller.loss_weight
        == 1000.0
    )
    assert load_config("quickstart", [*own, "distiller.loss_weight=3"]).distiller.loss_weight == 3.0
    kd = load_config("quickstart", ["model.name=my.module:net", "distiller.name=kd"])
    assert kd.weight_sources()["distiller.loss_weight"] == "published:sakd"
    explicit = load_config("quickstart", ["distiller.name=at", "distiller.loss_weight=auto"])
    assert explicit.distiller.loss_weight == "auto"
