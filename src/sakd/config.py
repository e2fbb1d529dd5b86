"""Typed run configuration: YAML recipes + ``KEY=VALUE`` overrides, validated into pydantic models.

Nothing downstream reads raw YAML: the CLI turns a recipe and its overrides into a :class:`RunConfig`
here, and every builder takes that object. Unknown keys, renamed keys and wrong types are rejected
with the key named (:class:`~sakd.errors.SakdError`).

Each loss weight has one home, in this order of precedence (highest first): the command line, the
recipe files (the pair recipe and its ``base:`` chain, e.g. the protocol's
``spots.routing_ce_weight``), the recipe's per-pair ``distiller.presets``, the published table
(``recipes/_published.yaml``, chosen by ``distiller.published``) and the distiller's ``Params``
defaults. The loader remembers where each value came from (:class:`Recipe`), and the validated
config keeps it (:meth:`RunConfig.weight_sources`), so ``run.json`` can say it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import posixpath
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sakd.errors import SakdError
from sakd.spot_modes import SpotMode

# Keys renamed so that no two hyperparameters share a name (issue 9): old dotted key -> new one.
RENAMED_KEYS = {
    "distiller.beta": "distiller.loss_weight",
    "distiller.weights": "distiller.published",
    "loss.ce": "loss.ce_weight",
    "loss.kd": "loss.kd_weight",
    "schedule.gamma": "schedule.lr_decay",
    "spots.gamma": "spots.routing_ce_weight",
}
# The loss weights filled from the published table when no recipe or override sets them.
PUBLISHED_KEYS = (
    "loss.ce_weight",
    "loss.kd_weight",
    "distiller.loss_weight",
    "spots.routing_ce_weight",
)
PUBLISHED_FILE = "src/sakd/recipes/_published.yaml"
# model.name / teacher.name of a module object passed in from Python (sakd.train, sakd.distill):
# "object:<module>.<class>", recorded so config.yaml says what ran; it cannot be built by name.
OBJECT_PREFIX = "object:"


class _Strict(BaseModel):
    # Numbers must be finite (lr=.inf, 1e999 are refused) and never true/false (epochs=true).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and _is_numeric(field.annotation):
            items = value if isinstance(value, list) else [value]
            if any(isinstance(item, bool) for item in items):
                raise ValueError("must be a number, not true/false")
        return value


def _is_numeric(annotation: Any) -> bool:
    """True for ``int``/``float`` fields, optional or in a list."""
    if annotation in (int, float):
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list):
        return any(_is_numeric(arg) for arg in typing.get_args(annotation))
    return False


class DataConfig(_Strict):
    """Which dataset, where it lives, and how much of it to use."""

    name: str = "embedded"
    root: str | None = None
    download: bool = False
    train_limit: int | None = Field(default=None, ge=1)
    test_limit: int | None = Field(default=None, ge=1)
    image_size: int | None = Field(default=None, ge=8, le=1024)
    augment: bool = True
    # How batches are made (docs/data.md): ``memory`` holds the split as one uint8 tensor,
    # ``stream`` reads images through a DataLoader with ``workers`` processes (ImageNet-style
    # RandomResizedCrop with area ``crop_scale`` + flip; resize + centre crop of ``crop_fraction``
    # for evaluation); ``auto`` streams ``imagenet`` and keeps everything else in memory.
    # ``mean`` / ``std`` (per channel, 0-1 scale) replace the dataset's normalisation.
    loader: Literal["auto", "memory", "stream"] = "auto"
    workers: int = Field(default=4, ge=0)
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_fraction: float = Field(default=0.875, gt=0, le=1)

    @field_validator("mean")
    @classmethod
    def _mean_in_unit_range(cls, value):
        if value is not None and not all(0 <= v <= 1 for v in value):
            raise ValueError("must be on the 0-1 scale of the images (e.g. 0.485, not 123.675)")
        return value

    @field_validator("std")
    @classmethod
    def _std_positive(cls, value):
        if value is not None and not all(0 < v <= 1 for v in value):
            raise ValueError("must be positive and on the 0-1 scale (e.g. 0.229, not 58.395)")
        return value

    @field_validator("crop_scale")
    @classmethod
    def _scale_range(cls, value):
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError("must be [low, high] with 0 < low <= high <= 1 (e.g. [0.08, 1.0])")
        return value

    @property
    def streamed(self) -> bool:
        """Whether batches come from the streaming loader."""
        return self.loader == "stream" or (self.loader == "auto" and self.name == "imagenet")


class ModelConfig(_Strict):
    """A network from the zoo by name, or a user module split at named module paths."""

    name: str
    stages: list[str] | None = None
    head: str | None = None
    stem: str | None = None
    pretrained: bool | str | None = None


class OptimizerConfig(_Strict):
    """SGD settings shared by the student (and distiller parts)."""

    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    nesterov: bool = False


class ScheduleConfig(_Strict):
    """Step decay: lr × ``lr_decay`` at each milestone.

    Milestones are given for ``reference_epochs`` and scaled to the run's ``epochs`` (so a 24-epoch
    smoke run of the 240-epoch protocol decays at 15/18/21).
    """

    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])
    lr_decay: float = Field(default=0.1, gt=0, le=1)
    reference_epochs: int = Field(default=240, ge=1)

    def scaled_milestones(self, epochs: int) -> list[int]:
        """Milestones for a run of ``epochs`` epochs."""
        return [max(1, round(m * epochs / self.reference_epochs)) for m in self.milestones]


class TeacherConfig(ModelConfig):
    """The frozen teacher: a network named like the student's (:class:`ModelConfig`'s fields),
    its checkpoint file and (optionally) the file's SHA-256.

    ``checkpoint`` is a sakd checkpoint or the module's own ``state_dict()`` (its own names). It
    is required when the teacher is built by name; a teacher passed in as a module object
    (``sakd.distill``) brings its weights and has none.
    """

    checkpoint: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


SPOT_MODES = tuple(SpotMode.names())
# Keys a distiller preset may set on the run itself rather than in the distiller's params.
PRESET_RUN_KEYS = ("batch_size",)


class DistillerConfig(_Strict):
    """The distiller at its spots: name, the weight of its loss term (β) and its own hyperparameters.

    ``loss_weight`` left unset takes the value of the ``published`` table (``_published.yaml``):
    ``sakd`` (the SAKD authors' β, with CE + vanilla KD: the paper's "Stan." baseline) or
    ``repdistiller`` (the distiller alone, RepDistiller's β) or ``ls`` (KD / DKD with logit
    standardisation, the LS authors' weights). ``params`` are the distiller's own
    hyperparameters (validated by its ``Params``; DKD's ``alpha`` / ``beta`` live here).
    ``presets`` holds a recipe's per-distiller parameter defaults (e.g. DKD's β for a pair); the
    chosen distiller's preset is merged under ``params`` (``params`` wins) when the config is
    validated. A preset named ``<distiller>@<mode>`` applies in that spot mode only (over the
    plain one); a preset's ``batch_size`` sets the run's batch size unless the recipe or an
    override sets it.
    """

    name: str = "kd"
    loss_weight: float | None = Field(default=None, ge=0)
    published: Literal["sakd", "repdistiller", "ls"] = "sakd"
    params: dict[str, Any] = Field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("presets")
    @classmethod
    def _preset_keys(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key in value:
            name, at, mode = key.partition("@")
            if not name or (at and mode not in SPOT_MODES):
                raise ValueError(
                    f"preset {key!r} must be named '<distiller>' or '<distiller>@<mode>' with a "
                    f"mode in {', '.join(SPOT_MODES)}"
                )
        return value

    @property
    def label(self) -> str:
        """The method's name in results and in ``{distiller}``: ``kd+ls`` / ``dkd+ls`` with LS."""
        return f"{self.name}+ls" if self.params.get("logit_standardization") is True else self.name


class LossConfig(_Strict):
    """Weight of cross-entropy, weight (α) and temperature of the logit-KD term added to a distiller.

    Unset weights take the published values of the ``distiller.published`` table (1 and 0 when
    there is no teacher). The logit-KD term runs only when ``kd_weight`` > 0; vanilla KD alone is
    ``distiller.name=kd`` (its temperature is ``distiller.params.temperature``).
    """

    ce_weight: float | None = Field(default=None, ge=0)
    kd_weight: float | None = Field(default=None, ge=0)
    kd_temperature: float = Field(default=4.0, gt=0)


_DEFAULT_KD_TEMPERATURE = LossConfig.model_fields["kd_temperature"].default


class SpotsConfig(_Strict):
    """Where to distil: the spot mode and, for adaptive/anti, the policy's settings.

    ``routing_ce_weight`` (γ): weight of the routed network's cross-entropy in the policy's loss
    (and, in ``mode: random`` with ``random_scheme: authors``, of the student's cross-entropy).
    ``random_scheme`` (``mode: random`` only): ``authors`` runs the authors' ``train_random.py``
    (student CE × γ; for AT, NST and VID the logit spot reuses the last feature spot's draw),
    ``independent`` draws every spot on its own and leaves the CE weight alone.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=True)

    mode: SpotMode = SpotMode.FIXED
    random_scheme: Literal["authors", "independent"] = "authors"
    routing_ce_weight: float | None = Field(default=None, gt=0)
    tau: float = Field(default=5.0, gt=0)
    homogeneous: bool = False
    agent_lr: float | None = Field(default=None, gt=0)
    agent_weight_decay: float = Field(default=1e-3, ge=0)


class RunConfig(_Strict):
    """Everything one run needs; ``teacher`` and ``distiller`` are set for distillation runs.

    ``precision`` / ``channels_last`` ``auto``: bf16 autocast and channels-last on CUDA, fp32 and
    contiguous tensors on the CPU. ``compile``: ``torch.compile`` the student's forward passes.
    ``batch_size`` is per process; under ``torchrun`` with W processes ``lr_scaling=linear``
    multiplies every learning rate by W (the global batch is W × ``batch_size``), ``none`` keeps it.
    """

    name: str = "run"
    output_dir: str = "runs/run"
    seed: int = Field(default=0, ge=0, lt=2**32)
    epochs: int = Field(default=240, ge=1)
    batch_size: int = Field(default=64, ge=1)
    eval_batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=0.05, gt=0)
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    lr_scaling: Literal["linear", "none"] = "linear"
    progress: bool = True
    resume: bool = True
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    teacher: TeacherConfig | None = None
    distiller: DistillerConfig | None = None
    loss: LossConfig = Field(default_factory=LossConfig)
    spots: SpotsConfig = Field(default_factory=SpotsConfig)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "auto" and not (value == "cpu" or value.startswith("cuda")):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _distillation_complete(self, info: ValidationInfo) -> RunConfig:
        if self.distiller is not None and self.teacher is None:
            raise ValueError("a distiller needs a teacher: set teacher.name and teacher.checkpoint")
        if self.teacher is not None and self.distiller is None:
            self.distiller = DistillerConfig()
        if info.context is None and self._sources:
            return self  # re-validated after an assignment: already resolved
        context = info.context or {}
        sources = context.get("sources")
        if sources is None:  # validated without the loader: every value set counts as the config's
            values = self._weight_values()
            sources = {key: "config" for key, value in values.items() if value is not None}
        label = context.get("label", "config")
        resolved = self._resolve_weights(dict(sources), label, context.get("stored", False))
        self._format_output_dir()
        self._sources = resolved
        return self

    def _format_output_dir(self) -> None:
        """Fill ``{distiller}``, ``{mode}``, ``{seed}``, ``{model}``, ``{teacher}`` in output_dir."""
        fields = {
            "distiller": self.distiller.label if self.distiller else "none",
            "mode": self.spots.mode,
            "seed": self.seed,
            "model": self.model.name,
            "student": self.model.name,
            "teacher": self.teacher.name if self.teacher else "none",
        }
        try:
            formatted = self.output_dir.format(**fields)
        except (KeyError, IndexError, ValueError):
            raise ValueError(
                f"output_dir may only use the fields {{{'}, {'.join(fields)}}}"
            ) from None
        if formatted != self.output_dir:
            self.output_dir = formatted

    def _weight_values(self) -> dict[str, Any]:
        """The configured value of each published key (None: unset)."""
        d = self.distiller
        return {
            "loss.ce_weight": self.loss.ce_weight,
            "loss.kd_weight": self.loss.kd_weight,
            "distiller.loss_weight": d.loss_weight if d is not None else None,
            "spots.routing_ce_weight": self.spots.routing_ce_weight,
        }

    def _resolve_weights(
        self, sources: dict[str, str], label: str, stored: bool = False
    ) -> dict[str, str]:
        """Fill unset loss weights from the published table and merge the chosen distiller's preset.

        ``sources`` holds the keys the recipe files and overrides set, with their source; returns
        where each resolved value came from. A temperature for a logit-KD term that is off is an
        error, except in configs sakd stored itself (``stored``).
        """
        d = self.distiller
        values = self._weight_values()
        keys = [k for k in PUBLISHED_KEYS if d is not None or not k.startswith("distiller.")]
        unset = [k for k in keys if source_of(sources, k) is None or values[k] is None]
        row: dict[str, float] = {"ce_weight": 1.0, "kd_weight": 0.0, "routing_ce_weight": 1.0}
        row_source = "default"
        if d is not None:
            published = _distiller_published(d.name, d.published)
            if published is not None:
                row, row_source = published, f"published:{d.published}"
            elif unset:
                _check_registered(d.name)
                raise SakdError(
                    f"{label}: distiller {d.name!r} has no published weights in the "
                    f"{d.published!r} table: add it to {PUBLISHED_FILE} or set "
                    f"{', '.join(unset)}"
                )
        resolved: dict[str, str] = {}
        for key in keys:
            if key not in unset:
                resolved[key] = str(source_of(sources, key))
                continue
            resolved[key] = row_source
            section, name = key.split(".")
            target = d if section == "distiller" else getattr(self, section)
            setattr(target, name, float(row[name]))
        temperature_source = source_of(sources, "loss.kd_temperature")
        unused = not self.loss.kd_weight and self.loss.kd_temperature != _DEFAULT_KD_TEMPERATURE
        if d is not None and temperature_source is not None and unused and not stored:
            raise SakdError(
                f"{label}: loss.kd_temperature is set ({temperature_source}) but the logit-KD term "
                "is off (loss.kd_weight=0): set loss.kd_weight > 0, or the distiller's own "
                "temperature as distiller.params.temperature (`sakd distillers` lists its params)"
            )
        resolved["loss.kd_temperature"] = temperature_source or "default"
        if d is not None:
            resolved.update(self._apply_presets(sources, label))
        return resolved

    def _apply_presets(self, sources: dict[str, str], label: str) -> dict[str, str]:
        """Merge the chosen distiller's presets: ``<name>``, then ``<name>@<spot mode>``.

        ``params`` wins over both. A preset's run-level keys (``PRESET_RUN_KEYS``: a pair's
        published batch size for one distiller) set the run unless the recipe or an override
        sets that key itself. Returns where each distiller parameter (and run key) came from.
        """
        d = self.distiller
        resolved: dict[str, str] = {}
        preset: dict[str, Any] = {}
        origin: dict[str, str] = {}
        for name in (d.name, f"{d.name}@{self.spots.mode}"):
            for key, value in d.presets.get(name, {}).items():
                preset[key] = value
                where = source_of(sources, f"distiller.presets.{name}.{key}") or label
                origin[key] = "preset " + where.removeprefix("recipe ")
        for key in d.params:
            resolved[f"distiller.params.{key}"] = (
                source_of(sources, f"distiller.params.{key}") or label
            )
        for key in PRESET_RUN_KEYS:
            if key in preset:
                value = preset.pop(key)
                if key not in self.model_fields_set and getattr(self, key) != value:
                    setattr(self, key, value)
                    resolved[key] = origin[key]
        for key in preset:
            if key not in d.params:
                resolved[f"distiller.params.{key}"] = origin[key]
        if preset:
            d.params = {**preset, **d.params}
        return resolved

    def weight_sources(self) -> dict[str, str]:
        """Where each resolved loss weight and distiller parameter came from.

        ``command line``, ``recipe <name>``, ``preset <recipe>``, ``published:<table>``,
        ``default``, or the label given to :func:`validate_config`. Distiller parameters left at
        their ``Params`` default are not listed (the builder reports them as ``default``).
        """
        return dict(self._sources)

    @property
    def agent_lr(self) -> float:
        """Learning rate of the policy and adaptors (the authors': half the student's)."""
        return self.spots.agent_lr if self.spots.agent_lr is not None else self.lr / 2


RECIPES_PACKAGE = "sakd.recipes"


@functools.cache
def _published_text() -> str:
    return resources.files(RECIPES_PACKAGE).joinpath("_published.yaml").read_text()


def published_weights() -> dict[str, dict[str, dict[str, float]]]:
    """The published loss-weight tables (``recipes/_published.yaml``), a fresh copy per call."""
    return yaml.safe_load(_published_text())


def list_recipes() -> list[str]:
    """Names of the packaged recipes (relative paths without ``.yaml``), sorted."""
    root = resources.files(RECIPES_PACKAGE)
    names: list[str] = []

    def walk(node, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif child.name.endswith(".yaml") and not child.name.startswith("_"):
                names.append(prefix + child.name[: -len(".yaml")])

    walk(root, "")
    return sorted(names)


def _distiller_published(name: str, table: str) -> dict[str, float] | None:
    """The weights distiller ``name`` declares for ``table`` (None: unknown distiller or no row)."""
    from sakd.losses import published_weights_of

    weights = published_weights_of(name, table)
    return None if weights is None else weights.model_dump()


def _check_registered(name: str) -> None:
    """Raise the registry's one-line error when ``name`` is not a distiller."""
    from sakd.losses import get_distiller

    get_distiller(name)


