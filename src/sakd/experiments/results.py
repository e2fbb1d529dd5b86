"""Read run folders back: configuration, per-epoch metrics, run facts, and what is wrong with them.

A run folder is any folder holding ``config.yaml``. A run counts in results only when its
``metrics.jsonl`` parses into one :class:`~sakd.engine.records.EpochRecord` per epoch 1 … epochs,
each with a finite test top-1; anything else (corrupt or partial metrics, unfinished runs,
unreadable files) becomes a :class:`Problem` and the rest of the folder tree is still read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sakd.config import RunConfig
from sakd.engine.records import EpochRecord, finite
from sakd.engine.rundir import CONFIG_NAME, METRICS_NAME, RunFolder, RunInfo
from sakd.errors import SakdError
from sakd.spot_modes import SpotMode


@dataclass(frozen=True)
class CellKey:
    """What a result row is about: the data, the pair and the distiller (None: a single network)."""

    dataset: str
    teacher: str | None
    student: str
    distiller: str | None

    @property
    def pair(self) -> str:
        """``teacher -> student`` (or the network's name for a single-network run)."""
        return self.student if self.teacher is None else f"{self.teacher} -> {self.student}"


@dataclass
class RunResult:
    """One finished run: its identity, its per-epoch test top-1 and the facts in ``run.json``.

    ``config`` is the stored ``config.yaml`` read back through the config schema (as a dict).
    """

    path: Path
    key: CellKey
    mode: SpotMode | None
    seed: int
    config: dict[str, Any]
    records: list[EpochRecord]
    info: RunInfo = field(default_factory=RunInfo)

    @property
    def curve(self) -> list[float]:
        """Test top-1 (%) after each epoch."""
        return [float(r.test_top1) for r in self.records]

    @property
    def best_top1(self) -> float:
        """Highest test top-1 over the epochs (chosen on the test split)."""
        return max(self.curve)

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best test top-1 (the first one on ties)."""
        curve = self.curve
        return curve.index(max(curve)) + 1

    @property
    def last_top1(self) -> float:
        """Test top-1 after the last epoch."""
        return self.curve[-1]

    @property
    def spot_rates(self) -> list[dict[str, float]] | None:
        """Per epoch, the fraction of samples distilled at each spot by name (None if not logged)."""
        rates = [r.spot_rates for r in self.records]
        return None if not all(rates) else rates

    @property
    def spot_labels(self) -> dict[str, str]:
        """Spot name → the student's feature there (``stage2 (32×16×16)``), from run.json."""
        return {spot.name: spot.student for spot in self.info.spots}


@dataclass(frozen=True)
class Problem:
    """A run folder that does not count, and why."""

    path: Path
    kind: str
    message: str


def collect_runs(root: Path) -> tuple[list[RunResult], list[Problem]]:
    """Every run under ``root``: the finished ones, and a problem for each one that does not count."""
    results: list[RunResult] = []
    problems: list[Problem] = []
    for config_path in sorted(root.rglob(CONFIG_NAME)):
        folder = config_path.parent
        outcome = read_run(folder)
        (results if isinstance(outcome, RunResult) else problems).append(outcome)
    return results, problems


def read_run(folder: Path) -> RunResult | Problem:
    """The run in ``folder``, or the :class:`Problem` that keeps it out of the results."""
    run = RunFolder(folder)
    try:
        raw = run.read_config_mapping()
    except SakdError as exc:
        return Problem(folder, "unreadable", f"config.yaml cannot be read ({exc})")
    if not isinstance(raw.get("model"), dict):
        return Problem(folder, "unreadable", "config.yaml is not a sakd run configuration")
    try:
        cfg = run.read_config(stored=True)
    except SakdError as exc:
        return Problem(folder, "unreadable", f"config.yaml does not validate ({exc})")
    epochs = cfg.epochs
    finished = run.is_finished()
    if not run.records_path().is_file():
        if finished:
            return Problem(folder, "corrupt", "metrics.jsonl is missing but summary.json exists")
        return Problem(folder, "unfinished", f"no epoch finished yet (0 of {epochs})")
    records, error = _finished_records(run)
    if error is not None:
        return Problem(folder, "corrupt", error)
    done = [r.epoch for r in records]
    if done != list(range(1, len(done) + 1)):
        return Problem(folder, "partial", f"metrics.jsonl epochs are {_spans(done)}, not 1..n")
    if len(records) < epochs:
        if finished:
            return Problem(
                folder,
                "partial",
                f"metrics.jsonl holds {len(records)} of {epochs} epochs but summary.json exists",
            )
        return Problem(folder, "unfinished", f"{len(records)} of {epochs} epochs done")
    if len(records) > epochs:
        return Problem(
            folder, "partial", f"metrics.jsonl holds {len(records)} epochs, config {epochs}"
        )
    return RunResult(
        path=folder,
        key=_cell_key(cfg),
        mode=cfg.spots.mode if cfg.teacher is not None else None,
        seed=cfg.seed,
        config=cfg.model_dump(mode="json"),
        records=records,
        info=run.read_info(),
    )


def _finished_records(run: RunFolder) -> tuple[list[EpochRecord], str | None]:
    """The main phase's records, or why they do not make a result (unreadable, no test top-1)."""
    try:
        records = run.read_records()
    except SakdError as exc:
        return [], str(exc).removeprefix(f"{run.path}: ")
    for number, record in enumerate(records, 1):
        if not finite(record.test_top1):
            return [], f"{METRICS_NAME} record {number} has no finite test_top1"
    if not records:
        return [], f"{METRICS_NAME} is empty"
    return records, None


def _spans(epochs: list[int]) -> str:
    return ", ".join(str(e) for e in epochs[:12]) + (" …" if len(epochs) > 12 else "")


def _cell_key(cfg: RunConfig) -> CellKey:
    return CellKey(
        dataset=cfg.data.name,
        teacher=cfg.teacher.name if cfg.teacher is not None else None,
        student=cfg.model.name,
        distiller=cfg.distiller.label if cfg.distiller is not None else None,
    )
