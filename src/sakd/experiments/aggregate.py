"""Aggregation for ``sakd report``: run results grouped into cells (pair × distiller × spot mode) with their statistics.

Per cell and mode: top-1 at the best and at the last epoch as mean ± sample standard deviation over
seeds, the gain of each mode over ``fixed`` paired by seed, the seeds expected by a grid and those
missing, and the problems of a cell (runs that mix protocols, repeated seeds). Rendering is
:mod:`sakd.experiments.render`'s.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sakd.errors import SakdError
from sakd.experiments.reference import Published, lookup
from sakd.experiments.results import CellKey, Problem, RunResult, collect_runs

MODE_ORDER = ("fixed", "adaptive", "random", "anti")
# The paper's column order, then the logit distillers; other distillers follow alphabetically.
DISTILLER_ORDER = (
    *("kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ft", "nst", "crd"),
    *("dkd", "kd+ls", "dkd+ls"),
)
# Config keys that may differ between the runs of one cell (they do not change what is measured).
VOLATILE_KEYS = ("seed", "output_dir", "name", "progress", "resume", "device", "spots.mode")


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (n − 1 in the denominator; None when n < 2)."""

    n: int
    mean: float | None
    std: float | None

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        """The statistic of ``values`` (mean None when empty)."""
        data = list(values)
        if not data:
            return cls(0, None, None)
        std = statistics.stdev(data) if len(data) > 1 else None
        return cls(len(data), statistics.fmean(data), std)

    def text(self, signed: bool = False) -> str:
        """``mean ± std`` with two decimals (``mean`` alone for one seed, ``–`` for none)."""
        if self.mean is None:
            return "–"
        mean = f"{self.mean:+.2f}" if signed else f"{self.mean:.2f}"
        return mean if self.std is None else f"{mean} ± {self.std:.2f}"


@dataclass
class ModeResult:
    """The finished runs of one cell in one spot mode, and the seeds that were expected."""

    runs: list[RunResult] = field(default_factory=list)
    expected: set[int] | None = None

    @property
    def seeds(self) -> list[int]:
        """Seeds with a finished run."""
        return sorted(r.seed for r in self.runs)

    @property
    def missing(self) -> list[int]:
        """Expected seeds without a finished run."""
        return sorted((self.expected or set()) - set(self.seeds))

    @property
    def best(self) -> Stat:
        """Best-epoch top-1 over seeds."""
        return Stat.of(r.best_top1 for r in self.runs)

    @property
    def last(self) -> Stat:
        """Last-epoch top-1 over seeds."""
        return Stat.of(r.last_top1 for r in self.runs)

    @property
    def best_epoch(self) -> Stat:
        """1-based epoch of the best top-1 over seeds."""
        return Stat.of(r.best_epoch for r in self.runs)

    def seeds_text(self) -> str:
        """``k/n`` seeds found of the expected ones, or ``n=k`` when nothing was expected."""
        if self.expected is None:
            return f"n={len(self.runs)}"
        return f"{len(set(self.seeds) & self.expected)}/{len(self.expected)}"

    def spot_rates(self) -> dict[str, float] | None:
        """Last-epoch spot rates by spot name, averaged over seeds (feature spots…, logits)."""
        rows = [r.spot_rates[-1] for r in self.runs if r.spot_rates]
        if not rows or len({tuple(row) for row in rows}) != 1:
            return None
        return {name: statistics.fmean(row[name] for row in rows) for name in rows[0]}


@dataclass
class Cell:
    """One pair × distiller (or one single network): its runs by spot mode."""

    key: CellKey
    modes: dict[str, ModeResult] = field(default_factory=dict)

    def mode(self, name: str) -> ModeResult:
        """The results of mode ``name``, added to the cell when absent."""
        return self.modes.setdefault(name, ModeResult())

    def get(self, name: str) -> ModeResult:
        """The results of mode ``name`` (empty when none ran or were expected)."""
        return self.modes.get(name) or ModeResult()

    def runs(self) -> list[RunResult]:
        """Every finished run of the cell."""
        return [r for m in self.modes.values() for r in m.runs]

    def gain(self, mode: str, epoch: str = "best") -> Stat:
        """``mode`` − fixed over the seeds run in both (paired), at the best or last epoch."""
        if mode not in self.modes or "fixed" not in self.modes:
            return Stat(0, None, None)
        fixed = {r.seed: r for r in self.modes["fixed"].runs}
        pick = (lambda r: r.best_top1) if epoch == "best" else (lambda r: r.last_top1)
        return Stat.of(
            pick(r) - pick(fixed[r.seed]) for r in self.modes[mode].runs if r.seed in fixed
        )

    def published(self) -> Published | None:
        """The paper's numbers for this cell."""
        k = self.key
        if k.teacher is None or k.distiller is None:
            return None
        return lookup(k.dataset, k.teacher, k.student, k.distiller)


