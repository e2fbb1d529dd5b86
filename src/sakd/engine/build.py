"""Builders: a validated :class:`RunConfig` in, models / data / teacher / task out.

Everything that can fail on user input (names, files, shapes, checkpoints) fails here, before the
run folder is created, so bad input leaves nothing half-written on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from sakd._autoload import passes_through, user_code_error
from sakd.config import (
    AUTO,
    KD_DISTILLER,
    OBJECT_PREFIX,
    DistillerConfig,
    ModelConfig,
    RunConfig,
    TeacherConfig,
)
from sakd.data import BatchSource, StreamSet, load_dataset, open_stream
from sakd.engine.checkpoint import (
    extract_weights,
    load_checkpoint,
    recorded_sha256,
    refuse_folder,
    resolve_path,
    sha256_file,
)
from sakd.engine.runtime import Runtime
from sakd.engine.task_contract import Task
from sakd.engine.training_tasks import ClassificationTask, DistillationTask, LossTerm
from sakd.errors import SakdError
from sakd.losses import (
    Distiller,
    DistillerParams,
    DistillerSetup,
    get_distiller,
    list_distillers,
)
from sakd.models import SpotInfo, StagedNet, create_model, resolve_spots
from sakd.spot_modes import SpotMode
from sakd.spots import build_selector

# Vanilla (Hinton) KD: the default logit term added to a distiller when loss.kd_weight > 0.
LOGIT_KD = KD_DISTILLER
# The spot role of distillers that read the logits only (KD, DKD).
LOGITS_ROLE = "logits"


def load_data(cfg: RunConfig) -> tuple[BatchSource, BatchSource]:
    """Train and test sources (in memory or streamed), limited and with augmentation off when asked."""
    d = cfg.data
    train = _open_split(cfg, train=True)
    if d.train_limit is not None:
        train = train.subset(d.train_limit)
    if not d.augment:
        if isinstance(train, StreamSet):
            train = train.without_augmentation()
        else:
            train = dataclasses.replace(
                train,
                augment=dataclasses.replace(train.augment, crop_padding=0, horizontal_flip=False),
            )
    return train, load_test_split(cfg)


def load_test_split(cfg: RunConfig) -> BatchSource:
    """The evaluation split, limited to ``data.test_limit`` samples when set."""
    d = cfg.data
    test = _open_split(cfg, train=False)
    return test.subset(d.test_limit) if d.test_limit is not None else test


def _open_split(cfg: RunConfig, train: bool) -> BatchSource:
    """One split as ``data.loader`` asks: streamed from disk, or loaded into memory."""
    d = cfg.data
    download = d.download and train
    if d.streamed:
        return open_stream(
            d.name,
            d.root,
            train,
            image_size=d.image_size,
            mean=d.mean,
            std=d.std,
            workers=d.workers,
            crop_scale=d.crop_scale,
            crop_fraction=d.crop_fraction,
            download=download,
        )
    split = load_dataset(d.name, d.root, train=train, download=download, image_size=d.image_size)
    if d.mean is not None or d.std is not None:
        split = dataclasses.replace(split, mean=d.mean or split.mean, std=d.std or split.std)
    return split


# In-memory modules handed to the engine (``run(cfg, modules=...)``), keyed by config section.
MODULE_KEYS = ("model", "teacher")


def build_model(
    cfg_model: ModelConfig, num_classes: int, input_size: int, module: nn.Module | None = None
) -> StagedNet:
    """A zoo model, ``torchvision:``/``timm:`` ARCH or ``package.module:factory``, staged.

    Non-zoo modules are cut at ``stages`` / ``head`` (automatic when unset); see
    :func:`sakd.models.create_model`. ``module``: an ``nn.Module`` object to use instead of
    building one by name (a :class:`StagedNet` as it is, any other module cut by
    :func:`~sakd.models.wrap.stage_model`); the staged net shares its parameters, so training it
    trains ``module`` itself.
    """
    if module is not None:
        return _stage_object(cfg_model, module, num_classes, input_size)
    if cfg_model.name.startswith(OBJECT_PREFIX):
        raise SakdError(
            f"{cfg_model.name!r} was a Python object passed to sakd.train/sakd.distill: pass the "
            "same module again from Python, or name a zoo model or package.module:factory"
        )
    return create_model(
        cfg_model.name,
        num_classes=num_classes,
        pretrained=getattr(cfg_model, "pretrained", None),
        stages=cfg_model.stages,
        head=cfg_model.head,
        stem=cfg_model.stem,
        input_size=input_size,
    )


def _stage_object(
    cfg_model: ModelConfig, module: nn.Module, num_classes: int, input_size: int
) -> StagedNet:
    role = "teacher" if isinstance(cfg_model, TeacherConfig) else "model"
    if not isinstance(module, nn.Module):
        raise SakdError(
            f"the {_role_name(role)} is a {type(module).__name__}, not a torch nn.Module: pass "
            "a module object or a model name"
        )
    if cfg_model.pretrained not in (None, False):
        raise SakdError(
            f"{role}.pretrained applies to models built by name: load the weights into your "
            f"{type(module).__name__} before passing it"
        )
    if isinstance(module, StagedNet):
        if cfg_model.stages is not None or cfg_model.head is not None:
            raise SakdError(
                f"the {_role_name(role)} is already a StagedNet: leave its stages and head unset"
            )
        module.input_size = input_size
        staged = module
    else:
        from sakd.models.wrap import stage_model

        staged = stage_model(
            module, cfg_model.stages, cfg_model.head, cfg_model.stem, input_size=input_size
        )
    outputs = getattr(staged.head, "out_features", None)
    if outputs is not None and outputs != num_classes:
        raise SakdError(
            f"the {_role_name(role)} {type(module).__name__} has {outputs} outputs but the data "
            f"has {num_classes} classes: build it with {num_classes} classes"
        )
    return staged


def _role_name(role: str) -> str:
    return "student" if role == "model" else role


def module_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes, values): a teacher object's digest."""
    digest = hashlib.sha256()
    for key, value in module.state_dict().items():
        tensor = value.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_teacher(
    cfg: RunConfig, num_classes: int, input_size: int, module: nn.Module | None = None
) -> tuple[StagedNet, str, str]:
    """The teacher with its checkpoint loaded strictly; returns it, its SHA-256 and layout.

    The teacher is built from ``cfg.teacher`` (a name, like the student's), or is ``module`` (an
    object with its weights). ``teacher.checkpoint`` (a sakd checkpoint or the module's own
    ``state_dict()``) is loaded into either; a teacher built by name needs one. The digest is the
    checkpoint file's, or the object's state dict's (:func:`module_sha256`) when there is none.
    The :class:`DistillationTask` freezes it for the run.
    The layout says which file layout and module names were recognised (e.g. a RepDistiller
    checkpoint in RepDistiller's names, :func:`~sakd.engine.checkpoint.extract_weights`).
    """
    assert cfg.teacher is not None
    teacher = build_model(cfg.teacher, num_classes, input_size, module)
    if cfg.teacher.checkpoint is None:
        if module is None:
            raise SakdError(
                f"teacher {cfg.teacher.name!r} has no weights: set teacher.checkpoint to its "
                "checkpoint (a sakd checkpoint or the module's own state_dict)"
            )
        return teacher, module_sha256(teacher), "the teacher module's own weights"
    path = resolve_path(cfg.teacher.checkpoint)
    refuse_folder(path, "teacher checkpoint")
    if not path.is_file():
        raise SakdError(
            f"teacher checkpoint {str(path)!r} does not exist: train one with `sakd train` "
            "or set teacher.checkpoint to its path"
        )
    digest = sha256_file(path)
    expected = cfg.teacher.sha256 or recorded_sha256(path)
    if expected is not None and expected.lower() != digest:
        raise SakdError(
            f"teacher checkpoint {str(path)!r} has SHA-256 {digest[:12]}…, expected {expected[:12]}…: "
            "the file changed or is not the teacher you meant"
        )
    state, container = extract_weights(load_checkpoint(path))
    names = teacher.load_weights(
        state, f"teacher checkpoint {str(path)!r} for {cfg.teacher.name!r}"
    )
    return teacher, digest, f"{container} in {names}"