def source_of(sources: dict[str, str], key: str) -> str | None:
    """Where the dotted ``key`` (or the section holding it) was set, or None when nothing set it."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def _leaf_keys(data: dict, prefix: str = "") -> list[str]:
    """Dotted keys of every value in a nested mapping (an empty mapping counts as a value)."""
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys += _leaf_keys(value, dotted + ".")
        else:
            keys.append(dotted)
    return keys


@dataclass(frozen=True)
class Recipe:
    """A recipe's keys (``base:`` chain and overrides merged) and, per dotted key, who set it.

    Sources read ``recipe <name or path>`` for recipe files and ``command line`` for overrides
    (or the label given to :meth:`with_overrides`). Only :func:`validate_config` reads it.
    """

    values: dict
    sources: dict[str, str] = field(default_factory=dict)

    def updated(self, update: dict, label: str) -> Recipe:
        """This recipe with ``update``'s keys merged over it, set by ``label``."""
        sources = {**self.sources, **dict.fromkeys(_leaf_keys(update), label)}
        return Recipe(deep_merge(self.values, update), sources)

    def with_overrides(self, overrides: list[str], label: str = "command line") -> Recipe:
        """This recipe with ``KEY=VALUE`` overrides applied, set by ``label``."""
        values = copy.deepcopy(self.values)
        sources = dict(self.sources)
        for item in overrides:
            key, value = _set_override(values, item)
            leaves = _leaf_keys(value, key + ".") if isinstance(value, dict) and value else [key]
            sources.update(dict.fromkeys(leaves, label))
        return Recipe(values, sources)