@dataclass
class Report:
    """Everything ``report.md`` / ``report.csv`` show."""

    root: Path
    cells: list[Cell]
    singles: list[Cell]
    problems: list[Problem]
    results: list[RunResult]
    grid: str | None = None


def build_report(
    root: str | Path, grid: str | None = None, overrides: list[str] | None = None
) -> Report:
    """Collect and aggregate every run under ``root`` (and the runs ``grid`` expects)."""
    root = Path(root)
    if not root.is_dir():
        raise SakdError(f"{str(root)!r} is not a folder: give the folder that holds the runs")
    results, problems = collect_runs(root)
    cells: dict[CellKey, Cell] = {}
    if grid is not None:
        for key, mode, seeds in expected_runs(grid, overrides):
            cell = cells.setdefault(key, Cell(key))
            cell.mode(mode).expected = set(seeds)
    for result in results:
        cell = cells.setdefault(result.key, Cell(result.key))
        cell.mode(result.mode or "single").runs.append(result)
    ordered = sorted(cells.values(), key=_cell_order)
    distill = [c for c in ordered if c.key.teacher is not None]
    singles = [c for c in ordered if c.key.teacher is None]
    problems = [*problems, *_mixed_protocols(ordered), *_duplicate_seeds(ordered)]
    return Report(root, distill, singles, problems, results, grid)


def expected_runs(
    grid: str, overrides: list[str] | None = None
) -> list[tuple[CellKey, str, list[int]]]:
    """(cell, mode, seeds) of every run the grid ``grid`` holds."""
    from sakd.experiments.grid import load_grid, plan_grid

    spec, name = load_grid(grid)
    plan = plan_grid(spec, name, overrides, check_disk=False)
    expected: dict[tuple[CellKey, str], list[int]] = defaultdict(list)
    for planned in plan.runs:
        cfg = planned.config
        assert cfg.teacher is not None
        assert cfg.distiller is not None
        key = CellKey(cfg.data.name, cfg.teacher.name, cfg.model.name, cfg.distiller.label)
        expected[(key, planned.mode)].append(planned.seed)
    return [(key, mode, seeds) for (key, mode), seeds in expected.items()]


def _cell_order(cell: Cell) -> tuple:
    k = cell.key
    rank = DISTILLER_ORDER.index(k.distiller) if k.distiller in DISTILLER_ORDER else 99
    return (k.dataset, k.teacher or "", k.student, rank, k.distiller or "")


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _mixed_protocols(cells: list[Cell]) -> list[Problem]:
    """A cell whose runs differ in more than seed and spot mode mixes protocols: say so."""
    problems = []
    for cell in cells:
        runs = cell.runs()
        flats = [_flatten(r.config) for r in runs]
        keys = set().union(*flats) - set(VOLATILE_KEYS) if flats else set()
        differing = sorted(k for k in keys if len({repr(f.get(k)) for f in flats}) > 1)
        if differing:
            shown = ", ".join(differing[:6]) + (" …" if len(differing) > 6 else "")
            problems.append(
                Problem(
                    runs[0].path.parent,
                    "mixed",
                    f"{cell_label(cell.key)}: its {len(runs)} runs differ in {shown}; the numbers "
                    "mix protocols (counted anyway)",
                )
            )
    return problems


def _duplicate_seeds(cells: list[Cell]) -> list[Problem]:
    problems = []
    for cell in cells:
        for mode, result in cell.modes.items():
            repeated = sorted(s for s, n in Counter(result.seeds).items() if n > 1)
            if repeated:
                paths = ", ".join(str(r.path) for r in result.runs if r.seed in repeated)
                problems.append(
                    Problem(
                        result.runs[0].path,
                        "duplicate",
                        f"{cell_label(cell.key)} {mode}: seed(s) {repeated} appear in several folders "
                        f"({paths}); each counts once per folder",
                    )
                )
    return problems


def cell_label(key: CellKey) -> str:
    """``dataset pair distiller``: how messages name a cell."""
    head = f"{key.dataset} {key.pair}"
    return head if key.distiller is None else f"{head} {key.distiller}"


def mode_rank(mode: str) -> int:
    """Position of a spot mode in :data:`MODE_ORDER` (other names last)."""
    return MODE_ORDER.index(mode) if mode in MODE_ORDER else len(MODE_ORDER)


def teacher_top1(runs: list[RunResult]) -> Stat:
    """The teacher's test top-1 over ``runs``, as each run evaluated it (``run.json``)."""
    return Stat.of(r.info.teacher_top1 for r in runs if r.info.teacher_top1 is not None)
