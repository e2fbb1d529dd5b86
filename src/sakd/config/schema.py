"""The configuration's schema: pydantic models of every section, checked key by key.

Unknown keys and wrong types are rejected here; the loss weights a recipe leaves unset stay ``None``
until :func:`sakd.config.weights.resolve_weights` fills them (an explicit step after validation).
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sakd.errors import quoted
from sakd.spot_modes import SpotMode

# model.name / teacher.name of a module object passed in from Python (sakd.train, sakd.distill):
# "object:<module>.<class>", recorded so config.yaml says what ran; it cannot be built by name.
OBJECT_PREFIX = "object:"
# distiller.loss_weight measured at the start of the run (docs/distillers.md, "Default weights on
# your own models").
AUTO = "auto"


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
    """The student's optimiser (a ``torch.optim`` class), shared by its distiller parts.

    ``name``: ``sgd`` (the default and the papers': ``momentum``, ``nesterov``), ``adam`` or
    ``adamw`` (``betas``, ``eps``; unset: torch's defaults). ``weight_decay`` is SGD's / Adam's L2
    term and AdamW's decoupled decay. ``clip_grad_norm``: clip the gradients' total L2 norm of each
    optimiser's parameters to this value before every step (unset: no clipping).
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    weight_decay: float = Field(default=5e-4, ge=0)
    nesterov: bool = False
    betas: tuple[float, float] | None = None
    eps: float | None = Field(default=None, gt=0)
    clip_grad_norm: float | None = Field(default=None, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value):
        if value is not None and not all(0 <= b < 1 for b in value):
            raise ValueError("must be two numbers in [0, 1), e.g. [0.9, 0.999]")
        return value

    @model_validator(mode="after")
    def _settings_of_the_chosen_optimiser(self) -> OptimizerConfig:
        if self.name == "sgd" and (self.betas is not None or self.eps is not None):
            raise ValueError(
                "betas and eps are settings of adam/adamw: set optimizer.name=adamw (or adam), "
                "or remove them"
            )
        if self.name != "sgd" and self.nesterov:
            raise ValueError(
                f"nesterov is a setting of sgd, not {self.name}: set nesterov=false or name=sgd"
            )
        return self


class ScheduleConfig(_Strict):
    """The learning-rate schedule (``torch.optim.lr_scheduler``), stepped every iteration.

    ``name``: ``step`` (the default and the papers': lr × ``lr_decay`` at each milestone, constant
    within an epoch), ``cosine`` or ``linear`` (from lr down to ``min_lr`` at the last iteration)
    or ``constant``. Milestones are given for ``reference_epochs`` and scaled to the run's
    ``epochs`` (so a 24-epoch smoke run of the 240-epoch protocol decays at 15/18/21).
    ``warmup_epochs`` (may be fractional): a linear warm-up from 1 % of lr to lr over that many
    epochs' iterations, before the schedule (whose iterations are counted after it for cosine and
    linear, and from the start for step's milestones).
    """

    name: Literal["step", "cosine", "linear", "constant"] = "step"
    milestones: list[int] = Field(default_factory=lambda: [150, 180, 210])
    lr_decay: float = Field(default=0.1, gt=0, le=1)
    reference_epochs: int = Field(default=240, ge=1)
    warmup_epochs: float = Field(default=0.0, ge=0)
    min_lr: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _min_lr_needs_a_decay_to_it(self) -> ScheduleConfig:
        if self.min_lr > 0 and self.name not in ("cosine", "linear"):
            raise ValueError(
                f"min_lr is where cosine and linear schedules end, not used by {self.name!r}: "
                "set schedule.name=cosine (or linear), or remove min_lr"
            )
        return self

    @model_validator(mode="after")
    def _milestones_in_range(self) -> ScheduleConfig:
        outside = [m for m in self.milestones if not 1 <= m <= self.reference_epochs]
        if outside:
            raise ValueError(
                f"milestones {quoted(outside)} lie outside 1..reference_epochs "
                f"({self.reference_epochs}): give epochs of the reference schedule, e.g. "
                "[150, 180, 210] for reference_epochs 240"
            )
        return self

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

    ``loss_weight`` left unset takes the value of the ``published`` table (``_published.yaml``)
    on zoo pairs, and ``auto`` (measured at the start of the run) for a feature distiller on a
    pair with a non-zoo net unless ``published`` is set; the table's values are:
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
    loss_weight: float | Literal["auto"] | None = None
    published: Literal["sakd", "repdistiller", "ls"] = "sakd"
    params: dict[str, Any] = Field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("loss_weight")
    @classmethod
    def _non_negative(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float) and value < 0:
            raise ValueError("must be >= 0, or 'auto' (measured at the start of the run)")
        return value

    @field_validator("presets")
    @classmethod
    def _preset_keys(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key in value:
            name, at, mode = key.partition("@")
            if not name or (at and mode not in SPOT_MODES):
                raise ValueError(
                    f"preset {quoted(key)} must be named '<distiller>' or '<distiller>@<mode>' with a "
                    f"mode in {', '.join(SPOT_MODES)}"
                )
        return value

    @property
    def label(self) -> str:
        """The method's name in results and in ``{distiller}``: ``kd+ls`` / ``dkd+ls`` with LS."""
        return f"{self.name}+ls" if self.params.get("logit_standardization") is True else self.name


class LossConfig(_Strict):
    """Weight of cross-entropy, weight (α) of the logit-KD term added to a distiller, KD temperature.

    Unset weights take the published values of the ``distiller.published`` table (1 and 0 when
    there is no teacher). The logit-KD term runs only when ``kd_weight`` > 0; vanilla KD alone is
    ``distiller.name=kd``. ``kd_temperature`` is the one KD temperature: of that term and of
    vanilla KD as the distiller (filled from a ``kd`` preset's ``temperature`` when unset).
    ``label_smoothing``: of the student's cross-entropy (``torch.nn.functional.cross_entropy``);
    not of the KD terms nor of the policy's routing loss.
    ``logit_distiller`` is the distiller of that logit term: ``kd`` (Hinton KD, the paper's
    "distiller + vanilla KD") or another logit distiller such as ``dkd``, whose parameters
    (``logit_params``) are filled from the recipe's presets for it (e.g. the LS recipes' DKD + LS
    temperature, alpha and beta) and whose weight, when unset, is its row of the published table.
    """

    ce_weight: float | None = Field(default=None, ge=0)
    kd_weight: float | None = Field(default=None, ge=0)
    kd_temperature: float = Field(default=4.0, gt=0)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    logit_distiller: str = Field(default="kd", min_length=1)
    logit_params: dict[str, Any] = Field(default_factory=dict)


class SpotsConfig(_Strict):
    """Where to distil: the spot mode and, for adaptive/anti, the policy's settings.

    ``routing_ce_weight`` (γ): weight of the routed network's cross-entropy in the policy's loss
    (and, in ``mode: random`` with ``random_scheme: authors``, of the student's cross-entropy).
    ``random_scheme`` (``mode: random`` only): ``authors`` runs the authors' ``train_random.py``
    (student CE × γ; for AT, NST and VID the logit spot reuses the last feature spot's draw),
    ``independent`` draws every spot on its own and leaves the CE weight alone.
    ``agent_optimizer`` (policy and adaptors, adaptive/anti): ``authors`` is the authors' SGD
    (momentum 0.9, ``agent_weight_decay``, lr ``agent_lr``) on the step schedule's milestones,
    whatever ``optimizer`` and ``schedule`` say; ``main`` gives them the student's optimizer
    (``optimizer.*``) and schedule (``schedule.*``) with their own lr and weight decay.
    """

    mode: SpotMode = SpotMode.FIXED
    random_scheme: Literal["authors", "independent"] = "authors"
    routing_ce_weight: float | None = Field(default=None, gt=0)
    tau: float = Field(default=5.0, gt=0)
    homogeneous: bool = False
    agent_lr: float | None = Field(default=None, gt=0)
    agent_weight_decay: float = Field(default=1e-3, ge=0)
    agent_optimizer: Literal["authors", "main"] = "authors"


class EmaConfig(_Strict):
    """An exponential moving average of the student's weights and buffers.

    ``decay`` 0 is off. Otherwise after every step of the main phase the average moves to
    ``decay`` × average + (1 − ``decay``) × student (``torch.optim.swa_utils.AveragedModel`` with
    ``get_ema_multi_avg_fn``); the average is what is evaluated, selected as best and exported.
    """

    decay: float = Field(default=0.0, ge=0, lt=1)


class RunConfig(_Strict):
    """Everything one run needs; ``teacher`` and ``distiller`` are set for distillation runs.

    ``precision`` / ``channels_last`` ``auto``: bf16 autocast and channels-last on CUDA, fp32 and
    contiguous tensors on the CPU. ``compile``: ``torch.compile`` the student's forward passes.
    ``batch_size`` is per process; under ``torchrun`` with W processes ``lr_scaling=linear``
    multiplies every learning rate by W (the global batch is W × ``batch_size``), ``none`` keeps it.
    ``progress`` ``auto``: a progress bar when stderr is a terminal, the per-epoch line alone
    otherwise (no carriage-return bars in log files); ``true`` / ``false`` force it on / off.
    ``weight_limit``: training stops (diverged) when a trained parameter grows past this magnitude
    (:mod:`sakd.engine.divergence`); ``null`` turns that test off (weights that are not finite
    always stop it).
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
    progress: bool | Literal["auto"] = "auto"
    # Distillation runs: also train the student alone, same budget and seed, in output_dir/baseline.
    baseline: bool = False
    resume: bool = True
    weight_limit: float | None = Field(default=1e4, gt=0)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    teacher: TeacherConfig | None = None
    distiller: DistillerConfig | None = None
    loss: LossConfig = Field(default_factory=LossConfig)
    spots: SpotsConfig = Field(default_factory=SpotsConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value != "auto" and not (value == "cpu" or value.startswith("cuda")):
            raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")
        return value

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _distillation_complete(self) -> RunConfig:
        if self.distiller is not None and self.teacher is None:
            raise ValueError("a distiller needs a teacher: set teacher.name and teacher.checkpoint")
        if self.teacher is not None and self.distiller is None:
            self.distiller = DistillerConfig()
        return self

    @model_validator(mode="after")
    def _schedule_fits_the_run(self) -> RunConfig:
        if self.schedule.warmup_epochs >= self.epochs:
            raise ValueError(
                f"schedule.warmup_epochs ({self.schedule.warmup_epochs:g}) must be fewer than "
                f"epochs ({self.epochs}): shorten the warm-up or train longer"
            )
        if self.schedule.min_lr >= self.lr:
            raise ValueError(
                f"schedule.min_lr ({self.schedule.min_lr:g}) must be below lr ({self.lr:g}): "
                "it is where the schedule ends"
            )
        return self

    @property
    def method_label(self) -> str:
        """The method's name in results and in ``{distiller}``: the distiller's label, then a logit
        term other than vanilla KD (``at+dkd+ls``: AT beside DKD + LS); ``none`` without one."""
        if self.distiller is None:
            return "none"
        loss = self.loss
        if loss.kd_weight and loss.logit_distiller != "kd":
            logit = DistillerConfig(name=loss.logit_distiller, params=loss.logit_params).label
            return f"{self.distiller.label}+{logit}"
        return self.distiller.label

    def format_output_dir(self) -> None:
        """Fill ``{distiller}``, ``{mode}``, ``{seed}``, ``{model}``, ``{teacher}`` in output_dir."""
        fields = {
            "distiller": self.method_label,
            "mode": self.spots.mode,
            "seed": self.seed,
            "model": self.model.name,
            "student": self.model.name,
            "teacher": self.teacher.name if self.teacher else "none",
        }
        try:
            formatted = self.output_dir.format(**fields)
        except (KeyError, IndexError, ValueError):
            raise ValueError(f"may only use the fields {{{'}, {'.join(fields)}}}") from None
        if formatted != self.output_dir:
            self.output_dir = formatted

    def weight_sources(self) -> dict[str, str]:
        """Where each resolved loss weight and distiller parameter came from.

        ``command line``, ``recipe <name>``, ``preset <recipe>``, ``published:<table>``,
        ``default``, or the label given to :func:`validate_config`. Distiller parameters left at
        their ``Params`` default are not listed (the builder reports them as ``default``).
        """
        return dict(self._sources)

    def record_weight_sources(self, sources: dict[str, str]) -> None:
        """Remember where each resolved value came from (the resolution step's record)."""
        self._sources = dict(sources)

    @property
    def agent_lr(self) -> float:
        """Learning rate of the policy and adaptors (the authors': half the student's)."""
        return self.spots.agent_lr if self.spots.agent_lr is not None else self.lr / 2
