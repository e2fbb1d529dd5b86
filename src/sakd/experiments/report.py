"""``sakd report DIR``: every run under DIR aggregated into ``report.md`` and ``report.csv``.

For each pair × distiller and spot mode: top-1 at the best and at the last epoch as mean ± sample
standard deviation over seeds, the gain of each mode over ``fixed`` (paired by seed), the paper's
numbers and our distance to them, the teacher's accuracy and checksum, the seeds behind each
number, the protocol facts, the adaptive runs' spot rates, and every run folder that does not count
and why. Nothing is dropped silently: expected runs without a result are listed as missing.

The cells and their statistics are :mod:`sakd.experiments.aggregate`'s, the Markdown and CSV
:mod:`sakd.experiments.render`'s; this module is the entry the CLI calls.
"""

from __future__ import annotations

from pathlib import Path

from sakd.engine.checkpoint import atomic_write_text
from sakd.experiments.aggregate import Report, Stat, build_report, expected_runs
from sakd.experiments.render import render_csv, render_markdown

__all__ = [
    "Report",
    "Stat",
    "build_report",
    "expected_runs",
    "render_csv",
    "render_markdown",
    "write_report",
]


def write_report(
    report: Report, plots: list[Path] | None = None, out: str | Path | None = None
) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.csv`` into ``out`` (default: the runs' folder)."""
    folder = Path(out) if out is not None else report.root
    md_path, csv_path = folder / "report.md", folder / "report.csv"
    atomic_write_text(md_path, render_markdown(report, plots or [], folder))
    atomic_write_text(csv_path, render_csv(report))
    return md_path, csv_path
