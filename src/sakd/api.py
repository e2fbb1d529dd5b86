"""The Python API: train a network, or distil your own student from your own teacher, in one call.

::

    import sakd
    teacher_run = sakd.train(my_teacher, train_data, val_data, epochs=30, output_dir="runs/t")
    run = sakd.distill(my_teacher, my_student, train_data, val_data,
                       distiller="at", mode="adaptive", epochs=30, output_dir="runs/s")
    run.model, run.best_top1, run.last_top1, run.output_dir

Both functions build the same validated :class:`~sakd.config.RunConfig` the CLI builds from a
recipe (every keyword sets the config key of the same name; the table is :data:`TRAIN_KEYS` /
:data:`DISTILL_KEYS`) and call the same engine entry, :func:`sakd.engine.run.run`, with the
module objects and the data: resume, ``metrics.jsonl``, TensorBoard, atomic checkpoints and DDP
under ``torchrun`` work as for the CLI. ``docs/api.md`` is the reference.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sakd.config import (
    OBJECT_PREFIX,
    DataConfig,
    DistillerConfig,
    LossConfig,
    OptimizerConfig,
    RunConfig,
    ScheduleConfig,
    SpotsConfig,
    validate_config,
)
from sakd.data import BatchSource, from_dataset
from sakd.engine.run import CompleteRunSummary
from sakd.engine.run import run as run_engine
from sakd.engine.rundir import RunFolder
from sakd.errors import SakdError
from sakd.export import export, source_state_dict
from sakd.models import StagedNet
from sakd.spot_modes import SpotMode

__all__ = ["DISTILL_KEYS", "TRAIN_KEYS", "Run", "distill", "train"]

# RunConfig's top-level keys a keyword sets directly.
_TOP_KEYS = (
    "name",
    "output_dir",
    "seed",
    "epochs",
    "batch_size",
    "eval_batch_size",
    "lr",
    "device",
    "precision",
    "channels_last",
    "compile",
    "lr_scaling",
    "progress",
    "resume",
    "baseline",
    "weight_limit",
)
# data.name / data.root / data.download come from train_data / val_data.
_DATA_FROM_ARGUMENTS = ("name", "root", "download")


def _section(section: str, model: type, skip: tuple[str, ...] = ()) -> dict[str, str]:
    return {f: f"{section}.{f}" for f in model.model_fields if f not in skip}


_COMMON = {
    **{key: key for key in _TOP_KEYS},
    **_section("data", DataConfig, _DATA_FROM_ARGUMENTS),
    **_section("optimizer", OptimizerConfig, ("name",)),
    **_section("schedule", ScheduleConfig, ("name",)),
    "optimizer": "optimizer.name",
    "schedule": "schedule.name",
    "label_smoothing": "loss.label_smoothing",
    "ema_decay": "ema.decay",
}
#: ``sakd.train`` keyword -> the config key it sets (besides the positional arguments).
TRAIN_KEYS: dict[str, str] = {
    **_COMMON,
    "ce_weight": "loss.ce_weight",
    "stages": "model.stages",
    "head": "model.head",
    "stem": "model.stem",
    "pretrained": "model.pretrained",
}
#: ``sakd.distill`` keyword -> the config key it sets (besides the positional arguments).
DISTILL_KEYS: dict[str, str] = {
    **_COMMON,
    **_section("loss", LossConfig),
    **_section("spots", SpotsConfig, ("mode",)),
    **_section("distiller", DistillerConfig, ("name",)),
    "distiller": "distiller.name",
    "mode": "spots.mode",
    "student_spots": "model.stages",
    "student_head": "model.head",
    "student_stem": "model.stem",
    "student_pretrained": "model.pretrained",
    "teacher_spots": "teacher.stages",
    "teacher_head": "teacher.head",
    "teacher_stem": "teacher.stem",
    "teacher_pretrained": "teacher.pretrained",
    "teacher_checkpoint": "teacher.checkpoint",
    "teacher_sha256": "teacher.sha256",
}
assert len(set(TRAIN_KEYS.values())) == len(TRAIN_KEYS)
assert len(set(DISTILL_KEYS.values())) == len(DISTILL_KEYS)


@dataclass
class Run:
    """What :func:`train` and :func:`distill` return.

    ``model`` is the object you passed (or, for a model given by name, the module built for it),
    holding the weights of the **last** epoch (those ``last_top1`` was measured on), in eval mode,
    on the device it was on before the call; :meth:`load_best` switches it to the best epoch's.
    ``config`` is the validated :class:`~sakd.config.RunConfig` (``output_dir/config.yaml``),
    ``summary`` the engine's summary.
    """

    model: nn.Module
    best_top1: float
    best_epoch: int
    last_top1: float
    last_top5: float
    output_dir: Path
    config: RunConfig
    summary: Any

    def load_best(self) -> nn.Module:
        """Load the best epoch's weights (``checkpoints/best.pt``) into :attr:`model`; returns it."""
        _load_checkpoint_into(self.model, self.config.model.head, self.output_dir, "best")
        return self.model

    def export(self, out: str | Path, checkpoint: str = "best", format: str = "pt") -> Path:
        """Write the ``best`` or ``last`` student weights to ``out`` in the model's own names.

        A plain state dict (tensors only), written atomically by :func:`sakd.export.export`:
        ``MyNet().load_state_dict(torch.load(out))`` loads it strictly; beside it ``<stem>.json``
        holds the input contract (:func:`sakd.load_export` reads both). ``format="onnx"``: an
        ONNX model over raw [0, 1] images instead. :attr:`model` is left as it is.
        """
        return export(self.output_dir, out, checkpoint, model=self.model, format=format)

    def load_last(self) -> nn.Module:
        """Load the last epoch's weights (``checkpoints/last.pt``) into :attr:`model`; returns it."""
        _load_checkpoint_into(self.model, self.config.model.head, self.output_dir, "last")
        return self.model


