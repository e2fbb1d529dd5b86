"""Issue 21's training knobs: torch optimisers and schedules, label smoothing, clipping, EMA, progress."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sakd.cli import main
from sakd.config import load_config
from sakd.engine.build import build_model, build_task, load_data
from sakd.engine.checkpoint import (
    extract_state_dict,
    load_checkpoint,
    load_weights_strict,
    save_checkpoint,
)
from sakd.engine.evaluate import accuracy
from sakd.engine.optim import (
    WARMUP_START_FACTOR,
    Optimisation,
    make_ema,
    make_optimisation,
    make_scheduler,
)
from sakd.engine.run import run
from sakd.engine.runtime import Runtime
from sakd.engine.task_contract import ParamGroup, Phase
from sakd.errors import SakdError

from ..conftest import stop_after_saves, tiny_overrides

# Every knob at once: the combination an ImageNet-style recipe of a modern student uses.
ALL_KNOBS = (
    "optimizer.name=adamw",
    "optimizer.weight_decay=0.05",
    "optimizer.betas=[0.9,0.99]",
    "optimizer.eps=1e-7",
    "optimizer.clip_grad_norm=1.0",
    "schedule.name=cosine",
    "schedule.warmup_epochs=1",
    "schedule.min_lr=1e-4",
    "loss.label_smoothing=0.1",
    "ema.decay=0.9",
    "lr=0.002",
)


def _phase(params, epochs: int = 4, decay: bool = True, **group) -> Phase:
    settings = {"lr": 0.1, "weight_decay": 0.0, **group}
    return Phase("p", epochs, lambda *a: None, {"g": ParamGroup(list(params), **settings)}, decay)


def _lrs_over(schedule_overrides: list[str], epochs: int, steps: int, **group) -> list[float]:
    """The lr of every iteration of a phase (and the one after its last) on one parameter."""
    cfg = load_config(
        "quickstart/student", ["output_dir=x", f"epochs={epochs}", "lr=0.1", *schedule_overrides]
    )
    param = nn.Parameter(torch.zeros(1))
    opt = make_optimisation(
        _phase([param], epochs, **group),
        cfg.schedule,
        lr_scale=1,
        steps_per_epoch=steps,
        min_lr_fraction=cfg.schedule.min_lr / cfg.lr,
    )
    lrs = []
    for _ in range(epochs * steps):
        lrs.append(opt.lrs()["g"])
        param.grad = torch.zeros(1)
        opt.step()
    return [*lrs, opt.lrs()["g"]]


# ---------------------------------------------------------------- optimisers


@pytest.mark.parametrize(
    ("overrides", "kind", "expected"),
    [
        ([], torch.optim.SGD, {"momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}),
        (
            ["optimizer.name=adamw", "optimizer.betas=[0.8,0.9]", "optimizer.eps=1e-6"],
            torch.optim.AdamW,
            {"betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 5e-4},
        ),
        (["optimizer.name=adam"], torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-8}),
    ],
)
def test_the_student_gets_the_torch_optimiser_the_config_names(overrides, kind, expected):
    cfg = load_config("quickstart/student", ["output_dir=x", "data.train_limit=16", *overrides])
    train, _ = load_data(cfg)
    task, _ = build_task(cfg, train, Runtime.create("cpu", "fp32", False))
    opt = make_optimisation(
        task.phases(2)[-1], cfg.schedule, lr_scale=1, steps_per_epoch=1, min_lr_fraction=0
    ).optimizers["student"]
    assert type(opt) is kind
    assert {k: opt.param_groups[0][k] for k in expected} == expected


@pytest.mark.parametrize("agent", ["authors", "main"])
def test_the_policy_keeps_the_authors_sgd_unless_asked_for_the_main_optimiser(agent):
    cfg = load_config(
        "quickstart",
        [
            "output_dir=x",
            "data.train_limit=16",
            "distiller.name=at",
            "spots.mode=adaptive",
            "epochs=4",
            "optimizer.name=adamw",
            "schedule.name=cosine",
            "schedule.warmup_epochs=1",
            f"spots.agent_optimizer={agent}",
        ],
    )
    train, _ = load_data(cfg)
    task, _ = build_task(cfg, train, Runtime.create("cpu", "fp32", False))
    opt = make_optimisation(
        task.phases(4)[-1], cfg.schedule, lr_scale=1, steps_per_epoch=2, min_lr_fraction=0
    )
    agent_opt = opt.optimizers["agent"]
    assert type(opt.optimizers["student"]) is torch.optim.AdamW
    if agent == "authors":
        assert type(agent_opt) is torch.optim.SGD
        group = agent_opt.param_groups[0]
        assert (group["lr"], group["momentum"], group["weight_decay"]) == (cfg.lr / 2, 0.9, 1e-3)
        assert isinstance(opt.schedulers["agent"], torch.optim.lr_scheduler.LambdaLR)
    else:
        assert type(agent_opt) is torch.optim.AdamW
        assert agent_opt.param_groups[0]["lr"] == pytest.approx(cfg.lr / 2 * WARMUP_START_FACTOR)
        assert agent_opt.param_groups[0]["weight_decay"] == 1e-3


# ----------------------------------------------------------------- schedules


def test_step_schedule_sets_the_per_epoch_values_of_earlier_sakd_bit_for_bit():
    overrides = ["schedule.milestones=[3,6,8]", "schedule.reference_epochs=10"]
    lrs = _lrs_over(overrides, epochs=10, steps=3)
    for epoch in range(10):
        # earlier sakd's Trainer._set_lr: group lr × decay ** (milestones reached) × lr scale 1
        factor = 0.1 ** sum(epoch >= m for m in (3, 6, 8))
        assert lrs[3 * epoch : 3 * epoch + 3] == [0.1 * factor * 1] * 3, epoch


def test_cosine_with_warm_up_rises_per_iteration_then_falls_to_min_lr():
    lrs = _lrs_over(
        ["schedule.name=cosine", "schedule.warmup_epochs=1", "schedule.min_lr=0.001"],
        epochs=5,
        steps=4,
    )
    warm = [0.1 * (WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * t / 4) for t in range(4)]
    assert lrs[:4] == pytest.approx(warm, rel=1e-12)
    main = [0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t / 16)) / 2 for t in range(17)]
    assert lrs[4:] == pytest.approx(main, rel=1e-9, abs=1e-12)


def test_linear_and_constant_schedules():
    linear = _lrs_over(["schedule.name=linear", "schedule.min_lr=0.01"], epochs=2, steps=5)
    assert linear == pytest.approx([0.1 - 0.09 * t / 10 for t in range(11)], rel=1e-9)
    constant = _lrs_over(["schedule.name=constant", "schedule.warmup_epochs=0.5"], 3, 4)
    assert constant[:2] == pytest.approx([0.001, 0.1 * (0.01 + 0.99 / 2)], rel=1e-12)
    assert constant[2:] == [0.1] * 11


def test_warm_up_before_a_step_schedule_keeps_the_milestones_in_run_epochs():
    lrs = _lrs_over(
        ["schedule.warmup_epochs=1", "schedule.milestones=[2]", "schedule.reference_epochs=3"],
        epochs=3,
        steps=2,
    )
    assert lrs == pytest.approx([0.001, 0.0505, 0.1, 0.1, 0.01, 0.01, 0.01])


def test_the_authors_step_rule_and_pre_training_ignore_the_schedule_name():
    cosine = ["schedule.name=cosine", "schedule.warmup_epochs=1", "schedule.milestones=[150]"]
    authors = _lrs_over(cosine, epochs=4, steps=2, schedule="step")
    assert authors[:4] == [0.1] * 4 and authors[4:] == [0.1 * 0.1] * 5
    cfg = load_config("quickstart/student", ["output_dir=x", "epochs=4", *cosine])
    param = nn.Parameter(torch.zeros(1))
    phase = _phase([param], 4, decay=False)
    opt = torch.optim.SGD([param], lr=0.1)
    scheduler = make_scheduler(
        opt,
        phase.groups["g"],
        cfg.schedule,
        decay=False,
        epochs=4,
        steps_per_epoch=2,
        min_lr_fraction=0,
    )
    for _ in range(8):
        assert opt.param_groups[0]["lr"] == 0.1
        opt.step()
        scheduler.step()


# --------------------------------------------------- smoothing, clipping, EMA


def test_label_smoothing_is_the_students_cross_entropy_only():
    from .test_loss_terms import first_step_losses

    plain = first_step_losses("distiller.name=kd")
    smoothed = first_step_losses("distiller.name=kd", "loss.label_smoothing=0.2")
    assert smoothed["kd"] == plain["kd"]
    assert smoothed["ce"] > plain["ce"]
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    expected = 0.8 * F.cross_entropy(logits, labels) + 0.2 * (-F.log_softmax(logits, 1)).mean()
    assert F.cross_entropy(logits, labels, label_smoothing=0.2) == pytest.approx(float(expected))


def test_clipping_limits_the_gradient_norm_of_each_optimiser():
    torch.manual_seed(0)
    param = nn.Parameter(torch.zeros(4))
    phase = _phase([param], clip_grad_norm=0.5)
    opt = make_optimisation(
        phase,
        load_config("quickstart/student", ["output_dir=x"]).schedule,
        lr_scale=1,
        steps_per_epoch=1,
        min_lr_fraction=0,
    )
    grad = torch.tensor([3.0, 4.0, 0.0, 0.0])  # norm 5
    param.grad = grad.clone()
    opt.step()
    # SGD with momentum 0.9 on its first step: param -= lr × clipped gradient
    assert torch.allclose(param.detach(), -0.1 * grad * (0.5 / 5), atol=1e-7)
    assert isinstance(opt, Optimisation) and opt.clip_norms == {"g": 0.5}


def test_ema_follows_torchs_exponential_average_of_weights_and_buffers():
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = make_ema(net, 0.75)
    snapshots = []
    for step in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(step + 1.0)
        net.train()(torch.randn(4, 3))
        snapshots.append({k: v.clone() for k, v in net.state_dict().items()})
        ema.update_parameters(net)
    expected = dict(snapshots[0])
    for snap in snapshots[1:]:
        expected = {
            k: v * 0.75 + snap[k] * 0.25 if v.is_floating_point() else v
            for k, v in expected.items()
        }
    for key, value in ema.module.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, expected[key]), key


def test_with_ema_the_average_is_evaluated_checkpointed_and_exported(tmp_path):
    out = tmp_path / "ema"
    cfg = load_config("quickstart/student", tiny_overrides(out, "ema.decay=0.5", "device=cpu"))
    run(cfg)
    last = load_checkpoint(out / "checkpoints/last.pt")
    assert set(last["ema"]) == {"student", "updates"} and last["ema"]["updates"] == 6
    average, raw = last["ema"]["student"], last["modules"]["student"]
    assert not torch.equal(average["head.weight"], raw["head.weight"])
    assert extract_state_dict(last) is average
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    _, test = load_data(cfg)
    model = build_model(cfg.model, test.num_classes, int(test.image_size[-1]))
    load_weights_strict(model, average, "ema")
    top1, _ = accuracy(model, test, Runtime.create("cpu", "fp32", False), 256)
    assert top1 == record["test_top1"]


# -------------------------------------------------------------------- resume


def _assert_same_state(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_same_state(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


COMBINATIONS = {
    "all-knobs": ALL_KNOBS,
    "sgd-linear-warmup-ema": (
        "schedule.name=linear",
        "schedule.warmup_epochs=0.5",
        "ema.decay=0.8",
        "optimizer.nesterov=true",
    ),
    "adam-step-warmup-clip": (
        "optimizer.name=adam",
        "lr=0.001",
        "schedule.warmup_epochs=1",
        "schedule.milestones=[2]",
        "schedule.reference_epochs=3",
        "optimizer.clip_grad_norm=0.5",
    ),
}


@pytest.mark.fault("interrupted")
@pytest.mark.parametrize("combination", list(COMBINATIONS))
def test_resumed_training_equals_uninterrupted_for_every_combination(
    tmp_path, monkeypatch, combination
):
    extra = ("epochs=3", "device=cpu", "precision=fp32", *COMBINATIONS[combination])

    def config(name):
        return load_config("quickstart/student", tiny_overrides(tmp_path / name, *extra))

    run(config("straight"))
    stop_after_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(config("resumed"))
    monkeypatch.undo()
    run(config("resumed"))
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(tmp_path / "resumed/checkpoints/last.pt")
    keys = ("modules", "optimizers", "schedulers", "rng", "best_top1", "best_epoch")
    for key in (*keys, "ema") if "ema" in a else keys:
        _assert_same_state(a[key], b[key], key)


def test_a_checkpoint_without_schedule_states_resumes_on_the_same_schedule(tmp_path, monkeypatch):
    """Older sakd saved no schedules: they are rebuilt and advanced to the checkpoint's epoch."""
    extra = ("epochs=3", "device=cpu", "precision=fp32", *ALL_KNOBS)

    def config(name):
        return load_config("quickstart/student", tiny_overrides(tmp_path / name, *extra))

    run(config("straight"))
    stop_after_saves(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(config("resumed"))
    monkeypatch.undo()
    path = tmp_path / "resumed/checkpoints/last.pt"
    data = load_checkpoint(path)
    del data["schedulers"], data["format"], data["digest"]
    save_checkpoint(path, data)
    run(config("resumed"))
    a = load_checkpoint(tmp_path / "straight/checkpoints/last.pt")
    b = load_checkpoint(path)
    for key in ("modules", "optimizers", "ema"):
        _assert_same_state(a[key], b[key], key)
    for name in ("straight", "resumed"):
        records = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(r)["lr"] for r in records] == pytest.approx([2e-5, 0.002, 0.00105])


