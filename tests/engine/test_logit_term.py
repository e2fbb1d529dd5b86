"""The logit term beside a feature distiller: vanilla KD by default, or any logit distiller."""

from __future__ import annotations

import json

import pytest

from sakd.config import load_config
from sakd.engine.run import run
from sakd.errors import SakdError
from sakd.experiments.grid import GridSpec, MethodSpec, plan_grid

from ..conftest import tiny_overrides

# AT beside DKD + LS on an LS pair recipe: the feature distiller's row (sakd table) asks for a
# logit term; DKD's own row gives its weight (1: DKD weighs itself through alpha and beta, as
# the authors' code does); the pair's DKD + LS preset gives T 2, alpha 9, beta 72.
AT_DKD_LS = [
    "distiller.name=at",
    "distiller.published=sakd",
    "loss.logit_distiller=dkd",
]


def test_the_default_logit_term_is_vanilla_kd_and_naming_it_changes_nothing():
    default = load_config("cifar100/resnet32x4-resnet8x4", ["distiller.name=at"])
    named = load_config(
        "cifar100/resnet32x4-resnet8x4", ["distiller.name=at", "loss.logit_distiller=kd"]
    )
    assert default.loss.kd_weight == named.loss.kd_weight == 1.0
    assert default.loss.logit_params == named.loss.logit_params == {}
    assert default.method_label == named.method_label == "at"


def test_a_dkd_ls_logit_term_takes_its_published_weight_and_the_pairs_preset():
    cfg = load_config("cifar100/ls/resnet32x4-resnet8x4", AT_DKD_LS)
    assert cfg.loss.kd_weight == 1.0  # the sakd table's dkd row: loss_weight 1
    assert cfg.loss.ce_weight == 1.0 and cfg.distiller.loss_weight == 1000  # AT's row
    assert cfg.spots.routing_ce_weight == 2
    params = cfg.loss.logit_params
    assert params == {"logit_standardization": True, "temperature": 2, "alpha": 9.0, "beta": 72.0}
    assert cfg.method_label == "at+dkd+ls"
    sources = cfg.weight_sources()
    assert sources["loss.kd_weight"] == "published:sakd (dkd)"
    assert sources["loss.logit_params.beta"].startswith("preset ")
    overridden = load_config("cifar100/ls/resnet32x4-resnet8x4", [*AT_DKD_LS, "loss.kd_weight=2"])
    assert overridden.loss.kd_weight == 2.0


def test_a_repdistiller_row_runs_no_logit_term_whatever_the_logit_distiller():
    cfg = load_config(
        "cifar100/resnet32x4-resnet8x4",
        ["distiller.name=at", "distiller.published=repdistiller", "loss.logit_distiller=dkd"],
    )
    assert cfg.loss.kd_weight == 0.0 and cfg.method_label == "at"


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_at_beside_dkd_runs_and_records_the_logit_term(tmp_path, mode):
    out = tmp_path / mode
    cfg = load_config(
        "quickstart/ls",
        tiny_overrides(
            out,
            "epochs=1",
            "data.train_limit=32",
            "data.test_limit=32",
            *AT_DKD_LS,
            f"spots.mode={mode}",
        ),
    )
    assert cfg.method_label == "at+dkd+ls"
    run(cfg)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"at", "dkd"} <= set(record["losses"])
    assert "kd" not in record["losses"]
    weights = json.loads((out / "run.json").read_text())["resolved_weights"]
    assert weights["loss.logit_distiller"]["value"] == "dkd"
    assert weights["loss.logit_params.logit_standardization"]["value"] is True
    assert weights["loss.logit_params.warmup_epochs"]["source"] == "default"


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss.logit_distiller=at"], "distils at feature spots, not at the logits: use one of"),
        (["loss.logit_distiller=nosuch"], "nosuch"),
        (["loss.logit_params.temperature=3"], "the logit term is vanilla KD"),
        (["loss.logit_distiller=dkd", "loss.logit_params.gamma=3"], "loss.logit_params (dkd)"),
    ],
)
def test_bad_logit_terms_are_one_line(tmp_path, overrides, message):
    with pytest.raises(SakdError) as info:
        cfg = load_config(
            "quickstart",
            tiny_overrides(tmp_path / "r", "epochs=1", "data.train_limit=16", "data.test_limit=16")
            + ["distiller.name=at", *overrides],
        )
        run(cfg)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_a_grid_entry_carries_its_own_overrides_and_modes(tmp_path):
    spec = GridSpec(
        pairs=["quickstart/ls"],
        distillers=[
            MethodSpec(
                name="at", overrides=["distiller.published=sakd", "loss.logit_distiller=dkd"]
            ),
            MethodSpec(name="dkd", modes=["fixed"]),
        ],
        modes=["fixed", "adaptive"],
        seeds=[0, 1],
        overrides=["output_dir=runs/{distiller}-{mode}/seed{seed}"],
    )
    plan = plan_grid(spec, "g", root=tmp_path, check_disk=False)
    cells = sorted({(r.config.method_label, str(r.mode)) for r in plan.runs})
    assert cells == [("at+dkd+ls", "adaptive"), ("at+dkd+ls", "fixed"), ("dkd+ls", "fixed")]
    assert len(plan.runs) == 6
    with pytest.raises(SakdError, match="unknown spot mode 'sometimes'"):
        plan_grid(
            GridSpec(pairs=["quickstart"], distillers=[MethodSpec(name="kd", modes=["sometimes"])]),
            "g",
            check_disk=False,
        )
