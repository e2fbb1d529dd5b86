"""RepDistiller / mdistiller teacher checkpoints load into the zoo and give RepDistiller's logits.

The checkpoints are built from ``repdistiller_reference`` (RepDistiller's key names and shapes,
read from its ``models/*.py`` and written down independently of the zoo), filled with random
values, saved in RepDistiller's file layout and loaded through sakd's loader; the logits are
compared with that file's functional forward of RepDistiller's modules, in float64.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from sakd.cli import main
from sakd.engine.checkpoint import extract_weights, load_checkpoint, resolve_path
from sakd.engine.rundir import RunFolder, RunInfo
from sakd.errors import SakdError
from sakd.experiments.reference import published_teachers
from sakd.models import canonical_name, create_model, model_aliases
from sakd.models.repdistiller import repdistiller_keys

from ..conftest import tiny_overrides
from . import repdistiller_reference as reference

# RepDistiller's models/__init__.py model_dict, every entry of which the zoo has (ResNet18 is
# mdistiller's addition to it, from the same resnetv2.py).
PACKAGED_TEACHER = "sakd:assets/quickstart_teacher.pt"
MODEL_DICT = [
    *["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"],
    *["resnet8x4", "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2"],
    *["vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2"],
]


def _repdistiller_file(path, state, epoch=240, accuracy=75.61):
    """``state`` saved as RepDistiller's train_teacher.py saves ckpt_epoch_<epoch>.pth."""
    optimizer = {
        "state": {0: {"momentum_buffer": torch.zeros(3)}},
        "param_groups": [
            {"lr": 5e-5, "momentum": 0.9, "dampening": 0, "weight_decay": 5e-4, "nesterov": False}
            | {"params": [0]}
        ],
    }
    payload = {"epoch": epoch, "model": state, "accuracy": torch.tensor(accuracy)}
    torch.save({**payload, "optimizer": optimizer}, path)
    return path


def test_the_reference_covers_repdistillers_model_dict():
    assert set(MODEL_DICT) <= set(reference.MODELS)
    assert len(MODEL_DICT) == 22


@pytest.mark.parametrize("name", sorted(reference.MODELS))
def test_repdistiller_checkpoint_gives_repdistillers_logits(tmp_path, name, caplog):
    generator = torch.Generator().manual_seed(sorted(reference.MODELS).index(name))
    state = reference.random_state(name, generator)
    path = _repdistiller_file(tmp_path / "ckpt_epoch_240.pth", state)
    with caplog.at_level(logging.INFO, logger="sakd.models.registry"):
        model = create_model(name, num_classes=100, pretrained=str(path))
    assert "a RepDistiller/mdistiller checkpoint (epoch 240, model, accuracy 75.61, optimizer)" in (
        caplog.text
    )
    assert "in RepDistiller's module names" in caplog.text
    model.eval().double()
    x = torch.randn(2, 3, 32, 32, generator=generator, dtype=torch.float64)
    wide = {k: v.double() if v.is_floating_point() else v for k, v in state.items()}
    with torch.no_grad():
        ours, theirs = model(x), reference.forward(name, wide, x)
    assert ours.shape == (2, 100)
    assert torch.allclose(ours, theirs, rtol=0, atol=1e-10 * theirs.abs().max().item())
    # every key, num_batches_tracked included, landed in the model
    buffers = {k: v for k, v in model.state_dict().items() if k.endswith("num_batches_tracked")}
    assert sorted(int(v) for v in buffers.values()) == sorted(
        int(v) for k, v in state.items() if k.endswith("num_batches_tracked")
    )