def _read_recipe_text(ref: str, context: str | Path | None) -> tuple[str, str | Path, str]:
    """Text of a recipe given as a file path or a packaged recipe name, where it was found, its name.

    ``context`` is the folder of the recipe that names ``ref`` as its base: a directory
    (``Path``) for files, a packaged folder (``str``, e.g. ``"cifar100/train"``) for recipes.
    """
    if isinstance(context, str):
        name = posixpath.normpath(posixpath.join(context, ref))
        return _read_packaged(name, ref)
    path = Path(ref) if context is None else context / ref
    if path.is_file():
        try:
            return path.read_bytes().decode("utf-8"), path.parent, str(path)
        except UnicodeDecodeError:
            raise SakdError(f"config {ref!r} is not a text file: give a YAML recipe") from None
    if context is None or _is_packaged(ref):
        # A user file may build on a packaged recipe: ``base: quickstart/student``.
        return _read_packaged(ref, ref)
    raise SakdError(
        f"recipe base {ref!r} is neither a file next to the recipe that names it ({context}) nor "
        "a packaged recipe: fix the path, or use a name `sakd recipes` lists"
    )


def _is_packaged(name: str) -> bool:
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    return resources.files(RECIPES_PACKAGE).joinpath(*f"{name}.yaml".split("/")).is_file()


