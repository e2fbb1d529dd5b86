"""Renamed keys, one home per loss weight, and where each resolved value came from."""

from __future__ import annotations

import json

import pytest
import yaml

from sakd.cli import main
from sakd.config import (
    RENAMED_KEYS,
    RunConfig,
    config_differences,
    dump_config,
    load_config,
    resolve_weights,
    validate_config,
)
from sakd.engine.run import run
from sakd.errors import SakdError
from sakd.experiments.grid import GridSpec, plan_grid
from sakd.experiments.results import read_run
from sakd.losses import registry
from sakd.losses.at import AT

from ..conftest import tiny_overrides
from .test_loss_terms import GOLDEN, first_step_losses

OLD_VALUES = {
    "distiller.beta": "3",
    "distiller.weights": "sakd",
    "loss.ce": "1",
    "loss.kd": "1",
    "schedule.gamma": "0.2",
    "spots.gamma": "2",
}


@pytest.mark.fault("config")
@pytest.mark.parametrize("old", sorted(RENAMED_KEYS))
def test_every_old_key_names_its_new_name_from_overrides_and_yaml(tmp_path, old):
    expected = f"config 'quickstart': key {old!r} was renamed to {RENAMED_KEYS[old]!r}"
    with pytest.raises(SakdError) as caught:
        load_config("quickstart", [f"{old}={OLD_VALUES[old]}"])
    assert str(caught.value) == expected
    section, name = old.split(".")
    recipe = tmp_path / "old.yaml"
    recipe.write_text(
        yaml.safe_dump({"model": {"name": "resnet8"}, section: {name: OLD_VALUES[old]}})
    )
    with pytest.raises(SakdError) as caught:
        load_config(str(recipe))
    assert str(caught.value) == f"config {str(recipe)!r}: key {old!r} was renamed to " + repr(
        RENAMED_KEYS[old]
    )


@pytest.mark.fault("config")
def test_old_key_on_the_command_line_is_one_line_and_a_non_zero_exit(tmp_path, capsys):
    code = main(["distill", "quickstart", f"output_dir={tmp_path / 'r'}", "spots.gamma=2"])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1
    assert "'spots.gamma' was renamed to 'spots.routing_ce_weight'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.fault("config")
def test_old_key_in_grid_overrides_is_a_listed_bad_entry():
    with pytest.raises(SakdError, match="'loss.kd' was renamed to 'loss.kd_weight'"):
        plan_grid(GridSpec(pairs=["quickstart"], distillers=["at"], overrides=["loss.kd=1"]), "g")


def test_stored_configs_of_older_runs_are_read_under_the_new_names(tmp_path):
    cfg = load_config("quickstart", ["distiller.name=at", f"output_dir={tmp_path}"])
    stored = yaml.safe_load(dump_config(cfg))
    stored["distiller"]["beta"] = stored["distiller"].pop("loss_weight")
    stored["spots"]["gamma"] = stored["spots"].pop("routing_ce_weight")
    stored["schedule"]["gamma"] = stored["schedule"].pop("lr_decay")
    assert config_differences(stored, cfg) == []
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(stored))
    (tmp_path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"epoch": e, "phase": "distill", "lr": 0.01, "test_top1": 50.0}) + "\n"
            for e in range(1, cfg.epochs + 1)
        )
    )
    result = read_run(tmp_path)
    assert result.config["distiller"]["loss_weight"] == 1000
    assert (result.key.distiller, result.mode) == ("at", "fixed")


def test_vanilla_kd_params_are_validated_and_used(tmp_path):
    with pytest.raises(SakdError) as caught:
        run(_distill(tmp_path / "r", "distiller.name=kd", "distiller.params.bogus=3"))
    assert str(caught.value).startswith("distiller.params.bogus: kd has no parameter 'bogus'")
    assert "temperature" in str(caught.value)
    assert not (tmp_path / "r").exists()
    with pytest.raises(SakdError, match="distiller.params.logit_standardization"):
        run(
            _distill(
                tmp_path / "r", "distiller.name=kd", "distiller.params.logit_standardization=7"
            )
        )
    assert not (tmp_path / "r").exists()
    default = GOLDEN[("distiller.name=kd",)]
    explicit = first_step_losses("distiller.name=kd", "loss.kd_temperature=4.0")
    assert explicit == pytest.approx(default, rel=1e-6, abs=0)
    cooler = first_step_losses("distiller.name=kd", "loss.kd_temperature=1.0")
    assert cooler["ce"] == pytest.approx(default["ce"], rel=1e-6)
    assert cooler["kd"] != pytest.approx(default["kd"], rel=1e-3)