# -------------------------------------------------------------------- errors


@pytest.mark.fault("config")
@pytest.mark.parametrize(
    ("override", "message"),
    [
        (["optimizer.betas=[0.9,0.99]"], "betas and eps are settings of adam/adamw"),
        (["optimizer.name=adamw", "optimizer.nesterov=true"], "nesterov is a setting of sgd"),
        (["schedule.min_lr=0.001"], "min_lr is where cosine and linear schedules end"),
        (["schedule.warmup_epochs=2"], "schedule.warmup_epochs (2) must be fewer than epochs"),
        (["schedule.name=cosine", "schedule.min_lr=0.5"], "must be below lr"),
        (["optimizer.name=lamb"], "optimizer.name"),
        (["loss.label_smoothing=1"], "loss.label_smoothing"),
        (["ema.decay=1"], "ema.decay"),
        (["spots.agent_optimizer=adamw"], "spots.agent_optimizer"),
    ],
)
def test_invalid_knobs_are_one_line_on_the_cli(tmp_path, capsys, override, message):
    code = main(
        ["train", "quickstart/student", f"output_dir={tmp_path / 'r'}", "epochs=2", *override]
    )
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and err.startswith("sakd: error:"), err
    assert message in err
    assert not (tmp_path / "r").exists()


@pytest.mark.fault("api")
def test_invalid_knobs_are_one_sakd_error_in_the_api(tmp_path):
    import sakd

    from ..api.conftest import OwnNet, write_tree

    tree = write_tree(tmp_path / "images")
    with pytest.raises(SakdError, match="betas and eps are settings of adam/adamw") as caught:
        sakd.train(OwnNet(), tree, betas=(0.9, 0.99), output_dir=str(tmp_path / "r"))
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "r").exists()


