"""Rendering for ``sakd report``: the aggregated cells as ``report.md`` (Markdown) and ``report.csv``.

Markdown: the protocol facts, per pair a table of fixed / adaptive (and other modes) best and last
top-1 with the gain and the paper's numbers, the published logit distillers, the adaptive runs'
spot rates, single networks, missing runs and problems. CSV: one row per cell × spot mode.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sakd.experiments.aggregate import (
    MODE_ORDER,
    Cell,
    ModeResult,
    Report,
    Stat,
    cell_label,
    mode_rank,
    teacher_top1,
)
from sakd.experiments.reference import logit_references, published_baselines
from sakd.experiments.results import CellKey, Problem, RunResult

CSV_FIELDS = [
    "kind",
    "dataset",
    "teacher",
    "student",
    "distiller",
    "mode",
    "n",
    "seeds",
    "expected_seeds",
    "missing_seeds",
    "best_mean",
    "best_std",
    "last_mean",
    "last_std",
    "best_epoch_mean",
    "epochs",
    "gain_vs_fixed_best_mean",
    "gain_vs_fixed_best_std",
    "gain_vs_fixed_last_mean",
    "gain_vs_fixed_last_std",
    "gain_n",
    "paper_table",
    "paper_top1",
    "ours_best_minus_paper",
    "paper_note",
    "published_logit_top1",
    "published_logit_source",
    "teacher_top1",
    "paper_teacher_top1",
    "teacher_sha256",
    "precision",
    "device",
    "spot_rates_last_epoch",
]


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def _counted(values: Iterable[Any]) -> str:
    counts = Counter(str(v) for v in values)
    if not counts:
        return "–"
    return ", ".join(f"{v} ({n} run{'s' if n > 1 else ''})" for v, n in counts.most_common())


def _precision(result: RunResult) -> str:
    return str(result.info.precision or result.config.get("precision", "?"))


def _device(result: RunResult) -> str:
    return result.info.device_label or "?"


def _known(value: Any) -> Any:
    return "?" if value is None else value


def render_markdown(report: Report, plots: list[Path], folder: Path | None = None) -> str:
    """The report as Markdown, linking ``plots`` relative to ``folder`` (where it is written)."""
    out: list[str] = [f"# Results under `{report.root}`", ""]
    runs, cells = report.results, report.cells
    out += [
        f"{len(runs)} finished run(s) in {len(cells)} pair × distiller cell(s) and "
        f"{len(report.singles)} single-network cell(s); {len(report.problems)} problem(s)"
        + (f"; expected runs from grid `{report.grid}`." if report.grid else "."),
        "",
        "How to read it:",
        "",
        "- Top-1 accuracy in % on the test split, **mean ± sample standard deviation** over seeds "
        "(n − 1 in the denominator; a single seed shows the mean alone).",
        "- **best**: the highest test top-1 over the epochs — chosen on the test split, as "
        "RepDistiller and the SAKD authors do; **last**: after the final epoch.",
        "- **gain**: mode − fixed for each seed run in both modes (paired by seed), mean ± std of "
        "those differences.",
        "- **paper**: the SAKD paper's tables R1–R3 (fixed = its “Stan.”, distiller + vanilla KD; "
        "presumably best-epoch numbers); **ours − paper** uses our best-epoch mean.",
        "- **seeds**: finished runs behind each number (k/n of those the grid expects, or n=k).",
        "",
    ]
    out += _protocol_section(runs)
    for (dataset, teacher, student), group in _by_pair(cells):
        out += _pair_section(dataset, teacher, student, group)
    out += _logit_reference_section(cells)
    out += _spot_section(cells)
    out += _single_section(report.singles)
    out += _missing_section(cells + report.singles)
    out += _problem_section(report.problems, report.root)
    if plots:
        out += ["## Figures", ""]
        for path in plots:
            rel = Path(os.path.relpath(path.resolve(), (folder or report.root).resolve()))
            out += [f"![{path.stem}]({rel.as_posix()})", ""]
    return "\n".join(out).rstrip() + "\n"


def _protocol_section(runs: list[RunResult]) -> list[str]:
    if not runs:
        return ["No finished runs.", ""]
    facts = [
        ("dataset", [r.key.dataset for r in runs]),
        ("epochs", [r.config.get("epochs") for r in runs]),
        ("batch size", [r.config.get("batch_size") for r in runs]),
        ("lr", [r.config.get("lr") for r in runs]),
        ("precision", [_precision(r) for r in runs]),
        ("device", [_device(r) for r in runs]),
        ("torch", [_known(r.info.torch) for r in runs]),
        ("train images", [_known(r.info.train_size) for r in runs]),
        ("test images", [_known(r.info.test_size) for r in runs]),
    ]
    out = ["## Protocol", "", "| fact | value (runs) |", "|---|---|"]
    out += [f"| {name} | {_counted(values)} |" for name, values in facts]
    return [*out, ""]


def _by_pair(cells: list[Cell]):
    groups: dict[tuple[str, str, str], list[Cell]] = defaultdict(list)
    for cell in cells:
        assert cell.key.teacher is not None
        groups[(cell.key.dataset, cell.key.teacher, cell.key.student)].append(cell)
    return groups.items()


def _teacher_line(dataset: str, teacher: str, student: str, cells: list[Cell]) -> str:
    runs = [r for c in cells for r in c.runs()]
    digests = Counter(r.info.teacher_sha256 or "?" for r in runs)
    base = published_baselines().get((dataset, teacher, student))
    accs = teacher_top1(runs)
    ours = accs.text() if accs.n else "?"
    paper = f"; paper {base.teacher:.2f}" if base and base.teacher is not None else ""
    sums = ", ".join(
        f"`{d[:16]}`{'…' if len(d) > 16 else ''} ({n} run{'s' if n > 1 else ''})"
        for d, n in digests.most_common()
    )
    warn = " — **several teacher files**" if len(digests) > 1 else ""
    return f"Teacher {teacher}: top-1 {ours} (ours, as each run evaluated it){paper}; SHA-256 {sums}{warn}."


def _pair_section(dataset: str, teacher: str, student: str, cells: list[Cell]) -> list[str]:
    base = published_baselines().get((dataset, teacher, student))
    where = f" (paper table {base.table})" if base else ""
    out = [f"## {dataset}: {teacher} → {student}{where}", ""]
    out += [_teacher_line(dataset, teacher, student, cells), ""]
    extra = [m for m in MODE_ORDER[2:] if any(m in c.modes for c in cells)]
    header = [
        "distiller",
        "fixed best",
        "adaptive best",
        "gain best",
        "fixed last",
        "adaptive last",
        "gain last",
    ]
    for mode in extra:
        header += [f"{mode} best", f"{mode} last", f"{mode} gain best"]
    has_paper = any(c.published() is not None for c in cells)
    if has_paper:
        header += ["paper fixed", "paper adaptive", "paper gain", "ours − paper (fixed / adaptive)"]
    header += ["seeds (" + " / ".join(["fixed", "adaptive", *extra]) + ")"]
    out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    notes = []
    for cell in cells:
        fixed, adaptive = cell.get("fixed"), cell.get("adaptive")
        row = [
            cell.key.distiller or "?",
            _mode_text(fixed, "best"),
            _mode_text(adaptive, "best"),
            cell.gain("adaptive").text(signed=True),
            _mode_text(fixed, "last"),
            _mode_text(adaptive, "last"),
            cell.gain("adaptive", "last").text(signed=True),
        ]
        for mode in extra:
            result = cell.get(mode)
            row += [
                _mode_text(result, "best"),
                _mode_text(result, "last"),
                cell.gain(mode).text(signed=True),
            ]
        paper = cell.published()
        if has_paper and paper is None:
            row += ["–", "–", "–", "–"]
        elif paper is not None:
            row += [
                _fmt(paper.fixed),
                _fmt(paper.adaptive),
                _fmt(paper.gain, signed=True),
                f"{_distance(fixed, paper.fixed)} / {_distance(adaptive, paper.adaptive)}",
            ]
            if paper.note:
                notes.append(f"- {cell.key.distiller}: {paper.note}")
        row.append(" / ".join(cell.get(m).seeds_text() for m in ("fixed", "adaptive", *extra)))
        out.append("| " + " | ".join(row) + " |")
    if not has_paper:
        notes.append("No published numbers for this pair.")
    return [*out, "", *notes, *([""] if notes else [])]


def _mode_text(result: ModeResult, epoch: str) -> str:
    if not result.runs:
        return "missing" if result.expected else "–"
    return (result.best if epoch == "best" else result.last).text()


def _distance(result: ModeResult, paper: float | None) -> str:
    mean = result.best.mean
    if mean is None or paper is None:
        return "–"
    return f"{mean - paper:+.2f}"


def _logit_reference_section(cells: list[Cell]) -> list[str]:
    """Our logit-distiller cells beside mdistiller's and the LS paper's published numbers."""
    rows = []
    for cell in cells:
        k = cell.key
        if k.teacher is None or k.distiller is None:
            continue
        for ref in logit_references().get((k.dataset, k.teacher, k.student, k.distiller), []):
            fixed, adaptive = cell.get("fixed"), cell.get("adaptive")
            rows.append(
                f"| {k.dataset} | {k.pair} | {k.distiller} | {ref.top1:.2f} | {ref.source} "
                f"({ref.protocol}) | {_mode_text(fixed, 'best')} | {_mode_text(fixed, 'last')} | "
                f"{_mode_text(adaptive, 'best')} | {_distance(fixed, ref.top1)} | "
                f"{_distance(adaptive, ref.top1)} | {fixed.seeds_text()} / "
                f"{adaptive.seeds_text()} |"
            )
    if not rows:
        return []
    return [
        "## Published logit distillers (mdistiller, logit standardisation)",
        "",
        "Published top-1 of KD, DKD, KD + LS and DKD + LS (`reference/logit_sota.csv`), all at the "
        "logit spot on every sample, so they compare with our **fixed** runs; **ours − published** "
        "uses our best-epoch mean (fixed / adaptive). Mind each source's protocol: RepDistiller's "
        "KD is a last-epoch number of one run, mdistiller's DKD and the LS paper's numbers are "
        "best-epoch means over runs.",
        "",
        "| dataset | pair | method | published | source (protocol) | ours fixed best | "
        "ours fixed last | ours adaptive best | ours − published (fixed) | "
        "ours − published (adaptive) | seeds (fixed / adaptive) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _rates_text(rates: dict[str, float] | None) -> str:
    if not rates:
        return "–"
    return " · ".join(f"{name} {rate:.2f}" for name, rate in rates.items())


def _spot_section(cells: list[Cell]) -> list[str]:
    rows = []
    for cell in cells:
        adaptive = cell.modes.get("adaptive")
        if adaptive is None or not adaptive.runs:
            continue
        labels = adaptive.runs[0].spot_labels
        features = ", ".join(labels.values()) if labels else "–"
        rows.append(
            f"| {cell.key.dataset} | {cell.key.pair} | {cell.key.distiller} | "
            f"{_rates_text(adaptive.spot_rates())} | {features} | {len(adaptive.runs)} |"
        )
    if not rows:
        return []
    return [
        "## Spot rates of the adaptive runs (last epoch)",
        "",
        "Fraction of training samples distilled at each spot in the last epoch, mean over seeds "
        "(the distiller's feature spots by name, then the logit spot; `sakd inspect RUN` shows "
        "them per sample and class).",
        "",
        "| dataset | pair | distiller | spot rates | student features at the spots | seeds |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _single_section(singles: list[Cell]) -> list[str]:
    if not singles:
        return []
    out = [
        "## Single networks (teachers, students alone)",
        "",
        "| dataset | network | best | last | epochs | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for cell in singles:
        result = cell.get("single")
        epochs = _counted(r.config.get("epochs") for r in result.runs)
        out.append(
            f"| {cell.key.dataset} | {cell.key.student} | {result.best.text()} | "
            f"{result.last.text()} | {epochs} | {result.seeds_text()} |"
        )
    return [*out, ""]


def _missing_section(cells: list[Cell]) -> list[str]:
    rows = []
    for cell in cells:
        for mode, result in sorted(cell.modes.items(), key=lambda m: mode_rank(m[0])):
            if result.missing:
                seeds = ", ".join(str(s) for s in result.missing)
                rows.append(f"| {cell_label(cell.key)} | {mode} | {seeds} |")
    if not rows:
        return []
    return [
        "## Missing runs",
        "",
        "Expected by the grid, with no finished run under this folder.",
        "",
        "| cell | mode | missing seeds |",
        "|---|---|---|",
        *rows,
        "",
    ]


def _problem_section(problems: list[Problem], root: Path) -> list[str]:
    if not problems:
        return ["## Problems", "", "None: every run folder under this folder counts.", ""]
    out = [
        "## Problems",
        "",
        "Run folders that do not count (or cells that need care), and why.",
        "",
        "| folder | kind | what |",
        "|---|---|---|",
    ]
    for problem in problems:
        folder = (
            problem.path.relative_to(root) if problem.path.is_relative_to(root) else problem.path
        )
        out.append(f"| `{folder.as_posix()}` | {problem.kind} | {problem.message} |")
    return [*out, ""]


def render_csv(report: Report) -> str:
    """The report as CSV: one row per cell × spot mode (and one per single network)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for cell in [*report.cells, *report.singles]:
        for mode, result in sorted(cell.modes.items(), key=lambda m: mode_rank(m[0])):
            writer.writerow(_csv_row(cell, mode, result))
    return buffer.getvalue()


