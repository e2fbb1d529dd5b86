"""Recipes + overrides -> typed config; bad input named by key."""

from __future__ import annotations

import pytest

from sakd.config import apply_overrides, dump_config, list_recipes, load_config, validate_config
from sakd.errors import SakdError
from sakd.spot_modes import SpotMode


def test_overrides_are_typed_and_dotted():
    data = apply_overrides(
        {"model": {"name": "resnet8"}},
        ["epochs=3", "lr=0.1", "data.name=cifar100", "data.train_limit=10", "progress=false"],
    )
    cfg = validate_config(data)
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.lr == 0.1
    assert cfg.data.name == "cifar100" and cfg.data.train_limit == 10
    assert cfg.progress is False


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["data.nmae=x"], "'data.nmae'"),
        (["epochs=many"], "'epochs'"),
        (["epochs=0"], "'epochs'"),
        (["spots.mode=sometimes"], "'spots.mode'"),
        (["spots.routing_ce_weight=-1"], "'spots.routing_ce_weight'"),
        (["spots.routing_ce_weight=0"], "'spots.routing_ce_weight'"),
        (["spots.tau=0"], "'spots.tau'"),
        (["spots.random_scheme=coin"], "'spots.random_scheme'"),
        (["distiller.loss_weight=-2"], "'distiller.loss_weight'"),
        (["lr"], "KEY=VALUE"),
        (["teacher.sha256=abc"], "'teacher.sha256'"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(SakdError, match=needle):
        load_config("quickstart", overrides)


@pytest.mark.fault("config")
def test_missing_and_malformed_recipes(tmp_path):
    with pytest.raises(SakdError, match="neither a file nor a packaged recipe"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {name: resnet8\nepochs: [")
    with pytest.raises(SakdError, match="not valid YAML"):
        load_config(str(bad))
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(SakdError, match="mapping"):
        load_config(str(listing))


@pytest.mark.fault("config")
def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("model: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(SakdError, match="not valid YAML"):
        load_config(str(evil))


def test_base_chain_and_relative_bases(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "epochs: 7\nmodel: {name: resnet8}\ndata: {name: embedded}\n"
    )
    (tmp_path / "child.yaml").write_text("base: base.yaml\nlr: 0.2\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["seed=3"])
    assert (cfg.epochs, cfg.lr, cfg.seed, cfg.model.name) == (7, 0.2, 3, "resnet8")


def test_published_weights_fill_unset_values():
    cfg = load_config("cifar100/resnet32x4-resnet8x4", ["distiller.name=at"])
    assert (
        cfg.distiller.loss_weight,
        cfg.loss.ce_weight,
        cfg.loss.kd_weight,
        cfg.spots.routing_ce_weight,
    ) == (1000, 1, 1, 2)
    rep = load_config(
        "cifar100/resnet32x4-resnet8x4",
        ["distiller.name=fitnet", "distiller.published=repdistiller"],
    )
    assert (rep.distiller.loss_weight, rep.loss.kd_weight) == (100, 0)
    explicit = load_config(
        "cifar100/resnet32x4-resnet8x4", ["distiller.name=at", "distiller.loss_weight=5"]
    )
    assert explicit.distiller.loss_weight == 5
    tiny = load_config("tiny-imagenet/resnet56-resnet20", ["distiller.name=sp"])
    assert tiny.spots.routing_ce_weight == 2


def test_output_dir_fields():
    cfg = load_config(
        "cifar100/vgg13-vgg8", ["distiller.name=crd", "spots.mode=adaptive", "seed=4"]
    )
    assert cfg.output_dir == "runs/cifar100/vgg13-vgg8/crd-adaptive/seed4"
    ls = load_config("cifar100/ls/vgg13-vgg8", ["distiller.name=kd"])  # label after the preset
    assert ls.output_dir.endswith("/kd+ls-fixed/seed0")
    for bad in ("x/{bogus}", "x/{"):
        with pytest.raises(SakdError) as caught:
            load_config("quickstart", [f"output_dir={bad}"])
        assert str(caught.value) == (
            "config 'quickstart': key 'output_dir' may only use the fields {distiller}, {mode}, "
            "{seed}, {model}, {student}, {teacher}"
        )


def test_every_packaged_recipe_validates():
    names = list_recipes()
    assert "quickstart" in names and "cifar100/resnet32x4-resnet8x4" in names
    for name in names:
        load_config(name)


def test_mobile_students_use_lr_001():
    assert load_config("cifar100/vgg13-mobilenetv2").lr == 0.01
    assert load_config("cifar100/wrn_40_2-shufflev1").lr == 0.01
    assert load_config("cifar100/vgg13-vgg8").lr == 0.05


def test_pair_presets_apply_to_the_chosen_distiller_only():
    dkd = load_config("cifar100/resnet56-resnet20", ["distiller.name=dkd"])
    assert dkd.distiller.params == {"beta": 2}
    at = load_config("cifar100/resnet56-resnet20", ["distiller.name=at"])
    assert at.distiller.params == {}
    mine = load_config(
        "cifar100/resnet56-resnet20", ["distiller.name=dkd", "distiller.params.beta=5"]
    )
    assert mine.distiller.params == {"beta": 5}
    ft = load_config("cifar100/resnet50-vgg8", ["distiller.name=ft"])
    assert ft.distiller.params == {"pretrain_lr": 0.05}
    ab = load_config("cifar100/vgg13-mobilenetv2", ["distiller.name=ab"])
    assert ab.distiller.params == {"pretrain_lr": 0.01}


def test_the_spot_mode_is_an_enum_below_the_schema_and_a_plain_string_in_files():
    cfg = load_config("quickstart", ["spots.mode=anti"])
    assert cfg.spots.mode is SpotMode.ANTI and cfg.spots.mode.routed
    assert "mode: anti\n" in dump_config(cfg)
    with pytest.raises(SakdError, match="key 'spots.mode': Input should be 'fixed', 'random'"):
        load_config("quickstart", ["spots.mode=sometimes"])
