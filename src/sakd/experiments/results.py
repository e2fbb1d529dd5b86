"""Read run folders back: configuration, per-epoch metrics, run facts, and what is wrong with them.

A run folder is any folder holding ``config.yaml``. A run counts in results only when its
``metrics.jsonl`` parses into one :class:`~sakd.engine.records.EpochRecord` per epoch 1 … epochs,
each with a finite test top-1; anything else (corrupt or partial metrics, unfinished runs,
unreadable files) becomes a :class:`Problem` and the rest of the folder tree is still read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sakd.config import RunConfig, validate_config
from sakd.engine.records import EpochRecord, finite, parse_record
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
    """One finished run: its identity, its per-epoch test top-1 and the facts in run.json.

    ``config`` is the stored ``config.yaml`` read back through the config schema (as a dict).
    """

    path: Path
    key: CellKey
    mode: SpotMode | None
    seed: int
    config: dict[str, Any]
    records: list[EpochRecord]
    info: dict[str, Any] = field(default_factory=dict)

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
        spots = self.info.get("spots")
        if not isinstance(spots, list):
            return {}
        return {
            str(s["name"]): str(s.get("student", s["name"]))
            for s in spots
            if isinstance(s, dict) and "name" in s
        }


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
    for config_path in sorted(root.rglob("config.yaml")):
        folder = config_path.parent
        outcome = read_run(folder)
        (results if isinstance(outcome, RunResult) else problems).append(outcome)
    return results, problems


def read_run(folder: Path) -> RunResult | Problem:
    """The run in ``folder``, or the :class:`Problem` that keeps it out of the results."""
    try:
        raw = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, yaml.YAMLError) as exc:
        return Problem(folder, "unreadable", f"config.yaml cannot be read ({type(exc).__name__})")
    if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
        return Problem(folder, "unreadable", "config.yaml is not a sakd run configuration")
    try:
        cfg = validate_config(raw, source="config.yaml", stored=True)
    except SakdError as exc:
        return Problem(folder, "unreadable", f"config.yaml does not validate ({exc})")
    epochs = cfg.epochs
    finished = (folder / "summary.json").is_file()
    metrics = folder / "metrics.jsonl"
    if not metrics.is_file():
        if finished:
            return Problem(folder, "corrupt", "metrics.jsonl is missing but summary.json exists")
        return Problem(folder, "unfinished", f"no epoch finished yet (0 of {epochs})")
    records, error = _parse_metrics(metrics)
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
        info=_read_info(folder),
    )


def _parse_metrics(path: Path) -> tuple[list[EpochRecord], str | None]:
    records: list[EpochRecord] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = parse_record(line)
        except ValueError as exc:
            return [], f"metrics.jsonl line {number} {exc}"
        if not finite(record.test_top1):
            return [], f"metrics.jsonl line {number} has no finite test_top1"
        records.append(record)
    if not records:
        return [], "metrics.jsonl is empty"
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


def _read_info(folder: Path) -> dict[str, Any]:
    try:
        info = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}