@pytest.mark.fault("config")
def test_unknown_params_of_any_distiller_are_errors_in_the_grid_too():
    spec = GridSpec(
        pairs=["quickstart"], distillers=["kd", "at"], overrides=["distiller.params.bogus=3"]
    )
    with pytest.raises(SakdError) as caught:
        plan_grid(spec, "g", check_disk=False)
    message = str(caught.value)
    assert "kd has no parameter 'bogus'" in message and "at has no parameter 'bogus'" in message


@pytest.mark.fault("config")
def test_kd_temperature_without_any_kd_term_is_an_error():
    with pytest.raises(SakdError, match=r"loss.kd_temperature is set \(command line\)"):
        load_config(
            "quickstart", ["distiller.name=at", "loss.kd_weight=0", "loss.kd_temperature=2"]
        )
    at = load_config("quickstart", ["distiller.name=at", "loss.kd_temperature=2"])
    assert at.loss.kd_temperature == 2


def test_the_kd_temperature_has_one_key_for_vanilla_kd_and_the_logit_kd_term(tmp_path, capsys):
    kd = load_config("quickstart", ["distiller.name=kd", "loss.kd_temperature=2"])
    assert kd.loss.kd_temperature == 2 and "temperature" not in kd.distiller.params
    assert kd.weight_sources()["loss.kd_temperature"] == "command line"
    expected = (
        "config 'quickstart': key 'distiller.params.temperature' was renamed to "
        "'loss.kd_temperature' (vanilla KD's temperature is the KD temperature)"
    )
    with pytest.raises(SakdError) as caught:
        load_config("quickstart", ["distiller.name=kd", "distiller.params.temperature=2"])
    assert str(caught.value) == expected
    with pytest.raises(SakdError, match=r"key 'distiller.presets.kd.temperature' \(the KD temp"):
        load_config("quickstart", ["distiller.name=kd", "distiller.presets.kd.temperature=0"])
    dkd = load_config("quickstart", ["distiller.name=dkd", "distiller.params.temperature=2"])
    assert dkd.distiller.params["temperature"] == 2  # DKD's own temperature keeps its key
    code = main(
        [
            "distill",
            "quickstart",
            f"output_dir={tmp_path / 'r'}",
            "distiller.name=kd",
            "distiller.params.temperature=2",
        ]
    )
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and "was renamed to 'loss.kd_temperature'" in err
    stored = yaml.safe_load(dump_config(kd))
    stored["distiller"]["params"]["temperature"] = stored["loss"].pop("kd_temperature")
    assert config_differences(stored, kd) == []
    stored["distiller"]["params"]["temperature"] = 3
    assert config_differences(stored, kd) == ["loss"]


@pytest.mark.fault("config")
def test_vanilla_kd_with_the_logit_kd_term_as_well_is_an_error(tmp_path):
    with pytest.raises(SakdError, match="is the logit-KD term itself"):
        run(_distill(tmp_path / "r", "distiller.name=kd", "loss.kd_weight=0.5"))
    assert not (tmp_path / "r").exists()


class _Unpublished(AT):
    name = "unpublished_at"


@pytest.mark.fault("config")
def test_a_distiller_without_published_weights_is_an_error_naming_the_fix(monkeypatch):
    monkeypatch.setitem(registry._DISTILLERS, _Unpublished.name, _Unpublished)
    with pytest.raises(SakdError) as caught:
        load_config("quickstart", ["distiller.name=unpublished_at", "loss.ce_weight=1"])
    assert str(caught.value) == (
        "config 'quickstart': distiller 'unpublished_at' has no published weights in the 'sakd' "
        "table: add it to src/sakd/recipes/_published.yaml or set loss.kd_weight, "
        "distiller.loss_weight, spots.routing_ce_weight"
    )
    weights = ["loss.ce_weight=1", "loss.kd_weight=0", "distiller.loss_weight=5"]
    cfg = load_config(
        "quickstart", ["distiller.name=unpublished_at", *weights, "spots.routing_ce_weight=1"]
    )
    assert set(cfg.weight_sources().values()) <= {"command line", "default"}
    with pytest.raises(SakdError, match="unknown distiller 'magic'"):
        load_config("quickstart", ["distiller.name=magic"])