def train(
    model: nn.Module | str,
    train_data: Any,
    val_data: Any = None,
    **options: Any,
) -> Run:
    """Train ``model`` alone (a teacher, or a student baseline) on ``train_data``.

    ``model``: any ``nn.Module`` (cut into stages automatically, or at ``stages`` / ``head``), a
    zoo :class:`~sakd.models.StagedNet`, or a model name (``resnet8``, ``torchvision:resnet18``,
    ``package.module:factory``); ``spots`` is another name for ``stages``. ``train_data`` /
    ``val_data``: torch Datasets of ``(image, label)`` items (C×H×W uint8 0-255 or float 0-1), or
    a folder holding ``train/<class>/*`` and ``val/<class>/*`` (then leave ``val_data`` out).
    Every other keyword sets the config key :data:`TRAIN_KEYS` names (``epochs``, ``lr``,
    ``batch_size``, ``device``, ``image_size``, ...); so do those dotted keys
    (``**{"data.loader": "stream"}``).
    Bad input raises one-line :class:`~sakd.errors.SakdError`\\ s before ``output_dir`` is touched.
    """
    options = _spots_alias(options, ("stages",), "sakd.train")
    if options.get("baseline"):
        raise SakdError(
            "sakd.train: baseline=True compares a distilled student with the student alone; "
            "sakd.train already trains the model alone: use it with sakd.distill"
        )
    values = _values(options, TRAIN_KEYS, "sakd.train")
    modules = {"model": _model_entry(model, values, "model", "sakd.train")}
    return _execute("sakd.train", values, modules, train_data, val_data)


def distill(
    teacher: nn.Module | str | Run,
    student: nn.Module | str,
    train_data: Any,
    val_data: Any = None,
    *,
    distiller: str = "kd",
    mode: SpotMode | str = SpotMode.FIXED,
    **options: Any,
) -> Run:
    """Distil ``student`` from the frozen ``teacher`` with ``distiller`` at spots chosen by ``mode``.

    ``teacher``: an ``nn.Module`` holding its trained weights (or a :class:`Run` from
    :func:`train`), or a model name with ``teacher_checkpoint=`` (a sakd checkpoint or the
    module's own ``state_dict()``). ``student``: like :func:`train`'s ``model``; it is trained in
    place and returned as ``run.model``. ``distiller``: ``sakd distillers`` lists them;
    ``mode``: ``fixed``, ``random``, ``adaptive`` or ``anti``. Spots default to the automatic
    choice (the outputs of each net's resolution stages); ``student_spots`` / ``teacher_spots``
    name them as module paths (``spots``: the same paths for both). Other keywords:
    :data:`DISTILL_KEYS` (``ce_weight``, ``kd_weight``, ``loss_weight``, ``routing_ce_weight``,
    ``params={...}`` for the distiller's own parameters, ...); data as in :func:`train`.
    """
    options = _spots_alias(options, ("student_spots", "teacher_spots"), "sakd.distill")
    values = _values(
        {**options, "distiller": distiller, "mode": mode}, DISTILL_KEYS, "sakd.distill"
    )
    if isinstance(teacher, Run):
        teacher = teacher.model
    modules = {
        "model": _model_entry(student, values, "model", "sakd.distill"),
        "teacher": _model_entry(teacher, values, "teacher", "sakd.distill"),
    }
    if modules["teacher"] is not None and modules["teacher"] is modules["model"]:
        raise SakdError("sakd.distill: the teacher and the student are the same object")
    return _execute("sakd.distill", values, modules, train_data, val_data)


