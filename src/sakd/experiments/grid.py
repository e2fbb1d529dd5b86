"""Experiment grids: pairs × distillers × spot modes × seeds, validated and expanded into runs.

A grid is a YAML file (or one of the packaged paper tables ``R1``, ``R2``, ``R3``)::

    name: my_grid
    pairs:                       # packaged recipe names / YAML paths, or mappings
      - cifar100/resnet32x4-resnet8x4
      - {recipe: quickstart, teacher_checkpoint: zoo/resnet32/checkpoints/best.pt}
    distillers: [at, crd]
    modes: [fixed, adaptive]
    seeds: [0, 1, 2]
    overrides: [epochs=10]       # KEY=VALUE for every run (and, for data.*/epochs/…, every teacher)

:func:`plan_grid` turns it into an ordered list of :class:`PlannedRun` (seed-major, so an
interrupted grid holds every cell at its first seeds) and the :class:`TeacherJob` each pair needs,
after checking everything that can be checked before a run starts (names, keys, spots, teachers,
existing run folders): every bad entry is listed in one :class:`~sakd.errors.SakdError`.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sakd.config import Recipe, RunConfig, load_recipe, validate_config
from sakd.config import config_differences as differences_from_saved
from sakd.engine.checkpoint import resolve_path
from sakd.engine.rundir import RunFolder
from sakd.errors import SakdError
from sakd.spot_modes import SpotMode

GRIDS_PACKAGE = "sakd.experiments"
PACKAGED_GRIDS = ("R1", "R2", "R3")
AXIS_KEYS = {"distiller.name": "distillers", "spots.mode": "modes", "seed": "seeds"}
# Top-level config keys of the global overrides that also apply to the teachers a grid trains:
# the data, the schedule length, and how (not what) the network is computed.
TEACHER_OVERRIDE_KEYS = (
    "data",
    "epochs",
    "device",
    "precision",
    "channels_last",
    "compile",
    "progress",
    "eval_batch_size",
)
# Keys that may differ between a run folder's config.yaml and the planned config without the
# run being another run: the ones the engine's resume check ignores.


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PairSpec(_Strict):
    """A teacher→student pair: a distillation recipe, optionally with other networks or files."""

    recipe: str | None = None
    teacher: str | None = None
    student: str | None = None
    teacher_checkpoint: str | None = None
    teacher_recipe: str | None = None
    overrides: list[str] = Field(default_factory=list)


class GridSpec(_Strict):
    """The grid file: which pairs, distillers, spot modes and seeds, and the shared overrides."""

    name: str | None = None
    dataset: str | None = None
    pairs: list[str | PairSpec] = Field(min_length=1)
    distillers: list[str] = Field(min_length=1)
    modes: list[str] = Field(
        default_factory=lambda: [SpotMode.FIXED.value, SpotMode.ADAPTIVE.value], min_length=1
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    overrides: list[str] = Field(default_factory=list)
    teacher_overrides: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class TeacherJob:
    """A teacher checkpoint the grid needs, and the train config that makes it when it is missing."""

    name: str
    checkpoint: str
    train_config: RunConfig | None
    train_recipe: str | None

    @property
    def path(self) -> Path:
        """The checkpoint file (``sakd:`` paths resolved to the package)."""
        return resolve_path(self.checkpoint)

    @property
    def run_dir(self) -> Path | None:
        """The folder a training run of this teacher writes (``<run_dir>/checkpoints/x.pt``)."""
        path = self.path
        return path.parent.parent if path.parent.name == "checkpoints" else None


@dataclass(frozen=True)
class PlannedRun:
    """One distillation run of the grid, at position ``index`` of the deterministic order."""

    index: int
    pair: str
    distiller: str
    mode: SpotMode
    seed: int
    config: RunConfig
    teacher: TeacherJob

    @property
    def output_dir(self) -> Path:
        """The run folder."""
        return Path(self.config.output_dir)


@dataclass
class GridPlan:
    """A validated grid: its runs in order and the teachers they need."""

    name: str
    runs: list[PlannedRun]
    teachers: list[TeacherJob] = field(default_factory=list)

    def shard(self, index: int, count: int) -> GridPlan:
        """The runs whose position modulo ``count`` is ``index``, and only the teachers they need."""
        runs = [r for r in self.runs if r.index % count == index]
        needed = {r.teacher.checkpoint for r in runs}
        teachers = [t for t in self.teachers if t.checkpoint in needed]
        return GridPlan(self.name, runs, teachers)


def load_grid(ref: str) -> tuple[GridSpec, str]:
    """A packaged table name (R1, R2, R3) or a grid YAML path → the validated spec and its name."""
    packaged = ref.upper()
    if packaged in PACKAGED_GRIDS:
        text = (
            resources.files(GRIDS_PACKAGE)
            .joinpath("grids")
            .joinpath(f"{packaged}.yaml")
            .read_text()
        )
        source = packaged
    else:
        path = Path(ref)
        if not path.is_file():
            raise SakdError(
                f"grid {ref!r} is neither a paper table ({', '.join(PACKAGED_GRIDS)}) nor a grid "
                "file: give one of those names or a YAML path"
            )
        text, source = path.read_text(), path.stem
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise SakdError(f"grid {ref!r} is not valid YAML: fix the syntax") from None
    if not isinstance(data, dict):
        raise SakdError(f"grid {ref!r} must be a YAML mapping (pairs, distillers, modes, seeds)")
    try:
        spec = GridSpec.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        ]
        raise SakdError(
            f"grid {ref!r} is malformed ({'; '.join(problems)}): the keys are name, "
            "dataset, pairs, distillers, modes, seeds, overrides, teacher_overrides"
        ) from None
    return spec, spec.name or source


@dataclass
class _PlanState:
    """Planning state: every bad entry found (each once, in order) and the recipes parsed."""

    items: list[str] = field(default_factory=list)
    recipes: dict[str, Recipe] = field(default_factory=dict)
    command_line: frozenset[str] = frozenset()  # overrides given on the command line, not the grid

    def add(self, message: str) -> None:
        if message not in self.items:
            self.items.append(message)

    def raise_if_any(self, grid: str) -> None:
        if self.items:
            listed = "; ".join(f"({i}) {m}" for i, m in enumerate(self.items, 1))
            raise SakdError(
                f"grid {grid!r} has {len(self.items)} bad entr{'y' if len(self.items) == 1 else 'ies'}"
                f", nothing was run: {listed}"
            )


@dataclass(frozen=True)
class _Pair:
    label: str
    recipe: str
    overrides: tuple[str, ...]  # teacher / student / teacher checkpoint of the pair entry
    teacher_recipe: str | None
    extra: tuple[str, ...]  # the pair entry's own KEY=VALUE overrides


def plan_grid(
    spec: GridSpec,
    name: str,
    overrides: list[str] | None = None,
    root: str | Path | None = None,
    check_disk: bool = True,
) -> GridPlan:
    """Validate ``spec`` (+ command-line ``overrides``) and expand it into its runs and teachers.

    ``root`` places every relative ``output_dir`` and ``teacher.checkpoint`` under it. Raises one
    :class:`SakdError` listing every unknown model, distiller, mode, bad key or unusable teacher.
    ``check_disk=False`` skips what depends on files (teachers present or trainable, run folders
    holding other configurations): the runs are then only a list of what the grid expects.
    """
    from sakd.data import list_datasets
    from sakd.losses import list_distillers
    from sakd.models import list_models

    state = _PlanState(command_line=frozenset(overrides or []))
    shared = _valid_overrides([*spec.overrides, *(overrides or [])], state)
    teacher_overrides = _valid_overrides(spec.teacher_overrides, state)
    known_distillers = set(list_distillers())
    distillers = [d for d in spec.distillers if d in known_distillers]
    for bad in sorted(set(spec.distillers) - known_distillers):
        state.add(f"unknown distiller {bad!r} (`sakd distillers` lists them)")
    modes = [SpotMode(m) for m in spec.modes if m in SpotMode.names()]
    for bad in sorted(set(spec.modes) - set(SpotMode.names())):
        state.add(f"unknown spot mode {bad!r} (use {', '.join(SpotMode.names())})")
    _check_unique(spec, state)
    models = set(list_models())
    datasets = set(list_datasets())

    pairs: list[tuple[_Pair, list[str], TeacherJob]] = []
    teachers: dict[str, TeacherJob] = {}
    for entry in spec.pairs:
        pair = _resolve_pair(entry, spec, state)
        if pair is None:
            continue
        pair_shared = [*shared, *_valid_overrides(list(pair.extra), state)]
        base = _load_run_config(
            pair.recipe, [*pair.overrides, *pair_shared], root, pair.label, state
        )
        if base is None:
            continue
        if base.teacher is None:
            state.add(f"pair {pair.label!r}: the recipe has no teacher (not a distillation recipe)")
            continue
        bad_names = [n for n in (base.teacher.name, base.model.name) if _unknown(n, models)]
        for bad in bad_names:
            state.add(f"pair {pair.label!r}: unknown model {bad!r} (`sakd models` lists them)")
        if base.data.name not in datasets:
            state.add(f"pair {pair.label!r}: unknown dataset {base.data.name!r}")
        if bad_names or base.data.name not in datasets:
            continue
        job = (
            _teacher_job(pair, base, pair_shared, teacher_overrides, state)
            if check_disk
            else TeacherJob(base.teacher.name, base.teacher.checkpoint, None, None)
        )
        if job is None:
            continue
        teachers.setdefault(job.checkpoint, job)
        pairs.append((pair, pair_shared, job))
        for distiller in distillers:
            for mode in modes:
                _check_spots(pair.label, base, distiller, mode, state)

    runs: list[PlannedRun] = []
    for seed in spec.seeds:
        for pair, pair_shared, job in pairs:
            for distiller in distillers:
                for mode in modes:
                    axes = [f"distiller.name={distiller}", f"spots.mode={mode}", f"seed={seed}"]
                    label = f"{pair.label} {distiller}-{mode} seed {seed}"
                    cfg = _load_run_config(
                        pair.recipe, [*pair.overrides, *pair_shared, *axes], root, label, state
                    )
                    if cfg is not None:
                        runs.append(
                            PlannedRun(len(runs), pair.label, distiller, mode, seed, cfg, job)
                        )
    if check_disk:
        _check_output_dirs(runs, state)
    state.raise_if_any(name)
    needed = {r.teacher.checkpoint for r in runs}
    return GridPlan(name, runs, [t for k, t in teachers.items() if k in needed])


def _unknown(model_name: str, models: set[str]) -> bool:
    return ":" not in model_name and model_name not in models


def _valid_overrides(overrides: list[str], state: _PlanState) -> list[str]:
    """The overrides that are well-formed for any recipe; each bad one is reported once."""
    valid = []
    for item in overrides:
        key, sep, _ = item.partition("=")
        if key in AXIS_KEYS:
            state.add(f"override {item!r}: set {key} through the grid's {AXIS_KEYS[key]} list")
            continue
        try:
            validate_config(Recipe(_OVERRIDE_PROBE).with_overrides([item]), f"override {item!r}")
        except SakdError as exc:
            state.add(str(exc))
            continue
        valid.append(item)
    return valid


# Any config: overrides that fail on it fail on every recipe (unknown keys, wrong types, ranges).
_OVERRIDE_PROBE = {
    "model": {"name": "resnet8"},
    "teacher": {"name": "resnet32", "checkpoint": "teacher.pt"},
}


def _check_unique(spec: GridSpec, state: _PlanState) -> None:
    for axis in ("distillers", "modes", "seeds"):
        values = getattr(spec, axis)
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            state.add(f"{axis} lists {', '.join(repeated)} more than once")


def _resolve_pair(entry: str | PairSpec, spec: GridSpec, state: _PlanState) -> _Pair | None:
    """The recipe and overrides of a pair entry (a recipe name, or a :class:`PairSpec`)."""
    if isinstance(entry, str):
        return _Pair(entry, entry, (), None, ())
    recipe = entry.recipe
    if recipe is None:
        if entry.teacher is None or entry.student is None or spec.dataset is None:
            state.add(
                f"pair {entry.model_dump(exclude_none=True)}: give recipe, or teacher + student "
                "with the grid's dataset (recipe <dataset>/<teacher>-<student>)"
            )
            return None
        recipe = f"{spec.dataset}/{entry.teacher}-{entry.student}"
    overrides = []
    if entry.teacher is not None:
        overrides.append(f"teacher.name={entry.teacher}")
    if entry.student is not None:
        overrides.append(f"model.name={entry.student}")
    if entry.teacher_checkpoint is not None:
        overrides.append(f"teacher.checkpoint={entry.teacher_checkpoint}")
    label = recipe
    if entry.teacher is not None or entry.student is not None:
        label = f"{recipe} ({entry.teacher or 'its teacher'} -> {entry.student or 'its student'})"
    return _Pair(label, recipe, tuple(overrides), entry.teacher_recipe, tuple(entry.overrides))


def _load_run_config(
    recipe: str,
    overrides: list[str],
    root: str | Path | None,
    label: str,
    state: _PlanState,
    output_dir: Path | None = None,
) -> RunConfig | None:
    """The validated config of ``recipe`` + ``overrides`` with its paths placed under ``root``."""
    try:
        if recipe not in state.recipes:
            state.recipes[recipe] = load_recipe(recipe)
        loaded = state.recipes[recipe]
        for item in overrides:
            loaded = loaded.with_overrides([item], _override_source(item, state))
        data = loaded.values
        if output_dir is not None:
            data["output_dir"] = str(output_dir)
        elif root is not None:
            data["output_dir"] = _under(root, str(data.get("output_dir", "runs/run")))
            teacher = data.get("teacher")
            if isinstance(teacher, dict) and isinstance(teacher.get("checkpoint"), str):
                teacher["checkpoint"] = _under(root, teacher["checkpoint"])
        return validate_config(loaded, source=f"pair {label!r}")
    except SakdError as exc:
        state.add(str(exc))
        return None


def _override_source(item: str, state: _PlanState) -> str:
    """Where a run's override came from, for the run's record of its loss weights."""
    return "command line" if item in state.command_line else "grid"


def _under(root: str | Path, path: str) -> str:
    """``path`` placed under ``root`` unless it is absolute or a packaged ``sakd:`` file."""
    if path.startswith("sakd:") or Path(path).expanduser().is_absolute():
        return path
    return str(Path(root) / path)


def _teacher_job(
    pair: _Pair,
    base: RunConfig,
    shared: list[str],
    teacher_overrides: list[str],
    state: _PlanState,
) -> TeacherJob | None:
    """The teacher checkpoint of a pair, and how to train it if it is not there yet."""
    assert base.teacher is not None
    job = TeacherJob(base.teacher.name, base.teacher.checkpoint, None, None)
    train_recipe = pair.teacher_recipe or _default_teacher_recipe(pair.recipe, base.teacher.name)
    if teacher_ready(job):
        return job
    if train_recipe is None or job.run_dir is None:
        state.add(
            f"pair {pair.label!r}: teacher checkpoint {job.checkpoint!r} does not exist and cannot "
            "be trained here (needs a teacher_recipe and a path ending in checkpoints/<file>.pt): "
            "train it first or set the pair's teacher_recipe / teacher_checkpoint"
        )
        return None
    teacher_only = [o for o in shared if o.partition("=")[0].split(".")[0] in TEACHER_OVERRIDE_KEYS]
    label = f"{pair.label} teacher {train_recipe}"
    cfg = _load_run_config(
        train_recipe, [*teacher_only, *teacher_overrides], None, label, state, job.run_dir
    )
    if cfg is None:
        return None
    if cfg.teacher is not None or cfg.model.name != base.teacher.name:
        state.add(
            f"pair {pair.label!r}: teacher recipe {train_recipe!r} does not train "
            f"{base.teacher.name!r} alone (it trains {cfg.model.name!r})"
        )
        return None
    return TeacherJob(base.teacher.name, base.teacher.checkpoint, cfg, train_recipe)


def _default_teacher_recipe(recipe: str, teacher: str) -> str | None:
    """``<dataset>/train/<teacher>`` for a packaged pair recipe ``<dataset>/<pair>``."""
    folder = posixpath.dirname(recipe)
    if not folder or Path(recipe).suffix in (".yaml", ".yml"):
        return None
    return f"{folder}/train/{teacher}"


def teacher_ready(job: TeacherJob) -> bool:
    """True when the checkpoint exists and, if this tool trained it, its training finished."""
    if not job.path.is_file():
        return False
    run_dir = job.run_dir
    return run_dir is None or not RunFolder(run_dir).has_config() or is_finished(run_dir)


def is_finished(run_dir: Path) -> bool:
    """True when the run in ``run_dir`` ran to its end (``summary.json`` written)."""
    return RunFolder(run_dir).is_finished()


def config_differences(run_dir: Path, cfg: RunConfig) -> list[str] | None:
    """Top-level keys in which ``run_dir/config.yaml`` differs from ``cfg`` (None: no config.yaml)."""
    folder = RunFolder(run_dir)
    if not folder.has_config():
        return None
    try:
        saved = folder.read_config_mapping()
    except SakdError:
        return ["config.yaml (unreadable)"]
    return differences_from_saved(saved, cfg)


def _check_output_dirs(runs: list[PlannedRun], state: _PlanState) -> None:
    """Two runs in one folder, or a folder holding another configuration, are refused."""
    seen: dict[Path, PlannedRun] = {}
    for planned in runs:
        other = seen.setdefault(planned.output_dir, planned)
        if other is not planned:
            state.add(
                f"runs {other.pair} {other.distiller}-{other.mode} seed {other.seed} and "
                f"{planned.pair} {planned.distiller}-{planned.mode} seed {planned.seed} share "
                f"output_dir {str(planned.output_dir)!r}: use {{distiller}}, {{mode}} and {{seed}} "
                "in output_dir"
            )
            continue
        changed = config_differences(planned.output_dir, planned.config)
        if changed:
            state.add(
                f"{str(planned.output_dir)!r} holds a run with another configuration "
                f"({', '.join(changed)} differ): use another --out or remove that folder"
            )


_SPOT_CACHE: dict[tuple[str, int], Any] = {}


def _spot_info(model_name: str, input_size: int):
    from sakd.models import create_model

    key = (model_name, input_size)
    if key not in _SPOT_CACHE:
        _SPOT_CACHE[key] = create_model(model_name, num_classes=10).spot_info(input_size)
    return _SPOT_CACHE[key]


def _check_spots(
    label: str, base: RunConfig, distiller: str, mode: SpotMode, state: _PlanState
) -> None:
    """The builder's checks of the distiller on this pair: its parameters, spots and alignment."""
    from sakd.engine.build import distiller_params, plan_distiller
    from sakd.losses import get_distiller

    assert base.teacher is not None
    params = base.distiller.params if base.distiller is not None else {}
    try:
        distiller_params(get_distiller(distiller), params)
    except SakdError as exc:
        state.add(f"pair {label!r}, {distiller}: {exc}")
        return
    if ":" in base.model.name or ":" in base.teacher.name:
        return
    size = base.data.image_size or 32
    student, teacher = _spot_info(base.model.name, size), _spot_info(base.teacher.name, size)
    try:
        plan_distiller(distiller, params, student, teacher, mode)
    except SakdError as exc:
        state.add(f"pair {label!r}: {exc}")
