"""Builders: a validated :class:`RunConfig` in, models / data / teacher / task out.

Everything that can fail on user input (names, files, shapes, checkpoints) fails here, before the
run folder is created, so bad input leaves nothing half-written on disk.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass

from pydantic import ValidationError

from sakd.config import DistillerConfig, ModelConfig, RunConfig
from sakd.data import ImageSet, load_dataset
from sakd.engine.checkpoint import (
    extract_state_dict,
    load_checkpoint,
    load_weights_strict,
    resolve_path,
    sha256_file,
)
from sakd.engine.runtime import Runtime
from sakd.engine.task import Task
from sakd.engine.tasks import ClassificationTask, DistillationTask, LossTerm
from sakd.errors import SakdError
from sakd.losses import Distiller, DistillerParams, get_distiller
from sakd.models import SpotInfo, StagedNet, create_model, resolve_spots
from sakd.spot_modes import SpotMode
from sakd.spots import build_selector

# The logit-KD term added to every distiller when loss.kd_weight > 0 (Hinton KD at the logit spot).
LOGIT_KD = "kd"


def load_data(cfg: RunConfig) -> tuple[ImageSet, ImageSet]:
    """Train and test splits, limited and with augmentation switched off when asked."""
    d = cfg.data
    train = load_dataset(d.name, d.root, train=True, download=d.download, image_size=d.image_size)
    if d.train_limit is not None:
        train = train.subset(d.train_limit)
    if not d.augment:
        train = dataclasses.replace(
            train, augment=dataclasses.replace(train.augment, crop_padding=0, horizontal_flip=False)
        )
    return train, load_test_split(cfg)


def load_test_split(cfg: RunConfig) -> ImageSet:
    """The evaluation split, limited to ``data.test_limit`` samples when set."""
    d = cfg.data
    test = load_dataset(d.name, d.root, train=False, download=False, image_size=d.image_size)
    return test.subset(d.test_limit) if d.test_limit is not None else test


def build_model(cfg_model, num_classes: int, input_size: int) -> StagedNet:
    """A zoo model by name, or ``module.path:factory`` split at ``stages`` / ``head``."""
    if cfg_model.stages is None:
        model = create_model(cfg_model.name, num_classes=num_classes)
        model.input_size = input_size
        return model
    from sakd.models.wrap import stage_model

    module_name, _, attr = cfg_model.name.partition(":")
    if not attr or cfg_model.head is None:
        raise SakdError(
            "a user model needs model.name='package.module:factory', model.stages=[...] and model.head"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SakdError(
            f"cannot import model factory {cfg_model.name!r} ({exc}): check the name"
        ) from None
    module = factory(num_classes=num_classes)
    return stage_model(
        module, cfg_model.stages, cfg_model.head, cfg_model.stem, input_size=input_size
    )


def load_teacher(cfg: RunConfig, num_classes: int, input_size: int) -> tuple[StagedNet, str]:
    """The frozen teacher with its checkpoint loaded strictly; returns it and the file's SHA-256."""
    assert cfg.teacher is not None
    teacher = build_model(ModelConfig(name=cfg.teacher.name), num_classes, input_size)
    path = resolve_path(cfg.teacher.checkpoint)
    if not path.is_file():
        raise SakdError(
            f"teacher checkpoint {str(path)!r} does not exist: train one with `sakd train` "
            "or set teacher.checkpoint to its path"
        )
    digest = sha256_file(path)
    expected = cfg.teacher.sha256
    recorded = path.with_name(path.name + ".sha256")
    if expected is None and recorded.is_file():
        expected = recorded.read_text().split()[0]
    if expected is not None and expected.lower() != digest:
        raise SakdError(
            f"teacher checkpoint {str(path)!r} has SHA-256 {digest[:12]}…, expected {expected[:12]}…: "
            "the file changed or is not the teacher you meant"
        )
    state = extract_state_dict(load_checkpoint(path))
    load_weights_strict(
        teacher, state, f"teacher checkpoint {str(path)!r} for {cfg.teacher.name!r}"
    )
    teacher.eval().requires_grad_(False)
    return teacher, digest


@dataclass(frozen=True)
class DistillerPlan:
    """A distiller checked against a pair: its class, validated parameters and paired spots.

    ``student_spots`` / ``teacher_spots`` are equal-length (trimmed to the shorter network) and,
    in the routed modes, at the same stages; empty for logit distillers.
    """

    cls: type[Distiller]
    params: DistillerParams
    student_spots: list[SpotInfo]
    teacher_spots: list[SpotInfo]


def plan_distiller(
    name: str,
    params: dict,
    student_info: list[SpotInfo],
    teacher_info: list[SpotInfo],
    mode: str,
) -> DistillerPlan:
    """Check ``name`` with ``params`` on a pair described by its spots (``spot_info``) in ``mode``.

    The one place the builder and the grid planner resolve, trim and align a distiller's spots and
    validate its parameters; every problem is one :class:`SakdError` line.
    """
    cls = get_distiller(name)
    checked = distiller_params(cls, params)
    try:
        s_spots = resolve_spots(student_info, cls.spot_role)
        t_spots = resolve_spots(teacher_info, cls.spot_role)
    except SakdError as exc:
        raise SakdError(f"distiller {name!r} cannot run on this pair: {exc}") from None
    n = min(len(s_spots), len(t_spots))
    s_spots, t_spots = s_spots[:n], t_spots[:n]
    if SpotMode(mode).routed and [s.index for s in s_spots] != [t.index for t in t_spots]:
        raise SakdError(
            f"spots of {name!r} cannot be aligned for {mode} routing: student stages "
            f"{[s.index for s in s_spots]} vs teacher stages {[t.index for t in t_spots]}; "
            "use spots.mode=fixed or a pair with the same number of stages"
        )
    return DistillerPlan(cls, checked, s_spots, t_spots)