def _read_packaged(name: str, ref: str) -> tuple[str, str, str]:
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    packaged = resources.files(RECIPES_PACKAGE).joinpath(*f"{name}.yaml".split("/"))
    if not packaged.is_file():
        raise SakdError(
            f"config {ref!r} is neither a file nor a packaged recipe: give a YAML path or one of "
            "the names `sakd recipes` lists"
        )
    return packaged.read_text(), posixpath.dirname(name), name


def load_recipe(ref: str, context: str | Path | None = None, _seen: tuple = ()) -> Recipe:
    """The recipe with its ``base:`` chain merged in (the recipe's keys win), and who set each key."""
    if ref in _seen:
        raise SakdError(f"recipe {ref!r} includes itself through 'base:'; remove the cycle")
    text, where, name = _read_recipe_text(ref, context)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise SakdError(f"config {ref!r} is not valid YAML{line}: fix the syntax") from None
    except RecursionError:
        raise SakdError(
            f"config {ref!r} is nested too deeply to be a recipe: fix the file"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SakdError(f"config {ref!r} must be a YAML mapping of keys to values")
    base = data.pop("base", None)
    parent = Recipe({}) if base is None else load_recipe(str(base), where, (*_seen, ref))
    return parent.updated(data, f"recipe {name}")


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, recursing into nested mappings (new dict, inputs untouched)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _set_override(data: dict, item: str) -> tuple[str, Any]:
    """Apply one ``KEY=VALUE`` override to ``data`` in place; returns the key and the value."""
    key, sep, raw = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise SakdError(f"override {item!r} is not KEY=VALUE (e.g. epochs=2 or data.name=cifar100)")
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except (yaml.YAMLError, RecursionError):
        value = raw
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SakdError(f"override {item!r}: {part!r} is a value, not a section")
        node = child
    node[parts[-1]] = value
    return key, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML-typed values) to a recipe dict."""
    return Recipe(data).with_overrides(overrides).values


def _lookup(data: dict, key: str) -> bool:
    """True when the dotted ``key`` is present in the nested mapping ``data``."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def upgrade_renamed_keys(data: dict) -> dict:
    """A stored config (written by an older sakd) with its renamed keys moved to the new names."""
    data = copy.deepcopy(data)
    for old, new in RENAMED_KEYS.items():
        section, old_name = old.split(".")
        node = data.get(section)
        if isinstance(node, dict) and old_name in node:
            node.setdefault(new.split(".")[1], node.pop(old_name))
    return data