def test_repdistiller_spellings_name_zoo_models():
    assert canonical_name("ResNet50") == "resnet50"
    assert canonical_name("MobileNetV2") == "mobilenetv2_half"  # RepDistiller's mobile_half
    assert canonical_name("mobilenetv2") == "mobilenetv2"  # the zoo's width-1.0 model stays
    assert canonical_name("ShuffleV1") == "shufflev1" and canonical_name("ShuffleV2") == "shufflev2"
    assert canonical_name("vgg13_bn") == "vgg13" and canonical_name("vgg13") == "vgg13"
    assert type(create_model("ShuffleV2")) is type(create_model("shufflev2"))
    half = sum(p.numel() for p in create_model("MobileNetV2").parameters())
    assert half == sum(p.numel() for p in create_model("mobilenetv2_half").parameters())
    assert set(model_aliases()) >= {"ResNet50", "MobileNetV2", "ShuffleV1", "ShuffleV2"}


def _small_state(seed=0):
    return reference.random_state("resnet8", torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("wrap", "container", "names"),
    [
        (lambda s: {"epoch": 7, "model": s, "best_acc": 70.0, "optimizer": {}}, "RepDistiller", "RepDistiller's"),
        (lambda s: s, "a bare state dict", "RepDistiller's"),
        (lambda s: {"state_dict": s, "arch": "resnet8"}, "{'state_dict': state dict} wrapper", "RepDistiller's"),
        (lambda s: {"net": s}, "{'net': state dict} wrapper", "RepDistiller's"),
        (lambda s: {"model": {f"module.{k}": v for k, v in s.items()}}, "RepDistiller", "DataParallel's 'module.' prefix"),
    ],
)  # fmt: skip
def test_every_known_layout_loads_and_is_named(tmp_path, wrap, container, names):
    state = _small_state()
    torch.save(wrap(state), tmp_path / "w.pth")
    found, layout = extract_weights(load_checkpoint(tmp_path / "w.pth"))
    assert container in layout
    model = create_model("resnet8")
    label = model.load_weights(found, "w.pth")
    assert names in label
    inverse = {ours: theirs for theirs, ours in repdistiller_keys(model).items()}
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[inverse[key]].to(value.dtype))


def test_sakd_names_still_load_and_say_so(tmp_path):
    model = create_model("resnet8")
    copy = create_model("resnet8")
    assert copy.load_weights(model.state_dict()) == "sakd's module names"
    torch.save({"model": model.state_dict()}, tmp_path / "ours.pth")
    loaded = create_model("resnet8", pretrained=str(tmp_path / "ours.pth"))
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )


@pytest.mark.fault("teacher")
@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda s: {k: v for k, v in s.items() if k != "layer1.0.bn1.num_batches_tracked"},
            "nearest: RepDistiller's module names (55 of 56 keys), first mismatch: missing "
            "'layer1.0.bn1.num_batches_tracked'",
        ),
        (
            lambda s: {**s, "fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)},
            "'fc.weight' has shape (10, 64), expected (100, 64)",
        ),
        (
            lambda s: {**s, "layer1.1.conv1.weight": torch.zeros(16, 16, 3, 3)},
            "first mismatch: unexpected 'layer1.1.conv1.weight'",
        ),
        (
            lambda s: {"features.0.weight": torch.zeros(3)},
            "nearest: sakd's module names (0 of 56 keys), first mismatch: missing "
            "'stages.0.0.weight'",
        ),
    ],
)
def test_a_file_of_no_known_layout_is_one_line_naming_the_nearest(tmp_path, edit, needle):
    path = _repdistiller_file(tmp_path / "bad.pth", edit(_small_state()))
    with pytest.raises(SakdError) as caught:
        create_model("resnet8", pretrained=str(path))
    text = str(caught.value)
    assert needle in text and "does not fit the architecture of CifarResNet" in text
    assert "\n" not in text


def test_published_teacher_accuracies_come_from_the_reference_tables():
    table = published_teachers()
    assert table["cifar100", "resnet32x4"].top1 == 79.42  # RepDistiller README, resnet32x4
    assert table["cifar100", "resnet50"].top1 == 79.34  # its "ResNet50"
    assert table["cifar100", "wrn_40_2"].top1 == 75.61
    assert table["cifar100", "resnet56"].top1 == 72.34
    assert "RepDistiller" in table["cifar100", "vgg13"].source
    assert table["tiny-imagenet", "vgg13"].top1 == 60.09  # the SAKD paper's T row (R3)