def distiller_params(cls: type[Distiller], values: dict) -> DistillerParams:
    """``distiller.params`` validated by the distiller's ``Params`` (unknown keys are errors)."""
    try:
        return cls.Params.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        known = ", ".join(cls.Params.model_fields) or "none"
        if err["type"] == "extra_forbidden":
            raise SakdError(
                f"distiller.params.{key}: {cls.name} has no parameter {key!r} "
                f"(its parameters: {known}; `sakd distillers` describes them)"
            ) from None
        raise SakdError(
            f"distiller.params.{key}: {err['msg']} (got {err.get('input')!r}; "
            f"{cls.name}'s parameters: {known})"
        ) from None


def resolved_weights(cfg: RunConfig, params: DistillerParams | None = None) -> dict[str, dict]:
    """Every resolved loss weight (and distiller parameter) with its value and source, for run.json.

    Distiller parameters no recipe, preset or override set are the ``Params`` defaults.
    """
    values = {"loss.ce_weight": cfg.loss.ce_weight, "loss.kd_weight": cfg.loss.kd_weight}
    if cfg.loss.kd_weight:
        values["loss.kd_temperature"] = cfg.loss.kd_temperature
    values["spots.routing_ce_weight"] = cfg.spots.routing_ce_weight
    if cfg.distiller is not None:
        values["distiller.loss_weight"] = cfg.distiller.loss_weight
    if params is not None:
        values.update({f"distiller.params.{k}": v for k, v in params.model_dump().items()})
    sources = cfg.weight_sources()
    return {k: {"value": v, "source": sources.get(k, "default")} for k, v in values.items()}


def build_task(cfg: RunConfig, train_set: ImageSet, runtime: Runtime) -> tuple[Task, dict]:
    """The task for this config and facts to record (teacher checksum, resolved loss weights)."""
    input_size = int(train_set.images.shape[-1])
    num_classes = train_set.num_classes
    student = build_model(cfg.model, num_classes, input_size)
    group = dict(
        lr=cfg.lr,
        weight_decay=cfg.optimizer.weight_decay,
        momentum=cfg.optimizer.momentum,
        nesterov=cfg.optimizer.nesterov,
    )
    if cfg.teacher is None:
        return runtime.prepare_module(ClassificationTask(student, **group)), {}
    dcfg = cfg.distiller or DistillerConfig()
    distiller_params(get_distiller(dcfg.name), dcfg.params)  # before the teacher is read
    teacher, digest = load_teacher(cfg, num_classes, input_size)
    plan = plan_distiller(
        dcfg.name,
        dcfg.params,
        student.spot_info(input_size),
        teacher.spot_info(input_size),
        cfg.spots.mode,
    )
    terms = _loss_terms(cfg, plan, num_classes, train_set)
    s_idx = [s.index for s in plan.student_spots]
    selector = build_selector(
        cfg.spots.mode,
        student,
        teacher,
        s_idx,
        gamma=cfg.spots.routing_ce_weight,
        tau=cfg.spots.tau,
        homogeneous=cfg.spots.homogeneous,
        input_size=input_size,
        seed=cfg.seed,
    )
    agent_group = dict(lr=cfg.agent_lr, weight_decay=cfg.spots.agent_weight_decay, momentum=0.9)
    task = DistillationTask(
        student,
        teacher,
        selector,
        terms,
        ce_weight=cfg.loss.ce_weight,
        student_group=group,
        agent_group=agent_group,
    )
    facts = {"teacher_sha256": digest, "resolved_weights": resolved_weights(cfg, plan.params)}
    return runtime.prepare_module(task), facts


def _loss_terms(
    cfg: RunConfig, plan: DistillerPlan, num_classes: int, train_set: ImageSet
) -> list[LossTerm]:
    """The logit-KD term (when ``loss.kd_weight`` > 0), then the chosen distiller's term."""
    assert cfg.distiller is not None
    num_train = len(train_set.labels)
    terms = []
    if cfg.loss.kd_weight > 0:
        if plan.cls.name == LOGIT_KD:
            raise SakdError(
                f"distiller {LOGIT_KD!r} is the logit-KD term itself: set loss.kd_weight=0 "
                "(its weight is distiller.loss_weight, its temperature distiller.params.temperature)"
            )
        kd_cls = get_distiller(LOGIT_KD)
        kd = kd_cls(
            [], [], kd_cls.Params(temperature=cfg.loss.kd_temperature), num_classes, num_train
        )
        terms.append(LossTerm(LOGIT_KD, cfg.loss.kd_weight, kd))
    distiller = plan.cls(
        plan.student_spots, plan.teacher_spots, plan.params, num_classes, num_train
    )
    distiller.attach_train_labels(train_set.labels)
    terms.append(
        LossTerm(
            distiller.name,
            cfg.distiller.loss_weight,
            distiller,
            [s.index for s in plan.student_spots],
            [t.index for t in plan.teacher_spots],
            checkpoint_name="distiller",
        )
    )
    return terms