def test_weight_sources_follow_the_precedence():
    tiny = load_config("tiny-imagenet/resnet56-resnet20", ["distiller.name=at", "loss.kd_weight=2"])
    sources = tiny.weight_sources()
    assert sources["spots.routing_ce_weight"] == "recipe tiny-imagenet/_protocol"
    assert tiny.spots.routing_ce_weight == 2
    assert sources["loss.kd_weight"] == "command line" and tiny.loss.kd_weight == 2
    assert sources["distiller.loss_weight"] == "published:sakd"
    assert tiny.distiller.loss_weight == 1000
    own = load_config("tiny-imagenet/resnet56-resnet20", ["spots.routing_ce_weight=3"])
    assert own.spots.routing_ce_weight == 3
    dkd = load_config("cifar100/resnet56-resnet20", ["distiller.name=dkd"])
    assert dkd.weight_sources()["distiller.params.beta"] == "preset cifar100/resnet56-resnet20"
    mine = load_config(
        "cifar100/resnet56-resnet20", ["distiller.name=dkd", "distiller.params.beta=5"]
    )
    assert mine.weight_sources()["distiller.params.beta"] == "command line"
    rep = load_config(
        "cifar100/vgg13-vgg8", ["distiller.name=at", "distiller.published=repdistiller"]
    )
    assert rep.weight_sources()["loss.kd_weight"] == "published:repdistiller"


def test_run_json_records_every_resolved_weight_and_its_source(tmp_path):
    out = tmp_path / "r"
    run(_distill(out, "distiller.name=at", "distiller.params.p=2", "loss.ce_weight=0.5"))
    weights = json.loads((out / "run.json").read_text())["resolved_weights"]
    assert weights == {
        "loss.ce_weight": {"value": 0.5, "source": "command line"},
        "loss.kd_weight": {"value": 1.0, "source": "published:sakd"},
        "loss.kd_temperature": {"value": 4.0, "source": "default"},
        "spots.routing_ce_weight": {"value": 2.0, "source": "published:sakd"},
        "distiller.loss_weight": {"value": 1000.0, "source": "published:sakd"},
        "distiller.params.p": {"value": 2.0, "source": "command line"},
    }


def _distill(out, *extra):
    return load_config("quickstart", tiny_overrides(out, "epochs=1", *extra))


def test_a_resolved_config_yaml_loads_again_as_a_recipe(tmp_path):
    for name in ("kd", "at", "dkd"):
        cfg = load_config("cifar100/resnet56-resnet20", [f"distiller.name={name}"])
        path = tmp_path / f"{name}.yaml"
        path.write_text(dump_config(cfg))
        again = load_config(str(path))
        assert again.model_dump() == cfg.model_dump()
        assert set(again.weight_sources().values()) == {f"recipe {path}"}


def test_weights_are_resolved_by_an_explicit_step_after_the_schema():
    raw = yaml.safe_load(dump_config(load_config("cifar100/vgg13-vgg8", ["distiller.name=at"])))
    for key in ("ce_weight", "kd_weight"):
        del raw["loss"][key]
    del raw["distiller"]["loss_weight"]
    schema_only = RunConfig.model_validate(raw)
    assert schema_only.loss.ce_weight is None and schema_only.distiller.loss_weight is None
    weights = resolve_weights(schema_only, {}, "test")
    assert (weights.ce_weight, weights.kd_weight, weights.loss_weight) == (1.0, 1.0, 1000.0)
    assert weights.sources["distiller.loss_weight"] == "published:sakd"
    assert schema_only.loss.ce_weight is None  # resolving returns values, it does not write them
    resolved = validate_config(raw, source="test")
    assert (resolved.loss.ce_weight, resolved.distiller.loss_weight) == (1.0, 1000.0)