# --- keywords -> config values ------------------------------------------------------------------


def _values(options: Mapping[str, Any], keys: Mapping[str, str], where: str) -> dict:
    """Nested config values from keywords (and dotted config keys); unknown keywords are errors."""
    values: dict = {}
    for keyword, value in options.items():
        if value is None:
            continue  # None: the config's default
        key = keys.get(keyword)
        if key is None and "." in keyword and keyword in keys.values():
            key = keyword
        if key is None:
            close = difflib.get_close_matches(keyword, list(keys), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise SakdError(
                f"{where}: unknown option {keyword!r}; {hint}the options are the config keys "
                "(docs/api.md lists them)"
            )
        _set(values, key, os.fspath(value) if isinstance(value, os.PathLike) else value)
    return values


def _spots_alias(options: dict, targets: tuple[str, ...], where: str) -> dict:
    """``spots=[paths]``: the same module paths for every net (``targets``), unless set apart."""
    if options.get("spots") is None:
        return {k: v for k, v in options.items() if k != "spots"}
    options = dict(options)
    spots = options.pop("spots")
    clash = [t for t in targets if options.get(t) is not None]
    if clash:
        raise SakdError(f"{where}: give spots= or {' / '.join(clash)}=, not both")
    return {**options, **dict.fromkeys(targets, spots)}


def _set(values: dict, dotted: str, value: Any) -> None:
    *sections, leaf = dotted.split(".")
    node = values
    for part in sections:
        node = node.setdefault(part, {})
    node[leaf] = value


def _model_entry(obj: Any, values: dict, section: str, where: str) -> nn.Module | None:
    """Record ``obj`` in ``values[section]``: a name as it is, a module object by its class name."""
    node = values.setdefault(section, {})
    role = section if where == "sakd.train" else {"model": "student"}.get(section, section)
    if isinstance(obj, str):
        node["name"] = obj
        return None
    if not isinstance(obj, nn.Module):
        raise SakdError(
            f"{where}: the {role} is a {type(obj).__name__}: give an nn.Module object or a model "
            "name (e.g. 'resnet8', 'torchvision:resnet18', 'package.module:factory')"
        )
    node["name"] = object_name(obj)
    return obj


def object_name(obj: Any) -> str:
    """How config.yaml records a Python object: ``object:<module>.<class>``."""
    cls = type(obj)
    return f"{OBJECT_PREFIX}{cls.__module__}.{cls.__qualname__}"


# --- data ---------------------------------------------------------------------------------------


def _is_path(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _is_dataset(obj: Any) -> bool:
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not _is_path(obj)


def _data_entry(train_data: Any, val_data: Any, values: dict, where: str) -> tuple | None:
    """Record the data in ``values['data']``; returns the datasets to read, or None for a folder."""
    node = values.setdefault("data", {})
    if _is_path(train_data):
        node.update(name="folder", root=str(_folder_root(train_data, val_data, where)))
        return None
    if not _is_dataset(train_data):
        raise SakdError(
            f"{where}: train_data is a {type(train_data).__name__}: give a torch Dataset of "
            "(image, label) items or the path of a folder holding train/<class>/ and val/<class>/"
        )
    if val_data is None:
        raise SakdError(f"{where}: val_data is missing: give the evaluation Dataset too")
    if not _is_dataset(val_data):
        raise SakdError(
            f"{where}: val_data is a {type(val_data).__name__}: give a torch Dataset of "
            "(image, label) items like train_data"
        )
    node["name"] = object_name(train_data)
    node.setdefault("workers", 0)  # a user Dataset need not be picklable for worker processes
    return train_data, val_data


def _folder_root(train_data: Any, val_data: Any, where: str) -> Path:
    """The ``folder`` dataset's root for a folder path (or a train/ and a val/ path side by side)."""
    train_path = Path(train_data).expanduser()
    if val_data is None:
        if not (train_path / "train").is_dir():
            raise SakdError(
                f"{where}: {str(train_path)!r} has no train/ folder: give a folder holding "
                "train/<class>/<images> and val/<class>/<images>, or pass val_data"
            )
        return train_path
    if not _is_path(val_data):
        raise SakdError(
            f"{where}: train_data is a path but val_data is a {type(val_data).__name__}: give "
            "two folders, or two Datasets"
        )
    val_path = Path(val_data).expanduser()
    if (
        train_path.name != "train"
        or val_path.name not in ("val", "test")
        or train_path.resolve().parent != val_path.resolve().parent
    ):
        raise SakdError(
            f"{where}: folders {str(train_path)!r} and {str(val_path)!r} must be ROOT/train and "
            "ROOT/val side by side (each holding <class>/<images>); or pass ROOT alone"
        )
    return train_path.parent


def _sources(datasets: tuple, cfg: RunConfig) -> tuple[BatchSource, BatchSource]:
    """The engine's sources for two user Datasets, as ``cfg.data`` asks."""
    d = cfg.data
    train_set, val_set = from_dataset(
        datasets[0],
        datasets[1],
        loader=d.loader,
        image_size=d.image_size,
        mean=d.mean,
        std=d.std,
        augment=d.augment,
        workers=d.workers,
        crop_scale=d.crop_scale,
        crop_fraction=d.crop_fraction,
    )
    if d.train_limit is not None:
        train_set = train_set.subset(d.train_limit)
    if d.test_limit is not None:
        val_set = val_set.subset(d.test_limit)
    return train_set, val_set


# --- the run ------------------------------------------------------------------------------------


def _validate(values: dict, where: str, keys: Mapping[str, str]) -> RunConfig:
    """The config, with error messages naming the keyword that set the offending key."""
    try:
        return validate_config(values, source=where)
    except SakdError as exc:
        reverse = {v: k for k, v in keys.items()}

        def name(match: re.Match) -> str:
            key = match.group(1)
            keyword = reverse.get(key)
            return f"{keyword}= (config key {key!r})" if keyword else f"key {key!r}"

        raise SakdError(re.sub(r"key '([\w.]+)'", name, str(exc))) from None


def _execute(where: str, values: dict, modules: dict, train_data: Any, val_data: Any) -> Run:
    keys = TRAIN_KEYS if where == "sakd.train" else DISTILL_KEYS
    datasets = _data_entry(train_data, val_data, values, where)
    cfg = _validate(values, where, keys)
    data = _sources(datasets, cfg) if datasets is not None else None
    objects = {k: v for k, v in modules.items() if v is not None}
    student = objects.get("model")
    teacher = objects.get("teacher")
    devices = {k: _device_of(m) for k, m in objects.items()}
    try:
        summary = run_engine(cfg, data=data, modules=objects)
    finally:
        if teacher is not None:
            teacher.to(devices["teacher"])
    output_dir = Path(cfg.output_dir)
    if student is None:
        student = _built_student(cfg, output_dir)
    elif isinstance(summary, CompleteRunSummary) or _is_main_process():
        # A finished run's summary comes without training: its weights are in last.pt. After
        # training, rank 0 reloads what it wrote (the other ranks hold the same weights already).
        _load_checkpoint_into(student, cfg.model.head, output_dir, "last")
    student.to(devices.get("model", torch.device("cpu")))
    student.eval()
    return Run(
        model=student,
        best_top1=summary.best_top1,
        best_epoch=summary.best_epoch,
        last_top1=summary.last_top1,
        last_top5=summary.last_top5,
        output_dir=output_dir,
        config=cfg,
        summary=summary,
    )


def _built_student(cfg: RunConfig, output_dir: Path) -> nn.Module:
    """For a student given by name: the module built for it, with the last weights."""
    from sakd.models import create_source_module

    saved = RunFolder(output_dir).read_checkpoint("last")
    state = saved.state_dict()
    num_classes = int(state["head.weight"].shape[0])
    module = create_source_module(cfg.model.name, num_classes)
    _load_state(module, state, cfg.model.head, str(saved.path))
    return module


def _load_checkpoint_into(
    module: nn.Module, head: str | None, output_dir: Path, which: str
) -> None:
    saved = RunFolder(output_dir).read_checkpoint(which)
    _load_state(module, saved.state_dict(), head, str(saved.path))


def _load_state(module: nn.Module, state: dict, head: str | None, what: str) -> None:
    """Load a checkpoint's staged student weights into the user's module (its own names)."""
    if isinstance(module, StagedNet):
        module.load_weights(state, what)
        return
    own = source_state_dict(module, state, head, what)
    with torch.no_grad():
        module.load_state_dict(own, strict=True)


def _device_of(module: nn.Module) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def _is_main_process() -> bool:
    """Rank 0 (or no torchrun): the rank that wrote the checkpoints."""
    return int(os.environ.get("RANK", "0")) == 0
