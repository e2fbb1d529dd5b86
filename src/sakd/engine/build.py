"""Builders: a validated :class:`RunConfig` in, models / data / teacher / task out.

Everything that can fail on user input (names, files, shapes, checkpoints) fails here, before the
run folder is created, so bad input leaves nothing half-written on disk.
"""

from __future__ import annotations

import dataclasses
import importlib

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
from sakd.engine.tasks import ClassificationTask, DistillationTask
from sakd.errors import SakdError
from sakd.losses import Distiller, DistillerParams, get_distiller
from sakd.models import StagedNet, create_model, resolve_spots
from sakd.spots import build_selector

ADAPTIVE_MODES = ("adaptive", "anti")


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


def _distiller_spots(
    cls: type[Distiller], student: StagedNet, teacher: StagedNet, input_size: int, mode: str
):
    role = cls.spot_role
    try:
        s_spots = resolve_spots(student.spot_info(input_size), role)
        t_spots = resolve_spots(teacher.spot_info(input_size), role)
    except SakdError as exc:
        raise SakdError(f"distiller {cls.name!r} cannot run on this pair: {exc}") from None
    n = min(len(s_spots), len(t_spots))
    s_spots, t_spots = s_spots[:n], t_spots[:n]
    if mode in ADAPTIVE_MODES and [s.index for s in s_spots] != [t.index for t in t_spots]:
        raise SakdError(
            f"spots of {cls.name!r} cannot be aligned for routing: student stages "
            f"{[s.index for s in s_spots]} vs teacher stages {[t.index for t in t_spots]}; "
            "use spots.mode=fixed or a pair with the same number of stages"
        )
    return s_spots, t_spots


def _distiller_params(cls: type[Distiller], values: dict) -> DistillerParams:
    try:
        return cls.Params.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise SakdError(
            f"distiller.params.{key}: {err['msg']} (`sakd distillers` lists {cls.name}'s parameters)"
        ) from None


def build_task(cfg: RunConfig, train_set: ImageSet, runtime: Runtime) -> tuple[Task, dict]:
    """The task for this config and facts to record (teacher checksum and accuracy)."""
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
    cls = None if dcfg.name == "kd" else get_distiller(dcfg.name)
    params = _distiller_params(cls, dcfg.params) if cls is not None else None
    teacher, digest = load_teacher(cfg, num_classes, input_size)
    kd_cls = get_distiller("kd")
    kd_params = kd_cls.Params(temperature=cfg.loss.kd_temperature)
    kd = kd_cls([], [], kd_params, num_classes, len(train_set.labels))
    distiller = None
    s_idx: list[int] = []
    t_idx: list[int] = []
    if cls is not None:
        s_spots, t_spots = _distiller_spots(cls, student, teacher, input_size, cfg.spots.mode)
        distiller = cls(s_spots, t_spots, params, num_classes, len(train_set.labels))
        distiller.attach_train_labels(train_set.labels)
        s_idx, t_idx = [s.index for s in s_spots], [t.index for t in t_spots]
    selector = build_selector(
        cfg.spots.mode,
        student,
        teacher,
        s_idx,
        gamma=cfg.spots.gamma,
        tau=cfg.spots.tau,
        homogeneous=cfg.spots.homogeneous,
        input_size=input_size,
        seed=cfg.seed,
        random_scheme=cfg.spots.random_scheme,
        logit_follows_last_spot=cls is not None and cls.random_logit_follows_last_spot,
    )
    agent_group = dict(lr=cfg.agent_lr, weight_decay=cfg.spots.agent_weight_decay, momentum=0.9)
    task = DistillationTask(
        student,
        teacher,
        distiller,
        kd,
        selector,
        s_idx,
        t_idx,
        ce_weight=cfg.loss.ce,
        kd_weight=cfg.loss.kd,
        beta=dcfg.beta,
        student_group=group,
        agent_group=agent_group,
    )
    return runtime.prepare_module(task), {"teacher_sha256": digest}