@dataclass(frozen=True)
class DistillerPlan:
    """A distiller checked against a pair: its class, validated parameters and paired spots.

    ``student_spots`` / ``teacher_spots`` are equal-length (trimmed to the shorter network) and,
    in the routed modes, at the same stages unless a side has token maps (a ViT: its blocks are
    paired in order with the other net's stages); empty for logit distillers.
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
    mode: SpotMode,
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
    has_tokens = any(spot.is_tokens for spot in (*s_spots, *t_spots))
    aligned = [s.index for s in s_spots] == [t.index for t in t_spots]
    if mode.routed and not aligned and not has_tokens:
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


def logit_term(cfg: RunConfig) -> tuple[type[Distiller], DistillerParams]:
    """The distiller of the logit term beside a feature distiller, with its checked parameters.

    ``loss.logit_distiller``: vanilla KD (temperature ``loss.kd_temperature``) or another
    distiller of the logits (e.g. DKD, with ``loss.logit_params``).
    """
    cls = get_distiller(cfg.loss.logit_distiller)
    if cls.spot_role != LOGITS_ROLE:
        logit_names = [n for n in list_distillers() if get_distiller(n).spot_role == LOGITS_ROLE]
        raise SakdError(
            f"loss.logit_distiller: {cls.name!r} distils at feature spots, not at the logits: use "
            f"one of {', '.join(logit_names)}"
        )
    if cls.name == LOGIT_KD:
        return cls, cls.Params(temperature=cfg.loss.kd_temperature)
    try:
        return cls, distiller_params(cls, cfg.loss.logit_params)
    except SakdError as exc:
        raise SakdError(f"loss.logit_params ({cls.name}): {exc}") from None


def distiller_values(cfg: RunConfig) -> dict[str, Any]:
    """``distiller.params`` as the distiller receives them: vanilla KD's temperature is the KD one."""
    assert cfg.distiller is not None
    if cfg.distiller.name != LOGIT_KD:
        return dict(cfg.distiller.params)
    return {**cfg.distiller.params, "temperature": cfg.loss.kd_temperature}


