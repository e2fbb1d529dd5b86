"""Typed run configuration: YAML recipes + ``KEY=VALUE`` overrides, validated into pydantic models.

Nothing downstream reads raw YAML: the CLI turns a recipe and its overrides into a :class:`RunConfig`
here, and every builder takes that object. Unknown keys and wrong types are rejected with the key
named (:class:`~sakd.errors.SakdError`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import posixpath
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sakd.errors import SakdError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Which dataset, where it lives, and how much of it to use."""

    name: str = "embedded"
    root: str | None = None
    download: bool = False
    train_limit: int | None = Field(default=None, ge=1)
    test_limit: int | None = Field(default=None, ge=1)
    image_size: int | None = Field(default=None, ge=8)
    augment: bool = True


class ModelConfig(_Strict):
    """A network from the zoo by name, or a user module split at named module paths."""

    name: str
    stages: list[str] | None = None
    head: str | None = None
    stem: str | None = None


class OptimizerConfig(_Strict):
    """SGD settings shared by the student (and distiller parts)."""

    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    nesterov: bool = False


class ScheduleConfig(_Strict):
    """Step decay: lr × ``gamma`` at each milestone.

    Milestones are given for ``reference_epochs`` and scaled to the run's ``epochs`` (so a 24-epoch
    smoke run of the 240-epoch protocol decays at 15/18/21).
    """

    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])
    gamma: float = Field(default=0.1, gt=0, le=1)
    reference_epochs: int = Field(default=240, ge=1)

    def scaled_milestones(self, epochs: int) -> list[int]:
        """Milestones for a run of ``epochs`` epochs."""
        return [max(1, round(m * epochs / self.reference_epochs)) for m in self.milestones]


class TeacherConfig(_Strict):
    """The frozen teacher: architecture, checkpoint file and (optionally) its SHA-256."""

    name: str
    checkpoint: str
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")


SPOT_MODES = ("fixed", "random", "adaptive", "anti")
# Keys a distiller preset may set on the run itself rather than in the distiller's params.
PRESET_RUN_KEYS = ("batch_size",)


class DistillerConfig(_Strict):
    """The distiller at its spots: name, weight β and its own hyperparameters.

    ``beta`` left unset takes the published value of the ``weights`` table (``_published.yaml``):
    ``sakd`` (the SAKD authors' β, with CE + vanilla KD: the paper's "Stan." baseline) or
    ``repdistiller`` (the distiller alone, RepDistiller's β). ``presets`` holds a recipe's
    per-distiller parameter defaults (e.g. DKD's β for a pair); the chosen distiller's preset is
    merged under ``params`` (``params`` wins) when the config is validated. A preset named
    ``<distiller>@<mode>`` applies in that spot mode only (over the plain one); a preset's
    ``batch_size`` sets the run's batch size unless the recipe or an override sets it.
    """

    name: str = "kd"
    beta: float | None = Field(default=None, ge=0)
    weights: Literal["sakd", "repdistiller"] = "sakd"
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


class LossConfig(_Strict):
    """Weights of cross-entropy and of vanilla KD at the logit spot (α), and the KD temperature.

    Unset weights take the published values of the distiller's ``weights`` table (1 and 0 when
    there is no teacher).
    """

    ce: float | None = Field(default=None, ge=0)
    kd: float | None = Field(default=None, ge=0)
    kd_temperature: float = Field(default=4.0, gt=0)