def test_the_api_keywords_set_the_knobs(tmp_path):
    import sakd

    from ..api.conftest import OwnNet, write_tree

    tree = write_tree(tmp_path / "images")
    result = sakd.train(
        OwnNet(),
        tree,
        output_dir=str(tmp_path / "r"),
        epochs=2,
        batch_size=8,
        device="cpu",
        progress=False,
        optimizer="adamw",
        betas=(0.9, 0.95),
        eps=1e-7,
        clip_grad_norm=2.0,
        schedule="cosine",
        warmup_epochs=1,
        min_lr=1e-5,
        label_smoothing=0.1,
        ema_decay=0.5,
        lr=1e-3,
    )
    cfg = result.config
    assert (cfg.optimizer.name, cfg.optimizer.betas, cfg.optimizer.eps) == (
        "adamw",
        (0.9, 0.95),
        1e-7,
    )
    assert (cfg.optimizer.clip_grad_norm, cfg.schedule.name, cfg.schedule.warmup_epochs) == (
        2.0,
        "cosine",
        1,
    )
    assert (cfg.schedule.min_lr, cfg.loss.label_smoothing, cfg.ema.decay) == (1e-5, 0.1, 0.5)
    last = load_checkpoint(tmp_path / "r/checkpoints/last.pt")
    assert not torch.equal(
        last["ema"]["student"]["head.weight"], last["modules"]["student"]["head.weight"]
    )
    # run.model and the export hold the last epoch's evaluated weights: the moving average
    exported = torch.load(result.export(tmp_path / "student.pt", "last"), weights_only=True)
    for key, value in result.model.state_dict().items():
        assert torch.equal(value.cpu(), exported[key]), key
    assert torch.equal(exported["classifier.weight"], last["ema"]["student"]["head.weight"])