def resolved_weights(cfg: RunConfig, params: DistillerParams | None = None) -> dict[str, dict]:
    """Every resolved loss weight (and distiller parameter) with its value and source, for run.json.

    Distiller parameters no recipe, preset or override set are the ``Params`` defaults. An
    ``auto`` β is recorded as ``"auto"`` here; the run replaces it with the measured value.
    """
    values = {"loss.ce_weight": cfg.loss.ce_weight, "loss.kd_weight": cfg.loss.kd_weight}
    vanilla_kd = cfg.distiller is not None and cfg.distiller.name == LOGIT_KD
    if cfg.loss.kd_weight or vanilla_kd:
        values["loss.kd_temperature"] = cfg.loss.kd_temperature
    if cfg.loss.kd_weight and cfg.loss.logit_distiller != LOGIT_KD:
        values["loss.logit_distiller"] = cfg.loss.logit_distiller
        _, logit_params = logit_term(cfg)
        values.update({f"loss.logit_params.{k}": v for k, v in logit_params.model_dump().items()})
    values["spots.routing_ce_weight"] = cfg.spots.routing_ce_weight
    if cfg.distiller is not None:
        values["distiller.loss_weight"] = cfg.distiller.loss_weight
    if params is not None:
        own = params.model_dump(exclude={"temperature"} if vanilla_kd else set())
        values.update({f"distiller.params.{k}": v for k, v in own.items()})
    sources = cfg.weight_sources()
    return {k: {"value": v, "source": sources.get(k, "default")} for k, v in values.items()}