def _logit_reference_fields(key: CellKey, mode: str) -> dict[str, str]:
    """The published logit-distiller numbers of a cell's fixed row (``;``-joined per source)."""
    refs = logit_references().get(
        (key.dataset, key.teacher or "", key.student, key.distiller or "")
    )
    if mode != "fixed" or not refs:
        return {"published_logit_top1": "", "published_logit_source": ""}
    return {
        "published_logit_top1": ";".join(f"{r.top1:.2f}" for r in refs),
        "published_logit_source": ";".join(f"{r.source} ({r.protocol})" for r in refs),
    }


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _csv_row(cell: Cell, mode: str, result: ModeResult) -> dict[str, Any]:
    key = cell.key
    runs = result.runs
    paper = cell.published()
    paper_top1 = None
    if paper is not None:
        paper_top1 = {"fixed": paper.fixed, "adaptive": paper.adaptive}.get(mode)
    gain_best = cell.gain(mode) if mode != "fixed" else Stat(0, None, None)
    gain_last = cell.gain(mode, "last") if mode != "fixed" else Stat(0, None, None)
    base = published_baselines().get((key.dataset, key.teacher or "", key.student))
    best = result.best
    return {
        "kind": "single" if key.teacher is None else "distill",
        "dataset": key.dataset,
        "teacher": key.teacher or "",
        "student": key.student,
        "distiller": key.distiller or "",
        "mode": "" if mode == "single" else mode,
        "n": len(runs),
        "seeds": " ".join(str(s) for s in result.seeds),
        "expected_seeds": " ".join(str(s) for s in sorted(result.expected or [])),
        "missing_seeds": " ".join(str(s) for s in result.missing),
        "best_mean": _num(best.mean),
        "best_std": _num(best.std),
        "last_mean": _num(result.last.mean),
        "last_std": _num(result.last.std),
        "best_epoch_mean": _num(result.best_epoch.mean),
        "epochs": " ".join(sorted({str(r.config.get("epochs")) for r in runs})),
        "gain_vs_fixed_best_mean": _num(gain_best.mean),
        "gain_vs_fixed_best_std": _num(gain_best.std),
        "gain_vs_fixed_last_mean": _num(gain_last.mean),
        "gain_vs_fixed_last_std": _num(gain_last.std),
        "gain_n": gain_best.n if mode != "fixed" else "",
        "paper_table": paper.table if paper else "",
        "paper_top1": _num(paper_top1),
        "ours_best_minus_paper": _num(
            None if best.mean is None or paper_top1 is None else best.mean - paper_top1
        ),
        "paper_note": (paper.note if paper else None) or "",
        **_logit_reference_fields(key, mode),
        "teacher_top1": _num(teacher_top1(runs).mean),
        "paper_teacher_top1": _num(base.teacher if base else None),
        "teacher_sha256": " ".join(sorted({r.info.teacher_sha256 or "" for r in runs}))
        if key.teacher
        else "",
        "precision": " ".join(sorted({_precision(r) for r in runs})),
        "device": " ".join(sorted({_device(r) for r in runs})),
        "spot_rates_last_epoch": " ".join(
            f"{name}={v:.4f}" for name, v in (result.spot_rates() or {}).items()
        ),
    }