def validate_config(data: dict | Recipe, source: str = "config", stored: bool = False) -> RunConfig:
    """Validate a recipe into a :class:`RunConfig`; errors name the offending key.

    A plain dict counts as set by ``source``; a :class:`Recipe` says who set each key. Renamed keys
    are an error naming the new key, except in configs sakd itself stored (``stored=True``:
    ``config.yaml`` of a run folder, a checkpoint's config), which are read under the new names.
    """
    if isinstance(data, Recipe):
        recipe = data
    else:
        values = upgrade_renamed_keys(data) if stored else data
        recipe = Recipe(values, dict.fromkeys(_leaf_keys(values), source))
    values = recipe.values
    for old, new in RENAMED_KEYS.items():
        if _lookup(values, old):
            raise SakdError(f"{source}: key {old!r} was renamed to {new!r}")
    context = {"sources": recipe.sources, "label": source, "stored": stored}
    try:
        return RunConfig.model_validate(values, context=context)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = f"{source}: unknown key {key!r}; check its spelling (see the packaged recipes)"
        elif err["type"] == "missing":
            msg = f"{source}: key {key!r} is required; add it to the recipe or as {key}=VALUE"
        else:
            msg = f"{source}: key {key!r}: {err['msg']} (got {err.get('input')!r})"
        raise SakdError(msg) from None


def load_config(ref: str, overrides: list[str] | None = None) -> RunConfig:
    """Recipe (path or packaged name) + overrides → validated :class:`RunConfig`."""
    try:
        recipe = load_recipe(ref).with_overrides(overrides or [])
        return validate_config(recipe, source=f"config {ref!r}")
    except RecursionError:
        raise SakdError(f"config {ref!r} is nested too deeply to be a recipe: fix it") from None


RESUME_IGNORED_KEYS = ("progress", "resume", "device", "output_dir", "name")


def config_differences(saved: dict, config: RunConfig) -> list[str]:
    """Top-level keys in which a stored config differs from ``config`` (resume-irrelevant ones aside).

    The stored dict is compared through the schema, so fields added since it was written take
    their defaults; one that no longer validates is compared as written.
    """
    with contextlib.suppress(SakdError):
        saved = validate_config(saved, stored=True).model_dump(mode="json")
    current = config.model_dump(mode="json")
    keys = (set(saved) | set(current)) - set(RESUME_IGNORED_KEYS)
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