# ------------------------------------------------------------------ progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "bar"), [(io.StringIO, False), (_Terminal, True)])
def test_progress_bar_on_a_terminal_and_the_epoch_line_alone_otherwise(
    tmp_path, monkeypatch, stream, bar
):
    err = stream()
    monkeypatch.setattr("sys.stderr", err)
    overrides = [o for o in tiny_overrides(tmp_path / "p", "epochs=1") if o != "progress=false"]
    cfg = load_config("quickstart/student", overrides)
    assert cfg.progress == "auto"
    run(cfg)
    assert ("\r" in err.getvalue()) is bar


# ---------------------------------------------------------------------- docs


def test_the_documented_imagenet_recipe_validates_to_the_knobs_it_names(tmp_path):
    text = (Path(__file__).parents[2] / "docs" / "training.md").read_text()
    recipe = tmp_path / "mbv3-kd.yaml"
    recipe.write_text(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    cfg = load_config(str(recipe))
    assert (cfg.optimizer.name, cfg.optimizer.weight_decay, cfg.optimizer.clip_grad_norm) == (
        "adamw",
        0.05,
        5.0,
    )
    assert (cfg.schedule.name, cfg.schedule.warmup_epochs, cfg.schedule.min_lr) == (
        "cosine",
        5,
        1e-5,
    )
    assert (cfg.loss.label_smoothing, cfg.ema.decay, cfg.spots.agent_optimizer) == (
        0.1,
        0.9998,
        "authors",
    )
    assert cfg.model.name == "torchvision:mobilenet_v3_large" and cfg.distiller.name == "kd"


@pytest.mark.parametrize("recipe", ["cifar100/resnet110-resnet32", "imagenet/resnet34-resnet18"])
def test_paper_recipes_keep_sgd_on_the_step_schedule_and_no_other_knob(recipe):
    cfg = load_config(recipe, ["distiller.name=at", "spots.mode=adaptive"])
    assert (cfg.optimizer.name, cfg.optimizer.betas, cfg.optimizer.clip_grad_norm) == (
        "sgd",
        None,
        None,
    )
    assert (cfg.schedule.name, cfg.schedule.warmup_epochs, cfg.schedule.min_lr) == ("step", 0, 0)
    assert (cfg.loss.label_smoothing, cfg.ema.decay, cfg.spots.agent_optimizer) == (
        0,
        0,
        "authors",
    )


def test_the_ema_of_a_compiled_network_runs_its_own_weights():
    net = nn.Linear(2, 2)
    net.forward = lambda x: torch.zeros(1)  # as Runtime.compile_network: an instance attribute
    ema = make_ema(net, 0.5)
    with torch.no_grad():
        ema.module.weight.fill_(1.0)
    x = torch.ones(1, 2)
    assert torch.equal(ema.module(x), F.linear(x, ema.module.weight, ema.module.bias))