def _packaged_teacher_in_repdistiller_names(path):
    """The quick-start teacher (resnet32, 10 classes) re-saved as a RepDistiller checkpoint."""
    data = load_checkpoint(resolve_path(PACKAGED_TEACHER))
    state, _ = extract_weights(data)
    model = create_model("resnet32", num_classes=10)
    names = {ours: theirs for theirs, ours in repdistiller_keys(model).items()}
    return _repdistiller_file(path, {names[k]: v for k, v in state.items()}, accuracy=91.7)


def test_config_and_eval_routes_take_a_repdistiller_teacher(tmp_path, capsys):
    teacher = _packaged_teacher_in_repdistiller_names(tmp_path / "ckpt_epoch_240.pth")
    runs = {}
    for label, checkpoint in (("ours", PACKAGED_TEACHER), ("rd", teacher)):
        out = tmp_path / label
        overrides = tiny_overrides(out, "epochs=1", f"teacher.checkpoint={checkpoint}")
        assert main(["distill", "quickstart", *overrides, "distiller.name=kd"]) == 0
        runs[label] = json.loads((out / "run.json").read_text())
    printed = capsys.readouterr().out
    assert "teacher resnet32: a RepDistiller/mdistiller checkpoint (epoch 240" in printed
    assert runs["rd"]["teacher_top1"] == runs["ours"]["teacher_top1"]
    assert "RepDistiller's module names" in runs["rd"]["teacher_weights"]
    assert runs["ours"]["teacher_weights"].startswith("a sakd checkpoint")
    assert "teacher_published_top1" not in runs["rd"]  # the embedded data has no published teacher
    info = RunFolder(tmp_path / "rd").read_info()
    assert info.teacher_weights == runs["rd"]["teacher_weights"]
    assert info.teacher_published_top1 is None

    evaluate = [str(teacher), "model.name=resnet32", "data.name=embedded", "data.test_limit=64"]
    assert main(["eval", *evaluate]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "RepDistiller's module names" in result["weights"] and result["epoch"] == 240
    packaged = str(resolve_path(PACKAGED_TEACHER))
    assert main(["eval", packaged, "data.test_limit=64"]) == 0
    assert json.loads(capsys.readouterr().out)["test_top1"] == result["test_top1"]


@pytest.mark.parametrize(
    ("recipe", "teacher", "published"),
    [
        ("cifar100/resnet32x4-resnet8x4", None, 79.42),
        ("cifar100/resnet50-vgg8", "ResNet50", 79.34),  # RepDistiller's spelling of the teacher
        ("tiny-imagenet/vgg13-vgg8", None, 60.09),
    ],
)
def test_run_json_gets_the_published_teacher_accuracy(recipe, teacher, published):
    from sakd.config import load_config
    from sakd.engine.run import _published_teacher, describe_run

    cfg = load_config(recipe, [] if teacher is None else [f"teacher.name={teacher}"])
    facts = _published_teacher(cfg)
    assert facts["teacher_published_top1"] == published
    assert facts["teacher_published_source"]
    info = {
        **facts,
        "teacher_top1": 79.0,
        "teacher_weights": "a bare state dict in RepDistiller's module names",
        "train_size": 1,
        "test_size": 1,
        "world_size": 1,
        "device": "cpu",
        "device_name": "cpu",
        "precision": "fp32",
    }
    assert RunInfo(info).teacher_published_top1 == published
    first, second = describe_run(cfg, info).splitlines()
    assert f"(top-1 79.00, published {published:.2f})" in first
    assert second.endswith(": a bare state dict in RepDistiller's module names")