def build_task(
    cfg: RunConfig,
    train_set: BatchSource,
    runtime: Runtime,
    modules: dict[str, nn.Module] | None = None,
) -> tuple[Task, dict]:
    """The task for this config and facts to record (teacher checksum, resolved loss weights).

    ``modules``: ``nn.Module`` objects to use instead of building ``cfg.model`` / ``cfg.teacher``
    by name (keys ``"model"`` and ``"teacher"``; see :func:`build_model`).
    """
    modules = dict(modules or {})
    unknown = sorted(set(modules) - set(MODULE_KEYS))
    if unknown:
        raise SakdError(f"modules may hold 'model' and 'teacher', not {', '.join(unknown)}")
    if modules.get("teacher") is not None and cfg.teacher is None:
        raise SakdError("a teacher module was given but the config has no teacher section")
    input_size = int(train_set.image_size[-1])
    num_classes = train_set.num_classes
    student = build_model(cfg.model, num_classes, input_size, modules.get("model"))
    opt = cfg.optimizer
    settings = dict(
        optimizer=opt.name, betas=opt.betas, eps=opt.eps, clip_grad_norm=opt.clip_grad_norm
    )
    group = dict(
        lr=cfg.lr,
        weight_decay=opt.weight_decay,
        momentum=opt.momentum,
        nesterov=opt.nesterov,
        **settings,
    )
    smoothing = cfg.loss.label_smoothing
    if cfg.teacher is None:
        task = ClassificationTask(student, label_smoothing=smoothing, **group)
        return runtime.prepare_module(task), {}
    dcfg = cfg.distiller or DistillerConfig()
    params = distiller_values(cfg)
    distiller_params(get_distiller(dcfg.name), params)  # before the teacher is read
    teacher, digest, layout = load_teacher(cfg, num_classes, input_size, modules.get("teacher"))
    plan = plan_distiller(
        dcfg.name,
        params,
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
        routing_ce_weight=cfg.spots.routing_ce_weight,
        tau=cfg.spots.tau,
        homogeneous=cfg.spots.homogeneous,
        input_size=input_size,
        seed=cfg.seed,
        random_scheme=cfg.spots.random_scheme,
        logit_follows_last_spot=plan.cls.random_logit_follows_last_spot,
        teacher_spot_indices=[t.index for t in plan.teacher_spots],
    )
    # The policy and adaptors: the authors' SGD on the step decay, or the student's optimiser and
    # schedule with their own lr and weight decay (spots.agent_optimizer=main).
    agent_group = dict(lr=cfg.agent_lr, weight_decay=cfg.spots.agent_weight_decay, momentum=0.9)
    if cfg.spots.agent_optimizer == "main":
        agent_group.update(momentum=opt.momentum, nesterov=opt.nesterov, **settings)
    else:
        agent_group.update(schedule="step")
    task = DistillationTask(
        student,
        teacher,
        selector,
        terms,
        ce_weight=cfg.loss.ce_weight,
        student_group=group,
        agent_group=agent_group,
        label_smoothing=smoothing,
    )
    facts = {
        "teacher_sha256": digest,
        "teacher_weights": layout,
        "resolved_weights": resolved_weights(cfg, plan.params),
    }
    return runtime.prepare_module(task), facts


def _loss_terms(
    cfg: RunConfig, plan: DistillerPlan, num_classes: int, train_set: BatchSource
) -> list[LossTerm]:
    """The logit term (when ``loss.kd_weight`` > 0), then the chosen distiller's term."""
    assert cfg.distiller is not None
    terms = []
    if cfg.loss.kd_weight > 0:
        logit_cls, logit_params = logit_term(cfg)
        if plan.cls.name == LOGIT_KD:
            raise SakdError(
                f"distiller {LOGIT_KD!r} is the logit-KD term itself: set loss.kd_weight=0 "
                "(its weight is distiller.loss_weight, its temperature loss.kd_temperature)"
            )
        if plan.cls.spot_role == LOGITS_ROLE:
            raise SakdError(
                f"distiller {plan.cls.name!r} distils at the logits itself: set loss.kd_weight=0 "
                "(the logit term, loss.logit_distiller, runs beside feature distillers)"
            )
        logit = _new_distiller(
            logit_cls, DistillerSetup((), (), logit_params, num_classes, train_set.labels)
        )
        terms.append(LossTerm(logit_cls.name, cfg.loss.kd_weight, logit))
    distiller = _new_distiller(
        plan.cls,
        DistillerSetup(
            tuple(plan.student_spots),
            tuple(plan.teacher_spots),
            plan.params,
            num_classes,
            train_set.labels,
        ),
    )
    beta = cfg.distiller.loss_weight
    terms.append(
        LossTerm(
            distiller.name,
            None if beta == AUTO else beta,
            distiller,
            [s.index for s in plan.student_spots],
            [t.index for t in plan.teacher_spots],
            checkpoint_name="distiller",
        )
    )
    return terms


def _new_distiller(cls: type[Distiller], setup: DistillerSetup) -> Distiller:
    """``cls(setup)``; a user's own class (not sakd's) that raises is one line naming it."""
    if cls.__module__.partition(".")[0] == "sakd":
        return cls(setup)
    try:
        return cls(setup)
    except BaseException as exc:  # the user's distiller: one line (interrupts pass)
        if passes_through(exc):
            raise
        raise user_code_error(f"distiller {cls.__module__}:{cls.__qualname__}", exc) from exc