class SpotsConfig(_Strict):
    """Where to distil: the spot mode and, for adaptive/anti, the policy's settings.

    ``random_scheme`` (``mode: random`` only): ``authors`` runs the authors' ``train_random.py``
    (student CE × ``gamma``; for AT, NST and VID the logit spot reuses the last feature spot's
    draw), ``independent`` draws every spot on its own and leaves the CE weight alone.
    """

    mode: Literal["fixed", "random", "adaptive", "anti"] = "fixed"
    random_scheme: Literal["authors", "independent"] = "authors"
    gamma: float | None = Field(default=None, gt=0)
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
    seed: int = 0
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

    @model_validator(mode="after")
    def _distillation_complete(self) -> RunConfig:
        if self.distiller is not None and self.teacher is None:
            raise ValueError("a distiller needs a teacher: set teacher.name and teacher.checkpoint")
        if self.teacher is not None and self.distiller is None:
            self.distiller = DistillerConfig()
        self._fill_published_weights()
        if self.distiller is not None:
            self._apply_presets()
        self._format_output_dir()
        return self

    def _apply_presets(self) -> None:
        """Merge the chosen distiller's presets: ``<name>``, then ``<name>@<spot mode>``.

        ``params`` wins over both. A preset's run-level keys (``PRESET_RUN_KEYS``: a pair's
        published batch size for one distiller) set the run unless the recipe or an override
        sets that key itself.
        """
        presets = self.distiller.presets
        name = self.distiller.name
        preset = {**presets.get(name, {}), **presets.get(f"{name}@{self.spots.mode}", {})}
        for key in PRESET_RUN_KEYS:
            if key in preset:
                value = preset.pop(key)
                if key not in self.model_fields_set and getattr(self, key) != value:
                    setattr(self, key, value)
        if preset:
            self.distiller.params = {**preset, **self.distiller.params}

    def _format_output_dir(self) -> None:
        """Fill ``{distiller}``, ``{mode}``, ``{seed}``, ``{model}``, ``{teacher}`` in output_dir."""
        fields = {
            "distiller": self.distiller.name if self.distiller else "none",
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

    def _fill_published_weights(self) -> None:
        """Replace unset loss weights by the published ones (see ``_published.yaml``)."""
        row: dict[str, float] = {"ce": 1.0, "kd": 0.0, "beta": 0.0, "gamma": 1.0}
        if self.distiller is not None:
            table = published_weights()[self.distiller.weights]
            row = table.get(self.distiller.name, {"ce": 1.0, "kd": 1.0, "beta": 1.0, "gamma": 1.0})
            if self.data.name == "tiny-imagenet":
                row = {**row, "gamma": 2.0}
            if self.distiller.beta is None:
                self.distiller.beta = float(row["beta"])
        if self.loss.ce is None:
            self.loss.ce = float(row["ce"])
        if self.loss.kd is None:
            self.loss.kd = float(row["kd"])
        if self.spots.gamma is None:
            self.spots.gamma = float(row["gamma"])

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


def _read_recipe_text(ref: str, context: str | Path | None) -> tuple[str, str | Path]:
    """Text of a recipe given as a file path or a packaged recipe name, and where it was found.

    ``context`` is the folder of the recipe that names ``ref`` as its base: a directory
    (``Path``) for files, a packaged folder (``str``, e.g. ``"cifar100/train"``) for recipes.
    """
    if isinstance(context, str):
        name = posixpath.normpath(posixpath.join(context, ref))
        return _read_packaged(name, ref)
    path = Path(ref) if context is None else context / ref
    if path.is_file():
        return path.read_text(), path.parent
    if context is None:
        return _read_packaged(ref, ref)
    raise SakdError(f"recipe base {ref!r} not found next to the recipe that names it ({context})")


def _read_packaged(name: str, ref: str) -> tuple[str, str]:
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    packaged = resources.files(RECIPES_PACKAGE).joinpath(*f"{name}.yaml".split("/"))
    if not packaged.is_file():
        raise SakdError(
            f"config {ref!r} is neither a file nor a packaged recipe: give a YAML path or one of "
            "the names `sakd recipes` lists"
        )
    return packaged.read_text(), posixpath.dirname(name)


def load_recipe_dict(ref: str, context: str | Path | None = None, _seen: tuple = ()) -> dict:
    """The recipe as a plain dict, with its ``base:`` chain merged in (the recipe's keys win)."""
    if ref in _seen:
        raise SakdError(f"recipe {ref!r} includes itself through 'base:'; remove the cycle")
    text, where = _read_recipe_text(ref, context)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        raise SakdError(f"config {ref!r} is not valid YAML{line}: fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SakdError(f"config {ref!r} must be a YAML mapping of keys to values")
    base = data.pop("base", None)
    if base is None:
        return data
    parent = load_recipe_dict(str(base), where, (*_seen, ref))
    return deep_merge(parent, data)


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` updated by ``update``, recursing into nested mappings (new dict, inputs untouched)."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``KEY=VALUE`` overrides (dotted keys, YAML-typed values) to a recipe dict."""
    result = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise SakdError(
                f"override {item!r} is not KEY=VALUE (e.g. epochs=2 or data.name=cifar100)"
            )
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            value = raw
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise SakdError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def validate_config(data: dict, source: str = "config") -> RunConfig:
    """Validate a recipe dict into a :class:`RunConfig`; errors name the offending key."""
    try:
        return RunConfig.model_validate(data)
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
    data = apply_overrides(load_recipe_dict(ref), overrides or [])
    return validate_config(data, source=f"config {ref!r}")


RESUME_IGNORED_KEYS = ("progress", "resume", "device", "output_dir", "name")


def config_differences(saved: dict, config: RunConfig) -> list[str]:
    """Top-level keys in which a stored config differs from ``config`` (resume-irrelevant ones aside).

    The stored dict is compared through the schema, so fields added since it was written take
    their defaults; one that no longer validates is compared as written.
    """
    with contextlib.suppress(SakdError):
        saved = validate_config(saved).model_dump(mode="json")
    current = config.model_dump(mode="json")
    keys = (set(saved) | set(current)) - set(RESUME_IGNORED_KEYS)
    return sorted(k for k in keys if saved.get(k) != current.get(k))


def dump_config(config: RunConfig) -> str:
    """The resolved configuration as YAML text."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
